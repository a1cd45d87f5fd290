"""WorkflowService: validation, triggers, the Send SMS / Received SMS / Wait / Update contact nodes, runs."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2

from smschannel.domain.enums import MessageStatus, SmsType
from smschannel.domain.workflows import (
    Comparison,
    ReceivedSmsStep,
    Run,
    RunState,
    SendSmsStep,
    compare_count,
    received_window,
)
from smschannel.instasent.fake import FakeInstasent
from smschannel.operations.sending import SendRequest
from smschannel.operations.workflow_engine import BROADCAST_BATCH
from smschannel.server import App
from smschannel.storage import BroadcastPage, ContactQuery, RunUpdate
from smschannel.storage.sqlite import unit_of_work
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import StoreCtx, Stubs, create_store, eventually, make_config
from .rpc_errors import reason, status_of
from .test_sending import content, literal, send, until_status

SUBSCRIBED = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED


def send_node(node_id: str, sms_content: str, nxt: str = "", **fields: object) -> wpb.Node:
    fields.setdefault("recipient_mode", common.RECIPIENT_MODE_CONTACT)
    fields.setdefault("type", common.SMS_TYPE_TRANSACTIONAL)
    return wpb.Node(id=node_id, send_sms=wpb.SendSmsNode(sms_content=sms_content, next=nxt, **fields))  # type: ignore[arg-type]


def end(node_id: str = "end") -> wpb.Node:
    return wpb.Node(id=node_id, end=wpb.EndNode())


async def create_workflow(
    stubs: Stubs, store: StoreCtx, trigger: wpb.Trigger, nodes: list[wpb.Node], start: str = ""
) -> wpb.Workflow:
    return await stubs.workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(
            parent=store.name,
            workflow=wpb.Workflow(display_name="Flow", trigger=trigger, nodes=nodes, start_node=start or nodes[0].id),
        ),
        metadata=store.md,
    )


async def activate(stubs: Stubs, store: StoreCtx, wf: wpb.Workflow) -> wpb.Workflow:
    return await stubs.workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=store.md)


async def contact(stubs: Stubs, store: StoreCtx, phone: str, **fields: object) -> cpb.Contact:
    return await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(parent=store.name, contact=cpb.Contact(mobile_phone=phone, **fields)),  # type: ignore[arg-type]
        metadata=store.md,
    )


async def trigger(stubs: Stubs, store: StoreCtx, event: str, c: cpb.Contact, **props: object) -> list[str]:
    properties = struct_pb2.Struct()
    properties.update(props)
    resp = await stubs.workflows.TriggerEvent(
        wpb.TriggerEventRequest(
            parent=store.name, event_name=event, contact=c.name, properties=properties, request_id=uuid.uuid4().hex
        ),
        metadata=store.md,
    )
    return list(resp.workflow_runs)


async def run_state(stubs: Stubs, store: StoreCtx, name: str, state: int) -> wpb.WorkflowRun:
    async def reached() -> bool:
        return (
            await stubs.workflows.GetWorkflowRun(wpb.GetWorkflowRunRequest(name=name), metadata=store.md)
        ).state == state

    await eventually(reached, f"{name} to be {wpb.WorkflowRunState.Name(state)}")
    return await stubs.workflows.GetWorkflowRun(wpb.GetWorkflowRunRequest(name=name), metadata=store.md)


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    for detail in status_of(err).details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            pf = error_details_pb2.PreconditionFailure()
            detail.Unpack(pf)
            return [(v.type, v.subject) for v in pf.violations]
    raise AssertionError("no PreconditionFailure")


async def test_activation_reports_every_violation_at_once(stubs: Stubs, sending_store: StoreCtx) -> None:
    plain = await content(stubs, sending_store, "Hola {{name}}")
    nodes = [
        send_node("a", plain.name, "b", type=common.SMS_TYPE_NEWSLETTER, sender="WayTooLongSender"),  # 3 problems
        wpb.Node(id="b", received_sms=wpb.ReceivedSmsNode(yes_next="c", no_next="ghost")),  # dangling
        wpb.Node(id="c", update_contact=wpb.UpdateContactNode(contact=cpb.Contact(first_name="X"), next="b")),
        send_node(
            "alert",
            plain.name,
            recipient_mode=common.RECIPIENT_MODE_ALERT,
            alert_phone="12",
            variables={"name": literal("x")},
        ),  # unreachable, bad phone
    ]
    wf = await create_workflow(stubs, sending_store, wpb.Trigger(event=wpb.EventTrigger(event_name="order")), nodes)
    assert wf.state == wpb.WORKFLOW_STATE_DRAFT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await activate(stubs, sending_store, wf)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = set(violations(e.value))
    assert {
        ("BAD_VARIABLES", "nodes/a"),  # {{name}} unmapped, and the newsletter has no marker
        ("BAD_SENDER", "nodes/a"),
        ("DANGLING_EDGE", "nodes/b"),
        ("CYCLE_WITHOUT_WAIT", "nodes/b"),
        ("UNREACHABLE_NODE", "nodes/alert"),
        ("BAD_ALERT_PHONE", "nodes/alert"),
    } <= found
    assert len([v for v in found if v == ("BAD_VARIABLES", "nodes/a")]) == 1
    assert sum(1 for t, s in violations(e.value) if (t, s) == ("BAD_VARIABLES", "nodes/a")) == 2
    # A client that does not decode details still reads why: the first three reasons are in the message.
    message = e.value.details() or ""
    assert "nodes/a: " in message
    assert "and " in message
    assert "more" in message


async def test_a_content_an_active_or_paused_workflow_uses_cannot_be_deleted(
    stubs: Stubs, sending_store: StoreCtx
) -> None:
    used = await content(stubs, sending_store, "Gracias")
    wf = await create_workflow(
        stubs, sending_store, wpb.Trigger(event=wpb.EventTrigger(event_name="paid")), [send_node("s", used.name)]
    )
    delete = pb.DeleteSmsContentRequest(name=used.name)
    await activate(stubs, sending_store, wf)
    for _ in ("ACTIVE", "PAUSED"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.sms.DeleteSmsContent(delete, metadata=sending_store.md)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(e.value) == "CONTENT_IN_USE"
        assert wf.name in (e.value.details() or "")
        await stubs.workflows.PauseWorkflow(wpb.PauseWorkflowRequest(name=wf.name), metadata=sending_store.md)
    await stubs.workflows.DeleteWorkflow(wpb.DeleteWorkflowRequest(name=wf.name), metadata=sending_store.md)
    await stubs.sms.DeleteSmsContent(delete, metadata=sending_store.md)


async def test_a_loop_with_a_wait_is_fine_and_an_empty_graph_is_not(stubs: Stubs, sending_store: StoreCtx) -> None:
    nodes = [
        wpb.Node(id="w", wait=wpb.WaitNode(duration=duration_pb2.Duration(seconds=3600), next="r")),
        wpb.Node(id="r", received_sms=wpb.ReceivedSmsNode(yes_next="end", no_next="w")),
        end(),
    ]
    wf = await create_workflow(stubs, sending_store, wpb.Trigger(event=wpb.EventTrigger(event_name="loop")), nodes)
    assert (await activate(stubs, sending_store, wf)).state == wpb.WORKFLOW_STATE_ACTIVE
    empty = await stubs.workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(parent=sending_store.name, workflow=wpb.Workflow(display_name="Empty")),
        metadata=sending_store.md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await activate(stubs, sending_store, empty)
    assert {"MISSING_TRIGGER", "NO_NODES"} <= {t for t, _ in violations(e.value)}


async def test_an_event_runs_send_sms_with_event_properties(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    c = await contact(stubs, sending_store, "612 500 001", first_name="Ana")
    txt = await content(stubs, sending_store, "{{n}}, pedido {{order}} confirmado")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="order_placed")),
        [
            send_node(
                "send",
                txt.name,
                "end",
                variables={
                    "n": common.VariableValue(contact_field="first_name"),
                    "order": common.VariableValue(event_property="order_id", fallback="?"),
                },
            ),
            end(),
        ],
    )
    await activate(stubs, sending_store, wf)
    (run_name,) = await trigger(stubs, sending_store, "order_placed", c, order_id="A-77")
    run = await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
    assert [s.node for s in run.steps] == ["send", "end"]
    assert run.steps[0].message
    m = await until_status(stubs, sending_store, run.steps[0].message, common.MESSAGE_STATUS_SENT)
    assert m.text == "Ana, pedido A-77 confirmado"
    assert m.workflow == wf.name
    assert await trigger(stubs, sending_store, "other_event", c) == []


async def test_received_sms_routes_on_what_was_received(stubs: Stubs, sending_store: StoreCtx) -> None:
    c = await contact(stubs, sending_store, "612 500 002")
    promo = await content(stubs, sending_store, "Promo")
    other = await content(stubs, sending_store, "Otro")
    for _ in range(2):
        m = await send(stubs, sending_store, sms_content=promo.name, contact=c.name)
        await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
    yes_no = {"yes_next": "yes", "no_next": "no"}
    now = datetime.now(UTC)
    around_now, before_now = wpb.TimeRange(), wpb.TimeRange()
    around_now.start_time.FromDatetime(now - timedelta(hours=1))
    around_now.end_time.FromDatetime(now + timedelta(hours=1))
    before_now.start_time.FromDatetime(now - timedelta(days=2))
    before_now.end_time.FromDatetime(now - timedelta(minutes=1))  # ends before the sends: they do not count
    cases = {
        "at-least-2": wpb.ReceivedSmsNode(
            sms_content=promo.name, comparison=wpb.COUNT_COMPARISON_AT_LEAST, count=2, **yes_no
        ),
        "exactly-1": wpb.ReceivedSmsNode(
            sms_content=promo.name, comparison=wpb.COUNT_COMPARISON_EXACTLY, count=1, **yes_no
        ),
        "other": wpb.ReceivedSmsNode(sms_content=other.name, **yes_no),
        "newsletter": wpb.ReceivedSmsNode(type=common.SMS_TYPE_NEWSLETTER, **yes_no),
        "last-hour": wpb.ReceivedSmsNode(relative_window=duration_pb2.Duration(seconds=3600), count=2, **yes_no),
        "at-most-0": wpb.ReceivedSmsNode(comparison=wpb.COUNT_COMPARISON_AT_MOST, count=0, **yes_no),
        "in-range": wpb.ReceivedSmsNode(absolute_range=around_now, count=2, **yes_no),
        "range-ended": wpb.ReceivedSmsNode(absolute_range=before_now, **yes_no),
    }
    expected = {
        "at-least-2": "yes",
        "exactly-1": "no",
        "other": "no",
        "newsletter": "no",
        "last-hour": "yes",
        "at-most-0": "no",
        "in-range": "yes",
        "range-ended": "no",
    }
    for label, node in cases.items():
        wf = await create_workflow(
            stubs,
            sending_store,
            wpb.Trigger(event=wpb.EventTrigger(event_name=f"check-{label}")),
            [wpb.Node(id="cond", received_sms=node), end("yes"), end("no")],
        )
        await activate(stubs, sending_store, wf)
        (run_name,) = await trigger(stubs, sending_store, f"check-{label}", c)
        run = await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
        assert run.steps[-1].node == expected[label], label


async def test_skipped_and_failed_messages_do_not_count_as_received(stubs: Stubs, sending_store: StoreCtx) -> None:
    c = await contact(stubs, sending_store, "612 500 009")  # NONE: a newsletter to her is SKIPPED
    promo = await content(stubs, sending_store, "Promo {{unsubscribe}}")
    for _ in range(2):
        m = await send(stubs, sending_store, sms_content=promo.name, contact=c.name, type=common.SMS_TYPE_NEWSLETTER)
        assert m.status == common.MESSAGE_STATUS_SKIPPED
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="skipped-count")),
        [wpb.Node(id="cond", received_sms=wpb.ReceivedSmsNode(yes_next="yes", no_next="no")), end("yes"), end("no")],
    )
    await activate(stubs, sending_store, wf)
    (run_name,) = await trigger(stubs, sending_store, "skipped-count", c)
    run = await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
    assert run.steps[-1].node == "no"
    assert run.steps[0].outcome == "no (0)"


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("comparison", "n", "count", "answer"),
    [
        (Comparison.AT_LEAST, 1, 0, False),
        (Comparison.AT_LEAST, 1, 1, True),
        (Comparison.AT_LEAST, 2, 3, True),
        (Comparison.AT_MOST, 1, 1, True),
        (Comparison.AT_MOST, 1, 2, False),
        (Comparison.AT_MOST, 0, 0, True),
        (Comparison.EXACTLY, 2, 2, True),
        (Comparison.EXACTLY, 2, 1, False),
        (Comparison.EXACTLY, 0, 0, True),
    ],
)
def test_count_comparisons(comparison: Comparison, n: int, count: int, answer: bool) -> None:
    assert compare_count(ReceivedSmsStep("y", "n", comparison=comparison, count=n), count) is answer


def test_windows() -> None:
    relative = ReceivedSmsStep("y", "n", window=timedelta(days=7))
    assert received_window(relative, NOW) == (NOW - timedelta(days=7), None)
    day = ReceivedSmsStep("y", "n", start_time=NOW, end_time=NOW + timedelta(days=1))
    assert received_window(day, NOW) == (NOW, NOW + timedelta(days=1))
    assert received_window(ReceivedSmsStep("y", "n"), NOW) == (None, None)


async def test_wait_pause_and_resume(stubs: Stubs, sending_store: StoreCtx) -> None:
    c = await contact(stubs, sending_store, "612 500 003")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="wait")),
        [wpb.Node(id="w", wait=wpb.WaitNode(duration=duration_pb2.Duration(nanos=400_000_000), next="end")), end()],
    )
    await activate(stubs, sending_store, wf)
    (run_name,) = await trigger(stubs, sending_store, "wait", c)
    await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_WAITING)
    await stubs.workflows.PauseWorkflow(wpb.PauseWorkflowRequest(name=wf.name), metadata=sending_store.md)
    paused = await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_PAUSED)
    assert paused.current_node == "w"
    await activate(stubs, sending_store, wf)
    done = await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
    assert [s.outcome.split(" ")[0] for s in done.steps] == ["waiting", "waited", "ended"]


async def test_update_contact_node_sets_phone_and_statuses(stubs: Stubs, sending_store: StoreCtx) -> None:
    c = await contact(stubs, sending_store, "612 500 004")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="update")),
        [
            wpb.Node(
                id="u",
                update_contact=wpb.UpdateContactNode(
                    contact=cpb.Contact(mobile_phone="699 500 004", sms_subscription_status=SUBSCRIBED),
                    update_mask={"paths": ["mobile_phone", "sms_subscription_status"]},
                    next="end",
                ),
            ),
            end(),
        ],
    )
    await activate(stubs, sending_store, wf)
    (run_name,) = await trigger(stubs, sending_store, "update", c)
    await run_state(stubs, sending_store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
    got = await stubs.contacts.GetContact(cpb.GetContactRequest(name=c.name), metadata=sending_store.md)
    assert (got.mobile_phone, got.sms_subscription_status) == ("+34699500004", SUBSCRIBED)
    acts = await stubs.contacts.ListActivities(
        cpb.ListActivitiesRequest(parent=c.name, filter="type = SMS_SUBSCRIBE"), metadata=sending_store.md
    )
    assert acts.activities[0].source == common.ACTIVITY_SOURCE_WORKFLOW


async def test_contact_created_trigger(stubs: Stubs, sending_store: StoreCtx) -> None:
    txt = await content(stubs, sending_store, "Bienvenido")
    wf = await create_workflow(
        stubs, sending_store, wpb.Trigger(contact_created=wpb.ContactCreatedTrigger()), [send_node("s", txt.name)]
    )
    await activate(stubs, sending_store, wf)
    c = await contact(stubs, sending_store, "612 500 005")

    async def welcomed() -> bool:
        runs = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=wf.name, filter=f'contact = "{c.name}" AND state = COMPLETED'),
            metadata=sending_store.md,
        )
        return len(runs.workflow_runs) == 1

    await eventually(welcomed, "the welcome run")


async def test_broadcast_sends_only_to_eligible_contacts(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    subscribed = [
        await contact(stubs, sending_store, f"6125006{i:02d}", sms_subscription_status=SUBSCRIBED) for i in range(5)
    ]
    others = [await contact(stubs, sending_store, f"6125007{i:02d}") for i in range(3)]
    txt = await content(stubs, sending_store, "Rebajas {{unsubscribe}}")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
        [send_node("s", txt.name, type=common.SMS_TYPE_NEWSLETTER)],
    )
    await activate(stubs, sending_store, wf)

    async def all_done() -> bool:
        runs = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=wf.name, filter="state = COMPLETED"), metadata=sending_store.md
        )
        return len(runs.workflow_runs) == 8

    await eventually(all_done, "every broadcast run")
    log = await stubs.sms.ListMessages(
        pb.ListMessagesRequest(parent=sending_store.name, filter=f'workflow = "{wf.name}"', page_size=100),
        metadata=sending_store.md,
    )
    by_status = {}
    for m in log.messages:
        by_status.setdefault(m.status, set()).add(m.contact)
    assert by_status[common.MESSAGE_STATUS_SKIPPED] == {c.name for c in others}
    assert by_status.get(common.MESSAGE_STATUS_QUEUED, set()) | by_status.get(common.MESSAGE_STATUS_SENT, set()) == {
        c.name for c in subscribed
    }


@pytest.mark.parametrize("set_based", [True, False], ids=["set-wise", "contact-by-contact"])
async def test_a_broadcast_page_whose_write_fails_stores_nothing_and_its_retry_sends_each_once(
    stubs: Stubs, sending_store: StoreCtx, app: App, monkeypatch: pytest.MonkeyPatch, set_based: bool
) -> None:
    # A page's cursor, runs, steps and messages are one unit of work: a failure after its messages
    # were written in it (or a crash) leaves none of them, and the engine takes the same page again.
    # A message its request id (workflow + run + step) already names, written before (an older
    # server wrote a page's messages first), is found, not queued again: the run's step names it.
    people = [
        await contact(stubs, sending_store, f"6125008{i:02d}", sms_subscription_status=SUBSCRIBED) for i in range(4)
    ]
    txt = await content(stubs, sending_store, "Novedades {{unsubscribe}}")
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
        [send_node("s", txt.name, type=common.SMS_TYPE_NEWSLETTER)],
    )
    workflow_id = wf.name.rsplit("/", 1)[1]
    first_contact = people[0].name.rsplit("/", 1)[1]
    earlier = await app.sender.send(
        SendRequest(
            store_id=sending_store.id,
            content_id=txt.name.rsplit("/", 1)[1],
            type=SmsType.NEWSLETTER,
            mappings={},
            contact_id=first_contact,
            request_id=f"wf:{workflow_id}:b-{first_contact}:0",
            workflow_id=workflow_id,
            workflow_node="s",
            workflow_run=f"b-{first_contact}",
        )
    )
    method = "add_page" if set_based else "add"
    real_add = getattr(unit_of_work._Runs, method)
    failures: list[int] = []

    async def add_failing_once(runs_tx: Any, runs: Any) -> Any:
        count, of = (len(runs.members), runs.page.workflow_id) if set_based else (len(runs), runs[0].run.workflow_id)
        if of == workflow_id and not failures:
            failures.append(count)
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return await real_add(runs_tx, runs)

    monkeypatch.setattr(unit_of_work._Runs, method, add_failing_once)
    monkeypatch.setattr(app.engine, "set_based", set_based)
    await activate(stubs, sending_store, wf)

    async def all_done() -> bool:
        runs = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=wf.name, filter="state = COMPLETED"), metadata=sending_store.md
        )
        return len(runs.workflow_runs) == len(people)

    await eventually(all_done, "every broadcast run after the retry", within=20)
    assert failures == [len(people)]
    log = await stubs.sms.ListMessages(
        pb.ListMessagesRequest(parent=sending_store.name, filter=f'workflow = "{wf.name}"', page_size=100),
        metadata=sending_store.md,
    )
    assert sorted(m.contact for m in log.messages) == sorted(c.name for c in people)
    assert f"{sending_store.name}/messages/{earlier.id}" in {m.name for m in log.messages}
    run = await stubs.workflows.GetWorkflowRun(
        wpb.GetWorkflowRunRequest(name=f"{wf.name}/runs/b-{first_contact}"), metadata=sending_store.md
    )
    assert run.steps[0].message == f"{sending_store.name}/messages/{earlier.id}"


async def test_a_wait_survives_a_restart(tmp_path: Path, fake: FakeInstasent) -> None:
    config = make_config(tmp_path, instasent_base_url=fake.base_url)
    first = await App.start(config)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
        stubs = Stubs.on(ch)
        store = await create_store(stubs)
        c = await contact(stubs, store, "+34612500010")
        wf = await create_workflow(
            stubs,
            store,
            wpb.Trigger(event=wpb.EventTrigger(event_name="nap")),
            [wpb.Node(id="w", wait=wpb.WaitNode(duration=duration_pb2.Duration(seconds=1), next="end")), end()],
        )
        await activate(stubs, store, wf)
        (run_name,) = await trigger(stubs, store, "nap", c)
        await run_state(stubs, store, run_name, wpb.WORKFLOW_RUN_STATE_WAITING)
    await first.stop(grace=1)  # the timer is in the database, not in this process
    second = await App.start(replace(config, grpc_addr=f"127.0.0.1:{first.port}"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            stubs = Stubs.on(ch)
            done = await run_state(stubs, store, run_name, wpb.WORKFLOW_RUN_STATE_COMPLETED)
            assert [s.node for s in done.steps] == ["w", "w", "end"]
    finally:
        await second.stop(grace=1)


async def test_a_broadcast_page_landing_after_a_pause_or_a_delete_stores_nothing(
    app: App, stubs: Stubs, sending_store: StoreCtx
) -> None:
    """A page's write may queue behind a Pause or a Delete: its runs must not land under a paused
    workflow (nor under none), where no round takes them but the engine's timer keeps ringing; nor may
    its messages, which the outbox would send for a workflow the store paused."""
    txt = await content(stubs, sending_store, "Hola {{unsubscribe}}")
    c = await contact(stubs, sending_store, "612 500 950")
    contact_id = c.name.rsplit("/", 1)[1]
    wf = await create_workflow(
        stubs, sending_store, wpb.Trigger(event=wpb.EventTrigger(event_name="never")), [send_node("s", txt.name)]
    )
    active = await activate(stubs, sending_store, wf)
    workflow_id = wf.name.rsplit("/", 1)[1]
    now = datetime.now(UTC) - timedelta(hours=1)
    late = Run(sending_store.id, workflow_id, f"b-{contact_id}", contact_id, RunState.RUNNING, "s", now, now, now)
    moves = await app.engine._advance([late], now)  # judged while ACTIVE: a QUEUED message to write
    assert [m.status for m in moves.messages] == [MessageStatus.QUEUED]
    page = BroadcastPage(sending_store.id, workflow_id, int(active.etag.strip('W/"')), 150, False)
    await stubs.workflows.PauseWorkflow(wpb.PauseWorkflowRequest(name=wf.name), metadata=sending_store.md)
    offered = list(app.dispatcher._ready)
    await app.engine._write(moves, page)
    await app.engine._write_one_by_one(moves, page)  # the way a refused page is written: no less careful
    paused = await app.storage.workflows.get(sending_store.id, workflow_id)
    assert paused is not None
    node = paused.node("s")
    assert node is not None
    assert isinstance(node.step, SendSmsStep)
    key = (sending_store.id, workflow_id, page.version)  # the set-wise way, as judged while ACTIVE
    judged = replace(paused, version=page.version)
    assert await app.engine._send_page(judged, node.step, ContactQuery(), 0, BROADCAST_BATCH, now, key)
    await app.engine._writing.pop(key).task
    await stubs.workflows.DeleteWorkflow(wpb.DeleteWorkflowRequest(name=wf.name), metadata=sending_store.md)
    await app.engine._write(moves, page)
    assert await app.storage.workflows.get_run(sending_store.id, workflow_id, late.id) is None
    assert await app.storage.messages.find_by_request(sending_store.id, moves.messages[0].request_id) is None
    assert list(app.dispatcher._ready) == offered
    wake = await app.storage.workflows.next_wake()
    assert wake is None or wake > now  # no past timer of a run no round can take


async def test_a_round_stores_no_message_for_a_run_paused_or_deleted_meanwhile(
    app: App, stubs: Stubs, sending_store: StoreCtx
) -> None:
    """A round judged a run's Send SMS node, then its workflow was paused (or the run deleted) before
    the round was written: no message (the outbox would send it during the pause), no orphan step; the
    run keeps its position and takes the step again when resumed."""
    txt = await content(stubs, sending_store, "Hola")
    c = await contact(stubs, sending_store, "612 500 951")
    contact_id = c.name.rsplit("/", 1)[1]
    wf = await create_workflow(
        stubs,
        sending_store,
        wpb.Trigger(event=wpb.EventTrigger(event_name="never")),
        [send_node("s", txt.name, "end"), end()],
    )
    await activate(stubs, sending_store, wf)
    await stubs.workflows.PauseWorkflow(wpb.PauseWorkflowRequest(name=wf.name), metadata=sending_store.md)
    workflow_id = wf.name.rsplit("/", 1)[1]
    now = datetime.now(UTC)
    run = Run(sending_store.id, workflow_id, "r-paused", contact_id, RunState.RUNNING, "s", now, now, now)
    moves = await app.engine._advance([run], now)  # judged as a round would, before the pause reached it
    assert len(moves.messages) == 1
    assert await app.storage.workflows.add_runs([RunUpdate(replace(run, state=RunState.PAUSED))])
    await app.engine._write(moves)
    kept = await app.storage.workflows.get_run(sending_store.id, workflow_id, run.id)
    assert kept is not None
    assert (kept.run.state, kept.run.current_node, kept.steps) == (RunState.PAUSED, "s", [])
    assert await app.storage.messages.find_by_request(sending_store.id, moves.messages[0].request_id) is None
    gone = replace(run, id="r-gone")
    moves = await app.engine._advance([gone], now)
    await app.engine._write(moves)  # a run deleted (never stored here): nothing of it either
    assert await app.storage.workflows.get_run(sending_store.id, workflow_id, gone.id) is None
    assert await app.storage.messages.find_by_request(sending_store.id, moves.messages[0].request_id) is None
    # In the same round as a live run, which moves on with its message.
    live = replace(run, id="r-live")
    assert await app.storage.workflows.add_runs([RunUpdate(live)])
    moves = await app.engine._advance([replace(run, id="r-paused-again"), live], now)
    await app.storage.workflows.add_runs([RunUpdate(replace(run, id="r-paused-again", state=RunState.PAUSED))])
    await app.engine._write(moves)
    await app.engine._write(moves)  # the same write landing twice (a commit reported as failed): no more
    moved = await app.storage.workflows.get_run(sending_store.id, workflow_id, live.id)
    assert moved is not None
    assert (moved.run.state, moved.run.current_node) == (RunState.RUNNING, "end")
    assert [s.message_id for s in moved.steps] == [moves.messages[1].id]
    assert await app.storage.messages.get(sending_store.id, moves.messages[1].id) is not None
    assert await app.storage.messages.find_by_request(sending_store.id, moves.messages[0].request_id) is None
