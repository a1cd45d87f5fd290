"""Replicas sharing one database share the outbox without sending a message twice: a QUEUED message is
held by the replica that stored it, then by the one that reads it due, and another replica takes it
only when that claim has run out (its holder died); and work for one replica at a time (the workflow
engine) goes to the holder of a lease. On both backends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smschannel.crypto import TokenCipher
from smschannel.domain.enums import MessageStatus, RecipientMode, SmsSubscriptionStatus, SmsType
from smschannel.domain.messages import Message
from smschannel.domain.stores import ApiKey, Store
from smschannel.instasent.client import Accepted, Account, SmsItem
from smschannel.operations.channel import ChannelChanges, ChannelOps
from smschannel.operations.dispatcher import FRESH_CLAIM, Dispatcher
from smschannel.storage import MessageUpdate
from smschannel.storage.sqlite import SqliteStorage
from smschannel.storage.sqlite.db import Database
from smschannel.storage.sqlite.messages import CLAIM

from .conftest import database_at, on_postgres

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def queued(n: int) -> Message:
    return Message(
        store_id="s",
        id=f"m{n}",
        type=SmsType.NEWSLETTER,
        recipient_mode=RecipientMode.CONTACT,
        status=MessageStatus.QUEUED,
        create_time=NOW,
        update_time=NOW,
        recipient=f"+3461200000{n}",
        text="Hola",
        next_attempt_time=NOW,
    )


async def test_a_replica_takes_another_s_messages_only_when_its_claim_runs_out(tmp_path: Path) -> None:
    path = database_at(tmp_path, "claims.db")
    a, b = await SqliteStorage.open(path, "replica-a"), await SqliteStorage.open(path, "replica-b")
    try:
        await a.stores.create(Store("s", "S", SmsSubscriptionStatus.UNSPECIFIED, NOW), ApiKey("s", "k", "K", "h", NOW))
        await a.messages.add([queued(n) for n in range(3)])
        assert await b.messages.due(NOW, 10) == []  # a stored them: a holds them
        assert [m.id for m in await a.messages.due(NOW, 10)] == ["m0", "m1", "m2"]
        assert [m.id for m in await a.messages.due(NOW, 10)] == ["m0", "m1", "m2"]  # its own, again
        later = NOW + CLAIM + timedelta(seconds=1)  # a died: its claims run out
        assert [m.id for m in await b.messages.due(later, 2)] == ["m0", "m1"]
        assert [m.id for m in await a.messages.due(later, 10)] == ["m2"]  # b holds the first two now
        assert {m.id for m in await b.messages.due(later, 10)} == {"m0", "m1"}
    finally:
        await a.close()
        await b.close()


async def test_an_outbox_process_reads_what_its_server_stored_and_never_its_own_in_flight(tmp_path: Path) -> None:
    """SMSCHANNEL_OUTBOX=process: the server stores messages unclaimed; the outbox process (the replica's
    claims are its) takes them at once, and its later reads leave out what it holds (in flight),
    though its first read after a restart takes those back at once."""
    path = database_at(tmp_path, "outbox.db")
    server = await SqliteStorage.open(path, "replica-a", hold_stored=False)
    outbox = await SqliteStorage.open(path, "replica-a/outbox")  # server.outbox_replica: a name of its own
    other = await SqliteStorage.open(path, "replica-b")
    try:
        await server.stores.create(
            Store("s", "S", SmsSubscriptionStatus.UNSPECIFIED, NOW), ApiKey("s", "k", "K", "h", NOW)
        )
        await server.messages.add([queued(n) for n in range(3)])
        assert [m.id for m in await outbox.messages.due(NOW, 2, own=False)] == ["m0", "m1"]  # unclaimed: at once
        assert [m.id for m in await outbox.messages.due(NOW, 10, own=False)] == ["m2"]  # not m0, m1 (in flight)
        assert await outbox.messages.due(NOW, 10, own=False) == []
        assert await other.messages.due(NOW, 10) == []  # held by replica-a's outbox process
        # Restarted, its first read takes its claims back without waiting them out.
        assert [m.id for m in await outbox.messages.due(NOW, 10, own=True)] == ["m0", "m1", "m2"]
        # A server left inline on that replica (a misconfiguration) holds what it stores under its own
        # name: the outbox process never takes those while they are claimed, so the two never both send.
        inline = await SqliteStorage.open(path, "replica-a")
        try:
            await inline.messages.add([queued(9)])
            assert {m.id for m in await outbox.messages.due(NOW, 10, own=True)} == {"m0", "m1", "m2"}
            assert [m.id for m in await inline.messages.due(NOW, 10)] == ["m9"]
        finally:
            await inline.close()
    finally:
        for storage in (server, outbox, other):
            await storage.close()


async def test_a_message_put_off_is_let_go_and_due_again_when_its_wait_ends(tmp_path: Path) -> None:
    """A retry or a quiet-hours hold lets go of the claim (`release`): at its next attempt the message
    is read again, by this outbox process or another replica's, without waiting out the claim."""
    path = database_at(tmp_path, "release.db")
    a, b = await SqliteStorage.open(path, "replica-a"), await SqliteStorage.open(path, "replica-b")
    try:
        await a.stores.create(Store("s", "S", SmsSubscriptionStatus.UNSPECIFIED, NOW), ApiKey("s", "k", "K", "h", NOW))
        await a.messages.add([queued(n) for n in range(2)])
        assert len(await a.messages.due(NOW, 10)) == 2
        soon = NOW + timedelta(seconds=2)  # well within the claim (CLAIM)
        queued_only = frozenset({MessageStatus.QUEUED})
        retry = MessageUpdate("s", "m0", MessageStatus.QUEUED, queued_only, NOW, next_attempt_time=soon, release=True)
        kept = MessageUpdate("s", "m1", MessageStatus.QUEUED, queued_only, NOW, next_attempt_time=soon)
        assert await a.messages.update([retry, kept]) == [True, True]
        assert await a.messages.due(NOW + timedelta(seconds=1), 10, own=False) == []  # not due yet
        assert [m.id for m in await a.messages.due(soon, 10, own=False)] == ["m0"]  # m1: still held
        assert await b.messages.due(soon, 10) == []  # a took m0 again; m1 is a's until its claim runs out
    finally:
        await a.close()
        await b.close()


async def test_one_replica_at_a_time_holds_a_lease_until_it_runs_out(tmp_path: Path) -> None:
    path = database_at(tmp_path, "leases.db")
    a, b = await SqliteStorage.open(path, "replica-a"), await SqliteStorage.open(path, "replica-b")
    lease = timedelta(seconds=30)
    try:
        assert await a.meta.hold("workflow-engine", NOW, lease)
        assert not await b.meta.hold("workflow-engine", NOW, lease)
        assert await a.meta.hold("workflow-engine", NOW + timedelta(seconds=20), lease)  # renewed to +50 s
        assert not await b.meta.hold("workflow-engine", NOW + timedelta(seconds=40), lease)
        assert await b.meta.hold("workflow-engine", NOW + timedelta(seconds=51), lease)  # a stopped renewing
        assert not await a.meta.hold("workflow-engine", NOW + timedelta(seconds=52), lease)
        assert await a.meta.hold("another", NOW, lease)  # leases are independent
    finally:
        await a.close()
        await b.close()


class _Counts:
    """An Instasent that records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def account(self, token: str) -> Account:
        return Account(10.0)

    async def send(self, token: str, item: SmsItem) -> Accepted:
        self.sent.append(item.client_id)
        return Accepted(item.client_id, f"p-{item.client_id}")

    async def send_bulk(self, token: str, items: list[SmsItem]) -> tuple[list[Accepted], list[object]]:
        return [await self.send(token, item) for item in items], []


async def test_a_chunk_that_waited_long_after_its_read_is_held_again_before_it_goes(tmp_path: Path) -> None:
    """A read's chunks go without renewing their claims only while those are fresh (FRESH_CLAIM): one
    that waited longer for a request slot may have lost its claim to another replica, which sends it."""
    path = database_at(tmp_path, "fresh.db")
    claim = timedelta(seconds=2)
    a, b = await SqliteStorage.open(path, "replica-a", claim), await SqliteStorage.open(path, "replica-b", claim)
    try:
        await a.stores.create(Store("s", "S", SmsSubscriptionStatus.UNSPECIFIED, NOW), ApiKey("s", "k", "K", "h", NOW))
        instasent = _Counts()
        channel = ChannelOps(a.channel_configs, TokenCipher("k" * 32), instasent, "http://x")  # type: ignore[arg-type]
        await channel.update("s", ChannelChanges(api_token="tok-123456789", default_sender="Acme"))
        alert = replace(queued(0), recipient_mode=RecipientMode.ALERT, type=SmsType.TRANSACTIONAL)
        await a.messages.add([alert])
        read = await a.messages.due(NOW, 10)  # a claims it, for 2 s
        later = NOW + FRESH_CLAIM + timedelta(seconds=1)  # a's chunk still waits for a request slot...
        assert [m.id for m in await b.messages.due(later, 10)] == ["m0"]  # ...its claim ran out: b took it
        dispatcher = Dispatcher(a, channel, instasent, asyncio.Event(), clock=lambda: later)  # type: ignore[arg-type]
        await dispatcher._deliver("s", read, claimed_at=NOW)
        assert instasent.sent == []  # held again first: b's now, so not from a
    finally:
        await a.close()
        await b.close()


class _FailsOnce(_Counts):
    """An Instasent client that breaks once with an error nobody expected (a bug), then works."""

    def __init__(self) -> None:
        super().__init__()
        self.broke = False
        self.went = asyncio.Event()

    async def send(self, token: str, item: SmsItem) -> Accepted:
        if not self.broke:
            self.broke = True
            raise RuntimeError("a bug")
        self.went.set()
        return await super().send(token, item)


async def test_an_outbox_process_retries_a_chunk_that_broke_without_waiting_out_its_claim(tmp_path: Path) -> None:
    """An unexpected error in an outbox process: its reads leave out its own claims, so the chunk it held
    would wait for them to run out (CLAIM, 30 s); it lets them go and sends the message again soon."""
    path = database_at(tmp_path, "broke.db")
    server = await SqliteStorage.open(path, "replica-a", hold_stored=False)
    outbox = await SqliteStorage.open(path, "replica-a/outbox")
    try:
        await server.stores.create(
            Store("s", "S", SmsSubscriptionStatus.UNSPECIFIED, NOW), ApiKey("s", "k", "K", "h", NOW)
        )
        instasent = _FailsOnce()
        channel = ChannelOps(outbox.channel_configs, TokenCipher("k" * 32), instasent, "http://x")  # type: ignore[arg-type]
        await channel.update("s", ChannelChanges(api_token="tok-123456789", default_sender="Acme"))
        now = datetime.now(UTC)
        alert = replace(queued(0), recipient_mode=RecipientMode.ALERT, type=SmsType.TRANSACTIONAL)
        await server.messages.add([replace(alert, create_time=now, update_time=now, next_attempt_time=now)])
        dispatcher = Dispatcher(outbox, channel, instasent, asyncio.Event(), retry_base=0.05, handed_over=False)  # type: ignore[arg-type]
        dispatcher.start()
        try:
            async with asyncio.timeout(10):  # CLAIM is 30 s
                await instasent.went.wait()
        finally:
            await dispatcher.stop(grace=5)
        assert instasent.broke
        assert instasent.sent == ["m0"]
        message = await server.messages.get("s", "m0")
        assert message is not None
        assert (message.status, message.provider_id) == (MessageStatus.SENT, "p-m0")
    finally:
        await server.close()
        await outbox.close()


async def test_processes_opening_one_new_file_at_once_all_start(tmp_path: Path) -> None:
    """The server and its outbox process start together on a new SQLite file: while one turns WAL on
    and migrates, SQLite answers the other "locked" at once (it does not wait there); each must open."""
    if on_postgres():
        pytest.skip("SQLite's file locking")
    for attempt in range(15):
        path = str(tmp_path / f"new-{attempt}.db")
        opened = await asyncio.gather(*(Database.open(path) for _ in range(4)))
        for db in opened:
            await db.close()
