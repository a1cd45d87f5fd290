"""Dry runs of workflows (PreviewWorkflow): what each Send SMS node would do now for each contact of
the workflow's audience, judged by the very function sending uses (`Sender.judge_many`: consent, the
frequency cap, quiet hours, rendering), with nothing stored and no one called."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from ..domain.channel import SendingRules
from ..domain.enums import MessageStatus, RecipientMode, SmsType
from ..domain.messages import Message
from ..domain.phones import country_of
from ..domain.templates import UNSUBSCRIBE_MARKER, marker_replacement
from ..domain.workflows import SendSmsStep, Workflow
from ..errors import DomainError, NotFound
from ..names import WorkflowName
from ..storage import Storage
from .contacts import contact_query
from .sending import Sender, SendRequest

__all__ = ["CountryTotal", "NodePreview", "Previews", "WorkflowPreview"]

PAGE = 1000  # contacts judged per round (the loop is let go between rounds)
MAX_SAMPLES = 20
INVALID = "invalid"  # the node cannot make this contact's SMS (e.g. no sender)


@dataclass
class CountryTotal:
    """SMS (sent or held) to one country and their parts."""

    messages: int = 0
    parts: int = 0


@dataclass
class NodePreview:
    """What one Send SMS node would do for the audience."""

    node: str
    content_id: str
    type: SmsType
    send: int = 0
    held: int = 0
    skips: Counter[str] = field(default_factory=Counter)
    countries: dict[str, CountryTotal] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)


@dataclass
class WorkflowPreview:
    """A workflow's dry run, with the rules it was judged by (for the cost)."""

    workflow: Workflow
    audience: int
    nodes: list[NodePreview]
    rules: SendingRules


@dataclass
class Previews:
    """The dry-run use case."""

    storage: Storage
    sender: Sender

    async def workflow(self, store_id: str, workflow_id: str, samples: int) -> WorkflowPreview:
        """Judge every Send SMS node of the workflow for every contact of its audience (a broadcast's
        filter; every contact of the store for the other triggers), as if each reached it now."""
        wf = await self.storage.workflows.get(store_id, workflow_id)
        if wf is None:
            raise NotFound(str(WorkflowName(store_id, workflow_id)))
        config = await self.sender.channel.get(store_id)
        text = wf.trigger.contact_filter if wf.trigger.kind == "broadcast" else ""
        query = contact_query(text, config.default_country, "trigger.broadcast.contact_filter")
        steps = [(n.id, n.step) for n in wf.nodes if isinstance(n.step, SendSmsStep)]
        nodes = [NodePreview(node_id, step.sms_content, step.type) for node_id, step in steps]
        audience, after = 0, 0
        while True:
            rows = await self.storage.contacts.page(store_id, query, after, PAGE)
            audience += len(rows)
            for (node_id, step), preview in zip(steps, nodes, strict=True):
                requests = [
                    SendRequest(
                        store_id=store_id,
                        content_id=step.sms_content,
                        type=step.type,
                        mappings=step.variables,
                        sender=step.sender,
                        contact_id=row.item.id if step.recipient_mode is RecipientMode.CONTACT else "",
                        alert_phone=step.alert_phone,
                        workflow_id=wf.id,
                        workflow_node=node_id,
                        event={},
                        contact=row.item,
                    )
                    for row in rows
                ]
                for judged in await self.sender.judge_many(requests):
                    _count(preview, judged, min(samples, MAX_SAMPLES))
            if len(rows) < PAGE:
                break
            after = rows[-1].position
            await asyncio.sleep(0)
        return WorkflowPreview(wf, audience, nodes, config.rules)


def _count(preview: NodePreview, judged: tuple[Message, str] | DomainError, samples: int) -> None:
    if isinstance(judged, DomainError):
        preview.skips[INVALID] += 1
        return
    message, code = judged
    if message.status is not MessageStatus.QUEUED:
        preview.skips[code] += 1
        return
    if message.hold_until is not None:
        preview.held += 1
    else:
        preview.send += 1
    country = country_of(message.recipient)
    total = preview.countries.setdefault(country, CountryTotal())
    total.messages += 1
    total.parts += message.segments
    if len(preview.samples) < samples:
        shown = message.text.replace(UNSUBSCRIBE_MARKER, marker_replacement(country))
        if shown not in preview.samples:
            preview.samples.append(shown)
