"""`make run` as users run it: its own command, its defaults (INFO logging, the JSON formatter, the CLI's
start-up), an import, a send and a callback through it, then Ctrl-C; and the same flow at DEBUG, whose
every log line must be free of secrets and personal data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb

from .conftest import Stubs
from .procs import free_port

ROOT = Path(__file__).parent.parent
ADMIN_KEY = "make-run-admin-key-d41f"
PHONE, EMAIL = "+34 612 908 877", "make.run.person@example.com"


async def _flow(grpc_addr: str, http_addr: str, token: str, fake: FakeInstasent) -> dict[str, str]:
    """A store, its channel, an import (one bad row), a SendSms, a stop callback through the sidecar.
    Returns the secrets the flow handled (none may appear in a log)."""
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        stubs = Stubs.on(channel)
        admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
        created = await stubs.sms.CreateStore(
            pb.CreateStoreRequest(store_id="make-run", store=pb.Store(display_name="Make run")), metadata=admin
        )
        md = (("authorization", f"Bearer {created.api_key}"),)
        config = await stubs.sms.UpdateSmsChannelConfig(
            pb.UpdateSmsChannelConfigRequest(
                sms_channel_config=pb.SmsChannelConfig(
                    name="stores/make-run/smsChannelConfig",
                    api_token=token,
                    default_country="ES",
                    default_sender="Shop",
                    quiet_hours=pb.QuietHours(),  # the test sends at any hour: the store's quiet hours off
                )
            ),
            metadata=md,
        )
        assert config.token_status == pb.TOKEN_STATUS_VALID

        async def rows() -> AsyncIterator[cpb.ImportContactsRequest]:
            yield cpb.ImportContactsRequest(
                parent="stores/make-run", contacts=[cpb.Contact(email=EMAIL, first_name="Ana", mobile_phone=PHONE)]
            )
            yield cpb.ImportContactsRequest(contacts=[cpb.Contact(email="b@example.com", mobile_phone="12")])

        imported = await stubs.contacts.ImportContacts(rows(), metadata=md)
        assert (imported.created_count, imported.failed_count) == (1, 1)  # was INTERNAL at INFO
        (contact,) = (
            await stubs.contacts.ListContacts(cpb.ListContactsRequest(parent="stores/make-run"), metadata=md)
        ).contacts
        text = await stubs.sms.CreateSmsContent(
            pb.CreateSmsContentRequest(
                parent="stores/make-run", sms_content=pb.SmsContent(display_name="Shipped", text="Tu pedido ha salido")
            ),
            metadata=md,
        )
        message = await stubs.sms.SendSms(
            pb.SendSmsRequest(
                parent="stores/make-run",
                request_id=uuid.uuid4().hex,
                sms_content=text.name,
                type=common.SMS_TYPE_TRANSACTIONAL,
                contact=contact.name,
            ),
            metadata=md,
        )
        for _ in range(500):
            got = await stubs.sms.GetMessage(pb.GetMessageRequest(name=message.name), metadata=md)
            if got.status == common.MESSAGE_STATUS_SENT:
                break
            await asyncio.sleep(0.02)
        assert got.status == common.MESSAGE_STATUS_SENT
        assert [r.to for r in fake.received(token)] == ["+34612908877"]
        callback = config.callback_url
        assert callback.startswith(f"http://{http_addr}/instasent/callbacks/make-run/")
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(callback, json={"clientId": message.name.rsplit("/", 1)[1], "status": "stop"})
        assert answer.json() == {"outcome": "applied"}
        now = await stubs.contacts.GetContact(cpb.GetContactRequest(name=contact.name), metadata=md)
        assert now.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
    return {
        "admin key": ADMIN_KEY,
        "store key": created.api_key,
        "Instasent token": token,
        "callback secret": callback.rsplit("/", 1)[1],
        "phone": "+34612908877",
        "phone as typed": PHONE,
        "email": EMAIL,
    }


async def _serving(grpc_addr: str, proc: asyncio.subprocess.Process) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for _ in range(600):
        assert proc.returncode is None, "the command stopped before it served"
        with contextlib.suppress(grpc.aio.AioRpcError):  # not listening yet
            async with grpc.aio.insecure_channel(grpc_addr) as ch:
                health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if health.status == health_pb2.HealthCheckResponse.SERVING:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("not serving after 60 s")


async def _run(command: list[str], tmp_path: Path, fake: FakeInstasent, **env: str) -> tuple[int, str, dict[str, str]]:
    """Start `command` in its own process group with the README's variables, run the flow, press Ctrl-C."""
    grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    token = f"make-run-token-{uuid.uuid4().hex[:10]}"
    fake.add_token(token)
    full = {
        key: value for key, value in os.environ.items() if not key.startswith(("SMSCHANNEL_", "INSTASENT_", "MAKE"))
    }
    full |= {
        "SMSCHANNEL_GRPC_ADDR": grpc_addr,
        "SMSCHANNEL_HTTP_ADDR": http_addr,
        "SMSCHANNEL_DB": str(tmp_path / "smschannel.db"),
        "SMSCHANNEL_ADMIN_KEY": ADMIN_KEY,
        "INSTASENT_BASE_URL": fake.base_url,
        **env,
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=full, stdout=out, stderr=out, start_new_session=True
        )
        try:
            await _serving(grpc_addr, proc)
            secrets = await _flow(grpc_addr, http_addr, token, fake)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    return code, log.read_text(errors="replace"), secrets


@pytest.mark.slow
async def test_make_run_serves_an_import_a_send_and_a_callback_and_stops_on_ctrl_c(
    tmp_path: Path, fake: FakeInstasent
) -> None:
    code, output, _ = await _run(["make", "--no-print-directory", "run"], tmp_path, fake)
    # make itself takes the terminal's SIGINT and, once its recipe is done, ends by it as any interrupted
    # make does (130 in a shell); what it ran must have stopped cleanly: make reports any other exit as
    # "*** [Makefile:..: run] Error N" (it said Error 241 before).
    assert code in (0, -signal.SIGINT), output[-3000:]
    assert "make: ***" not in output
    assert '"level": "error"' not in output
    assert "Traceback" not in output
    assert '"event": "stopped"' in output


@pytest.mark.slow
async def test_no_secret_and_no_personal_data_in_the_log_at_debug(tmp_path: Path, fake: FakeInstasent) -> None:
    code, output, secrets = await _run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "smschannel", "run"],
        tmp_path,
        fake,
        SMSCHANNEL_LOG_LEVEL="DEBUG",
    )
    assert code == 0, output[-3000:]
    assert '"level": "debug"' in output  # the level took
    leaked = {what: value for what, value in secrets.items() if value in output}
    assert leaked == {}
