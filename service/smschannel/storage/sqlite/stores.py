"""Stores, API keys and server-wide settings on SQLite."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta

from ...domain.enums import SmsSubscriptionStatus
from ...domain.stores import ApiKey, Store
from ...errors import AlreadyExists
from ...names import StoreName
from .db import Engine, from_micros, to_micros

__all__ = ["SqliteMeta", "SqliteStores"]


class SqliteMeta:
    """MetaRepository on SQLite."""

    def __init__(self, db: Engine, replica: str) -> None:
        self._db = db
        self._replica = replica

    async def get(self, key: str) -> str | None:
        """The value, or None."""
        row = await self._db.fetch_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value exists; return the stored value."""

        def put(conn: sqlite3.Connection) -> str:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, value))
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            assert row is not None
            return str(row["value"])

        return await self._db.write(put)

    async def hold(self, lease: str, now: datetime, duration: timedelta) -> bool:
        """Take or renew `lease` in one upsert: it changes the row only if the lease is ours or has
        run out, so the row count says whether this replica holds it."""
        at = to_micros(now)
        params = (lease, self._replica, at + int(duration.total_seconds() * 1_000_000), at)
        return bool(await self._db.write(lambda conn: conn.execute(_HOLD, params).rowcount))


_HOLD = (
    "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
    " SET owner = excluded.owner, until = excluded.until WHERE leases.owner = excluded.owner OR leases.until <= ?"
)


class SqliteStores:
    """StoreRepository on SQLite."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    async def create(self, store: Store, first_key: ApiKey) -> None:
        """Create a store with its first key."""

        def create(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO stores (id, display_name, default_sms_subscription_status, create_time)"
                " VALUES (?, ?, ?, ?)",
                (
                    store.id,
                    store.display_name,
                    int(store.default_sms_subscription_status),
                    to_micros(store.create_time),
                ),
            )
            _insert_key(conn, first_key)

        try:
            await self._db.write(create)
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(str(StoreName(store.id))) from e

    async def get(self, store_id: str) -> Store | None:
        """The store, or None."""
        row = await self._db.fetch_one("SELECT * FROM stores WHERE id = ?", (store_id,))
        if row is None:
            return None
        return Store(
            id=row["id"],
            display_name=row["display_name"],
            default_sms_subscription_status=SmsSubscriptionStatus(row["default_sms_subscription_status"]),
            create_time=from_micros(row["create_time"]),
        )

    async def add_api_key(self, key: ApiKey) -> None:
        """Add a key to an existing store."""
        await self._db.write(lambda conn: _insert_key(conn, key))

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None."""
        row = await self._db.fetch_one("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))
        if row is None:
            return None
        return ApiKey(
            store_id=row["store_id"],
            id=row["id"],
            display_name=row["display_name"],
            key_hash=row["key_hash"],
            create_time=from_micros(row["create_time"]),
        )


def _insert_key(conn: sqlite3.Connection, key: ApiKey) -> None:
    conn.execute(
        "INSERT INTO api_keys (store_id, id, display_name, key_hash, create_time) VALUES (?, ?, ?, ?, ?)",
        (key.store_id, key.id, key.display_name, key.key_hash, to_micros(key.create_time)),
    )
