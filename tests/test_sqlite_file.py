"""The SQLite file: its page size, set once when the file is new."""

from __future__ import annotations

import sqlite3
from contextlib import closing
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
