"""Provider callbacks (SPEC §6, §9): opt-outs, rejections and delivery reports, applied once.

An event's effects (a message's status, the contacts of a phone) and its record are one transaction,
the record first: a repeated callback changes nothing, and a failure leaves no record, so
Instasent's retry applies it. Each effect is also idempotent on its own (an unsubscribed contact
stays unsubscribed and records nothing more; a message status only moves forward).

A status that is none of SPEC §9's words is `ignored`: acknowledged (a non-2xx answer would have
Instasent retry it forever) but neither applied nor recorded, since it has nothing to apply once;
its repeat is `ignored` again, and it is counted under the status `other` so that whoever holds
a callback URL cannot mint metric labels.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..domain.enums import ActivitySource, ActivityType, MessageStatus
from ..domain.messages import Message, message_activity, provider_status
from ..errors import InvalidArgument, NotFound
from ..names import ContactName
from ..storage import MessageUpdate, PhoneChange, Storage
from .channel import ChannelOps
from .contacts import ContactOps

__all__ = ["EventOutcome", "ProviderEvent", "ProviderEvents"]

log = logging.getLogger("smschannel.provider_events")

# From which statuses each reported status may move a message: never backwards.
_EXPECT = {
    MessageStatus.SENT: frozenset({MessageStatus.QUEUED}),
    MessageStatus.DELIVERED: frozenset({MessageStatus.QUEUED, MessageStatus.SENT}),
    MessageStatus.FAILED: frozenset({MessageStatus.QUEUED, MessageStatus.SENT}),
    MessageStatus.REJECTED: frozenset({MessageStatus.QUEUED, MessageStatus.SENT}),
}
_ACTIVITY = {
    MessageStatus.DELIVERED: ActivityType.SMS_DELIVERED,
    MessageStatus.FAILED: ActivityType.SMS_FAILED,
    MessageStatus.REJECTED: ActivityType.SMS_FAILED,
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One callback as Instasent sent it."""

    store_id: str
    callback_secret: str
    status: str
    provider_id: str = ""
    client_id: str = ""
    code: str = ""
    event_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What an event did: applied, duplicate, unknown_message or ignored; the message and contacts touched."""

    outcome: str
    message: Message | None = None
    contacts: tuple[str, ...] = ()


@dataclass
class ProviderEvents:
    """Applies provider callbacks for the sidecar."""

    storage: Storage
    channel: ChannelOps
    contacts: ContactOps
    clock: Callable[[], datetime] = field(default=_utcnow)
    observe: Callable[[str, str], None] | None = None  # (status, outcome) for metrics

    async def apply(self, event: ProviderEvent) -> EventOutcome:
        """Apply one callback. A wrong store or secret is NotFound, whichever it is.

        The store and the secret are checked before any field of the event: the sidecar relies on it
        to answer 404 to a wrong secret whatever the body (it reports a malformed one with an empty
        status, which is INVALID_ARGUMENT only behind the right secret)."""
        not_found = NotFound(f"stores/{event.store_id}/callbacks")
        store = await self.storage.stores.get(event.store_id)
        if store is None:
            raise not_found
        config = await self.channel.get(event.store_id)
        if not hmac.compare_digest(event.callback_secret.encode(), config.callback_secret.encode()):
            raise not_found
        status = event.status.strip().lower()
        if not status:
            raise InvalidArgument("status", "required: the callback's status")
        new_status = provider_status(status)
        if new_status is None and status != "stop":
            log.warning("unknown callback status", extra={"store": event.store_id, "status": status[:40]})
            return self._done("other", EventOutcome("ignored"))
        message = await self._find(event)
        if message is None:
            log.warning("callback for no known message", extra={"store": event.store_id, "status": status})
            return self._done(status, EventOutcome("unknown_message"))
        key = message.provider_id or message.id
        now = self.clock()
        updates: list[MessageUpdate] = []
        change = None
        if status == "stop":
            change = PhoneChange(message.recipient, self.contacts.unsubscribe_change(store, ActivitySource.PROVIDER))
        elif new_status is not None:
            updates.append(self._update(message, new_status, event, now))
            if new_status is MessageStatus.REJECTED:
                reject = self.contacts.reject_change(store, ActivitySource.PROVIDER)
                change = PhoneChange(message.recipient, reject)
        # The effects and the event's record in one transaction: applied once, or not at all.
        effects = await self.storage.messages.apply_event(event.store_id, key, status, now, updates, change)
        if effects is None:  # this (provider id, status) was applied before
            return self._done(status, EventOutcome("duplicate", message))
        changed_contacts = tuple(str(ContactName(c.store_id, c.id)) for c, changed in effects.contacts if changed)
        applied = any(effects.messages) or bool(changed_contacts)
        return self._done(status, EventOutcome("applied" if applied else "duplicate", message, changed_contacts))

    async def _find(self, event: ProviderEvent) -> Message | None:
        if event.client_id:
            found = await self.storage.messages.get(event.store_id, event.client_id)
            if found is not None:
                return found
        if event.provider_id:
            return await self.storage.messages.find_by_provider_id(event.store_id, event.provider_id)
        return None

    @staticmethod
    def _update(message: Message, new: MessageStatus, event: ProviderEvent, now: datetime) -> MessageUpdate:
        kind = _ACTIVITY.get(new)
        reason = f"Instasent: {event.status}" + (f" (code {event.code})" if event.code else "")
        return MessageUpdate(
            message.store_id,
            message.id,
            new,
            _EXPECT[new],
            now,
            reason="" if new in (MessageStatus.SENT, MessageStatus.DELIVERED) else reason,
            provider_id=event.provider_id or None,
            delivery_time=(event.event_time or now) if new is MessageStatus.DELIVERED else None,
            activity=message_activity(message, kind, now, reason) if kind else None,
        )

    def _done(self, status: str, outcome: EventOutcome) -> EventOutcome:
        if self.observe is not None:
            self.observe(status, outcome.outcome)
        return outcome
