"""GetContact under a C load generator (h2load), against bare grpc.aio servers, in alternating rounds.

Four servers, each its own process on uvloop, each loaded the same way (CONNECTIONS connections ×
STREAMS streams = 50 concurrent callers) by h2load, so the client is not the bottleneck:

1. `service`: this service's GetContact, with its production defaults;
2. `typed_sqlite`: a bare grpc.aio server with the generated ContactsService servicer that reads the
   same row from an SQLite file by key and answers a Contact: the goal's baseline (issue 16: ≥ 0.7 ×);
3. `echo`: a bare grpc.aio server echoing the request's bytes (its ratio is printed too);
4. `constant`: this service with GetContact's body replaced by a constant answer: everything the
   service does around a call (authentication, request id, metrics, error mapping, its background
   tasks) and nothing of the handler: the ceiling of any GetContact here.

A unary gRPC call is an HTTP/2 POST whose body is the 5-byte framed request, with `content-type:
application/grpc` and `te: trailers`. Every call is checked OK beforehand with a real gRPC client
(h2load only sees HTTP statuses). Rounds alternate between the servers; medians. Also printed: each
server's CPU per call. Usage: python -m bench.get_contact [seconds per round]   (default 5; 3 rounds)
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import grpc

from bench._common import Server, free_port, process_cpu, report, server
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

GOAL = 0.7  # × typed_sqlite
CONNECTIONS, STREAMS = 5, 10  # 50 concurrent callers
ROUNDS = 3
METHOD = "/smschannel.v1.ContactsService/GetContact"

_ANSWER = (
    "from smschannel.v1 import contacts_service_pb2 as pb\n"
    "ANSWER = pb.Contact(name='stores/bench/contacts/0000000000000000001', email='c1@x.co', first_name='Ana',"
    " mobile_phone='+34600000001', mobile_phone_status=1, sms_subscription_status=1, etag='W/\"1\"')\n"
)
# The bare servers run on uvloop, as the service does: the baseline differs by our code only.
TYPED_SQLITE = (
    _ANSWER
    + """import sqlite3, sys, tempfile, grpc, uvloop
from smschannel.v1 import contacts_service_pb2_grpc as pb_grpc
db = sqlite3.connect(tempfile.mkdtemp() + "/t.db", isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("CREATE TABLE t (store_id TEXT, id TEXT, email TEXT, phone TEXT, PRIMARY KEY (store_id, id))")
db.executemany("INSERT INTO t VALUES ('bench', ?, ?, ?)", [(f"c{i}", f"c{i}@x.co", "+34600000001") for i in range(9)])
class Contacts(pb_grpc.ContactsServiceServicer):
    async def GetContact(self, request, context):
        db.execute("SELECT * FROM t WHERE store_id = 'bench' AND id = ?", (request.name.rsplit("/", 1)[1],)).fetchone()
        return ANSWER
async def main():
    server = grpc.aio.server()
    pb_grpc.add_ContactsServiceServicer_to_server(Contacts(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
uvloop.run(main())
"""
)
ECHO = """import sys, grpc, uvloop
async def echo(request, context):
    return request
async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "smschannel.v1.ContactsService", {"GetContact": grpc.unary_unary_rpc_method_handler(echo)}),))
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()
uvloop.run(main())
"""
CONSTANT_SERVICE = (
    _ANSWER
    + """from smschannel.__main__ import main
from smschannel.api.contacts import ContactsServicer
async def constant(self, request, context):
    return ANSWER
ContactsServicer.GetContact = constant
main(["server"])
"""
)


def h2load() -> str:
    """The h2load binary (Debian's nghttp2-client; `make bench` installs it)."""
    found = shutil.which("h2load")
    if found is None:
        sys.exit("h2load not found: `make bench` installs it (apt-get install nghttp2-client)")
    return found


def setup(addr: str, key: str) -> str:
    """A store with a contact; the contact's name."""
    md = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(addr) as ch:
        pb_grpc.SmsChannelServiceStub(ch).UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(name="stores/bench/smsChannelConfig", default_country="ES")
            ),
            metadata=md,
        )
        contact = cpb_grpc.ContactsServiceStub(ch).CreateContact(
            cpb.CreateContactRequest(
                parent="stores/bench",
                contact_id="c1",
                contact=cpb.Contact(email="c1@x.co", first_name="Ana", mobile_phone="600000001"),
            ),
            metadata=md,
        )
    return str(contact.name)


def check(addr: str, name: str, key: str) -> None:
    """One real gRPC call must answer OK (h2load counts HTTP statuses, which are 200 either way)."""
    md = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        cpb_grpc.ContactsServiceStub(ch).GetContact(cpb.GetContactRequest(name=name), metadata=md, timeout=10)


_FINISHED = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def load(
    addr: str, body: Path, key: str, seconds: float, pid: int, connections: int = CONNECTIONS, streams: int = STREAMS
) -> tuple[float, float]:
    """Calls a second over `seconds` and the server's CPU µs a call, under h2load."""
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    if key:
        headers += ["-H", f"authorization: Bearer {key}"]
    cpu = process_cpu(pid)
    shape = ["-c", str(connections), "-m", str(streams), "-D", f"{round(seconds * 1000)}ms"]
    url = f"http://{addr}{METHOD}"
    out = subprocess.run([h2load(), *shape, "-d", str(body), *headers, url], capture_output=True, text=True, check=True)
    finished, status = _FINISHED.search(out.stdout), _STATUS.search(out.stdout)
    if not finished or not status or status.group(2, 3, 4) != ("0", "0", "0") or not int(status.group(1)):
        sys.exit(f"h2load against {url} did not finish cleanly:\n{out.stdout}")
    done = int(status.group(1))
    return float(finished.group(1)), (process_cpu(pid) - cpu) / done * 1e6


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        targets: dict[str, tuple[str, str, int]] = {}  # name → (address, key, pid)
        for name, code in (("typed_sqlite", TYPED_SQLITE), ("echo", ECHO)):
            addr = f"127.0.0.1:{free_port()}"
            proc = subprocess.Popen([sys.executable, "-c", code, addr])
            stack.callback(proc.wait, 10)
            stack.callback(proc.terminate)
            targets[name] = (addr, "", proc.pid)
        services: dict[str, Server] = {
            "service": stack.enter_context(server()),
            "constant": stack.enter_context(server(code=CONSTANT_SERVICE)),
        }
        contact = ""
        for name, srv in services.items():
            key = srv.create_store()
            contact = setup(srv.addr, key)
            targets[name] = (srv.addr, key, srv.proc.pid)
        for addr, key, _ in targets.values():
            check(addr, contact, key)  # the echo server answers the request's own bytes, a valid Contact
        request = cpb.GetContactRequest(name=contact).SerializeToString()
        body = Path(tmp) / "request"
        body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
        for addr, key, pid in targets.values():  # warm up
            load(addr, body, key, 1.0, pid)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(ROUNDS):
            for name, (addr, key, pid) in targets.items():
                runs[name].append(load(addr, body, key, seconds, pid))
    figures = {n: (statistics.median(r for r, _ in rs), statistics.median(c for _, c in rs)) for n, rs in runs.items()}
    base, echo = figures["typed_sqlite"][0], figures["echo"][0]
    for name, (rate, cpu) in figures.items():
        ratios = f"{rate / base:.3f} × typed_sqlite  {rate / echo:.3f} × echo"
        print(f"{name:13} {rate:8,.0f}/s  {ratios}  server CPU {cpu:4.0f} µs a call")
    rate, cpu = figures["service"]
    report(
        {
            "bench": "get_contact",
            "rate": round(rate),
            "baseline": round(base),
            "ratio": round(rate / base, 3),
            "goal": GOAL,
            "echo_rate": round(echo),
            "echo_ratio": round(rate / echo, 3),
            "constant_ratio": round(figures["constant"][0] / base, 3),
            "callers": CONNECTIONS * STREAMS,
            "rounds": ROUNDS,
            "server_cpu_us_per_call": round(cpu),
            "baseline_cpu_us_per_call": round(figures["typed_sqlite"][1]),
            "constant_cpu_us_per_call": round(figures["constant"][1]),
        }
    )


if __name__ == "__main__":
    main()
