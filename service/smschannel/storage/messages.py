"""The message log, which is also the outbox: the repository protocol and its records."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..domain.contacts import Activity
from ..domain.enums import MessageStatus, SmsType
from ..domain.messages import Message
from ..records import record
from .pages import Positioned

__all__ = ["MessageQuery", "MessageRepository", "MessageUpdate"]


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """ListMessages filters (None = any); `since` inclusive, `until` exclusive."""

    contact_id: str | None = None
    workflow_id: str | None = None
    sms_content_id: str | None = None
    type: SmsType | None = None
    status: MessageStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


@record
class MessageUpdate:
    """A status change of one message, applied only while it is in one of the `expect` statuses."""

    store_id: str
    message_id: str
    status: MessageStatus
    expect: frozenset[MessageStatus]
    time: datetime
    reason: str = ""
    provider_id: str | None = None
    send_time: datetime | None = None
    delivery_time: datetime | None = None
    next_attempt_time: datetime | None = None
    attempted: bool = False
    activity: Activity | None = None  # recorded only if the message changed
    # The contact's number changed while the message waited: it goes to, and records, the new one.
    recipient: str | None = None
    segments: int | None = None
    hold_until: datetime | None = None  # quiet hours hold it until then (kept once set)
    # Let go of this replica's claim: the message waits (a retry, quiet hours), and whichever outbox
    # reads it due then takes it, this one included, without waiting out the claim.
    release: bool = False
    # Statuses in which the message no longer takes `status` but still takes this update's record of
    # the send (provider id, send time, the attempt, recipient, segments) and its activity, its status
    # kept: Instasent's report (delivered, rejected) was applied before the answer of the request that
    # sent it was recorded.
    fill_from: frozenset[MessageStatus] = frozenset()


class MessageRepository(Protocol):
    """The message log, which is also the outbox (QUEUED messages)."""

    async def add(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages; one whose request id is known returns the first message instead."""
        ...

    async def get(self, store_id: str, message_id: str) -> Message | None:
        """The message, or None."""
        ...

    async def get_many(self, store_id: str, message_ids: Collection[str]) -> dict[str, Message]:
        """The messages with these ids, by id (absent when unknown)."""
        ...

    async def find_by_provider_ids(self, store_id: str, provider_ids: Collection[str]) -> dict[str, Message]:
        """The messages with these provider ids, by provider id (absent when unknown)."""
        ...

    async def find_by_request(self, store_id: str, request_id: str) -> Message | None:
        """The message created by this request id, or None."""
        ...

    async def page(
        self, store_id: str, query: MessageQuery, before: int | None, limit: int
    ) -> list[Positioned[Message]]:
        """Matching messages older than position `before`, newest first."""
        ...

    async def due(self, now: datetime, limit: int, own: bool = True) -> list[Message]:
        """QUEUED messages due by `now` that no other replica holds, oldest first, now held by this one
        for a while (a replica that dies lets go of them when that runs out). With `own` False, not
        those this replica already holds (its requests in flight) either."""
        ...

    async def hold(self, store_id: str, message_ids: Collection[str], now: datetime) -> set[str]:
        """Renew this replica's claims on these messages just before handing them to Instasent (taking
        run-out claims too); the ids it holds now. A message another replica took, or that is no
        longer QUEUED, is not among them: it must not be handed over from here."""
        ...

    async def next_due(self) -> datetime | None:
        """When the next QUEUED message is due."""
        ...

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        """Apply status changes (and the activities of those that changed) atomically; which changed
        (or took the record of a send: MessageUpdate.fill_from)."""
        ...

    async def count_by_status(self) -> dict[MessageStatus, int]:
        """How many messages of each status the log holds (for the metrics)."""
        ...

    async def newsletters_received(
        self, store_id: str, contact_ids: Collection[str], since: datetime
    ) -> dict[str, int]:
        """How many NEWSLETTER SMS each contact was sent (SENT or DELIVERED) since `since`, by an
        indexed query (the frequency cap); contacts with none are absent."""
        ...

    async def release_held(self, store_id: str, now: datetime) -> int:
        """Make the store's messages held by quiet hours due now, to be judged again (its rules
        changed); how many."""
        ...

    async def count_received(
        self,
        store_id: str,
        contact_id: str,
        content_id: str,
        sms_type: SmsType | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        """How many SMS the contact received (SENT or DELIVERED) matching, by an indexed query."""
        ...
