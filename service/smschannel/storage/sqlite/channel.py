"""Channel configs on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import time, timedelta
from types import MappingProxyType
from typing import Any

import orjson

from ...domain.channel import ChannelConfig, FrequencyCap, SendingRules, TokenStatus
from ...domain.quiet_hours import DEFAULT_QUIET_HOURS, QuietHours
from .db import Engine, Row, from_micros, to_micros

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
        rules=rules_from_json(row["rules"]),
    )


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _time(seconds: int) -> time:
    return time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def rules_to_json(rules: SendingRules) -> str:
    """The sending rules as one JSON column: what is not the default only."""
    doc: dict[str, Any] = {}
    if rules.time_zone:
        doc["time_zone"] = rules.time_zone
    q = rules.quiet_hours
    doc["quiet_hours"] = [_seconds(q.start), _seconds(q.end), not q.transactional_exempt]
    if rules.frequency_cap is not None:
        doc["frequency_cap"] = [rules.frequency_cap.max_sms, int(rules.frequency_cap.period.total_seconds())]
    if rules.part_prices:
        doc["part_prices"] = {"currency": rules.currency, "nanos": dict(rules.part_prices)}
    return orjson.dumps(doc).decode()


def rules_from_json(text: str) -> SendingRules:
    """The column back; `{}` (every config before the rules existed) is the defaults."""
    doc = orjson.loads(text or "{}")
    quiet = DEFAULT_QUIET_HOURS
    if (q := doc.get("quiet_hours")) is not None:
        start, end, include_transactional = q
        quiet = QuietHours(_time(start), _time(end), transactional_exempt=not include_transactional)
    cap = doc.get("frequency_cap")
    prices = doc.get("part_prices") or {}
    return SendingRules(
        doc.get("time_zone", ""),
        quiet,
        None if cap is None else FrequencyCap(cap[0], timedelta(seconds=cap[1])),
        prices.get("currency", ""),
        MappingProxyType(prices.get("nanos", {})),
    )


class SqliteChannelConfigs:
    """ChannelConfigRepository on SQLite."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    async def get(self, store_id: str) -> ChannelConfig | None:
        """The config, or None."""
        row = await self._db.fetch_one("SELECT * FROM channel_configs WHERE store_id = ?", (store_id,))
        return None if row is None else _from_row(row)

    async def update(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        """Read, change and write atomically."""

        def update(conn: sqlite3.Connection) -> ChannelConfig:
            row = conn.execute("SELECT * FROM channel_configs WHERE store_id = ?", (store_id,)).fetchone()
            current = None if row is None else _from_row(row)
            new = change(current)
            if new is current:
                return new
            assert new.update_time is not None
            conn.execute(_UPSERT, (store_id, *_values(new)))
            return new

        return await self._db.write(update)


_COLUMNS = (
    "provider",
    "token",
    "token_hint",
    "default_country",
    "default_sender",
    "callback_secret",
    "token_status",
    "token_status_message",
    "account_balance",
    "update_time",
    "version",
    "rules",
)
_UPSERT = (
    f"INSERT INTO channel_configs (store_id, {', '.join(_COLUMNS)}) VALUES (?{', ?' * len(_COLUMNS)})"
    f" ON CONFLICT (store_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS)}"
)


def _values(config: ChannelConfig) -> tuple[object, ...]:
    assert config.update_time is not None
    return (
        config.provider,
        config.token_ciphertext,
        config.token_hint,
        config.default_country,
        config.default_sender,
        config.callback_secret,
        int(config.token_status),
        config.token_status_message,
        config.account_balance,
        to_micros(config.update_time),
        config.version,
        rules_to_json(config.rules),
    )
