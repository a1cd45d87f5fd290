"""Store and API key use cases: the tenants every other resource belongs to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..auth import hash_key, new_store_key
from ..domain.stores import ApiKey, Store, new_store
from ..errors import InvalidArgument, NotFound
from ..names import StoreName, new_id
from ..records import record
from ..storage import Storage

__all__ = ["IssuedKey", "StoreOps"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@record
class IssuedKey:
    """A new API key with its clear text: the caller sees it once, the store keeps only its hash."""

    key: ApiKey
    clear: str


@dataclass
class StoreOps:
    """Creates stores and their keys, and finds the store a call is about."""

    storage: Storage
    clock: Callable[[], datetime] = field(default=_utcnow)

    async def get(self, store_id: str, resource: str = "") -> Store:
        """The store, or NotFound naming `resource` (what the caller asked for; the store by default),
        so that a resource of a store that does not exist is reported as that resource."""
        store = await self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(resource or str(StoreName(store_id)))
        return store

    async def create(self, store_id: str, display_name: str, default_status: int) -> tuple[Store, IssuedKey]:
        """A new store with its first key, both written together: a store is never left without a key."""
        now = self.clock()
        store = new_store(store_id, display_name, default_status, now)
        clear = new_store_key()
        issued = IssuedKey(ApiKey(store.id, new_id(), "first key", hash_key(clear), now), clear)
        await self.storage.stores.create(store, issued.key)
        return store, issued

    async def create_api_key(self, store: Store, display_name: str) -> IssuedKey:
        """Another key for the store (a key per backend lets one be replaced without the others)."""
        display_name = display_name.strip()
        if len(display_name) > 200:
            raise InvalidArgument("api_key.display_name", "at most 200 characters")
        clear = new_store_key()
        issued = IssuedKey(ApiKey(store.id, new_id(), display_name, hash_key(clear), self.clock()), clear)
        await self.storage.stores.add_api_key(issued.key)
        return issued
