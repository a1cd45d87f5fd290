"""One store's broken workflow fails that run or that workflow, never the engine for every store (SPEC §8)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from smschannel.domain.workflows import (
    EndStep,
    Node,
    ReceivedSmsStep,
    Run,
    RunState,
    Trigger,
    WaitStep,
    Workflow,
    WorkflowState,
)
from smschannel.errors import InvalidArgument
from smschannel.operations import workflow_engine
from smschannel.server import App
from smschannel.storage import RunUpdate
from smschannel.storage.sqlite import unit_of_work
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import StoreCtx, Stubs, eventually
from .rpc_errors import field_violations
from .test_sending import content
from .test_workflows import activate, contact, create_workflow, end, run_state, send_node, trigger, violations

# What a Duration may hold (10,000 years): far beyond what the engine can add to a date.
HUGE = timedelta(seconds=315_576_000_000)


async def stored(app: App, store: StoreCtx, state: WorkflowState, trigger: Trigger, *nodes: Node) -> str:
    """A workflow written straight to storage, as one from before the API checked it; its name."""
    now = datetime.now(UTC)
    wf = Workflow(store.id, f"legacy-{uuid.uuid4().hex[:8]}", "Legacy", state, trigger, nodes, nodes[0].id, now, now)
    await app.storage.workflows.create(wf)
    return f"{store.name}/workflows/{wf.id}"


@pytest.fixture
async def cleanup(stubs: Stubs) -> AsyncIterator[list[tuple[str, StoreCtx]]]:
    """Workflows to delete after the test, so the session's engine does not keep retrying them."""
    names: list[tuple[str, StoreCtx]] = []
    yield names
    for name, store in names:
        await stubs.workflows.DeleteWorkflow(wpb.DeleteWorkflowRequest(name=name), metadata=store.md)


async def test_a_poisoned_store_fails_its_own_runs_and_others_complete(
    stubs: Stubs, app: App, store: StoreCtx, sending_store: StoreCtx, cleanup: list[tuple[str, StoreCtx]]
) -> None:
    # Store A: workflows the API now refuses, as an older version stored them, all ACTIVE.
    bad_filter = await stored(
        app, store, WorkflowState.ACTIVE, Trigger("broadcast", contact_filter="nonsense ==="), Node("e", EndStep())
    )
    event = Trigger("event", event_name="poison")
    endless_wait = await stored(
        app, store, WorkflowState.ACTIVE, event, Node("w", WaitStep(duration=HUGE, next="e")), Node("e", EndStep())
    )
    endless_window = await stored(
        app, store, WorkflowState.ACTIVE, event, Node("r", ReceivedSmsStep("e", "e", window=HUGE)), Node("e", EndStep())
    )
    cleanup += [(bad_filter, store), (endless_wait, store), (endless_window, store)]
    poisoned = await contact(stubs, store, "+34612500901")
    poisoned_runs = await trigger(stubs, store, "poison", poisoned)
    assert len(poisoned_runs) == 2

    # Store B: an ordinary transactional workflow.
    txt = await content(stubs, sending_store, "Pedido confirmado")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="order_placed")),
        [send_node("send", txt.name, "end"), end()],
    )
    cleanup.append((wf.name, sending_store))
    await activate(stubs, sending_store, wf)
    ana = await contact(stubs, sending_store, "612 500 902")
    runs = [name for _ in range(3) for name in await trigger(stubs, sending_store, "order_placed", ana)]
    for name in runs:
        done = await run_state(stubs, sending_store, name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
        assert [s.node for s in done.steps] == ["send", "end"]

    for name in poisoned_runs:  # each failed where it stood, saying why
        failed = await run_state(stubs, store, name, wpb.WORKFLOW_RUN_STATE_FAILED)
        assert failed.steps[-1].outcome.startswith("failed: OverflowError"), failed.steps[-1].outcome
        assert failed.current_node in ("w", "r")

    async def retried() -> bool:  # the broadcast keeps its ACTIVE state and shows why it is not moving
        got = await stubs.workflows.GetWorkflow(wpb.GetWorkflowRequest(name=bad_filter), metadata=store.md)
        return "failed 2 time(s)" in got.last_error

    await eventually(retried, "the broadcast's second attempt")
    got = await stubs.workflows.GetWorkflow(wpb.GetWorkflowRequest(name=bad_filter), metadata=store.md)
    assert got.state == wpb.WORKFLOW_STATE_ACTIVE
    assert "trigger.broadcast.contact_filter: each term is" in got.last_error, got.last_error
    assert got.HasField("last_error_time")


async def doomed_and_fine(
    stubs: Stubs, store: StoreCtx, text: str, cleanup: list[tuple[str, StoreCtx]]
) -> dict[str, str]:
    """Two ACTIVE workflows sending `text` on the events "doomed" and "fine"; their ids by event."""
    ids = {}
    for event in ("doomed", "fine"):
        wf = await create_workflow(
            stubs, store, wpb.Trigger(event=wpb.EventTrigger(event_name=event)), [send_node("s", text)]
        )
        cleanup.append((wf.name, store))
        ids[event] = (await activate(stubs, store, wf)).name.rsplit("/", 1)[1]
    return ids


async def test_a_send_that_raises_fails_only_its_run(
    stubs: Stubs,
    app: App,
    sending_store: StoreCtx,
    cleanup: list[tuple[str, StoreCtx]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    txt = await content(stubs, sending_store, "Hola")
    flows = await doomed_and_fine(stubs, sending_store, txt.name, cleanup)
    doomed_id = flows["doomed"]
    real_judge_many = app.sender.judge_many

    async def judge_many_raising(requests: list[Any]) -> Any:
        if any(r.workflow_id == doomed_id for r in requests):
            raise RuntimeError("a bug in one request (injected)")
        return await real_judge_many(requests)

    monkeypatch.setattr(app.sender, "judge_many", judge_many_raising)
    c = await contact(stubs, sending_store, "612 500 903")
    (doomed,) = await trigger(stubs, sending_store, "doomed", c)
    (fine,) = await trigger(stubs, sending_store, "fine", c)
    failed = await run_state(stubs, sending_store, doomed, wpb.WORKFLOW_RUN_STATE_FAILED)
    assert failed.steps[-1].outcome == "failed: RuntimeError: a bug in one request (injected)"
    assert (await run_state(stubs, sending_store, fine, wpb.WORKFLOW_RUN_STATE_COMPLETED)).steps[0].message


async def test_a_message_the_database_refuses_fails_only_its_run(
    stubs: Stubs,
    app: App,
    sending_store: StoreCtx,
    cleanup: list[tuple[str, StoreCtx]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round or a broadcast page writes its runs and their messages in one unit of work: a message
    the database refuses (PostgreSQL's text cannot hold U+0000, from an event property) must fail its
    own run only — not stall every round, nor the broadcast, for every store."""
    txt = await content(stubs, sending_store, "Hola {{unsubscribe}}")
    people = [await contact(stubs, sending_store, f"612 500 9{i:02d}") for i in range(10, 14)]
    doomed_contact = people[0].name.rsplit("/", 1)[1]
    flows = await doomed_and_fine(stubs, sending_store, txt.name, cleanup)
    broadcast = await create_workflow(
        stubs, sending_store, wpb.Trigger(broadcast=wpb.BroadcastTrigger()), [send_node("s", txt.name)]
    )
    cleanup.append((broadcast.name, sending_store))
    doomed_id = flows["doomed"]
    broadcast_id = broadcast.name.rsplit("/", 1)[1]
    real_add, real_add_page = unit_of_work._Messages.add, unit_of_work._Messages.add_page
    refused = InvalidArgument("text", "PostgreSQL text cannot hold U+0000 (injected)")

    async def add_refusing(messages_tx: Any, messages: Any) -> Any:
        if any(
            m.workflow_id == doomed_id or (m.workflow_id == broadcast_id and m.contact_id == doomed_contact)
            for m in messages
        ):
            raise refused
        return await real_add(messages_tx, messages)

    async def add_page_refusing(messages_tx: Any, sends: Any) -> Any:  # the set-wise page: its fallback
        if sends.page.workflow_id == broadcast_id and any(m[0] == doomed_contact for m in sends.members):
            raise refused
        return await real_add_page(messages_tx, sends)

    monkeypatch.setattr(unit_of_work._Messages, "add", add_refusing)
    monkeypatch.setattr(unit_of_work._Messages, "add_page", add_page_refusing)
    (doomed,) = await trigger(stubs, sending_store, "doomed", people[1])
    (fine,) = await trigger(stubs, sending_store, "fine", people[1])
    failed = await run_state(stubs, sending_store, doomed, wpb.WORKFLOW_RUN_STATE_FAILED)
    assert failed.steps[-1].outcome == "failed: text: PostgreSQL text cannot hold U+0000 (injected)"
    assert (await run_state(stubs, sending_store, fine, wpb.WORKFLOW_RUN_STATE_COMPLETED)).steps[0].message
    await activate(stubs, sending_store, broadcast)

    async def broadcast_runs() -> dict[str, wpb.WorkflowRun]:
        listed = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=broadcast.name), metadata=sending_store.md
        )
        return {r.contact: r for r in listed.workflow_runs}

    async def all_ended() -> bool:
        runs = await broadcast_runs()
        return len(runs) == len(people) and all(r.state != wpb.WORKFLOW_RUN_STATE_RUNNING for r in runs.values())

    await eventually(all_ended, "every run of the broadcast to end")
    runs = {  # with their steps
        c: await stubs.workflows.GetWorkflowRun(wpb.GetWorkflowRunRequest(name=r.name), metadata=sending_store.md)
        for c, r in (await broadcast_runs()).items()
    }
    assert runs[people[0].name].state == wpb.WORKFLOW_RUN_STATE_FAILED
    assert runs[people[0].name].steps[-1].outcome.endswith("PostgreSQL text cannot hold U+0000 (injected)")
    assert not runs[people[0].name].steps[-1].message
    assert all(runs[p.name].state == wpb.WORKFLOW_RUN_STATE_COMPLETED for p in people[1:])
    assert all(runs[p.name].steps[0].message for p in people[1:])


async def test_one_round_writes_the_runs_the_database_does_not_refuse(
    stubs: Stubs,
    app: App,
    sending_store: StoreCtx,
    cleanup: list[tuple[str, StoreCtx]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs in one round, one whose message the database refuses: that run fails with the reason,
    the other's message and step are written; a pause landing before the runs are written one at a
    time leaves both as they were."""
    txt = await content(stubs, sending_store, "Hola")
    c = await contact(stubs, sending_store, "612 500 920")
    contact_id = c.name.rsplit("/", 1)[1]
    flows = await doomed_and_fine(stubs, sending_store, txt.name, cleanup)
    later = datetime.now(UTC) + timedelta(hours=1)  # not due: the engine's own rounds leave them alone
    runs = [
        Run(sending_store.id, flows[event], f"r-{event}", contact_id, RunState.RUNNING, "s", later, later, later)
        for event in ("doomed", "fine")
    ]
    await app.storage.workflows.add_runs([RunUpdate(r) for r in runs])
    real_add = unit_of_work._Messages.add

    async def add_refusing(messages_tx: Any, messages: Any) -> Any:
        if any(m.workflow_id == flows["doomed"] for m in messages):
            raise InvalidArgument("text", "refused (injected)")
        return await real_add(messages_tx, messages)

    monkeypatch.setattr(unit_of_work._Messages, "add", add_refusing)
    now = datetime.now(UTC)
    moves = await app.engine._advance(runs, now)
    assert len(moves.messages) == 2  # one round, both sends
    await app.engine._write(moves)
    doomed = await app.storage.workflows.get_run(sending_store.id, flows["doomed"], "r-doomed")
    fine = await app.storage.workflows.get_run(sending_store.id, flows["fine"], "r-fine")
    assert doomed is not None
    assert fine is not None
    assert doomed.run.state is RunState.FAILED
    assert [(s.outcome, s.message_id) for s in doomed.steps] == [("failed: text: refused (injected)", "")]
    assert fine.run.state is RunState.COMPLETED
    assert fine.steps[0].message_id == moves.messages[1].id
    assert await app.storage.messages.get(sending_store.id, moves.messages[1].id) is not None


async def test_a_value_holding_nul_fails_its_run_with_the_reason(
    stubs: Stubs, sending_store: StoreCtx, cleanup: list[tuple[str, StoreCtx]]
) -> None:
    """U+0000 from an event property: no SMS carries it and PostgreSQL's text cannot store it, so the
    send is refused (the run fails, saying why) on either backend, before anything is written."""
    txt = await content(stubs, sending_store, "Pedido {{order}}")
    c = await contact(stubs, sending_store, "612 500 921")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="nul")),
        [send_node("s", txt.name, variables={"order": common.VariableValue(event_property="order_id")})],
    )
    cleanup.append((wf.name, sending_store))
    await activate(stubs, sending_store, wf)
    (bad,) = await trigger(stubs, sending_store, "nul", c, order_id="A\x00B")
    (good,) = await trigger(stubs, sending_store, "nul", c, order_id="A-1")
    failed = await run_state(stubs, sending_store, bad, wpb.WORKFLOW_RUN_STATE_FAILED)
    assert failed.steps[-1].outcome == "failed: variables: a value put into the text holds the NUL character (U+0000)"
    assert not failed.steps[-1].message
    assert (await run_state(stubs, sending_store, good, wpb.WORKFLOW_RUN_STATE_COMPLETED)).steps[0].message


async def test_activation_refuses_what_the_engine_could_not_run(
    stubs: Stubs, app: App, es_store: StoreCtx, cleanup: list[tuple[str, StoreCtx]]
) -> None:
    unparsable = await create_workflow(
        stubs, es_store, wpb.Trigger(broadcast=wpb.BroadcastTrigger(contact_filter="nonsense ===")), [end()]
    )
    bad_phone = await create_workflow(
        stubs, es_store, wpb.Trigger(broadcast=wpb.BroadcastTrigger(contact_filter='mobile_phone = "12"')), [end()]
    )
    for wf in (unparsable, bad_phone):
        cleanup.append((wf.name, es_store))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await activate(stubs, es_store, wf)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert violations(e.value) == [("BAD_FILTER", "trigger.broadcast.contact_filter")]
    # Durations the API refuses now, in a draft stored before it did.
    legacy = await stored(
        app,
        es_store,
        WorkflowState.DRAFT,
        Trigger("event", event_name="legacy"),
        Node("w", WaitStep(duration=HUGE, next="r")),
        Node("r", ReceivedSmsStep("e", "e", window=timedelta(days=3651))),
        Node("e", EndStep()),
    )
    cleanup.append((legacy, es_store))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=legacy), metadata=es_store.md)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(e.value) == [("WAIT_TOO_LONG", "nodes/w"), ("WINDOW_TOO_LONG", "nodes/r")]


def _seconds(value: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=value)


async def test_out_of_range_times_and_durations_are_invalid_arguments(stubs: Stubs, store: StoreCtx) -> None:
    year_10000 = 253_402_300_800
    too_long = duration_pb2.Duration(seconds=int(HUGE.total_seconds()))
    nodes = [
        wpb.Node(id="w1", wait=wpb.WaitNode(duration=too_long, next="w2")),
        wpb.Node(id="w2", wait=wpb.WaitNode(until_time=_seconds(year_10000), next="w3")),
        wpb.Node(id="w3", wait=wpb.WaitNode(duration=duration_pb2.Duration(seconds=-1), next="r1")),
        wpb.Node(id="r1", received_sms=wpb.ReceivedSmsNode(relative_window=too_long, yes_next="r2", no_next="r2")),
        wpb.Node(
            id="r2",
            received_sms=wpb.ReceivedSmsNode(
                absolute_range=wpb.TimeRange(start_time=_seconds(-62_135_596_801), end_time=_seconds(0)),
                yes_next="end",
                no_next="end",
            ),
        ),
        end(),
    ]
    broadcast = wpb.Trigger(broadcast=wpb.BroadcastTrigger(start_time=_seconds(year_10000)))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create_workflow(stubs, store, broadcast, nodes)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(e.value)) == {
        "workflow.trigger.broadcast.start_time",
        "workflow.nodes[0].wait.duration",
        "workflow.nodes[1].wait.until_time",
        "workflow.nodes[2].wait.duration",
        "workflow.nodes[3].received_sms.relative_window",
        "workflow.nodes[4].received_sms.absolute_range.start_time",
    }
    # The limits themselves are fine; an Update is held to the same rules.
    ten_years = duration_pb2.Duration(seconds=3650 * 86_400)
    ok = [wpb.Node(id="w", wait=wpb.WaitNode(duration=ten_years, next="end")), end()]
    wf = await create_workflow(stubs, store, wpb.Trigger(event=wpb.EventTrigger(event_name="x")), ok)
    wf.nodes[0].wait.until_time.CopyFrom(_seconds(year_10000))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.workflows.UpdateWorkflow(wpb.UpdateWorkflowRequest(workflow=wf), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(e.value)) == {"workflow.nodes[0].wait.until_time"}


def test_a_stores_failure_is_logged_without_what_it_quotes() -> None:
    """A broadcast filter's error quotes the store's phone number: the log keeps its reason only."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger("smschannel.workflows"), Keep()
    logger.addHandler(handler)
    try:
        error = InvalidArgument("trigger.broadcast.contact_filter", "'612 345 678' has no country code")
        workflow_engine._log_failure("broadcast page failed; retrying later", error, workflow="stores/s/workflows/w")
    finally:
        logger.removeHandler(handler)
    (record,) = records
    assert record.exc_info is None
    assert "612 345 678" not in str(record.__dict__)
    assert getattr(record, "error", "") == "INVALID_ARGUMENT"
