"""ImportContacts: streaming batches, per-row errors, summaries, idempotent re-runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest

from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as pb

from .conftest import StoreCtx, Stubs
from .rpc_errors import field_violations


def stream(parent: str, batches: Sequence[Sequence[pb.Contact]]) -> AsyncIterator[pb.ImportContactsRequest]:
    async def gen() -> AsyncIterator[pb.ImportContactsRequest]:
        for i, batch in enumerate(batches):
            yield pb.ImportContactsRequest(parent=parent if i == 0 else "", contacts=batch)

    return gen()


async def run_import(
    stubs: Stubs, store: StoreCtx, batches: Sequence[Sequence[pb.Contact]]
) -> pb.ImportContactsResponse:
    return await stubs.contacts.ImportContacts(stream(store.name, batches), metadata=store.md)


ROWS = [
    pb.Contact(email="r1@x.co", first_name="One", mobile_phone="612 000 101"),
    pb.Contact(
        email="r2@x.co",
        mobile_phone="+33 6 12 34 56 78",
        sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
    ),
    pb.Contact(email="r3@x.co", mobile_phone="12"),  # bad phone
    pb.Contact(email="bad-email", first_name="Four"),  # bad email
    pb.Contact(first_name="NoKey"),  # nothing to match on
    pb.Contact(email="r6@x.co", custom_fields={"plan": common.CustomFieldValue(string_value="pro")}),
]


async def test_bad_rows_are_reported_and_good_rows_kept(stubs: Stubs, es_store: StoreCtx) -> None:
    resp = await run_import(stubs, es_store, [ROWS[:2], ROWS[2:]])
    assert (resp.total_count, resp.created_count, resp.updated_count, resp.failed_count) == (6, 3, 0, 3)
    errors = {(e.row_number, e.field) for e in resp.errors}
    assert errors == {(3, "mobile_phone"), (4, "email"), (5, "email")}
    assert "'12'" in next(e.reason for e in resp.errors if e.row_number == 3)
    listed = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=es_store.name), metadata=es_store.md)
    by_email = {c.email: c for c in listed.contacts}
    assert set(by_email) == {"r1@x.co", "r2@x.co", "r6@x.co"}
    assert by_email["r1@x.co"].mobile_phone == "+34612000101"
    assert by_email["r2@x.co"].mobile_phone == "+33612345678"
    acts = await stubs.contacts.ListActivities(
        pb.ListActivitiesRequest(parent=by_email["r1@x.co"].name), metadata=es_store.md
    )
    assert [(a.type, a.source) for a in acts.activities] == [
        (common.ACTIVITY_TYPE_CONTACT_IMPORTED, common.ACTIVITY_SOURCE_IMPORT)
    ]


async def test_a_rerun_of_the_same_file_changes_nothing(stubs: Stubs, es_store: StoreCtx) -> None:
    await run_import(stubs, es_store, [ROWS])
    before = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=es_store.name), metadata=es_store.md)
    again = await run_import(stubs, es_store, [ROWS])
    assert (again.created_count, again.updated_count, again.unchanged_count, again.failed_count) == (0, 0, 3, 3)
    after = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=es_store.name), metadata=es_store.md)
    assert after == before  # same etags, same update times


async def test_rows_update_by_email_or_name_and_merge_only_present_fields(stubs: Stubs, es_store: StoreCtx) -> None:
    created = await stubs.contacts.CreateContact(
        pb.CreateContactRequest(
            parent=es_store.name, contact=pb.Contact(email="m@x.co", first_name="Old", last_name="Keep")
        ),
        metadata=es_store.md,
    )
    resp = await run_import(
        stubs,
        es_store,
        [
            [
                pb.Contact(email="m@x.co", first_name="New"),
                pb.Contact(name=created.name, mobile_phone="612 000 999"),
                pb.Contact(email="dup@x.co", first_name="A"),
                pb.Contact(email="dup@x.co", last_name="B"),  # same file, same contact
            ]
        ],
    )
    assert (resp.created_count, resp.updated_count, resp.failed_count) == (1, 3, 0)
    got = await stubs.contacts.GetContact(pb.GetContactRequest(name=created.name), metadata=es_store.md)
    assert (got.first_name, got.last_name, got.mobile_phone) == ("New", "Keep", "+34612000999")
    dup = await stubs.contacts.ListContacts(
        pb.ListContactsRequest(parent=es_store.name, filter="email = dup@x.co"), metadata=es_store.md
    )
    assert [(c.first_name, c.last_name) for c in dup.contacts] == [("A", "B")]


async def test_a_row_that_takes_another_contacts_email_fails_alone(stubs: Stubs, es_store: StoreCtx) -> None:
    a = await stubs.contacts.CreateContact(
        pb.CreateContactRequest(parent=es_store.name, contact=pb.Contact(email="a@x.co")), metadata=es_store.md
    )
    await stubs.contacts.CreateContact(
        pb.CreateContactRequest(parent=es_store.name, contact=pb.Contact(email="b@x.co")), metadata=es_store.md
    )
    resp = await run_import(stubs, es_store, [[pb.Contact(name=a.name, email="b@x.co"), pb.Contact(email="c@x.co")]])
    assert (resp.created_count, resp.failed_count) == (1, 1)
    assert resp.errors[0].row_number == 1
    assert resp.errors[0].field == "email"


async def test_many_rows_cross_batch_boundaries(stubs: Stubs, es_store: StoreCtx) -> None:
    rows = [pb.Contact(email=f"bulk{i}@x.co", mobile_phone=f"6{i:08d}") for i in range(2500)]
    resp = await run_import(stubs, es_store, [rows[i : i + 300] for i in range(0, len(rows), 300)])
    assert resp.total_count == 2500
    assert resp.created_count + resp.failed_count == 2500
    assert resp.failed_count == len(resp.errors)
    assert all(e.field == "mobile_phone" for e in resp.errors)


async def test_rows_parsed_by_the_workers_keep_their_numbers(stubs: Stubs, es_store: StoreCtx) -> None:
    # Messages of 60 rows go to the worker processes, several at once: numbering stays the stream's.
    rows = [pb.Contact(email=f"w{i}@x.co", mobile_phone=f"6{i:08d}") for i in range(1, 301)]
    rows[60] = pb.Contact(email="w61@x.co", mobile_phone="call me")
    rows[249] = pb.Contact(first_name="no key")
    resp = await run_import(stubs, es_store, [rows[i : i + 60] for i in range(0, len(rows), 60)])
    assert (resp.total_count, resp.created_count, resp.failed_count) == (300, 298, 2)
    assert [(e.row_number, e.field) for e in resp.errors] == [(61, "mobile_phone"), (250, "email")]
    found = await stubs.contacts.ListContacts(
        pb.ListContactsRequest(parent=es_store.name, filter='email = "w300@x.co"'), metadata=es_store.md
    )
    assert [c.mobile_phone for c in found.contacts] == ["+34600000300"]


async def test_an_empty_stream_or_a_second_store_is_invalid(
    stubs: Stubs, store: StoreCtx, other_store: StoreCtx
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stubs.contacts.ImportContacts(stream(store.name, []), metadata=store.md)
    assert "parent" in field_violations(empty.value)

    async def two_stores() -> AsyncIterator[pb.ImportContactsRequest]:
        yield pb.ImportContactsRequest(parent=store.name, contacts=[pb.Contact(email="z@x.co")])
        yield pb.ImportContactsRequest(parent=other_store.name, contacts=[pb.Contact(email="y@x.co")])

    with pytest.raises(grpc.aio.AioRpcError) as mixed:
        await stubs.contacts.ImportContacts(two_stores(), metadata=store.md)
    assert mixed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_import_into_another_store_is_not_found(stubs: Stubs, store: StoreCtx, other_store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.contacts.ImportContacts(stream(other_store.name, [[pb.Contact(email="q@x.co")]]), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_rows_naming_a_missing_contact_or_lifting_a_rejection_are_row_errors(
    stubs: Stubs, es_store: StoreCtx
) -> None:
    created = await run_import(
        stubs,
        es_store,
        [[pb.Contact(email="gone@x.co"), pb.Contact(email="rej@x.co", mobile_phone="612 000 301")]],
    )
    assert created.created_count == 2
    listed = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=es_store.name), metadata=es_store.md)
    gone, rejected = (
        sorted(listed.contacts, key=lambda c: c.email)[0],
        sorted(listed.contacts, key=lambda c: c.email)[1],
    )
    await stubs.contacts.DeleteContact(pb.DeleteContactRequest(name=gone.name), metadata=es_store.md)
    await stubs.contacts.UpdateContact(
        pb.UpdateContactRequest(
            contact=pb.Contact(name=rejected.name, mobile_phone_status=common.MOBILE_PHONE_STATUS_REJECTED)
        ),
        metadata=es_store.md,
    )
    resp = await run_import(
        stubs,
        es_store,
        [
            [
                pb.Contact(name=gone.name, first_name="Back"),  # deleted: never re-created
                pb.Contact(name=f"{es_store.name}/contacts/never", first_name="New"),
                pb.Contact(email="rej@x.co", mobile_phone_status=common.MOBILE_PHONE_STATUS_ACTIVE),
                pb.Contact(name=rejected.name, mobile_phone_status=common.MOBILE_PHONE_STATUS_PAUSED),
                pb.Contact(email="fresh@x.co"),
            ]
        ],
    )
    assert (resp.created_count, resp.updated_count, resp.failed_count) == (1, 0, 4)
    assert [(e.row_number, e.field) for e in resp.errors] == [
        (1, "name"),
        (2, "name"),
        (3, "mobile_phone_status"),
        (4, "mobile_phone_status"),
    ]
    assert "rejected" in resp.errors[2].reason
    listed = await stubs.contacts.ListContacts(pb.ListContactsRequest(parent=es_store.name), metadata=es_store.md)
    assert sorted(c.email for c in listed.contacts) == ["fresh@x.co", "rej@x.co"]
    assert all(
        c.mobile_phone_status != common.MOBILE_PHONE_STATUS_ACTIVE for c in listed.contacts if c.email == "rej@x.co"
    )


async def test_an_abandoned_import_is_logged_cancelled(
    stubs: Stubs, es_store: StoreCtx, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that goes away mid-stream: the access log says CANCELLED, not OK."""
    sent = asyncio.Event()

    async def rows() -> AsyncIterator[pb.ImportContactsRequest]:
        yield pb.ImportContactsRequest(parent=es_store.name, contacts=[pb.Contact(email="half@x.co")])
        sent.set()
        await asyncio.Event().wait()  # never finishes the stream

    with caplog.at_level(logging.INFO, logger="smschannel.rpc"):
        call = stubs.contacts.ImportContacts(rows(), metadata=es_store.md)
        await sent.wait()
        call.cancel()

        def logged() -> list[str]:
            return [
                str(getattr(r, "code", ""))
                for r in caplog.records
                if getattr(r, "method", "") == "/smschannel.v1.ContactsService/ImportContacts"
            ]

        for _ in range(200):
            if logged():
                break
            await asyncio.sleep(0.01)
    assert logged() == ["CANCELLED"]
