"""Workflows, runs and run steps on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...domain.enums import MessageStatus
from ...domain.workflows import Run, RunState, RunStep, Workflow, WorkflowState, send_outcome
from ...errors import Aborted
from ...names import WorkflowName
from .. import BroadcastDue, BroadcastPage, PageSends, Positioned, RunUpdate, RunWithSteps
from ..graph_json import graph_from_json, graph_to_json
from . import jsoncol
from .db import Engine, Row, delete_checked, from_micros, insert_new, to_micros

__all__ = [
    "SqliteWorkflows",
    "advance_broadcast",
    "broadcast_active",
    "insert_page_runs",
    "insert_runs",
    "live_runs",
    "new_runs",
    "save_runs",
]

_ACTIVE = int(WorkflowState.ACTIVE)
_RUNNING, _WAITING, _PAUSED = int(RunState.RUNNING), int(RunState.WAITING), int(RunState.PAUSED)
# States are bound as parameters, but for this one: SQLite uses a partial index only when it can prove
# the query implies the index's WHERE, and it cannot for `IN (?, ?)`. So the due-runs queries repeat
# the runs_due index's predicate (0004_workflows.sql) in its own words, from the enum; the query plan
# test checks the index is used.
_LIVE_RUN = f"r.state IN ({_RUNNING}, {_WAITING})"
_RUNS_OF_ACTIVE = "workflow_runs r JOIN workflows w ON w.store_id = r.store_id AND w.id = r.workflow_id"
RUNS_DUE = (
    f"SELECT r.* FROM {_RUNS_OF_ACTIVE} WHERE {_LIVE_RUN} AND r.wake_time <= ? AND w.state = ?"
    " ORDER BY r.wake_time LIMIT ?"
)
RUNS_NEXT_WAKE = f"SELECT MIN(r.wake_time) AS t FROM {_RUNS_OF_ACTIVE} WHERE {_LIVE_RUN} AND w.state = ?"


def _workflow_from_row(row: Row) -> Workflow:
    trigger, nodes, start = graph_from_json(jsoncol.loads(row["graph"]))
    return Workflow(
        store_id=row["store_id"],
        id=row["id"],
        display_name=row["display_name"],
        state=WorkflowState(row["state"]),
        trigger=trigger,
        nodes=nodes,
        start_node=start,
        create_time=from_micros(row["create_time"]),
        update_time=from_micros(row["update_time"]),
        version=row["version"],
        last_error=row["last_error"],
        last_error_time=from_micros(row["last_error_time"]) if row["last_error_time"] else None,
    )


def _run_from_row(row: Row) -> Run:
    return Run(
        store_id=row["store_id"],
        workflow_id=row["workflow_id"],
        id=row["id"],
        contact_id=row["contact_id"],
        state=RunState(row["state"]),
        current_node=row["current_node"],
        wake_time=from_micros(row["wake_time"]),
        create_time=from_micros(row["create_time"]),
        update_time=from_micros(row["update_time"]),
        event=jsoncol.loads(row["event"]),
        request_id=row["request_id"],
        step_count=row["step_count"],
    )


def _graph(wf: Workflow) -> str:
    return jsoncol.dumps(graph_to_json(wf))


_INSERT_RUN = (
    "INSERT INTO workflow_runs (store_id, workflow_id, id, contact_id, state, current_node, wake_time,"
    " event, request_id, step_count, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


def _run_params(r: Run) -> tuple[Any, ...]:
    return (
        r.store_id,
        r.workflow_id,
        r.id,
        r.contact_id,
        int(r.state),
        r.current_node,
        to_micros(r.wake_time),
        jsoncol.dumps(dict(r.event)) if r.event else "{}",  # a broadcast's runs have no event
        r.request_id,
        r.step_count,
        to_micros(r.create_time),
        to_micros(r.update_time),
    )


def _new_runs(conn: sqlite3.Connection, runs: Sequence[RunUpdate]) -> list[RunUpdate]:
    """The runs whose id and request id are both unused (the first of any repeated in `runs`)."""
    taken: set[tuple[str, str, str, str]] = set()  # (store, workflow, column, value)
    groups: dict[tuple[str, str], list[RunUpdate]] = {}
    for u in runs:
        groups.setdefault((u.run.store_id, u.run.workflow_id), []).append(u)
    for (store_id, workflow_id), members in groups.items():
        for column, values in (
            ("id", [u.run.id for u in members]),
            ("request_id", [u.run.request_id for u in members if u.run.request_id]),
        ):
            for i in range(0, len(values), 500):
                chunk = values[i : i + 500]
                sql = (
                    f"SELECT {column} FROM workflow_runs WHERE store_id = ? AND workflow_id = ?"
                    f" AND {column} != '' AND {column} IN ({','.join('?' * len(chunk))})"
                )
                rows = conn.execute(sql, (store_id, workflow_id, *chunk))
                taken.update((store_id, workflow_id, column, r[0]) for r in rows)
    new = []
    for u in runs:
        r = u.run
        keys = [(r.store_id, r.workflow_id, "id", r.id)]
        if r.request_id:
            keys.append((r.store_id, r.workflow_id, "request_id", r.request_id))
        if not any(k in taken for k in keys):
            taken.update(keys)
            new.append(u)
    return new


def _insert_steps(conn: sqlite3.Connection, updates: Sequence[RunUpdate]) -> None:
    conn.executemany(
        "INSERT INTO workflow_run_steps (store_id, workflow_id, run_id, node, time, outcome, message_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (u.run.store_id, u.run.workflow_id, u.run.id, s.node, to_micros(s.time), s.outcome, s.message_id)
            for u in updates
            for s in u.steps
        ],
    )


def advance_broadcast(conn: sqlite3.Connection, page: BroadcastPage) -> bool:
    """Inside a write transaction: move a broadcast's cursor past `page` (it moved: its error is
    cleared), only while the workflow is still ACTIVE at the page's version. False when it was paused,
    edited or deleted meanwhile: the page's runs must not be stored (they would run under a paused
    workflow, or under none)."""
    moved = conn.execute(
        "UPDATE workflows SET broadcast_after = ?, broadcast_done = ?, last_error = '',"
        " last_error_time = 0 WHERE store_id = ? AND id = ? AND version = ? AND state = ?",
        (page.after, int(page.last), page.store_id, page.workflow_id, page.version, _ACTIVE),
    )
    return bool(moved.rowcount)


def new_runs(conn: sqlite3.Connection, runs: Sequence[Run]) -> list[bool]:
    """Inside a write transaction: whether each run is new (its id and request id both unused, and the
    first of any repeated here), as `insert_runs` judges it."""
    created = {id(u.run) for u in _new_runs(conn, [RunUpdate(r) for r in runs])}
    return [id(r) in created for r in runs]


def insert_runs(conn: sqlite3.Connection, runs: Sequence[RunUpdate]) -> list[Run]:
    """Inside a write transaction: the new runs and their steps (see SqliteWorkflows.add_runs)."""
    created = _new_runs(conn, runs)
    conn.executemany(_INSERT_RUN, [_run_params(u.run) for u in created])
    _insert_steps(conn, created)
    return [u.run for u in created]


def broadcast_active(conn: sqlite3.Connection, page: BroadcastPage) -> bool:
    """Inside a write transaction: whether the page's workflow is still ACTIVE at the page's version."""
    row = conn.execute(
        "SELECT 1 FROM workflows WHERE store_id = ? AND id = ? AND version = ? AND state = ?",
        (page.store_id, page.workflow_id, page.version, _ACTIVE),
    ).fetchone()
    return row is not None


# A step's outcome from the message its request id names (send_outcome, in SQL): "queued", "skipped: ..."
_OUTCOME = (
    f"CASE m.status {' '.join('WHEN ? THEN ?' for _ in MessageStatus)} END"
    " || CASE WHEN m.status_reason = '' THEN '' ELSE ': ' || m.status_reason END"
)
_OUTCOME_PARAMS = [v for status in MessageStatus for v in (int(status), send_outcome(status, ""))]
_NEW_RUN = (
    "NOT EXISTS (SELECT 1 FROM workflow_runs r WHERE r.store_id = ? AND r.workflow_id = ? AND r.id = ? || p.contact_id)"
)


def insert_page_runs(conn: sqlite3.Connection, sends: PageSends) -> None:
    """Inside a write transaction, once the page's messages are in (`insert_page_messages`): each new
    run and its step, which names the message of the run's request id (new, or stored before) with
    its outcome. A run id already taken stores nothing."""
    if not sends.members:
        return
    contacts = [member[0] for member in sends.members]
    page = f"WITH p (contact_id) AS (VALUES {', '.join(['(?)'] * len(contacts))})"
    run = sends.run
    now = to_micros(run.update_time)
    new_run = (run.store_id, run.workflow_id, sends.run_prefix)
    conn.execute(
        f"{page} INSERT INTO workflow_run_steps (store_id, workflow_id, run_id, node, time, outcome, message_id)"
        f" SELECT ?, ?, ? || p.contact_id, ?, ?, {_OUTCOME}, m.id FROM p JOIN messages m ON m.store_id = ?"
        f" AND m.request_id != '' AND m.request_id = ? || p.contact_id || ? WHERE {_NEW_RUN}",
        (
            *contacts,
            *new_run,
            sends.node,
            now,
            *_OUTCOME_PARAMS,
            run.store_id,
            sends.request_prefix,
            sends.request_suffix,
            *new_run,
        ),
    )
    template = _run_params(run)
    conn.execute(
        f"{page} INSERT INTO workflow_runs (store_id, workflow_id, id, contact_id, state, current_node, wake_time,"
        " event, request_id, step_count, create_time, update_time)"
        f" SELECT ?, ?, ? || p.contact_id, p.contact_id, ?, ?, ?, ?, ?, ?, ?, ? FROM p WHERE {_NEW_RUN}",
        (*contacts, *template[:2], sends.run_prefix, *template[4:], *new_run),
    )


def live_runs(conn: sqlite3.Connection, runs: Sequence[Run]) -> list[bool]:
    """Inside a write transaction: whether each run is still as it was read: RUNNING or WAITING, at
    the same step (not paused with its workflow, failed, deleted, or moved on by this same write
    landing twice)."""
    live: set[tuple[str, str, str, int]] = set()
    keys = [(r.store_id, r.workflow_id, r.id, r.step_count) for r in runs]
    for i in range(0, len(keys), 300):
        chunk = keys[i : i + 300]
        terms = " OR ".join("(store_id = ? AND workflow_id = ? AND id = ? AND step_count = ?)" for _ in chunk)
        sql = f"SELECT store_id, workflow_id, id, step_count FROM workflow_runs WHERE state IN (?, ?) AND ({terms})"
        rows = conn.execute(sql, [_RUNNING, _WAITING, *(v for k in chunk for v in k)])
        live.update((r[0], r[1], r[2], r[3]) for r in rows)
    return [key in live for key in keys]


def save_runs(conn: sqlite3.Connection, updates: Sequence[RunUpdate]) -> None:
    """Inside a write transaction: each run's new position and the steps it took. The caller saves only
    runs still live (`live_runs`): a run paused meanwhile keeps its old position and takes the step
    again on re-activation (sends are idempotent)."""
    if not updates:
        return
    conn.executemany(
        "UPDATE workflow_runs SET state = ?, current_node = ?, wake_time = ?, step_count = ?, update_time = ?"
        " WHERE store_id = ? AND workflow_id = ? AND id = ?",
        [
            (
                int(u.run.state),
                u.run.current_node,
                to_micros(u.run.wake_time),
                u.run.step_count,
                to_micros(u.run.update_time),
                u.run.store_id,
                u.run.workflow_id,
                u.run.id,
            )
            for u in updates
        ],
    )
    _insert_steps(conn, updates)


class SqliteWorkflows:
    """WorkflowRepository on SQLite."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    async def create(self, wf: Workflow) -> None:
        """Store a new workflow; AlreadyExists if the id is taken."""
        await insert_new(
            self._db,
            "INSERT INTO workflows (store_id, id, display_name, state, trigger_kind, event_name, graph,"
            " create_time, update_time, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                wf.store_id,
                wf.id,
                wf.display_name,
                int(wf.state),
                wf.trigger.kind,
                wf.trigger.event_name,
                _graph(wf),
                to_micros(wf.create_time),
                to_micros(wf.update_time),
                wf.version,
            ),
            str(WorkflowName(wf.store_id, wf.id)),
        )

    async def get(self, store_id: str, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        row = await self._db.fetch_one("SELECT * FROM workflows WHERE store_id = ? AND id = ?", (store_id, workflow_id))
        return None if row is None else _workflow_from_row(row)

    async def page(
        self, store_id: str, state: WorkflowState | None, after: int, limit: int
    ) -> list[Positioned[Workflow]]:
        """Workflows after position `after`, oldest first."""
        sql = "SELECT * FROM workflows WHERE store_id = ? AND seq > ?"
        params: list[Any] = [store_id, after]
        if state is not None:
            sql += " AND state = ?"
            params.append(int(state))
        rows = await self._db.fetch_all(sql + " ORDER BY seq LIMIT ?", (*params, limit))
        return [Positioned(row["seq"], _workflow_from_row(row)) for row in rows]

    async def update(self, wf: Workflow, expected_version: int, now: datetime) -> None:
        """Replace a workflow still at `expected_version` (else Aborted). Runs follow its state: paused
        with it, resumed (waiting again when their timer is still ahead) on activation."""

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE workflows SET display_name = ?, state = ?, trigger_kind = ?, event_name = ?, graph = ?,"
                " update_time = ?, version = ? WHERE store_id = ? AND id = ? AND version = ?",
                (
                    wf.display_name,
                    int(wf.state),
                    wf.trigger.kind,
                    wf.trigger.event_name,
                    _graph(wf),
                    to_micros(wf.update_time),
                    wf.version,
                    wf.store_id,
                    wf.id,
                    expected_version,
                ),
            )
            if cur.rowcount == 0:
                raise Aborted(f"{WorkflowName(wf.store_id, wf.id)} changed meanwhile; get it again")
            if wf.state is WorkflowState.PAUSED:
                conn.execute(
                    "UPDATE workflow_runs SET state = ? WHERE store_id = ? AND workflow_id = ? AND state IN (?, ?)",
                    (_PAUSED, wf.store_id, wf.id, _RUNNING, _WAITING),
                )
            elif wf.state is WorkflowState.ACTIVE:
                conn.execute(
                    "UPDATE workflow_runs SET state = CASE WHEN wake_time > ? THEN ? ELSE ? END"
                    " WHERE store_id = ? AND workflow_id = ? AND state = ?",
                    (to_micros(now), _WAITING, _RUNNING, wf.store_id, wf.id, _PAUSED),
                )
                # A fresh start: an error of the workflow's previous activation says nothing of this one.
                conn.execute(
                    "UPDATE workflows SET last_error = '', last_error_time = 0 WHERE store_id = ? AND id = ?",
                    (wf.store_id, wf.id),
                )

        # Resuming or pausing touches every run of the workflow: one hop to the database thread.
        await self._db.write_batch(update)

    async def delete(self, store_id: str, workflow_id: str, etag: str) -> None:
        """Delete a workflow with its runs (messages stay in the log)."""
        name = str(WorkflowName(store_id, workflow_id))
        children = ("workflow_run_steps.workflow_id", "workflow_runs.workflow_id")
        await delete_checked(self._db, "workflows", store_id, workflow_id, etag, name, *children)

    async def active_for(self, store_id: str, trigger_kind: str, event_name: str = "") -> list[Workflow]:
        """ACTIVE workflows of a store with this trigger."""
        rows = await self._db.fetch_all(
            "SELECT * FROM workflows WHERE store_id = ? AND state = ? AND trigger_kind = ? AND event_name = ?",
            (store_id, _ACTIVE, trigger_kind, event_name),
        )
        return [_workflow_from_row(r) for r in rows]

    async def broadcasts_due(self) -> list[BroadcastDue]:
        """ACTIVE broadcast workflows not yet through their contacts, with their cursor. Keys only: the
        engine reads each workflow on its own, so one that cannot be read fails alone."""
        rows = await self._db.fetch_all(
            "SELECT store_id, id, version, broadcast_after FROM workflows"
            " WHERE state = ? AND trigger_kind = 'broadcast' AND broadcast_done = 0 ORDER BY seq",
            (_ACTIVE,),
        )
        return [BroadcastDue(r["store_id"], r["id"], r["version"], r["broadcast_after"]) for r in rows]

    async def set_error(self, store_id: str, workflow_id: str, version: int, error: str, time: datetime) -> None:
        """Record why the engine could not move the workflow at `version` (an edit or a re-activation
        since makes it moot); the version, the etag, stays."""
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE workflows SET last_error = ?, last_error_time = ?"
                " WHERE store_id = ? AND id = ? AND version = ?",
                (error, to_micros(time), store_id, workflow_id, version),
            )
        )

    async def add_runs(self, runs: Sequence[RunUpdate]) -> list[Run]:
        """Store new runs, each with the steps it has already taken (ids and request ids already used
        are skipped, with their steps); returns the runs stored."""
        return await self._db.write_batch(lambda conn: insert_runs(conn, runs))

    async def find_run_by_request(self, store_id: str, workflow_id: str, request_id: str) -> Run | None:
        """The run started by this request id."""
        row = await self._db.fetch_one(
            "SELECT * FROM workflow_runs WHERE store_id = ? AND workflow_id = ?"
            " AND request_id != '' AND request_id = ?",
            (store_id, workflow_id, request_id),
        )
        return None if row is None else _run_from_row(row)

    async def get_run(self, store_id: str, workflow_id: str, run_id: str) -> RunWithSteps | None:
        """A run with its steps."""
        row = await self._db.fetch_one(
            "SELECT * FROM workflow_runs WHERE store_id = ? AND workflow_id = ? AND id = ?",
            (store_id, workflow_id, run_id),
        )
        if row is None:
            return None
        steps = await self._db.fetch_all(
            "SELECT * FROM workflow_run_steps WHERE store_id = ? AND workflow_id = ? AND run_id = ? ORDER BY seq",
            (store_id, workflow_id, run_id),
        )
        return RunWithSteps(
            _run_from_row(row),
            [RunStep(s["node"], from_micros(s["time"]), s["outcome"], s["message_id"]) for s in steps],
        )

    async def page_runs(
        self, store_id: str, workflow_id: str, state: RunState | None, contact_id: str | None, after: int, limit: int
    ) -> list[Positioned[Run]]:
        """Runs of a workflow after position `after`, oldest first."""
        sql = "SELECT * FROM workflow_runs WHERE store_id = ? AND workflow_id = ? AND seq > ?"
        params: list[Any] = [store_id, workflow_id, after]
        if state is not None:
            sql += " AND state = ?"
            params.append(int(state))
        if contact_id is not None:
            sql += " AND contact_id = ?"
            params.append(contact_id)
        rows = await self._db.fetch_all(sql + " ORDER BY seq LIMIT ?", (*params, limit))
        return [Positioned(row["seq"], _run_from_row(row)) for row in rows]

    async def due_runs(self, now: datetime, limit: int) -> list[Run]:
        """Runs ready to step: running or woken, of ACTIVE workflows, oldest wake first."""
        rows = await self._db.fetch_all(RUNS_DUE, (to_micros(now), _ACTIVE, limit))
        return [_run_from_row(r) for r in rows]

    async def next_wake(self) -> datetime | None:
        """The earliest timer of a running or waiting run."""
        # Of ACTIVE workflows only, as due_runs: a run left RUNNING under another would be a timer
        # always past, waking the engine for nothing.
        row = await self._db.fetch_one(RUNS_NEXT_WAKE, (_ACTIVE,))
        return None if row is None or row["t"] is None else from_micros(row["t"])
