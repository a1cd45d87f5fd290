"""The send use case (SendSms and the workflow's Send SMS node): validate, decide, log, enqueue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..domain.channel import ChannelConfig, validate_sender
from ..domain.contacts import Contact
from ..domain.enums import MessageStatus, RecipientMode, SmsType
from ..domain.messages import Message, SmsContent
from ..domain.phones import country_of, normalize_phone
from ..domain.quiet_hours import phone_key
from ..domain.sending import (
    Rendered,
    VariableSource,
    capped,
    check_mappings,
    held_reason,
    hold_for,
    render_for,
    skip,
)
from ..domain.templates import marker_replacement
from ..errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, RequestIdReused, Violation, echo
from ..names import ChannelConfigName, ContactName, MessageName, SmsContentName, new_id
from ..records import record
from ..storage import Reach, Storage
from .channel import ChannelOps

__all__ = ["NO_TOKEN", "SendRequest", "Sender"]

log = logging.getLogger("smschannel.sending")

NO_TOKEN = "the store has no Instasent API token: set smsChannelConfig.api_token"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@record
class SendRequest:
    """Everything a send needs; `contact_id` for CONTACT mode, else `alert_phone` (ALERT mode)."""

    store_id: str
    content_id: str
    type: SmsType
    mappings: Mapping[str, VariableSource]
    sender: str = ""
    contact_id: str = ""
    alert_phone: str = ""
    request_id: str = ""
    workflow_id: str = ""
    workflow_node: str = ""
    workflow_run: str = ""
    event: Mapping[str, str] | None = None
    # The contact when the caller has just read it (a broadcast page), else read here; in ALERT mode
    # the workflow's contact, for contact fields in the text.
    contact: Contact | None = None


@dataclass
class _Lookups:
    """What a batch of sends reads or works out once: contents, channel configs, mappings already
    checked, senders already validated, and texts that are the same for every contact (a newsletter
    whose variables are literals): rendered and measured once per unsubscribe replacement."""

    contents: dict[tuple[str, str], SmsContent | None] = field(default_factory=dict)
    configs: dict[str, ChannelConfig] = field(default_factory=dict)
    checked: set[tuple[object, ...]] = field(default_factory=set)
    senders: dict[tuple[str, str], str] = field(default_factory=dict)
    constant: dict[tuple[object, ...], bool] = field(default_factory=dict)
    rendered: dict[tuple[object, ...], Rendered] = field(default_factory=dict)
    # The frequency cap: NEWSLETTER SMS each contact got in the period (+ those queued in this batch),
    # read once for a batch's contacts of each store that sets a cap.
    recent: dict[tuple[str, str], int] = field(default_factory=dict)
    recent_read: set[tuple[str, str]] = field(default_factory=set)
    now: datetime | None = None  # a batch is judged at one instant


@dataclass
class Sender:
    """Turns send requests into logged messages; QUEUED ones wake the dispatcher."""

    storage: Storage
    channel: ChannelOps
    clock: Callable[[], datetime] = field(default=_utcnow)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Told of each newly QUEUED message once it is committed (the dispatcher: no need to read it back).
    on_queued: Callable[[list[Message]], None] | None = None

    async def send(self, req: SendRequest) -> Message:
        """Log the message (QUEUED, SKIPPED with its reason, or FAILED) and return it.

        The same request id returns the first message and sends nothing more. No token: the message
        is logged as FAILED and the call is FAILED_PRECONDITION."""
        if req.request_id:
            first = await self.storage.messages.find_by_request(req.store_id, req.request_id)
            if first is not None:
                return self._answer(await self._replayed(first, req))
        prepared = await self.prepare(req)
        (stored,) = await self._store([prepared])
        if stored is not prepared:  # a concurrent call with this request id stored its message first
            stored = await self._replayed(stored, req)
        return self._answer(stored)

    async def preview(self, req: SendRequest) -> tuple[Message, bool]:
        """What `send` would answer, storing nothing and calling no one (a dry run, AIP-163): the
        message judged now (QUEUED, maybe with `hold_until`, or SKIPPED), or the first message of a
        request id already used; and whether it is that stored one."""
        if req.request_id:
            first = await self.storage.messages.find_by_request(req.store_id, req.request_id)
            if first is not None:
                return self._answer(await self._replayed(first, req)), True
        message, _ = await self.judge(req)
        return self._answer(message), False

    async def _replayed(self, first: Message, req: SendRequest) -> Message:
        """The first message of a request id, if `req` is that same request; else RequestIdReused."""
        if req.contact_id:
            same = first.recipient_mode is RecipientMode.CONTACT and first.contact_id == req.contact_id
        elif first.recipient_mode is RecipientMode.ALERT:
            config = await self.channel.get(req.store_id)
            try:
                same = first.recipient == normalize_phone("alert_phone", req.alert_phone, config.default_country)
            except InvalidArgument:
                same = False
        else:
            same = False
        same = same and (first.sms_content_id, first.type) == (req.content_id, req.type)
        if not same or (req.sender.strip() and req.sender.strip() != first.sender):
            name = str(MessageName(req.store_id, first.id))
            raise RequestIdReused(
                name,
                f"request_id {echo(req.request_id)} was used by another request"
                f" ({name}): use a new request id for a new SMS",
            )
        return first

    async def judge_many(self, requests: list[SendRequest]) -> list[tuple[Message, str] | DomainError]:
        """`judge` for many requests at once (what is read is read once), storing nothing: a workflow
        stores the messages with its runs, then tells `stored`."""
        judged: list[tuple[Message, str] | DomainError] = []
        lookups = _Lookups(now=self.clock())
        await self._read_recent(lookups, requests)
        for n, req in enumerate(requests):
            if n % 50 == 49:
                await asyncio.sleep(0)  # reads by key run inline: let other RPCs in between
            try:
                judged.append(await self.judge(req, lookups))
            except DomainError as e:
                judged.append(e)
        return judged

    async def judge_page(self, req: SendRequest, reaches: Sequence[Reach]) -> tuple[list[Message], list[int]] | None:
        """`judge` of one request sent to each of these contacts (the first step of a broadcast page),
        once per group of contacts it cannot tell apart: one template message per group, and each
        contact's group; the caller stamps each contact's own fields (PageSends). None when the text
        is not the same for every contact (a contact field in it): each is then judged on its own.

        A group is what `judge` reads of a contact: whether it has a phone, its phone status and
        subscription (eligibility), what quiet hours read of the number (`phone_key`), the unsubscribe
        text of its country (the size as delivered), and how many newsletters it got under the cap."""
        if not all(source.kind == "literal" for source in req.mappings.values()):
            return None
        lookups = _Lookups(now=self.clock())
        config = lookups.configs[req.store_id] = await self.channel.get(req.store_id)
        capped = config.rules.frequency_cap is not None and req.type is SmsType.NEWSLETTER
        if capped and reaches:
            await self._recent(lookups, req.store_id, {r.contact_id for r in reaches})
        groups: dict[tuple[object, ...], int] = {}
        templates: list[Message] = []
        members: list[int] = []
        for n, reach in enumerate(reaches):
            if n % 50 == 49:
                await asyncio.sleep(0)  # a page of new groups judges inline: let other RPCs in between
            phone = reach.mobile_phone
            key = (
                bool(phone),
                reach.mobile_phone_status,
                reach.sms_subscription_status,
                phone_key(phone, req.type, config.rules.quiet_hours),
                marker_replacement(country_of(phone)),
                lookups.recent.get((req.store_id, reach.contact_id), 0) if capped else 0,
            )
            group = groups.get(key)
            if group is None:
                contact = Contact(
                    req.store_id,
                    reach.contact_id,
                    mobile_phone=phone,
                    mobile_phone_status=reach.mobile_phone_status,
                    sms_subscription_status=reach.sms_subscription_status,
                )
                message, _ = await self.judge(replace(req, contact_id=reach.contact_id, contact=contact), lookups)
                group = groups[key] = len(templates)
                templates.append(message)
            members.append(group)
        return templates, members

    async def _read_recent(self, lookups: _Lookups, requests: list[SendRequest]) -> None:
        """For the frequency cap: what each contact of these NEWSLETTER sends got, one query a store."""
        contacts: dict[str, set[str]] = {}
        for req in requests:
            if req.type is SmsType.NEWSLETTER and req.contact_id:
                if req.store_id not in lookups.configs:
                    lookups.configs[req.store_id] = await self.channel.get(req.store_id)
                if lookups.configs[req.store_id].rules.frequency_cap is not None:
                    contacts.setdefault(req.store_id, set()).add(req.contact_id)
        for store_id, ids in contacts.items():
            await self._recent(lookups, store_id, ids)

    async def _recent(self, lookups: _Lookups, store_id: str, contact_ids: set[str]) -> None:
        cap = lookups.configs[store_id].rules.frequency_cap
        assert cap is not None
        lookups.recent_read.update((store_id, c) for c in contact_ids)
        counts = await self.storage.messages.newsletters_received(store_id, contact_ids, self.clock() - cap.period)
        lookups.recent.update(((store_id, c), n) for c, n in counts.items())

    async def _store(self, messages: list[Message]) -> list[Message]:
        stored = await self.storage.messages.add(messages) if messages else []
        self.stored(messages, stored)
        return stored

    async def rules_changed(self, store_id: str) -> None:
        """A store's time zone or quiet hours changed, with the outbox in a process of its own: what
        quiet hours held is due now, for it to judge again."""
        await self.storage.messages.release_held(store_id, self.clock())

    def stored(self, messages: list[Message], stored: list[Message]) -> None:
        """Once `messages` are committed, wherever they were written (here, or in a workflow's unit of
        work), as `stored`: the new QUEUED ones go to the outbox, and what quiet hours hold is logged."""
        # `add` answers a known request id with the first message (maybe sent long ago): only the
        # messages stored now, the very objects passed in, are new to the outbox.
        queued = [s for s, m in zip(stored, messages, strict=True) if s is m and s.status is MessageStatus.QUEUED]
        held = [m.hold_until for m in queued if m.hold_until is not None]
        if held:  # they go when their window opens, read from the outbox then
            log.info("held by quiet hours", extra={"count": len(held), "hold_until": min(held).isoformat()})
            queued = [m for m in queued if m.hold_until is None]
        if queued:
            if self.on_queued is not None:
                self.on_queued(queued)
            self.wakeup.set()

    async def prepare(self, req: SendRequest, lookups: _Lookups | None = None) -> Message:
        """The message a request makes, not yet stored: validated, eligibility decided, rendered."""
        message, _ = await self.judge(req, lookups)
        return message

    async def judge(self, req: SendRequest, lookups: _Lookups | None = None) -> tuple[Message, str]:
        """The message a request makes, not stored, and the code of why it is skipped (`Skip.code`,
        `no_token`; "" when QUEUED). What sending and the dry runs share."""
        lookups = lookups or _Lookups()
        key = (req.store_id, req.content_id)
        if key not in lookups.contents:
            lookups.contents[key] = await self.storage.sms_contents.get(*key)
        content = lookups.contents[key]
        if content is None:
            raise NotFound(str(SmsContentName(req.store_id, req.content_id)))
        if req.type is SmsType.UNSPECIFIED:
            raise InvalidArgument("type", "required: TRANSACTIONAL or NEWSLETTER")
        mode = RecipientMode.CONTACT if req.contact_id else RecipientMode.ALERT
        checked = (req.store_id, req.content_id, req.type, id(req.mappings), mode, req.event is not None)
        violations = (
            []
            if checked in lookups.checked
            else check_mappings(
                "variables",
                content.text,
                req.mappings,
                req.type,
                events=req.event is not None,
                contact=mode is RecipientMode.CONTACT or req.contact is not None,
            )
        )
        if violations:
            raise InvalidArgument.of(violations)
        lookups.checked.add(checked)
        if req.store_id not in lookups.configs:
            lookups.configs[req.store_id] = await self.channel.get(req.store_id)
        config = lookups.configs[req.store_id]
        sender = lookups.senders.get((req.store_id, req.sender))
        if sender is None:
            sender = req.sender.strip() or config.default_sender
            if not sender:
                raise InvalidArgument("sender", "required: name a sender or set smsChannelConfig.default_sender")
            lookups.senders[req.store_id, req.sender] = validate_sender("sender", sender)

        contact = req.contact
        skipped = None
        if mode is RecipientMode.CONTACT:
            if contact is None or contact.id != req.contact_id:
                contact = await self.storage.contacts.get(req.store_id, req.contact_id)
            if contact is None:
                raise NotFound(str(ContactName(req.store_id, req.contact_id)))
            skipped = skip(contact, req.type)
            recipient = contact.mobile_phone
        else:
            recipient = normalize_phone("alert_phone", req.alert_phone, config.default_country)
            if not recipient:
                raise InvalidArgument("alert_phone", "required: the alert phone, or a contact")

        now = lookups.now or self.clock()
        status, hold = MessageStatus.QUEUED, None
        counted = contact.id if contact is not None and mode is RecipientMode.CONTACT else None  # for the cap
        cap = config.rules.frequency_cap
        if counted and cap is not None and req.type is SmsType.NEWSLETTER and skipped is None:
            if (req.store_id, counted) not in lookups.recent_read:
                await self._recent(lookups, req.store_id, {counted})
            skipped = capped(req.type, lookups.recent.get((req.store_id, counted), 0), cap)
        reason, code = ("", "") if skipped is None else (skipped.text, skipped.code)
        if skipped is not None:
            status = MessageStatus.SKIPPED
        elif not config.has_token:
            status, reason, code = MessageStatus.FAILED, NO_TOKEN, "no_token"
        else:
            hold = hold_for(config.rules, recipient, req.type, now)
            reason = "" if hold is None else held_reason(hold)
            if counted and cap is not None and req.type is SmsType.NEWSLETTER:  # counts in this batch from now
                lookups.recent[req.store_id, counted] = lookups.recent.get((req.store_id, counted), 0) + 1
        rendered = self._rendered(lookups, checked, content, req, recipient, contact)
        if "\0" in rendered.text:  # from an event property or a literal: no SMS carries it, no database stores it
            raise InvalidArgument("variables", "a value put into the text holds the NUL character (U+0000)")
        return Message(
            store_id=req.store_id,
            id=new_id(),
            type=req.type,
            recipient_mode=mode,
            status=status,
            create_time=now,
            update_time=now,
            request_id=req.request_id,
            contact_id=contact.id if contact is not None and mode is RecipientMode.CONTACT else "",
            workflow_id=req.workflow_id,
            workflow_node=req.workflow_node,
            workflow_run=req.workflow_run,
            sms_content_id=content.id,
            status_reason=reason,
            recipient=recipient,
            sender=sender,
            text=rendered.text,
            encoding=rendered.size.encoding,
            segments=rendered.size.segments,
            next_attempt_time=(hold or now) if status is MessageStatus.QUEUED else None,
            hold_until=hold,
        ), code

    @staticmethod
    def _rendered(
        lookups: _Lookups,
        checked: tuple[object, ...],
        content: SmsContent,
        req: SendRequest,
        recipient: str,
        contact: Contact | None,
    ) -> Rendered:
        """The text for this recipient; a text made of literals only is rendered and measured once per
        unsubscribe replacement (a newsletter to 100,000 contacts renders it once or twice)."""
        constant = lookups.constant.get(checked)
        if constant is None:
            constant = lookups.constant[checked] = all(s.kind == "literal" for s in req.mappings.values())
        if not constant:
            return render_for(content.text, req.mappings, recipient, contact, req.event)
        key = (*checked, marker_replacement(country_of(recipient)))
        if key not in lookups.rendered:
            lookups.rendered[key] = render_for(content.text, req.mappings, recipient, None)
        return lookups.rendered[key]

    @staticmethod
    def _answer(message: Message) -> Message:
        """The message, or FAILED_PRECONDITION when it could not be sent for want of a token."""
        if message.status is MessageStatus.FAILED and message.status_reason == NO_TOKEN:
            subject = str(ChannelConfigName(message.store_id))
            raise FailedPrecondition(NO_TOKEN, [Violation("NO_PROVIDER_TOKEN", subject, NO_TOKEN)])
        return message
