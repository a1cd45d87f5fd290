"""Message, SmsContent and send-request protos ↔ domain."""

from __future__ import annotations

from ..domain.messages import Message, SmsContent
from ..domain.segments import measure
from ..domain.sending import VariableSource
from ..domain.templates import variables_of
from ..errors import InvalidArgument
from ..names import ContactName, MessageName, SmsContentName, WorkflowName, WorkflowRunName
from ..v1 import common_pb2
from ..v1 import sms_channel_service_pb2 as pb
from .convert import timestamp

__all__ = ["content_to_proto", "mappings_from_proto", "message_to_proto"]


def content_to_proto(c: SmsContent) -> pb.SmsContent:
    """SmsContent → proto, with its variables and its size as written."""
    size = measure(c.text)
    return pb.SmsContent(
        name=str(SmsContentName(c.store_id, c.id)),
        display_name=c.display_name,
        text=c.text,
        variables=variables_of(c.text),
        encoding=int(size.encoding),  # type: ignore[arg-type]
        length=size.length,
        segments=size.segments,
        create_time=timestamp(c.create_time),
        update_time=timestamp(c.update_time),
        etag=c.etag,
    )


def message_to_proto(m: Message) -> pb.Message:
    """Message → proto."""
    return pb.Message(
        name=str(MessageName(m.store_id, m.id)),
        contact=str(ContactName(m.store_id, m.contact_id)) if m.contact_id else "",
        workflow=str(WorkflowName(m.store_id, m.workflow_id)) if m.workflow_id else "",
        workflow_node=m.workflow_node,
        workflow_run=str(WorkflowRunName(m.store_id, m.workflow_id, m.workflow_run)) if m.workflow_run else "",
        sms_content=str(SmsContentName(m.store_id, m.sms_content_id)) if m.sms_content_id else "",
        type=int(m.type),  # type: ignore[arg-type]
        recipient_mode=int(m.recipient_mode),  # type: ignore[arg-type]
        status=int(m.status),  # type: ignore[arg-type]
        status_reason=m.status_reason,
        recipient=m.recipient,
        sender=m.sender,
        text=m.text,
        encoding=int(m.encoding),  # type: ignore[arg-type]
        segments=m.segments,
        provider_id=m.provider_id,
        request_id=m.request_id,
        create_time=timestamp(m.create_time),
        update_time=timestamp(m.update_time),
        send_time=timestamp(m.send_time),
        delivery_time=timestamp(m.delivery_time),
        hold_until=timestamp(m.hold_until),
    )


def mappings_from_proto(field: str, values: dict[str, common_pb2.VariableValue]) -> dict[str, VariableSource]:
    """Variable mappings; a mapping with no source is INVALID_ARGUMENT."""
    out: dict[str, VariableSource] = {}
    for name, value in values.items():
        kind = value.WhichOneof("source")
        if kind is None:
            raise InvalidArgument(f"{field}.{name}", "set one of literal, contact_field, event_property")
        out[name] = VariableSource(
            kind, getattr(value, kind).strip() if kind != "literal" else value.literal, value.fallback
        )
    return out
