"""`make demo`: the fake Instasent, the server and the sidecar on free ports, the article played with the
Python client, what Instasent received; then everything stops."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN, TOKEN = "demo-admin-key", "demo-instasent-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def main() -> None:
    grpc_port, http_port, fake_port = free_port(), free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "SMSCHANNEL_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "SMSCHANNEL_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "SMSCHANNEL_DB": f"{tmp}/demo.db",
            "SMSCHANNEL_ADMIN_KEY": ADMIN,
            "INSTASENT_BASE_URL": fake,
        }
        print(f"fake Instasent on {fake}; server on 127.0.0.1:{grpc_port}; sidecar on 127.0.0.1:{http_port}\n")
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "smschannel.instasent.fake", "--port", str(fake_port), "--token", TOKEN], env=env
            ),
            subprocess.Popen([sys.executable, "-m", "smschannel", "run"], env=env),
        ]
        try:
            wait_http(f"{fake}/_fake/messages")
            wait_http(f"http://127.0.0.1:{http_port}/healthz")
            spec = importlib.util.spec_from_file_location(
                "article_flow", ROOT / "clients/python/examples/article_flow.py"
            )
            assert spec is not None
            assert spec.loader is not None
            example = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(example)
            asyncio.run(_run_when_up(example, f"127.0.0.1:{grpc_port}", fake))
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=20)
    print("\ndemo finished: everything stopped")


async def _run_when_up(example: object, target: str, fake: str) -> None:
    for _ in range(300):
        try:
            await example.run(target, ADMIN, TOKEN, fake, "demo")  # type: ignore[attr-defined]
            return
        except Exception as e:  # the server may still be starting
            if "UNAVAILABLE" not in repr(e):
                raise
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    main()
