"""The Prometheus endpoint counts RPCs by method and code, messages by status, and the outbox; on
SQLite, how the process uses the one write lock. An outbox process has an endpoint of its own."""

from __future__ import annotations

import contextlib
from pathlib import Path

import grpc
import httpx

from smschannel.server import App, Outbox
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import ADMIN, make_config, on_postgres
from .procs import free_port


async def test_metrics_endpoint(tmp_path: Path) -> None:
    port = free_port()
    app = await App.start(make_config(tmp_path, metrics_addr=f"127.0.0.1:{port}"))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            sms = pb_grpc.SmsChannelServiceStub(ch)
            await sms.CreateStore(pb.CreateStoreRequest(store_id="m", store=pb.Store(display_name="M")), metadata=ADMIN)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await sms.GetStore(pb.GetStoreRequest(name="stores/nope"), metadata=ADMIN)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await app.stop(grace=1)
    assert 'smschannel_rpcs_total{code="OK",method="/smschannel.v1.SmsChannelService/CreateStore"} 1.0' in text
    assert 'smschannel_rpcs_total{code="NOT_FOUND",method="/smschannel.v1.SmsChannelService/GetStore"} 1.0' in text
    assert "smschannel_rpc_seconds_bucket" in text
    assert 'smschannel_messages{status="QUEUED"} 0.0' in text
    assert "smschannel_outbox_depth 0.0" in text

    if not on_postgres():  # SQLite's one write lock: CreateStore wrote, holding it a while
        assert _sample(text, "smschannel_sqlite_write_transactions_total") >= 1
        assert _sample(text, "smschannel_sqlite_write_lock_held_seconds_total") > 0
        assert _sample(text, "smschannel_sqlite_write_lock_waited_seconds_total") >= 0


def _sample(text: str, name: str) -> float:
    (line,) = (line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


async def test_an_outbox_process_serves_metrics_of_its_own(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path, outbox="process", outbox_metrics_addr=f"127.0.0.1:{port}")
    outbox = await Outbox.start(config)
    try:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await outbox.stop(grace=1)
    assert "smschannel_outbox_depth 0.0" in text
    assert "smschannel_rpcs_total{" not in text  # it serves no RPC
