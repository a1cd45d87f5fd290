"""Shared bench helpers: a real server process on a free port, its peak memory, one JSON line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

ADMIN_KEY = "bench-admin-key"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user + system) a live process (or one of its threads) has used; 0 once it is gone."""
    stat = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return -1.0


@dataclass
class Server:
    """A running `python -m smschannel server`."""

    proc: subprocess.Popen[bytes]
    addr: str
    db: Path

    def peak_rss_mb(self) -> float:
        """The process's peak resident set (VmHWM), in MB."""
        return _peak_rss_mb(self.proc.pid)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user + system) used so far by the server process and by its live child processes
        (the import workers). Per unit of work, it is a steadier figure than a rate on a noisy machine."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return process_cpu(self.proc.pid), sum(process_cpu(int(p)) for p in pids)

    def roles(self) -> dict[str, int]:
        """The live child processes by role (`server`, `outbox`, `sidecar`: the command line's last
        word), for `smschannel run`."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        out: dict[str, int] = {}
        for pid in children.read_text().split() if children.exists() else []:
            try:
                out[Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")[-1].decode()] = int(pid)
            except OSError:
                continue
        return out

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of each live child process by its role, for `smschannel run`."""
        return {role: process_cpu(pid) for role, pid in self.roles().items()}

    def peak_rss_mb_by_role(self) -> dict[str, float]:
        """Each child process's peak resident set (VmHWM), in MB, for `smschannel run`."""
        return {role: _peak_rss_mb(pid) for role, pid in self.roles().items()}

    def create_store(self, store_id: str = "bench") -> str:
        """A store; returns its key."""
        with grpc.insecure_channel(self.addr) as ch:
            resp = pb_grpc.SmsChannelServiceStub(ch).CreateStore(
                pb.CreateStoreRequest(store_id=store_id, store=pb.Store(display_name=store_id)),
                metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
            )
        return str(resp.api_key)


@contextmanager
def server(command: str = "server", code: str = "", **env: str) -> Iterator[Server]:
    """Start a server on a fresh SQLite file; stop it (SIGTERM) at the end. With `code`, the process
    runs that Python source (`python -c`) instead of `python -m smschannel <command>`.

    With BENCH_PROFILE=<file> set, the server runs under cProfile (its event-loop thread) and writes
    the stats to <file> when it stops: `BENCH_PROFILE=/tmp/s.prof python -m bench.newsletter 50000`,
    then `python -m pstats /tmp/s.prof`. Rates under the profiler mean nothing; the shares do."""
    with tempfile.TemporaryDirectory() as tmp:
        addr = f"127.0.0.1:{free_port()}"
        db = Path(tmp) / "bench.db"
        full = {
            **os.environ,
            "SMSCHANNEL_GRPC_ADDR": addr,
            "SMSCHANNEL_DB": str(db),
            "SMSCHANNEL_ADMIN_KEY": ADMIN_KEY,
            "SMSCHANNEL_SECRET_KEY": "bench-secret",
            **env,
        }
        profile = os.environ.get("BENCH_PROFILE")
        prof = ["-m", "cProfile", "-o", profile] if profile else []
        # cProfile runs a module or a script, not a code string: BENCH_PROFILE applies to the service only.
        main = ["-c", code] if code else [*prof, "-m", "smschannel", command]
        # The production log level (INFO): its lines go to a file, so the bench's own output stays readable.
        log = (Path(tmp) / "server.log").open("wb")
        proc = subprocess.Popen([sys.executable, *main], env=full, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with grpc.insecure_channel(addr) as ch:
                        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    break
                except grpc.RpcError:
                    time.sleep(0.1)
            yield Server(proc, addr, db)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
            if os.environ.get("BENCH_LOG"):  # keep the server's log: BENCH_LOG=/tmp/server.log
                shutil.copy(Path(tmp) / "server.log", os.environ["BENCH_LOG"])
            errors = [
                line for line in (Path(tmp) / "server.log").read_text().splitlines() if '"level": "error"' in line
            ]
            if proc.returncode != 0 or errors:
                print(f"server exit {proc.returncode}; its errors:", *errors[-20:], sep="\n", file=sys.stderr)


def report(figures: dict[str, object]) -> None:
    """The bench's last line: one JSON object."""
    print(json.dumps(figures), flush=True)


@contextmanager
def fake_instasent(*tokens: str) -> Iterator[str]:
    """The fake Instasent as its own process (no callbacks); yields its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "smschannel.instasent.fake", "--port", str(port)]
    for token in tokens:
        args += ["--token", token]
    proc = subprocess.Popen(args)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_fake/stats", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def scrape(addr: str) -> dict[str, float]:
    """A /metrics endpoint's unlabelled samples, by name."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def received(stats: dict[str, object]) -> int:
    """How many SMS the fake received, from `fake_stats`."""
    count = stats["received"]
    assert isinstance(count, int)
    return count


def fake_stats(url: str, token: str, recipients: bool = False, ids: bool = False) -> dict[str, object]:
    """The fake's counts for a token (with its recipients, or its SMS ids and clientIds)."""
    query = f"?token={token}" + ("&recipients=1" if recipients else "") + ("&ids=1" if ids else "")
    with urllib.request.urlopen(f"{url}/_fake/stats{query}", timeout=60) as resp:
        stats: dict[str, object] = json.loads(resp.read())
    return stats
