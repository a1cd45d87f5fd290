"""The SQL implementation of the storage seam: on SQLite, or on PostgreSQL (storage/postgres/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from ...names import new_id
from .. import UnitOfWork
from .channel import SqliteChannelConfigs
from .contacts import SqliteContacts
from .db import Database, Engine
from .messages import CLAIM, SqliteMessages, SqliteSmsContents
from .stores import SqliteMeta, SqliteStores
from .unit_of_work import run_unit_of_work
from .workflows import SqliteWorkflows

__all__ = ["Database", "SqliteStorage"]

T = TypeVar("T")


class SqliteStorage:
    """The Storage protocol on one SQLite file or one PostgreSQL database."""

    def __init__(
        self,
        db: Engine,
        replica: str = "",
        claim: timedelta = CLAIM,
        hold_stored: bool = True,
        updates_inline: bool = False,
    ) -> None:
        """`replica`: this process's name among replicas sharing the database (a new one by default);
        `claim`: how long its outbox claims last; `hold_stored`: whether the messages it stores are
        claimed by it (False when an outbox process sends them: SqliteMessages)."""
        replica = replica or new_id()
        self.db = db
        self._meta = SqliteMeta(db, replica)
        self._stores = SqliteStores(db)
        self._contacts = SqliteContacts(db)
        self._channel_configs = SqliteChannelConfigs(db)
        self._sms_contents = SqliteSmsContents(db)
        self._messages = SqliteMessages(db, replica, claim, hold_stored, updates_inline)
        self._workflows = SqliteWorkflows(db)

    @classmethod
    async def open(
        cls,
        target: str,
        replica: str = "",
        claim: timedelta = CLAIM,
        hold_stored: bool = True,
        updates_inline: bool = False,
    ) -> SqliteStorage:
        """A SQLite file (created and migrated if needed), or a PostgreSQL database when `target` is a
        postgresql:// URL: the same SQL, through storage/postgres/engine.py."""
        if target.startswith(("postgresql://", "postgres://")):
            from ..postgres.engine import PgDatabase  # psycopg is loaded only for PostgreSQL

            return cls(await PgDatabase.open(target), replica, claim, hold_stored, updates_inline)
        return cls(await Database.open(target), replica, claim, hold_stored, updates_inline)

    @property
    def meta(self) -> SqliteMeta:
        """Server-wide settings."""
        return self._meta

    @property
    def stores(self) -> SqliteStores:
        """Stores and keys."""
        return self._stores

    @property
    def contacts(self) -> SqliteContacts:
        """Contacts and activities."""
        return self._contacts

    @property
    def channel_configs(self) -> SqliteChannelConfigs:
        """Channel configs."""
        return self._channel_configs

    @property
    def sms_contents(self) -> SqliteSmsContents:
        """SMS contents."""
        return self._sms_contents

    @property
    def messages(self) -> SqliteMessages:
        """Messages."""
        return self._messages

    @property
    def workflows(self) -> SqliteWorkflows:
        """Workflows and runs."""
        return self._workflows

    def callers_waited(self, within: float) -> bool:
        """Whether a caller had to wait to write in the last `within` seconds."""
        return self.db.callers_waited(within)

    async def atomically(self, work: Callable[[UnitOfWork], Awaitable[T]], size: int) -> T:
        """`work` as one write transaction (see unit_of_work.py)."""
        return await run_unit_of_work(self.db, self._messages, work, size)

    async def close(self) -> None:
        """Close the connections."""
        await self.db.close()
