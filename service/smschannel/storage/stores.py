"""Stores, their API keys, and server-wide settings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from ..domain.stores import ApiKey, Store

__all__ = ["MetaRepository", "StoreRepository"]


class MetaRepository(Protocol):
    """Server-wide settings (e.g. the hash of a generated admin key)."""

    async def get(self, key: str) -> str | None:
        """The value, or None."""
        ...

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value exists; return the value that is stored now."""
        ...

    async def hold(self, lease: str, now: datetime, duration: timedelta) -> bool:
        """Hold `lease` for this replica until now + duration if it is free, run out, or ours already
        (a renewal); whether this replica holds it now."""
        ...


class StoreRepository(Protocol):
    """Stores and API keys."""

    async def create(self, store: Store, first_key: ApiKey) -> None:
        """Create a store with its first key; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str) -> Store | None:
        """The store, or None."""
        ...

    async def add_api_key(self, key: ApiKey) -> None:
        """Add a key to an existing store."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None."""
        ...
