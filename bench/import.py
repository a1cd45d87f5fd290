"""ImportContacts of N generated contacts through the real gRPC API into a fresh SQLite file, against
bare phonenumbers parse+validate+format of the same rows in the same run.

Goal (issue 4): import rate ≥ 0.6 × the bare rate; peak RSS of the server ≤ 300 MB.
Usage: python -m bench.import [N]   (default 1,000,000)
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import phonenumbers

from bench._common import report, server
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

ROWS_PER_MESSAGE = 500
GOAL_RATIO = 0.6
GOAL_RSS_MB = 300


def phone(i: int, rng: random.Random) -> str:
    """Mixed national and international formats; 1% invalid."""
    if i % 100 == 99:
        return rng.choice(["12345", "+34 1", "call me", "+999 123"])
    n = 600_000_000 + (i * 7919) % 100_000_000  # Spanish 6xxxxxxxx mobiles, all valid
    s = str(n)
    kind = i % 5
    if kind == 0:
        return f"{s[:3]} {s[3:5]} {s[5:7]} {s[7:]}"  # national, grouped
    if kind == 1:
        return f"+34{s}"
    if kind == 2:
        return f"0034 {s}"
    if kind == 3:
        return f"+33 6 1{s[2]} {s[3:5]} {s[5:7]} {s[7:9]}"  # French mobile (61...)
    return s  # national, bare


def rows(count: int) -> Iterator[tuple[str, str]]:
    """(email, raw phone) pairs, generated on the fly: constant memory on both sides."""
    rng = random.Random(42)
    for i in range(count):
        yield f"c{i}@example.com", phone(i, rng)


def bare_rate(count: int) -> float:
    """Rows/s of parse + validate + format alone, on the same rows."""
    start = time.perf_counter()
    for _, raw in rows(count):
        text = raw.strip()
        if text.startswith("00"):
            text = "+" + text[2:]
        try:
            number = phonenumbers.parse(text, None if text.startswith("+") else "ES")
            if phonenumbers.is_valid_number(number):
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        except phonenumbers.NumberParseException:
            pass
    return count / (time.perf_counter() - start)


async def import_rate(addr: str, key: str, count: int) -> tuple[float, cpb.ImportContactsResponse]:
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        await pb_grpc.SmsChannelServiceStub(ch).UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(name="stores/bench/smsChannelConfig", default_country="ES")
            ),
            metadata=md,
        )

        async def messages() -> AsyncIterator[cpb.ImportContactsRequest]:
            batch: list[cpb.Contact] = []
            first = True
            for email, raw in rows(count):
                batch.append(cpb.Contact(email=email, mobile_phone=raw))
                if len(batch) == ROWS_PER_MESSAGE:
                    yield cpb.ImportContactsRequest(parent="stores/bench" if first else "", contacts=batch)
                    batch, first = [], False
            if batch:
                yield cpb.ImportContactsRequest(parent="stores/bench" if first else "", contacts=batch)

        start = time.perf_counter()
        resp = await cpb_grpc.ContactsServiceStub(ch).ImportContacts(messages(), metadata=md, timeout=3600)
        return count / (time.perf_counter() - start), resp


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    baseline = bare_rate(min(count, 200_000))
    with server() as srv:
        key = srv.create_store()
        before = srv.cpu_seconds()
        rate, resp = asyncio.run(import_rate(srv.addr, key, count))
        after = srv.cpu_seconds()
        rss = srv.peak_rss_mb()
    server_us, workers_us = ((a - b) / count * 1e6 for a, b in zip(after, before, strict=True))
    print(
        f"imported {resp.total_count} rows: {resp.created_count} created, {resp.failed_count} failed"
        f" in {count / rate:.1f}s; import {rate:,.0f} rows/s vs bare phonenumbers {baseline:,.0f} rows/s"
        f" ({1e6 / baseline:.1f} µs a row); CPU a row: server {server_us:.1f} µs, import workers"
        f" {workers_us:.1f} µs; server peak RSS {rss} MB"
    )
    assert resp.total_count == count
    assert resp.failed_count == count // 100
    report(
        {
            "bench": "import",
            "rows": count,
            "rate": round(rate),
            "baseline": round(baseline),
            "ratio": round(rate / baseline, 3),
            "goal": GOAL_RATIO,
            "rss_mb": rss,
            "rss_goal_mb": GOAL_RSS_MB,
            "server_cpu_us_per_row": round(server_us, 1),
            "workers_cpu_us_per_row": round(workers_us, 1),
            "bare_us_per_row": round(1e6 / baseline, 1),
            "created": resp.created_count,
            "failed": resp.failed_count,
        }
    )


if __name__ == "__main__":
    main()
