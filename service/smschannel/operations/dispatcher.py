"""The outbox dispatcher: sends QUEUED messages to Instasent, at least once, and records the outcome.

Consent is judged at the moment of sending (SPEC §5): before every hand-over (the first, each retry,
after a restart) the contacts of the bulk request are read again, in one query, and the same
eligibility function as SendSms decides. A stop, pause, rejection or deletion that landed while the
message waited turns it SKIPPED with that reason; a changed number gets the SMS and is recorded on the
message, never the old one. (What lands during the provider call itself is too late for this message.)

Every message is in the database before any call to Instasent, and its id is the `clientId`, which
Instasent keeps unique: a message sent just before a crash is sent again after the restart, Instasent
answers that the clientId exists, and the message is recorded SENT. So each message reaches Instasent
exactly once whatever moment the process dies. Messages queued by this process are handed over in
memory (`offer`) so a newsletter is not read back from the outbox; the outbox is read for the rest
(retries, restarts, more than the hand-over holds). 429, 5xx and timeouts are retried with exponential
backoff honouring `X-RateLimit-Reset`; other 4xx fail the message with Instasent's message, and a 401
also flags the channel's token as invalid. Instasent's report of an SMS (its callback) may be applied
before the answer of the request that created it is recorded: the report's status stands, and the
answer still records the send (when, Instasent's id, the attempt, where it went, SMS_SENT).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from ..domain.channel import ChannelConfig
from ..domain.enums import ActivityType, MessageStatus, RecipientMode, SmsEncoding, SmsType
from ..domain.messages import Message, message_activity
from ..domain.sending import capped, held_reason, hold_for, measure_as_delivered, skip_reason
from ..instasent.client import MAX_BULK, Accepted, InstasentClient, ProviderError, Refused, SmsItem
from ..storage import MessageUpdate, Storage
from ..storage.priority import mark_background
from .background import nap, stop_task
from .channel import ChannelOps
from .sending import NO_TOKEN

__all__ = ["Dispatcher"]

log = logging.getLogger("smschannel.dispatcher")

_QUEUED = frozenset({MessageStatus.QUEUED})
# Where Instasent's report of an SMS (sent, delivered, failed, rejected) may have moved its message before
# the answer of the request that created it was recorded: that answer still records the send.
_REPORTED = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.REJECTED})
READY_MAX = 10_000  # messages handed over in memory; beyond that they wait in the outbox only
OUTBOX_READ_EVERY = timedelta(seconds=1)  # outbox reads while requests are in flight, at most
# An outbox process of its own (handed_over False) is told of nothing: it looks at the outbox this often
# when idle, and while its requests are in flight.
OUTBOX_POLL = 0.05
# A chunk that an outbox read claimed this recently goes without renewing its claim first; one that
# waited longer for a request slot (many stores' chunks from one read) is held again, as a chunk handed
# over in memory is: its claim may have run out and another replica taken it.
FRESH_CLAIM = timedelta(seconds=5)
# When what is due is held by another replica's claims: look again this soon (not in a tight loop).
CLAIMED_ELSEWHERE_PAUSE = timedelta(seconds=0.25)
_NEVER = datetime.min.replace(tzinfo=UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Dispatcher:
    """One background task per server process (or per outbox process), started and stopped by it."""

    storage: Storage
    channel: ChannelOps
    instasent: InstasentClient
    wakeup: asyncio.Event
    clock: Callable[[], datetime] = field(default=_utcnow)
    retry_base: float = 1.0  # seconds before the first retry; doubles each time
    retry_max: float = 300.0
    max_attempts: int = 15
    concurrency: int = 8  # provider requests in flight
    observe: Callable[[str, int], None] | None = None  # (outcome, count) for metrics
    # True: the engine and SendSms of this process hand their messages over (`offer`) and wake it. False:
    # it runs in a process of its own (`smschannel outbox`) and finds every message by reading the outbox,
    # every OUTBOX_POLL when idle; each read claims what it returns, so it never reads its own in flight.
    handed_over: bool = True
    _task: asyncio.Task[None] | None = None
    _in_flight: set[str] = field(default_factory=set)
    _ready: deque[Message] = field(default_factory=deque)  # handed over, not yet taken
    _ready_ids: set[str] = field(default_factory=set)
    _finished: set[str] = field(default_factory=set)  # recorded, left _in_flight since the last outbox read
    # Newsletters under a frequency cap on their way to Instasent, by (store, contact), not yet recorded
    # SENT: the cap counts them too (two chunks in flight at once must not both pass it).
    _capped_out: Counter[tuple[str, str]] = field(default_factory=Counter)
    _capped_ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    _last_read: datetime = _NEVER
    _reclaimed: bool = False  # its first read took back its claims from before a restart
    _stopping: bool = False

    def offer(self, messages: list[Message]) -> None:
        """Newly committed QUEUED messages, to send without reading them back (up to READY_MAX)."""
        for m in messages[: max(0, READY_MAX - len(self._ready))]:
            self._ready.append(m)
            self._ready_ids.add(m.id)
        self.wakeup.set()

    async def rules_changed(self, store_id: str) -> None:
        """A store's time zone or quiet hours changed: what they held is judged again now."""
        if await self.storage.messages.release_held(store_id, self.clock()):
            self.wakeup.set()

    def start(self) -> asyncio.Task[None]:
        """Start the loop; its task (it ends only when stopped)."""
        self._task = asyncio.create_task(self._run(), name="outbox-dispatcher")
        return self._task

    async def stop(self, grace: float) -> None:
        """Let the requests in flight finish (within `grace`), then stop. Unsent messages stay QUEUED."""
        self._stopping = True
        self.wakeup.set()
        await stop_task(self._task, grace)

    async def _run(self) -> None:
        mark_background()
        limiter = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task[None]] = set()
        while not self._stopping:
            room = (self.concurrency - len(pending)) * MAX_BULK
            due = self._take_ready(room)
            claimed_at = None if due else self.clock()  # a read's messages are claimed by it, now
            if not due and (not pending or not self.handed_over or self.clock() - self._last_read > OUTBOX_READ_EVERY):
                due = await self._read_due(room)  # while hand-overs are in flight, not on every turn
            if not due:
                if pending:  # what is due is already in flight: wait for a request to finish, or new work
                    self.wakeup.clear()
                    woken = asyncio.ensure_future(self.wakeup.wait())
                    await asyncio.wait(
                        {*pending, woken},
                        timeout=None if self.handed_over else OUTBOX_POLL,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    woken.cancel()
                else:
                    await self._sleep_until_due()
                continue
            by_store: dict[str, list[Message]] = defaultdict(list)
            for m in due:
                by_store[m.store_id].append(m)
            for store_id, messages in by_store.items():
                for i in range(0, len(messages), MAX_BULK):
                    chunk = messages[i : i + MAX_BULK]
                    self._in_flight.update(m.id for m in chunk)
                    await limiter.acquire()
                    task = asyncio.create_task(self._send(store_id, chunk, limiter, claimed_at))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            # Read again only when the outbox has room to fill: avoids re-reading rows in flight.
            while len(pending) >= self.concurrency and not self._stopping:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending)

    def _take_ready(self, room: int) -> list[Message]:
        taken: list[Message] = []
        while self._ready and len(taken) < room:
            m = self._ready.popleft()
            self._ready_ids.discard(m.id)
            taken.append(m)
        return taken

    async def _read_due(self, room: int) -> list[Message]:
        """Due messages from the outbox that this process does not hold. The read is a snapshot: a
        message whose request finished while it ran may still look QUEUED in it, hence `_finished`."""
        self._finished.clear()
        self._last_read = now = self.clock()
        # Its own claims are read too while messages are handed over (those were claimed when stored),
        # and once at the start of an outbox process (a restart takes its claims back at once).
        own = self.handed_over or not self._reclaimed
        try:
            if not self.handed_over and ((due_at := await self.storage.messages.next_due()) is None or due_at > now):
                return []  # an idle outbox process looks (a read), rather than claiming nothing (a write)
            due = await self.storage.messages.due(now, room + len(self._in_flight) if own else room, own)
        except Exception:
            log.exception("outbox: cannot read due messages")
            return []
        self._reclaimed = True
        held = self._in_flight | self._ready_ids | self._finished
        return [m for m in due if m.id not in held]

    async def _sleep_until_due(self) -> None:
        try:
            due, now = await self.storage.messages.next_due(), self.clock()
        except Exception:  # the database away a moment (a failover): look again soon, never stop
            log.warning("outbox: cannot read when the next message is due", exc_info=True)
            await asyncio.sleep(self.retry_base)
            return
        if due is not None and due <= now:  # due, yet the read found nothing: held by another replica
            due = now + CLAIMED_ELSEWHERE_PAUSE
        await nap(self.wakeup, due, now, 5.0 if self.handed_over else OUTBOX_POLL)

    async def _send(
        self, store_id: str, chunk: list[Message], limiter: asyncio.Semaphore, claimed_at: datetime | None
    ) -> None:
        recorded = False
        try:
            await self._deliver(store_id, chunk, claimed_at)
            recorded = True
        except Exception:
            log.exception("outbox: unexpected error; the messages stay queued", extra={"store": store_id})
            await self._let_go(chunk)
            await asyncio.sleep(self.retry_base)
        finally:
            ids = [m.id for m in chunk]
            for message_id in ids:
                if (key := self._capped_ids.pop(message_id, None)) is not None:
                    self._capped_out[key] -= 1
                    if not self._capped_out[key]:
                        del self._capped_out[key]
            self._in_flight.difference_update(ids)
            if recorded:  # an outbox read under way may still see them QUEUED; let go, they are (_let_go)
                self._finished.update(ids)
            limiter.release()

    async def _deliver(self, store_id: str, chunk: list[Message], claimed_at: datetime | None) -> None:
        """Hand a chunk over. `claimed_at`: when the outbox read that returned it claimed it, still
        QUEUED; unless that was within FRESH_CLAIM (or it was handed over in memory when stored), the
        claim is renewed and checked first."""
        config = await self.channel.get(store_id, fresh=True)  # another process may have changed it
        token = self.channel.token(config)
        if token is None:
            await self._fail(chunk, NO_TOKEN)
            return
        if claimed_at is None or self.clock() - claimed_at > FRESH_CLAIM:
            held = await self.storage.messages.hold(store_id, [m.id for m in chunk], self.clock())
            chunk = [m for m in chunk if m.id in held]  # another replica's now, or no longer queued: not here
        chunk = await self._still_eligible(store_id, chunk)
        chunk = await self._paced(config, chunk)
        if not chunk:
            return
        items = [
            SmsItem(m.id, m.sender, m.recipient, m.text, allow_unicode=m.encoding is SmsEncoding.UCS2) for m in chunk
        ]
        try:
            refused: list[Refused] = []
            if len(items) == 1:
                accepted = [await self.instasent.send(token, items[0])]
            else:
                accepted, refused = await self.instasent.send_bulk(token, items)
        except ProviderError as e:
            if e.retryable:
                await self._retry(chunk, e)
            else:
                if e.status == 401:
                    await self.channel.mark_token_invalid(store_id, e.message)
                await self._fail(chunk, f"Instasent {e.status}: {e.message}")
            return
        await self._record(chunk, accepted, refused, token)

    async def _let_go(self, chunk: list[Message]) -> None:
        """After an unexpected error: the chunk's messages still QUEUED are due again after `retry_base`,
        their claims let go, for the next outbox read to take (an outbox process's reads leave out its
        own claims: it would have waited for them to run out, CLAIM). A message that went meanwhile
        reaches Instasent once all the same: its clientId."""
        now = self.clock()
        when = now + timedelta(seconds=self.retry_base)
        reason = "retrying after an unexpected error"
        try:
            await self.storage.messages.update([self._put_off(m, now, when, reason, attempted=False) for m in chunk])
        except Exception:
            log.warning("outbox: cannot let go of the messages; they wait for their claims to run out", exc_info=True)

    async def _still_eligible(self, store_id: str, chunk: list[Message]) -> list[Message]:
        """The messages that may go now, judged on their contacts as they are now (one read for the
        chunk); the others are recorded SKIPPED with the reason, and a changed number is recorded."""
        contact_ids = {m.contact_id for m in chunk if m.recipient_mode is RecipientMode.CONTACT}
        if not contact_ids:
            return chunk
        reach = await self.storage.contacts.reach(store_id, contact_ids)
        now = self.clock()
        go: list[Message] = []
        changes: list[MessageUpdate] = []
        for m in chunk:
            if m.recipient_mode is not RecipientMode.CONTACT:
                go.append(m)
                continue
            contact = reach.get(m.contact_id)
            reason = "the contact was deleted" if contact is None else skip_reason(contact, m.type)
            if reason is not None:
                changes.append(
                    MessageUpdate(m.store_id, m.id, MessageStatus.SKIPPED, _QUEUED, now, reason=f"at sending: {reason}")
                )
                continue
            assert contact is not None
            if contact.mobile_phone != m.recipient:
                size = measure_as_delivered(m.text, contact.mobile_phone)
                m = replace(m, recipient=contact.mobile_phone, segments=size.segments)
                changes.append(
                    MessageUpdate(
                        m.store_id,
                        m.id,
                        MessageStatus.QUEUED,
                        _QUEUED,
                        now,
                        next_attempt_time=m.next_attempt_time or now,
                        recipient=m.recipient,
                        segments=m.segments,
                    )
                )
            go.append(m)
        if changes:
            changed = await self.storage.messages.update(changes)
            # A message that moved on meanwhile (not QUEUED any more) is not sent either.
            moved = {u.message_id for u, ok in zip(changes, changed, strict=True) if not ok}
            go = [m for m in go if m.id not in moved]
            self._count("skipped", sum(ok for u, ok in zip(changes, changed, strict=True) if u.recipient is None))
        return go

    async def _paced(self, config: ChannelConfig, chunk: list[Message]) -> list[Message]:
        """The messages the store's pace lets go now: the frequency cap is judged again (a NEWSLETTER
        that reaches it is SKIPPED), and quiet hours hold the rest until their window opens (QUEUED,
        with `hold_until`; consent and the cap are judged again then)."""
        rules, now = config.rules, self.clock()
        changes: list[MessageUpdate] = []
        go: list[Message] = []
        recent = await self._recent_newsletters(config, chunk, now)
        for m in chunk:
            counted = m.recipient_mode is RecipientMode.CONTACT and m.type is SmsType.NEWSLETTER
            if counted and (over := capped(m.type, recent.get(m.contact_id, 0), rules.frequency_cap)):
                changes.append(MessageUpdate(m.store_id, m.id, MessageStatus.SKIPPED, _QUEUED, now, reason=over.text))
                continue
            if (hold := hold_for(rules, m.recipient, m.type, now)) is not None:
                reason = held_reason(hold)
                changes.append(
                    MessageUpdate(
                        m.store_id,
                        m.id,
                        MessageStatus.QUEUED,
                        _QUEUED,
                        now,
                        reason,
                        next_attempt_time=hold,
                        hold_until=hold,
                        release=True,
                    )
                )
                continue
            if counted and rules.frequency_cap is not None:
                recent[m.contact_id] = recent.get(m.contact_id, 0) + 1
                key = (m.store_id, m.contact_id)
                self._capped_out[key] += 1
                self._capped_ids[m.id] = key
            go.append(m)
        if changes:
            changed = await self.storage.messages.update(changes)
            held = [u.hold_until for u, ok in zip(changes, changed, strict=True) if ok and u.hold_until is not None]
            self._count("skipped", sum(ok for u, ok in zip(changes, changed, strict=True) if u.hold_until is None))
            self._count("held", len(held))
            if held:
                log.info(
                    "outbox: held by quiet hours",
                    extra={"store": config.store_id, "count": len(held), "hold_until": min(held).isoformat()},
                )
        return go

    async def _recent_newsletters(self, config: ChannelConfig, chunk: list[Message], now: datetime) -> dict[str, int]:
        """For the frequency cap: the NEWSLETTER SMS each contact of the chunk got in the period."""
        cap = config.rules.frequency_cap
        if cap is None:
            return {}
        ids = {
            m.contact_id for m in chunk if m.recipient_mode is RecipientMode.CONTACT and m.type is SmsType.NEWSLETTER
        }
        if not ids:
            return {}
        recent = await self.storage.messages.newsletters_received(config.store_id, ids, now - cap.period)
        for contact_id in ids:  # and those another chunk of this process is handing over right now
            if out := self._capped_out.get((config.store_id, contact_id), 0):
                recent[contact_id] = recent.get(contact_id, 0) + out
        return recent

    async def _record(self, chunk: list[Message], accepted: list[Accepted], refused: list[Refused], token: str) -> None:
        now = self.clock()
        by_id = {m.id: m for m in chunk}
        updates = []
        for a in accepted:
            if (m := by_id.get(a.client_id)) is not None:
                recipient, segments = await self._went_to(token, m, a)
                updates.append(
                    MessageUpdate(
                        m.store_id,
                        m.id,
                        MessageStatus.SENT,
                        _QUEUED,
                        now,
                        provider_id=a.provider_id,
                        send_time=now,
                        attempted=True,
                        activity=message_activity(m, ActivityType.SMS_SENT, now),
                        recipient=recipient,
                        segments=segments,
                        fill_from=_REPORTED,
                    )
                )
        for r in refused:
            if (m := by_id.get(r.client_id)) is not None:
                updates.append(self._failure(m, r.message, now))
        await self.storage.messages.update(updates)
        self._count("sent", len(accepted))
        self._count("refused", len(refused))

    async def _went_to(self, token: str, m: Message, a: Accepted) -> tuple[str | None, int | None]:
        """The number the SMS went to, when it may not be the one just asked for (None: it is).

        A clientId Instasent already holds was created by an earlier attempt whose answer was lost (a
        timeout, a crash): maybe to the contact's number before it changed. The message records where
        it really went, so that a later `rejected` or `stop` for it reaches that number's contacts."""
        if not a.duplicate:
            return None, None
        try:
            to = await self.instasent.sent_to(token, a.provider_id)
        except ProviderError as e:
            log.warning("outbox: cannot tell where an earlier attempt went", extra={"status": e.status})
            return None, None
        if not to or to == m.recipient:
            return None, None
        return to, measure_as_delivered(m.text, to).segments

    async def _fail(self, chunk: list[Message], reason: str) -> None:
        now = self.clock()
        await self.storage.messages.update([self._failure(m, reason, now) for m in chunk])
        self._count("failed", len(chunk))

    async def _retry(self, chunk: list[Message], error: ProviderError) -> None:
        now = self.clock()
        attempts = max(m.attempts for m in chunk) + 1
        if attempts >= self.max_attempts:
            await self._fail(
                chunk, f"gave up after {attempts} attempts; last: Instasent {error.status}: {error.message}"
            )
            return
        delay = min(self.retry_max, self.retry_base * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        when = now + timedelta(seconds=delay)
        reason = f"retrying: Instasent {error.status or 'unreachable'}: {error.message}"
        await self.storage.messages.update([self._put_off(m, now, when, reason, attempted=True) for m in chunk])
        self._count("retried", len(chunk))
        log.warning(
            "outbox: retry later", extra={"status": error.status, "delay_s": round(delay, 3), "count": len(chunk)}
        )

    @staticmethod
    def _put_off(m: Message, now: datetime, when: datetime, reason: str, *, attempted: bool) -> MessageUpdate:
        """Still QUEUED, due again `when`, its claim let go (whichever outbox reads it due then takes it)."""
        return MessageUpdate(
            m.store_id,
            m.id,
            MessageStatus.QUEUED,
            _QUEUED,
            now,
            reason=reason,
            next_attempt_time=when,
            attempted=attempted,
            release=True,
        )

    @staticmethod
    def _failure(m: Message, reason: str, now: datetime) -> MessageUpdate:
        activity = message_activity(m, ActivityType.SMS_FAILED, now, reason)
        return MessageUpdate(
            m.store_id, m.id, MessageStatus.FAILED, _QUEUED, now, reason=reason, attempted=True, activity=activity
        )

    def _count(self, outcome: str, n: int) -> None:
        if self.observe is not None and n:
            self.observe(outcome, n)
