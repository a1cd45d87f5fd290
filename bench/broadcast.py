"""A broadcast over N contacts (half eligible) while other clients call GetContact: GetContact's p99
during the broadcast against its idle p99, in the same run, and the broadcast's contacts/s.

Goal (issue 7): p99 during ≤ 10 × idle p99; bounded memory (the server's peak RSS is printed).
Usage: python -m bench.broadcast [N]   (default 100,000)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import grpc

from bench._common import fake_instasent, fake_stats, received, report, server
from bench.newsletter import TOKEN, create_broadcast, setup
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import workflow_service_pb2 as wpb
from smschannel.v1 import workflow_service_pb2_grpc as wpb_grpc

GOAL = 10.0
CALLERS = 4


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) > 100 else max(samples)


async def latencies(
    contacts: cpb_grpc.ContactsServiceStub, md: tuple[tuple[str, str], ...], names: list[str], stop: asyncio.Event
) -> list[float]:
    """GetContact latencies (seconds) from CALLERS loops until `stop`."""
    samples: list[float] = []

    async def caller(k: int) -> None:
        i = k
        while not stop.is_set():
            t = time.perf_counter()
            await contacts.GetContact(cpb.GetContactRequest(name=names[i % len(names)]), metadata=md)
            samples.append(time.perf_counter() - t)
            i += CALLERS
            await asyncio.sleep(0.005)  # a steady trickle of reads, not a load test

    await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    return samples


async def measure(addr: str, key: str, content: str, count: int, fake: str) -> dict[str, float]:
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        contacts, workflows = cpb_grpc.ContactsServiceStub(ch), wpb_grpc.WorkflowServiceStub(ch)
        page = await contacts.ListContacts(cpb.ListContactsRequest(parent="stores/bench", page_size=1000), metadata=md)
        names = [c.name for c in page.contacts]
        stop = asyncio.Event()
        idle_task = asyncio.ensure_future(latencies(contacts, md, names, stop))
        await asyncio.sleep(5)
        stop.set()
        idle = await idle_task

        wf = await create_broadcast(workflows, md, content)
        stop = asyncio.Event()
        busy_task = asyncio.ensure_future(latencies(contacts, md, names, stop))
        start = time.perf_counter()
        await workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=md)
        expected = (count + 1) // 2
        while received(await asyncio.to_thread(fake_stats, fake, TOKEN)) < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
        stop.set()
        busy = await busy_task
    return {"idle_p99": p99(idle), "busy_p99": p99(busy), "seconds": elapsed, "samples": len(busy)}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with fake_instasent(TOKEN) as fake, server(INSTASENT_BASE_URL=fake) as srv:
        key = srv.create_store()
        content, key = asyncio.run(setup(srv.addr, key, count))
        figures = asyncio.run(measure(srv.addr, key, content, count, fake))
        rss = srv.peak_rss_mb()
    ratio = figures["busy_p99"] / figures["idle_p99"]
    rate = count / figures["seconds"]
    print(
        f"broadcast over {count} contacts in {figures['seconds']:.1f}s ({rate:,.0f} contacts/s);"
        f" GetContact p99 {figures['idle_p99'] * 1000:.2f} ms idle, {figures['busy_p99'] * 1000:.2f} ms during"
        f" ({ratio:.1f}×); server peak RSS {rss} MB"
    )
    report(
        {
            "bench": "broadcast",
            "contacts": count,
            "contacts_per_s": round(rate),
            "idle_p99_ms": round(figures["idle_p99"] * 1000, 2),
            "busy_p99_ms": round(figures["busy_p99"] * 1000, 2),
            "ratio": round(ratio, 2),
            "goal": GOAL,
            "rss_mb": rss,
        }
    )


if __name__ == "__main__":
    main()
