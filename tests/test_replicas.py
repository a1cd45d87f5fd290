"""Two replicas of the server on one PostgreSQL database. SIGKILL the one running a broadcast midway:
the other takes over its engine lease and its outbox claims, and every eligible contact gets exactly
one SMS, the ineligible none. While both run, neither hands Instasent a message the other holds (the
fake counts a repeated clientId)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import psycopg
import pytest

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import database_at, on_postgres
from .procs import free_port
from .test_broadcast_kill import eligible_phones, import_contacts, start_broadcast, until_received
from .test_outbox_kill import sending_store, serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not on_postgres(), reason="replicas share one PostgreSQL: in the PostgreSQL run"),
]

CONTACTS = 9000  # 6,000 eligible: far more than one replica hands over within a claim at 2 s a request
LEASE = 2.0  # seconds: the claims and the engine's lease of a dead replica run out quickly


def start_replica(db: str, name: str, addr: str, fake: FakeInstasent) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SMSCHANNEL_GRPC_ADDR": addr,
        "SMSCHANNEL_DB": db,
        "SMSCHANNEL_REPLICA": name,
        "SMSCHANNEL_LEASE_SECONDS": str(LEASE),
        "SMSCHANNEL_ADMIN_KEY": "test-admin-key",
        "SMSCHANNEL_SECRET_KEY": "replicas-secret",
        "SMSCHANNEL_RETRY_BASE": "0.05",
        "INSTASENT_BASE_URL": fake.base_url,
    }
    return subprocess.Popen([sys.executable, "-m", "smschannel", "server"], env=env)


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
        # (An idle replica looks at the outbox at least every 5 s.)
        slow_fake.faults.latency = 2.0
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
