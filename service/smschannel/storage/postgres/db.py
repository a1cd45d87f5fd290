"""The PostgreSQL schema: the versioned migrations, and applying them.

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

import psycopg

__all__ = ["MIGRATION_LOCK", "Migration", "migrate", "migrations"]

log = logging.getLogger(__name__)

# The advisory lock key of migrations ("sms_migr" in ASCII): any bigint, the same in every replica.
MIGRATION_LOCK = 0x736D_735F_6D69_6772

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


def migrate(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations the database lacks, each once; returns the versions this call applied.

    Each in its own transaction, which first takes the migrations' advisory lock: replicas starting
    together apply each migration once, one after the other, and creating schema_migrations under the
    lock spares them a race on the catalog."""
    applied: list[int] = []
    for migration in migrations():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_SCHEMA_MIGRATIONS)
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,))
            if done.fetchone() is not None:
                continue
            conn.execute(migration.sql.encode())  # no parameters: a file of several statements
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_time) VALUES (%s, %s)",
                (migration.version, time.time_ns() // 1000),
            )
        log.info("migration applied", extra={"version": migration.version, "file": migration.name})
        applied.append(migration.version)
    return applied
