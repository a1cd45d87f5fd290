"""GetContact with 50 concurrent callers against a bare grpc.aio echo server, in the same run.

Both servers are separate processes driven by the same client loop. Goal (issue 4): ≥ 0.8 × the
echo rate. Usage: python -m bench.get_contact [seconds per round]   (default 5; 3 alternating rounds)
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import grpc

from bench._common import Server, free_port, process_cpu, report, server
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

CALLERS = 50
CONTACTS = 1000
GOAL = 0.8

ECHO_SERVER = """
import asyncio, sys, grpc
async def echo(request, context):
    return request
async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


async def drive(call: Callable[[int], Awaitable[object]], seconds: float, pid: int = 0) -> tuple[float, float]:
    """Calls per second with CALLERS concurrent loops for `seconds`, and the CPU µs per call of the
    server process `pid` (0: not measured)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await call(i)
            i += CALLERS
            done += 1

    cpu = process_cpu(pid) if pid else 0.0
    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    elapsed = time.perf_counter() - start
    cpu_us = (process_cpu(pid) - cpu) / done * 1e6 if pid else 0.0
    return done / elapsed, cpu_us


async def setup(addr: str, key: str) -> tuple[list[str], bytes]:
    """A store with CONTACTS contacts; their names and one serialized GetContact answer."""
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(addr) as ch:
        contacts = cpb_grpc.ContactsServiceStub(ch)
        await pb_grpc.SmsChannelServiceStub(ch).UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(name="stores/bench/smsChannelConfig", default_country="ES")
            ),
            metadata=md,
        )
        names = []
        for i in range(CONTACTS):
            c = await contacts.CreateContact(
                cpb.CreateContactRequest(
                    parent="stores/bench",
                    contact=cpb.Contact(email=f"c{i}@x.co", first_name="Ana", mobile_phone=f"6{i:08d}"),
                ),
                metadata=md,
            )
            names.append(c.name)
        sample = (await contacts.GetContact(cpb.GetContactRequest(name=names[0]), metadata=md)).SerializeToString()
    return names, sample


async def compare(
    service: Server, key: str, echo_addr: str, echo_pid: int, seconds: float, rounds: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (rate, server CPU µs per call) of GetContact and of echo, measured in alternating
    rounds (noise hits both)."""
    service_addr = service.addr
    names, sample = await setup(service_addr, key)
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(service_addr) as sch, grpc.aio.insecure_channel(echo_addr) as ech:
        contacts = cpb_grpc.ContactsServiceStub(sch)
        echo = ech.unary_unary("/bench.Echo/Echo")
        for _ in range(100):
            try:
                await echo(sample, timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

        async def get(i: int) -> object:
            return await contacts.GetContact(cpb.GetContactRequest(name=names[i % CONTACTS]), metadata=md)

        async def call_echo(i: int) -> object:
            return await echo(sample)

        await drive(get, 1.0)  # warm up both
        await drive(call_echo, 1.0)
        service_runs, echo_runs = [], []
        for _ in range(rounds):
            service_runs.append(await drive(get, seconds, service.proc.pid))
            echo_runs.append(await drive(call_echo, seconds, echo_pid))
    return _medians(service_runs), _medians(echo_runs)


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    rounds = 3
    echo_addr = f"127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_addr], env=os.environ.copy())
    try:
        with server() as srv:
            key = srv.create_store()
            (rate, cpu_us), (baseline, echo_cpu_us) = asyncio.run(
                compare(srv, key, echo_addr, echo.pid, seconds, rounds)
            )
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(timeout=10)
    print(
        f"GetContact {rate:,.0f}/s vs bare echo {baseline:,.0f}/s with {CALLERS} concurrent callers (medians);"
        f" server CPU a call: {cpu_us:.0f} µs vs echo {echo_cpu_us:.0f} µs"
    )
    report(
        {
            "bench": "get_contact",
            "rate": round(rate),
            "baseline": round(baseline),
            "ratio": round(rate / baseline, 3),
            "goal": GOAL,
            "callers": CALLERS,
            "rounds": rounds,
            "server_cpu_us_per_call": round(cpu_us),
            "echo_cpu_us_per_call": round(echo_cpu_us),
        }
    )


if __name__ == "__main__":
    main()
