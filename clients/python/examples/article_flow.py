"""The help-centre article, played with the Python client against a running server.

    python article_flow.py --target 127.0.0.1:50051 --admin-key $ADMIN --instasent-token $TOKEN \\
        [--fake-instasent http://127.0.0.1:8099]

Channel config → callback URL → contacts with national numbers → an SMS content with an unsubscribe
variable → a newsletter (Send SMS) workflow → the messages. With --fake-instasent (the demo), it also
points the fake's callbacks at the sidecar, shows what Instasent received, and clicks an opt-out link.

Every step's outcome is checked (the token valid, the consenting contacts' messages SENT, the opt-out
applied, the contact UNSUBSCRIBED); the first that is not as the article says ends it with exit status 1.
The fake is shared by everyone using the same token (the README walkthrough, an earlier run), so the
flow only ever looks at its own messages there: the SMS whose clientId is one of this store's message ids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from smschannel_client import Client
from smschannel_client.v1 import common_pb2 as common
from smschannel_client.v1 import contacts_service_pb2 as contacts
from smschannel_client.v1 import sms_channel_service_pb2 as sms
from smschannel_client.v1 import workflow_service_pb2 as wf

ANA, BRUNO, CARLA = "+34612345678", "+34699111222", "+34611000111"
# Accepted by Instasent; DELIVERED once the fake's (or Instasent's) delivery report has come back.
ACCEPTED = {"MESSAGE_STATUS_SENT", "MESSAGE_STATUS_DELIVERED"}


class FlowFailed(Exception):
    """A step did not have the outcome the article promises."""


def expect(ok: bool, what: str) -> None:
    """Stop the flow with `what` unless `ok`."""
    if not ok:
        raise FlowFailed(what)


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise FlowFailed(f"{method} {url} answered {e.code}: {e.read().decode(errors='replace')}") from e


async def wait_for(check: Callable[[], Any], what: str, seconds: float = 30) -> None:
    """Poll `check` until true; FlowFailed after `seconds`."""
    for _ in range(int(seconds / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise FlowFailed(f"timed out waiting for {what}")


async def run(
    target: str, admin_key: str, token: str, fake: str = "", store_id: str = "", say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Play the article; returns what happened (for tests), or raises FlowFailed at the first step that failed."""
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
                    # A demo sends at any hour; a real store keeps its quiet hours (21:00–09:00 by default).
                    quiet_hours=sms.QuietHours(),
                )
            )
        )
        token_status = sms.TokenStatus.Name(config.token_status)
        say(f"   channel: token {config.api_token_hint} is {token_status}")
        expect(
            config.token_status == sms.TOKEN_STATUS_VALID,
            f"Instasent did not accept the token: {token_status} {config.token_status_message}".rstrip(),
        )
        say(f"   paste into Instasent (API Tokens → Callback URL): {config.callback_url}")
        if fake:
            await asyncio.to_thread(
                _http, "POST", f"{fake}/_fake/tokens", {"token": token, "callback_url": config.callback_url}
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
        expect(imported.created_count == len(rows), f"{imported.created_count} of {len(rows)} contacts imported")

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
        statuses = {m.recipient: common.MessageStatus.Name(m.status) for m in log.messages}
        expect(len(log.messages) == len(rows), f"{len(log.messages)} messages for {len(rows)} contacts")
        for phone in (ANA, BRUNO):
            expect(statuses.get(phone) in ACCEPTED, f"the message to {phone} is {statuses.get(phone)}, not SENT")
        expect(statuses.get(CARLA) == "MESSAGE_STATUS_SKIPPED", f"Carla's message is {statuses.get(CARLA)}")
        result: dict[str, Any] = {"store": store_id, "statuses": statuses}
        if fake:
            # A message's id is its clientId at Instasent: this store's SMS among everyone's.
            client_ids = {m.name.rsplit("/", 1)[1]: m.recipient for m in log.messages}
            received = (await asyncio.to_thread(_http, "GET", f"{fake}/_fake/messages"))["messages"]
            mine = [r for r in received if r["token"] == token and r["client_id"] in client_ids]
            say("5. what Instasent received:")
            for r in mine:
                say(f"   to {r['to']} from {r['sender']}: {r['text']!r}")
            expect(sorted(r["to"] for r in mine) == [ANA, BRUNO], f"Instasent received {[r['to'] for r in mine]}")
            ana_client_id = next(c for c, phone in client_ids.items() if phone == ANA)
            stop = {"token": token, "clientId": ana_client_id}
            answer = await asyncio.to_thread(_http, "POST", f"{fake}/_fake/stop", stop)
            say("6. Ana clicked the unsubscribe link; Instasent called the callback URL with `stop`")
            expect(answer.get("delivered") is True, "the sidecar did not acknowledge the `stop` callback")
            found = await client.contacts.ListContacts(
                contacts.ListContactsRequest(parent=f"stores/{store_id}", filter="email = ana@example.com")
            )
            acts = await client.contacts.ListActivities(
                contacts.ListActivitiesRequest(parent=found.contacts[0].name, filter="type = SMS_UNSUBSCRIBE")
            )
            status = common.SmsSubscriptionStatus.Name(found.contacts[0].sms_subscription_status)
            say(f"   Ana is now {status}, with {len(acts.activities)} 'SMS unsubscribe' activity")
            expect(status == "SMS_SUBSCRIPTION_STATUS_UNSUBSCRIBED", f"Ana is {status} after her opt-out")
            expect(len(acts.activities) == 1, f"Ana has {len(acts.activities)} 'SMS unsubscribe' activities")
            result |= {"received": [r["to"] for r in mine], "ana": status, "ana_unsubscribes": len(acts.activities)}
        return result


def main() -> None:
    """The command line: play the article; exit status 1, with the reason, when a step fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--admin-key", required=True)
    parser.add_argument("--instasent-token", required=True)
    parser.add_argument("--fake-instasent", default="", help="base URL of the fake Instasent (demo only)")
    args = parser.parse_args()
    try:
        asyncio.run(run(args.target, args.admin_key, args.instasent_token, args.fake_instasent))
    except FlowFailed as e:
        raise SystemExit(f"the article flow failed: {e}") from None


if __name__ == "__main__":
    main()
