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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..domain.enums import ActivitySource, ActivityType, MessageStatus
from ..domain.messages import Message, message_activity, provider_status
from ..domain.stores import Store
from ..errors import DomainError, InvalidArgument, NotFound
from ..names import CallbacksName, ContactName
from ..records import record
from ..storage import MessageUpdate, Mutation, Storage, Touched, UnitOfWork
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


@record
class ProviderEvent:
    """One callback as Instasent sent it."""

    store_id: str
    callback_secret: str
    status: str
    provider_id: str = ""
    client_id: str = ""
    code: str = ""
    event_time: datetime | None = None


@record
class EventOutcome:
    """What an event did: applied, duplicate, unknown_message or ignored; the message and contacts touched."""

    outcome: str
    message: Message | None = None
    contacts: tuple[str, ...] = ()


@record
class _PhoneChange:
    """A change to every contact of the store with this phone (a provider's opt-out or rejection)."""

    phone: str
    mutation: Mutation


@record
class _Change:
    """A provider event to record once, with its effects: applied only if (store, message id,
    status) was never recorded."""

    store_id: str
    message_id: str  # the key the event is recorded under, with its status
    status: str
    time: datetime
    updates: tuple[MessageUpdate, ...] = ()
    phone_change: _PhoneChange | None = None


@record
class _Effects:
    """What a provider event changed: each message update, and each contact with whether it changed."""

    messages: list[bool]
    contacts: list[Touched]


async def _apply_changes(changes: Sequence[_Change], tx: UnitOfWork) -> list[_Effects | None]:
    """The events' records and effects, as one unit of work. Each record goes first, so a duplicate
    (before, or earlier in the batch) changes nothing (None), and a failure leaves no record: the
    retried callbacks apply. The message updates of the batch are applied together, in order."""
    fresh = [await tx.provider_events.record(c.store_id, c.message_id, c.status, c.time) for c in changes]
    changed = iter(
        await tx.messages.update([u for c, new in zip(changes, fresh, strict=True) if new for u in c.updates])
    )
    effects: list[_Effects | None] = []
    for c, new in zip(changes, fresh, strict=True):
        if not new:
            effects.append(None)
            continue
        messages = [next(changed) for _ in c.updates]
        phone = c.phone_change
        contacts = await tx.contacts.apply_by_phone(c.store_id, phone.phone, phone.mutation) if phone else []
        effects.append(_Effects(messages, contacts))
    return effects


@record
class _Judged:
    """An event whose store and secret hold, with its status read."""

    event: ProviderEvent
    store: Store
    status: str
    new_status: MessageStatus | None


@dataclass
class ProviderEvents:
    """Applies provider callbacks for the sidecar."""

    storage: Storage
    channel: ChannelOps
    contacts: ContactOps
    clock: Callable[[], datetime] = field(default=_utcnow)
    observe: Callable[[str, str, int], None] | None = None  # (status, outcome, count) for metrics

    async def apply(self, event: ProviderEvent) -> EventOutcome:
        """Apply one callback. A wrong store or secret is NotFound, whichever it is.

        The store and the secret are checked before any field of the event: the sidecar relies on it
        to answer 404 to a wrong secret whatever the body (it reports a malformed one with an empty
        status, which is INVALID_ARGUMENT only behind the right secret)."""
        (outcome,) = await self.apply_many([event])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    async def apply_many(self, events: Sequence[ProviderEvent]) -> list[EventOutcome | DomainError]:
        """Apply callbacks of any stores, each as `apply` would, their effects in one transaction; each
        its outcome, or the error `apply` would raise for it (it does not stop the others)."""
        results: list[EventOutcome | DomainError | None] = [None] * len(events)
        counts: Counter[tuple[str, str]] = Counter()  # (status, outcome) → callbacks, for the metrics

        def done(status: str, outcome: EventOutcome) -> EventOutcome:
            counts[status, outcome.outcome] += 1
            return outcome

        judged: list[tuple[int, _Judged]] = []
        stores: dict[str, Store | None] = {}
        for i, event in enumerate(events):
            try:
                judged.append((i, await self._judge(event, stores)))
            except DomainError as e:
                results[i] = e
        found = await self._find_all(judged)
        now = self.clock()
        changes: list[tuple[int, str, Message, _Change]] = []
        for i, j in judged:
            if j.new_status is None and j.status != "stop":
                log.warning("unknown callback status", extra={"store": j.store.id, "status": j.status[:40]})
                results[i] = done("other", EventOutcome("ignored"))
            elif (message := found.get(i)) is None:
                log.warning("callback for no known message", extra={"store": j.store.id, "status": j.status})
                results[i] = done(j.status, EventOutcome("unknown_message"))
            else:
                changes.append((i, j.status, message, self._change(j, message, now)))
        # Every event's effects and its record in one transaction: each applied once, or not at all.
        batch = [c for _, _, _, c in changes]
        effects = await self.storage.atomically(lambda tx: _apply_changes(batch, tx), len(batch)) if batch else []
        for (i, status, message, _), effect in zip(changes, effects, strict=True):
            if effect is None:  # this (provider id, status) was applied before
                results[i] = done(status, EventOutcome("duplicate", message))
                continue
            contacts = tuple(str(ContactName(t.contact.store_id, t.contact.id)) for t in effect.contacts if t.changed)
            applied = any(effect.messages) or bool(contacts)
            results[i] = done(status, EventOutcome("applied" if applied else "duplicate", message, contacts))
        if self.observe is not None:
            for (status, outcome), count in counts.items():
                self.observe(status, outcome, count)
        return [r for r in results if r is not None]

    async def _judge(self, event: ProviderEvent, stores: dict[str, Store | None]) -> _Judged:
        """The event's store, checked against its secret, and its status; NotFound or InvalidArgument."""
        if event.store_id not in stores:
            stores[event.store_id] = await self.storage.stores.get(event.store_id)
        store = stores[event.store_id]
        if store is None or not hmac.compare_digest(
            event.callback_secret.encode(), (await self.channel.get(event.store_id)).callback_secret.encode()
        ):
            raise NotFound(str(CallbacksName(event.store_id)))  # whichever of the two is wrong
        status = event.status.strip().lower()
        if not status:
            raise InvalidArgument("status", "required: the callback's status")
        return _Judged(event, store, status, provider_status(status))

    async def _find_all(self, judged: list[tuple[int, _Judged]]) -> dict[int, Message]:
        """The message of each event (by its position) that has one to find: by clientId, else by
        Instasent's id, read a store at a time."""
        wanted = [(i, j) for i, j in judged if j.new_status is not None or j.status == "stop"]
        found: dict[int, Message] = {}
        for store_id in {j.store.id for _, j in wanted}:
            mine = [(i, j.event) for i, j in wanted if j.store.id == store_id]
            by_id = await self.storage.messages.get_many(store_id, {e.client_id for _, e in mine if e.client_id})
            missing = {e.provider_id for _, e in mine if e.provider_id and e.client_id not in by_id}
            by_provider = await self.storage.messages.find_by_provider_ids(store_id, missing) if missing else {}
            for i, e in mine:
                message = by_id.get(e.client_id) or by_provider.get(e.provider_id)
                if message is not None:
                    found[i] = message
        return found

    def _change(self, j: _Judged, message: Message, now: datetime) -> _Change:
        """What the event does to its message and to the contacts of the message's phone."""
        updates: list[MessageUpdate] = []
        change = None
        if j.status == "stop":
            change = _PhoneChange(message.recipient, self.contacts.unsubscribe_change(j.store, ActivitySource.PROVIDER))
        elif j.new_status is not None:
            updates.append(self._update(message, j.new_status, j.event, now))
            if j.new_status is MessageStatus.REJECTED:
                reject = self.contacts.reject_change(j.store, ActivitySource.PROVIDER)
                change = _PhoneChange(message.recipient, reject)
        # Keyed on our message id, which never changes: Instasent's id is set by the first report, so a
        # repeat of that report keyed on it would be a new event.
        return _Change(j.store.id, message.id, j.status, now, tuple(updates), change)

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
