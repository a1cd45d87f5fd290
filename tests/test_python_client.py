"""The Python client package: its helper and its article example, against a running server."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from smschannel.asgi import serve_in_loop
from smschannel.instasent.fake import FakeInstasent
from smschannel.server import App
from smschannel.sidecar.app import create_app
from smschannel_client import Client
from smschannel_client.v1 import sms_channel_service_pb2 as sms

from .conftest import ADMIN_KEY, INSTASENT_TOKEN, make_config
from .procs import free_port

EXAMPLE = Path(__file__).parent.parent / "clients" / "python" / "examples" / "article_flow.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("article_flow", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["article_flow"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_helper_adds_the_key_and_maps_errors(app: App) -> None:
    async with Client(f"127.0.0.1:{app.port}", ADMIN_KEY, timeout=5) as client:
        resp = await client.sms.CreateStore(
            sms.CreateStoreRequest(store_id="client-py", store=sms.Store(display_name="C"))
        )
        assert resp.api_key
    async with Client(f"127.0.0.1:{app.port}", "wrong") as client:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.sms.GetStore(sms.GetStoreRequest(name="stores/client-py"))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unavailable_is_retried_then_reported(app: App) -> None:
    async with Client(f"127.0.0.1:{free_port()}", ADMIN_KEY, timeout=3) as client:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.sms.GetStore(sms.GetStoreRequest(name="stores/x"))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_article_example_runs_end_to_end(tmp_path: Path, fake: FakeInstasent) -> None:
    sidecar_port = free_port()
    config = make_config(tmp_path, instasent_base_url=fake.base_url, public_url=f"http://127.0.0.1:{sidecar_port}")
    app = await App.start(config)
    try:
        sidecar_config = replace(config, grpc_addr=f"127.0.0.1:{app.port}")
        async with serve_in_loop(create_app(sidecar_config), port=sidecar_port):
            lines: list[str] = []
            result = await load_example().run(
                f"127.0.0.1:{app.port}", ADMIN_KEY, INSTASENT_TOKEN, fake.base_url, "example", lines.append
            )
    finally:
        await app.stop(grace=1)
    assert result["statuses"]["+34611000111"] == "MESSAGE_STATUS_SKIPPED"  # Carla never consented
    assert sorted(result["received"]) == ["+34612345678", "+34699111222"]
    assert result["ana"] == "SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED"
    assert result["ana_unsubscribes"] == 1
    assert any("Callback URL" in line for line in lines)
