"""The outbox in a process of its own, as `make run` runs it (SMSCHANNEL_OUTBOX=process): the server
stores, the outbox process finds and sends. Kill -9 the outbox process while it sends, restart it:
every message reaches Instasent once, and the restarted process takes its claims back at once
instead of waiting them out. A retry comes back within its backoff, not a claim's length."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from smschannel import server as server_module
from smschannel.domain.enums import MessageStatus, RecipientMode, SmsSubscriptionStatus, SmsType
from smschannel.domain.messages import Message
from smschannel.domain.stores import ApiKey, Store
from smschannel.instasent.fake import FakeInstasent
from smschannel.server import App, Outbox
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import database_at, eventually, make_config
from .procs import free_port
from .test_outbox_kill import COUNT, sending_store, serving, until_none_queued


def start(role: str, tmp: Path, addr: str, fake: FakeInstasent) -> subprocess.Popen[bytes]:
    """`smschannel server` or `smschannel outbox`, as `smschannel run` starts them, on one database."""
    env = {
        **os.environ,
        "SMSCHANNEL_OUTBOX": "process",
        "SMSCHANNEL_GRPC_ADDR": addr,
        "SMSCHANNEL_DB": database_at(tmp, "outbox-process.db"),
        "SMSCHANNEL_ADMIN_KEY": "test-admin-key",
        "SMSCHANNEL_SECRET_KEY": "outbox-process-secret",
        "SMSCHANNEL_REPLICA": "replica-1",
        "SMSCHANNEL_RETRY_BASE": "0.05",
        "INSTASENT_BASE_URL": fake.base_url,
    }
    return subprocess.Popen([sys.executable, "-m", "smschannel", role], env=env)


async def send_all(sms: pb_grpc.SmsChannelServiceStub, md: tuple[tuple[str, str]], content: str, count: int) -> None:
    for i in range(count):
        await sms.SendSms(
            pb.SendSmsRequest(
                parent="stores/k",
                request_id=f"r{i}",
                sms_content=content,
                type=common.SMS_TYPE_TRANSACTIONAL,
                alert_phone=f"+3469900{i:04d}",
            ),
            metadata=md,
        )


@pytest.mark.slow
async def test_a_killed_outbox_process_restarts_and_sends_each_message_once(
    tmp_path: Path, kill_fake: FakeInstasent
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    server = start("server", tmp_path, addr, kill_fake)
    outbox = start("outbox", tmp_path, addr, kill_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms = pb_grpc.SmsChannelServiceStub(ch)
            md, _, text = await sending_store(sms, "k")
            await send_all(sms, md, text.name, COUNT // 4)
            began = time.monotonic()
            while not kill_fake.received():
                assert time.monotonic() - began < 30, "the outbox process sent nothing"
                assert outbox.poll() is None, f"the outbox process exited {outbox.returncode}"
                await asyncio.sleep(0.01)
            kill_fake.faults.latency = 2.0  # ...and from now on its requests hang at Instasent
            await send_all(sms, md, text.name, COUNT)  # the first quarter again: the same request ids
            await asyncio.sleep(0.3)
            outbox.send_signal(signal.SIGKILL)  # some accepted, some in flight, some still queued
            outbox.wait(timeout=10)
            at_kill = len(kill_fake.received())
            kill_fake.faults.latency = 0.0
            assert 0 < at_kill < COUNT, "the kill must land mid-dispatch"

            restarted = time.monotonic()
            outbox = start("outbox", tmp_path, addr, kill_fake)
            await until_none_queued(sms, md, "k")
            took = time.monotonic() - restarted
            sent = await sms.ListMessages(
                pb.ListMessagesRequest(parent="stores/k", filter="status = SENT", page_size=1000), metadata=md
            )
        received = [r.client_id for r in kill_fake.received()]
        assert len(received) == len(set(received)) == COUNT  # each message once at Instasent
        assert len(sent.messages) == COUNT
        assert took < 15, f"the restarted outbox took {took:.1f}s: it waited out its own claims (30 s)"
    finally:
        for proc in (server, outbox):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


@pytest.mark.slow
async def test_the_outbox_process_retries_within_its_backoff(tmp_path: Path, kill_fake: FakeInstasent) -> None:
    """Instasent answers 429 first: the message is put off by the backoff and its claim let go, so the
    outbox process's next reads (which leave out what it holds) find it again in time."""
    addr = f"127.0.0.1:{free_port()}"
    server, outbox = start("server", tmp_path, addr, kill_fake), start("outbox", tmp_path, addr, kill_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms = pb_grpc.SmsChannelServiceStub(ch)
            md, _, text = await sending_store(sms, "k")
            await asyncio.sleep(0.5)  # the outbox process's first read (which takes its own claims) is done
            kill_fake.faults.burst_429, kill_fake.faults.reset_after = 2, 0.2
            start_time = time.monotonic()
            await send_all(sms, md, text.name, 1)
            while not kill_fake.received():
                assert time.monotonic() - start_time < 10, "the retry waited out the claim (30 s)"
                await asyncio.sleep(0.02)
        assert kill_fake.faults.burst_429 == 0  # it was refused twice before it went
    finally:
        for proc in (server, outbox):
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


async def test_a_server_whose_outbox_process_is_missing_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SMSCHANNEL_OUTBOX=process on the server and no `smschannel outbox`: nothing sends, so the server
    warns while messages wait, and says so when an outbox process has taken them."""
    monkeypatch.setattr(server_module, "OUTBOX_STALLED", timedelta(0))
    monkeypatch.setattr(server_module, "OUTBOX_WATCH_EVERY", 0.05)
    config = make_config(tmp_path, outbox="process")
    app = await App.start(config)
    try:
        now = datetime.now(UTC) - timedelta(seconds=1)
        await app.storage.stores.create(
            Store("w", "W", SmsSubscriptionStatus.UNSPECIFIED, now), ApiKey("w", "k", "K", "h", now)
        )
        waiting = Message(
            store_id="w",
            id="m1",
            type=SmsType.TRANSACTIONAL,
            recipient_mode=RecipientMode.ALERT,
            status=MessageStatus.QUEUED,
            create_time=now,
            update_time=now,
            recipient="+34612000001",
            text="Hola",
            next_attempt_time=now,
        )
        await app.storage.messages.add([waiting])
        await eventually(lambda: _logged(caplog, "no outbox process sends them"), "the warning")
        outbox = await Outbox.start(config)  # the store has no token: it fails the message, so none waits
        try:
            await eventually(lambda: _logged(caplog, "messages are sent again"), "the all-clear")
        finally:
            await outbox.stop(grace=1)
    finally:
        await app.stop(grace=1)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)
