"""Instasent callbacks through the sidecar and the server for S seconds: the sustained rate, and that
every one was applied and none twice.

Goal (issue 6): ≥ 2,000 callbacks/s sustained for 30 s. Usage: python -m bench.callbacks [seconds]
(default 30). The messages are sent first by a broadcast (not timed).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
from collections.abc import Iterator

import grpc

from bench._common import fake_instasent, fake_stats, free_port, report, server
from bench.newsletter import TOKEN, newsletter, setup
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

GOAL = 2000
CONCURRENCY = 32


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


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    contacts = int(GOAL * seconds * 2 * 1.5)  # half are eligible; 1.5× what the goal rate would use
    http_port = free_port()
    with (
        fake_instasent(TOKEN) as fake,
        server("run", INSTASENT_BASE_URL=fake, SMSCHANNEL_HTTP_ADDR=f"127.0.0.1:{http_port}") as srv,
    ):
        key = srv.create_store()
        content, key = asyncio.run(setup(srv.addr, key, contacts))
        asyncio.run(newsletter(srv.addr, key, content, fake, contacts // 2))
        ids = fake_stats(fake, TOKEN, ids=True)["ids"]
        assert isinstance(ids, list)
        url = f"http://127.0.0.1:{http_port}" + asyncio.run(callback_path(srv.addr, key))
        sent, elapsed, codes, outcomes = asyncio.run(blast(url, ids, seconds))
        again, _, _, dup_outcomes = asyncio.run(blast(url, ids[:2000], 60))  # replay: all must be duplicates
        in_log = asyncio.run(delivered(srv.addr, key))
    rate = sent / elapsed
    print(
        f"{sent} callbacks in {elapsed:.1f}s: {rate:,.0f}/s; HTTP {codes}; outcomes {outcomes};"
        f" {in_log} messages DELIVERED; replay of {again}: {dup_outcomes}"
    )
    report(
        {
            "bench": "callbacks",
            "rate": round(rate),
            "goal": GOAL,
            "seconds": round(elapsed, 1),
            "sent": sent,
            "applied": outcomes.get("applied", 0),
            "delivered_in_log": in_log,
            "replayed_duplicates": dup_outcomes.get("duplicate", 0),
            "errors": sent - codes.get(200, 0),
        }
    )


if __name__ == "__main__":
    main()
