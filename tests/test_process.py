"""The service as a process: signals drain and exit 0; the admin key is generated once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .procs import free_port, is_serving, start, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_sidecar_stops_on_a_signal_with_exit_zero(tmp_path: Path, sig: signal.Signals) -> None:
    http = f"127.0.0.1:{free_port()}"
    proc = start("sidecar", tmp_path, SMSCHANNEL_HTTP_ADDR=http, SMSCHANNEL_GRPC_ADDR=f"127.0.0.1:{free_port()}")
    try:
        wait_for(lambda: _answers(f"http://{http}/healthz"), what="the sidecar")
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0  # uvicorn raises the signal again once stopped: not fatal
    finally:
        proc.kill()
        proc.communicate()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = start("server", tmp_path, SMSCHANNEL_GRPC_ADDR=addr, SMSCHANNEL_ADMIN_KEY="k")
    try:
        wait_for(lambda: is_serving(addr), what="SERVING")
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        _, err = proc.communicate()
        assert '"event": "draining"' in err
        assert '"event": "stopped"' in err
    finally:
        proc.kill()


def test_admin_key_is_generated_once_and_works(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    first = start("server", tmp_path, SMSCHANNEL_GRPC_ADDR=addr, SMSCHANNEL_ADMIN_KEY="")
    try:
        wait_for(lambda: is_serving(addr), what="SERVING")
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=15)
        _, err = first.communicate()
    finally:
        first.kill()
    lines = [line for line in err.splitlines() if "SMSCHANNEL_ADMIN_KEY generated" in line]
    assert len(lines) == 1
    admin_key = lines[0].rsplit(" ", 1)[1]

    second = start("server", tmp_path, SMSCHANNEL_GRPC_ADDR=addr, SMSCHANNEL_ADMIN_KEY="")
    try:
        wait_for(lambda: is_serving(addr), what="SERVING")
        with grpc.insecure_channel(addr) as ch:
            resp = pb_grpc.SmsChannelServiceStub(ch).CreateStore(
                pb.CreateStoreRequest(store_id="s", store=pb.Store(display_name="S")),
                metadata=(("authorization", f"Bearer {admin_key}"),),
            )
        assert resp.api_key
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=15)
        _, err2 = second.communicate()
        assert "SMSCHANNEL_ADMIN_KEY generated" not in err2
    finally:
        second.kill()


def test_run_stops_its_children_when_it_dies_or_its_terminal_closes(tmp_path: Path) -> None:
    """`smschannel run` killed with SIGKILL, or hung up: the server and the sidecar stop too, instead
    of holding the ports and the database with no parent (they run in their own session)."""
    for sig in (signal.SIGKILL, signal.SIGHUP):
        addr = f"127.0.0.1:{free_port()}"
        proc = start(
            "run",
            tmp_path,
            SMSCHANNEL_GRPC_ADDR=addr,
            SMSCHANNEL_HTTP_ADDR=f"127.0.0.1:{free_port()}",
            SMSCHANNEL_ADMIN_KEY="k",
        )
        try:
            wait_for(lambda: is_serving(addr), what="SERVING")  # noqa: B023
            proc.send_signal(sig)
            wait_for(lambda: not is_serving(addr), timeout=20, what="the server to stop")  # noqa: B023
        finally:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):  # not read: an orphaned child would hold them open
                if pipe is not None:
                    pipe.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_stops_both_on_a_signal_with_exit_zero(tmp_path: Path, sig: signal.Signals) -> None:
    addr, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = start("run", tmp_path, SMSCHANNEL_GRPC_ADDR=addr, SMSCHANNEL_HTTP_ADDR=http, SMSCHANNEL_ADMIN_KEY="k")
    try:
        wait_for(lambda: is_serving(addr) and _answers(f"http://{http}/healthz"), what="server and sidecar")
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == 0  # it said 241 on SIGTERM: the sidecar died of the signal
    finally:
        proc.kill()
        proc.communicate()


def test_a_database_url_without_a_shared_secret_key_is_refused_at_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SMSCHANNEL_SECRET_KEY"}
    env["SMSCHANNEL_DB"] = "postgresql://smschannel@127.0.0.1:1/smschannel"
    done = subprocess.run(
        [sys.executable, "-m", "smschannel", "server"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "SMSCHANNEL_SECRET_KEY is required with a database URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_outbox_process_beside_an_inline_server_is_refused_at_start() -> None:
    """`smschannel outbox` without SMSCHANNEL_OUTBOX=process: the server beside it sends too, so it
    would only double the work (and, on one replica's claims, the SMS): it refuses, saying why."""
    env = {k: v for k, v in os.environ.items() if k != "SMSCHANNEL_OUTBOX"}
    done = subprocess.run(
        [sys.executable, "-m", "smschannel", "outbox"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "SMSCHANNEL_OUTBOX=process" in done.stderr
    assert "Traceback" not in done.stderr
