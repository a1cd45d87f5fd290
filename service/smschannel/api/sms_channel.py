"""SmsChannelService: proto in, use case (stores, SMS contents, the channel, sending, the log), proto out."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2

from ..auth import Role
from ..domain.analysis import analyze
from ..domain.channel import ChannelConfig, validate_sender
from ..domain.enums import SmsType
from ..domain.phones import normalize_country
from ..domain.stores import Store
from ..domain.templates import validate_text, variables_of
from ..errors import DomainError, FieldViolation, InvalidArgument, NotFound, echo
from ..names import (
    ApiKeyName,
    ChannelConfigName,
    ContactName,
    MessageName,
    SmsContentName,
    StoreName,
    new_id,
    validate_id,
)
from ..operations.channel import ChannelChanges, ChannelOps
from ..operations.messages import MessageLog, message_query
from ..operations.provider_events import EventOutcome, ProviderEvent, ProviderEvents
from ..operations.sending import Sender, SendRequest
from ..operations.sms_contents import CONTENT_FIELDS, SmsContentOps
from ..operations.stores import StoreOps
from ..operations.workflow_engine import WORKFLOW_REQUEST_PREFIX
from ..v1 import sms_channel_service_pb2 as pb
from ..v1 import sms_channel_service_pb2_grpc as pb_grpc
from .convert import time_from_proto, timestamp
from .interceptor import current_principal
from .messages_proto import content_to_proto, mappings_from_proto, message_to_proto
from .pagination import PageTokens, page_size
from .rules_proto import RULE_FIELDS, estimated_cost, fill_rules, populated_rules, rule_changes
from .status import code_of

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
    out = pb.SmsChannelConfig(
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
    fill_rules(out, config.rules)
    return out


_CONFIG_FIELDS = ("api_token", "default_country", "default_sender", "provider")


def changes_from_proto(msg: pb.SmsChannelConfig, paths: set[str] | None) -> ChannelChanges:
    """What an UpdateSmsChannelConfig sets; every bad field reported at once."""
    prefix = "sms_channel_config."
    if paths is None:
        paths = {f for f in _CONFIG_FIELDS if getattr(msg, f)} | populated_rules(msg)
    violations: list[FieldViolation] = []
    values: dict[str, Any] = {}
    for path in sorted(paths):
        try:
            if path in RULE_FIELDS:
                values[path] = rule_changes(msg, path, prefix)
            elif path == "api_token":
                token = msg.api_token.strip()
                # It travels in an HTTP header: printable ASCII only (the fuzz sent U+202E: INTERNAL).
                if len(token) > 512 or not all("!" <= c <= "~" for c in token):
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
                raise InvalidArgument("update_mask", f"{echo(path)} is not a writable field of SmsChannelConfig")
        except InvalidArgument as e:
            violations.extend(e.violations)
    if violations:
        raise InvalidArgument.of(violations)
    return ChannelChanges(**values)


_OUTCOMES = {
    "applied": pb.PROVIDER_EVENT_OUTCOME_APPLIED,
    "duplicate": pb.PROVIDER_EVENT_OUTCOME_DUPLICATE,
    "unknown_message": pb.PROVIDER_EVENT_OUTCOME_UNKNOWN_MESSAGE,
    "ignored": pb.PROVIDER_EVENT_OUTCOME_IGNORED,
}

MAX_EVENT_BATCH = 500


def _event_from_proto(request: pb.ReportProviderEventRequest, prefix: str) -> ProviderEvent:
    """A callback as the sidecar reported it."""
    parent = StoreName.parse(prefix + "parent", request.parent)
    has_time = request.HasField("event_time")
    return ProviderEvent(
        store_id=parent.store,
        callback_secret=request.callback_secret,
        status=request.status,
        provider_id=request.provider_id.strip(),
        client_id=request.client_id.strip(),
        code=request.code,
        event_time=time_from_proto(prefix + "event_time", request.event_time) if has_time else None,
    )


def _event_answer(store_id: str, outcome: EventOutcome) -> pb.ReportProviderEventResponse:
    return pb.ReportProviderEventResponse(
        outcome=_OUTCOMES[outcome.outcome],
        message=str(MessageName(store_id, outcome.message.id)) if outcome.message else "",
        contacts=list(outcome.contacts),
    )


def _failed_event(error: DomainError) -> pb.ProviderEventResult:
    return pb.ProviderEventResult(code=code_of(error), error_message=error.message[:300])


class SmsChannelServicer(pb_grpc.SmsChannelServiceServicer):
    """The SmsChannelService RPCs."""

    def __init__(
        self,
        stores: StoreOps,
        contents: SmsContentOps,
        messages: MessageLog,
        channel: ChannelOps,
        sender: Sender,
        events: ProviderEvents,
        tokens: PageTokens,
    ) -> None:
        self._stores = stores
        self._contents = contents
        self._messages = messages
        self._channel = channel
        self._sender = sender
        self._events = events
        self._tokens = tokens

    async def ReportProviderEvent(
        self, request: pb.ReportProviderEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportProviderEventResponse:
        """Apply one Instasent callback (the sidecar's provider-events key only)."""
        current_principal().require(Role.PROVIDER_EVENTS, "report provider events")
        event = _event_from_proto(request, "")
        return _event_answer(event.store_id, await self._events.apply(event))

    async def BatchReportProviderEvents(
        self, request: pb.BatchReportProviderEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchReportProviderEventsResponse:
        """Apply the callbacks the sidecar has in flight, in one transaction; one result each."""
        current_principal().require(Role.PROVIDER_EVENTS, "report provider events")
        if not 1 <= len(request.requests) <= MAX_EVENT_BATCH:
            raise InvalidArgument("requests", f"1 to {MAX_EVENT_BATCH} callbacks")
        results: list[pb.ProviderEventResult | None] = [None] * len(request.requests)
        events: list[tuple[int, ProviderEvent]] = []
        for i, one in enumerate(request.requests):
            try:
                events.append((i, _event_from_proto(one, f"requests[{i}].")))
            except DomainError as e:
                results[i] = _failed_event(e)
        outcomes = await self._events.apply_many([event for _, event in events])
        for (i, event), outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, DomainError):
                results[i] = _failed_event(outcome)
            else:
                results[i] = pb.ProviderEventResult(response=_event_answer(event.store_id, outcome))
        return pb.BatchReportProviderEventsResponse(results=[r for r in results if r is not None])

    # -- SMS contents ----------------------------------------------------------------------

    async def CreateSmsContent(
        self, request: pb.CreateSmsContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsContent:
        """Create an SMS content."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._get_store(parent)
        content_id = validate_id("sms_content_id", request.sms_content_id) if request.sms_content_id else new_id()
        msg = request.sms_content
        return content_to_proto(await self._contents.create(store, content_id, msg.display_name, msg.text))

    async def GetSmsContent(self, request: pb.GetSmsContentRequest, context: grpc.aio.ServicerContext) -> pb.SmsContent:
        """Get an SMS content."""
        name = SmsContentName.parse("name", request.name)
        store = await self._get_store(StoreName(name.store))
        return content_to_proto(await self._contents.get(store, name.sms_content))

    async def ListSmsContents(
        self, request: pb.ListSmsContentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSmsContentsResponse:
        """List SMS contents, oldest first."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._get_store(parent)
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent) or 0
        page = self._tokens.page(await self._contents.page(store, after, limit + 1), limit, request.parent)
        return pb.ListSmsContentsResponse(
            sms_contents=[content_to_proto(c) for c in page.items], next_page_token=page.next_page_token
        )

    async def UpdateSmsContent(
        self, request: pb.UpdateSmsContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SmsContent:
        """Update the display name and/or the text."""
        msg = request.sms_content
        name = SmsContentName.parse("sms_content.name", msg.name)
        store = await self._get_store(StoreName(name.store))
        # No mask: the fields sent. An unknown path is reported with the fields' own violations.
        paths = set(request.update_mask.paths) or {p for p in CONTENT_FIELDS if getattr(msg, p)}
        if paths == {"*"}:
            paths = set(CONTENT_FIELDS)
        content = await self._contents.update(store, name.sms_content, msg.etag, paths, msg.display_name, msg.text)
        return content_to_proto(content)

    async def DeleteSmsContent(
        self, request: pb.DeleteSmsContentRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Delete an SMS content; logged messages keep their text. Refused while an ACTIVE or PAUSED
        workflow sends or counts it (its runs would fail): pause it no more, edit or delete it first."""
        name = SmsContentName.parse("name", request.name)
        store = await self._get_store(StoreName(name.store))
        await self._contents.delete(store, name.sms_content, request.etag)
        return empty_pb2.Empty()

    async def AnalyzeSmsText(
        self, request: pb.AnalyzeSmsTextRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeSmsTextResponse:
        """Encoding, length and segments of a text; per country when it carries the marker."""
        parent = StoreName.parse("parent", request.parent)
        await self._get_store(parent)
        text = validate_text("text", request.text)
        analysis = analyze(text, [normalize_country("countries", c) for c in request.countries])
        return pb.AnalyzeSmsTextResponse(
            encoding=int(analysis.size.encoding),  # type: ignore[arg-type]
            length=analysis.size.length,
            segments=analysis.size.segments,
            variables=variables_of(text),
            has_unsubscribe_marker=analysis.has_marker,
            countries=[
                pb.CountryAnalysis(
                    country=c.country,
                    replacement=c.replacement,
                    encoding=int(c.size.encoding),  # type: ignore[arg-type]
                    length=c.size.length,
                    segments=c.size.segments,
                )
                for c in analysis.countries
            ],
        )

    # -- sending and the log -------------------------------------------------------------

    async def SendSms(self, request: pb.SendSmsRequest, context: grpc.aio.ServicerContext) -> pb.Message:
        """Send one SMS (or log why not); idempotent on request_id."""
        parent = StoreName.parse("parent", request.parent)
        await self._get_store(parent)
        if not request.request_id.strip() and not request.validate_only:
            raise InvalidArgument("request_id", "required: a unique id per send (e.g. a UUID), for safe retries")
        if len(request.request_id) > 64:
            raise InvalidArgument("request_id", "at most 64 characters")
        if request.request_id.strip().startswith(WORKFLOW_REQUEST_PREFIX):
            # The workflows' own sends use these ids: one taken here would stand in for a run's SMS.
            raise InvalidArgument("request_id", f"ids starting with {WORKFLOW_REQUEST_PREFIX!r} are the workflows'")
        content = SmsContentName.parse("sms_content", request.sms_content)
        if content.store != parent.store:
            raise NotFound(request.sms_content)
        contact_id = ""
        if request.WhichOneof("recipient") == "contact":
            contact = ContactName.parse("contact", request.contact)
            if contact.store != parent.store:
                raise NotFound(request.contact)
            contact_id = contact.contact
        elif request.WhichOneof("recipient") != "alert_phone":
            raise InvalidArgument("contact", "required: a contact (CONTACT mode) or an alert_phone (ALERT mode)")
        send = SendRequest(
            store_id=parent.store,
            content_id=content.sms_content,
            type=_sms_type(request.type),
            mappings=mappings_from_proto("variables", dict(request.variables)),
            sender=request.sender,
            contact_id=contact_id,
            alert_phone=request.alert_phone,
            request_id=request.request_id.strip(),
        )
        if not request.validate_only:
            return message_to_proto(await self._sender.send(send))
        message, stored = await self._sender.preview(send)
        answer = message_to_proto(message)
        if not stored:
            answer.name = ""  # a dry run's message is not stored: it has no name
        rules = (await self._channel.get(parent.store)).rules
        if (cost := estimated_cost(rules, message.recipient, message.segments)) is not None:
            answer.estimated_cost.CopyFrom(cost)
        return answer

    async def GetMessage(self, request: pb.GetMessageRequest, context: grpc.aio.ServicerContext) -> pb.Message:
        """Get a message of the log."""
        name = MessageName.parse("name", request.name)
        current_principal().check_store(name.store, name)
        return message_to_proto(await self._messages.get(name.store, name.message))

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMessagesResponse:
        """The log, newest first, filtered."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._get_store(parent)
        limit = page_size(request.page_size)
        before = self._tokens.decode(request.page_token, request.parent, request.filter)
        query = message_query(store.id, request.filter)
        rows = await self._messages.page(store, query, before, limit + 1)
        page = self._tokens.page(rows, limit, request.parent, request.filter)
        return pb.ListMessagesResponse(
            messages=[message_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def CreateStore(
        self, request: pb.CreateStoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateStoreResponse:
        """Admin only: create a store and return its first key once."""
        current_principal().require(Role.ADMIN, "create stores")
        msg = request.store
        store, issued = await self._stores.create(
            request.store_id, msg.display_name, msg.default_sms_subscription_status
        )
        return pb.CreateStoreResponse(store=store_to_proto(store), api_key=issued.clear)

    async def GetStore(self, request: pb.GetStoreRequest, context: grpc.aio.ServicerContext) -> pb.Store:
        """Get a store the caller may see."""
        return store_to_proto(await self._get_store(StoreName.parse("name", request.name)))

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext) -> pb.ApiKey:
        """Create another key for a store; the clear key is in this response only."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._get_store(parent)
        issued = await self._stores.create_api_key(store, request.api_key.display_name)
        return pb.ApiKey(
            name=str(ApiKeyName(issued.key.store_id, issued.key.id)),
            display_name=issued.key.display_name,
            key=issued.clear,
            create_time=timestamp(issued.key.create_time),
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
        config = await self._channel.update(name.store, changes, msg.etag)
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
        """The store, if the caller may see it."""
        current_principal().check_store(name.store, name)
        return await self._stores.get(name.store)


def _sms_type(value: int) -> SmsType:
    try:
        return SmsType(value)
    except ValueError:
        raise InvalidArgument("type", f"{value} is not an SmsType") from None
