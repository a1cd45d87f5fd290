"""The help-centre article, played with the Python client against a running server.

    python article_flow.py --target 127.0.0.1:50051 --admin-key $ADMIN --instasent-token $TOKEN \\
        [--fake-instasent http://127.0.0.1:8099]

Channel config → callback URL → contacts with national numbers → an SMS content with an unsubscribe
variable → a newsletter (Send SMS) workflow → the messages. With --fake-instasent (the demo), it also
points the fake's callbacks at the sidecar, shows what Instasent received, and clicks an opt-out link.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from smschannel_client import Client
from smschannel_client.v1 import common_pb2 as common
from smschannel_client.v1 import contacts_service_pb2 as contacts
from smschannel_client.v1 import sms_channel_service_pb2 as sms
from smschannel_client.v1 import workflow_service_pb2 as wf


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def wait_for(check: Callable[[], Any], what: str, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


async def run(
    target: str, admin_key: str, token: str, fake: str = "", store_id: str = "", say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Play the article; returns what happened (for tests)."""
    store_id = store_id or f"shop-{uuid.uuid4().hex[:6]}"
    async with Client(target, admin_key) as admin:
        created = await admin.sms.CreateStore(
            sms.CreateStoreRequest(store_id=store_id, store=sms.Store(display_name="Demo shop"))
        )
    say(f"1. store {created.store.name} created; its API key is shown once")
    async with Client(target, created.api_key) as client:
        config = await client.sms.UpdateSmsChannelConfig(
            sms.UpdateSmsChannelConfigRequest(
                sms_channel_config=sms.SmsChannelConfig(
                    name=f"stores/{store_id}/smsChannelConfig",
                    api_token=token,
                    default_country="ES",
                    default_sender="DemoShop",
                )
            )
        )
        say(f"   channel: token {config.api_token_hint} is {sms.TokenStatus.Name(config.token_status)}")
        say(f"   paste into Instasent (API Tokens → Callback URL): {config.callback_url}")
        if fake:
            path = config.callback_url.split("/instasent/", 1)[1]
            sidecar = _sidecar_base(config.callback_url)
            await asyncio.to_thread(
                _http, "POST", f"{fake}/_fake/tokens", {"token": token, "callback_url": f"{sidecar}/instasent/{path}"}
            )

        rows = [
            contacts.Contact(
                email="ana@example.com",
                first_name="Ana",
                mobile_phone="612 345 678",
                sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
            ),
            contacts.Contact(
                email="bruno@example.com",
                first_name="Bruno",
                mobile_phone="0034 699 111 222",
                sms_subscription_status=common.SMS_SUBSCRIPTION_STATUS_SUBSCRIBED,
            ),
            contacts.Contact(email="carla@example.com", first_name="Carla", mobile_phone="611 000 111"),
        ]

        async def stream() -> AsyncIterator[contacts.ImportContactsRequest]:
            yield contacts.ImportContactsRequest(parent=f"stores/{store_id}", contacts=rows)

        imported = await client.contacts.ImportContacts(stream())
        say(f"2. imported {imported.created_count} contacts (national numbers → E.164; Carla has not consented)")

        content = await client.sms.CreateSmsContent(
            sms.CreateSmsContentRequest(
                parent=f"stores/{store_id}",
                sms_content=sms.SmsContent(
                    display_name="Spring sale", text="Hola {{name}}! -20% en todo hoy. Baja: {{stop}}"
                ),
            )
        )
        say(f"3. SMS content {content.name}: variables {list(content.variables)}, {content.segments} part(s)")

        workflow = await client.workflows.CreateWorkflow(
            wf.CreateWorkflowRequest(
                parent=f"stores/{store_id}",
                workflow=wf.Workflow(
                    display_name="Spring newsletter",
                    trigger=wf.Trigger(broadcast=wf.BroadcastTrigger()),
                    nodes=[
                        wf.Node(
                            id="send",
                            send_sms=wf.SendSmsNode(
                                sms_content=content.name,
                                recipient_mode=common.RECIPIENT_MODE_CONTACT,
                                type=common.SMS_TYPE_NEWSLETTER,
                                variables={
                                    "name": common.VariableValue(contact_field="first_name", fallback="cliente"),
                                    "stop": common.VariableValue(literal="{{unsubscribe}}"),
                                },
                            ),
                        )
                    ],
                    start_node="send",
                ),
            )
        )
        await client.workflows.ActivateWorkflow(wf.ActivateWorkflowRequest(name=workflow.name))
        say(f"   newsletter workflow {workflow.name} activated")

        async def runs_done() -> bool:
            runs = await client.workflows.ListWorkflowRuns(wf.ListWorkflowRunsRequest(parent=workflow.name))
            return len(runs.workflow_runs) == 3 and all(
                r.state == wf.WORKFLOW_RUN_STATE_COMPLETED for r in runs.workflow_runs
            )

        await wait_for(runs_done, "the newsletter runs")

        async def sent() -> bool:
            log = await client.sms.ListMessages(sms.ListMessagesRequest(parent=f"stores/{store_id}"))
            return all(m.status != common.MESSAGE_STATUS_QUEUED for m in log.messages)

        await wait_for(sent, "the outbox")
        log = await client.sms.ListMessages(sms.ListMessagesRequest(parent=f"stores/{store_id}"))
        say("4. the message log:")
        for m in log.messages:
            reason = f" ({m.status_reason})" if m.status_reason else ""
            say(f"   {m.recipient:>14} {common.MessageStatus.Name(m.status):<24} {m.text!r}{reason}")
        result: dict[str, Any] = {
            "store": store_id,
            "statuses": {m.recipient: common.MessageStatus.Name(m.status) for m in log.messages},
        }
        if fake:
            received = (await asyncio.to_thread(_http, "GET", f"{fake}/_fake/messages"))["messages"]
            mine = [r for r in received if r["token"] == token]
            say("5. what Instasent received:")
            for r in mine:
                say(f"   to {r['to']} from {r['sender']}: {r['text']!r}")
            ana = next(r for r in mine if r["to"] == "+34612345678")
            await asyncio.to_thread(_http, "POST", f"{fake}/_fake/stop", {"id": ana["id"]})
            say("6. Ana clicked the unsubscribe link; Instasent called the callback URL with `stop`")
            found = await client.contacts.ListContacts(
                contacts.ListContactsRequest(parent=f"stores/{store_id}", filter="email = ana@example.com")
            )
            acts = await client.contacts.ListActivities(
                contacts.ListActivitiesRequest(parent=found.contacts[0].name, filter="type = SMS_UNSUBSCRIBE")
            )
            status = common.SmsSubscriptionStatus.Name(found.contacts[0].sms_subscription_status)
            say(f"   Ana is now {status}, with {len(acts.activities)} 'SMS unsubscribe' activity")
            result |= {"received": [r["to"] for r in mine], "ana": status, "ana_unsubscribes": len(acts.activities)}
        return result


def _sidecar_base(callback_url: str) -> str:
    return callback_url.split("/instasent/callbacks/", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--instasent-token", required=True)
    parser.add_argument("--fake-instasent", default="", help="base URL of the fake Instasent (demo only)")
    args = parser.parse_args()
    asyncio.run(run(args.target, args.admin_key, args.instasent_token, args.fake_instasent))


if __name__ == "__main__":
    main()
