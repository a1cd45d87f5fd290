"""Units of work on SQLite: one write transaction over several aggregates, run synchronously.

The use case's unit of work is a coroutine whose only awaits are the writes below, and on SQLite
those are plain synchronous sqlite3 calls: so the coroutine runs to its end in one `send(None)`,
inside one transaction, on the database thread — or inline on the loop when it is small (a batch of
callbacks is a few short statements each: up to INLINE rows cost less inline than the hop to the
database thread and back, and block the loop for about a millisecond)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ...domain.messages import Message
from ...domain.workflows import Run
from .. import BroadcastPage, MessageUpdate, Mutation, PageSends, RunUpdate, Touched, UnitOfWork
from .contacts import apply_to_phone
from .db import Engine, to_micros
from .messages import SqliteMessages, apply_updates
from .workflows import (
    advance_broadcast,
    broadcast_active,
    insert_page_runs,
    insert_runs,
    live_runs,
    new_runs,
    save_runs,
)

__all__ = ["INLINE", "run_unit_of_work"]

T = TypeVar("T")

INLINE = 100  # rows written inline on the loop; more go to the database thread
_RECORD_EVENT = (
    "INSERT INTO provider_events (store_id, provider_id, status, create_time) VALUES (?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


class _ProviderEvents:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def record(self, store_id: str, message_id: str, status: str, time: datetime) -> bool:
        return bool(self._conn.execute(_RECORD_EVENT, (store_id, message_id, status, to_micros(time))).rowcount)


class _Messages:
    def __init__(self, conn: sqlite3.Connection, repository: SqliteMessages) -> None:
        self._conn = conn
        self._repository = repository  # for this replica's outbox claims on the messages it adds

    async def add(self, messages: Sequence[Message]) -> list[Message]:
        return self._repository.add_in(self._conn, messages) if messages else []

    async def add_page(self, sends: PageSends) -> list[Message]:
        return self._repository.add_page_in(self._conn, sends)

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        return apply_updates(self._conn, updates) if updates else []


class _Contacts:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[Touched]:
        return apply_to_phone(self._conn, store_id, phone, mutation)


class _Runs:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def page(self, page: BroadcastPage) -> bool:
        return advance_broadcast(self._conn, page)

    async def active(self, page: BroadcastPage) -> bool:
        return broadcast_active(self._conn, page)

    async def live(self, runs: Sequence[Run]) -> list[bool]:
        return live_runs(self._conn, runs) if runs else []

    async def new(self, runs: Sequence[Run]) -> list[bool]:
        return new_runs(self._conn, runs) if runs else []

    async def add(self, runs: Sequence[RunUpdate]) -> list[Run]:
        return insert_runs(self._conn, runs) if runs else []

    async def add_page(self, sends: PageSends) -> None:
        insert_page_runs(self._conn, sends)

    async def save(self, updates: Sequence[RunUpdate]) -> None:
        save_runs(self._conn, updates)


class _UnitOfWork:
    """UnitOfWork over one sqlite3 connection inside its transaction."""

    def __init__(self, conn: sqlite3.Connection, messages: SqliteMessages) -> None:
        self.provider_events = _ProviderEvents(conn)
        self.messages = _Messages(conn, messages)
        self.contacts = _Contacts(conn)
        self.runs = _Runs(conn)


async def run_unit_of_work(
    db: Engine, messages: SqliteMessages, work: Callable[[UnitOfWork], Awaitable[T]], size: int
) -> T:
    """`work` in one write transaction: inline for up to INLINE rows, else on the database thread."""

    def body(conn: sqlite3.Connection) -> T:
        return _to_the_end(work(_UnitOfWork(conn, messages)))

    return await db.write_rows(size, body, inline=INLINE)


def _to_the_end(step: Awaitable[T]) -> T:
    """Run a coroutine that never suspends to its result (its awaits are all synchronous writes)."""
    coro: Coroutine[Any, Any, T] = step  # type: ignore[assignment]
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a unit of work awaited something other than its writes (it must not suspend)")
