"""Kill -9 the server during a broadcast, restart: every eligible contact gets the SMS exactly once."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import contacts_service_pb2_grpc as cpb_grpc
from smschannel.v1 import sms_channel_service_pb2_grpc as pb_grpc
from smschannel.v1 import workflow_service_pb2 as wpb
from smschannel.v1 import workflow_service_pb2_grpc as wpb_grpc

from .procs import free_port
from .test_outbox_kill import TOKEN, sending_store, serving, start_server

CONTACTS = 1500  # two broadcast batches and many rounds


@pytest.fixture
async def slow_fake() -> AsyncIterator[FakeInstasent]:
    fake = FakeInstasent(send_callbacks=False)
    fake.add_token(TOKEN)
    fake.faults.latency = 0.02
    async with fake.serve():
        yield fake


@pytest.mark.slow
async def test_kill_during_a_broadcast_never_sends_twice_nor_skips(tmp_path: Path, slow_fake: FakeInstasent) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = start_server(tmp_path, addr, slow_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            sms, contacts, workflows = (
                pb_grpc.SmsChannelServiceStub(ch),
                cpb_grpc.ContactsServiceStub(ch),
                wpb_grpc.WorkflowServiceStub(ch),
            )
            md, _, text = await sending_store(sms, "b", "Promo {{unsubscribe}}")
            subscribed = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED

            async def rows() -> AsyncIterator[cpb.ImportContactsRequest]:
                batch = [
                    cpb.Contact(
                        email=f"c{i}@x.co",
                        mobile_phone=f"61{i:07d}",
                        sms_subscription_status=subscribed if i % 3 else 0,
                    )
                    for i in range(CONTACTS)
                ]
                yield cpb.ImportContactsRequest(parent="stores/b", contacts=batch)

            await contacts.ImportContacts(rows(), metadata=md)
            wf = await workflows.CreateWorkflow(
                wpb.CreateWorkflowRequest(
                    parent="stores/b",
                    workflow=wpb.Workflow(
                        display_name="Broadcast",
                        trigger=wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
                        nodes=[
                            wpb.Node(
                                id="s",
                                send_sms=wpb.SendSmsNode(
                                    sms_content=text.name,
                                    recipient_mode=common.RECIPIENT_MODE_CONTACT,
                                    type=common.SMS_TYPE_NEWSLETTER,
                                ),
                            )
                        ],
                        start_node="s",
                    ),
                ),
                metadata=md,
            )
            await workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=md)
        eligible = {f"+3461{i:07d}" for i in range(CONTACTS) if i % 3}
        for _ in range(1000):
            if len(slow_fake.received()) >= 150:
                break
            await asyncio.sleep(0.01)
        # Hold the requests now in flight at the fake, so the kill lands while they are unanswered.
        slow_fake.faults.latency = 2.0
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        at_kill = len(slow_fake.received())
        slow_fake.faults.latency = 0.0
        assert 0 < at_kill < len(eligible), "the kill must land mid-broadcast"
        print(f"at kill: {at_kill} of {len(eligible)} received")

        proc = start_server(tmp_path, addr, slow_fake)
        await serving(addr)
        for _ in range(1200):
            if len(slow_fake.received()) >= len(eligible):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything extra would arrive now
        received = [r.to for r in slow_fake.received()]
        assert len(received) == len(set(received))  # never twice
        assert set(received) == eligible  # never skipped, never to the ineligible
        async with grpc.aio.insecure_channel(addr) as ch:
            runs = await wpb_grpc.WorkflowServiceStub(ch).ListWorkflowRuns(
                wpb.ListWorkflowRunsRequest(parent=wf.name, filter="state = COMPLETED", page_size=1000), metadata=md
            )
            assert len(runs.workflow_runs) == 1000  # a full page: the runs completed
    finally:
        proc.kill()
        proc.wait(timeout=10)
