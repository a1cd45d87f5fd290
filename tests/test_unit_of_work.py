"""A unit of work is one transaction over several aggregates: all its writes land, or none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smschannel.storage import UnitOfWork
from smschannel.storage.sqlite import SqliteStorage
from smschannel.storage.sqlite.unit_of_work import INLINE

from .conftest import database_at

NOW = datetime(2026, 12, 3, tzinfo=UTC)


async def recorded(storage: SqliteStorage) -> int:
    row = await storage.db.fetch_one("SELECT COUNT(*) AS n FROM provider_events")
    assert row is not None
    return int(row["n"])


@pytest.mark.parametrize("size", [1, INLINE + 1], ids=["inline", "database thread"])
async def test_writes_land_together_or_not_at_all(tmp_path: Path, size: int) -> None:
    storage = await SqliteStorage.open(database_at(tmp_path, "u.db"))
    try:

        async def twice(tx: UnitOfWork) -> list[bool]:
            return [await tx.provider_events.record("s", "m1", "delivered", NOW) for _ in range(2)]

        assert await storage.atomically(twice, size) == [True, False]  # the second sees the first

        async def then_fails(tx: UnitOfWork) -> None:
            await tx.provider_events.record("s", "m2", "delivered", NOW)
            raise ValueError("midway")

        with pytest.raises(ValueError, match="midway"):
            await storage.atomically(then_fails, size)

        async def then_sleeps(tx: UnitOfWork) -> None:
            await tx.provider_events.record("s", "m3", "delivered", NOW)
            await asyncio.sleep(0)  # not a write: a unit of work must not suspend

        with pytest.raises(RuntimeError, match="must not suspend"):
            await storage.atomically(then_sleeps, size)
        assert await recorded(storage) == 1  # m1 only: m2 and m3 were rolled back
    finally:
        await storage.close()
