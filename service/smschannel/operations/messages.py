"""Reading the message log (GetMessage, ListMessages); sending.py writes it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..domain.enums import MessageStatus, SmsType
from ..domain.messages import Message
from ..domain.stores import Store
from ..errors import InvalidArgument, NotFound, echo
from ..filters import Term, parse_filter
from ..names import ContactName, MessageName, SmsContentName, WorkflowName
from ..storage import MessageQuery, Positioned, Storage

__all__ = ["MessageLog", "message_query"]

_MESSAGE_FILTERS = {
    "contact": {"="},
    "workflow": {"="},
    "sms_content": {"="},
    "type": {"="},
    "status": {"="},
    "create_time": {">=", "<", ">", "<="},
}


def _time(term: Term) -> datetime:
    """A filter's time in UTC: the offset applied here, so `0001-01-01T00:00:00+14:00` is refused, not
    an overflow later."""
    try:
        t = datetime.fromisoformat(term.value.replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument("filter", f"{term.field}: {echo(term.value)} is not an RFC 3339 time") from None


def _just_after(t: datetime) -> datetime:
    """The next microsecond (the last one a datetime holds has none: nothing is later anyway)."""
    return t + timedelta(microseconds=1) if t < _LAST else t


_LAST = datetime.max.replace(tzinfo=UTC)


def message_query(store: str, text: str) -> MessageQuery:
    """A ListMessages filter → MessageQuery (names must belong to the store)."""
    values: dict[str, Any] = {}
    for term in parse_filter(text, _MESSAGE_FILTERS):
        if term.field == "contact":
            values["contact_id"] = _own(ContactName.parse("filter", term.value), store).contact
        elif term.field == "workflow":
            values["workflow_id"] = _own(WorkflowName.parse("filter", term.value), store).workflow
        elif term.field == "sms_content":
            values["sms_content_id"] = _own(SmsContentName.parse("filter", term.value), store).sms_content
        elif term.field == "type":
            values["type"] = SmsType[_enum_name(term, "SMS_TYPE_", SmsType)]
        elif term.field == "status":
            values["status"] = MessageStatus[_enum_name(term, "MESSAGE_STATUS_", MessageStatus)]
        else:
            t = _time(term)
            if term.op in (">=", ">"):
                values["since"] = _just_after(t) if term.op == ">" else t
            else:
                values["until"] = _just_after(t) if term.op == "<=" else t
    return MessageQuery(**values)


def _own(name: Any, store: str) -> Any:
    if name.store != store:
        raise InvalidArgument("filter", f"{name} is not in stores/{store}")
    return name


def _enum_name(term: Term, prefix: str, kind: type[SmsType] | type[MessageStatus]) -> str:
    name = term.value.upper().removeprefix(prefix)
    if name not in kind.__members__ or name == "UNSPECIFIED":
        allowed = ", ".join(m for m in kind.__members__ if m != "UNSPECIFIED")
        raise InvalidArgument("filter", f"{term.field} must be one of {allowed}, not {echo(term.value)}")
    return name


@dataclass
class MessageLog:
    """The log as the API reads it: one message, or a filtered page, newest first."""

    storage: Storage

    async def get(self, store_id: str, message_id: str) -> Message:
        """The message, or NotFound."""
        message = await self.storage.messages.get(store_id, message_id)
        if message is None:
            raise NotFound(str(MessageName(store_id, message_id)))
        return message

    async def page(
        self, store: Store, query: MessageQuery, before: int | None, limit: int
    ) -> list[Positioned[Message]]:
        """Up to `limit` matching messages older than position `before` (the caller makes the token)."""
        return await self.storage.messages.page(store.id, query, before, limit)
