"""Scale-out: a newsletter broadcast and GetContact on 1 and 2 replicas on PostgreSQL, and on 1 server
on SQLite, in one run; rates and CPU per unit (issue 17).

Each scenario: a fresh database, N contacts imported (half subscribed), a broadcast Send SMS newsletter
through the fake Instasent (SMS/s from activation to the last SMS, and the CPU of every replica and of
PostgreSQL per contact), then GetContact under h2load, 50 callers in all spread over the replicas
(calls/s, CPU per call, PostgreSQL's included). The workflow engine runs in one replica (its lease);
the outbox and the RPCs are shared.
On this 2-core machine two replicas cannot double a rate: the figure to watch is CPU per unit, which
must not grow by more than 15% from 1 to 2 replicas. Needs PostgreSQL's server binaries (`make
postgres`) and h2load (`make load-generators`).
Usage: python -m bench.scale [N]   (default 20,000)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path

import grpc

from bench._common import Server, fake_instasent, process_cpu, report, server
from bench.get_contact import CONNECTIONS, STREAMS, check, load
from bench.newsletter import TOKEN, newsletter, setup
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from tests.postgres import ThrowawayPostgres, create_database

GOAL = 1.15  # CPU per unit, 2 replicas ÷ 1, at most


def first_contact(addr: str, key: str) -> str:
    """The name of one of the newsletter's contacts, for GetContact."""
    with grpc.insecure_channel(addr) as ch:
        page = cpb_grpc.ContactsServiceStub(ch).ListContacts(
            cpb.ListContactsRequest(parent="stores/bench", page_size=1), metadata=(("authorization", f"Bearer {key}"),)
        )
    return str(page.contacts[0].name)


def cpu(replicas: list[Server]) -> float:
    """CPU seconds of the replicas and of every PostgreSQL process on the machine (its backends work
    for the replicas: a design that moved work into the database must not look cheaper than it is)."""
    database = 0.0
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip() == "postgres":
                database += process_cpu(int(stat.parent.name))
        except OSError:
            continue
    return sum(process_cpu(r.proc.pid) for r in replicas) + database


def get_contacts(replicas: list[Server], key: str, name: str, seconds: float) -> tuple[float, float]:
    """Calls/s over all replicas, and CPU µs a call over all of them; 50 callers in all."""
    request = cpb.GetContactRequest(name=name).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "request"
        body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        streams = STREAMS // len(replicas)
        results: list[tuple[float, float]] = []
        before = cpu(replicas)

        def one(r: Server) -> None:
            results.append(load(r.addr, body, key, seconds, r.proc.pid, CONNECTIONS, streams))

        threads = [threading.Thread(target=one, args=(r,)) for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = sum(r for r, _ in results)
        return rate, (cpu(replicas) - before) / (rate * seconds) * 1e6


def scenario(db: str, replicas: int, count: int) -> dict[str, float]:
    with ExitStack() as stack:
        fake = stack.enter_context(fake_instasent(TOKEN))  # its own: it counts this scenario's SMS only
        servers = [
            stack.enter_context(server(SMSCHANNEL_DB=db, SMSCHANNEL_REPLICA=f"replica-{i}", INSTASENT_BASE_URL=fake))
            for i in range(replicas)
        ]
        key = servers[0].create_store()
        content, key = asyncio.run(setup(servers[0].addr, key, count))
        before = cpu(servers)
        rate = asyncio.run(newsletter(servers[0].addr, key, content, fake, (count + 1) // 2))
        broadcast_cpu = (cpu(servers) - before) / count * 1e6
        name = first_contact(servers[0].addr, key)
        for s in servers:
            check(s.addr, name, key)
        calls, call_cpu = get_contacts(servers, key, name, 5.0)
    return {"sms_rate": rate, "cpu_us_per_contact": broadcast_cpu, "calls_rate": calls, "cpu_us_per_call": call_cpu}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    figures: dict[str, dict[str, float]] = {}
    with ThrowawayPostgres() as dsn, tempfile.TemporaryDirectory() as tmp:
        figures["sqlite_1"] = scenario(str(Path(tmp) / "scale.db"), 1, count)
        figures["postgres_1"] = scenario(create_database(dsn, "scale_1"), 1, count)
        figures["postgres_2"] = scenario(create_database(dsn, "scale_2"), 2, count)
    for name, f in figures.items():
        print(
            f"{name:11} newsletter {f['sms_rate']:7,.0f} SMS/s, {f['cpu_us_per_contact']:4.0f} µs CPU a contact;"
            f" GetContact {f['calls_rate']:7,.0f}/s, {f['cpu_us_per_call']:4.0f} µs CPU a call"
        )
    one, two = figures["postgres_1"], figures["postgres_2"]
    growth = max(two["cpu_us_per_contact"] / one["cpu_us_per_contact"], two["cpu_us_per_call"] / one["cpu_us_per_call"])
    print(f"CPU per unit, 2 replicas ÷ 1: {growth:.2f} (goal ≤ {GOAL})")
    report(
        {
            "bench": "scale",
            "contacts": count,
            **{f"{n}_{k}": round(v) for n, f in figures.items() for k, v in f.items()},
            "cpu_growth_2_over_1": round(growth, 3),
            "goal": GOAL,
        }
    )


if __name__ == "__main__":
    main()
