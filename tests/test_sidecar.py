"""The sidecar end to end: Instasent-format HTTP callbacks → sidecar → server → contacts and messages."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smschannel.asgi import serve_in_loop
from smschannel.domain.contacts import Activity, Contact
from smschannel.domain.enums import ActivitySource
from smschannel.domain.stores import Store
from smschannel.instasent.fake import FakeInstasent
from smschannel.operations.contacts import ContactOps
from smschannel.server import App
from smschannel.sidecar.app import MAX_BODY, create_app, redact
from smschannel.storage import Mutation
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import StoreCtx, Stubs, eventually
from .test_sending import content, send, until_status


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def callback_url(stubs: Stubs, store: StoreCtx, sidecar: str) -> str:
    config = await stubs.sms.GetSmsChannelConfig(
        pb.GetSmsChannelConfigRequest(name=f"{store.name}/smsChannelConfig"), metadata=store.md
    )
    # The config's URL is built from SMSCHANNEL_PUBLIC_URL; the path is what Instasent calls.
    return sidecar + config.callback_url.split("8080", 1)[1]


@pytest.fixture
async def wired(stubs: Stubs, sending_store: StoreCtx, sidecar: str, fake: FakeInstasent) -> tuple[StoreCtx, str]:
    """A sending store whose Instasent token calls back the sidecar (as pasted in the dashboard)."""
    url = await callback_url(stubs, sending_store, sidecar)
    token = f"token-{uuid.uuid4().hex[:8]}"
    fake.add_token(token, callback_url=url)
    await stubs.sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(name=f"{sending_store.name}/smsChannelConfig", api_token=token)
        ),
        metadata=sending_store.md,
    )
    return sending_store, url


async def contact(stubs: Stubs, store: StoreCtx, phone: str) -> cpb.Contact:
    return await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(
            parent=store.name,
            contact=cpb.Contact(mobile_phone=phone, sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED),
        ),
        metadata=store.md,
    )


async def activities(stubs: Stubs, store: StoreCtx, name: str, kind: str) -> list[cpb.Activity]:
    resp = await stubs.contacts.ListActivities(
        cpb.ListActivitiesRequest(parent=name, filter=f"type = {kind}"), metadata=store.md
    )
    return list(resp.activities)


async def test_delivery_reports_update_the_message(
    stubs: Stubs, wired: tuple[StoreCtx, str], fake: FakeInstasent
) -> None:
    store, _ = wired
    c = await contact(stubs, store, "612 400 001")
    txt = await content(stubs, store, "Hola")
    m = await send(stubs, store, sms_content=txt.name, contact=c.name)
    delivered = await until_status(stubs, store, m.name, common.MESSAGE_STATUS_DELIVERED)
    assert delivered.delivery_time.seconds > 0
    assert len(await activities(stubs, store, c.name, "SMS_DELIVERED")) == 1


async def test_an_opt_out_unsubscribes_every_contact_with_that_phone(
    stubs: Stubs, wired: tuple[StoreCtx, str], fake: FakeInstasent
) -> None:
    store, _ = wired
    a = await contact(stubs, store, "612 400 002")
    b = await contact(stubs, store, "+34 612 400 002")  # the same phone on a second contact
    txt = await content(stubs, store, "Oferta {{unsubscribe}}")
    m = await send(stubs, store, sms_content=txt.name, contact=a.name, type=common.SMS_TYPE_NEWSLETTER)
    await until_status(stubs, store, m.name, common.MESSAGE_STATUS_DELIVERED)
    (received,) = [r for r in fake.received() if r.client_id == m.name.rsplit("/", 1)[1]]
    assert await fake.opt_out(received.id)  # the recipient clicks the link: Instasent calls back `stop`
    for c in (a, b):
        got = await stubs.contacts.GetContact(cpb.GetContactRequest(name=c.name), metadata=store.md)
        assert got.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
        (act,) = await activities(stubs, store, c.name, "SMS_UNSUBSCRIBE")
        assert act.source == common.ACTIVITY_SOURCE_PROVIDER


async def test_a_rejection_rejects_the_phone(stubs: Stubs, wired: tuple[StoreCtx, str], fake: FakeInstasent) -> None:
    store, _ = wired
    c = await contact(stubs, store, "612 400 003")
    fake.rejected_numbers.add("+34612400003")
    txt = await content(stubs, store, "Hola")
    m = await send(stubs, store, sms_content=txt.name, contact=c.name)
    await until_status(stubs, store, m.name, common.MESSAGE_STATUS_REJECTED)

    async def phone_rejected() -> bool:  # the message's status is written just before the contact's
        got = await stubs.contacts.GetContact(cpb.GetContactRequest(name=c.name), metadata=store.md)
        return got.mobile_phone_status == common.MOBILE_PHONE_STATUS_REJECTED

    await eventually(phone_rejected, "the contact's phone REJECTED")
    assert len(await activities(stubs, store, c.name, "PHONE_REJECTED")) == 1


async def sent_message(stubs: Stubs, store: StoreCtx, phone: str) -> tuple[cpb.Contact, pb.Message]:
    c = await contact(stubs, store, phone)
    txt = await content(stubs, store, "Hola")
    m = await send(stubs, store, sms_content=txt.name, contact=c.name)
    return c, await until_status(stubs, store, m.name, common.MESSAGE_STATUS_SENT)


async def test_duplicates_and_late_reports_change_nothing_twice(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    c, m = await sent_message(stubs, sending_store, "612 400 004")
    body = {
        "id": m.provider_id,
        "clientId": m.name.rsplit("/", 1)[1],
        "status": "delivered",
        "eventAt": "2026-11-25T10:00:00Z",
    }
    first = await http.post(url, json=body)
    assert (first.status_code, first.json()["outcome"]) == (200, "applied")
    again = await http.post(url, json=body)
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    late = await http.post(url, json={**body, "status": "sent"})  # out of order: never goes back
    assert late.json()["outcome"] == "duplicate"
    got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=sending_store.md)
    assert got.status == common.MESSAGE_STATUS_DELIVERED
    assert len(await activities(stubs, sending_store, c.name, "SMS_DELIVERED")) == 1
    for _ in range(2):
        stop = await http.post(url, json={"id": m.provider_id, "status": "stop"})  # by Instasent's id alone
        assert stop.status_code == 200
    assert len(await activities(stubs, sending_store, c.name, "SMS_UNSUBSCRIBE")) == 1


async def test_a_callback_that_fails_midway_leaves_nothing_and_its_retry_applies_once(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rejection changes the message and the phone's contacts and records the event: one
    # transaction. The contact change fails the first time: nothing may stay (not the message's
    # REJECTED, not the record that would make Instasent's retry a duplicate).
    url = await callback_url(stubs, sending_store, sidecar)
    c, m = await sent_message(stubs, sending_store, "612 400 010")
    real_change = ContactOps.reject_change
    failures: list[str] = []

    def reject_change_failing_once(self: ContactOps, store: Store, source: ActivitySource) -> Mutation:
        change = real_change(self, store, source)

        def mutate(current: Contact | None) -> tuple[Contact, list[Activity]]:
            if not failures:
                failures.append(current.id if current else "")
                raise RuntimeError("disk full (injected)")
            return change(current)

        return mutate

    monkeypatch.setattr(ContactOps, "reject_change", reject_change_failing_once)
    body = {"id": m.provider_id, "clientId": m.name.rsplit("/", 1)[1], "status": "rejected"}
    first = await http.post(url, json=body)
    assert first.status_code == 503  # Instasent retries
    assert failures == [c.name.rsplit("/", 1)[1]]
    got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=sending_store.md)
    assert got.status == common.MESSAGE_STATUS_SENT
    retry = await http.post(url, json=body)
    assert (retry.status_code, retry.json()["outcome"]) == (200, "applied")
    got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=sending_store.md)
    assert got.status == common.MESSAGE_STATUS_REJECTED
    contact_now = await stubs.contacts.GetContact(cpb.GetContactRequest(name=c.name), metadata=sending_store.md)
    assert contact_now.mobile_phone_status == common.MOBILE_PHONE_STATUS_REJECTED
    assert len(await activities(stubs, sending_store, c.name, "PHONE_REJECTED")) == 1
    again = await http.post(url, json=body)
    assert again.json()["outcome"] == "duplicate"


async def test_form_encoded_bodies_and_extra_fields_are_accepted(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    _, m = await sent_message(stubs, sending_store, "612 400 005")
    resp = await http.post(url, data={"clientId": m.name.rsplit("/", 1)[1], "status": "delivered", "whatever": "x"})
    assert (resp.status_code, resp.json()["outcome"]) == (200, "applied")


async def test_unknown_messages_are_acknowledged(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    resp = await http.post(url, json={"id": "nobody-knows", "status": "delivered", "futureField": 1})
    assert (resp.status_code, resp.json()["outcome"]) == (200, "unknown_message")


async def test_a_wrong_secret_or_store_is_404_with_no_side_effect(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    c, m = await sent_message(stubs, sending_store, "612 400 006")
    body = {"clientId": m.name.rsplit("/", 1)[1], "status": "stop"}
    for bad in (url[:-3] + "xyz", url.replace(sending_store.id, "nosuchstore"), url + "extra/path"):
        assert (await http.post(bad, json=body)).status_code == 404
    got = await stubs.contacts.GetContact(cpb.GetContactRequest(name=c.name), metadata=sending_store.md)
    assert got.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
    # Rotating the secret makes the old URL stop working.
    await stubs.sms.RotateCallbackSecret(
        pb.RotateCallbackSecretRequest(name=f"{sending_store.name}/smsChannelConfig"), metadata=sending_store.md
    )
    assert (await http.post(url, json=body)).status_code == 404


# -- hostile input: short JSON answers, never a 500; a wrong secret is 404 whatever the body --------


def short_error(resp: httpx.Response, status: int) -> None:
    """`resp` is `status` with a short JSON error: no traceback, no echo of a huge input."""
    assert resp.status_code == status, resp.text[:300]
    assert resp.headers["content-type"] == "application/json"
    assert len(resp.content) < 300
    assert "Traceback" not in resp.text
    assert list(resp.json()) == ["error"]


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
NESTED_ARRAYS = b"[" * 60_000  # under MAX_BODY, so it reaches the parser
NESTED_OBJECTS = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
GARBAGE = [
    pytest.param(NESTED_ARRAYS, JSON, id="arrays-60000-deep"),
    pytest.param(NESTED_ARRAYS, {}, id="arrays-60000-deep-untyped"),
    pytest.param(NESTED_OBJECTS, JSON, id="objects-10000-deep"),
    pytest.param(b"{not json", JSON, id="not-json"),
    pytest.param(b"\xff\xfe", JSON, id="not-utf8"),
    pytest.param(b"\xff\xfe=\x00", FORM, id="not-utf8-form"),
    pytest.param(b"", JSON, id="empty"),
    pytest.param(b"[1, 2]", JSON, id="array"),
    pytest.param(b'"delivered"', JSON, id="string"),
    pytest.param(b"null", JSON, id="null"),
    pytest.param(b'{"status": "delivered"}', JSON, id="no-id"),
    pytest.param(b'{"id": "x"}', JSON, id="no-status"),
    pytest.param(b'{"id": 1.5, "status": "delivered"}', JSON, id="float-id"),
    pytest.param(b'{"id": true, "status": "delivered"}', JSON, id="bool-id"),
    pytest.param(b'{"id": ["x"], "status": "delivered"}', JSON, id="list-id"),
    pytest.param(b'{"id": NaN, "status": "delivered"}', JSON, id="nan-id"),
    pytest.param(b'{"id": "x", "status": 7}', JSON, id="number-status"),
    pytest.param(b'{"id": "x", "status": {"s": 1}}', JSON, id="object-status"),
    pytest.param(b'{"id": "%s", "status": "delivered"}' % (b"x" * 10_000), JSON, id="id-10000-chars"),
    pytest.param(b'{"clientId": "%s", "status": "stop"}' % (b"c" * 10_000), JSON, id="client-id-10000-chars"),
    pytest.param(b'{"id": %s, "status": "delivered"}' % (b"9" * 4_000), JSON, id="id-4000-digits"),
    pytest.param(b'{"id": %s, "status": "delivered"}' % (b"9" * 5_000), JSON, id="id-5000-digits"),
    pytest.param(b'{"id": "a\\u0000b", "status": "delivered"}', JSON, id="nul-in-id"),
    pytest.param(b'{"id": "x", "status": "deliv\\u0000ered"}', JSON, id="nul-in-status"),
    pytest.param(b'{"id": "x", "status": "delivered", "code": "\\u0000"}', JSON, id="nul-in-code"),
    pytest.param(b'{"id": "x", "status": "delivered", "message": "\\ud800"}', JSON, id="lone-surrogate-message"),
    pytest.param(b'{"id": "\\udfff", "status": "delivered"}', JSON, id="lone-surrogate-id"),
    pytest.param(b'{"id": "x", "status": "delivered", "status": "stop"}', JSON, id="repeated-key"),
    pytest.param(b"id=x&status=delivered&status=stop", FORM, id="form-repeated-key"),
    pytest.param(b"id=a%00b&status=delivered", FORM, id="form-nul"),
    pytest.param(b"just some words", FORM, id="form-garbage"),
    pytest.param(b"status=" + b"s" * 10_000 + b"&id=x", FORM, id="form-status-10000-chars"),
]


@pytest.mark.parametrize(("content", "headers"), GARBAGE)
async def test_garbage_is_a_short_400_with_the_secret_and_a_404_without(
    stubs: Stubs,
    sending_store: StoreCtx,
    sidecar: str,
    http: httpx.AsyncClient,
    content: bytes,
    headers: dict[str, str],
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    short_error(await http.post(url, content=content, headers=headers), 400)
    # The secret first: without it nothing tells how (or whether) the body was read.
    for bad in (url[:-3] + "xyz", url.replace(f"/{sending_store.id}/", "/nosuchstore/")):
        short_error(await http.post(bad, content=content, headers=headers), 404)


async def test_a_body_over_max_body_is_413_for_anyone(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    for target in (url, url[:-3] + "xyz"):  # a limit of the transport, read before any secret
        short_error(await http.post(target, content=b"[" * (MAX_BODY + 1), headers=JSON), 413)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(MAX_BODY // 1024 + 1):
                yield b"x" * 1024

        short_error(await http.post(target, content=chunks(), headers=JSON), 413)


async def test_other_routes_and_methods_answer_short_json(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    short_error(await http.get(url), 405)
    short_error(await http.post(url + "/extra"), 404)
    short_error(await http.post(sidecar + "/instasent/callbacks/x"), 404)
    short_error(await http.post(sidecar + "/instasent/callbacks/Not_A_Store/secret", json={}), 404)


ODD_EVENT_TIMES: list[object] = [
    "0001-01-01T00:00:00+14:00",  # year 0 once in UTC
    "9999-12-31T23:59:59-14:00",  # year 10000 once in UTC
    "9999-12-31T23:59:59.999999-00:01",
    "2026-13-45T99:00:00Z",
    "garbage",
    "",
    "\u0000",
    "\ud800",
    "x" * 10_000,
    12345,
    1.5,
    None,
    True,
    ["2026-11-25T10:00:00Z"],
    {"at": "2026-11-25T10:00:00Z"},
]


async def test_an_odd_event_at_is_ignored_and_the_event_still_applies(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    for odd in ODD_EVENT_TIMES:
        body = json.dumps({"id": "nobody-knows", "status": "delivered", "eventAt": odd})  # ASCII: \ud800 too
        resp = await http.post(url, content=body.encode(), headers=JSON)
        assert (resp.status_code, resp.json()) == (200, {"outcome": "unknown_message"}), odd
    _, m = await sent_message(stubs, sending_store, "612 400 011")
    before = time.time()
    body = {"clientId": m.name.rsplit("/", 1)[1], "status": "delivered", "eventAt": "0001-01-01T00:00:00+14:00"}
    resp = await http.post(url, json=body)
    assert (resp.status_code, resp.json()) == (200, {"outcome": "applied"})
    got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=sending_store.md)
    assert got.status == common.MESSAGE_STATUS_DELIVERED
    assert got.delivery_time.seconds >= int(before) - 1  # the server's time stands in for eventAt


async def test_an_unknown_status_is_acknowledged_as_ignored_and_changes_nothing(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    _, m = await sent_message(stubs, sending_store, "612 400 012")
    body = {"id": m.provider_id, "clientId": m.name.rsplit("/", 1)[1], "status": "banana"}
    for _ in range(2):  # 2xx, so Instasent stops; not recorded, so the same answer every time
        resp = await http.post(url, json=body)
        assert (resp.status_code, resp.json()) == (200, {"outcome": "ignored"})
    # Judged before the message is looked for.
    assert (await http.post(url, json={"id": "nobody-knows", "status": "Banana"})).json() == {"outcome": "ignored"}
    short_error(await http.post(url[:-3] + "xyz", json=body), 404)
    got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=m.name), metadata=sending_store.md)
    assert got.status == common.MESSAGE_STATUS_SENT
    delivered = await http.post(url, json={**body, "status": "delivered"})
    assert delivered.json() == {"outcome": "applied"}


# The access log: the callback secret never appears, whatever the path looks like.

SECRET = "S3cr3t_" + "x" * 36  # shaped like new_callback_secret(); never a store id


def odd_paths(store: str, secret: str) -> list[str]:
    """Paths that are not quite the callback route but carry its secret."""
    return [
        f"/instasent/callbacks/{store}/{secret}",
        f"/instasent/callbacks//{store}/{secret}",
        f"/instasent/callbacks/{store}/x/{secret}",
        f"/instasent/callbacks/{store}/..%2F{secret}",
        f"/instasent/callbacks/{store}/%2e%2e/{secret}",
        f"/instasent/callbacks/{store}%2F{secret}",
        f"/instasent/callbacks/{store}/{secret}/",
        f"/instasent/callbacks/{store}/{secret}/extra",
        f"/instasent/callbacks/{store}/{secret}%00",
        f"/instasent/callbacks/{store};{secret}",
        f"/instasent/callbacks/{secret}",
        f"/instasent/callbacks/{secret}/",
        f"/instasent/callbacks/{secret}/{store}",
        f"//instasent/callbacks/{store}/{secret}",
        f"/instasent//callbacks/{store}/{secret}",
        f"/INSTASENT/CALLBACKS/{store}/{secret}",
        f"/Instasent/Callbacks/{store.upper()}/{secret}",
        f"/behind/a/proxy/instasent/callbacks/{store}/{secret}",
        f"/instasent/callback/{store}/{secret}",
        f"/instasent/{store}/{secret}",
        f"/{store}/{secret}",
    ]


@pytest.mark.parametrize(
    "path",
    [
        *odd_paths("acme", SECRET),
        f"/instasent/callbacks/acme/{SECRET}?x=1",
        f"/instasent/callbacks/acme?secret={SECRET}",
        f"/instasent/callbacks?{SECRET}",
        f"/instasent/callbacks/acme/{SECRET[:10]}/{SECRET[10:]}",
        f"/instasent/callbacks/acme/%2F{SECRET}",
    ],
)
def test_redact_masks_whatever_follows_the_store(path: str) -> None:
    assert SECRET not in redact(path)
    assert "***" in redact(path)


def test_redact_keeps_the_store_and_paths_without_a_secret() -> None:
    assert redact(f"/instasent/callbacks/acme/{SECRET}") == "/instasent/callbacks/acme/***"
    assert redact(f"/instasent/callbacks//acme/{SECRET}") == "/instasent/callbacks/***"
    for path in ("/healthz", "/", "", "/instasent/callbacks", "/instasent/callbacks/"):
        assert redact(path) == path


@given(before=st.text(max_size=30), between=st.text(max_size=30), after=st.text(max_size=30))
def test_redact_masks_the_secret_anywhere_after_callbacks(before: str, between: str, after: str) -> None:
    assert SECRET not in redact(f"{before}/instasent/callbacks{between}{SECRET}{after}")


@pytest.fixture
def sidecar_log() -> Iterator[list[logging.LogRecord]]:
    """The records of the sidecar's logger at every level, DEBUG included (our own handler: caplog is
    absent under `-p no:logging`)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger, handler = logging.getLogger("smschannel.sidecar"), Keep()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.setLevel(level)
    logger.removeHandler(handler)


def never_logged(secret: str, records: list[logging.LogRecord]) -> None:
    assert records, "the access log said nothing"
    for r in records:
        assert secret not in r.getMessage(), r.__dict__
        assert secret not in str(r.__dict__), r.__dict__


async def test_secret_never_logged_and_healthz(
    stubs: Stubs,
    sending_store: StoreCtx,
    sidecar: str,
    http: httpx.AsyncClient,
    sidecar_log: list[logging.LogRecord],
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    secret = url.rsplit("/", 1)[1]
    await http.post(url, json={"id": "x", "status": "delivered"})
    await http.post(url, content=b"{bad")
    assert any("/instasent/callbacks/" in str(getattr(r, "path", "")) for r in sidecar_log)
    never_logged(secret, sidecar_log)
    assert (await http.get(sidecar + "/healthz")).json() == {"status": "ok"}


async def test_the_secret_is_never_logged_whatever_the_path(
    stubs: Stubs,
    sending_store: StoreCtx,
    sidecar: str,
    http: httpx.AsyncClient,
    sidecar_log: list[logging.LogRecord],
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    secret = url.rsplit("/", 1)[1]
    paths = odd_paths(sending_store.id, secret)
    for path in paths:
        await http.post(sidecar + path, json={"id": "x", "status": "delivered"})
        await http.post(sidecar + path + f"?secret={secret}", content=b"\xff")
        await http.get(sidecar + path)
    assert len([r for r in sidecar_log if getattr(r, "path", None) is not None]) >= 3 * len(paths)
    never_logged(secret, sidecar_log)


# Random bodies, to a valid and an invalid callback URL: never a 500, never a traceback.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40) | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
FIELDS = ("id", "clientId", "status", "code", "eventAt", "message")
STATUSES = st.sampled_from(["sent", "delivered", "failed", "rejected", "stop", "unknown", "banana", "", " STOP "])
CALLBACK_LIKE = st.fixed_dictionaries({}, optional={k: JSON_VALUES | STATUSES for k in FIELDS})
FORM_PAIRS = st.lists(st.tuples(st.sampled_from(FIELDS), st.text(st.characters(codec="utf-8"), max_size=20)))
BODIES = st.one_of(
    st.binary(max_size=300),
    st.one_of(JSON_VALUES, CALLBACK_LIKE).map(lambda v: json.dumps(v).encode()),
    FORM_PAIRS.map(lambda pairs: urlencode(pairs).encode()),
)
CONTENT_TYPES = st.sampled_from(["", "application/json", "application/x-www-form-urlencoded", "text/plain"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, content_type=CONTENT_TYPES)
async def test_random_bodies_get_an_honest_answer(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    headers = {"content-type": content_type} if content_type else {}
    good = await http.post(url, content=body, headers=headers)
    assert good.status_code in (200, 400), good.text[:300]
    assert "Traceback" not in good.text
    if good.status_code == 200:
        assert list(good.json()) == ["outcome"]
    else:
        short_error(good, 400)
    short_error(await http.post(url[:-3] + "xyz", content=body, headers=headers), 404)


async def test_the_server_stays_healthy_after_garbage(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    for param in GARBAGE:
        content, headers = param.values
        await http.post(url, content=content, headers=headers)
    assert (await http.get(sidecar + "/healthz")).json() == {"status": "ok"}
    resp = await http.post(url, json={"id": "nobody-knows", "status": "delivered"})
    assert (resp.status_code, resp.json()) == (200, {"outcome": "unknown_message"})


async def test_a_server_that_cannot_be_reached_gets_503_quickly(app: App, http: httpx.AsyncClient) -> None:
    config = replace(app.config, grpc_addr="127.0.0.1:9")  # nothing listens there
    async with serve_in_loop(create_app(config)) as url:
        start = asyncio.get_running_loop().time()
        resp = await http.post(f"{url}/instasent/callbacks/s/secret", json={"id": "x", "status": "stop"})
        assert resp.status_code == 503
        assert asyncio.get_running_loop().time() - start < 5


async def test_callbacks_are_counted_in_order_under_concurrency(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    c, m = await sent_message(stubs, sending_store, "612 400 007")
    body = {"clientId": m.name.rsplit("/", 1)[1], "status": "stop"}
    answers = await asyncio.gather(*(http.post(url, json=body) for _ in range(20)))
    assert all(a.status_code == 200 for a in answers)

    async def one() -> bool:
        return len(await activities(stubs, sending_store, c.name, "SMS_UNSUBSCRIBE")) == 1

    await eventually(one, "one unsubscribe activity")
