"""Stop the server while Instasent is calling back: the sidecar answers 503, Instasent retries, and every
callback is applied exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from smschannel.asgi import serve_in_loop
from smschannel.config import Config
from smschannel.instasent.fake import FakeInstasent
from smschannel.sidecar.app import create_app
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc

from .conftest import database_at
from .procs import free_port
from .test_outbox_kill import sending_store, serving, start_server

TOKEN = "kill-test-token"  # what start_server's environment expects the fake to know
N = 40


@pytest.fixture
async def quiet_fake() -> AsyncIterator[FakeInstasent]:
    fake = FakeInstasent(send_callbacks=False)  # this test plays Instasent's callbacks itself
    fake.add_token(TOKEN)
    async with fake.serve():
        yield fake


@pytest.mark.slow
async def test_callbacks_during_a_server_outage_are_applied_exactly_once(
    tmp_path: Path, quiet_fake: FakeInstasent
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = start_server(tmp_path, addr, quiet_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms, contacts = pb_grpc.SmsChannelServiceStub(ch), cpb_grpc.ContactsServiceStub(ch)
            md, config, text = await sending_store(sms, "k")
            names, client_ids = [], []
            for i in range(N):
                c = await contacts.CreateContact(
                    cpb.CreateContactRequest(
                        parent="stores/k",
                        contact=cpb.Contact(
                            mobile_phone=f"6124{i:05d}",
                            sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
                        ),
                    ),
                    metadata=md,
                )
                m = await sms.SendSms(
                    pb.SendSmsRequest(
                        parent="stores/k",
                        request_id=f"r{i}",
                        sms_content=text.name,
                        type=common.SMS_TYPE_TRANSACTIONAL,
                        contact=c.name,
                    ),
                    metadata=md,
                )
                names.append(c.name)
                client_ids.append(m.name.rsplit("/", 1)[1])
        path = "/instasent/callbacks/" + config.callback_url.split("/instasent/callbacks/", 1)[1]
        sidecar_config = Config(grpc_addr=addr, secret_key="kill-secret", db=database_at(tmp_path, "kill.db"))
        async with serve_in_loop(create_app(sidecar_config)) as sidecar, httpx.AsyncClient(timeout=10) as http:

            async def callback(client_id: str) -> int:
                resp = await http.post(sidecar + path, json={"clientId": client_id, "status": "stop"})
                return resp.status_code

            first = [await callback(cid) for cid in client_ids[: N // 2]]  # applied while the server is up
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            during = await asyncio.gather(*(callback(cid) for cid in client_ids[N // 2 :]))
            assert first == [200] * (N // 2)
            assert set(during) == {503}  # refused, so Instasent keeps them and retries

            proc = start_server(tmp_path, addr, quiet_fake)
            await serving(addr)
            # Instasent's retries (of the refused ones), then a duplicate storm of everything.
            retried = await asyncio.gather(*(callback(cid) for cid in client_ids[N // 2 :]))
            again = await asyncio.gather(*(callback(cid) for cid in client_ids))
            assert set(retried) == set(again) == {200}

        async with grpc.aio.insecure_channel(addr) as ch:
            contacts = cpb_grpc.ContactsServiceStub(ch)
            for name in names:
                got = await contacts.GetContact(cpb.GetContactRequest(name=name), metadata=md)
                assert got.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
                acts = await contacts.ListActivities(
                    cpb.ListActivitiesRequest(parent=name, filter="type = SMS_UNSUBSCRIBE"), metadata=md
                )
                assert len(acts.activities) == 1, name
    finally:
        proc.kill()
        proc.wait(timeout=10)
