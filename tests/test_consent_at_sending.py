"""Eligibility judged at the moment of sending (SPEC §5): a message that waits for a retry while
Instasent is down is sent only if its contact may still receive it, and only to the current number."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest
from google.protobuf import field_mask_pb2

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import StoreCtx, Stubs, create_store, eventually, set_channel
from .test_sending import MATRIX, MATRIX_IDS, NEWSLETTER, SUBSCRIBED, TRANSACTIONAL, content, message, send
from .test_sidecar import callback_url

ACTIVE = common.MOBILE_PHONE_STATUS_ACTIVE


async def outage_store(stubs: Stubs, fake: FakeInstasent) -> tuple[StoreCtx, str]:
    """A sending store with an Instasent token of its own, so its outage is its alone."""
    store = await create_store(stubs)
    token = f"consent-{uuid.uuid4().hex[:12]}"
    fake.add_token(token)
    await set_channel(stubs, store, default_country="ES", api_token=token, default_sender="Acme")
    return store, token


async def update(stubs: Stubs, store: StoreCtx, contact: cpb.Contact, *paths: str) -> cpb.Contact:
    return await stubs.contacts.UpdateContact(
        cpb.UpdateContactRequest(contact=contact, update_mask=field_mask_pb2.FieldMask(paths=paths)),
        metadata=store.md,
    )


async def queued_while_down(
    stubs: Stubs, fake: FakeInstasent, store: StoreCtx, token: str, contact: str, kind: int
) -> pb.Message:
    """A message made while Instasent answers 503/429, once the outbox has tried it at least once."""
    fake.down.add(token)
    text = await content(stubs, store, "Oferta {{unsubscribe}}")
    m = await send(stubs, store, sms_content=text.name, contact=contact, type=kind)
    assert m.status == common.MESSAGE_STATUS_QUEUED

    async def retrying() -> bool:
        return (await message(stubs, store, m.name)).status_reason.startswith("retrying")

    await eventually(retrying, "a failed attempt")
    return m


async def settled(stubs: Stubs, fake: FakeInstasent, store: StoreCtx, token: str, name: str) -> pb.Message:
    """Instasent back up: the message once it has left the outbox."""
    fake.down.discard(token)

    async def left() -> bool:
        return (await message(stubs, store, name)).status != common.MESSAGE_STATUS_QUEUED

    await eventually(left, f"{name} to leave the outbox")
    return await message(stubs, store, name)


def received_by(fake: FakeInstasent, token: str, name: str) -> list[str]:
    """The numbers Instasent got this message for."""
    client_id = name.rsplit("/", 1)[1]
    return [r.to for r in fake.received(token) if r.client_id == client_id]


@pytest.mark.parametrize(("phone_status", "subscription", "kind", "sent"), MATRIX, ids=MATRIX_IDS)
async def test_the_matrix_holds_at_the_hand_over(
    stubs: Stubs, fake: FakeInstasent, phone_status: int | None, subscription: int, kind: int, sent: bool
) -> None:
    """Queued while eligible; the contact then moves to the cell while Instasent is down."""
    store, token = await outage_store(stubs, fake)
    c = await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(
            parent=store.name, contact=cpb.Contact(mobile_phone="612 000 555", sms_subscription_status=SUBSCRIBED)
        ),
        metadata=store.md,
    )
    m = await queued_while_down(stubs, fake, store, token, c.name, kind)
    if phone_status is None:
        await update(stubs, store, cpb.Contact(name=c.name), "mobile_phone")
    else:
        await update(stubs, store, cpb.Contact(name=c.name, mobile_phone_status=phone_status), "mobile_phone_status")
    await update(
        stubs, store, cpb.Contact(name=c.name, sms_subscription_status=subscription), "sms_subscription_status"
    )
    final = await settled(stubs, fake, store, token, m.name)
    if sent:
        assert final.status == common.MESSAGE_STATUS_SENT
        assert received_by(fake, token, m.name) == ["+34612000555"]
    else:
        assert final.status == common.MESSAGE_STATUS_SKIPPED
        assert final.status_reason.startswith("at sending: ")
        assert received_by(fake, token, m.name) == []


async def test_a_stop_callback_lands_between_queueing_and_sending(
    stubs: Stubs, fake: FakeInstasent, sidecar: str
) -> None:
    store, token = await outage_store(stubs, fake)
    c = await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(
            parent=store.name, contact=cpb.Contact(mobile_phone="612 000 556", sms_subscription_status=SUBSCRIBED)
        ),
        metadata=store.md,
    )
    text = await content(stubs, store, "Hola {{unsubscribe}}")
    first = await send(stubs, store, sms_content=text.name, contact=c.name, type=NEWSLETTER)
    await eventually(lambda: _status_is(stubs, store, first.name, common.MESSAGE_STATUS_SENT), "the first SMS")
    newsletter = await queued_while_down(stubs, fake, store, token, c.name, NEWSLETTER)
    receipt = await queued_while_down(stubs, fake, store, token, c.name, TRANSACTIONAL)
    async with httpx.AsyncClient(timeout=10) as http:
        url = await callback_url(stubs, store, sidecar)
        answer = await http.post(url, json={"clientId": first.name.rsplit("/", 1)[1], "status": "stop"})
    assert answer.json() == {"outcome": "applied"}
    skipped = await settled(stubs, fake, store, token, newsletter.name)
    assert skipped.status == common.MESSAGE_STATUS_SKIPPED
    assert "UNSUBSCRIBED" in skipped.status_reason
    assert received_by(fake, token, newsletter.name) == []
    assert (await settled(stubs, fake, store, token, receipt.name)).status == common.MESSAGE_STATUS_SENT
    assert received_by(fake, token, receipt.name) == ["+34612000556"]


async def _status_is(stubs: Stubs, store: StoreCtx, name: str, status: int) -> bool:
    return (await message(stubs, store, name)).status == status


Change = Callable[[Stubs, StoreCtx, cpb.Contact], Awaitable[object]]


async def _delete(stubs: Stubs, store: StoreCtx, c: cpb.Contact) -> object:
    return await stubs.contacts.DeleteContact(cpb.DeleteContactRequest(name=c.name), metadata=store.md)


async def _clear_phone(stubs: Stubs, store: StoreCtx, c: cpb.Contact) -> object:
    return await update(stubs, store, cpb.Contact(name=c.name), "mobile_phone")


async def _new_number(stubs: Stubs, store: StoreCtx, c: cpb.Contact) -> object:
    return await update(stubs, store, cpb.Contact(name=c.name, mobile_phone="699 000 557"), "mobile_phone")


@pytest.mark.parametrize(
    ("change", "status", "to"),
    [
        pytest.param(_delete, common.MESSAGE_STATUS_SKIPPED, [], id="deleted"),
        pytest.param(_clear_phone, common.MESSAGE_STATUS_SKIPPED, [], id="phone_cleared"),
        pytest.param(_new_number, common.MESSAGE_STATUS_SENT, ["+34699000557"], id="new_number"),
    ],
)
async def test_a_deleted_contact_or_a_changed_number_at_the_hand_over(
    stubs: Stubs, fake: FakeInstasent, change: Change, status: int, to: list[str]
) -> None:
    store, token = await outage_store(stubs, fake)
    c = await stubs.contacts.CreateContact(
        cpb.CreateContactRequest(parent=store.name, contact=cpb.Contact(mobile_phone="612 000 557")),
        metadata=store.md,
    )
    m = await queued_while_down(stubs, fake, store, token, c.name, TRANSACTIONAL)
    assert m.recipient == "+34612000557"
    await change(stubs, store, c)
    final = await settled(stubs, fake, store, token, m.name)
    assert final.status == status
    assert received_by(fake, token, m.name) == to
    if to:  # the message records the number it went to, never the old one
        assert final.recipient == to[0]
