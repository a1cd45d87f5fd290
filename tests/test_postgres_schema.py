"""The PostgreSQL schema: its migrations apply once, even when replicas start together, and build what
the SQLite migrations build (tables, columns, keys, foreign keys, indexes), on a throwaway server."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from smschannel.storage.postgres.db import MIGRATION_LOCK, migrate, migrations
from smschannel.storage.postgres.engine import PgDatabase
from smschannel.storage.sqlite import SqliteStorage

from .conftest import eventually
from .postgres import create_database

_databases = itertools.count(1)
ALL_VERSIONS = [m.version for m in migrations()]
Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture
def database(postgres_dsn: str) -> str:
    """A new empty database on the throwaway server; its DSN."""
    return create_database(postgres_dsn, f"schema_{next(_databases)}")


def connect(database: str) -> Conn:
    return psycopg.connect(database, autocommit=True, row_factory=dict_row, connect_timeout=10)


@pytest.fixture
def conn(database: str) -> Iterator[Conn]:
    """A connection to the new database."""
    with connect(database) as connection:
        yield connection


def applied(conn: Conn) -> list[tuple[int, int]]:
    """schema_migrations: (version, applied_time) rows."""
    rows = conn.execute("SELECT version, applied_time FROM schema_migrations ORDER BY version").fetchall()
    return [(r["version"], r["applied_time"]) for r in rows]


async def opened(database: str) -> None:
    """Start as a replica does (connect, migrate), then stop."""
    await (await PgDatabase.open(database)).close()


async def test_the_migrations_build_the_schema_on_an_empty_database(database: str, conn: Conn) -> None:
    await opened(database)
    assert [v for v, _ in applied(conn)] == ALL_VERSIONS
    tables = {r["table_name"] for r in conn.execute(_PG_TABLES)}
    assert {"stores", "contacts", "messages", "workflows", "workflow_runs", "schema_migrations"} <= tables


async def test_migrating_again_does_nothing(database: str, conn: Conn) -> None:
    assert migrate(conn) == ALL_VERSIONS
    before = applied(conn)
    assert migrate(conn) == []
    await opened(database)  # a restart
    assert applied(conn) == before


async def test_replicas_waiting_on_the_lock_apply_each_migration_once(database: str, conn: Conn) -> None:
    # Hold the migrations' lock until both replicas are queued behind it, so that they do contend.
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    replicas = [connect(database) for _ in range(2)]
    both = asyncio.gather(*(asyncio.to_thread(migrate, r) for r in replicas))
    try:

        async def both_waiting() -> bool:
            row = conn.execute(_WAITING_ON_ADVISORY_LOCKS).fetchone()
            return row is not None and row["n"] == 2

        await eventually(both_waiting, "both replicas waiting on the migration lock")
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        first, second = await both
    finally:
        for r in replicas:
            r.close()
    assert sorted(first + second) == ALL_VERSIONS
    assert [v for v, _ in applied(conn)] == ALL_VERSIONS


async def test_two_replicas_opening_at_once_both_start(database: str, conn: Conn) -> None:
    results = await asyncio.gather(*(opened(database) for _ in range(2)), return_exceptions=True)
    assert results == [None, None], results
    assert [v for v, _ in applied(conn)] == ALL_VERSIONS


async def test_the_schema_is_sqlite_s(tmp_path: Path, database: str, conn: Conn) -> None:
    await (await SqliteStorage.open(str(tmp_path / "schema.db"))).close()
    migrate(conn)
    sqlite_schema = _sqlite_schema(tmp_path / "schema.db")
    postgres_schema = _postgres_schema(conn)
    assert sorted(postgres_schema) == sorted(sqlite_schema)
    for table, shape in sqlite_schema.items():
        assert postgres_schema[table] == shape, table


@dataclass
class Table:
    """What both backends must agree on about one table."""

    columns: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, kind, NOT NULL), in order
    keys: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)  # ("primary" | "unique", columns)
    foreign: set[tuple[tuple[str, ...], str, tuple[str, ...], str]] = field(default_factory=set)
    indexes: set[tuple[str, tuple[str, ...], bool, bool]] = field(default_factory=set)  # name, columns, unique, partial


# What the Python code gets back, which is what must match: every integer width is an int.
_SQLITE_KINDS = {"INTEGER": "int", "TEXT": "str", "BLOB": "bytes", "REAL": "float"}
_POSTGRES_KINDS = {
    "smallint": "int",
    "integer": "int",
    "bigint": "int",
    "text": "str",
    "bytea": "bytes",
    "double precision": "float",
}
_ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def _sqlite_schema(path: Path) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    with closing(sqlite3.connect(path)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for name in (n for n in names if not n.startswith("sqlite_")):
            table = tables[name] = Table()
            info = db.execute(f"PRAGMA table_info({name})").fetchall()  # cid, name, type, notnull, default, pk
            # A PRIMARY KEY column is NOT NULL in PostgreSQL; SQLite's may hold NULL unless it says so.
            table.columns = [(c[1], _SQLITE_KINDS[c[2]], bool(c[3] or c[5])) for c in info]
            table.keys.add(("primary", tuple(c[1] for c in sorted(info, key=lambda c: c[5]) if c[5])))
            for _, index, unique, origin, partial in db.execute(f"PRAGMA index_list({name})"):
                columns = tuple(r[2] for r in db.execute(f"PRAGMA index_info({index})"))
                if origin == "u":
                    table.keys.add(("unique", columns))
                elif origin == "c":
                    table.indexes.add((index, columns, bool(unique), bool(partial)))
            fks: dict[int, list[Any]] = {}
            for fk_id, _, target, src, dst, _, on_delete, _ in db.execute(f"PRAGMA foreign_key_list({name})"):
                fks.setdefault(fk_id, [(), target, (), on_delete])
                fks[fk_id][0] += (src,)
                fks[fk_id][2] += (dst,)
            table.foreign = {(f[0], f[1], f[2], f[3]) for f in fks.values()}
    return tables


_PG_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
_PG_COLUMNS = """
SELECT table_name, column_name, data_type, is_nullable = 'NO' AS not_null
FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"""
_PG_CONSTRAINTS = """
SELECT t.relname AS table_name, c.contype::text, r.relname AS target, c.confdeltype::text,
       array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)::text[] AS columns,
       array(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i)::text[] AS target_columns
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid LEFT JOIN pg_class r ON r.oid = c.confrelid
WHERE t.relnamespace = 'public'::regnamespace AND c.contype IN ('p', 'u', 'f')"""
# Indexes of their own, not those behind a PRIMARY KEY or UNIQUE constraint (SQLite's autoindexes).
_PG_INDEXES = """
SELECT t.relname AS table_name, i.relname AS index_name, x.indisunique, x.indpred IS NOT NULL AS partial,
       array(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnatts) k ORDER BY k) AS columns
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relnamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
"""
_WAITING_ON_ADVISORY_LOCKS = """
SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def _postgres_schema(conn: Conn) -> dict[str, Table]:
    tables = {r["table_name"]: Table() for r in conn.execute(_PG_TABLES)}
    for r in conn.execute(_PG_COLUMNS):
        tables[r["table_name"]].columns.append((r["column_name"], _POSTGRES_KINDS[r["data_type"]], r["not_null"]))
    for r in conn.execute(_PG_CONSTRAINTS):
        table, columns = tables[r["table_name"]], tuple(r["columns"])
        if r["contype"] == "f":
            table.foreign.add((columns, r["target"], tuple(r["target_columns"]), _ON_DELETE[r["confdeltype"]]))
        else:
            table.keys.add(("primary" if r["contype"] == "p" else "unique", columns))
    for r in conn.execute(_PG_INDEXES):
        index = (r["index_name"], tuple(r["columns"]), r["indisunique"], r["partial"])
        tables[r["table_name"]].indexes.add(index)
    return tables
