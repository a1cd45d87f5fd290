"""BatchReportProviderEvents and the sidecar's Batcher: callbacks in flight applied together, each
judged alone, answered only once stored."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest
from google.rpc import code_pb2

from smschannel.auth import derive_provider_events_key
from smschannel.instasent.fake import FakeInstasent
from smschannel.server import App
from smschannel.sidecar.batcher import Batcher
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import SECRET_KEY, StoreCtx, Stubs, eventually
from .test_consent_at_sending import outage_store
from .test_sending import content, message, send

EVENTS = (("authorization", f"Bearer {derive_provider_events_key(SECRET_KEY)}"),)


async def secret_of(stubs: Stubs, store: StoreCtx) -> str:
    config = await stubs.sms.GetSmsChannelConfig(
        pb.GetSmsChannelConfigRequest(name=f"{store.name}/smsChannelConfig"), metadata=store.md
    )
    return str(config.callback_url.rsplit("/", 1)[1])


async def sent_message(stubs: Stubs, store: StoreCtx, phone: str) -> pb.Message:
    c = await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(parent=store.name, contact=cpb.Contact(mobile_phone=phone)), metadata=store.md
    )
    text = await content(stubs, store, "Pedido enviado")
    m = await send(stubs, store, sms_content=text.name, contact=c.name)

    async def sent() -> bool:
        return (await message(stubs, store, m.name)).status == common.MESSAGE_STATUS_SENT

    await eventually(sent, "the SMS at Instasent")
    return await message(stubs, store, m.name)


async def test_each_event_of_a_batch_is_judged_alone(
    stubs: Stubs, sending_store: StoreCtx, other_store: StoreCtx
) -> None:
    m = await sent_message(stubs, sending_store, "612 000 901")
    secret = await secret_of(stubs, sending_store)
    client_id = m.name.rsplit("/", 1)[1]

    def event(**fields: str) -> pb.ReportProviderEventRequest:
        base = {"parent": sending_store.name, "callback_secret": secret, "client_id": client_id, "status": "delivered"}
        return pb.ReportProviderEventRequest(**(base | fields))

    answer = await stubs.sms.BatchReportProviderEvents(
        pb.BatchReportProviderEventsRequest(
            requests=[
                event(),
                event(),  # the same callback again, in the same batch
                event(callback_secret="wrong"),
                event(parent=other_store.name),  # another store's name with this store's secret
                event(status=""),
                event(client_id="nosuchmessage"),
                event(status="banana"),
                event(parent="stores/X!"),
            ]
        ),
        metadata=EVENTS,
    )
    got = [(r.code, pb.ProviderEventOutcome.Name(r.response.outcome) if r.code == 0 else "") for r in answer.results]
    assert got == [
        (code_pb2.OK, "PROVIDER_EVENT_OUTCOME_APPLIED"),
        (code_pb2.OK, "PROVIDER_EVENT_OUTCOME_DUPLICATE"),
        (code_pb2.NOT_FOUND, ""),
        (code_pb2.NOT_FOUND, ""),
        (code_pb2.INVALID_ARGUMENT, ""),
        (code_pb2.OK, "PROVIDER_EVENT_OUTCOME_UNKNOWN_MESSAGE"),
        (code_pb2.OK, "PROVIDER_EVENT_OUTCOME_IGNORED"),
        (code_pb2.INVALID_ARGUMENT, ""),
    ]
    assert answer.results[0].response.message == m.name
    assert (await message(stubs, sending_store, m.name)).status == common.MESSAGE_STATUS_DELIVERED


async def test_the_same_callbacks_in_calls_at_once_apply_once(stubs: Stubs, sending_store: StoreCtx) -> None:
    """The sidecar keeps two calls in flight, and Instasent retries: the same callbacks may be in two
    calls applied at once. Each applies once; the other call finds it a duplicate; a stop unsubscribes
    its contact with one activity."""
    m = await sent_message(stubs, sending_store, "612 000 902")
    secret = await secret_of(stubs, sending_store)
    client_id = m.name.rsplit("/", 1)[1]
    batch = pb.BatchReportProviderEventsRequest(
        requests=[
            pb.ReportProviderEventRequest(
                parent=sending_store.name, callback_secret=secret, client_id=client_id, status=status
            )
            for status in ("delivered", "stop")
        ]
    )
    answers = await asyncio.gather(*(stubs.sms.BatchReportProviderEvents(batch, metadata=EVENTS) for _ in range(4)))
    for i in range(2):
        outcomes = sorted(pb.ProviderEventOutcome.Name(a.results[i].response.outcome) for a in answers)
        assert outcomes == ["PROVIDER_EVENT_OUTCOME_APPLIED"] + ["PROVIDER_EVENT_OUTCOME_DUPLICATE"] * 3
    contact = (await message(stubs, sending_store, m.name)).contact
    activities = await stubs.contacts.ListActivities(
        cpb.ListActivitiesRequest(parent=contact), metadata=sending_store.md
    )
    unsubscribes = [a for a in activities.activities if a.type == common.ACTIVITY_TYPE_SMS_UNSUBSCRIBE]
    assert len(unsubscribes) == 1


async def test_a_batch_is_for_the_sidecar_only_and_bounded(stubs: Stubs, sending_store: StoreCtx) -> None:
    one = pb.ReportProviderEventRequest(parent=sending_store.name, callback_secret="x", status="stop", client_id="m")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.BatchReportProviderEvents(
            pb.BatchReportProviderEventsRequest(requests=[one]), metadata=sending_store.md
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for count in (0, 501):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.sms.BatchReportProviderEvents(
                pb.BatchReportProviderEventsRequest(requests=[one] * count), metadata=EVENTS
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _request(n: int, store: str = "stores/a") -> pb.ReportProviderEventRequest:
    return pb.ReportProviderEventRequest(parent=store, client_id=str(n), status="delivered")


def _answering(
    calls: list[list[str]], delay: float = 0.0
) -> Callable[..., Awaitable[pb.BatchReportProviderEventsResponse]]:
    async def send(batch: pb.BatchReportProviderEventsRequest, seconds: float) -> pb.BatchReportProviderEventsResponse:
        calls.append([r.parent for r in batch.requests])
        await asyncio.sleep(delay)
        return pb.BatchReportProviderEventsResponse(results=[pb.ProviderEventResult() for _ in batch.requests])

    return send


async def test_a_batch_takes_the_stores_in_turn() -> None:
    calls: list[list[str]] = []
    batcher = Batcher(_answering(calls, 0.05), max_batch=10, in_flight=1)  # one call at a time: the next waits
    first = asyncio.ensure_future(batcher.report(_request(0)))
    await asyncio.sleep(0.01)  # the first call is out; the flood and the stop wait
    flood = [asyncio.ensure_future(batcher.report(_request(n, "stores/big"))) for n in range(50)]
    stop = asyncio.ensure_future(batcher.report(_request(0, "stores/small")))
    await asyncio.gather(first, stop, *flood)
    assert "stores/small" in calls[1]  # in the very next call, not behind 50 of another store


async def test_a_late_answer_is_a_timeout_and_a_full_queue_refuses_at_once() -> None:
    calls: list[list[str]] = []
    batcher = Batcher(_answering(calls, 1.0), deadline=0.2, max_waiting=3)
    results = await asyncio.gather(*(batcher.report(_request(n)) for n in range(5)), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["TimeoutError"] * 3 + ["Overloaded"] * 2


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_the_batcher_groups_what_arrives_while_its_calls_are_out(in_flight: int) -> None:
    calls: list[int] = []
    release = asyncio.Event()

    async def send(batch: pb.BatchReportProviderEventsRequest, seconds: float) -> pb.BatchReportProviderEventsResponse:
        calls.append(len(batch.requests))
        await release.wait()
        return pb.BatchReportProviderEventsResponse(
            results=[
                pb.ProviderEventResult(response=pb.ReportProviderEventResponse(message=r.client_id))
                for r in batch.requests
            ]
        )

    batcher = Batcher(send, max_batch=50, in_flight=in_flight)
    first = asyncio.ensure_future(batcher.report(_request(0)))
    await asyncio.sleep(0.01)
    assert calls == [1]  # alone, it left at once: no timer
    rest = [asyncio.ensure_future(batcher.report(_request(n))) for n in range(1, 121)]
    await asyncio.sleep(0.01)
    assert calls == [1, 50][:in_flight]  # a free slot takes a batch at once; the rest wait for a call to land
    release.set()
    results = await asyncio.gather(first, *rest)
    assert [r.response.message for r in results] == [str(n) for n in range(121)]  # each its own answer
    assert calls == [1, 50, 50, 20]


async def test_a_failed_call_fails_each_of_its_callers() -> None:
    async def down(batch: pb.BatchReportProviderEventsRequest, seconds: float) -> pb.BatchReportProviderEventsResponse:
        raise ConnectionError("the server is away")

    async def short(batch: pb.BatchReportProviderEventsRequest, seconds: float) -> pb.BatchReportProviderEventsResponse:
        return pb.BatchReportProviderEventsResponse()  # fewer results than callbacks

    for failing in (down, short):
        batcher = Batcher(failing)
        results = await asyncio.gather(*(batcher.report(_request(n)) for n in range(5)), return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results)


async def test_a_report_repeated_after_it_gave_the_message_its_provider_id_is_a_duplicate(
    app: App, stubs: Stubs, fake: FakeInstasent
) -> None:
    """A report can come before the outbox records the SMS SENT (with Instasent's id): it sets that id.
    Its repeat must still be the same event, not a new one keyed by the id it set."""
    store, token = await outage_store(stubs, fake)
    c = await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(parent=store.name, contact=cpb.Contact(mobile_phone="612 000 902")), metadata=store.md
    )
    text = await content(stubs, store, "Hola")
    m = await send(stubs, store, sms_content=text.name, contact=c.name)  # QUEUED: Instasent is down
    report = pb.ReportProviderEventRequest(
        parent=store.name,
        callback_secret=await secret_of(stubs, store),
        client_id=m.name.rsplit("/", 1)[1],
        provider_id="instasent-id-902",
        status="delivered",
    )
    outcomes = []
    for _ in range(2):
        answer = await stubs.sms.BatchReportProviderEvents(
            pb.BatchReportProviderEventsRequest(requests=[report]), metadata=EVENTS
        )
        outcomes.append(pb.ProviderEventOutcome.Name(answer.results[0].response.outcome))
    fake.down.discard(token)
    assert outcomes == ["PROVIDER_EVENT_OUTCOME_APPLIED", "PROVIDER_EVENT_OUTCOME_DUPLICATE"]
    recorded = await app.storage.db.fetch_all(  # type: ignore[attr-defined]
        "SELECT provider_id FROM provider_events WHERE store_id = ?", (store.id,)
    )
    assert [r[0] for r in recorded] == [m.name.rsplit("/", 1)[1]]  # one event, under our message id
