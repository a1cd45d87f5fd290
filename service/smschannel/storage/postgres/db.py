"""The PostgreSQL database: an asyncpg pool and the versioned migrations.

Migrations are `migrations/NNNN_name.sql`, applied in order, each once, each in its own transaction
together with its row in `schema_migrations` (the table the SQLite backend keeps too). Every replica
migrates as it starts: a transaction-scoped advisory lock makes a second replica wait for the first,
then find the migration already applied.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["MIGRATION_LOCK", "MIGRATION_TIMEOUT", "Migration", "migrate", "migrations", "open_pool"]

log = logging.getLogger(__name__)

# The advisory lock key of migrations ("sms_migr" in ASCII): any bigint, the same in every replica.
MIGRATION_LOCK = 0x736D_735F_6D69_6772
# A migration (an index on a big table) may take minutes, and another replica waits for it as long.
MIGRATION_TIMEOUT = 15 * 60.0

_SCHEMA_MIGRATIONS = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_time BIGINT)"


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the number its name starts with), name and SQL."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migration files, in version order."""
    folder = resources.files(__package__) / "migrations"
    files = [entry for entry in folder.iterdir() if entry.name.endswith(".sql")]
    found = sorted(
        (Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text()) for f in files), key=lambda m: m.version
    )
    if not found:  # e.g. a wheel built without them (package-data)
        raise RuntimeError(f"no PostgreSQL migrations in {folder}")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {[m.name for m in found]}")
    return found


async def migrate(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[int]:
    """Apply the migrations the database lacks, each once; returns the versions this call applied."""
    applied: list[int] = []
    for migration in migrations():
        async with conn.transaction():
            # Held to the end of the transaction: concurrent starters apply each migration one at a time,
            # and creating schema_migrations under it spares them a race on the catalog.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT)
            await conn.execute(_SCHEMA_MIGRATIONS, timeout=MIGRATION_TIMEOUT)
            done = await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version)
            if done is not None:
                continue
            await conn.execute(migration.sql, timeout=MIGRATION_TIMEOUT)  # no arguments: several statements may run
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_time) VALUES ($1, $2)",
                migration.version,
                time.time_ns() // 1000,
            )
        log.info("migration applied", extra={"version": migration.version, "file": migration.name})
        applied.append(migration.version)
    return applied


async def open_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    command_timeout: float = 30.0,
) -> asyncpg.Pool[asyncpg.Record]:
    """A connection pool on `dsn` (`postgresql://user:password@host:port/database`), its database
    migrated to the current schema. Every query has `command_timeout` seconds unless it says otherwise."""
    pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings={"application_name": "smschannel"},
    )
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
