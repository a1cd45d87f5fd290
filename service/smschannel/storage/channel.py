"""Each store's SMS channel config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..domain.channel import ChannelConfig

__all__ = ["ChannelConfigRepository"]


class ChannelConfigRepository(Protocol):
    """The singleton channel config of each store."""

    async def get(self, store_id: str) -> ChannelConfig | None:
        """The config, or None when never saved."""
        ...

    async def update(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        """Read, change and write the config atomically."""
        ...
