"""SMS contents (the texts a store sends)."""

from __future__ import annotations

from typing import Protocol

from ..domain.messages import SmsContent
from .pages import Positioned

__all__ = ["SmsContentRepository"]


class SmsContentRepository(Protocol):
    """SMS contents."""

    async def create(self, content: SmsContent) -> None:
        """Store a new content; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str, content_id: str) -> SmsContent | None:
        """The content, or None."""
        ...

    async def page(self, store_id: str, after: int, limit: int) -> list[Positioned[SmsContent]]:
        """Contents after position `after`, oldest first."""
        ...

    async def update(self, content: SmsContent, expected_version: int) -> None:
        """Replace a content still at `expected_version`, else Aborted."""
        ...

    async def delete(self, store_id: str, content_id: str, etag: str) -> None:
        """Delete a content; NotFound, or Aborted on a stale etag."""
        ...
