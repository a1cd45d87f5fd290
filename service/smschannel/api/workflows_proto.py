"""Workflow protos ↔ domain."""

from __future__ import annotations

from datetime import timedelta

from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from ..domain.contacts import ContactPatch
from ..domain.enums import RecipientMode, SmsType
from ..domain.workflows import (
    MAX_NODES,
    MAX_WAIT,
    MAX_WINDOW,
    Comparison,
    EndStep,
    Node,
    ReceivedSmsStep,
    Run,
    RunStep,
    SendSmsStep,
    Step,
    Trigger,
    UpdateContactStep,
    WaitStep,
    Workflow,
)
from ..errors import FieldViolation, InvalidArgument, echo
from ..names import ContactName, MessageName, SmsContentName, WorkflowName, WorkflowRunName
from ..operations.preview import WorkflowPreview
from ..v1 import common_pb2
from ..v1 import contacts_service_pb2 as cpb
from ..v1 import workflow_service_pb2 as pb
from .contacts_proto import patch_from_proto
from .convert import duration_from_proto, time_from_proto, timestamp
from .messages_proto import mappings_from_proto
from .rules_proto import money

__all__ = ["graph_from_proto", "run_to_proto", "workflow_to_proto"]


def _content_id(field: str, name: str, store: str) -> str:
    if not name:
        return ""
    parsed = SmsContentName.parse(field, name)
    if parsed.store != store:
        raise InvalidArgument(field, f"{echo(name)} is not in stores/{store}")
    return parsed.sms_content


def _enum(kind: type[SmsType] | type[RecipientMode] | type[Comparison], field: str, value: int) -> object:
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a {kind.__name__}") from None


def _step(msg: pb.Node, path: str, store: str, default_country: str) -> Step | None:
    kind = msg.WhichOneof("kind")
    if kind == "send_sms":
        s = msg.send_sms
        return SendSmsStep(
            sms_content=_content_id(f"{path}.send_sms.sms_content", s.sms_content, store),
            recipient_mode=_enum(RecipientMode, f"{path}.send_sms.recipient_mode", s.recipient_mode),  # type: ignore[arg-type]
            type=_enum(SmsType, f"{path}.send_sms.type", s.type),  # type: ignore[arg-type]
            alert_phone=s.alert_phone.strip(),
            sender=s.sender.strip(),
            variables=mappings_from_proto(f"{path}.send_sms.variables", dict(s.variables)),
            next=s.next,
        )
    if kind == "received_sms":
        r = msg.received_sms
        comparison = _enum(Comparison, f"{path}.received_sms.comparison", r.comparison)
        time, at = r.WhichOneof("time"), f"{path}.received_sms"
        return ReceivedSmsStep(
            yes_next=r.yes_next,
            no_next=r.no_next,
            sms_content=_content_id(f"{path}.received_sms.sms_content", r.sms_content, store),
            comparison=Comparison.AT_LEAST if comparison is Comparison.UNSPECIFIED else comparison,  # type: ignore[arg-type]
            count=1 if comparison is Comparison.UNSPECIFIED and r.count == 0 else r.count,
            type=_enum(SmsType, f"{path}.received_sms.type", r.type),  # type: ignore[arg-type]
            window=(
                duration_from_proto(f"{at}.relative_window", r.relative_window, MAX_WINDOW)
                if time == "relative_window"
                else None
            ),
            start_time=(
                time_from_proto(f"{at}.absolute_range.start_time", r.absolute_range.start_time)
                if time == "absolute_range"
                else None
            ),
            end_time=(
                time_from_proto(f"{at}.absolute_range.end_time", r.absolute_range.end_time)
                if time == "absolute_range"
                else None
            ),
        )
    if kind == "wait":
        w = msg.wait
        until = w.WhichOneof("until")
        return WaitStep(
            duration=duration_from_proto(f"{path}.wait.duration", w.duration, MAX_WAIT)
            if until == "duration"
            else None,
            until=time_from_proto(f"{path}.wait.until_time", w.until_time) if until == "until_time" else None,
            next=w.next,
        )
    if kind == "update_contact":
        u = msg.update_contact
        paths = set(u.update_mask.paths) or None
        patch = patch_from_proto(u.contact, paths, default_country, f"{path}.update_contact.contact.")
        return UpdateContactStep(patch=patch, next=u.next)
    if kind == "end":
        return EndStep()
    return None


def _trigger(msg: pb.Trigger) -> Trigger:
    kind = msg.WhichOneof("kind")
    if kind == "event":
        return Trigger("event", event_name=msg.event.event_name.strip())
    if kind == "contact_created":
        return Trigger("contact_created")
    if kind == "broadcast":
        b, field = msg.broadcast, "workflow.trigger.broadcast.start_time"
        start = time_from_proto(field, b.start_time) if b.HasField("start_time") else None
        return Trigger("broadcast", contact_filter=b.contact_filter, start_time=start)
    return Trigger()


def graph_from_proto(msg: pb.Workflow, store: str, default_country: str) -> tuple[Trigger, tuple[Node, ...]]:
    """The trigger and nodes of a proto workflow (shape errors are INVALID_ARGUMENT, all at once)."""
    if len(msg.nodes) > MAX_NODES:  # before looking at any node: a huge graph costs nothing to refuse
        raise InvalidArgument("workflow.nodes", f"at most {MAX_NODES} nodes, not {len(msg.nodes)}")
    nodes: list[Node] = []
    violations: list[FieldViolation] = []
    trigger = Trigger()
    try:
        trigger = _trigger(msg.trigger)
    except InvalidArgument as e:
        violations.extend(e.violations)
    for i, node in enumerate(msg.nodes):
        path = f"workflow.nodes[{i}]"
        if not node.id or len(node.id) > 63 or not node.id.replace("-", "").replace("_", "").isalnum():
            violations.append(FieldViolation(f"{path}.id", "required: [a-zA-Z0-9_-]{1,63}"))
        try:
            nodes.append(Node(node.id, _step(node, path, store, default_country)))
        except InvalidArgument as e:
            violations.extend(e.violations)
    if violations:
        raise InvalidArgument.of(violations)
    return trigger, tuple(nodes)


def _patch_to_proto(patch: ContactPatch) -> tuple[cpb.Contact, field_mask_pb2.FieldMask]:
    contact, paths = cpb.Contact(), []
    for name in ("email", "first_name", "last_name", "mobile_phone", "mobile_phone_status", "sms_subscription_status"):
        value = getattr(patch, name)
        if value is not None:
            setattr(contact, name, int(value) if name.endswith("status") else value)
            paths.append(name)
    for key, value in patch.custom_fields.items():
        v = common_pb2.CustomFieldValue()
        if isinstance(value, bool):
            v.bool_value = value
        elif isinstance(value, float):
            v.number_value = value
        elif isinstance(value, str):
            v.string_value = value
        else:
            v.timestamp_value.FromDatetime(value)
        contact.custom_fields[key].CopyFrom(v)
        paths.append(f"custom_fields.{key}")
    paths += [f"custom_fields.{k}" for k in sorted(patch.remove_custom_fields)]
    return contact, field_mask_pb2.FieldMask(paths=paths)


def _duration(d: timedelta) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(d)
    return out


def _content_name(store: str, content_id: str) -> str:
    return str(SmsContentName(store, content_id)) if content_id else ""


def _node_to_proto(node: Node, store: str) -> pb.Node:
    out = pb.Node(id=node.id)
    s = node.step
    if isinstance(s, SendSmsStep):
        out.send_sms.CopyFrom(
            pb.SendSmsNode(
                sms_content=_content_name(store, s.sms_content),
                recipient_mode=int(s.recipient_mode),  # type: ignore[arg-type]
                alert_phone=s.alert_phone,
                type=int(s.type),  # type: ignore[arg-type]
                sender=s.sender,
                variables={
                    k: common_pb2.VariableValue(**{v.kind: v.value}, fallback=v.fallback)
                    for k, v in s.variables.items()
                },
                next=s.next,
            )
        )
    elif isinstance(s, ReceivedSmsStep):
        r = pb.ReceivedSmsNode(
            sms_content=_content_name(store, s.sms_content),
            comparison=int(s.comparison),  # type: ignore[arg-type]
            count=s.count,
            type=int(s.type),  # type: ignore[arg-type]
            yes_next=s.yes_next,
            no_next=s.no_next,
        )
        if s.window is not None:
            r.relative_window.CopyFrom(_duration(s.window))
        elif s.start_time is not None and s.end_time is not None:
            r.absolute_range.start_time.FromDatetime(s.start_time)
            r.absolute_range.end_time.FromDatetime(s.end_time)
        out.received_sms.CopyFrom(r)
    elif isinstance(s, WaitStep):
        w = pb.WaitNode(next=s.next)
        if s.duration is not None:
            w.duration.CopyFrom(_duration(s.duration))
        elif s.until is not None:
            w.until_time.FromDatetime(s.until)
        out.wait.CopyFrom(w)
    elif isinstance(s, UpdateContactStep):
        contact, mask = _patch_to_proto(s.patch)
        out.update_contact.CopyFrom(pb.UpdateContactNode(contact=contact, update_mask=mask, next=s.next))
    elif isinstance(s, EndStep):
        out.end.SetInParent()
    return out


def workflow_to_proto(wf: Workflow) -> pb.Workflow:
    """Workflow → proto."""
    trigger = pb.Trigger()
    if wf.trigger.kind == "event":
        trigger.event.event_name = wf.trigger.event_name
    elif wf.trigger.kind == "contact_created":
        trigger.contact_created.SetInParent()
    elif wf.trigger.kind == "broadcast":
        trigger.broadcast.contact_filter = wf.trigger.contact_filter
        if wf.trigger.start_time is not None:
            trigger.broadcast.start_time.FromDatetime(wf.trigger.start_time)
    return pb.Workflow(
        name=str(WorkflowName(wf.store_id, wf.id)),
        display_name=wf.display_name,
        state=int(wf.state),  # type: ignore[arg-type]
        trigger=trigger,
        nodes=[_node_to_proto(n, wf.store_id) for n in wf.nodes],
        start_node=wf.start_node,
        create_time=timestamp(wf.create_time),
        update_time=timestamp(wf.update_time),
        etag=wf.etag,
        last_error=wf.last_error,
        last_error_time=timestamp(wf.last_error_time),
    )


def run_to_proto(run: Run, steps: list[RunStep] | None = None) -> pb.WorkflowRun:
    """Run (and its steps) → proto."""
    event = struct_pb2.Struct()
    event.update(dict(run.event))
    return pb.WorkflowRun(
        name=str(WorkflowRunName(run.store_id, run.workflow_id, run.id)),
        contact=str(ContactName(run.store_id, run.contact_id)) if run.contact_id else "",
        state=int(run.state),  # type: ignore[arg-type]
        current_node=run.current_node,
        wake_time=timestamp(run.wake_time),
        steps=[
            pb.WorkflowRunStep(
                node=s.node,
                time=timestamp(s.time),
                outcome=s.outcome,
                message=str(MessageName(run.store_id, s.message_id)) if s.message_id else "",
            )
            for s in steps or []
        ],
        event_properties=event,
        create_time=timestamp(run.create_time),
        update_time=timestamp(run.update_time),
    )


def preview_to_proto(preview: WorkflowPreview) -> pb.WorkflowPreview:
    """A workflow's dry run → proto, with the costs at the store's part prices."""
    wf, rules = preview.workflow, preview.rules
    out = pb.WorkflowPreview(workflow=str(WorkflowName(wf.store_id, wf.id)), audience_count=preview.audience)
    for node in preview.nodes:
        msg = out.nodes.add(
            node=node.node,
            sms_content=str(SmsContentName(wf.store_id, node.content_id)),
            type=int(node.type),
            send_count=node.send,
            held_count=node.held,
            sample_texts=node.samples,
        )
        for reason, count in sorted(node.skips.items()):
            msg.skips.add(reason=reason, count=count)
        total, priced = 0, False
        for country, sums in sorted(node.countries.items()):
            row = msg.countries.add(country=country, message_count=sums.messages, part_count=sums.parts)
            price = rules.price_of(country)
            if price is not None:
                row.estimated_cost.CopyFrom(money(rules.currency, price * sums.parts))
                total, priced = total + price * sums.parts, True
        if priced:
            msg.estimated_cost.CopyFrom(money(rules.currency, total))
    return out
