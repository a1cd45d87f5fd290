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
from .test_outbox_kill import sending_store, serving, start_server

CONTACTS = 1500  # two broadcast batches and many rounds


def eligible_phones(count: int) -> set[str]:
    """The numbers of `import_contacts`'s subscribed contacts (two in three)."""
    return {f"+3461{i:07d}" for i in range(count) if i % 3}


async def import_contacts(ch: grpc.aio.Channel, md: tuple[tuple[str, str]], store: str, count: int) -> None:
    """`count` contacts in one import, every third one not subscribed."""
    subscribed = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED

    async def rows() -> AsyncIterator[cpb.ImportContactsRequest]:
        batch = [
            cpb.Contact(
                email=f"c{i}@x.co", mobile_phone=f"61{i:07d}", sms_subscription_status=subscribed if i % 3 else 0
            )
            for i in range(count)
        ]
        yield cpb.ImportContactsRequest(parent=f"stores/{store}", contacts=batch)

    await cpb_grpc.ContactsServiceStub(ch).ImportContacts(rows(), metadata=md)


async def start_broadcast(ch: grpc.aio.Channel, md: tuple[tuple[str, str]], store: str, content: str) -> wpb.Workflow:
    """An active broadcast newsletter of `content` to every contact of the store."""
    workflows = wpb_grpc.WorkflowServiceStub(ch)
    send = wpb.SendSmsNode(
        sms_content=content, recipient_mode=common.RECIPIENT_MODE_CONTACT, type=common.SMS_TYPE_NEWSLETTER
    )
    wf: wpb.Workflow = await workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(
            parent=f"stores/{store}",
            workflow=wpb.Workflow(
                display_name="Broadcast",
                trigger=wpb.Trigger(broadcast=wpb.BroadcastTrigger()),
                nodes=[wpb.Node(id="s", send_sms=send)],
                start_node="s",
            ),
        ),
        metadata=md,
    )
    await workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=md)
    return wf


async def until_received(fake: FakeInstasent, count: int, within: float) -> None:
    """Until the fake has received `count` SMS, or `within` seconds have passed."""
    for _ in range(round(within / 0.01)):
        if len(fake.received()) >= count:
            return
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_kill_during_a_broadcast_never_sends_twice_nor_skips(tmp_path: Path, slow_fake: FakeInstasent) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = start_server(tmp_path, addr, slow_fake)
    try:
        await serving(addr)
        async with grpc.aio.insecure_channel(addr) as ch:
            md, _, text = await sending_store(pb_grpc.SmsChannelServiceStub(ch), "b", "Promo {{unsubscribe}}")
            await import_contacts(ch, md, "b", CONTACTS)
            wf = await start_broadcast(ch, md, "b", text.name)
        eligible = eligible_phones(CONTACTS)
        await until_received(slow_fake, 150, 10)
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
        await until_received(slow_fake, len(eligible), 60)
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
