"""Sending that respects people, through the API (issue 18): the sending rules in the channel config,
quiet hours holding a NEWSLETTER (QUEUED with `hold_until`, consent judged again when it goes), the
frequency cap, and the dry runs (SendSms `validate_only`, PreviewWorkflow) judged by the same rules.

The server runs on the real clock: a window "now" is built around the current local time of the
recipient's zones, so these tests hold whatever the hour they run at."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.type import money_pb2, timeofday_pb2

from smschannel.domain.enums import SmsType
from smschannel.domain.quiet_hours import QuietHours, held_until
from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import INSTASENT_TOKEN, StoreCtx, Stubs, create_store, eventually, set_channel
from .test_sending import NEWSLETTER, SUBSCRIBED, TRANSACTIONAL, contact, content, message, send, until_status

PHONE = "+34612000901"
MADRID = ZoneInfo("Europe/Madrid")


def tod(t: datetime) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=t.hour, minutes=t.minute)


def window_around_now(include_transactional: bool = False) -> pb.QuietHours:
    """A quiet window from 2 h before to 3 h after now in Madrid (the Canaries, an hour behind, are
    inside it too): whatever the hour, a +34 number is in its quiet hours now."""
    now = datetime.now(MADRID)
    return pb.QuietHours(
        start=tod(now - timedelta(hours=2)),
        end=tod(now + timedelta(hours=3)),
        include_transactional=include_transactional,
    )


async def quiet_store(stubs: Stubs, **fields: object) -> StoreCtx:
    store = await create_store(stubs)
    fields.setdefault("quiet_hours", window_around_now())
    await set_channel(stubs, store, default_country="ES", api_token=INSTASENT_TOKEN, default_sender="Acme", **fields)
    return store


def received(fake: FakeInstasent, m: pb.Message) -> list[str]:
    return [r.to for r in fake.received() if r.client_id == m.name.rsplit("/", 1)[1]]


async def config_of(stubs: Stubs, store: StoreCtx) -> pb.SmsChannelConfig:
    return await stubs.sms.GetSmsChannelConfig(
        pb.GetSmsChannelConfigRequest(name=f"{store.name}/smsChannelConfig"), metadata=store.md
    )


# -- the config -------------------------------------------------------------------------------------


async def test_the_rules_default_to_21_to_9_with_transactional_exempt_and_no_cap(stubs: Stubs) -> None:
    store = await create_store(stubs)
    config = await config_of(stubs, store)
    assert (config.quiet_hours.start.hours, config.quiet_hours.end.hours) == (21, 9)
    assert not config.quiet_hours.include_transactional
    assert not config.HasField("frequency_cap")
    assert not config.part_prices
    assert config.time_zone == ""


async def test_the_rules_round_trip_and_a_cap_is_removed_by_its_path(stubs: Stubs) -> None:
    store = await create_store(stubs)
    saved = await set_channel(
        stubs,
        store,
        time_zone="Europe/Paris",
        quiet_hours=pb.QuietHours(start=timeofday_pb2.TimeOfDay(hours=20, minutes=30), end=tod(datetime(1, 1, 1, 8))),
        frequency_cap=pb.FrequencyCap(max_sms=2, period=duration_pb2.Duration(seconds=7 * 86400)),
        part_prices=[
            pb.PartPrice(country="FR", price=money_pb2.Money(currency_code="EUR", units=0, nanos=45_000_000)),
            pb.PartPrice(country="", price=money_pb2.Money(currency_code="EUR", units=0, nanos=80_000_000)),
        ],
    )
    assert saved.time_zone == "Europe/Paris"
    assert (saved.quiet_hours.start.hours, saved.quiet_hours.start.minutes, saved.quiet_hours.end.hours) == (20, 30, 8)
    assert (saved.frequency_cap.max_sms, saved.frequency_cap.period.seconds) == (2, 7 * 86400)
    assert {(p.country, p.price.nanos) for p in saved.part_prices} == {("FR", 45_000_000), ("", 80_000_000)}
    again = await stubs.sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(name=saved.name),
            update_mask=field_mask_pb2.FieldMask(paths=["frequency_cap"]),
        ),
        metadata=store.md,
    )
    assert not again.HasField("frequency_cap")
    assert again.time_zone == "Europe/Paris"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"time_zone": "Mars/Olympus"}, "sms_channel_config.time_zone"),
        ({"time_zone": "../../etc/passwd"}, "sms_channel_config.time_zone"),
        (
            {"quiet_hours": pb.QuietHours(start=timeofday_pb2.TimeOfDay(hours=25))},
            "sms_channel_config.quiet_hours.start",
        ),
        (  # a window leaving France's 10:00-20:00 no minute would hold every newsletter to France
            {
                "quiet_hours": pb.QuietHours(
                    start=timeofday_pb2.TimeOfDay(hours=9), end=timeofday_pb2.TimeOfDay(hours=21)
                )
            },
            "sms_channel_config.quiet_hours",
        ),
        ({"frequency_cap": pb.FrequencyCap(max_sms=0)}, "sms_channel_config.frequency_cap.max_sms"),
        (
            {"frequency_cap": pb.FrequencyCap(max_sms=2, period=duration_pb2.Duration(seconds=60))},
            "sms_channel_config.frequency_cap.period",
        ),
        (
            {
                "part_prices": [
                    pb.PartPrice(country="FR", price=money_pb2.Money(currency_code="EUR", nanos=1)),
                    pb.PartPrice(country="ES", price=money_pb2.Money(currency_code="USD", nanos=1)),
                ]
            },
            "sms_channel_config.part_prices[0].price.currency_code",
        ),
        (
            {"part_prices": [pb.PartPrice(country="XX", price=money_pb2.Money(currency_code="EUR"))]},
            "sms_channel_config.part_prices[0].country",
        ),
    ],
)
async def test_bad_rules_are_invalid_argument_naming_the_field(
    stubs: Stubs, store: StoreCtx, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await set_channel(stubs, store, **fields)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (e.value.details() or "")


# -- quiet hours ------------------------------------------------------------------------------------


async def test_a_newsletter_in_quiet_hours_is_held_then_sent_with_consent_judged_again(
    stubs: Stubs, fake: FakeInstasent
) -> None:
    store = await quiet_store(stubs)
    text = await content(stubs, store, "Oferta {{unsubscribe}}")
    stays = await contact(stubs, store, mobile_phone=PHONE, sms_subscription_status=SUBSCRIBED)
    leaves = await contact(stubs, store, mobile_phone="+34612000902", sms_subscription_status=SUBSCRIBED)
    held = [await send(stubs, store, sms_content=text.name, contact=c.name, type=NEWSLETTER) for c in (stays, leaves)]
    q = (await config_of(stubs, store)).quiet_hours
    rule = QuietHours(
        datetime(1, 1, 1, q.start.hours, q.start.minutes).time(), datetime(1, 1, 1, q.end.hours, q.end.minutes).time()
    )
    for m in held:
        assert m.status == common.MESSAGE_STATUS_QUEUED
        assert m.HasField("hold_until")
        expected = held_until(m.recipient, SmsType.NEWSLETTER, m.create_time.ToDatetime(tzinfo=UTC), rule, MADRID)
        assert expected is not None
        assert m.hold_until.ToDatetime(tzinfo=UTC) == expected
        assert (await message(stubs, store, m.name)).hold_until == m.hold_until  # GetMessage shows it
        assert m.status_reason.startswith("held by quiet hours until")
    # A transactional SMS is exempt by default.
    alert = await send(stubs, store, sms_content=text.name, contact=stays.name, type=TRANSACTIONAL)
    await until_status(stubs, store, alert.name, common.MESSAGE_STATUS_SENT)
    # One contact says stop while held; then the window opens (the store turns its quiet hours off).
    await stubs.contacts.UnsubscribeSms(
        cpb.UnsubscribeSmsRequest(parent=store.name, contact=leaves.name), metadata=store.md
    )
    assert all(received(fake, m) == [] for m in held)
    await set_channel(stubs, store, quiet_hours=pb.QuietHours())
    sent = await until_status(stubs, store, held[0].name, common.MESSAGE_STATUS_SENT)
    skipped = await until_status(stubs, store, held[1].name, common.MESSAGE_STATUS_SKIPPED)
    assert received(fake, sent) == [PHONE]
    assert received(fake, skipped) == []
    assert skipped.status_reason.startswith("at sending:")


async def test_quiet_hours_can_hold_transactional_sms_too(stubs: Stubs, fake: FakeInstasent) -> None:
    store = await quiet_store(stubs, quiet_hours=window_around_now(include_transactional=True))
    text = await content(stubs, store, "Su pedido ha salido")
    c = await contact(stubs, store, mobile_phone=PHONE)
    m = await send(stubs, store, sms_content=text.name, contact=c.name, type=TRANSACTIONAL)
    assert m.status == common.MESSAGE_STATUS_QUEUED
    assert m.HasField("hold_until")
    assert received(fake, m) == []


async def test_a_window_set_while_a_message_waits_holds_it_at_the_hand_over(stubs: Stubs, fake: FakeInstasent) -> None:
    """Queued outside quiet hours, but Instasent is down; the store sets a window covering now: at the
    next attempt the message is held, not sent."""
    store = await create_store(stubs)
    token = f"quiet-{uuid.uuid4().hex[:10]}"
    fake.add_token(token)
    await set_channel(stubs, store, default_country="ES", api_token=token, default_sender="Acme")
    text = await content(stubs, store, "Oferta {{unsubscribe}}")
    c = await contact(stubs, store, mobile_phone=PHONE, sms_subscription_status=SUBSCRIBED)
    fake.down.add(token)
    try:
        m = await send(stubs, store, sms_content=text.name, contact=c.name, type=NEWSLETTER)
        assert not m.HasField("hold_until")

        async def retried() -> bool:
            return (await message(stubs, store, m.name)).status_reason.startswith("retrying")

        await eventually(retried, "a failed attempt")
        await set_channel(stubs, store, quiet_hours=window_around_now())
    finally:
        fake.down.discard(token)

    async def held() -> bool:
        return (await message(stubs, store, m.name)).HasField("hold_until")

    await eventually(held, "the hold at the hand-over", within=15)
    got = await message(stubs, store, m.name)
    assert got.status == common.MESSAGE_STATUS_QUEUED
    assert got.status_reason.startswith("held by quiet hours")
    assert received(fake, m) == []


# -- the frequency cap ------------------------------------------------------------------------------


async def test_the_frequency_cap_skips_the_newsletter_over_it_and_never_a_transactional_sms(stubs: Stubs) -> None:
    store = await quiet_store(
        stubs,
        quiet_hours=pb.QuietHours(),
        frequency_cap=pb.FrequencyCap(max_sms=2, period=duration_pb2.Duration(seconds=7 * 86400)),
    )
    text = await content(stubs, store, "Oferta {{unsubscribe}}")
    c = await contact(stubs, store, mobile_phone=PHONE, sms_subscription_status=SUBSCRIBED)
    for _ in range(2):
        m = await send(stubs, store, sms_content=text.name, contact=c.name, type=NEWSLETTER)
        await until_status(stubs, store, m.name, common.MESSAGE_STATUS_SENT)
    third = await send(stubs, store, sms_content=text.name, contact=c.name, type=NEWSLETTER)
    assert third.status == common.MESSAGE_STATUS_SKIPPED
    assert third.status_reason.startswith("frequency_cap")
    order = await send(stubs, store, sms_content=text.name, contact=c.name, type=TRANSACTIONAL)
    await until_status(stubs, store, order.name, common.MESSAGE_STATUS_SENT)


# -- dry runs ---------------------------------------------------------------------------------------


async def test_sendsms_validate_only_judges_without_storing_or_sending(stubs: Stubs, fake: FakeInstasent) -> None:
    store = await quiet_store(
        stubs,
        part_prices=[pb.PartPrice(country="ES", price=money_pb2.Money(currency_code="EUR", nanos=60_000_000))],
    )
    text = await content(stubs, store, "Oferta {{unsubscribe}}")
    yes = await contact(stubs, store, mobile_phone=PHONE, sms_subscription_status=SUBSCRIBED)
    no = await contact(stubs, store, mobile_phone="+34612000903")
    before = len(fake.received())
    held = await send(
        stubs, store, sms_content=text.name, contact=yes.name, type=NEWSLETTER, validate_only=True, request_id=""
    )
    assert held.name == ""
    assert held.status == common.MESSAGE_STATUS_QUEUED
    assert held.HasField("hold_until")
    assert held.segments == 1
    assert held.recipient == PHONE
    assert (held.estimated_cost.currency_code, held.estimated_cost.nanos) == ("EUR", 60_000_000)
    skipped = await send(stubs, store, sms_content=text.name, contact=no.name, type=NEWSLETTER, validate_only=True)
    assert skipped.status == common.MESSAGE_STATUS_SKIPPED
    assert "SUBSCRIBED" in skipped.status_reason
    listed = await stubs.sms.ListMessages(pb.ListMessagesRequest(parent=store.name), metadata=store.md)
    assert list(listed.messages) == []
    assert len(fake.received()) == before


async def broadcast(stubs: Stubs, store: StoreCtx, text: str) -> str:
    node = wpb.Node(
        id="send",
        send_sms=wpb.SendSmsNode(sms_content=text, recipient_mode=common.RECIPIENT_MODE_CONTACT, type=NEWSLETTER),
    )
    wf = await stubs.workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(
            parent=store.name,
            workflow=wpb.Workflow(
                display_name="Black Friday",
                trigger=wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
                start_node="send",
                nodes=[node],
            ),
        ),
        metadata=store.md,
    )
    return wf.name


async def test_preview_workflow_counts_what_the_broadcast_then_does(stubs: Stubs, fake: FakeInstasent) -> None:
    """The preview's counts equal, outcome by outcome, what the activated broadcast does."""
    store = await quiet_store(
        stubs,
        quiet_hours=pb.QuietHours(),
        frequency_cap=pb.FrequencyCap(max_sms=1, period=duration_pb2.Duration(seconds=86400)),
        part_prices=[pb.PartPrice(country="", price=money_pb2.Money(currency_code="EUR", nanos=50_000_000))],
    )
    text = await content(stubs, store, "Hola, ofertas hoy {{unsubscribe}}")
    phones = [f"+3461200{n:04d}" for n in range(12)]
    made = []
    for n, phone in enumerate(phones):
        status = SUBSCRIBED if n % 3 else common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
        made.append(await contact(stubs, store, mobile_phone=phone, sms_subscription_status=status))
    await contact(stubs, store, email="nophone@x.co")
    capped = made[1]  # already got one newsletter today: the cap (1 a day) skips it
    first = await send(stubs, store, sms_content=text.name, contact=capped.name, type=NEWSLETTER)
    await until_status(stubs, store, first.name, common.MESSAGE_STATUS_SENT)

    async def outcomes() -> dict[str, int] | None:
        page = await stubs.sms.ListMessages(
            pb.ListMessagesRequest(parent=store.name, filter=f'workflow = "{wf}"', page_size=100), metadata=store.md
        )
        if len(page.messages) < 13 or any(m.status == common.MESSAGE_STATUS_QUEUED for m in page.messages):
            return None
        counts: dict[str, int] = {}
        for m in page.messages:
            counts[common.MessageStatus.Name(m.status)] = counts.get(common.MessageStatus.Name(m.status), 0) + 1
        return counts

    wf = await broadcast(stubs, store, text.name)
    preview = await stubs.workflows.PreviewWorkflow(wpb.PreviewWorkflowRequest(name=wf), metadata=store.md)
    assert preview.audience_count == 13
    (node,) = preview.nodes
    skips = {s.reason: s.count for s in node.skips}
    assert skips == {"not_subscribed": 4, "no_phone": 1, "frequency_cap": 1}
    assert (node.send_count, node.held_count) == (7, 0)
    (es,) = node.countries
    assert (es.country, es.message_count, es.part_count) == ("ES", 7, 7)
    assert (node.estimated_cost.units, node.estimated_cost.nanos) == (0, 350_000_000)
    assert node.sample_texts
    assert "{{unsubscribe}}" not in node.sample_texts[0]
    assert await outcomes() is None  # the preview stored no message
    # Now the real thing: the same outcomes, message by message.
    await stubs.workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf), metadata=store.md)

    async def done() -> bool:
        return await outcomes() is not None

    await eventually(done, "the broadcast's messages", within=20)
    assert await outcomes() == {"MESSAGE_STATUS_SENT": 7, "MESSAGE_STATUS_SKIPPED": 6}
