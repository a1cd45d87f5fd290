"""ContactsService end to end through a real channel."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2

from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as pb

from .conftest import StoreCtx, Stubs, create_store, set_channel
from .rpc_errors import field_violations, reason

ACTIVE = common.MOBILE_PHONE_STATUS_ACTIVE
REJECTED = common.MOBILE_PHONE_STATUS_REJECTED
PAUSED = common.MOBILE_PHONE_STATUS_PAUSED
SUBSCRIBED = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
UNSUBSCRIBED = common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
NONE = common.SMS_SUBSCRIPTION_STATUS_NONE


async def create(stubs: Stubs, store: StoreCtx, contact_id: str = "", **fields: object) -> pb.Contact:
    return await stubs.contacts.CreateContact(
        pb.CreateContactRequest(parent=store.name, contact_id=contact_id, contact=pb.Contact(**fields)),  # type: ignore[arg-type]
        metadata=store.md,
    )


async def activities(stubs: Stubs, store: StoreCtx, contact: str, flt: str = "") -> list[pb.Activity]:
    resp = await stubs.contacts.ListActivities(
        pb.ListActivitiesRequest(parent=contact, filter=flt, page_size=1000), metadata=store.md
    )
    return list(resp.activities)


async def test_create_normalises_a_national_phone_with_the_default_country(stubs: Stubs, es_store: StoreCtx) -> None:
    c = await create(stubs, es_store, email=" Ana@Example.COM ", first_name="Ana", mobile_phone="612 34 56 78")
    assert c.name.startswith(f"{es_store.name}/contacts/")
    assert c.email == "ana@example.com"
    assert c.mobile_phone == "+34612345678"
    assert c.mobile_phone_status == ACTIVE
    assert c.sms_subscription_status == NONE
    assert c.etag
    got = await stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=es_store.md)
    assert got == c
    acts = await activities(stubs, es_store, c.name)
    assert [a.type for a in acts] == [common.ACTIVITY_TYPE_CONTACT_CREATED]
    assert acts[0].source == common.ACTIVITY_SOURCE_API


async def test_a_national_number_without_default_country_is_invalid_argument_saying_so(
    stubs: Stubs, store: StoreCtx
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(stubs, store, mobile_phone="612345678")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "default country" in field_violations(e.value)["contact.mobile_phone"]
    ok = await create(stubs, store, mobile_phone="+34612345678")
    assert ok.mobile_phone == "+34612345678"


async def test_every_bad_field_is_reported_at_once(stubs: Stubs, es_store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(
            stubs,
            es_store,
            email="not-an-email",
            mobile_phone="12",
            custom_fields={"bad key": common.CustomFieldValue(string_value="x")},
        )
    violations = field_violations(e.value)
    assert {"contact.email", "contact.mobile_phone", "contact.custom_fields.bad key"} <= set(violations)
    assert "'12'" in violations["contact.mobile_phone"]


async def test_email_is_unique_per_store_but_not_across_stores(stubs: Stubs, es_store: StoreCtx) -> None:
    await create(stubs, es_store, email="dup@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(stubs, es_store, email="DUP@example.com")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    other = await create_store(stubs)
    assert (await create(stubs, other, email="dup@example.com")).email == "dup@example.com"


async def test_chosen_ids_and_already_exists(stubs: Stubs, store: StoreCtx) -> None:
    c = await create(stubs, store, "c-1", first_name="A")
    assert c.name == f"{store.name}/contacts/c-1"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create(stubs, store, "c-1")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await create(stubs, store, "Not Valid")
    assert "contact_id" in field_violations(bad.value)


async def test_custom_fields_of_every_type_round_trip(stubs: Stubs, store: StoreCtx) -> None:
    fields = {
        "tier": common.CustomFieldValue(string_value="gold"),
        "points": common.CustomFieldValue(number_value=12.5),
        "vip": common.CustomFieldValue(bool_value=True),
        "birthday": common.CustomFieldValue(timestamp_value={"seconds": 946684800}),
    }
    c = await create(stubs, store, custom_fields=fields)
    got = await stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=store.md)
    assert dict(got.custom_fields) == fields


async def update(stubs: Stubs, store: StoreCtx, contact: pb.Contact, paths: list[str] | None = None) -> pb.Contact:
    return await stubs.contacts.UpdateContact(
        pb.UpdateContactRequest(
            contact=contact, update_mask=field_mask_pb2.FieldMask(paths=paths) if paths is not None else None
        ),
        metadata=store.md,
    )


async def test_update_with_a_mask_changes_only_those_fields(stubs: Stubs, es_store: StoreCtx) -> None:
    c = await create(stubs, es_store, first_name="Ana", last_name="Pérez", mobile_phone="612345678")
    new = await update(stubs, es_store, pb.Contact(name=c.name, first_name="Anna", last_name=""), ["first_name"])
    assert new.first_name == "Anna"
    assert new.last_name == "Pérez"
    cleared = await update(stubs, es_store, pb.Contact(name=c.name), ["last_name"])
    assert cleared.last_name == ""
    assert cleared.etag != new.etag


async def test_a_new_number_resets_rejected_but_keeps_paused(stubs: Stubs, es_store: StoreCtx) -> None:
    rejected = await create(stubs, es_store, mobile_phone="612345678", mobile_phone_status=REJECTED)
    assert rejected.mobile_phone_status == REJECTED
    changed = await update(
        stubs, es_store, pb.Contact(name=rejected.name, mobile_phone="699 999 999"), ["mobile_phone"]
    )
    assert changed.mobile_phone == "+34699999999"
    assert changed.mobile_phone_status == ACTIVE
    paused = await create(stubs, es_store, mobile_phone="612345679", mobile_phone_status=PAUSED)
    still = await update(stubs, es_store, pb.Contact(name=paused.name, mobile_phone="+34 699 999 998"))
    assert still.mobile_phone_status == PAUSED
    acts = await activities(stubs, es_store, rejected.name, "type = PHONE_STATUS_CHANGED")
    assert acts[0].details["old_status"] == "REJECTED"
    assert acts[0].details["status"] == "ACTIVE"


async def test_a_rejected_number_cannot_be_made_active_or_paused(stubs: Stubs, es_store: StoreCtx) -> None:
    c = await create(stubs, es_store, email="rej@x.co", mobile_phone="612345670", mobile_phone_status=PAUSED)
    c = await update(stubs, es_store, pb.Contact(name=c.name, mobile_phone_status=REJECTED))
    for status in (ACTIVE, PAUSED):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await update(stubs, es_store, pb.Contact(name=c.name, mobile_phone_status=status))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(e.value) == "PHONE_REJECTED"
        assert "+34612345670" in (e.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.contacts.UpsertContactInfo(
                pb.UpsertContactInfoRequest(
                    parent=es_store.name, contact_info=pb.Contact(email="rej@x.co", mobile_phone_status=status)
                ),
                metadata=es_store.md,
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The store's pause outlived the rejection: a new number reads PAUSED, not ACTIVE.
    moved = await update(stubs, es_store, pb.Contact(name=c.name, mobile_phone="699 000 001"), ["mobile_phone"])
    assert moved.mobile_phone_status == PAUSED
    cleared = await update(stubs, es_store, pb.Contact(name=c.name), ["mobile_phone"])
    assert cleared.mobile_phone_status == common.MOBILE_PHONE_STATUS_UNSPECIFIED
    again = await update(stubs, es_store, pb.Contact(name=c.name, mobile_phone="699 000 002"), ["mobile_phone"])
    assert again.mobile_phone_status == PAUSED


async def test_stale_etag_is_aborted_and_current_etag_works(stubs: Stubs, store: StoreCtx) -> None:
    c = await create(stubs, store, first_name="A")
    await update(stubs, store, pb.Contact(name=c.name, first_name="B"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await update(stubs, store, pb.Contact(name=c.name, first_name="C", etag=c.etag))
    assert e.value.code() == grpc.StatusCode.ABORTED
    current = await stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=store.md)
    assert (await update(stubs, store, pb.Contact(name=c.name, first_name="C", etag=current.etag))).first_name == "C"


async def test_unknown_mask_path_is_invalid_argument(stubs: Stubs, store: StoreCtx) -> None:
    c = await create(stubs, store, first_name="A")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await update(stubs, store, pb.Contact(name=c.name), ["create_time"])
    assert "update_mask" in field_violations(e.value)


async def test_concurrent_updates_lose_nothing(stubs: Stubs, store: StoreCtx) -> None:
    c = await create(stubs, store)
    keys = [f"k{i}" for i in range(30)]
    await asyncio.gather(
        *(
            update(stubs, store, pb.Contact(name=c.name, custom_fields={k: common.CustomFieldValue(bool_value=True)}))
            for k in keys
        )
    )
    got = await stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=store.md)
    assert set(got.custom_fields) == set(keys)


async def test_delete_removes_the_contact_and_checks_the_etag(stubs: Stubs, store: StoreCtx) -> None:
    c = await create(stubs, store, first_name="A")
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stubs.contacts.DeleteContact(pb.DeleteContactRequest(name=c.name, etag='W/"999"'), metadata=store.md)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    await stubs.contacts.DeleteContact(pb.DeleteContactRequest(name=c.name, etag=c.etag), metadata=store.md)
    for call in (
        stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=store.md),
        stubs.contacts.DeleteContact(pb.DeleteContactRequest(name=c.name), metadata=store.md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_stores_contacts_are_not_found(stubs: Stubs, store: StoreCtx, other_store: StoreCtx) -> None:
    c = await create(stubs, other_store, first_name="Theirs")
    calls = [
        stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=store.md),
        stubs.contacts.UpdateContact(pb.UpdateContactRequest(contact=pb.Contact(name=c.name)), metadata=store.md),
        stubs.contacts.DeleteContact(pb.DeleteContactRequest(name=c.name), metadata=store.md),
        stubs.contacts.ListActivities(pb.ListActivitiesRequest(parent=c.name), metadata=store.md),
        stubs.contacts.ListContacts(pb.ListContactsRequest(parent=other_store.name), metadata=store.md),
        stubs.contacts.CreateContact(pb.CreateContactRequest(parent=other_store.name), metadata=store.md),
        stubs.contacts.UnsubscribeSms(pb.UnsubscribeSmsRequest(parent=store.name, contact=c.name), metadata=store.md),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def list_all(stubs: Stubs, store: StoreCtx, flt: str = "", page_size: int = 0) -> list[pb.Contact]:
    out: list[pb.Contact] = []
    token = ""
    while True:
        resp = await stubs.contacts.ListContacts(
            pb.ListContactsRequest(parent=store.name, filter=flt, page_size=page_size, page_token=token),
            metadata=store.md,
        )
        out += resp.contacts
        token = resp.next_page_token
        if not token:
            return out


async def test_list_filters(stubs: Stubs, es_store: StoreCtx) -> None:
    a = await create(stubs, es_store, email="a@x.co", mobile_phone="612000001", sms_subscription_status=SUBSCRIBED)
    b = await create(stubs, es_store, email="b@x.co", mobile_phone="612000002", mobile_phone_status=PAUSED)
    c = await create(stubs, es_store, email="c@x.co")
    names = lambda cs: [x.name for x in cs]  # noqa: E731
    assert names(await list_all(stubs, es_store)) == [a.name, b.name, c.name]
    assert names(await list_all(stubs, es_store, "sms_subscription_status = SUBSCRIBED")) == [a.name]
    assert names(await list_all(stubs, es_store, "mobile_phone_status = MOBILE_PHONE_STATUS_PAUSED")) == [b.name]
    assert names(await list_all(stubs, es_store, 'mobile_phone = "612 000 002"')) == [b.name]
    assert names(await list_all(stubs, es_store, "email = C@X.CO")) == [c.name]
    assert (
        names(await list_all(stubs, es_store, "sms_subscription_status = NONE AND mobile_phone_status = ACTIVE")) == []
    )
    for bad in ("colour = red", "mobile_phone_status = GREEN", "email = a OR email = b"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await list_all(stubs, es_store, bad)
        assert "filter" in field_violations(e.value)


async def test_pagination_is_stable_while_contacts_are_added(stubs: Stubs, store: StoreCtx) -> None:
    first = [await create(stubs, store, first_name=str(i)) for i in range(7)]
    page1 = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=store.name, page_size=3), metadata=store.md)
    added = [await create(stubs, store, first_name=f"new{i}") for i in range(4)]
    rest = []
    token = page1.next_page_token
    while token:
        resp = await stubs.contacts.ListContacts(
            pb.ListContactsRequest(parent=store.name, page_size=3, page_token=token), metadata=store.md
        )
        rest += resp.contacts
        token = resp.next_page_token
    seen = [c.name for c in [*page1.contacts, *rest]]
    assert seen == [c.name for c in first + added]  # every contact once, in order


async def test_page_tokens_are_opaque_and_bound_to_their_query(stubs: Stubs, store: StoreCtx) -> None:
    for _ in range(3):
        await create(stubs, store)
    page = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=store.name, page_size=1), metadata=store.md)
    assert page.next_page_token
    for token, flt in (("garbage", ""), (page.next_page_token, "email = x@y.co")):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.contacts.ListContacts(
                pb.ListContactsRequest(parent=store.name, page_token=token, filter=flt), metadata=store.md
            )
        assert "page_token" in field_violations(e.value)
    with pytest.raises(grpc.aio.AioRpcError) as neg:
        await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=store.name, page_size=-1), metadata=store.md)
    assert "page_size" in field_violations(neg.value)


async def test_upsert_contact_info_by_email_creates_then_merges_only_present_fields(
    stubs: Stubs, es_store: StoreCtx
) -> None:
    first = await stubs.contacts.UpsertContactInfo(
        pb.UpsertContactInfoRequest(
            parent=es_store.name,
            contact_info=pb.Contact(email="tag@x.co", first_name="Tag", mobile_phone="612 111 222"),
        ),
        metadata=es_store.md,
    )
    assert first.created
    second = await stubs.contacts.UpsertContactInfo(
        pb.UpsertContactInfoRequest(
            parent=es_store.name,
            contact_info=pb.Contact(
                email="TAG@x.co", last_name="Added", custom_fields={"src": common.CustomFieldValue(string_value="web")}
            ),
        ),
        metadata=es_store.md,
    )
    assert not second.created
    c = second.contact
    assert c.name == first.contact.name
    assert (c.first_name, c.last_name, c.mobile_phone) == ("Tag", "Added", "+34612111222")
    assert c.custom_fields["src"].string_value == "web"
    acts = await activities(stubs, es_store, c.name)
    assert all(a.source == common.ACTIVITY_SOURCE_CONTACT_INFO_TAG for a in acts)
    by_name = await stubs.contacts.UpsertContactInfo(
        pb.UpsertContactInfoRequest(parent=es_store.name, contact_info=pb.Contact(name=c.name, first_name="Renamed")),
        metadata=es_store.md,
    )
    assert by_name.contact.first_name == "Renamed"
    assert by_name.contact.last_name == "Added"


async def test_upsert_contact_info_needs_a_key(stubs: Stubs, store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.contacts.UpsertContactInfo(
            pb.UpsertContactInfoRequest(parent=store.name, contact_info=pb.Contact(first_name="Nobody")),
            metadata=store.md,
        )
    assert "contact_info.email" in field_violations(e.value)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.contacts.UpsertContactInfo(
            pb.UpsertContactInfoRequest(
                parent=store.name, contact_info=pb.Contact(name=f"{store.name}/contacts/nope", first_name="X")
            ),
            metadata=store.md,
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unsubscribe_by_phone_reaches_every_contact_with_that_phone(stubs: Stubs, es_store: StoreCtx) -> None:
    a = await create(stubs, es_store, mobile_phone="612 555 001", sms_subscription_status=SUBSCRIBED)
    b = await create(stubs, es_store, mobile_phone="+34612555001", sms_subscription_status=SUBSCRIBED)
    other = await create(stubs, es_store, mobile_phone="612 555 002", sms_subscription_status=SUBSCRIBED)
    resp = await stubs.contacts.UnsubscribeSms(
        pb.UnsubscribeSmsRequest(parent=es_store.name, phone="0034 612 555 001"), metadata=es_store.md
    )
    assert sorted(resp.contacts) == sorted([a.name, b.name])
    assert resp.changed_count == 2
    for c in (a, b):
        got = await stubs.contacts.GetContact(pb.GetContactRequest(name=c.name), metadata=es_store.md)
        assert got.sms_subscription_status == UNSUBSCRIBED
        acts = await activities(stubs, es_store, c.name, "type = SMS_UNSUBSCRIBE")
        assert len(acts) == 1
        assert acts[0].source == common.ACTIVITY_SOURCE_API
    untouched = await stubs.contacts.GetContact(pb.GetContactRequest(name=other.name), metadata=es_store.md)
    assert untouched.sms_subscription_status == SUBSCRIBED
    again = await stubs.contacts.UnsubscribeSms(
        pb.UnsubscribeSmsRequest(parent=es_store.name, contact=a.name), metadata=es_store.md
    )
    assert again.changed_count == 0  # idempotent: no second activity
    assert len(await activities(stubs, es_store, a.name, "type = SMS_UNSUBSCRIBE")) == 1


async def test_activities_are_newest_first_and_paginate(stubs: Stubs, es_store: StoreCtx) -> None:
    c = await create(stubs, es_store, mobile_phone="612 777 000")
    for status in (SUBSCRIBED, UNSUBSCRIBED, SUBSCRIBED):
        await update(stubs, es_store, pb.Contact(name=c.name, sms_subscription_status=status))
    acts = await activities(stubs, es_store, c.name)
    assert [a.type for a in acts] == [
        common.ACTIVITY_TYPE_SMS_SUBSCRIBE,
        common.ACTIVITY_TYPE_SMS_UNSUBSCRIBE,
        common.ACTIVITY_TYPE_SMS_SUBSCRIBE,
        common.ACTIVITY_TYPE_CONTACT_CREATED,
    ]
    page = await stubs.contacts.ListActivities(
        pb.ListActivitiesRequest(parent=c.name, page_size=3), metadata=es_store.md
    )
    rest = await stubs.contacts.ListActivities(
        pb.ListActivitiesRequest(parent=c.name, page_size=3, page_token=page.next_page_token), metadata=es_store.md
    )
    assert [a.name for a in [*page.activities, *rest.activities]] == [a.name for a in acts]
    assert not rest.next_page_token


async def test_set_channel_default_country_applies_to_later_contacts(stubs: Stubs, store: StoreCtx) -> None:
    await set_channel(stubs, store, default_country="FR")
    c = await create(stubs, store, mobile_phone="06 12 34 56 78")
    assert c.mobile_phone == "+33612345678"
