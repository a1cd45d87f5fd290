"""SMS contents, AnalyzeSmsText, SendSms, the outbox against the fake Instasent, and the message log."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import field_mask_pb2

from smschannel.instasent.fake import FakeInstasent
from smschannel.server import App
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import INSTASENT_TOKEN, StoreCtx, Stubs, clock_at, eventually, set_channel
from .rpc_errors import field_violations, reason

SUBSCRIBED = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
TRANSACTIONAL, NEWSLETTER = common.SMS_TYPE_TRANSACTIONAL, common.SMS_TYPE_NEWSLETTER


async def content(stubs: Stubs, store: StoreCtx, text: str, name: str = "Promo") -> pb.SmsContent:
    return await stubs.sms.CreateSmsContent(
        pb.CreateSmsContentRequest(parent=store.name, sms_content=pb.SmsContent(display_name=name, text=text)),
        metadata=store.md,
    )


async def contact(stubs: Stubs, store: StoreCtx, **fields: object) -> cpb.Contact:
    return await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(parent=store.name, contact=cpb.Contact(**fields)),  # type: ignore[arg-type]
        metadata=store.md,
    )


def literal(value: str) -> common.VariableValue:
    return common.VariableValue(literal=value)


def field(name: str, fallback: str = "") -> common.VariableValue:
    return common.VariableValue(contact_field=name, fallback=fallback)


async def send(stubs: Stubs, store: StoreCtx, **fields: object) -> pb.Message:
    fields.setdefault("request_id", uuid.uuid4().hex)
    fields.setdefault("type", TRANSACTIONAL)
    return await stubs.sms.SendSms(pb.SendSmsRequest(parent=store.name, **fields), metadata=store.md)  # type: ignore[arg-type]


async def message(stubs: Stubs, store: StoreCtx, name: str) -> pb.Message:
    return await stubs.sms.GetMessage(pb.GetMessageRequest(name=name), metadata=store.md)


async def until_status(stubs: Stubs, store: StoreCtx, name: str, status: int) -> pb.Message:
    async def reached() -> bool:
        return (await message(stubs, store, name)).status == status

    await eventually(reached, what=f"{name} to reach {common.MessageStatus.Name(status)}")
    return await message(stubs, store, name)


# -- contents and analysis -------------------------------------------------------------------


async def test_sms_content_crud_reports_variables_and_size(stubs: Stubs, store: StoreCtx) -> None:
    c = await content(stubs, store, "Hola {{first_name}}, -20% hoy. {{ unsubscribe }}")
    assert c.name.startswith(f"{store.name}/smsContents/")
    assert list(c.variables) == ["first_name", "unsubscribe"]
    assert c.encoding == common.SMS_ENCODING_GSM7
    assert c.segments == 1
    got = await stubs.sms.GetSmsContent(pb.GetSmsContentRequest(name=c.name), metadata=store.md)
    assert got == c
    updated = await stubs.sms.UpdateSmsContent(
        pb.UpdateSmsContentRequest(
            sms_content=pb.SmsContent(name=c.name, text="Olá {{first_name}} 😀"),
            update_mask=field_mask_pb2.FieldMask(paths=["text"]),
        ),
        metadata=store.md,
    )
    assert updated.display_name == "Promo"
    assert updated.encoding == common.SMS_ENCODING_UCS2
    assert updated.etag != c.etag
    listed = await stubs.sms.ListSmsContents(pb.ListSmsContentsRequest(parent=store.name), metadata=store.md)
    assert [x.name for x in listed.sms_contents] == [c.name]
    await stubs.sms.DeleteSmsContent(pb.DeleteSmsContentRequest(name=c.name), metadata=store.md)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.GetSmsContent(pb.GetSmsContentRequest(name=c.name), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "required"), ("Hi {{first name}}", "not a variable"), ("x" * 1601, "at most")],
)
async def test_bad_texts_are_invalid_argument(stubs: Stubs, store: StoreCtx, text: str, why: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await content(stubs, store, text)
    assert why in field_violations(e.value)["sms_content.text"]


async def test_analyze_sms_text_per_country(stubs: Stubs, store: StoreCtx) -> None:
    resp = await stubs.sms.AnalyzeSmsText(
        pb.AnalyzeSmsTextRequest(parent=store.name, text="a" * 140 + " {{unsubscribe}}", countries=["us", "fr", "es"]),
        metadata=store.md,
    )
    assert resp.has_unsubscribe_marker
    assert [(c.country, c.length, c.segments) for c in resp.countries] == [
        ("US", 156, 1),
        ("FR", 154, 1),
        ("ES", 157, 1),
    ]
    emoji = await stubs.sms.AnalyzeSmsText(
        pb.AnalyzeSmsTextRequest(parent=store.name, text="😀" * 36), metadata=store.md
    )
    assert (emoji.encoding, emoji.length, emoji.segments) == (common.SMS_ENCODING_UCS2, 72, 2)


# -- sending -----------------------------------------------------------------------------------


async def test_a_transactional_send_reaches_instasent_and_the_log(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    c = await contact(stubs, sending_store, first_name="Ana", mobile_phone="612 345 001")
    txt = await content(stubs, sending_store, "Hola {{name}}, tu pedido {{order}} ya salió.")
    m = await send(
        stubs,
        sending_store,
        sms_content=txt.name,
        contact=c.name,
        variables={"name": field("first_name"), "order": literal("#1001")},
    )
    assert m.status in (common.MESSAGE_STATUS_QUEUED, common.MESSAGE_STATUS_SENT)
    assert m.text == "Hola Ana, tu pedido #1001 ya salió."
    assert m.recipient == "+34612345001"
    assert m.sender == "Acme"
    assert m.contact == c.name
    sent = await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
    assert sent.provider_id
    assert sent.send_time.seconds > 0
    got = [r for r in fake.received() if r.client_id == m.name.rsplit("/", 1)[1]]
    assert len(got) == 1
    assert (got[0].to, got[0].sender, got[0].text) == ("+34612345001", "Acme", m.text)
    acts = await stubs.contacts.ListActivities(
        cpb.ListActivitiesRequest(parent=c.name, filter="type = SMS_SENT"), metadata=sending_store.md
    )
    assert len(acts.activities) == 1
    assert acts.activities[0].details["message"] == m.name


# The eligibility matrix of SPEC §5, cell by cell.
MATRIX = [
    # phone status, subscription, type, sent?
    (common.MOBILE_PHONE_STATUS_ACTIVE, SUBSCRIBED, TRANSACTIONAL, True),
    (common.MOBILE_PHONE_STATUS_ACTIVE, SUBSCRIBED, NEWSLETTER, True),
    (common.MOBILE_PHONE_STATUS_ACTIVE, common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED, TRANSACTIONAL, True),
    (common.MOBILE_PHONE_STATUS_ACTIVE, common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED, NEWSLETTER, False),
    (common.MOBILE_PHONE_STATUS_ACTIVE, common.SMS_SUBSCRIPTION_STATUS_NONE, TRANSACTIONAL, True),
    (common.MOBILE_PHONE_STATUS_ACTIVE, common.SMS_SUBSCRIPTION_STATUS_NONE, NEWSLETTER, False),
    *[
        (phone, sub, kind, False)
        for phone in (common.MOBILE_PHONE_STATUS_REJECTED, common.MOBILE_PHONE_STATUS_PAUSED)
        for sub in (SUBSCRIBED, common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED, common.SMS_SUBSCRIPTION_STATUS_NONE)
        for kind in (TRANSACTIONAL, NEWSLETTER)
    ],
    *[
        (None, sub, kind, False)
        for sub in (SUBSCRIBED, common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED, common.SMS_SUBSCRIPTION_STATUS_NONE)
        for kind in (TRANSACTIONAL, NEWSLETTER)
    ],
]


def cell_id(cell: tuple[int | None, int, int, bool]) -> str:
    """A matrix cell by name, e.g. ACTIVE-SUBSCRIBED-NEWSLETTER-sent."""
    phone, subscription, kind, sent = cell
    return "-".join(
        (
            "NO_PHONE" if phone is None else common.MobilePhoneStatus.Name(phone).removeprefix("MOBILE_PHONE_STATUS_"),  # type: ignore[arg-type]
            common.SmsSubscriptionStatus.Name(subscription).removeprefix("SMS_SUBSCRIPTION_STATUS_"),  # type: ignore[arg-type]
            common.SmsType.Name(kind).removeprefix("SMS_TYPE_"),  # type: ignore[arg-type]
            "sent" if sent else "skipped",
        )
    )


MATRIX_IDS = [cell_id(cell) for cell in MATRIX]


@pytest.mark.parametrize(("phone_status", "subscription", "kind", "sent"), MATRIX, ids=MATRIX_IDS)
async def test_eligibility_matrix(
    stubs: Stubs,
    sending_store: StoreCtx,
    fake: FakeInstasent,
    phone_status: int | None,
    subscription: int,
    kind: int,
    sent: bool,
) -> None:
    fields: dict[str, object] = {"sms_subscription_status": subscription}
    if phone_status is not None:
        fields |= {"mobile_phone": "612 000 777", "mobile_phone_status": phone_status}
    c = await contact(stubs, sending_store, **fields)
    txt = await content(stubs, sending_store, "Oferta {{unsubscribe}}")
    m = await send(stubs, sending_store, sms_content=txt.name, contact=c.name, type=kind)
    client_id = m.name.rsplit("/", 1)[1]
    if sent:
        await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
        assert [r.to for r in fake.received() if r.client_id == client_id] == ["+34612000777"]
    else:
        assert m.status == common.MESSAGE_STATUS_SKIPPED
        assert m.status_reason  # a skip is never silent
        await asyncio.sleep(0)  # nothing queued: nothing to wait for
        assert (await message(stubs, sending_store, m.name)).status == common.MESSAGE_STATUS_SKIPPED
        assert [r for r in fake.received() if r.client_id == client_id] == []


async def test_alert_mode_ignores_the_contacts_phone_and_statuses(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    txt = await content(stubs, sending_store, "Nuevo pedido")
    m = await send(stubs, sending_store, sms_content=txt.name, alert_phone="699 111 222", type=TRANSACTIONAL)
    assert m.recipient == "+34699111222"
    assert m.recipient_mode == common.RECIPIENT_MODE_ALERT
    await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)


async def test_request_id_makes_a_retry_return_the_first_result(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    c = await contact(stubs, sending_store, mobile_phone="612 000 888")
    txt = await content(stubs, sending_store, "Una vez")
    rid = uuid.uuid4().hex
    results = await asyncio.gather(
        *(send(stubs, sending_store, sms_content=txt.name, contact=c.name, request_id=rid) for _ in range(5))
    )
    assert len({m.name for m in results}) == 1
    await until_status(stubs, sending_store, results[0].name, common.MESSAGE_STATUS_SENT)
    again = await send(stubs, sending_store, sms_content=txt.name, contact=c.name, request_id=rid)
    assert again.name == results[0].name
    assert again.status == common.MESSAGE_STATUS_SENT
    client_id = results[0].name.rsplit("/", 1)[1]
    assert len([r for r in fake.received() if r.client_id == client_id]) == 1


async def test_the_workflows_request_ids_are_not_for_sendsms(stubs: Stubs, sending_store: StoreCtx) -> None:
    c = await contact(stubs, sending_store, mobile_phone="612 000 883")
    txt = await content(stubs, sending_store, "Hola")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await send(stubs, sending_store, sms_content=txt.name, contact=c.name, request_id="wf:w1:b-c1:0")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in field_violations(e.value)


async def test_a_request_id_reused_for_another_sms_is_refused(stubs: Stubs, sending_store: StoreCtx) -> None:
    a = await contact(stubs, sending_store, mobile_phone="612 000 881")
    b = await contact(stubs, sending_store, mobile_phone="612 000 882")
    txt = await content(stubs, sending_store, "Una vez")
    other = await content(stubs, sending_store, "Otra")
    rid = uuid.uuid4().hex
    first = await send(stubs, sending_store, sms_content=txt.name, contact=a.name, request_id=rid)
    for changed in (
        {"contact": b.name},
        {"sms_content": other.name},
        {"type": NEWSLETTER},
        {"alert_phone": "612 000 881", "contact": ""},
        {"sender": "Other"},
    ):
        fields: dict[str, object] = {"sms_content": txt.name, "contact": a.name, "request_id": rid} | changed
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await send(stubs, sending_store, **fields)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS, changed
        assert reason(e.value) == "REQUEST_ID_REUSED"
        assert first.name in (e.value.details() or "")
    again = await send(stubs, sending_store, sms_content=txt.name, contact=a.name, request_id=rid, sender="Acme")
    assert again.name == first.name


@pytest.mark.parametrize(
    ("text", "variables", "kind", "bad"),
    [
        ("Hola {{name}}", {}, TRANSACTIONAL, "variables.name"),
        ("Hola", {"name": literal("x")}, TRANSACTIONAL, "variables.name"),
        ("Hola {{name}}", {"name": field("shoe_size")}, TRANSACTIONAL, "variables.name"),
        ("Hola {{name}}", {"name": common.VariableValue(event_property="x")}, TRANSACTIONAL, "variables.name"),
        ("Oferta", {}, NEWSLETTER, "variables"),  # a newsletter without the unsubscribe marker
        ("Oferta {{u}}", {"u": literal("stop")}, NEWSLETTER, "variables"),
    ],
)
async def test_bad_sends_are_invalid_argument(
    stubs: Stubs, sending_store: StoreCtx, text: str, variables: dict[str, common.VariableValue], kind: int, bad: str
) -> None:
    c = await contact(stubs, sending_store, mobile_phone="612 000 999", sms_subscription_status=SUBSCRIBED)
    txt = await content(stubs, sending_store, text)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await send(stubs, sending_store, sms_content=txt.name, contact=c.name, type=kind, variables=variables)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad in field_violations(e.value)


async def test_a_newsletter_marker_mapped_through_a_variable_is_accepted(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent, app: App
) -> None:
    c = await contact(stubs, sending_store, mobile_phone="+1 202 555 0143", sms_subscription_status=SUBSCRIBED)
    txt = await content(stubs, sending_store, "Sale! {{optout}}")
    with clock_at(app, datetime(2026, 12, 2, 14, 0, tzinfo=ZoneInfo("America/New_York"))):  # TCPA: 08:00–21:00
        m = await send(
            stubs,
            sending_store,
            sms_content=txt.name,
            contact=c.name,
            type=NEWSLETTER,
            variables={"optout": literal("{{unsubscribe}}")},
        )
        assert m.text == "Sale! {{unsubscribe}}"  # passed to Instasent as the literal marker
        assert m.segments == 1
        await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
    (received,) = [r for r in fake.received() if r.client_id == m.name.rsplit("/", 1)[1]]
    assert received.text == "Sale! Stop to opt-out"


@pytest.mark.parametrize(
    ("sender", "ok"),
    [
        ("Acme", True),
        ("ElevenChars", True),
        ("TwelveCharsX", False),
        ("123456789012345", True),
        ("1234567890123456", False),
        ("Acme Shop", False),
    ],
)
async def test_sender_rules(stubs: Stubs, sending_store: StoreCtx, sender: str, ok: bool) -> None:
    txt = await content(stubs, sending_store, "Hi")
    if ok:
        assert (
            await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000111", sender=sender)
        ).sender == sender
    else:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000111", sender=sender)
        assert "sender" in field_violations(e.value)


async def test_no_token_is_failed_precondition_and_the_message_stays_failed(stubs: Stubs, es_store: StoreCtx) -> None:
    await set_channel(stubs, es_store, default_sender="Acme")
    txt = await content(stubs, es_store, "Hi")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await send(stubs, es_store, sms_content=txt.name, alert_phone="+34699000111", request_id="no-token-1")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    log = await stubs.sms.ListMessages(pb.ListMessagesRequest(parent=es_store.name), metadata=es_store.md)
    assert [m.status for m in log.messages] == [common.MESSAGE_STATUS_FAILED]
    assert "token" in log.messages[0].status_reason


async def test_instasent_refusals_fail_the_message_with_instasents_message(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    txt = await content(stubs, sending_store, "Hi")
    # +34 900 numbers are valid for us but the fake refuses nothing of the sort: use a 402 instead.
    fake.accounts[INSTASENT_TOKEN].balance, saved = 0, fake.accounts[INSTASENT_TOKEN].balance
    try:
        m = await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000222")
        failed = await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_FAILED)
        assert "402" in failed.status_reason
        assert "balance" in failed.status_reason
    finally:
        fake.accounts[INSTASENT_TOKEN].balance = saved


async def test_a_401_fails_the_message_and_flags_the_token(
    stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    fake.add_token("soon-revoked-token")
    await set_channel(stubs, sending_store, api_token="soon-revoked-token")
    del fake.accounts["soon-revoked-token"]
    txt = await content(stubs, sending_store, "Hi")
    m = await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000333")
    failed = await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_FAILED)
    assert "401" in failed.status_reason
    config = await stubs.sms.GetSmsChannelConfig(
        pb.GetSmsChannelConfigRequest(name=f"{sending_store.name}/smsChannelConfig"), metadata=sending_store.md
    )
    assert config.token_status == pb.TOKEN_STATUS_INVALID


async def test_429_and_5xx_are_retried_until_sent(stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent) -> None:
    txt = await content(stubs, sending_store, "Hi")
    fake.faults.burst_429 = 2
    fake.faults.reset_after = 0.1
    try:
        m = await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000444")
        sent = await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
        assert sent.provider_id
        fake.faults.error_rate = 1.0
        m2 = await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000555")
        await asyncio.sleep(0.3)
        retrying = await message(stubs, sending_store, m2.name)
        assert retrying.status == common.MESSAGE_STATUS_QUEUED
        assert "retrying" in retrying.status_reason
        fake.faults.error_rate = 0.0
        await until_status(stubs, sending_store, m2.name, common.MESSAGE_STATUS_SENT)
    finally:
        fake.faults.burst_429 = 0
        fake.faults.error_rate = 0.0


async def test_many_queued_messages_go_in_bulk_requests(
    app: App, stubs: Stubs, sending_store: StoreCtx, fake: FakeInstasent
) -> None:
    txt = await content(stubs, sending_store, "Hi {{n}}")
    fake.faults.latency = 0.2  # hold the first request so the rest pile up in the outbox
    try:
        before = fake.requests
        sends = [
            send(
                stubs, sending_store, sms_content=txt.name, alert_phone="+34699000666", variables={"n": literal(str(i))}
            )
            for i in range(250)
        ]
        messages = await asyncio.gather(*sends)
        for m in messages:
            await until_status(stubs, sending_store, m.name, common.MESSAGE_STATUS_SENT)
        assert fake.requests - before < 50  # 250 messages in a few requests, not 250
    finally:
        fake.faults.latency = 0.0


async def test_list_messages_filters_and_pages(stubs: Stubs, sending_store: StoreCtx) -> None:
    a = await contact(stubs, sending_store, mobile_phone="612 100 001")
    b = await contact(stubs, sending_store, mobile_phone="612 100 002")
    txt = await content(stubs, sending_store, "Hi")
    other = await content(stubs, sending_store, "Hey")
    sent = [await send(stubs, sending_store, sms_content=txt.name, contact=a.name) for _ in range(3)]
    await send(stubs, sending_store, sms_content=other.name, contact=b.name)
    promo = await content(stubs, sending_store, "Promo {{unsubscribe}}")
    await send(stubs, sending_store, sms_content=promo.name, contact=b.name, type=NEWSLETTER)  # b is NONE: skipped

    async def names(flt: str, page_size: int = 0) -> list[str]:
        out, token = [], ""
        while True:
            resp = await stubs.sms.ListMessages(
                pb.ListMessagesRequest(parent=sending_store.name, filter=flt, page_size=page_size, page_token=token),
                metadata=sending_store.md,
            )
            out += [m.name for m in resp.messages]
            token = resp.next_page_token
            if not token:
                return out

    assert await names(f'contact = "{a.name}"', 2) == [m.name for m in reversed(sent)]
    assert len(await names(f'sms_content = "{other.name}"')) == 1
    assert len(await names("status = SKIPPED")) == 1
    assert len(await names("type = NEWSLETTER")) == 1
    assert len(await names('create_time >= "2000-01-01T00:00:00Z" AND create_time < "2100-01-01T00:00:00Z"')) == 5
    assert await names('create_time >= "2100-01-01T00:00:00Z"') == []
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await names("status = LOST")
    assert "filter" in field_violations(e.value)


async def test_another_stores_messages_and_contents_are_not_found(
    stubs: Stubs, sending_store: StoreCtx, other_store: StoreCtx
) -> None:
    txt = await content(stubs, sending_store, "Hi")
    m = await send(stubs, sending_store, sms_content=txt.name, alert_phone="+34699000777")
    for call in (
        stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=other_store.md),
        stubs.sms.GetSmsContent(pb.GetSmsContentRequest(name=txt.name), metadata=other_store.md),
        stubs.sms.SendSms(
            pb.SendSmsRequest(
                parent=sending_store.name,
                request_id="x",
                sms_content=txt.name,
                type=TRANSACTIONAL,
                alert_phone="+34699000777",
            ),
            metadata=other_store.md,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
