"""Kill -9 the server while the outbox is sending, restart it: every message reaches Instasent once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import ADMIN, KILL_TOKEN, database_at
from .procs import free_port

TOKEN = KILL_TOKEN
COUNT = 400


def start_server(tmp: Path, addr: str, fake: FakeInstasent) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SMSCHANNEL_GRPC_ADDR": addr,
        "SMSCHANNEL_DB": database_at(tmp, "kill.db"),
        "SMSCHANNEL_ADMIN_KEY": "test-admin-key",
        "SMSCHANNEL_SECRET_KEY": "kill-secret",
        "SMSCHANNEL_RETRY_BASE": "0.05",
        "INSTASENT_BASE_URL": fake.base_url,
    }
    return subprocess.Popen([sys.executable, "-m", "smschannel", "server"], env=env)


async def serving(addr: str) -> None:
    for _ in range(300):
        try:
            async with grpc.aio.insecure_channel(addr) as ch:
                await pb_grpc.SmsChannelServiceStub(ch).GetStore(pb.GetStoreRequest(name="stores/x"), metadata=ADMIN)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("server never came up")


async def until_none_queued(sms: pb_grpc.SmsChannelServiceStub, md: tuple[tuple[str, str]], store_id: str) -> None:
    """Wait (up to 30 s) until the store has no QUEUED message left."""
    for _ in range(600):
        queued = await sms.ListMessages(
            pb.ListMessagesRequest(parent=f"stores/{store_id}", filter="status = QUEUED", page_size=1), metadata=md
        )
        if not queued.messages:
            return
        await asyncio.sleep(0.05)


async def sending_store(
    sms: pb_grpc.SmsChannelServiceStub, store_id: str, text: str = "Hi"
) -> tuple[tuple[tuple[str, str]], pb.SmsChannelConfig, pb.SmsContent]:
    """A store ready to send through the fake's TOKEN: its key metadata, channel config and a content."""
    created = await sms.CreateStore(
        pb.CreateStoreRequest(store_id=store_id, store=pb.Store(display_name=store_id)), metadata=ADMIN
    )
    md = (("authorization", f"Bearer {created.api_key}"),)
    config = await sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(
                name=f"stores/{store_id}/smsChannelConfig",
                api_token=TOKEN,
                default_sender="Acme",
                default_country="ES",
                quiet_hours=pb.QuietHours(),  # the tests send at any hour: the store's quiet hours off
            )
        ),
        metadata=md,
    )
    content = await sms.CreateSmsContent(
        pb.CreateSmsContentRequest(parent=f"stores/{store_id}", sms_content=pb.SmsContent(display_name="x", text=text)),
        metadata=md,
    )
    return md, config, content


@pytest.mark.slow
async def test_kill_during_dispatch_then_restart_sends_each_message_exactly_once(
    tmp_path: Path, kill_fake: FakeInstasent
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = start_server(tmp_path, addr, kill_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms = pb_grpc.SmsChannelServiceStub(ch)
            md, _, text = await sending_store(sms, "k")
            ids = set()
            for i in range(COUNT):
                m = await sms.SendSms(
                    pb.SendSmsRequest(
                        parent="stores/k",
                        request_id=f"r{i}",
                        sms_content=text.name,
                        type=common.SMS_TYPE_TRANSACTIONAL,
                        alert_phone=f"+3469900{i:04d}",
                    ),
                    metadata=md,
                )
                ids.add(m.name.rsplit("/", 1)[1])
                if i == COUNT // 4:
                    for _ in range(3000):  # some sent already (30 s at most)...
                        if kill_fake.received():
                            break
                        await asyncio.sleep(0.01)
                    kill_fake.faults.latency = 2.0  # ...and from now on requests hang at Instasent
        # Kill while the outbox is part-way through: some accepted, some in flight, some still queued.
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        at_kill = len(kill_fake.received())
        kill_fake.faults.latency = 0.0
        assert 0 < at_kill < COUNT, "the kill must land mid-dispatch"

        proc = start_server(tmp_path, addr, kill_fake)
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms = pb_grpc.SmsChannelServiceStub(ch)
            await until_none_queued(sms, md, "k")
            sent = await sms.ListMessages(
                pb.ListMessagesRequest(parent="stores/k", filter="status = SENT", page_size=1000), metadata=md
            )
        received = [r.client_id for r in kill_fake.received()]
        assert len(received) == len(set(received)) == COUNT  # each message once at Instasent
        assert set(received) == ids
        assert len(sent.messages) == COUNT  # and recorded SENT in our log
        print(f"at kill: {at_kill} received; duplicate clientIds refused after restart: {kill_fake.duplicate_attempts}")
    finally:
        proc.kill()
        proc.wait(timeout=10)
