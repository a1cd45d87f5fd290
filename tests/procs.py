"""Helpers for tests that run the service as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import database_at


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Poll `condition` until true or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def is_serving(addr: str) -> bool:
    """True when the server at `addr` answers SERVING."""
    try:
        with grpc.insecure_channel(addr) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def start(command: str, tmp: Path, **env: str) -> subprocess.Popen[str]:
    """`python -m smschannel <command>` with a test environment."""
    full = {
        **os.environ,
        "SMSCHANNEL_DB": database_at(tmp, "proc.db"),
        "SMSCHANNEL_SECRET_KEY": "test-secret-key",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "smschannel", command],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
