"""GetContact with 50 concurrent callers against a bare grpc.aio echo server, in the same run.

Both servers are separate processes driven by the same client loop. Goal (issue 4): ≥ 0.8 × the
echo rate. Usage: python -m bench.get_contact [seconds per side]   (default 10)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import grpc

from bench._common import free_port, report, server
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


async def drive(call: Callable[[int], Awaitable[object]], seconds: float) -> float:
    """Calls per second with CALLERS concurrent loops for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            await call(i)
            i += CALLERS
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(CALLERS)))
    return done / (time.perf_counter() - start)


async def measure_service(addr: str, key: str, seconds: float) -> tuple[float, bytes]:
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

        async def get(i: int) -> object:
            return await contacts.GetContact(cpb.GetContactRequest(name=names[i % CONTACTS]), metadata=md)

        await drive(get, 1.0)  # warm up
        return await drive(get, seconds), sample


async def measure_echo(addr: str, payload: bytes, seconds: float) -> float:
    async with grpc.aio.insecure_channel(addr) as ch:
        echo = ch.unary_unary("/bench.Echo/Echo")
        for _ in range(100):
            try:
                await echo(payload, timeout=1)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

        async def call(i: int) -> object:
            return await echo(payload)

        await drive(call, 1.0)
        return await drive(call, seconds)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with server() as srv:
        key = srv.create_store()
        rate, sample = asyncio.run(measure_service(srv.addr, key, seconds))
    addr = f"127.0.0.1:{free_port()}"
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, addr], env=os.environ.copy())
    try:
        baseline = asyncio.run(measure_echo(addr, sample, seconds))
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(timeout=10)
    print(f"GetContact {rate:,.0f}/s vs bare echo {baseline:,.0f}/s with {CALLERS} concurrent callers")
    report(
        {
            "bench": "get_contact",
            "rate": round(rate),
            "baseline": round(baseline),
            "ratio": round(rate / baseline, 3),
            "goal": GOAL,
            "callers": CALLERS,
        }
    )


if __name__ == "__main__":
    main()
