"""Two replicas of the server on one PostgreSQL database. SIGKILL the one running a broadcast midway:
the other takes over its engine lease and its outbox claims, and every eligible contact gets exactly
one SMS, the ineligible none. While both run, neither hands Instasent a message the other holds (the
fake counts a repeated clientId). A stop that comes through one replica's sidecar while the other
holds newsletters to that phone, waiting out an Instasent outage: the holder judges consent again at
its hand-over and skips them (SPEC §5), whichever replica is which."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest

from smschannel.asgi import serve_in_loop
from smschannel.config import Config
from smschannel.instasent.fake import FakeInstasent
from smschannel.sidecar.app import create_app
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import KILL_TOKEN, database_at, on_postgres
from .procs import free_port
from .test_broadcast_kill import eligible_phones, import_contacts, start_broadcast, until_received
from .test_outbox_kill import sending_store, serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not on_postgres(), reason="replicas share one PostgreSQL: in the PostgreSQL run"),
]

CONTACTS = 9000  # 6,000 eligible: far more than one replica hands over within a claim at 2 s a request
LEASE = 3.0  # seconds: the claims and the engine's lease of a dead replica run out quickly
SECRET = "replicas-secret"  # every replica's and sidecar's SMSCHANNEL_SECRET_KEY


def start_replica(db: str, name: str, addr: str, fake: FakeInstasent, **env: str) -> subprocess.Popen[bytes]:
    """`smschannel server` as replica `name` on `db`; `env` adds or overrides its variables."""
    full = {
        **os.environ,
        "SMSCHANNEL_GRPC_ADDR": addr,
        "SMSCHANNEL_DB": db,
        "SMSCHANNEL_REPLICA": name,
        "SMSCHANNEL_LEASE_SECONDS": str(LEASE),
        "SMSCHANNEL_ADMIN_KEY": "test-admin-key",
        "SMSCHANNEL_SECRET_KEY": SECRET,
        "SMSCHANNEL_RETRY_BASE": "0.05",
        "INSTASENT_BASE_URL": fake.base_url,
        **env,
    }
    return subprocess.Popen([sys.executable, "-m", "smschannel", "server"], env=full)


def engine_holder(db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        row = conn.execute("SELECT owner FROM leases WHERE name = 'workflow-engine'").fetchone()
    return str(row[0]) if row else ""


async def test_a_replica_killed_mid_broadcast_leaves_its_work_to_the_other(
    tmp_path: Path, slow_fake: FakeInstasent
) -> None:
    db = database_at(tmp_path, "replicas.db")
    addrs = {name: f"127.0.0.1:{free_port()}" for name in ("a", "b")}
    procs = {name: start_replica(db, name, addr, slow_fake) for name, addr in addrs.items()}
    try:
        for addr in addrs.values():
            await serving(addr)
        async with grpc.aio.insecure_channel(addrs["a"]) as ch:
            md, _, text = await sending_store(pb_grpc.SmsChannelServiceStub(ch), "r", "Promo {{unsubscribe}}")
            await import_contacts(ch, md, "r", CONTACTS)
        async with grpc.aio.insecure_channel(addrs["b"]) as ch:  # the other replica sees the same store
            await start_broadcast(ch, md, "r", text.name)
        eligible = eligible_phones(CONTACTS)
        await until_received(slow_fake, 150, 10)
        # Slow Instasent down while both run: the engine's replica has more queued than it can hand over
        # within its claims, so they run out and the other replica's outbox takes its share.
        # (An idle replica looks at the outbox at least every 5 s.) A request must still end within the
        # claim renewed at its hand-over, as in production (claims of 30 s, requests of 10 s at most):
        # one answered after its claim ran out may meet the other replica's attempt at Instasent.
        slow_fake.faults.latency = 2.0  # a second under the claims
        await asyncio.sleep(7.0)
        assert slow_fake.duplicate_attempts == 0, "two replicas handed over one message"
        # Kill the replica running the broadcast while its requests are held at the fake, unanswered.
        holder = engine_holder(db)
        assert holder in procs, holder  # Instasent still holds its requests 2 s: the kill lands mid-request
        procs[holder].send_signal(signal.SIGKILL)
        procs[holder].wait(timeout=10)
        at_kill = len(slow_fake.received())
        slow_fake.faults.latency = 0.0
        assert 0 < at_kill < len(eligible), "the kill must land mid-broadcast"
        print(f"duplicate hand-overs before the kill: {slow_fake.duplicate_attempts}")
        survivor = "b" if holder == "a" else "a"
        await until_received(slow_fake, len(eligible), 60)
        await asyncio.sleep(LEASE + 0.5)  # anything extra (a second hand-over) would arrive now
        received = [r.to for r in slow_fake.received()]
        assert len(received) == len(set(received)), "an SMS went twice"
        assert set(received) == eligible  # none skipped, none to the ineligible
        assert engine_holder(db) == survivor
        print(f"killed {holder} with {at_kill} of {len(eligible)} received; {survivor} finished the broadcast")
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=10)


# -- a stop through one replica, newsletters held by the other ------------------------------------------

STOPPED = "+34612500001"  # two contacts share it: the stop reaches both
OTHER = "+34612500002"  # a third contact's, who says nothing: her newsletter goes once Instasent is back
NEWSLETTER = common.SMS_TYPE_NEWSLETTER
# The production lease (a live replica's claims are never taken over), and retries every 0.1 s without
# end: while Instasent is down the holder keeps its newsletters, trying them again and again.
HOLDING = {"SMSCHANNEL_LEASE_SECONDS": "30", "SMSCHANNEL_RETRY_MAX": "0.1", "SMSCHANNEL_RETRY_ATTEMPTS": "1000000"}


def claim_owners(db: str, names: list[str]) -> dict[str, str]:
    """The replica that holds each message's outbox claim, by message name."""
    ids = {name.rsplit("/", 1)[1]: name for name in names}
    with psycopg.connect(db, autocommit=True) as conn:
        rows = conn.execute("SELECT id, claim_owner FROM messages WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {ids[str(row[0])]: str(row[1]) for row in rows}


@pytest.mark.parametrize(("holder", "stop_through"), [("a", "b"), ("b", "a")])
async def test_a_stop_through_one_replica_skips_the_newsletters_the_other_holds(
    tmp_path: Path, slow_fake: FakeInstasent, holder: str, stop_through: str
) -> None:
    db = database_at(tmp_path, "stop.db")
    addrs = {name: f"127.0.0.1:{free_port()}" for name in ("a", "b")}
    procs = {name: start_replica(db, name, addr, slow_fake, **HOLDING) for name, addr in addrs.items()}
    try:
        async with contextlib.AsyncExitStack() as running:
            for addr in addrs.values():
                await serving(addr)
            sidecars = {  # one sidecar per replica, each calling its own
                name: await running.enter_async_context(
                    serve_in_loop(
                        create_app(
                            Config.from_env(
                                {"SMSCHANNEL_GRPC_ADDR": addr, "SMSCHANNEL_SECRET_KEY": SECRET, "SMSCHANNEL_DB": db}
                            )
                        )
                    )
                )
                for name, addr in addrs.items()
            }
            ch = await running.enter_async_context(grpc.aio.insecure_channel(addrs[holder]))
            sms, contacts = pb_grpc.SmsChannelServiceStub(ch), cpb_grpc.ContactsServiceStub(ch)
            md, config, text = await sending_store(sms, "s", "Promo {{unsubscribe}}")
            # Instasent calls back the sidecar of the replica that does not hold the newsletters.
            path = config.callback_url.split("/instasent/callbacks/", 1)[1]
            slow_fake.add_token(KILL_TOKEN, callback_url=f"{sidecars[stop_through]}/instasent/callbacks/{path}")

            async def contact(phone: str) -> str:
                subscribed = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
                made = await contacts.CreateContact(
                    cpb.CreateContactRequest(
                        parent="stores/s", contact=cpb.Contact(mobile_phone=phone, sms_subscription_status=subscribed)
                    ),
                    metadata=md,
                )
                return str(made.name)

            async def newsletter(contact: str) -> str:
                made = await sms.SendSms(
                    pb.SendSmsRequest(
                        parent="stores/s",
                        request_id=os.urandom(8).hex(),
                        sms_content=text.name,
                        contact=contact,
                        type=NEWSLETTER,
                    ),
                    metadata=md,
                )
                return str(made.name)

            async def messages(names: list[str]) -> list[pb.Message]:
                return [await sms.GetMessage(pb.GetMessageRequest(name=n), metadata=md) for n in names]

            async def until(names: list[str], done: Callable[[pb.Message], bool], what: str) -> list[pb.Message]:
                for _ in range(1000):
                    got = await messages(names)
                    if all(done(m) for m in got):
                        return got
                    await asyncio.sleep(0.02)
                raise AssertionError(f"timed out waiting for {what}: {got}")

            first, second, third = [await contact(p) for p in (STOPPED, STOPPED, OTHER)]
            said_stop = await newsletter(first)  # the SMS whose recipient will answer STOP
            await until([said_stop], lambda m: m.status == common.MESSAGE_STATUS_SENT, "the first newsletter")
            (stop_sms,) = [r for r in slow_fake.received() if r.client_id == said_stop.rsplit("/", 1)[1]]

            slow_fake.down.add(KILL_TOKEN)  # an outage: what is queued now waits, tried again and again
            waiting = [await newsletter(c) for c in (first, second, third)]
            await until(waiting, lambda m: m.status_reason.startswith("retrying"), "the holder's first attempts")
            assert claim_owners(db, waiting) == dict.fromkeys(waiting, holder)

            assert await slow_fake.opt_out(stop_sms.id), "the stop callback was not answered 2xx"
            for c in (first, second):  # applied by the other replica, read by the holder
                got = await contacts.GetContact(cpb.GetContactRequest(name=c), metadata=md)
                assert got.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
            # A request already at Instasent when the stop lands is too late for its message: wait until
            # each has been tried (or skipped) since, so that every hand-over from now on follows the stop.
            applied = time.time_ns()
            await until(
                waiting,
                lambda m: m.status != common.MESSAGE_STATUS_QUEUED or m.update_time.ToNanoseconds() > applied,
                "an attempt after the stop",
            )

            slow_fake.down.discard(KILL_TOKEN)  # Instasent is back
            done = await until(waiting, lambda m: m.status != common.MESSAGE_STATUS_QUEUED, "the outbox to settle")
            for m in done[:2]:
                assert m.status == common.MESSAGE_STATUS_SKIPPED, f"a newsletter after STOP: {m}"
                assert m.status_reason.startswith("at sending"), m.status_reason
            assert done[2].status == common.MESSAGE_STATUS_SENT, done[2]
            assert [r.client_id for r in slow_fake.received() if r.to == STOPPED] == [stop_sms.client_id]
            assert [r.to for r in slow_fake.received()].count(OTHER) == 1
            # Judged and skipped by the holder: the replica the stop came through never claimed them.
            assert claim_owners(db, waiting) == dict.fromkeys(waiting, holder)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(timeout=10)
