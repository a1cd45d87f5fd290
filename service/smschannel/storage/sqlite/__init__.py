"""SQLite implementation of the storage seam."""

from __future__ import annotations

from .channel import SqliteChannelConfigs
from .contacts import SqliteContacts
from .db import Database
from .messages import SqliteMessages, SqliteSmsContents
from .stores import SqliteMeta, SqliteStores
from .workflows import SqliteWorkflows

__all__ = ["Database", "SqliteStorage"]


class SqliteStorage:
    """The Storage protocol on one SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._meta = SqliteMeta(db)
        self._stores = SqliteStores(db)
        self._contacts = SqliteContacts(db)
        self._channel_configs = SqliteChannelConfigs(db)
        self._sms_contents = SqliteSmsContents(db)
        self._messages = SqliteMessages(db)
        self._workflows = SqliteWorkflows(db)

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

    async def close(self) -> None:
        """Close the connections."""
        await self.db.close()
