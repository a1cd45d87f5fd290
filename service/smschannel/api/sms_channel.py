"""SmsChannelService: stores and keys (the channel, contents and sending come with their issues)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from ..auth import Role, hash_key, new_store_key
from ..domain.stores import ApiKey, Store, new_store
from ..errors import InvalidArgument, NotFound
from ..names import ApiKeyName, StoreName, new_id
from ..storage import Storage
from ..v1 import sms_channel_service_pb2 as pb
from ..v1 import sms_channel_service_pb2_grpc as pb_grpc
from .convert import timestamp
from .interceptor import current_principal

__all__ = ["SmsChannelServicer"]


def store_to_proto(store: Store) -> pb.Store:
    """Store → proto."""
    return pb.Store(
        name=str(StoreName(store.id)),
        display_name=store.display_name,
        default_sms_subscription_status=int(store.default_sms_subscription_status),  # type: ignore[arg-type]
        create_time=timestamp(store.create_time),
    )


class SmsChannelServicer(pb_grpc.SmsChannelServiceServicer):
    """The SmsChannelService RPCs."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def CreateStore(
        self, request: pb.CreateStoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoreResponse:
        """Admin only: create a store and return its first key once."""
        current_principal().require(Role.ADMIN, "create stores")
        now = datetime.now(UTC)
        store = new_store(
            request.store_id,
            request.store.display_name,
            request.store.default_sms_subscription_status,
            now,
        )
        clear = new_store_key()
        key = ApiKey(store.id, new_id(), "first key", hash_key(clear), now)
        await self._storage.stores.create(store, key)
        return pb.CreateStoreResponse(store=store_to_proto(store), api_key=clear)

    async def GetStore(self, request: pb.GetStoreRequest, context: grpc.aio.ServicerContext) -> pb.Store:
        """Get a store the caller may see."""
        return store_to_proto(await self._get_store(StoreName.parse("name", request.name)))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext) -> pb.ApiKey:
        """Create another key for a store; the clear key is in this response only."""
        parent = StoreName.parse("parent", request.parent)
        await self._get_store(parent)
        display_name = request.api_key.display_name.strip()
        if len(display_name) > 200:
            raise InvalidArgument("api_key.display_name", "at most 200 characters")
        clear = new_store_key()
        key = ApiKey(parent.store, new_id(), display_name, hash_key(clear), datetime.now(UTC))
        await self._storage.stores.add_api_key(key)
        return pb.ApiKey(
            name=str(ApiKeyName(parent.store, key.id)),
            display_name=key.display_name,
            key=clear,
            create_time=timestamp(key.create_time),
        )

    async def _get_store(self, name: StoreName) -> Store:
        current_principal().check_store(name.store, str(name))
        store = await self._storage.stores.get(name.store)
        if store is None:
            raise NotFound(str(name))
        return store
