"""SQLite implementation of the storage seam (aiosqlite, WAL).

Write strategy: one writer connection; every write runs inside `Database.transaction()`, which holds
an asyncio lock and a `BEGIN IMMEDIATE` transaction, so read-modify-write sequences never interleave
and SQLITE_BUSY cannot happen between our own writers. Reads use a separate connection and, thanks to
WAL, see the last committed state without waiting for writers.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from ..domain.enums import SmsSubscriptionStatus
from ..domain.stores import ApiKey, Store
from ..errors import AlreadyExists

__all__ = ["Database", "SqliteStorage", "from_micros", "to_micros"]

log = logging.getLogger(__name__)

Row = sqlite3.Row


def to_micros(t: datetime) -> int:
    """A UTC datetime as integer microseconds since the epoch."""
    return int(t.timestamp() * 1_000_000) if t.tzinfo else int(t.replace(tzinfo=UTC).timestamp() * 1e6)


def from_micros(us: int) -> datetime:
    """Inverse of to_micros."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


class Database:
    """The connections, the write lock and the migrations."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> Database:
        """Open (creating if needed) the database file and apply pending migrations."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        await writer.execute("PRAGMA journal_mode = WAL")
        db = cls(writer, writer)
        await db._migrate()
        db._reader = await _connect(path) if path != ":memory:" else writer
        return db

    async def close(self) -> None:
        """Close both connections."""
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: serialized with every other writer, committed or rolled back."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.rollback()
                raise
            else:
                await self._writer.commit()

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """One row from the read connection."""
        async with self._reader.execute(sql, tuple(params)) as cur:
            row: Row | None = await cur.fetchone()
            return row

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """All rows from the read connection."""
        async with self._reader.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def _migrate(self) -> None:
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_time INTEGER)"
        )
        async with self._writer.execute("SELECT version FROM schema_migrations") as cur:
            applied = {row[0] for row in await cur.fetchall()}
        folder = resources.files(__package__) / "migrations"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            version = int(entry.name.split("_", 1)[0])
            if version in applied:
                continue
            # executescript commits first; the whole migration then runs as one transaction.
            await self._writer.executescript(
                f"BEGIN IMMEDIATE;\n{entry.read_text()}\n"
                f"INSERT INTO schema_migrations VALUES ({version}, {to_micros(datetime.now(UTC))});\nCOMMIT;"
            )
            log.info("migration applied", extra={"version": version, "file": entry.name})


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in ("busy_timeout = 10000", "foreign_keys = ON", "synchronous = NORMAL"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


class SqliteMeta:
    """MetaRepository on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> str | None:
        """The value, or None."""
        row = await self._db.fetch_one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value exists; return the stored value."""
        async with self._db.transaction() as tx:
            await tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            async with tx.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
                row = await cur.fetchone()
        assert row is not None
        return str(row["value"])


class SqliteStores:
    """StoreRepository on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, store: Store, first_key: ApiKey) -> None:
        """Create a store with its first key."""
        try:
            async with self._db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO stores (id, display_name, default_sms_subscription_status, create_time)"
                    " VALUES (?, ?, ?, ?)",
                    (
                        store.id,
                        store.display_name,
                        int(store.default_sms_subscription_status),
                        to_micros(store.create_time),
                    ),
                )
                await _insert_key(tx, first_key)
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"stores/{store.id}") from e

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
        async with self._db.transaction() as tx:
            await _insert_key(tx, key)

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


async def _insert_key(tx: aiosqlite.Connection, key: ApiKey) -> None:
    await tx.execute(
        "INSERT INTO api_keys (store_id, id, display_name, key_hash, create_time) VALUES (?, ?, ?, ?, ?)",
        (key.store_id, key.id, key.display_name, key.key_hash, to_micros(key.create_time)),
    )


class SqliteStorage:
    """The Storage protocol on one SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._meta = SqliteMeta(db)
        self._stores = SqliteStores(db)

    @classmethod
    async def open(cls, path: str) -> SqliteStorage:
        """Open the file, migrating it to the current schema."""
        return cls(await Database.open(path))

    @property
    def meta(self) -> SqliteMeta:
        """Server-wide settings."""
        return self._meta

    @property
    def stores(self) -> SqliteStores:
        """Stores and keys."""
        return self._stores

    async def close(self) -> None:
        """Close the connections."""
        await self.db.close()
