"""The sidecar end to end: Instasent-format HTTP callbacks → sidecar → server → contacts and messages."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from smschannel.asgi import serve_in_loop
from smschannel.domain.contacts import Activity, Contact
from smschannel.domain.enums import ActivitySource
from smschannel.domain.stores import Store
from smschannel.instasent.fake import FakeInstasent
from smschannel.operations.contacts import ContactOps
from smschannel.server import App
from smschannel.sidecar.app import MAX_BODY, create_app
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


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"[1, 2]", {"content-type": "application/json"}, 400),
        (b'{"status": "delivered"}', {"content-type": "application/json"}, 400),  # no id
        (b'{"id": "x"}', {"content-type": "application/json"}, 400),  # no status
        (b"\xff\xfe", {"content-type": "application/json"}, 400),
        (b"x" * (MAX_BODY + 1), {"content-type": "application/json"}, 413),
    ],
)
async def test_bad_bodies(
    stubs: Stubs,
    sending_store: StoreCtx,
    sidecar: str,
    http: httpx.AsyncClient,
    content: bytes,
    headers: dict,
    status: int,
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    resp = await http.post(url, content=content, headers=headers)
    assert resp.status_code == status
    assert "Traceback" not in resp.text


async def test_secret_never_logged_and_healthz(
    stubs: Stubs, sending_store: StoreCtx, sidecar: str, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = await callback_url(stubs, sending_store, sidecar)
    secret = url.rsplit("/", 1)[1]
    with caplog.at_level(logging.INFO, logger="smschannel.sidecar"):
        await http.post(url, json={"id": "x", "status": "delivered"})
        await http.post(url, content=b"{bad")
    assert any("/instasent/callbacks/" in str(getattr(r, "path", "")) for r in caplog.records)
    assert all(secret not in r.getMessage() and secret not in str(r.__dict__) for r in caplog.records)
    assert (await http.get(sidecar + "/healthz")).json() == {"status": "ok"}


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
