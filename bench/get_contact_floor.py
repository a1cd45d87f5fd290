"""What is left of GetContact's budget for its own work: the same 50 callers against four servers.

1. `echo`: the bare grpc.aio echo server, `bench/get_contact`'s baseline;
2. `typed`: a bare grpc.aio server with the generated ContactsService servicer answering a constant
   Contact (gRPC and protobuf, nothing of ours);
   `typed_sqlite`: the same, reading one row by key from an SQLite file first (Python's sqlite3
   lets go of the GIL at each step, and gRPC's poller thread takes it: what a point read costs here);
3. `constant`: this service with GetContact's body replaced by that constant answer: everything the
   service does around a call (authentication, request id, metrics, error mapping, its other services
   and background tasks) and no SQL, no conversion;
4. `service`: this service.

(3) is the ceiling of any GetContact this server could have: if it is under get_contact's goal
(0.8 × echo), no handler body can meet it. Rounds alternate; medians.
Usage: python -m bench.get_contact_floor [seconds per round]   (default 4; 3 rounds)
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack

import grpc

from bench._common import free_port, report, server
from bench.get_contact import CALLERS, ECHO_SERVER, GOAL, drive, setup
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc

ROUNDS = 3
_CONSTANT = (
    "from smschannel.v1 import contacts_service_pb2 as pb\n"
    "ANSWER = pb.Contact(name='stores/bench/contacts/0000000000000000001', email='c1@x.co', first_name='Ana',"
    " mobile_phone='+34600000001', mobile_phone_status=1, sms_subscription_status=1, etag='W/\"1\"')\n"
)
TYPED_SERVER = (
    _CONSTANT
    + """import asyncio, sqlite3, sys, tempfile, grpc
from smschannel.v1 import contacts_service_pb2_grpc as pb_grpc
READ = len(sys.argv) > 2
db = sqlite3.connect(tempfile.mkdtemp() + "/t.db", isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, email TEXT, phone TEXT, version INTEGER)")
db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(str(i), f"c{i}@x.co", "+34600000001", 1) for i in range(1000)])
class Contacts(pb_grpc.ContactsServiceServicer):
    async def GetContact(self, request, context):
        if READ:
            db.execute("SELECT * FROM t WHERE id = ?", (str(id(request) % 1000),)).fetchone()
        return ANSWER
async def main():
    server = grpc.aio.server()
    pb_grpc.add_ContactsServiceServicer_to_server(Contacts(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""
)
CONSTANT_SERVICE = (
    _CONSTANT
    + """from smschannel.__main__ import main
from smschannel.api.contacts import ContactsServicer
async def constant(self, request, context):
    return ANSWER
ContactsServicer.GetContact = constant
main(["server"])
"""
)

Call = Callable[[int], Awaitable[object]]


def _answer() -> cpb.Contact:
    """The constant answer of `typed` and `constant`."""
    namespace: dict[str, object] = {}
    exec(_CONSTANT, namespace)
    answer = namespace["ANSWER"]
    assert isinstance(answer, cpb.Contact)
    return answer


async def _service_call(addr: str, key: str, stack: list[grpc.aio.Channel]) -> Call:
    names, _ = await setup(addr, key)
    channel = grpc.aio.insecure_channel(addr)
    stack.append(channel)
    stub, md = cpb_grpc.ContactsServiceStub(channel), (("authorization", f"Bearer {key}"),)

    async def call(i: int) -> object:
        return await stub.GetContact(cpb.GetContactRequest(name=names[i % len(names)]), metadata=md)

    return call


def _echo_call(channel: grpc.aio.Channel) -> Call:
    echo = channel.unary_unary("/bench.Echo/Echo")
    sample = _answer().SerializeToString()  # echoes an answer's bytes, like get_contact

    async def call(i: int) -> object:
        return await echo(sample, wait_for_ready=True)

    return call


def _typed_call(channel: grpc.aio.Channel) -> Call:
    stub = cpb_grpc.ContactsServiceStub(channel)
    request = cpb.GetContactRequest(name="stores/bench/contacts/1")

    async def call(i: int) -> object:
        return await stub.GetContact(request, wait_for_ready=True)

    return call


async def measure(targets: dict[str, tuple[str, str, int]], seconds: float) -> dict[str, tuple[float, float]]:
    """Median (rate, server CPU µs a call) of each target: name → (address, key or "", pid)."""
    channels: list[grpc.aio.Channel] = []
    calls: dict[str, Call] = {}
    try:
        for name, (addr, key, _) in targets.items():
            if key:
                calls[name] = await _service_call(addr, key, channels)
            else:
                channel = grpc.aio.insecure_channel(addr)
                channels.append(channel)
                calls[name] = _echo_call(channel) if name == "echo" else _typed_call(channel)
            await drive(calls[name], 1.0)  # warm up
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, (_, _, pid) in targets.items():
                runs[name].append(await drive(calls[name], seconds, pid))
    finally:
        for channel in channels:
            await channel.close()
    return {
        name: (statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs)) for name, rs in runs.items()
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    with ExitStack() as stack:
        bare: dict[str, tuple[str, str, int]] = {}
        bare_servers = (("echo", ECHO_SERVER), ("typed", TYPED_SERVER), ("typed_sqlite", TYPED_SERVER, "read"))
        for name, code, *args in bare_servers:
            addr = f"127.0.0.1:{free_port()}"
            proc = subprocess.Popen([sys.executable, "-c", code, addr, *args])
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            bare[name] = (addr, "", proc.pid)
        constant = stack.enter_context(server(code=CONSTANT_SERVICE))
        service = stack.enter_context(server())
        targets = {
            **bare,
            "constant": (constant.addr, constant.create_store(), constant.proc.pid),
            "service": (service.addr, service.create_store(), service.proc.pid),
        }
        figures = asyncio.run(measure(targets, seconds))
    echo_rate = figures["echo"][0]
    for name, (rate, cpu) in figures.items():
        print(f"{name:12} {rate:8,.0f}/s  {rate / echo_rate:.3f} × echo  server CPU {cpu:4.0f} µs a call")
    report(
        {
            "bench": "get_contact_floor",
            "callers": CALLERS,
            "goal": GOAL,
            **{f"{name}_rate": round(rate) for name, (rate, _) in figures.items()},
            **{f"{name}_ratio": round(rate / echo_rate, 3) for name, (rate, _) in figures.items() if name != "echo"},
            **{f"{name}_cpu_us_per_call": round(cpu) for name, (_, cpu) in figures.items()},
        }
    )


if __name__ == "__main__":
    main()
