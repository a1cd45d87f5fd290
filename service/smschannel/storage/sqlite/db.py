"""The SQLite database: connections, transactions, migrations (aiosqlite, WAL).

Write strategy: one write lock in the process (storage/priority.py: callers go before the background
work of the engine and the outbox), so read-modify-write sequences never interleave and SQLITE_BUSY
cannot happen between this process's own writers. Every write transaction is `BEGIN IMMEDIATE`
under that lock, in one of two shapes: `write()` runs a short synchronous transaction inline on the
loop (a callback, one contact); `write_batch()` runs a big one on the database thread in a single hop
(an import batch, a workflow round). Another process on the file (an outbox process, a replica) is
waited for yielding, a try every 0.2-1 ms (`_yielding`), and `write_stats` counts how this process
holds and waits for the lock (the metrics). Reads use separate connections and, thanks to WAL, see
the last committed state without waiting for writers.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from ...errors import Aborted, AlreadyExists, NotFound, echo
from ..priority import WriteLock

__all__ = ["PAGE_SIZE", "PRAGMAS", "Database", "Engine", "delete_checked", "from_micros", "insert_new", "to_micros"]

log = logging.getLogger(__name__)

Row = sqlite3.Row
T = TypeVar("T")
R = TypeVar("R")


_last_converted: tuple[datetime | None, int] = (None, 0)


def to_micros(t: datetime) -> int:
    """A UTC datetime as integer microseconds since the epoch."""
    # A page of a broadcast writes one `now` three times a run, a step and a message: the last datetime
    # converted is remembered (by identity: datetimes are immutable; the tuple is swapped atomically).
    global _last_converted
    last = _last_converted
    if last[0] is t:
        return last[1]
    micros = int(t.timestamp() * 1_000_000)
    _last_converted = (t, micros)
    return micros


def from_micros(us: int) -> datetime:
    """Inverse of to_micros."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


class Engine(Protocol):
    """What the SQL repositories ask of a database: SQLite's Database here, PostgreSQL's PgDatabase
    (storage/postgres/engine.py). A write is a synchronous function of a DB-API connection (sqlite3's,
    or an adapter speaking it), run as one transaction; rows read by position and by column name."""

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` as one short write transaction."""
        ...

    async def write_batch(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` as one big write transaction."""
        ...

    async def write_rows(self, count: int, fn: Callable[[sqlite3.Connection], T], inline: int = ...) -> T:
        """`fn` as one write transaction of about `count` rows."""
        ...

    def callers_waited(self, within: float) -> bool:
        """Whether a caller (not background work) had to wait to write in the last `within` seconds."""
        ...

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """One row, or None."""
        ...

    async def fetch_by_keys(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """A few rows by key."""
        ...

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """All rows."""
        ...

    async def close(self) -> None:
        """Release the connections."""
        ...


INLINE_ROWS = 10  # up to this many rows, a write transaction runs inline on the loop


class Database:
    """The connections, the write lock and the migrations."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._inline: sqlite3.Connection | None = None
        self._write_lock = WriteLock()
        self.write_stats = WriteStats()

    @classmethod
    async def open(cls, path: str) -> Database:
        """Open (creating if needed) the database file and apply pending migrations."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path)
        db = cls(writer, writer)
        try:
            await db._prepare()
        except BaseException:
            await writer.close()  # its thread would keep the process from exiting
            raise
        await writer.execute("PRAGMA busy_timeout = 0")  # then writes wait yielding (_yielding)
        if path != ":memory:":
            db._reader = await _connect(path)
            db._inline = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db._inline.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                db._inline.execute(f"PRAGMA {pragma}")
            db._inline.execute("PRAGMA busy_timeout = 0")  # as the writer's
        return db

    async def close(self) -> None:
        """Close both connections."""
        if self._inline is not None:
            self._inline.close()
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as one short write transaction, inline on the event loop.

        For hot paths of a few statements (a callback, an outbox chunk): with WAL and
        synchronous=NORMAL a commit does not wait for the disk, so the whole transaction costs less
        than a single hop to the database thread. It holds the same lock as every other writer.
        `fn` must be plain synchronous sqlite3 code; big batches go through `write_batch`."""
        async with self._write_lock:
            if self._inline is not None:
                inline = self._inline

                async def attempt() -> T | _Busy:
                    return _try_transaction(inline, fn, self.write_stats)

                return await _yielding(attempt, self.write_stats)
            return await self._on_writer_thread(fn)

    def callers_waited(self, within: float) -> bool:
        """Whether a caller waited for the write lock in the last `within` seconds (storage/priority.py)."""
        return self._write_lock.callers_waited(within)

    async def write_batch(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as one write transaction on the database thread, in a single hop.

        For batches of hundreds of rows (workflow rounds, broadcasts): the loop keeps serving while
        SQLite works, and there is one hop per transaction instead of one per statement."""
        async with self._write_lock:
            return await self._on_writer_thread(fn)

    async def write_rows(self, count: int, fn: Callable[[sqlite3.Connection], T], inline: int = INLINE_ROWS) -> T:
        """`write` for a transaction of a few rows (an API call), `write_batch` for `count` beyond
        `inline` (an import batch, a workflow round)."""
        return await (self.write(fn) if count <= inline else self.write_batch(fn))

    async def _on_writer_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # aiosqlite's own queue to its thread (private API, aiosqlite pinned to 0.22.1).
        execute: Callable[..., Awaitable[T | _Busy]] = self._writer._execute
        return await _yielding(
            lambda: execute(_try_transaction, self._writer._conn, fn, self.write_stats), self.write_stats
        )

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """One row by key, read inline on the event loop.

        A point read through an index takes microseconds, less than the hop to aiosqlite's thread,
        and in WAL mode a reader never waits for a writer. Use `fetch_all` for anything bigger."""
        values = tuple(params)
        row: Row | _Busy | None = self._read_inline(sql, values, sqlite3.Cursor.fetchone)
        if not isinstance(row, _Busy):
            return row
        return next(iter(await self._reader.execute_fetchall(sql, values)), None)

    async def fetch_by_keys(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """A few rows by key (a bounded `IN (...)` through an index), read inline like `fetch_one`."""
        values = tuple(params)
        rows: list[Row] | _Busy = self._read_inline(sql, values, sqlite3.Cursor.fetchall)
        if not isinstance(rows, _Busy):
            return rows
        return list(await self._reader.execute_fetchall(sql, values))

    def _read_inline(self, sql: str, values: tuple[Any, ...], fetch: Callable[[sqlite3.Cursor], R]) -> R | _Busy:
        """`fetch` of the statement on the loop's own connection; BUSY when there is none (":memory:")
        or SQLite answers busy (a WAL reader almost never is): the reader thread then waits for it."""
        if self._inline is None:
            return BUSY
        try:
            return fetch(self._inline.execute(sql, values))
        except sqlite3.OperationalError as e:
            if not _busy(e):
                raise
            return BUSY

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """All rows, read on the database thread (one hop)."""
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def _prepare(self) -> None:
        """WAL and the migrations. Two processes opening one new file at once (the server and its outbox
        process): until WAL is on, SQLite answers "locked" at once rather than wait (busy_timeout does not
        apply where waiting could deadlock), so the whole step is tried again, for up to BUSY_TIMEOUT."""
        deadline, pause = time.monotonic() + BUSY_TIMEOUT, 0.01
        while True:
            try:
                # Only a new file takes it (before its first table and WAL); an existing one keeps its own.
                await self._writer.execute(f"PRAGMA page_size = {PAGE_SIZE}")
                await self._writer.execute("PRAGMA journal_mode = WAL")
                await self._migrate()
                return
            except sqlite3.OperationalError as e:
                if not _busy(e) or time.monotonic() > deadline:
                    raise
                if self._writer.in_transaction:
                    await self._writer.rollback()
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.2)

    async def _applied(self) -> set[int]:
        async with self._writer.execute("SELECT version FROM schema_migrations") as cur:
            return {row[0] for row in await cur.fetchall()}

    async def _migrate(self) -> None:
        """Apply the migrations the file lacks. Processes opening one new file together (the server and
        its outbox process) each try; the first applies a migration, the others wait for its lock (up to
        BUSY_TIMEOUT: a longer migration makes them fail to start), fail on what it created, roll back
        and go on."""
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_time INTEGER)"
        )
        applied = await self._applied()
        folder = resources.files(__package__) / "migrations"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            version = int(entry.name.split("_", 1)[0])
            if version in applied:
                continue
            # executescript commits first; the whole migration then runs as one transaction.
            try:
                await self._writer.executescript(
                    f"BEGIN IMMEDIATE;\n{entry.read_text()}\n"
                    f"INSERT INTO schema_migrations VALUES ({version}, {to_micros(datetime.now(UTC))});\nCOMMIT;"
                )
            except sqlite3.Error:
                if self._writer.in_transaction:
                    await self._writer.rollback()
                if version not in await self._applied():
                    raise
                continue  # another process applied it meanwhile
            log.info("migration applied", extra={"version": version, "file": entry.name})


async def insert_new(db: Engine, sql: str, params: Iterable[Any], resource: str) -> None:
    """One INSERT in its own transaction; AlreadyExists(resource) when a unique key is taken."""
    values = tuple(params)
    try:
        await db.write(lambda conn: conn.execute(sql, values))
    except sqlite3.IntegrityError as e:
        raise AlreadyExists(resource) from e


async def delete_checked(
    db: Engine, table: str, store_id: str, row_id: str, etag: str, resource: str, *children: str
) -> None:
    """Delete a versioned row, and the rows of `children` ("table.column" naming its id), if it
    exists (else NotFound) and `etag`, when set, is current (else Aborted)."""

    def delete(conn: sqlite3.Connection) -> None:
        row = conn.execute(f"SELECT version FROM {table} WHERE store_id = ? AND id = ?", (store_id, row_id)).fetchone()
        if row is None:
            raise NotFound(resource)
        if etag and etag != f'W/"{row["version"]}"':
            raise Aborted(f"{resource} changed since etag {echo(etag)}; get it again")
        for child in children:
            child_table, column = child.split(".")
            conn.execute(f"DELETE FROM {child_table} WHERE store_id = ? AND {column} = ?", (store_id, row_id))
        conn.execute(f"DELETE FROM {table} WHERE store_id = ? AND id = ?", (store_id, row_id))

    await db.write(delete)


# 8 KiB pages for new databases instead of 4: an import batch dirties a page of the phone index per
# row or so (phones arrive in no order), and each dirty page costs a WAL frame at commit and a copy at
# checkpoint, whatever its size. Measured on the schema alone, 1,000-row transactions into 1M
# contacts: 12.3-13.6 µs of CPU a row -> 9.0-9.9 (wall 15.9-17.3 -> 10.4-11.4); 16 KiB gains no more.
PAGE_SIZE = 8192

# synchronous=NORMAL in WAL mode survives a process crash (kill -9); a power loss may lose the last
# commits. The larger page cache keeps index inserts of big imports in memory. Checkpoints every
# 10,000 pages (a WAL of up to ~40 MB) instead of 1,000: a page rewritten by many transactions (an
# index leaf during an import) is copied back once, not every batch (-6% SQLite CPU an imported row).
# Seconds a writer waits for another process's write lock: SQLite's own wait (busy_timeout) while it
# migrates and for the reader connections; `_yielding`'s for writes (busy_timeout 0 then).
BUSY_TIMEOUT = 10.0
PRAGMAS = (
    f"busy_timeout = {int(BUSY_TIMEOUT * 1000)}",
    "foreign_keys = ON",
    "synchronous = NORMAL",
    "cache_size = -65536",
    "wal_autocheckpoint = 10000",
)


_BUSY_POLL = (0.0002, 0.001)  # the first and the longest pause between two tries, in seconds


@dataclass
class WriteStats:
    """How this process used SQLite's one write lock, since it opened the file (for the metrics): its
    write transactions, the seconds it held the lock, and the seconds it waited for another process."""

    transactions: int = 0
    held: float = 0.0
    waited: float = 0.0


class _Busy:
    """What a try at a write transaction returns when another process holds SQLite's write lock."""


BUSY = _Busy()


def _try_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], stats: WriteStats) -> T | _Busy:
    """`fn` as one transaction, or BUSY at once (busy_timeout 0) if another process is writing."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if _busy(e):
            return BUSY
        raise
    began = time.perf_counter()
    try:
        return _in_begun_transaction(conn, fn)
    finally:  # one writer at a time in this process (the write lock): no race on the sums
        stats.transactions += 1
        stats.held += time.perf_counter() - began


async def _yielding(attempt: Callable[[], Awaitable[T | _Busy]], stats: WriteStats) -> T:
    """Try a write transaction until the write lock is free, pausing a few milliseconds, yielding, in
    between, for up to BUSY_TIMEOUT.

    Its connections have busy_timeout 0 once migrated: SQLite's own wait sleeps in the caller's thread
    in ever longer naps (up to 100 ms). An outbox process, whose writes are short, then lost the lock
    to the engine's back-to-back page transactions in the server for a second and more, its event
    loop stopped all the while."""
    deadline, pause = time.monotonic() + BUSY_TIMEOUT, _BUSY_POLL[0]
    first = time.perf_counter()
    while True:
        began = time.perf_counter()
        result = await attempt()
        if not isinstance(result, _Busy):
            stats.waited += began - first
            return result
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"database is locked: another process wrote for {BUSY_TIMEOUT} s")
        await asyncio.sleep(pause)
        pause = min(2 * pause, _BUSY_POLL[1])


def _busy(e: sqlite3.OperationalError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)  # maybe an extended code: its low byte is the primary
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _in_begun_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        await conn.execute(f"PRAGMA {pragma}")
    return conn
