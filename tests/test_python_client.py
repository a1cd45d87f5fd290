"""The Python client package: its helper and its article example, against a running server."""

from __future__ import annotations

import asyncio
import importlib.util
import re
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
from smschannel_client.v1 import common_pb2 as common
from smschannel_client.v1 import sms_channel_service_pb2 as sms

from .conftest import ADMIN_KEY, INSTASENT_TOKEN, StoreCtx, Stubs, make_config
from .procs import free_port

EXAMPLE = Path(__file__).parent.parent / "clients" / "python" / "examples" / "article_flow.py"
README = Path(__file__).parent.parent / "clients" / "python" / "README.md"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("article_flow", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["article_flow"] = module
    spec.loader.exec_module(module)
    return module


def load_readme_example(tmp_path: Path) -> ModuleType:
    """The client README's code block, as a module (its `__main__` guard keeps it from running)."""
    m = re.search(r"<!-- example:start -->\n```python\n(.*?)```\n<!-- example:end -->", README.read_text(), re.S)
    assert m, "clients/python/README.md has no example block"
    path = tmp_path / "readme_example.py"
    path.write_text(m.group(1))
    spec = importlib.util.spec_from_file_location("readme_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_readme_example_makes_a_call_and_decodes_a_refusal(
    app: App, stubs: Stubs, es_store: StoreCtx, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load_readme_example(tmp_path)
    await example.main(f"127.0.0.1:{app.port}", es_store.key, es_store.name)
    ana, refusal, *details = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"{es_store.name}/contacts/\S+ \+34612345678 \(x-request-id \w+\)", ana)
    assert re.fullmatch(r"INVALID_ARGUMENT: .+ \(x-request-id \w+\)", refusal)
    assert "reason INVALID_ARGUMENT (smschannel.example.com)" in details
    assert any(line.startswith("field contact.mobile_phone: ") for line in details), details
    # The PreconditionFailure branch: a store without an Instasent token cannot send.
    content = await stubs.sms.CreateSmsContent(
        sms.CreateSmsContentRequest(parent=es_store.name, sms_content=sms.SmsContent(display_name="T", text="Hola")),
        metadata=es_store.md,
    )
    async with Client(f"127.0.0.1:{app.port}", es_store.key) as client:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.sms.SendSms(
                sms.SendSmsRequest(
                    parent=es_store.name,
                    request_id="readme-1",
                    sms_content=content.name,
                    type=common.SMS_TYPE_TRANSACTIONAL,
                    sender="Acme",
                    alert_phone="+34612345678",
                )
            )
    lines = example.explain(e.value)
    assert lines[0].startswith("FAILED_PRECONDITION: ")
    assert f"precondition NO_PROVIDER_TOKEN on {es_store.name}/smsChannelConfig: " in "\n".join(lines)


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
            example = load_example()
            lines: list[str] = []
            first = await example.run(
                f"127.0.0.1:{app.port}", ADMIN_KEY, INSTASENT_TOKEN, fake.base_url, "example", lines.append
            )
            # Played again with the same token (as after the README walkthrough): the fake now holds the
            # first store's SMS to the same phones, and the second run must still find and stop its own.
            again = await example.run(
                f"127.0.0.1:{app.port}", ADMIN_KEY, INSTASENT_TOKEN, fake.base_url, "example-again", lambda _: None
            )
    finally:
        await app.stop(grace=1)
    for result in (first, again):
        assert result["statuses"]["+34611000111"] == "MESSAGE_STATUS_SKIPPED"  # Carla never consented
        assert sorted(result["received"]) == ["+34612345678", "+34699111222"]
        assert result["ana"] == "SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED"
        assert result["ana_unsubscribes"] == 1
    assert any("Callback URL" in line for line in lines)


async def test_the_article_example_exits_1_when_a_step_fails(app: App, fake: FakeInstasent) -> None:
    # Through its command line, with a token the fake does not know: Instasent refuses it at the first step.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--target",
        f"127.0.0.1:{app.port}",
        "--admin-key",
        ADMIN_KEY,
        "--instasent-token",
        "not-the-fakes-token",
        "--fake-instasent",
        fake.base_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 1, out.decode() + err.decode()
    assert "the article flow failed: Instasent did not accept the token: TOKEN_STATUS_INVALID" in err.decode()
    assert "Traceback" not in err.decode()
