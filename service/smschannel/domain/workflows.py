"""Workflows: the graph, its validation (SPEC §8), and the Received SMS condition (SPEC §7)."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ..errors import InvalidArgument, Violation, echo
from ..records import record
from .channel import validate_sender
from .contacts import ContactPatch
from .enums import MessageStatus, RecipientMode, SmsType
from .graphs import loops
from .sending import VariableSource, check_mappings

__all__ = [
    "MAX_NODES",
    "MAX_WAIT",
    "MAX_WINDOW",
    "Comparison",
    "Node",
    "ReceivedSmsStep",
    "Run",
    "RunState",
    "RunStep",
    "SendSmsStep",
    "Trigger",
    "UpdateContactStep",
    "WaitStep",
    "Workflow",
    "WorkflowState",
    "compare_count",
    "graph_violations",
    "received_window",
    "send_outcome",
]


# Limits stated in workflow_service.proto. 500 nodes is far beyond a hand-drawn automation and keeps
# activation (every check is linear) and a run's node lookups cheap. Waits and Received SMS windows of
# up to 10 years (3,650 days) keep `now ± duration` a date for the engine's arithmetic for millennia.
MAX_NODES = 500
MAX_WAIT = timedelta(days=3650)
MAX_WINDOW = timedelta(days=3650)


class WorkflowState(enum.IntEnum):
    """DRAFT → ACTIVE ⇄ PAUSED."""

    UNSPECIFIED = 0
    DRAFT = 1
    ACTIVE = 2
    PAUSED = 3


class RunState(enum.IntEnum):
    """Where a run is."""

    UNSPECIFIED = 0
    RUNNING = 1
    WAITING = 2
    PAUSED = 3
    COMPLETED = 4
    FAILED = 5


class Comparison(enum.IntEnum):
    """How a Received SMS count is compared."""

    UNSPECIFIED = 0
    AT_LEAST = 1
    AT_MOST = 2
    EXACTLY = 3


@dataclass(frozen=True, slots=True)
class Trigger:
    """What starts runs: an event, contact creation, or a broadcast over a contact filter."""

    kind: Literal["", "event", "contact_created", "broadcast"] = ""
    event_name: str = ""
    contact_filter: str = ""
    start_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendSmsStep:
    """The Send SMS action."""

    sms_content: str  # content id
    recipient_mode: RecipientMode
    type: SmsType
    alert_phone: str = ""
    sender: str = ""
    variables: Mapping[str, VariableSource] = field(default_factory=dict)
    next: str = ""


@dataclass(frozen=True, slots=True)
class ReceivedSmsStep:
    """The Received SMS condition."""

    yes_next: str
    no_next: str
    sms_content: str = ""  # "" = any content
    comparison: Comparison = Comparison.AT_LEAST
    count: int = 1
    type: SmsType = SmsType.UNSPECIFIED  # either
    window: timedelta | None = None  # the last N before evaluation
    start_time: datetime | None = None  # or an absolute range [start, end)
    end_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class WaitStep:
    """Wait a duration or until a time."""

    duration: timedelta | None = None
    until: datetime | None = None
    next: str = ""


@dataclass(frozen=True, slots=True)
class UpdateContactStep:
    """Set contact fields (the phone and both statuses included)."""

    patch: ContactPatch
    next: str = ""


@dataclass(frozen=True, slots=True)
class EndStep:
    """End the run."""


Step = SendSmsStep | ReceivedSmsStep | WaitStep | UpdateContactStep | EndStep


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the graph."""

    id: str
    step: Step | None  # None: the node says nothing (refused at activation)

    def exits(self) -> list[str]:
        """The node ids this node can go to."""
        s = self.step
        if isinstance(s, ReceivedSmsStep):
            return [n for n in (s.yes_next, s.no_next) if n]
        if isinstance(s, SendSmsStep | WaitStep | UpdateContactStep):
            return [s.next] if s.next else []
        return []


@dataclass(frozen=True, slots=True)
class Workflow:
    """An automation of a store."""

    store_id: str
    id: str
    display_name: str
    state: WorkflowState
    trigger: Trigger
    nodes: tuple[Node, ...]
    start_node: str
    create_time: datetime
    update_time: datetime
    version: int = 1
    # Written by the engine, not by edits (so not part of the etag): why it last could not move the
    # workflow, e.g. a broadcast page that failed; cleared when it moves again or is re-activated.
    last_error: str = ""
    last_error_time: datetime | None = None

    @property
    def etag(self) -> str:
        """Changes on every stored change."""
        return f'W/"{self.version}"'

    def node(self, node_id: str) -> Node | None:
        """The node with this id."""
        return next((n for n in self.nodes if n.id == node_id), None)

    def sms_contents(self) -> set[str]:
        """The ids of the SMS contents its nodes send or count."""
        return {
            n.step.sms_content
            for n in self.nodes
            if isinstance(n.step, SendSmsStep | ReceivedSmsStep) and n.step.sms_content
        }


def graph_violations(
    wf: Workflow,
    content_texts: Mapping[str, str],
    default_sender: str,
    check_phone: Any,
    check_filter: Callable[[str, str], object],
) -> list[Violation]:
    """Every reason the workflow cannot be activated, at once; linear in nodes + edges.

    `content_texts` maps the content ids that exist to their texts; `check_phone(field, raw)` returns
    the E.164 of an alert phone or raises InvalidArgument; `check_filter(field, text)` parses a
    broadcast's contact filter as the engine will, or raises InvalidArgument."""
    out: list[Violation] = []
    by_id = {n.id: n for n in wf.nodes}
    out += _trigger_violations(wf.trigger, check_filter)
    if not wf.nodes:
        out.append(Violation("NO_NODES", "nodes", "a workflow needs at least one node"))
    if len(wf.nodes) > MAX_NODES:
        out.append(Violation("TOO_MANY_NODES", "nodes", f"{len(wf.nodes)} nodes; at most {MAX_NODES}"))
    for dup in sorted(i for i, seen in Counter(n.id for n in wf.nodes).items() if seen > 1):
        out.append(Violation("DUPLICATE_NODE_ID", f"nodes/{dup}", "node ids must be unique"))
    if wf.nodes and wf.start_node not in by_id:
        out.append(Violation("BAD_START_NODE", "start_node", f"{wf.start_node!r} is not a node of the workflow"))
    for n in wf.nodes:
        subject = f"nodes/{n.id}"
        if n.step is None:
            out.append(
                Violation(
                    "EMPTY_NODE", subject, "a node must be one of send_sms, received_sms, wait, update_contact, end"
                )
            )
            continue
        for target in n.exits():
            if target not in by_id:
                out.append(Violation("DANGLING_EDGE", subject, f"goes to {target!r}, which is not a node"))
        out += _step_violations(n, wf.trigger, content_texts, default_sender, check_phone)
    if wf.start_node in by_id:
        reachable, todo = set(), [wf.start_node]
        while todo:
            nid = todo.pop()
            if nid in reachable or nid not in by_id:
                continue
            reachable.add(nid)
            todo += by_id[nid].exits()
        for n in wf.nodes:
            if n.id not in reachable:
                out.append(Violation("UNREACHABLE_NODE", f"nodes/{n.id}", "no path from the start node reaches it"))
    # A wait node breaks a loop: only the others can spin without ever yielding.
    spinning = {n.id: n.exits() for n in by_id.values() if not isinstance(n.step, WaitStep)}
    for cycle in loops(spinning):
        why = f"the loop {_path_text(cycle)} has no wait node"
        out.append(Violation("CYCLE_WITHOUT_WAIT", f"nodes/{cycle[0]}", why))
    return out


def _path_text(path: list[str], shown: int = 8) -> str:
    """`a → b → a`; a long loop is cut in the middle, so an error stays small whatever the graph."""
    if len(path) <= shown:
        return " → ".join(path)
    return f"{' → '.join(path[: shown - 2])} → … → {' → '.join(path[-2:])} ({len(path) - 1} nodes)"


def _trigger_violations(trigger: Trigger, check_filter: Callable[[str, str], object]) -> list[Violation]:
    if trigger.kind == "":
        return [Violation("MISSING_TRIGGER", "trigger", "a workflow needs a trigger")]
    if trigger.kind == "event" and not trigger.event_name.strip():
        return [Violation("MISSING_EVENT_NAME", "trigger.event", "name the event that starts the workflow")]
    if trigger.kind == "broadcast":
        field = "trigger.broadcast.contact_filter"
        try:
            check_filter(field, trigger.contact_filter)
        except InvalidArgument as e:
            return [Violation("BAD_FILTER", field, e.violations[0].description)]
    return []


def _step_violations(
    n: Node, trigger: Trigger, texts: Mapping[str, str], default_sender: str, check_phone: Any
) -> list[Violation]:
    s, subject, out = n.step, f"nodes/{n.id}", []
    if isinstance(s, SendSmsStep):
        if s.sms_content not in texts:
            out.append(Violation("UNKNOWN_SMS_CONTENT", subject, f"sms content {echo(s.sms_content)} does not exist"))
        else:
            for v in check_mappings(
                "variables", texts[s.sms_content], s.variables, s.type, events=trigger.kind == "event", contact=True
            ):
                out.append(Violation("BAD_VARIABLES", subject, f"{v.field}: {v.description}"))
        if s.type is SmsType.UNSPECIFIED:
            out.append(Violation("MISSING_SMS_TYPE", subject, "TRANSACTIONAL or NEWSLETTER"))
        if s.recipient_mode is RecipientMode.UNSPECIFIED:
            out.append(Violation("MISSING_RECIPIENT_MODE", subject, "CONTACT or ALERT"))
        sender = s.sender or default_sender
        try:
            if not sender:
                raise InvalidArgument("sender", "no sender and no default sender on the channel")
            validate_sender("sender", sender)
        except InvalidArgument as e:
            out.append(Violation("BAD_SENDER", subject, e.violations[0].description))
        if s.recipient_mode is RecipientMode.ALERT:
            try:
                if not check_phone("alert_phone", s.alert_phone):
                    raise InvalidArgument("alert_phone", "an ALERT send needs its fixed phone")
            except InvalidArgument as e:
                out.append(Violation("BAD_ALERT_PHONE", subject, e.violations[0].description))
    elif isinstance(s, ReceivedSmsStep):
        if not s.yes_next or not s.no_next:
            out.append(Violation("MISSING_EXIT", subject, "a condition needs both a yes and a no exit"))
        if s.count < 0:
            out.append(Violation("BAD_COUNT", subject, "the count must not be negative"))
        if s.window is not None and s.window <= timedelta(0):
            out.append(Violation("BAD_WINDOW", subject, "the window must be positive"))
        elif s.window is not None and s.window > MAX_WINDOW:
            out.append(Violation("WINDOW_TOO_LONG", subject, f"the window is at most {MAX_WINDOW.days} days"))
        if s.start_time and s.end_time and s.start_time >= s.end_time:
            out.append(Violation("BAD_RANGE", subject, "the range must start before it ends"))
        if s.sms_content and s.sms_content not in texts:
            out.append(Violation("UNKNOWN_SMS_CONTENT", subject, f"sms content {echo(s.sms_content)} does not exist"))
    elif isinstance(s, WaitStep):
        if s.duration is None and s.until is None:
            out.append(Violation("BAD_WAIT", subject, "wait a duration or until a time"))
        elif s.duration is not None and s.duration <= timedelta(0):
            out.append(Violation("BAD_WAIT", subject, "the duration must be positive"))
        elif s.duration is not None and s.duration > MAX_WAIT:
            out.append(Violation("WAIT_TOO_LONG", subject, f"a wait is at most {MAX_WAIT.days} days"))
    elif isinstance(s, UpdateContactStep) and s.patch == ContactPatch():
        out.append(Violation("EMPTY_UPDATE", subject, "the update sets no field"))
    return out


def received_window(step: ReceivedSmsStep, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The [since, until) range a Received SMS condition counts messages in."""
    if step.window is not None:
        return now - step.window, None
    return step.start_time, step.end_time


def compare_count(step: ReceivedSmsStep, count: int) -> bool:
    """The condition's answer for `count` matching messages."""
    if step.comparison is Comparison.AT_MOST:
        return count <= step.count
    if step.comparison is Comparison.EXACTLY:
        return count == step.count
    return count >= step.count


@record
class RunStep:
    """One executed node of a run."""

    node: str
    time: datetime
    outcome: str
    message_id: str = ""


@record
class Run:
    """One contact's way through a workflow."""

    store_id: str
    workflow_id: str
    id: str
    contact_id: str
    state: RunState
    current_node: str
    wake_time: datetime
    create_time: datetime
    update_time: datetime
    event: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    step_count: int = 0


def send_outcome(status: MessageStatus, reason: str) -> str:
    """A Send SMS step's outcome, as its run shows it: the message's status and why ("queued",
    "skipped: a NEWSLETTER needs SUBSCRIBED; ...")."""
    return status.name.lower() + (f": {reason}" if reason else "")
