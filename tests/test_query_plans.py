"""The hot queries bind their enum values as parameters and still use their partial indexes.

SQLite takes a partial index only when it can prove that the query implies the index's WHERE; a bound
`status = ?` qualifies (the statement is planned with the bound value), an `IN (?, ?)` does not. So a
change of wording can silently turn the outbox's or the engine's poll into a scan of every message or
run: these plans are checked on the schema the migrations build."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smschannel.domain.enums import MessageStatus, SmsType
from smschannel.domain.workflows import WorkflowState
from smschannel.storage.sqlite import SqliteStorage
from smschannel.storage.sqlite.messages import NEWSLETTERS_RECEIVED, OUTBOX_DUE, OUTBOX_NEXT, RELEASE_HELD
from smschannel.storage.sqlite.workflows import RUNS_DUE, RUNS_NEXT_WAKE

QUEUED, ACTIVE = int(MessageStatus.QUEUED), int(WorkflowState.ACTIVE)
SENT, DELIVERED, NEWSLETTER = int(MessageStatus.SENT), int(MessageStatus.DELIVERED), int(SmsType.NEWSLETTER)
CASES = [
    (
        NEWSLETTERS_RECEIVED.format(marks="?,?"),
        ("s", "c1", "c2", SENT, DELIVERED, NEWSLETTER, 0),
        "messages_by_contact",
    ),
    (RELEASE_HELD, (0, QUEUED, 0, "s"), "messages_outbox"),
    (OUTBOX_DUE, (QUEUED, 0, "replica", 0, 100), "messages_outbox"),
    (OUTBOX_NEXT, (QUEUED,), "messages_outbox"),
    (RUNS_DUE, (0, ACTIVE, 100), "runs_due"),
    (RUNS_NEXT_WAKE, (ACTIVE,), "runs_due"),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("plans") / "plans.db"

    async def make() -> None:
        await (await SqliteStorage.open(str(path))).close()

    asyncio.run(make())
    return path


@pytest.mark.parametrize(("sql", "params", "index"), CASES, ids=[c[2] + str(len(c[1])) for c in CASES])
def test_hot_queries_use_their_partial_index(schema: Path, sql: str, params: tuple[int, ...], index: str) -> None:
    with sqlite3.connect(schema) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert f"USING INDEX {index}" in plan, plan
