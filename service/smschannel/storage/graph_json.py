"""A workflow's graph (trigger, nodes, start node) as the JSON of its `graph` column.

In storage/, shared by every backend (they store one shape): how stored JSON is spelled is storage's
business (a migration may have to read an older shape), not the domain's. Times are
{"$t": ISO 8601}, durations {"$d": seconds}."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from ..domain.contacts import ContactPatch
from ..domain.enums import MobilePhoneStatus, RecipientMode, SmsSubscriptionStatus, SmsType
from ..domain.sending import VariableSource
from ..domain.workflows import (
    Comparison,
    EndStep,
    Node,
    ReceivedSmsStep,
    SendSmsStep,
    Trigger,
    UpdateContactStep,
    WaitStep,
    Workflow,
)

__all__ = ["graph_from_json", "graph_to_json"]


def _enc(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$d": value.total_seconds()}
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _enc(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_enc(v) for v in value]
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict):
        if "$t" in value:
            return datetime.fromisoformat(value["$t"])
        if "$d" in value:
            return timedelta(seconds=value["$d"])
        return {k: _dec(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dec(v) for v in value]
    return value


_STEPS: dict[str, type] = {
    "send_sms": SendSmsStep,
    "received_sms": ReceivedSmsStep,
    "wait": WaitStep,
    "update_contact": UpdateContactStep,
    "end": EndStep,
}


def graph_to_json(wf: Workflow) -> dict[str, Any]:
    """Trigger, nodes and start node as plain JSON data."""
    nodes = []
    for n in wf.nodes:
        kind = next((k for k, t in _STEPS.items() if isinstance(n.step, t)), "")
        nodes.append({"id": n.id, "kind": kind, "step": _enc(asdict(n.step)) if n.step is not None else None})
    return {"trigger": _enc(asdict(wf.trigger)), "nodes": nodes, "start_node": wf.start_node}


def graph_from_json(data: dict[str, Any]) -> tuple[Trigger, tuple[Node, ...], str]:
    """Inverse of graph_to_json."""
    trigger = Trigger(**_dec(data["trigger"]))
    nodes = []
    for raw in data["nodes"]:
        step = None
        if raw["kind"]:
            values = _dec(raw["step"])
            if raw["kind"] == "send_sms":
                values["recipient_mode"] = RecipientMode(values["recipient_mode"])
                values["type"] = SmsType(values["type"])
                values["variables"] = {k: VariableSource(**v) for k, v in values["variables"].items()}
            elif raw["kind"] == "received_sms":
                values["comparison"] = Comparison(values["comparison"])
                values["type"] = SmsType(values["type"])
            elif raw["kind"] == "update_contact":
                p = values["patch"]
                p["remove_custom_fields"] = set(p["remove_custom_fields"])
                if p.get("mobile_phone_status") is not None:
                    p["mobile_phone_status"] = MobilePhoneStatus(p["mobile_phone_status"])
                if p.get("sms_subscription_status") is not None:
                    p["sms_subscription_status"] = SmsSubscriptionStatus(p["sms_subscription_status"])
                values["patch"] = ContactPatch(**p)
            step = _STEPS[raw["kind"]](**values)
        nodes.append(Node(raw["id"], step))
    return trigger, tuple(nodes), data["start_node"]
