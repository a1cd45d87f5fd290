"""Hostile input is normal input: every RPC, fed requests derived from its protobuf descriptor (extreme
numbers, out-of-range Timestamps and Durations, long and invalid-UTF-8 strings sent as raw bytes,
malformed messages, huge lists and maps, unknown enum values), answers with a proper code — never
INTERNAL or UNKNOWN — with a bounded message and its x-request-id, and the server stays healthy."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import (
    descriptor,
    duration_pb2,
    field_mask_pb2,
    message,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from smschannel.instasent.fake import FakeInstasent
from smschannel.server import SERVICE_NAMES, App
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import ADMIN, Stubs, make_config

_FILES = (pb.DESCRIPTOR, cpb.DESCRIPTOR, wpb.DESCRIPTOR)
METHODS: list[tuple[str, descriptor.MethodDescriptor]] = [
    (service.full_name, method)
    for file in _FILES
    for service in file.services_by_name.values()
    if service.full_name in SERVICE_NAMES
    for method in service.methods
]
STORE = "hostile"
ROBUST = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
MAX_DETAILS = 2000  # characters of an error message a default client can still read in its trailers

# Strings that reach deep (real names of the store's resources, filters, phones), by field name, and
# strings that hurt.
RESOURCES = [
    f"stores/{STORE}",
    f"stores/{STORE}/contacts/c1",
    f"stores/{STORE}/smsContents/t1",
    f"stores/{STORE}/workflows/w1",
    f"stores/{STORE}/workflows/w1/runs/r1",
    f"stores/{STORE}/smsChannelConfig",
    f"stores/{STORE}/messages/m1",
    "stores/other/contacts/c1",
]
BY_FIELD = {
    "parent": [f"stores/{STORE}", f"stores/{STORE}/contacts/c1", f"stores/{STORE}/workflows/w1"],
    "name": RESOURCES,
    "contact": [f"stores/{STORE}/contacts/c1"],
    "sms_content": [f"stores/{STORE}/smsContents/t1"],
    "filter": [
        "state = ACTIVE",
        "mobile_phone_status = ACTIVE",
        'create_time > "9999-12-31T23:59:59.999999Z"',
        'create_time < "0001-01-01T00:00:00+14:00"',
        "type = SMS_SENT",
        "mobile_phone_status = ACTIVE AND",
        f'contact = "stores/{STORE}/contacts/c1"',
    ],
    "mobile_phone": ["+34612345678", "612345679", "+1 202 555 0143"],
    "alert_phone": ["+34612345678"],
    "phone": ["+34612345678"],
    "email": ["a@b.co", "c1@x.co"],
    "text": ["Hola {{name}} {{unsubscribe}}", "{{" * 500, "{{unsubscribe}}"],
    "default_country": ["ES", "US", "FR"],
    "status": ["stop", "delivered", "rejected"],
    "event_name": ["order_placed"],
    "start_node": ["n1"],
    "id": ["n1", "n2"],
    "next": ["n2", "n1", ""],
}
HURTFUL = ["x" * 6000, "é" * 3000, "\x00" * 10, "😀" * 1000, "\u202e" * 50, ""]
STRINGS = st.one_of(st.sampled_from(HURTFUL), st.text(max_size=40))


# The resource each method is about, read off its name: its `name`, and the `parent` it lives in.
RESOURCE_OF = {
    "Store": f"stores/{STORE}",
    "ApiKey": f"stores/{STORE}",
    "SmsChannelConfig": f"stores/{STORE}/smsChannelConfig",
    "CallbackSecret": f"stores/{STORE}/smsChannelConfig",
    "SmsContent": f"stores/{STORE}/smsContents/t1",
    "SmsContents": f"stores/{STORE}/smsContents/t1",
    "Message": f"stores/{STORE}/messages/m1",
    "Messages": f"stores/{STORE}/messages/m1",
    "Contact": f"stores/{STORE}/contacts/c1",
    "Contacts": f"stores/{STORE}/contacts/c1",
    "Activities": f"stores/{STORE}/contacts/c1/activities/a1",
    "Workflow": f"stores/{STORE}/workflows/w1",
    "Workflows": f"stores/{STORE}/workflows/w1",
    "WorkflowRun": f"stores/{STORE}/workflows/w1/runs/r1",
    "WorkflowRuns": f"stores/{STORE}/workflows/w1/runs/r1",
}


def _method_names(method: descriptor.MethodDescriptor) -> dict[str, list[str]]:
    """`name` and `parent` values that reach into the method's handler."""
    noun = method.name
    for verb in ("Create", "Get", "List", "Update", "Delete", "Activate", "Pause", "Rotate", "Import", "Upsert"):
        noun = noun.removeprefix(verb)
    resource = RESOURCE_OF.get(noun, f"stores/{STORE}")
    parent = resource.rsplit("/", 2)[0] if resource.count("/") > 1 else f"stores/{STORE}"
    return {"name": [resource], "parent": [parent]}


def _strings(field: descriptor.FieldDescriptor, names: dict[str, list[str]]) -> st.SearchStrategy[str]:
    good = names.get(field.name) or BY_FIELD.get(field.name)
    if good is None:
        return st.one_of(st.sampled_from(["c1", "w1", "t1", "Acme", "*"]), STRINGS)
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), STRINGS)


TIME_SECONDS = st.sampled_from([0, 1_800_000_000, -62_135_596_801, 253_402_300_800, 2**62, -(2**62), 2**63 - 1])
NANOS = st.sampled_from([0, 999_999_999, -1, 1_000_000_000, 2**31 - 1])
INTS = {
    descriptor.FieldDescriptor.TYPE_INT32: [0, 1, -1, 2**31 - 1, -(2**31)],
    descriptor.FieldDescriptor.TYPE_SINT32: [0, -1, 2**31 - 1, -(2**31)],
    descriptor.FieldDescriptor.TYPE_UINT32: [0, 1, 2**32 - 1],
    descriptor.FieldDescriptor.TYPE_INT64: [0, -1, 2**63 - 1, -(2**63)],
    descriptor.FieldDescriptor.TYPE_SINT64: [0, -1, 2**63 - 1, -(2**63)],
    descriptor.FieldDescriptor.TYPE_UINT64: [0, 2**64 - 1],
}
FLOATS = st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324])


def _json_values() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), FLOATS, STRINGS)  # NaN and Infinity included
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3), max_leaves=20
    )


def _special(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any] | None:
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return st.builds(lambda s, n: timestamp_pb2.Timestamp(seconds=s, nanos=n), TIME_SECONDS, NANOS)
    if name == "google.protobuf.Duration":
        seconds = st.sampled_from([0, 1, -1, 315_576_000_000, 315_576_000_001, 2**62])
        return st.builds(lambda s, n: duration_pb2.Duration(seconds=s, nanos=n), seconds, NANOS)
    if name == "google.protobuf.FieldMask":
        paths = st.sampled_from(["*", "display_name", "text", "mobile_phone", "nodes", "x" * 300, "a.b.c", ""])
        return st.lists(paths, max_size=4).map(lambda p: field_mask_pb2.FieldMask(paths=p))
    if name == "google.protobuf.Struct":
        return st.dictionaries(STRINGS, _json_values(), max_size=4).map(_struct)
    return None


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


def _scalar(
    field: descriptor.FieldDescriptor, depth: int, names: dict[str, list[str]], huge: bool = True
) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == descriptor.FieldDescriptor.TYPE_MESSAGE:
        special = _special(field)
        if special is not None:
            return special
        return messages(field.message_type, depth + 1, names, huge) if depth < 4 else st.just(None)
    if kind == descriptor.FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [999, -1])
    if kind == descriptor.FieldDescriptor.TYPE_STRING:
        return _strings(field, names)
    if kind == descriptor.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=40)
    if kind == descriptor.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT):
        return FLOATS
    return st.sampled_from(INTS.get(kind, [0, 1, -1]))


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    return field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _field(
    field: descriptor.FieldDescriptor, depth: int, names: dict[str, list[str]], huge: bool
) -> st.SearchStrategy[Any]:
    """`huge`: whether this field may be a huge list or map. Never inside another huge one: a thousand
    elements of a thousand elements each would be millions of messages to build in this process."""
    if _is_map(field):
        key = _scalar(field.message_type.fields_by_name["key"], depth, names)
        value = _scalar(field.message_type.fields_by_name["value"], depth, names)
        few = st.dictionaries(key, value, max_size=3)
        string_keys = field.message_type.fields_by_name["key"].type == descriptor.FieldDescriptor.TYPE_STRING
        big = _scalar(field.message_type.fields_by_name["value"], depth, names, huge=False)
        many = big.map(lambda v: {f"k{i}": v for i in range(2000)}) if string_keys and huge else st.nothing()
        return few | many
    if field.is_repeated:
        many = _scalar(field, depth, names, huge=False).map(lambda v: [v] * 1000) if huge else st.nothing()
        return st.lists(_scalar(field, depth, names, huge), max_size=3) | many
    return _scalar(field, depth, names, huge)


def messages(
    desc: descriptor.Descriptor, depth: int = 0, names: dict[str, list[str]] | None = None, huge: bool = True
) -> st.SearchStrategy[message.Message]:
    """Messages of `desc` with any subset of their fields set to hostile values (`names`: good values
    of the fields that name resources)."""
    names = names or {}
    # The fields that name the resource are always there: without them every call stops at the first check.
    keys = {f.name: _field(f, depth, names, huge) for f in desc.fields if f.name in ("parent", "name")}
    optional = {f.name: _field(f, depth, names, huge) for f in desc.fields if f.name not in keys}
    return st.fixed_dictionaries(keys, optional=optional).map(lambda values: _build(desc, values))


def _build(desc: descriptor.Descriptor, values: dict[str, Any]) -> message.Message:
    msg = message_factory.GetMessageClass(desc)()
    for name, value in values.items():
        field = desc.fields_by_name[name]
        try:
            target = getattr(msg, name)
            if _is_map(field):
                for k, v in value.items():
                    if field.message_type.fields_by_name["value"].type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                for v in value:
                    if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                        if v is not None:
                            target.add().CopyFrom(v)
                    else:
                        target.append(v)
            elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
                if value is not None:
                    target.CopyFrom(value)
            else:
                setattr(msg, name, value)
        except (TypeError, ValueError, OverflowError):
            continue  # a value this field's Python setter refuses: the wire can still carry others
    return msg


def _invalid_utf8(desc: descriptor.Descriptor) -> bytes:
    """A string field of the message carrying bytes that are not UTF-8 (Python setters refuse them)."""
    strings = [f for f in desc.fields if f.type == descriptor.FieldDescriptor.TYPE_STRING]
    field = strings[0] if strings else desc.fields[0]
    return bytes([field.number << 3 | 2, 4, 0xFF, 0xFE, 0xC0, 0x80])


WIRES = st.sampled_from(["as is"] * 7 + ["not utf-8", "truncated", "garbage"])


def _wire(msg: message.Message, how: str) -> bytes:
    data = msg.SerializeToString()
    if how == "not utf-8":
        return data + _invalid_utf8(msg.DESCRIPTOR)
    if how == "truncated":
        return data[:-1] + b"\x0a\xff\xff\xff" if data else b"\x0a\xff"
    if how == "garbage":
        return b"\xff\xff\xff\xff\x0f" + data
    return data


@pytest.fixture
async def hostile_app(tmp_path_factory: pytest.TempPathFactory, fake: FakeInstasent) -> AsyncIterator[App]:
    """A server of its own (the fuzzing leaves odd resources behind), with a store full of things."""
    app = await App.start(make_config(tmp_path_factory.mktemp("hostile"), instasent_base_url=fake.base_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            stubs = Stubs.on(ch)
            await stubs.sms.CreateStore(
                pb.CreateStoreRequest(store_id=STORE, store=pb.Store(display_name="H")), metadata=ADMIN
            )
            await stubs.sms.CreateSmsContent(
                pb.CreateSmsContentRequest(
                    parent=f"stores/{STORE}",
                    sms_content_id="t1",
                    sms_content=pb.SmsContent(display_name="T", text="Hola"),
                ),
                metadata=ADMIN,
            )
            send = wpb.Node(
                id="n1",
                send_sms=wpb.SendSmsNode(
                    sms_content=f"stores/{STORE}/smsContents/t1",
                    recipient_mode=common.RECIPIENT_MODE_CONTACT,
                    type=common.SMS_TYPE_TRANSACTIONAL,
                    sender="Acme",
                ),
            )
            await stubs.workflows.CreateWorkflow(
                wpb.CreateWorkflowRequest(
                    parent=f"stores/{STORE}",
                    workflow_id="w1",
                    workflow=wpb.Workflow(
                        display_name="W",
                        trigger=wpb.Trigger(event=wpb.EventTrigger(event_name="order_placed")),
                        start_node="n1",
                        nodes=[send],
                    ),
                ),
                metadata=ADMIN,
            )
            await stubs.contacts.CreateContact(
                cpb.CreateContactRequest(
                    parent=f"stores/{STORE}", contact_id="c1", contact=cpb.Contact(mobile_phone="+34612345678")
                ),
                metadata=ADMIN,
            )
        yield app
    finally:
        await app.stop(grace=1)


def _call(channel: grpc.Channel, service: str, method: descriptor.MethodDescriptor, data: list[bytes]) -> None:
    path = f"/{service}/{method.name}"
    try:
        if method.client_streaming:
            channel.stream_unary(path)(iter(data), metadata=ADMIN, timeout=20)
        else:
            channel.unary_unary(path)(data[0], metadata=ADMIN, timeout=20)
    except grpc.RpcError as e:
        code, details = e.code(), e.details() or ""  # type: ignore[attr-defined]
        trailers = dict(e.trailing_metadata() or ())  # type: ignore[attr-defined]
        assert code not in ROBUST, f"{path} answered {code.name}: {details[:300]}"
        assert code is not grpc.StatusCode.RESOURCE_EXHAUSTED, f"{path}: an answer too big for its client"
        assert len(details) <= MAX_DETAILS, f"{path}: a {len(details)}-character message"
        assert trailers.get("x-request-id"), f"{path} {code.name}: no x-request-id trailer"


async def test_every_rpc_answers_hostile_requests_with_a_proper_code(hostile_app: App) -> None:
    def fuzz() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{hostile_app.port}") as channel:

            @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(st.data())
            def one_call(data: st.DataObject) -> None:
                service, method = data.draw(st.sampled_from(METHODS), label="method")
                count = data.draw(st.integers(1, 3)) if method.client_streaming else 1
                wire = [
                    _wire(
                        data.draw(messages(method.input_type, names=_method_names(method)), label="request"),
                        data.draw(WIRES, label="wire"),
                    )
                    for _ in range(count)
                ]
                if sum(map(len, wire)) > 3_500_000:
                    reject()  # over gRPC's 4 MB limit: RESOURCE_EXHAUSTED is the transport's answer
                _call(channel, service, method, wire)

            one_call()
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            store = channel.unary_unary(
                "/smschannel.v1.SmsChannelService/GetStore",
                request_serializer=pb.GetStoreRequest.SerializeToString,
                response_deserializer=pb.Store.FromString,
            )(pb.GetStoreRequest(name=f"stores/{STORE}"), metadata=ADMIN, timeout=5)
            assert store.name == f"stores/{STORE}"

    await asyncio.to_thread(fuzz)


# -- cases seen in the field, each once --------------------------------------------------------------


@pytest.fixture
async def channel_to(hostile_app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hostile_app.port}") as ch:
        yield ch


async def test_a_6000_character_id_is_invalid_argument_a_default_client_can_read(channel_to: grpc.aio.Channel) -> None:
    stubs = Stubs.on(channel_to)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.contacts.GetContact(
            cpb.GetContactRequest(name=f"stores/{STORE}/contacts/{'x' * 6000}"), metadata=ADMIN
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(e.value.details() or "") < 300
    assert dict(e.value.trailing_metadata() or ()).get("x-request-id")


async def test_malformed_bytes_and_invalid_utf8_are_invalid_argument(channel_to: grpc.aio.Channel) -> None:
    get = channel_to.unary_unary("/smschannel.v1.ContactsService/GetContact")
    for data in (b"\xff\xff\xff", bytes([0x0A, 4, 0xFF, 0xFE, 0xC0, 0x80])):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await get(data, metadata=ADMIN)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
        assert "Error" not in (e.value.details() or "")  # no Python exception named


async def test_times_out_of_range_are_invalid_argument_and_one_bad_row_keeps_the_good_ones(
    channel_to: grpc.aio.Channel,
) -> None:
    stubs = Stubs.on(channel_to)
    listed = await stubs.sms.ListMessages(
        pb.ListMessagesRequest(parent=f"stores/{STORE}", filter='create_time > "9999-12-31T23:59:59.999999Z"'),
        metadata=ADMIN,
    )
    assert list(listed.messages) == []
    far = common.CustomFieldValue(timestamp_value=timestamp_pb2.Timestamp(seconds=2**62))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.contacts.CreateContact(
            cpb.CreateContactRequest(parent=f"stores/{STORE}", contact=cpb.Contact(custom_fields={"born": far})),
            metadata=ADMIN,
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def rows() -> AsyncIterator[cpb.ImportContactsRequest]:
        yield cpb.ImportContactsRequest(
            parent=f"stores/{STORE}",
            contacts=[
                cpb.Contact(email="good1@x.co"),
                cpb.Contact(email="bad@x.co", custom_fields={"born": far}),
                cpb.Contact(email="good2@x.co"),
            ],
        )

    answer = await stubs.contacts.ImportContacts(rows(), metadata=ADMIN)
    assert (answer.created_count, answer.failed_count) == (2, 1)
    assert [(r.row_number, r.field) for r in answer.errors] == [(2, "custom_fields.born")]


async def test_an_event_property_that_is_not_a_json_number_is_invalid_argument(channel_to: grpc.aio.Channel) -> None:
    stubs = Stubs.on(channel_to)
    for odd in (math.nan, math.inf, -math.inf):
        properties = struct_pb2.Struct()
        properties.update({"total": odd})
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.workflows.TriggerEvent(
                wpb.TriggerEventRequest(
                    parent=f"stores/{STORE}",
                    event_name="order_placed",
                    contact=f"stores/{STORE}/contacts/c1",
                    properties=properties,
                ),
                metadata=ADMIN,
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()


async def test_a_long_non_ascii_etag_is_answered_in_trailers_a_default_client_can_read(
    channel_to: grpc.aio.Channel,
) -> None:
    # Found by the descriptor fuzz: the stale-etag message quoted a 1,000-emoji etag whole, and
    # grpc-message percent-encodes each of its bytes: 12 KB of trailers, RESOURCE_EXHAUSTED.
    stubs = Stubs.on(channel_to)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.DeleteSmsContent(
            pb.DeleteSmsContentRequest(name=f"stores/{STORE}/smsContents/t1", etag="😀" * 1000), metadata=ADMIN
        )
    assert e.value.code() in (grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION), e.value.details()
    assert len((e.value.details() or "").encode()) <= 1000


async def test_an_api_token_that_cannot_be_an_http_header_is_invalid_argument(channel_to: grpc.aio.Channel) -> None:
    # Found by the descriptor fuzz: a token of U+202E reached httpx's header encoding (INTERNAL).
    stubs = Stubs.on(channel_to)
    for token in ("\u202e" * 50, "tök", "a\x7fb"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stubs.sms.UpdateSmsChannelConfig(
                pb.UpdateSmsChannelConfigRequest(
                    sms_channel_config=pb.SmsChannelConfig(name=f"stores/{STORE}/smsChannelConfig", api_token=token)
                ),
                metadata=ADMIN,
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()


async def test_a_text_of_nul_characters_is_a_proper_answer_on_every_backend(channel_to: grpc.aio.Channel) -> None:
    # Found by the descriptor fuzz on PostgreSQL: TEXT cannot hold U+0000, and psycopg's DataError
    # answered INTERNAL. SQLite stores it; PostgreSQL now answers INVALID_ARGUMENT, for writes and reads.
    stubs = Stubs.on(channel_to)
    for call in (
        stubs.sms.CreateApiKey(
            pb.CreateApiKeyRequest(parent=f"stores/{STORE}", api_key=pb.ApiKey(display_name="\x00" * 10)),
            metadata=ADMIN,
        ),
        stubs.sms.CreateSmsContent(
            pb.CreateSmsContentRequest(
                parent=f"stores/{STORE}", sms_content=pb.SmsContent(display_name="a\x00b", text="Hola")
            ),
            metadata=ADMIN,
        ),
    ):
        code, details = grpc.StatusCode.OK, ""
        try:
            await call
        except grpc.aio.AioRpcError as e:
            code, details = e.code(), e.details() or ""
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), details
