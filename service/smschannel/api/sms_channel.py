"""SmsChannelService: stores and keys (the channel, contents and sending come with their issues)."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from ..auth import Role, hash_key, new_store_key
from ..domain.channel import ChannelConfig, validate_sender
from ..domain.phones import normalize_country
from ..domain.stores import ApiKey, Store, new_store
from ..errors import Aborted, FieldViolation, InvalidArgument, NotFound
from ..names import ApiKeyName, ChannelConfigName, StoreName, new_id
from ..operations.channel import ChannelChanges, ChannelOps
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


def config_to_proto(config: ChannelConfig, callback_url: str) -> pb.SmsChannelConfig:
    """ChannelConfig → proto. The token itself never leaves: only `has_token` and a masked hint."""
    return pb.SmsChannelConfig(
        name=str(ChannelConfigName(config.store_id)),
        provider=config.provider,  # type: ignore[arg-type]
        has_token=config.has_token,
        api_token_hint=config.token_hint,
        default_country=config.default_country,
        default_sender=config.default_sender,
        callback_url=callback_url,
        token_status=int(config.token_status),  # type: ignore[arg-type]
        token_status_message=config.token_status_message,
        account_balance=config.account_balance,
        update_time=timestamp(config.update_time),
        etag=config.etag,
    )


_CONFIG_FIELDS = ("api_token", "default_country", "default_sender", "provider")


def changes_from_proto(msg: pb.SmsChannelConfig, paths: set[str] | None) -> ChannelChanges:
    """What an UpdateSmsChannelConfig sets; every bad field reported at once."""
    prefix = "sms_channel_config."
    if paths is None:
        paths = {f for f in _CONFIG_FIELDS if getattr(msg, f)}
    violations: list[FieldViolation] = []
    values: dict[str, str] = {}
    for path in sorted(paths):
        try:
            if path == "api_token":
                token = msg.api_token.strip()
                if len(token) > 512 or any(c.isspace() for c in token):
                    raise InvalidArgument(prefix + path, "not an Instasent API token")
                values[path] = token
            elif path == "default_country":
                values[path] = normalize_country(prefix + path, msg.default_country)
            elif path == "default_sender":
                sender = msg.default_sender.strip()
                values[path] = sender and validate_sender(prefix + path, sender)
            elif path == "provider":
                if msg.provider not in (pb.PROVIDER_UNSPECIFIED, pb.PROVIDER_INSTASENT):
                    raise InvalidArgument(prefix + path, "INSTASENT is the only provider")
            else:
                raise InvalidArgument("update_mask", f"{path!r} is not a writable field of SmsChannelConfig")
        except InvalidArgument as e:
            violations.extend(e.violations)
    if violations:
        raise InvalidArgument.of(violations)
    return ChannelChanges(**values)


class SmsChannelServicer(pb_grpc.SmsChannelServiceServicer):
    """The SmsChannelService RPCs."""

    def __init__(self, storage: Storage, channel: ChannelOps) -> None:
        self._storage = storage
        self._channel = channel

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

    async def GetSmsChannelConfig(
        self, request: pb.GetSmsChannelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsChannelConfig:
        """The store's channel config (the token is never returned)."""
        name = ChannelConfigName.parse("name", request.name)
        await self._get_store(StoreName(name.store))
        config = await self._channel.get(name.store)
        return config_to_proto(config, self._channel.callback_url(config))

    async def UpdateSmsChannelConfig(
        self, request: pb.UpdateSmsChannelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsChannelConfig:
        """Save the config; a new token is checked with Instasent and the outcome is on the answer."""
        msg = request.sms_channel_config
        name = ChannelConfigName.parse("sms_channel_config.name", msg.name)
        await self._get_store(StoreName(name.store))
        changes = changes_from_proto(msg, set(request.update_mask.paths) or None)
        if msg.etag and msg.etag != (await self._channel.get(name.store)).etag:
            raise Aborted(f"{name} changed since etag {msg.etag}; get it again")
        config = await self._channel.update(name.store, changes)
        return config_to_proto(config, self._channel.callback_url(config))

    async def RotateCallbackSecret(
        self, request: pb.RotateCallbackSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsChannelConfig:
        """A new callback URL; the old one stops working."""
        name = ChannelConfigName.parse("name", request.name)
        await self._get_store(StoreName(name.store))
        config = await self._channel.rotate_secret(name.store)
        return config_to_proto(config, self._channel.callback_url(config))

    async def _get_store(self, name: StoreName) -> Store:
        current_principal().check_store(name.store, str(name))
        store = await self._storage.stores.get(name.store)
        if store is None:
            raise NotFound(str(name))
        return store
