"""Channel configs on SQLite."""

from __future__ import annotations

from collections.abc import Callable

from ...domain.channel import ChannelConfig, TokenStatus
from .db import Database, Row, from_micros, to_micros

__all__ = ["SqliteChannelConfigs"]


def _from_row(row: Row) -> ChannelConfig:
    return ChannelConfig(
        store_id=row["store_id"],
        callback_secret=row["callback_secret"],
        provider=row["provider"],
        token_ciphertext=row["token"],
        token_hint=row["token_hint"],
        default_country=row["default_country"],
        default_sender=row["default_sender"],
        token_status=TokenStatus(row["token_status"]),
        token_status_message=row["token_status_message"],
        account_balance=row["account_balance"],
        update_time=from_micros(row["update_time"]),
        version=row["version"],
    )


class SqliteChannelConfigs:
    """ChannelConfigRepository on SQLite."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, store_id: str) -> ChannelConfig | None:
        """The config, or None."""
        row = await self._db.fetch_one("SELECT * FROM channel_configs WHERE store_id = ?", (store_id,))
        return None if row is None else _from_row(row)

    async def update(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        """Read, change and write atomically."""
        async with self._db.transaction() as tx:
            async with tx.execute("SELECT * FROM channel_configs WHERE store_id = ?", (store_id,)) as cur:
                row = await cur.fetchone()
            current = None if row is None else _from_row(row)
            new = change(current)
            if new is current:
                return new
            assert new.update_time is not None
            await tx.execute(
                "INSERT OR REPLACE INTO channel_configs (store_id, provider, token, token_hint, default_country,"
                " default_sender, callback_secret, token_status, token_status_message, account_balance,"
                " update_time, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    store_id,
                    new.provider,
                    new.token_ciphertext,
                    new.token_hint,
                    new.default_country,
                    new.default_sender,
                    new.callback_secret,
                    int(new.token_status),
                    new.token_status_message,
                    new.account_balance,
                    to_micros(new.update_time),
                    new.version,
                ),
            )
        return new
