"""A broadcast page whose runs start with a Send SMS is written set-wise (storage PageSends): the sender
judges it once per group of contacts it cannot tell apart, and SQL stamps each contact's message, run
and step. It must store exactly what judging and writing each contact on its own stores. This compares
the two ways, field by field, on two stores alike: every cell of eligibility, numbers of countries
with and without rules and of several zones (quiet hours hold some, not others), the frequency cap
reached by some, and a store without a token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf import duration_pb2
from google.type import timeofday_pb2

from smschannel.domain.enums import MessageStatus, RecipientMode, SmsType
from smschannel.domain.messages import Message
from smschannel.names import new_id
from smschannel.operations import workflow_engine
from smschannel.server import App
from smschannel.storage import MessageQuery
from smschannel.storage.sqlite import unit_of_work
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import INSTASENT_TOKEN, StoreCtx, Stubs, clock_at, create_store, eventually, set_channel
from .test_sending import content
from .test_workflows import activate, contact, create_workflow, end, send_node

# No phone; Spain (no country rule); France (its rule: 10:00-20:00 for newsletters); the US in two zones
# and Canada (+1, the US rule; the "Stop to opt-out" text); Jamaica (+1, no rule, the default text); UK.
PHONES = [
    "",
    "+34612345001",
    "+33612345678",
    "+12015550123",  # New York
    "+12135550123",  # Los Angeles
    "+15062345678",
    "+18762101234",
    "+447400123456",
]
STATUSES = [
    common.MOBILE_PHONE_STATUS_ACTIVE,
    common.MOBILE_PHONE_STATUS_PAUSED,
    common.MOBILE_PHONE_STATUS_REJECTED,
]
SUBSCRIPTIONS = [
    common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
    common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED,
    common.SMS_SUBSCRIPTION_STATUS_NONE,
]
# Each cell three times (groups of several contacts; two pages of the broadcast): the first got a
# newsletter an hour ago, which the cap of one a day counts.
CELLS = [
    (phone, status, subscription, twin)
    for phone in PHONES
    for status in (STATUSES if phone else [common.MOBILE_PHONE_STATUS_UNSPECIFIED])
    for subscription in SUBSCRIPTIONS
    for twin in (0, 1, 2)
]
# A Tuesday, 03:30 in Madrid: the store's window (21:00-09:00) holds Spain, the UK, France (before its
# 10:00 too), New York (21:30, past the US rule's 21:00 too), Canada (22:30) and Jamaica (21:30); Los
# Angeles (18:30) is free. Without the window only France and New York are held, by their rules.
AT = datetime(2026, 12, 8, 3, 30, tzinfo=ZoneInfo("Europe/Madrid"))
# 147 GSM characters before the marker: one part with France's 13-character text, two with the others'.
TEXT = ("Oferta de la semana. " * 8)[:146] + " {{unsubscribe}}"
# What the outbox changes on a message it hands over.
_OUTBOX_PROGRESS: dict[str, Any] = {
    "status": MessageStatus.QUEUED,
    "status_reason": "",
    "provider_id": "",
    "send_time": None,
    "delivery_time": None,
    "attempts": 0,
    "next_attempt_time": None,
    "update_time": AT,
}
_SENT = {MessageStatus.QUEUED, MessageStatus.SENT, MessageStatus.DELIVERED}  # where the outbox takes it


async def _store(app: App, stubs: Stubs, token: bool, window: bool) -> tuple[StoreCtx, dict[str, str], str]:
    """A store with the cells' contacts; returns it, its contacts' ids by email, and its content's name."""
    store = await create_store(stubs)
    await set_channel(
        stubs,
        store,
        default_country="ES",
        default_sender="Acme",
        time_zone="Europe/Madrid",
        quiet_hours=pb.QuietHours(start=timeofday_pb2.TimeOfDay(hours=21), end=timeofday_pb2.TimeOfDay(hours=9))
        if window
        else pb.QuietHours(),  # off: only the country rules hold
        frequency_cap=pb.FrequencyCap(max_sms=1, period=duration_pb2.Duration(seconds=86400)),
        **({"api_token": INSTASENT_TOKEN} if token else {}),
    )
    ids: dict[str, str] = {}
    earlier: list[Message] = []
    hour_ago = AT.astimezone(UTC) - timedelta(hours=1)  # by the clock the test sets
    for i, (phone, status, subscription, twin) in enumerate(CELLS):
        email = f"c{i}@x.co"
        made = await contact(
            stubs, store, phone, email=email, mobile_phone_status=status, sms_subscription_status=subscription
        )
        ids[email] = contact_id = made.name.rsplit("/", 1)[1]
        if twin == 0:
            earlier.append(
                Message(
                    store.id,
                    new_id(),
                    SmsType.NEWSLETTER,
                    RecipientMode.CONTACT,
                    MessageStatus.SENT,
                    hour_ago,
                    hour_ago,
                    contact_id=contact_id,
                    recipient=phone,
                    send_time=hour_ago,
                )
            )
    await app.storage.messages.add(earlier)
    txt = await content(stubs, store, TEXT)
    return store, ids, txt.name


async def _broadcast(stubs: Stubs, store: StoreCtx, text: str, kind: int, count: int) -> str:
    """Run a broadcast of a Send SMS then an End to every contact; its workflow id once all completed."""
    wf = await create_workflow(
        stubs, store, wpb.Trigger(broadcast=wpb.BroadcastTrigger()), [send_node("s", text, "end", type=kind), end()]
    )
    await activate(stubs, store, wf)

    async def completed() -> bool:
        runs = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=wf.name, filter="state = COMPLETED", page_size=1000), metadata=store.md
        )
        return len(runs.workflow_runs) == count

    await eventually(completed, "every run of the broadcast to complete", within=60)
    return wf.name.rsplit("/", 1)[1]


async def _snapshot(app: App, store: StoreCtx, workflow_id: str, ids: dict[str, str]) -> dict[str, Any]:
    """What the broadcast stored, by contact email, with the ids of this store and workflow named alike:
    each message (its outbox progress folded: QUEUED, SENT and DELIVERED alike) and each run's steps."""
    email = {contact_id: e for e, contact_id in ids.items()}

    def same(text: str, contact_id: str) -> str:
        return text.replace(workflow_id, "W").replace(contact_id, email[contact_id])

    messages = await app.storage.messages.page(store.id, MessageQuery(workflow_id=workflow_id), None, 1000)
    by_id = {m.item.id: m.item for m in messages}
    got: dict[str, Any] = {}
    for m in by_id.values():
        sent = m.status in _SENT and m.hold_until is None
        got[email[m.contact_id]] = {
            "message": (
                m.type,
                m.recipient_mode,
                "to the outbox" if sent else m.status,
                "" if sent else m.status_reason,
                m.hold_until,
                m.recipient,
                m.sender,
                m.text,
                m.encoding,
                m.segments,
                m.workflow_node,
                same(m.request_id, m.contact_id),
                same(m.workflow_run, m.contact_id),
            )
        }
    runs = await app.storage.workflows.page_runs(store.id, workflow_id, None, None, 0, 1000)
    for positioned in runs:
        run = await app.storage.workflows.get_run(store.id, workflow_id, positioned.item.id)
        assert run is not None
        got.setdefault(email[run.run.contact_id], {})["run"] = (
            same(run.run.id, run.run.contact_id),
            run.run.state,
            run.run.current_node,
            run.run.step_count,
            run.run.request_id,
            run.run.event,
            [(s.node, s.outcome, email[by_id[s.message_id].contact_id] if s.message_id else "") for s in run.steps],
        )
    return got


@pytest.fixture
def at_night_in_madrid(app: App) -> Iterator[None]:
    with clock_at(app, AT):
        yield


@pytest.mark.parametrize(
    ("kind", "token", "window"),
    [
        (common.SMS_TYPE_NEWSLETTER, True, True),
        (common.SMS_TYPE_NEWSLETTER, True, False),
        (common.SMS_TYPE_TRANSACTIONAL, True, True),
        (common.SMS_TYPE_NEWSLETTER, False, True),
    ],
    ids=["newsletter", "newsletter-no-window", "transactional", "newsletter-no-token"],
)
async def test_a_set_wise_page_stores_what_contact_by_contact_stores(
    app: App,
    stubs: Stubs,
    monkeypatch: pytest.MonkeyPatch,
    at_night_in_madrid: None,
    kind: int,
    token: bool,
    window: bool,
) -> None:
    pages: list[int] = []
    real_add_page = unit_of_work._Messages.add_page

    async def counted(messages_tx: Any, sends: Any) -> Any:
        pages.append(len(sends.members))
        return await real_add_page(messages_tx, sends)

    monkeypatch.setattr(unit_of_work._Messages, "add_page", counted)
    monkeypatch.setattr(workflow_engine, "BROADCAST_BATCH", 100)  # a broadcast of several pages
    offered: list[Message] = []
    real_offer = app.sender.on_queued
    assert real_offer is not None

    def offer(messages: list[Message]) -> None:
        offered.extend(messages)
        real_offer(messages)

    monkeypatch.setattr(app.sender, "on_queued", offer)
    snapshots = []
    for set_based in (False, True):
        monkeypatch.setattr(app.engine, "set_based", set_based)
        store, ids, text = await _store(app, stubs, token, window)
        workflow_id = await _broadcast(stubs, store, text, kind, len(CELLS))
        snapshots.append(await _snapshot(app, store, workflow_id, ids))
        assert bool(pages) is set_based  # each way was taken
        assert not set_based or len(pages) > 1  # and set-wise, page after page
        if set_based:  # what the outbox was handed is what was stored (as of then: it may have sent it)
            assert bool(offered) is token  # without a token nothing goes to the outbox
            for m in offered:
                stored = await app.storage.messages.get(m.store_id, m.id)
                assert stored is not None
                assert replace(stored, **_OUTBOX_PROGRESS) == replace(m, **_OUTBOX_PROGRESS)
        offered.clear()
    by_contact, set_wise = snapshots
    assert len(set_wise) == len(CELLS)
    for email, expected in by_contact.items():
        assert set_wise[email] == expected, email
    outcomes = {m["message"][2] for m in set_wise.values()}
    reasons = {m["message"][3] for m in set_wise.values()}
    if not token:
        assert MessageStatus.FAILED in outcomes
    elif kind == common.SMS_TYPE_NEWSLETTER:  # the table holds what it is meant to: sent, held, capped
        assert {"to the outbox", MessageStatus.QUEUED, MessageStatus.SKIPPED} <= outcomes
        assert any(r.startswith("held by quiet hours") for r in reasons)
        assert any(r.startswith("frequency_cap") for r in reasons)
    else:  # transactional SMS are neither held (exempt) nor capped
        assert {"to the outbox", MessageStatus.SKIPPED} == outcomes
    assert {m["message"][9] for m in set_wise.values()} == {1, 2}  # parts, as delivered per country


@pytest.mark.parametrize("callers_waited", [False, True], ids=["alone", "callers-wait"])
@pytest.mark.parametrize("set_based", [True, False], ids=["set-wise", "contact-by-contact"])
async def test_a_broadcast_pages_by_fewer_contacts_while_callers_wait_to_write(
    app: App, stubs: Stubs, monkeypatch: pytest.MonkeyPatch, callers_waited: bool, set_based: bool
) -> None:
    """While RPCs and callbacks wait for SQLite's write lock, each page's transaction holds it for less."""
    monkeypatch.setattr(workflow_engine, "BROADCAST_BATCH", 9)
    monkeypatch.setattr(workflow_engine, "BROADCAST_BATCH_SHARED", 4)
    monkeypatch.setattr(app.engine, "set_based", set_based)
    asked: list[float] = []

    def waited(within: float) -> bool:
        asked.append(within)
        return callers_waited

    monkeypatch.setattr(app.storage, "callers_waited", waited)
    sizes: list[int] = []  # of the pages read

    def recording(read: Any) -> Any:
        def reading(*args: Any) -> Any:
            sizes.append(args[-1])
            return read(*args)

        return reading

    for name in ("page", "reach_page"):
        monkeypatch.setattr(app.storage.contacts, name, recording(getattr(app.storage.contacts, name)))
    store, _, text = await _store(app, stubs, token=True, window=True)
    await _broadcast(stubs, store, text, common.SMS_TYPE_NEWSLETTER, len(CELLS))  # a run for every contact
    assert len(CELLS) > 9
    assert set(sizes) == {4 if callers_waited else 9}
    assert len(sizes) >= len(CELLS) // (4 if callers_waited else 9)
    assert set(asked) == {workflow_engine.SHARED_WITHIN}
