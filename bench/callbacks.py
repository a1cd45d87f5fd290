"""Instasent callbacks through the sidecar and the server for S seconds, against the newsletter that
sent their SMS in the same run: every SMS comes back as at least one callback, so absorbing them must
keep up with sending, or a backlog builds and unsubscribes arrive late.

Goal (issue 16): callbacks/s ≥ 1.0 × the newsletter's SMS/s, with every callback applied once and
none lost; a replay must be all duplicates. Also printed: the CPU per callback of the server and the
sidecar, and of the load generator (it shares the two cores). Usage: python -m bench.callbacks [seconds]
(default 30).

Then "while sending" (under `while_sending` in the JSON): in production the callbacks come back while
the newsletter still sends, and the two share the server. So on a fresh server a second newsletter
sends while the first one's callbacks are posted, and callbacks/s is set against the SMS/s that reached
Instasent in the same seconds, with 64 and then 256 callbacks in flight. The same goal applies.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc

from bench._common import fake_instasent, fake_stats, free_port, received, report, server
from bench.newsletter import TOKEN, create_broadcast, newsletter, setup
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc
from smschannel.v1 import workflow_service_pb2 as wpb
from smschannel.v1 import workflow_service_pb2_grpc as wpb_grpc

GOAL = 1.0  # × the newsletter's send rate
# The callbacks are posted by wrk (a C load generator, so that the client does not take the CPU it
# measures; bench/callbacks.lua). DELIVERED in the log may exceed the 200s counted: the requests in
# flight when wrk stops are applied but not counted; the replay then finds one of the first callbacks
# new when wrk made it without sending it.
# Contacts to send to for each second of callbacks (half are eligible): enough SMS that wrk never runs out.
CONTACTS_PER_SECOND = 24000
# Callbacks in flight: Instasent delivers them from many workers at once, and a newsletter's come in a
# burst. (With 32, the server's batches held ~16 callbacks and its CPU a callback was 134 µs; with 64,
# ~30 and 94 µs.)
CONCURRENCY = 64
# While a newsletter sends, each answer takes longer (the server shares its core with the sending), and
# Instasent's workers do not wait for one another: callbacks in flight then grow with the answer time.
# 64 connections, each waiting for its answer before the next post, would measure the answer time, not
# what the service absorbs; so "while sending" is measured with both.
IN_FLIGHT_WHILE_SENDING = (64, 256)
SECONDS_WHILE_SENDING = 10.0


async def callback_path(addr: str, key: str) -> str:
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        config = await pb_grpc.SmsChannelServiceStub(ch).GetSmsChannelConfig(
            pb.GetSmsChannelConfigRequest(name="stores/bench/smsChannelConfig"), metadata=md
        )
    return "/instasent/callbacks/" + str(config.callback_url).split("/instasent/callbacks/", 1)[1]


async def _post_loop(
    host: str,
    port: int,
    path: str,
    bodies: Iterator[bytes],
    deadline: float,
    codes: dict[int, int],
    outcomes: dict[str, int],
) -> int:
    """One keep-alive HTTP/1.1 connection posting bodies until they run out or the deadline passes.

    A minimal client on purpose: httpx costs more CPU per request than the sidecar itself, and the
    load generator shares the machine's two cores with what it measures."""
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    try:
        for body in bodies:
            if time.perf_counter() > deadline:
                break
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = await reader.readexactly(length)
            code = int(status_line.split()[1])
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                outcome = json.loads(payload)["outcome"]
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            n += 1
    finally:
        writer.close()
    return n


async def blast(url: str, ids: list[list[str]], seconds: float) -> tuple[int, float, dict[int, int], dict[str, int]]:
    """POST `delivered` callbacks (each SMS once) for up to `seconds`; (sent, elapsed, HTTP codes, outcomes)."""
    codes: dict[int, int] = {}
    outcomes: dict[str, int] = {}
    parsed = urllib.parse.urlsplit(url)
    bodies = (json.dumps({"id": pid, "clientId": cid, "status": "delivered", "code": "0"}).encode() for pid, cid in ids)
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    sent = sum(
        await asyncio.gather(
            *(
                _post_loop(parsed.hostname or "", parsed.port or 80, parsed.path, bodies, deadline, codes, outcomes)
                for _ in range(CONCURRENCY)
            )
        )
    )
    return sent, time.perf_counter() - start, codes, outcomes


def wrk_blast(
    url: str, ids: list[list[str]], seconds: float, connections: int = CONCURRENCY
) -> tuple[dict[str, float], float]:
    """POST the SMS's `delivered` callbacks (each once) for `seconds` with wrk, a C load generator
    (one thread, `connections` at once): its JSON summary, and the CPU seconds wrk used."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk not found: `make bench` installs it (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies"
        bodies.write_text(
            "".join(
                json.dumps({"id": pid, "clientId": cid, "status": "delivered", "code": "0"}) + "\n" for pid, cid in ids
            )
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        script = str(Path(__file__).with_name("callbacks.lua"))
        shape = ["-t", "1", "-c", str(connections), "-d", f"{round(seconds)}s", "--timeout", "10s"]
        out = subprocess.run(
            [wrk, *shape, "-s", script, url, "--", str(bodies)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(out.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary, cpu


async def delivered(addr: str, key: str) -> int:
    """Messages DELIVERED in the log (each callback moved exactly one)."""
    md = (("authorization", f"Bearer {key}"),)
    total, token = 0, ""
    async with grpc.aio.insecure_channel(addr) as ch:
        sms = pb_grpc.SmsChannelServiceStub(ch)
        while True:
            page = await sms.ListMessages(
                pb.ListMessagesRequest(
                    parent="stores/bench", filter="status = DELIVERED", page_size=1000, page_token=token
                ),
                metadata=md,
            )
            total += len(page.messages)
            token = page.next_page_token
            if not token:
                return total


async def activate(addr: str, key: str, content: str) -> None:
    """Start a broadcast newsletter of `content` to every contact, and return at once."""
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        workflows = wpb_grpc.WorkflowServiceStub(ch)
        wf = await create_broadcast(workflows, md, content)
        await workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=md)


def while_sending(seconds: float) -> list[dict[str, float]]:
    """The callbacks of a first newsletter posted while a second one sends (as in production: each SMS
    sent comes back as a callback while the next ones go out), with each of IN_FLIGHT_WHILE_SENDING
    callbacks in flight in turn: callbacks/s against the SMS/s that reached Instasent in the same
    seconds, and the CPU of each process a callback."""
    sms = int(CONTACTS_PER_SECOND / 2 * seconds * len(IN_FLIGHT_WHILE_SENDING))  # each newsletter's
    http_port = free_port()
    figures: list[dict[str, float]] = []
    with (
        fake_instasent(TOKEN) as fake,
        server("run", INSTASENT_BASE_URL=fake, SMSCHANNEL_HTTP_ADDR=f"127.0.0.1:{http_port}") as srv,
    ):
        key = srv.create_store()
        content, key = asyncio.run(setup(srv.addr, key, 2 * sms))
        asyncio.run(newsletter(srv.addr, key, content, fake, sms))
        ids = fake_stats(fake, TOKEN, ids=True)["ids"]
        assert isinstance(ids, list)
        url = f"http://127.0.0.1:{http_port}" + asyncio.run(callback_path(srv.addr, key))
        asyncio.run(activate(srv.addr, key, content))
        while received(fake_stats(fake, TOKEN)) < sms + 1000:  # under way
            time.sleep(0.05)
        for in_flight in IN_FLIGHT_WHILE_SENDING:
            before, sent_before, start = srv.cpu_by_role(), received(fake_stats(fake, TOKEN)), time.perf_counter()
            summary, load_cpu = wrk_blast(url, ids, seconds, in_flight)
            after, sent_after = srv.cpu_by_role(), received(fake_stats(fake, TOKEN))
            elapsed = time.perf_counter() - start
            ids = ids[int(summary["requests"]) :]
            assert not summary["wrapped"], f"more callbacks than SMS to report: raise CONTACTS_PER_SECOND ({summary})"
            assert sent_after < 2 * sms, "the newsletter ended before the callbacks: raise CONTACTS_PER_SECOND"
            callbacks = int(summary["requests"])
            cpu = {role: (after[role] - before.get(role, 0.0)) / callbacks * 1e6 for role in after}
            figures.append(
                {
                    "in_flight": in_flight,
                    "rate": round(callbacks / float(summary["seconds"])),
                    "send_rate": round((sent_after - sent_before) / elapsed),
                    "ratio": round(callbacks / float(summary["seconds"]) / ((sent_after - sent_before) / elapsed), 3),
                    "errors": int(summary["not_ok"] + summary["errors"]),
                    "server_cpu_us_per_callback": round(cpu.get("server", 0.0)),
                    "sidecar_cpu_us_per_callback": round(cpu.get("sidecar", 0.0)),
                    "load_cpu_us_per_callback": round(load_cpu / callbacks * 1e6),
                }
            )
    for f in figures:
        print(
            f"while a newsletter sends, {f['in_flight']:.0f} callbacks in flight: {f['rate']:,.0f} callbacks/s against"
            f" {f['send_rate']:,.0f} SMS/s sent in the same seconds ({f['ratio']:.2f} ×), {f['errors']:.0f} errors;"
            f" CPU a callback (the server's includes its sending): server {f['server_cpu_us_per_callback']:.0f} µs,"
            f" sidecar {f['sidecar_cpu_us_per_callback']:.0f} µs"
        )
    return figures


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    contacts = int(CONTACTS_PER_SECOND * seconds)
    http_port = free_port()
    with (
        fake_instasent(TOKEN) as fake,
        server("run", INSTASENT_BASE_URL=fake, SMSCHANNEL_HTTP_ADDR=f"127.0.0.1:{http_port}") as srv,
    ):
        key = srv.create_store()
        content, key = asyncio.run(setup(srv.addr, key, contacts))
        send_rate = asyncio.run(newsletter(srv.addr, key, content, fake, contacts // 2))
        ids = fake_stats(fake, TOKEN, ids=True)["ids"]
        assert isinstance(ids, list)
        url = f"http://127.0.0.1:{http_port}" + asyncio.run(callback_path(srv.addr, key))
        before = srv.cpu_by_role()
        summary, load_cpu = wrk_blast(url, ids, seconds)
        after = srv.cpu_by_role()
        sent, elapsed = int(summary["requests"]), float(summary["seconds"])
        assert not summary["wrapped"], f"more callbacks than SMS to report: raise CONTACTS_PER_SECOND ({summary})"
        codes = {200: int(summary["ok"]), 0: int(summary["not_ok"] + summary["errors"])}
        outcomes = {"applied": int(summary["applied"]), "duplicate": int(summary["duplicate"])}
        server_cpu = after.get("server", 0.0) - before.get("server", 0.0)
        sidecar_cpu = after.get("sidecar", 0.0) - before.get("sidecar", 0.0)
        again, _, _, dup_outcomes = asyncio.run(blast(url, ids[:2000], 60))  # replay: all must be duplicates
        in_log = asyncio.run(delivered(srv.addr, key))
    rate = sent / elapsed
    ratio = rate / send_rate
    print(
        f"{sent} callbacks in {elapsed:.1f}s: {rate:,.0f}/s against the newsletter's {send_rate:,.0f} SMS/s"
        f" ({ratio:.2f} ×); HTTP {codes}; outcomes {outcomes}; {in_log} messages DELIVERED;"
        f" replay of {again}: {dup_outcomes}; CPU a callback: server {server_cpu / sent * 1e6:.0f} µs,"
        f" sidecar {sidecar_cpu / sent * 1e6:.0f} µs, load generator {load_cpu / sent * 1e6:.0f} µs"
    )
    concurrent = while_sending(SECONDS_WHILE_SENDING)
    report(
        {
            "bench": "callbacks",
            "rate": round(rate),
            "newsletter_rate": round(send_rate),
            "ratio": round(ratio, 3),
            "goal": GOAL,
            "seconds": round(elapsed, 1),
            "sent": sent,
            "applied": outcomes.get("applied", 0),
            "delivered_in_log": in_log,
            "lost": sent - outcomes.get("applied", 0),  # answered 200 but not applied
            "replayed_duplicates": dup_outcomes.get("duplicate", 0),
            "errors": sent - codes.get(200, 0),
            "server_cpu_us_per_callback": round(server_cpu / sent * 1e6),
            "sidecar_cpu_us_per_callback": round(sidecar_cpu / sent * 1e6),
            "load_cpu_us_per_callback": round(load_cpu / sent * 1e6),
            "while_sending": concurrent,
        }
    )


if __name__ == "__main__":
    main()
