"""The help-centre article end to end: channel → import → content with an unsubscribe variable →
newsletter workflow → Instasent → opt-out callback → unsubscribed → a second newsletter skips the
contact → a Received SMS condition routes on what was received."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from smschannel.instasent.fake import FakeInstasent
from smschannel.v1 import common_pb2 as common
from smschannel.v1 import contacts_service_pb2 as cpb
from smschannel.v1 import sms_channel_service_pb2 as pb
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import StoreCtx, Stubs, create_store, eventually
from .test_sidecar import callback_url

SUBSCRIBED = common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED


async def broadcast(stubs: Stubs, store: StoreCtx, nodes: list[wpb.Node]) -> wpb.Workflow:
    wf = await stubs.workflows.CreateWorkflow(
        wpb.CreateWorkflowRequest(
            parent=store.name,
            workflow=wpb.Workflow(
                display_name=f"Newsletter {uuid.uuid4().hex[:4]}",
                trigger=wpb.Trigger(broadcast=wpb.BroadcastTrigger(contact_filter="mobile_phone_status = ACTIVE")),
                nodes=nodes,
                start_node=nodes[0].id,
            ),
        ),
        metadata=store.md,
    )
    wf = await stubs.workflows.ActivateWorkflow(wpb.ActivateWorkflowRequest(name=wf.name), metadata=store.md)

    async def finished() -> bool:
        runs = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=wf.name, page_size=1000), metadata=store.md
        )
        return bool(runs.workflow_runs) and all(r.state == wpb.WORKFLOW_RUN_STATE_COMPLETED for r in runs.workflow_runs)

    await eventually(finished, "the newsletter runs")
    return wf


async def messages(stubs: Stubs, store: StoreCtx, wf: wpb.Workflow) -> list[pb.Message]:
    resp = await stubs.sms.ListMessages(
        pb.ListMessagesRequest(parent=store.name, filter=f'workflow = "{wf.name}"', page_size=1000), metadata=store.md
    )
    return list(resp.messages)


async def test_the_articles_flow(stubs: Stubs, fake: FakeInstasent, sidecar: str) -> None:
    store = await create_store(stubs)
    # Step 1: the channel — token, default country; the callback URL goes into Instasent's dashboard.
    config = await stubs.sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(
                name=f"{store.name}/smsChannelConfig",
                default_country="ES",
                default_sender="Tienda",
                quiet_hours=pb.QuietHours(),  # the test sends at any hour: the store's quiet hours off
            )
        ),
        metadata=store.md,
    )
    token = f"article-{uuid.uuid4().hex[:6]}"
    fake.add_token(token, callback_url=await callback_url(stubs, store, sidecar))
    config = await stubs.sms.UpdateSmsChannelConfig(
        pb.UpdateSmsChannelConfigRequest(
            sms_channel_config=pb.SmsChannelConfig(name=config.name, api_token=token),
            update_mask={"paths": ["api_token"]},
        ),
        metadata=store.md,
    )
    assert config.token_status == pb.TOKEN_STATUS_VALID

    # Step 2: contacts, imported with national numbers; three consented, one not, one paused.
    rows = [
        cpb.Contact(email="ana@x.co", first_name="Ana", mobile_phone="612 600 001", sms_subscription_status=SUBSCRIBED),
        cpb.Contact(email="bea@x.co", first_name="Bea", mobile_phone="612 600 002", sms_subscription_status=SUBSCRIBED),
        cpb.Contact(
            email="carla@x.co", first_name="Carla", mobile_phone="612 600 003", sms_subscription_status=SUBSCRIBED
        ),
        cpb.Contact(email="dani@x.co", first_name="Dani", mobile_phone="612 600 004"),
        cpb.Contact(
            email="eva@x.co",
            first_name="Eva",
            mobile_phone="612 600 005",
            sms_subscription_status=SUBSCRIBED,
            mobile_phone_status=common.MOBILE_PHONE_STATUS_PAUSED,
        ),
    ]

    async def stream() -> AsyncIterator[cpb.ImportContactsRequest]:
        yield cpb.ImportContactsRequest(parent=store.name, contacts=rows)

    imported = await stubs.contacts.ImportContacts(stream(), metadata=store.md)
    assert (imported.created_count, imported.failed_count) == (5, 0)

    # Step 3.1: an SMS content with an unsubscribe variable, sent by a newsletter workflow.
    text = await stubs.sms.CreateSmsContent(
        pb.CreateSmsContentRequest(
            parent=store.name,
            sms_content=pb.SmsContent(display_name="Rebajas", text="Hola {{name}}, -30% hoy. Baja: {{baja}}"),
        ),
        metadata=store.md,
    )
    send = wpb.Node(
        id="send",
        send_sms=wpb.SendSmsNode(
            sms_content=text.name,
            recipient_mode=common.RECIPIENT_MODE_CONTACT,
            type=common.SMS_TYPE_NEWSLETTER,
            variables={
                "name": common.VariableValue(contact_field="first_name", fallback="cliente"),
                "baja": common.VariableValue(literal="{{unsubscribe}}"),
            },
        ),
    )
    first = await broadcast(stubs, store, [send])
    sent = {m.recipient: m for m in await messages(stubs, store, first)}
    eligible = {"+34612600001", "+34612600002", "+34612600003"}
    assert {r for r, m in sent.items() if m.status != common.MESSAGE_STATUS_SKIPPED} == eligible

    async def delivered() -> bool:
        got = [r for r in fake.received(token)]
        return len(got) == 3

    await eventually(delivered, "Instasent to receive the eligible sends")
    received = {r.to: r for r in fake.received(token)}
    assert set(received) == eligible  # exactly the eligible sends, once each
    assert received["+34612600001"].text == "Hola Ana, -30% hoy. Baja: nosms.to/xxxxxxx"

    # Step 4: Bea clicks the unsubscribe link; Instasent calls the callback URL with `stop`.
    assert await fake.opt_out(received["+34612600002"].id)
    bea = (
        await stubs.contacts.ListContacts(
            cpb.ListContactsRequest(parent=store.name, filter="email = bea@x.co"), metadata=store.md
        )
    ).contacts[0]
    assert bea.sms_subscription_status == common.SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED
    acts = await stubs.contacts.ListActivities(
        cpb.ListActivitiesRequest(parent=bea.name, filter="type = SMS_UNSUBSCRIBE"), metadata=store.md
    )
    assert [a.source for a in acts.activities] == [common.ACTIVITY_SOURCE_PROVIDER]

    # A second newsletter skips Bea.
    second = await broadcast(stubs, store, [send])
    again = {m.recipient: m for m in await messages(stubs, store, second)}
    assert again["+34612600002"].status == common.MESSAGE_STATUS_SKIPPED
    assert "UNSUBSCRIBED" in again["+34612600002"].status_reason

    # Step 3.2: a Received SMS condition routes on what was received (Ana got 2, Bea 1, Dani 0).
    route = await broadcast(
        stubs,
        store,
        [
            wpb.Node(
                id="got-two",
                received_sms=wpb.ReceivedSmsNode(
                    sms_content=text.name,
                    comparison=wpb.COUNT_COMPARISON_AT_LEAST,
                    count=2,
                    type=common.SMS_TYPE_NEWSLETTER,
                    yes_next="loyal",
                    no_next="casual",
                ),
            ),
            wpb.Node(id="loyal", end=wpb.EndNode()),
            wpb.Node(id="casual", end=wpb.EndNode()),
        ],
    )

    async def routes() -> dict[str, str]:
        out = {}
        listed = await stubs.workflows.ListWorkflowRuns(
            wpb.ListWorkflowRunsRequest(parent=route.name), metadata=store.md
        )
        for r in listed.workflow_runs:
            run = await stubs.workflows.GetWorkflowRun(wpb.GetWorkflowRunRequest(name=r.name), metadata=store.md)
            out[r.contact] = run.steps[-1].node
        return out

    contacts = {
        c.email: c.name
        for c in (
            await stubs.contacts.ListContacts(cpb.ListContactsRequest(parent=store.name), metadata=store.md)
        ).contacts
    }
    got = await routes()
    assert got[contacts["ana@x.co"]] == "loyal"
    assert got[contacts["bea@x.co"]] == "casual"
    assert got[contacts["dani@x.co"]] == "casual"
