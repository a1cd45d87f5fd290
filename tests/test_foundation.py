"""Foundation: health, reflection, auth and tenancy, the error model."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from smschannel.server import App
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import ADMIN, StoreCtx, Stubs, auth, create_store
from .rpc_errors import field_violations, reason


async def test_health_is_serving_for_server_and_each_service(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "smschannel.v1.SmsChannelService", "smschannel.v1.ContactsService"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_three_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one() -> reflection_pb2.ServerReflectionRequest:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for resp in stub.ServerReflectionInfo(one()):
        names |= {s.name for s in resp.list_services_response.service}
    assert {
        "smschannel.v1.SmsChannelService",
        "smschannel.v1.ContactsService",
        "smschannel.v1.WorkflowService",
        "grpc.health.v1.Health",
    } <= names


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ((), "missing"),
        ((("authorization", "Bearer nope"),), "invalid"),
        ((("authorization", "Basic abc"),), "Bearer"),
        ((("authorization", "Bearer "),), "Bearer"),
    ],
)
async def test_missing_or_bad_key_is_unauthenticated(stubs: Stubs, metadata: tuple, why: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.GetStore(pb.GetStoreRequest(name="stores/x"), metadata=metadata)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert why in (e.value.details() or "")


# Every RPC of every service refuses an anonymous call, implemented or not.
ALL_RPCS = (
    [("sms", m.name, m.input_type._concrete_class) for m in pb.DESCRIPTOR.services_by_name["SmsChannelService"].methods]
    + [
        ("contacts", m.name, m.input_type._concrete_class)
        for m in cpb.DESCRIPTOR.services_by_name["ContactsService"].methods
    ]
    + [
        ("workflows", m.name, m.input_type._concrete_class)
        for m in wpb.DESCRIPTOR.services_by_name["WorkflowService"].methods
    ]
)


@pytest.mark.parametrize(("service", "method", "request_type"), ALL_RPCS, ids=[r[1] for r in ALL_RPCS])
async def test_every_rpc_requires_a_key(stubs: Stubs, service: str, method: str, request_type: type) -> None:
    rpc = getattr(getattr(stubs, service), method)

    async def rows():  # type: ignore[no-untyped-def]
        yield request_type()

    call = rpc(rows()) if method == "ImportContacts" else rpc(request_type())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_create_store_returns_a_working_key_once(stubs: Stubs) -> None:
    ctx = await create_store(stubs)
    got = await stubs.sms.GetStore(pb.GetStoreRequest(name=ctx.name), metadata=ctx.md)
    assert got.name == ctx.name
    assert got.display_name == ctx.id
    assert got.default_sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_NONE
    assert got.create_time.seconds > 0


async def test_create_store_keeps_the_default_subscription_status(stubs: Stubs) -> None:
    resp = await stubs.sms.CreateStore(
        pb.CreateStoreRequest(
            store_id="consenting",
            store=pb.Store(
                display_name="Consent",
                default_sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
            ),
        ),
        metadata=ADMIN,
    )
    assert resp.store.default_sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
    assert resp.api_key.startswith("sk_")


async def test_duplicate_store_is_already_exists(stubs: Stubs, store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.CreateStore(
            pb.CreateStoreRequest(store_id=store.id, store=pb.Store(display_name="again")), metadata=ADMIN
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_store_key_may_not_create_stores(stubs: Stubs, store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.CreateStore(
            pb.CreateStoreRequest(store_id="sneaky", store=pb.Store(display_name="x")), metadata=store.md
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_another_stores_resources_are_not_found(stubs: Stubs, store: StoreCtx, other_store: StoreCtx) -> None:
    for call in (
        stubs.sms.GetStore(pb.GetStoreRequest(name=other_store.name), metadata=store.md),
        stubs.sms.CreateApiKey(pb.CreateApiKeyRequest(parent=other_store.name), metadata=store.md),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # The same answer as a store that does not exist at all: nothing leaks.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.sms.GetStore(pb.GetStoreRequest(name="stores/nobody"), metadata=ADMIN)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_create_api_key_gives_a_second_working_key(stubs: Stubs, store: StoreCtx) -> None:
    key = await stubs.sms.CreateApiKey(
        pb.CreateApiKeyRequest(parent=store.name, api_key=pb.ApiKey(display_name="backend")),
        metadata=store.md,
    )
    assert key.name.startswith(f"{store.name}/apiKeys/")
    assert key.key.startswith("sk_")
    assert key.key != store.key
    got = await stubs.sms.GetStore(pb.GetStoreRequest(name=store.name), metadata=auth(key.key))
    assert got.name == store.name


async def test_keys_are_stored_hashed(app: App, store: StoreCtx) -> None:
    rows = await app.storage.db.fetch_all("SELECT key_hash FROM api_keys WHERE store_id = ?", (store.id,))
    assert rows
    assert all(store.key not in row["key_hash"] for row in rows)
    assert all(len(row["key_hash"]) == 64 for row in rows)


async def test_bad_input_is_invalid_argument_with_field_violations(stubs: Stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.CreateStore(pb.CreateStoreRequest(store_id="Bad Id!", store=pb.Store()), metadata=ADMIN)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(e.value)
    assert set(violations) == {"store_id", "store.display_name"}
    assert reason(e.value) == "INVALID_ARGUMENT"


async def test_bad_resource_name_names_the_field(stubs: Stubs, store: StoreCtx) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.GetStore(pb.GetStoreRequest(name="shops/1"), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name" in field_violations(e.value)


async def test_an_unexpected_exception_is_internal_without_internals(
    app: App, stubs: Stubs, store: StoreCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(store_id: str) -> None:
        raise RuntimeError("secret database path /var/lib/x")

    monkeypatch.setattr(app.storage.stores, "get", boom)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.sms.GetStore(pb.GetStoreRequest(name=store.name), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (e.value.details() or "")
    assert "request id" in (e.value.details() or "")
    monkeypatch.undo()
    got = await stubs.sms.GetStore(pb.GetStoreRequest(name=store.name), metadata=store.md)
    assert got.name == store.name  # still serving


async def test_every_answer_carries_its_request_id(stubs: Stubs, store: StoreCtx) -> None:
    call = stubs.sms.GetStore(pb.GetStoreRequest(name=store.name), metadata=(*store.md, ("x-request-id", "abc-123")))
    await call
    assert ("x-request-id", "abc-123") in tuple(await call.trailing_metadata())
