"""A newsletter to N contacts (half SUBSCRIBED) through the real API — an import, then a broadcast
Send SMS workflow — to the fake Instasent; against a bare httpx blast of the same number of bulk
requests to the same fake, in the same run. The service runs as `make run` runs it (`smschannel run`:
the server, with the outbox inside it, and the sidecar), then again with the outbox in a process of
its own (SMSCHANNEL_OUTBOX=process).

Goal (issue 16): ≥ 0.5 × the storage floor, exactly N/2 SMS received, zero duplicates, zero to
ineligible. Also printed for each layout: the CPU per contact of the server and of the outbox process,
how many cores they kept busy; and the blast's rate, and two floors measured in the same run:
- the storage floor: the SQL writes such a newsletter makes (a run, a step and a message per contact in
  pages, then a SENT update and an SMS_SENT activity per SMS in chunks of 100), alone, on the same
  schema: no design that keeps them in SQLite from one Python process can go faster than that;
- the one-process floor: that, plus reading the contacts in pages and the CPU the blast's HTTP client
  spent per SMS, one after the other, as one process must do them (Python holds one core at a time):
  what a single-process server reaches with nothing else at all — no eligibility, rendering, claims,
  consent re-check, logging or gRPC. (The outbox process is what lifts that bound.)
Usage: python -m bench.newsletter [N]   (default 200,000)
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx

from bench._common import fake_instasent, fake_stats, free_port, received, report, scrape, server
from smschannel.instasent.client import MAX_BULK
from smschannel.operations.workflow_engine import BROADCAST_BATCH
from smschannel.storage.sqlite import SqliteStorage
from smschannel.storage.sqlite.db import PRAGMAS
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc
from smschannel.v1 import workflow_service_pb2 as wpb
from smschannel.v1 import workflow_service_pb2_grpc as wpb_grpc

TOKEN, BLAST_TOKEN = "bench-token", "blast-token"
GOAL = 0.5  # × the storage floor
PAGE = BROADCAST_BATCH  # the floor writes in the service's own batch sizes
CONCURRENCY = 8


def phone(i: int) -> str:
    return f"+346{i:08d}"


async def setup(addr: str, key: str, count: int) -> tuple[str, str]:
    """Import the contacts, create the content; returns (store key metadata ready) content name."""
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        sms, contacts = pb_grpc.SmsChannelServiceStub(ch), cpb_grpc.ContactsServiceStub(ch)
        await sms.UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(
                    name="stores/bench/smsChannelConfig",
                    api_token=TOKEN,
                    default_country="ES",
                    default_sender="Bench",
                    quiet_hours=pb.QuietHours(),  # the bench runs at any hour: the store's quiet hours off
                )
            ),
            metadata=md,
        )

        async def rows() -> AsyncIterator[cpb.ImportContactsRequest]:
            for start in range(0, count, 1000):
                batch = [
                    cpb.Contact(
                        email=f"c{i}@x.co",
                        mobile_phone=phone(i),
                        sms_subscription_status=(
                            common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED
                            if i % 2 == 0
                            else common.SMS_SUBSCRIPTION_STATUS_UNSPECIFIED
                        ),
                    )
                    for i in range(start, min(start + 1000, count))
                ]
                yield cpb.ImportContactsRequest(parent="stores/bench" if start == 0 else "", contacts=batch)

        imported = await contacts.ImportContacts(rows(), metadata=md, timeout=3600)
        assert imported.created_count == count, imported
        text = await sms.CreateSmsContent(
            pb.CreateSmsContentRequest(
                parent="stores/bench",
                sms_content=pb.SmsContent(display_name="News", text="Novedades de la semana {{unsubscribe}}"),
            ),
            metadata=md,
        )
        return text.name, key


async def create_broadcast(
    workflows: wpb_grpc.WorkflowServiceStub, md: tuple[tuple[str, str], ...], content: str
) -> wpb.Workflow:
    """A broadcast newsletter workflow over every contact (DRAFT, not yet activated)."""
    send = wpb.SendSmsNode(
        sms_content=content, recipient_mode=common.RECIPIENT_MODE_CONTACT, type=common.SMS_TYPE_NEWSLETTER
    )
    wf: wpb.Workflow = await workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(
            parent="stores/bench",
            workflow=wpb.Workflow(
                display_name="Newsletter",
                trigger=wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
                nodes=[wpb.Node(id="send", send_sms=send)],
                start_node="send",
            ),
        ),
        metadata=md,
    )
    return wf


async def newsletter(addr: str, key: str, content: str, fake: str, expected: int) -> float:
    """Activate the broadcast; SMS/s from activation to the last SMS at the fake."""
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        workflows = wpb_grpc.WorkflowServiceStub(ch)
        wf = await create_broadcast(workflows, md, content)
        start = time.time()
        await workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=md)
    while True:
        stats = await asyncio.to_thread(fake_stats, fake, TOKEN)
        if received(stats) >= expected or time.time() - start > 3600:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # anything extra (a duplicate) would arrive now
    stats = fake_stats(fake, TOKEN)
    last = float(stats["last_time"] or time.time())  # type: ignore[arg-type]
    first = float(stats["first_time"] or last)  # type: ignore[arg-type]
    print(f"first SMS at Instasent {first - start:.2f}s after activation, last {last - start:.2f}s")
    return expected / (last - start)


async def blast(fake: str, count: int) -> tuple[float, float]:
    """SMS/s of `count` SMS in bulk requests of 100 straight to the fake, CONCURRENCY at a time, and the
    CPU seconds an SMS cost this (client) process: the least a server spends to hand one over."""
    items = [
        {"from": "Bench", "to": phone(i), "text": "Novedades {{unsubscribe}}", "clientId": f"b{i}"}
        for i in range(count)
    ]
    chunks = [items[i : i + 100] for i in range(0, count, 100)]
    limiter = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {BLAST_TOKEN}"}) as http:

        async def post(chunk: list[dict[str, str]]) -> None:
            async with limiter:
                (await http.post(f"{fake}/sms/bulk", json=chunk)).raise_for_status()

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(post(c) for c in chunks))
        return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


def storage_floor(count: int) -> tuple[float, float]:
    """SMS/s of the SQL writes alone of a newsletter to `count` contacts (half sent), on a fresh file
    with the service's schema, with the service's batch sizes and SQLite settings; and the seconds per
    SMS of reading those contacts in the engine's pages (timed apart: the floor is the writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/floor.db"

        async def schema() -> None:
            storage = await SqliteStorage.open(path)
            await storage.close()

        asyncio.run(schema())
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in PRAGMAS:  # the service's settings (WAL is kept in the file)
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(
            "INSERT INTO stores (id, display_name, default_sms_subscription_status, create_time)"
            " VALUES ('s', 's', 0, 0)"
        )

        def insert(table: str) -> str:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "seq"]
            return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

        runs, steps, messages, activities = (
            insert(t) for t in ("workflow_runs", "workflow_run_steps", "messages", "activities")
        )
        now, text = 1_700_000_000_000_000, "Novedades de la semana {{unsubscribe}}"
        # The contacts, to time reading them in pages (other columns: 0, as ACTIVE and no pause are).
        fixed = {"store_id": "s", "email": "", "first_name": "", "last_name": "", "custom_fields": "{}"}
        columns = [r[1] for r in conn.execute("PRAGMA table_info(contacts)") if r[1] != "seq"]

        def contact(i: int) -> list[object]:
            values = {**fixed, "id": f"c{i}", "mobile_phone": phone(i), "sms_subscription_status": 1 + i % 2}
            return [values.get(column, 0) for column in columns]

        conn.executemany(insert("contacts"), [contact(i) for i in range(count)])
        read = time.perf_counter()
        after = 0
        while rows := conn.execute(
            "SELECT * FROM contacts WHERE store_id = 's' AND seq > ? ORDER BY seq LIMIT ?", (after, PAGE)
        ).fetchall():
            after = rows[-1][0]
        read = time.perf_counter() - read
        start = time.perf_counter()
        for first in range(0, count, PAGE):  # a broadcast page: runs, steps and messages
            page = range(first, min(count, first + PAGE))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(runs, [("s", "w", f"r{i}", f"c{i}", 3, "send", now, "{}", "", 1, now, now) for i in page])
            conn.executemany(steps, [("s", "w", f"r{i}", "send", now, "queued", f"m{i}") for i in page])
            conn.executemany(
                messages,
                [
                    (
                        "s",
                        f"m{i}",
                        f"wf:w:r{i}:0",
                        f"c{i}",
                        "w",
                        "send",
                        f"r{i}",
                        "t",
                        2,
                        1,
                        1 if i % 2 == 0 else 6,
                        "" if i % 2 == 0 else "not subscribed",
                        phone(i),
                        "Bench",
                        text,
                        1,
                        1,
                        "",
                        now,
                        now,
                        None,
                        None,
                        0,
                        now if i % 2 == 0 else None,
                        "bench",  # claim_owner: the replica that stored it holds it (outbox claims)
                        now + 60_000_000,  # claim_until
                        None,  # hold_until: quiet hours hold none
                    )
                    for i in page
                ],
            )
            conn.execute("COMMIT")
        for first in range(0, count, 2 * MAX_BULK):  # a bulk answer: its SENT updates and their activities
            sent = range(first, min(count, first + 2 * MAX_BULK), 2)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "UPDATE messages SET status = 2, provider_id = ?, send_time = ?, attempts = attempts + 1,"
                " next_attempt_time = NULL, update_time = ? WHERE store_id = 's' AND id = ?",
                [(f"p{i}", now, now, f"m{i}") for i in sent],
            )
            conn.executemany(activities, [("s", f"c{i}", f"a{i}", 5, 3, '{"message":"m"}', now) for i in sent])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    half = (count + 1) // 2
    return half / elapsed, read / half


@dataclass
class Run:
    """One newsletter through `smschannel run` with one outbox layout, and what it cost."""

    outbox: str
    rate: float
    received: int
    duplicates: int
    ineligible: int
    server_cpu: float  # seconds
    outbox_cpu: float
    rss: dict[str, float]
    lock_held: dict[str, float]  # seconds each process held SQLite's write lock during the newsletter
    lock_waited: dict[str, float]  # and waited for the other's
    baseline: float = 0.0  # the blast's SMS/s, taken beside it
    http_cpu: float = 0.0

    def cpu_us(self, count: int) -> float:
        return (self.server_cpu + self.outbox_cpu) / count * 1e6

    def span(self) -> float:  # the newsletter's, from activation to the last SMS (not its trailing wait)
        return self.received / self.rate

    def cores(self) -> float:
        return (self.server_cpu + self.outbox_cpu) / self.span()

    def lock_busy(self) -> float:
        """The share of the newsletter's span SQLite's one write lock was held, by either process."""
        return sum(self.lock_held.values()) / self.span()


def run_newsletter(count: int, outbox: str, with_blast: bool) -> Run:
    """The service as `make run` starts it, with SMSCHANNEL_OUTBOX=`outbox`: an import, the newsletter."""
    expected = (count + 1) // 2
    metrics = {"server": f"127.0.0.1:{free_port()}", "outbox": f"127.0.0.1:{free_port()}"}
    with (
        fake_instasent(TOKEN, BLAST_TOKEN) as fake,
        server(
            "run",
            INSTASENT_BASE_URL=fake,
            SMSCHANNEL_HTTP_ADDR=f"127.0.0.1:{free_port()}",
            SMSCHANNEL_OUTBOX=outbox,
            SMSCHANNEL_METRICS_ADDR=metrics["server"],
            SMSCHANNEL_OUTBOX_METRICS_ADDR=metrics["outbox"],
        ) as srv,
    ):
        key = srv.create_store()
        content, key = asyncio.run(setup(srv.addr, key, count))
        roles = [role for role in metrics if role in srv.roles()]
        cpu_before, lock_before = srv.cpu_by_role(), {role: scrape(metrics[role]) for role in roles}
        rate = asyncio.run(newsletter(srv.addr, key, content, fake, expected))
        cpu_after, lock_after = srv.cpu_by_role(), {role: scrape(metrics[role]) for role in roles}

        def lock(name: str) -> dict[str, float]:
            metric = f"smschannel_sqlite_write_lock_{name}_seconds_total"
            return {role: lock_after[role][metric] - lock_before[role][metric] for role in roles}

        stats = fake_stats(fake, TOKEN, recipients=True)
        recipients = stats["recipients"]
        assert isinstance(recipients, list)
        eligible = {phone(i) for i in range(0, count, 2)}
        run = Run(
            outbox,
            rate,
            received(stats),
            len(recipients) - len(set(recipients)),
            sum(1 for r in recipients if r not in eligible),
            cpu_after.get("server", 0.0) - cpu_before.get("server", 0.0),
            cpu_after.get("outbox", 0.0) - cpu_before.get("outbox", 0.0),
            srv.peak_rss_mb_by_role(),
            lock("held"),
            lock("waited"),
        )
        if with_blast:
            run.baseline, run.http_cpu = asyncio.run(blast(fake, expected))
    return run


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    expected = (count + 1) // 2
    # The floor before and after the newsletters, against their mean: a machine whose speed drifts
    # during the run (shared cores) moves the two alike.
    before, read_before = storage_floor(count)
    default = run_newsletter(count, "inline", with_blast=True)  # what `make run` runs
    apart = run_newsletter(count, "process", with_blast=False)  # SMSCHANNEL_OUTBOX=process
    after, read_after = storage_floor(count)
    floor, read = (before + after) / 2, (read_before + read_after) / 2
    print(f"storage floor {before:,.0f} SMS/s before the newsletters, {after:,.0f} after")
    one_process = 1 / (1 / floor + read + default.http_cpu)
    for run in (default, apart):
        held = ", ".join(f"{role} {s / run.received * 1e6:.0f} µs an SMS" for role, s in run.lock_held.items())
        print(
            f"newsletter to {count} contacts, outbox {run.outbox}: {run.received} SMS at Instasent,"
            f" {run.duplicates} duplicates, {run.ineligible} to ineligible contacts; {run.rate:,.0f} SMS/s;"
            f" CPU {run.cpu_us(count):.0f} µs a contact (server {run.server_cpu / count * 1e6:.0f},"
            f" outbox process {run.outbox_cpu / count * 1e6:.0f}), {run.cores():.2f} cores busy;"
            f" SQLite's write lock held {run.lock_busy():.0%} of the time"
            f" ({held},"
            f" waiting {sum(run.lock_waited.values()) / run.received * 1e6:.0f} µs an SMS for the other):"
            f" {run.rate / floor:.2f} × the storage floor ({1e6 / floor:.0f} µs an SMS)"
        )
    print(
        f"storage floor {floor:,.0f} SMS/s ({floor / default.baseline:.2f} × a bare bulk blast to the same fake,"
        f" {default.baseline:,.0f} SMS/s); one-process floor: storage {1e6 / floor:.0f} µs + contact reads"
        f" {read * 1e6:.0f} µs + HTTP client {default.http_cpu * 1e6:.0f} µs an SMS = {one_process:,.0f} SMS/s ="
        f" {one_process / floor:.2f} × the storage floor: a single-process server with no other work at all"
    )
    report(
        {
            "bench": "newsletter",
            "contacts": count,
            "expected": expected,
            "received": default.received,
            "duplicates": default.duplicates,
            "ineligible": default.ineligible,
            "rate": round(default.rate),
            "baseline": round(default.baseline),
            "ratio": round(default.rate / default.baseline, 3),
            "floor_ratio": round(default.rate / floor, 3),
            "goal": GOAL,
            "rss_mb": default.rss,
            "cpu_us_per_contact": round(default.cpu_us(count)),
            "cores_busy": round(default.cores(), 2),
            "write_lock_busy": round(default.lock_busy(), 3),
            "outbox_process": {
                "received": apart.received,
                "duplicates": apart.duplicates,
                "ineligible": apart.ineligible,
                "rate": round(apart.rate),
                "floor_ratio": round(apart.rate / floor, 3),
                "rss_mb": apart.rss,
                "server_cpu_us_per_contact": round(apart.server_cpu / count * 1e6),
                "outbox_cpu_us_per_contact": round(apart.outbox_cpu / count * 1e6),
                "cores_busy": round(apart.cores(), 2),
                "write_lock_busy": round(apart.lock_busy(), 3),
                "write_lock_us_per_sms": {
                    role: round(held / apart.received * 1e6) for role, held in apart.lock_held.items()
                },
            },
            "one_process_floor_rate": round(one_process),
            "one_process_floor_ratio": round(one_process / floor, 3),
            "http_client_cpu_us_per_sms": round(default.http_cpu * 1e6, 1),
            "contact_read_us_per_sms": round(read * 1e6, 1),
            "storage_floor_rate": round(floor),
            "storage_floor_ratio": round(floor / default.baseline, 3),
        }
    )


if __name__ == "__main__":
    main()
