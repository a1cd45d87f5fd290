"""PostgreSQL under the same SQL storage as SQLite: a database engine speaking sqlite3's DB-API.

The SQL repositories (storage/sqlite/) write through synchronous functions of a connection, in SQL
that both engines read (`?` parameters, ON CONFLICT, no engine-specific functions). This engine runs
those functions on PostgreSQL: each on a thread of its own pool with its own connection, in one
SERIALIZABLE transaction, retried from scratch when PostgreSQL reports a serialization failure or a
deadlock — so concurrent writers, in this process or in other replicas, behave as if they ran one
after another, like the one SQLite writer. A write function must therefore be re-runnable: it reads
what it needs inside its transaction (they all do).

The adapter translates what differs: `?` → `%s`, booleans and IntEnums bound as plain integers (the
schema keeps SQLite's integer columns), rows readable by position and by column name like
sqlite3.Row, and a unique violation raised as sqlite3.IntegrityError, which the repositories catch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors

from ...errors import InvalidArgument
from .db import migrate

__all__ = ["PgDatabase"]

log = logging.getLogger(__name__)

T = TypeVar("T")

THREADS = 4  # connections, each on its thread: concurrent reads and writes of this replica
RETRIES = 20  # serialization failures and deadlocks a write is retried through
_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


@functools.lru_cache(maxsize=4096)
def _sql(query: str) -> str:
    """sqlite3's `?` placeholders as psycopg's `%s` (a literal `%` doubled)."""
    return query.replace("%", "%%").replace("?", "%s")


def _params(params: Iterable[Any]) -> tuple[Any, ...]:
    # bool and IntEnum are ints to sqlite3; psycopg would send a boolean or the enum's name.
    return tuple(int(p) if isinstance(p, int) and type(p) is not int else p for p in params)


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """A tuple that also answers row["column"], like sqlite3.Row."""
    index = {name: i for i, name in enumerate(names)}

    class Row(tuple[Any, ...]):
        __slots__ = ()

        def __getitem__(self, key: Any) -> Any:
            return tuple.__getitem__(self, index[key] if isinstance(key, str) else key)

        def keys(self) -> list[str]:
            return list(names)

    return Row


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    row = _row_class(tuple(c.name for c in cursor.description or ()))
    return row


class _Cursor:
    """What the repositories use of a sqlite3 cursor."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class _Connection:
    """What the repositories use of a sqlite3 connection, on a psycopg one."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, query: str, params: Iterable[Any] = ()) -> _Cursor:
        with _translated():
            return _Cursor(self._conn.execute(_sql(query), _params(params)))

    def executemany(self, query: str, rows: Iterable[Iterable[Any]]) -> _Cursor:
        cursor = self._conn.cursor()
        with _translated():
            cursor.executemany(_sql(query), [_params(r) for r in rows])
        return _Cursor(cursor)


@contextmanager
def _translated() -> Iterator[None]:
    """PostgreSQL's refusals as the repositories know them: a unique violation as sqlite3's, and a
    text holding U+0000 (which SQLite stores, and PostgreSQL's TEXT cannot) as the caller's error,
    not an INTERNAL one (the hostile-input fuzz sent a display name of NULs)."""
    try:
        yield
    except pg_errors.IntegrityError as e:
        raise sqlite3.IntegrityError(str(e)) from e
    except psycopg.DataError as e:
        if "NUL (0x00)" not in str(e):
            raise
        raise InvalidArgument("request", "text must not contain the NUL character (U+0000)") from e


class PgDatabase:
    """The Database of the SQL repositories, on PostgreSQL."""

    def __init__(self, dsn: str, threads: int = THREADS) -> None:
        self._dsn = dsn
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="postgres")
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, dsn: str) -> PgDatabase:
        """Connect, and migrate the database to the current schema (one replica at a time)."""
        await asyncio.to_thread(cls._migrate, dsn)
        return cls(dsn)

    async def close(self) -> None:
        """Close every connection."""
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- the Database interface the repositories use ----------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as one serializable transaction (retried from scratch on a conflict)."""
        return await self._run(lambda conn: self._transaction(conn, fn))

    async def write_batch(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """As `write`: every write runs on a pool thread here."""
        return await self.write(fn)

    async def write_rows(self, count: int, fn: Callable[[sqlite3.Connection], T], inline: int = 0) -> T:
        """As `write`, whatever the size."""
        return await self.write(fn)

    def callers_waited(self, within: float) -> bool:
        """Never: PostgreSQL has no one write lock to queue for (each write takes a pool thread)."""
        return False

    async def fetch_one(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """One row, or None."""
        values = tuple(params)
        return await self._run(lambda conn: _Connection(conn).execute(sql, values).fetchone())

    async def fetch_by_keys(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """A few rows by key."""
        return await self.fetch_all(sql, params)

    async def fetch_all(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """All rows."""
        values = tuple(params)
        return await self._run(lambda conn: _Connection(conn).execute(sql, values).fetchall())

    # -- threads, connections, transactions -------------------------------------------------------

    async def _run(self, job: Callable[[psycopg.Connection[Any]], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: job(self._connection()))

    def _connection(self) -> psycopg.Connection[Any]:
        """This thread's connection (autocommit: reads see the last commit, writes open their own)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                row_factory=_row_factory,
                application_name="smschannel",
                # A generic plan cannot use a partial index (`WHERE status = 1`) for `status = $1`: plan
                # each statement with its values, as SQLite does.
                options="-c plan_cache_mode=force_custom_plan",
            )
            conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE  # for the transactions it opens
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @staticmethod
    def _transaction(conn: psycopg.Connection[Any], fn: Callable[[sqlite3.Connection], T]) -> T:
        for attempt in range(RETRIES + 1):
            try:
                with conn.transaction():
                    return fn(_Connection(conn))  # type: ignore[arg-type]
            except _RETRYABLE:
                if attempt == RETRIES:
                    raise
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))  # a conflicting writer finishes
        raise AssertionError("unreachable")

    @staticmethod
    def _migrate(dsn: str) -> None:
        # On a connection of its own, at READ COMMITTED: a replica that waited for another's lock must
        # see what that one committed meanwhile (a serializable snapshot taken before would not).
        with psycopg.connect(dsn, autocommit=True, application_name="smschannel migrations") as conn:
            migrate(conn)
