"""Instasent's report of an SMS can be applied before the answer of the request that created it is
recorded (its callback arrives while the outbox waits for the write lock, or the answer was lost). The
report moves the message on (sent, delivered, rejected); the answer must still record the send: when
it went, under which Instasent id, the attempt, the SMS_SENT activity, and where it really went."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smschannel.crypto import TokenCipher
from smschannel.domain.contacts import ContactPatch
from smschannel.domain.enums import (
    ActivitySource,
    ActivityType,
    MessageStatus,
    MobilePhoneStatus,
    SmsSubscriptionStatus,
    SmsType,
)
from smschannel.domain.messages import Message, SmsContent
from smschannel.domain.stores import ApiKey, Store
from smschannel.instasent.client import Accepted, Account, ProviderError, SmsItem
from smschannel.operations.channel import ChannelChanges, ChannelOps
from smschannel.operations.contacts import ContactOps
from smschannel.operations.dispatcher import Dispatcher
from smschannel.operations.provider_events import ProviderEvent, ProviderEvents
from smschannel.operations.sending import Sender, SendRequest
from smschannel.storage import MessageUpdate
from smschannel.storage.sqlite import SqliteStorage

from .conftest import database_at

OLD, NEW = "+34612345678", "+34622222222"


class ReportsFirst:
    """Holds SMS by clientId as Instasent does, and applies its report of each new SMS (`report`) before
    answering; with `lose_first`, the first call's answer is lost (a timeout after the SMS was created)."""

    def __init__(self, report: str, lose_first: bool = False) -> None:
        self.report = report
        self.lose_first = lose_first
        self.held: dict[str, tuple[str, str]] = {}  # clientId → (Instasent's id, to)
        self.events: ProviderEvents | None = None
        self.secret = ""

    async def account(self, token: str) -> Account:
        return Account(10.0)

    async def send(self, token: str, item: SmsItem) -> Accepted:
        known = item.client_id in self.held
        if not known:
            self.held[item.client_id] = (f"p{len(self.held)}", item.to)
            if self.lose_first and len(self.held) == 1:
                raise ProviderError(0, "timed out")  # created; its report comes with the retry's answer
        provider_id = self.held[item.client_id][0]
        assert self.events is not None
        event = ProviderEvent("s1", self.secret, self.report, provider_id=provider_id, client_id=item.client_id)
        assert (await self.events.apply(event)).outcome == "applied"
        return Accepted(item.client_id, provider_id, duplicate=known)

    async def sent_to(self, token: str, provider_id: str) -> str:
        return next(to for pid, to in self.held.values() if pid == provider_id)


class World:
    def __init__(self, storage: SqliteStorage, instasent: ReportsFirst) -> None:
        self.storage = storage
        self.instasent = instasent
        self.channel = ChannelOps(storage.channel_configs, TokenCipher("k" * 32), instasent, "http://x")  # type: ignore[arg-type]
        self.contacts = ContactOps(storage)
        self.dispatcher = Dispatcher(storage, self.channel, instasent, asyncio.Event())  # type: ignore[arg-type]
        self.store = Store("s1", "S", SmsSubscriptionStatus.SUBSCRIBED, datetime.now(UTC))

    async def start(self) -> Message:
        """A store with a channel, a contact at OLD, and a message QUEUED for it."""
        now = datetime.now(UTC)
        await self.storage.stores.create(self.store, ApiKey("s1", "k1", "k", "h" * 64, now))
        await self.channel.update(
            "s1", ChannelChanges(api_token="tok-123456789", default_country="ES", default_sender="Acme")
        )
        self.instasent.events = ProviderEvents(self.storage, self.channel, self.contacts)
        self.instasent.secret = (await self.channel.get("s1")).callback_secret
        await self.contacts.create(self.store, "c1", ContactPatch(mobile_phone=OLD), ActivitySource.API)
        await self.storage.sms_contents.create(SmsContent("s1", "t1", "T", "Hola", now, now, 1))
        return await Sender(self.storage, self.channel).send(
            SendRequest("s1", "t1", SmsType.TRANSACTIONAL, {}, contact_id="c1", request_id="r1")
        )

    async def message(self, message_id: str) -> Message:
        found = await self.storage.messages.get("s1", message_id)
        assert found is not None
        return found

    async def activities(self) -> list[ActivityType]:
        listed = await self.storage.contacts.list_activities("s1", "c1", None, None, 100)
        return [a.item.type for a in listed]


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    opened = await SqliteStorage.open(database_at(tmp_path, "report.db"))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize(
    ("report", "status"),
    [
        ("sent", MessageStatus.SENT),
        ("delivered", MessageStatus.DELIVERED),
        ("rejected", MessageStatus.REJECTED),
    ],
)
async def test_the_answer_records_the_send_after_the_report(
    storage: SqliteStorage, report: str, status: MessageStatus
) -> None:
    world = World(storage, ReportsFirst(report))
    queued = await world.start()
    before = datetime.now(UTC)
    await world.dispatcher._deliver("s1", [queued], None)
    message = await world.message(queued.id)
    assert message.status is status  # the report's status stands: the answer moves nothing back
    assert message.provider_id == "p0"
    assert message.send_time is not None
    assert message.send_time >= before
    assert message.attempts == 1
    assert message.recipient == OLD
    kinds = await world.activities()
    assert kinds.count(ActivityType.SMS_SENT) == 1
    if status is MessageStatus.DELIVERED:
        assert message.delivery_time is not None
        assert kinds.count(ActivityType.SMS_DELIVERED) == 1


async def test_a_lost_answer_overtaken_by_a_report_still_records_where_the_sms_went(storage: SqliteStorage) -> None:
    world = World(storage, ReportsFirst("delivered", lose_first=True))
    queued = await world.start()
    await world.dispatcher._deliver("s1", [queued], None)  # created at Instasent for OLD; the answer is lost
    await world.contacts.update(world.store, "c1", ContactPatch(mobile_phone=NEW), "", ActivitySource.API)
    waiting = await world.message(queued.id)
    assert (waiting.status, waiting.attempts) == (MessageStatus.QUEUED, 1)
    # The retry goes to NEW; Instasent answers "clientId already used", and its delivery report of the
    # first SMS (to OLD) is applied before that answer is recorded.
    await world.dispatcher._deliver("s1", [waiting], None)
    message = await world.message(queued.id)
    assert (message.status, message.recipient, message.attempts) == (MessageStatus.DELIVERED, OLD, 2)
    assert message.send_time is not None
    assert message.provider_id == "p0"
    assert (await world.activities()).count(ActivityType.SMS_SENT) == 1
    contact = await storage.contacts.get("s1", "c1")
    assert contact is not None
    assert (contact.mobile_phone, contact.mobile_phone_status) == (NEW, MobilePhoneStatus.ACTIVE)


async def test_only_a_reported_status_takes_the_record_of_a_send(storage: SqliteStorage) -> None:
    """A message that moved on otherwise (SKIPPED, a message the outbox judged ineligible) is left as it is."""
    world = World(storage, ReportsFirst("delivered"))
    queued = await world.start()
    now = datetime.now(UTC)
    queued_only = frozenset({MessageStatus.QUEUED})
    skip = MessageUpdate("s1", queued.id, MessageStatus.SKIPPED, queued_only, now, reason="at sending: unsubscribed")
    assert await storage.messages.update([skip]) == [True]
    sent = MessageUpdate(
        "s1",
        queued.id,
        MessageStatus.SENT,
        queued_only,
        now,
        provider_id="p9",
        send_time=now,
        attempted=True,
        fill_from=frozenset({MessageStatus.SENT, MessageStatus.DELIVERED}),
    )
    assert await storage.messages.update([sent]) == [False]
    message = await world.message(queued.id)
    assert (message.status, message.provider_id, message.send_time, message.attempts) == (
        MessageStatus.SKIPPED,
        "",
        None,
        0,
    )
