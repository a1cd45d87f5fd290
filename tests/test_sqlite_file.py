"""The SQLite file: its page size, set once when the file is new."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from importlib import resources
from pathlib import Path

from smschannel.storage.sqlite import SqliteStorage
from smschannel.storage.sqlite.db import PAGE_SIZE


async def test_a_new_database_uses_the_page_size_and_wal(tmp_path: Path) -> None:
    storage = await SqliteStorage.open(str(tmp_path / "new.db"))
    await storage.close()
    with closing(sqlite3.connect(tmp_path / "new.db")) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_existing_database_keeps_its_page_size_and_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    storage = await SqliteStorage.open(str(path))  # a file made before 8 KiB pages: rebuilt with 4 KiB
    await storage.close()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("VACUUM")
        conn.execute("INSERT INTO stores VALUES ('s1', 'Shop', 1, 0)")
        conn.execute("PRAGMA journal_mode = WAL")
    storage = await SqliteStorage.open(str(path))
    try:
        assert (await storage.stores.get("s1")) is not None
    finally:
        await storage.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


async def test_the_pause_migration_keeps_what_each_status_meant(tmp_path: Path) -> None:
    """A file at schema 4 (one phone status) upgraded to 5 (pause and rejection as two facts)."""
    path = tmp_path / "v4.db"
    folder = resources.files("smschannel.storage.sqlite") / "migrations"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_time INTEGER)")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            version = int(entry.name.split("_", 1)[0])
            if entry.name.endswith(".sql") and version <= 4:
                conn.executescript(entry.read_text())
                conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
        conn.execute("INSERT INTO stores VALUES ('s1', 'Shop', 1, 0)")
        for contact_id, status in (("active", 1), ("rejected", 2), ("paused", 3)):
            conn.execute(
                "INSERT INTO contacts (store_id, id, email, first_name, last_name, mobile_phone, mobile_phone_status,"
                " sms_subscription_status, custom_fields, create_time, update_time, version)"
                " VALUES ('s1', ?, '', '', '', '+34612345678', ?, 1, '{}', 0, 0, 1)",
                (contact_id, status),
            )
    storage = await SqliteStorage.open(str(path))
    try:
        read = {c: await storage.contacts.get("s1", c) for c in ("active", "rejected", "paused")}
        assert {c: (r.mobile_phone_status.name, r.phone_paused) for c, r in read.items() if r} == {
            "active": ("ACTIVE", False),
            "rejected": ("REJECTED", False),
            "paused": ("PAUSED", True),
        }
    finally:
        await storage.close()
