"""Messages (the log and the outbox) and SMS contents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..names import MessageName, new_id
from ..records import record
from .contacts import Activity
from .enums import ActivitySource, ActivityType, MessageStatus, RecipientMode, SmsEncoding, SmsType

__all__ = ["FINAL", "Message", "SmsContent", "message_activity", "provider_status"]


@dataclass(frozen=True, slots=True)
class SmsContent:
    """A text with variables."""

    store_id: str
    id: str
    display_name: str
    text: str
    create_time: datetime
    update_time: datetime
    version: int = 1

    @property
    def etag(self) -> str:
        """Changes on every stored change."""
        return f'W/"{self.version}"'


@record
class Message:
    """One attempt to send an SMS. Its id is the provider `clientId`."""

    store_id: str
    id: str
    type: SmsType
    recipient_mode: RecipientMode
    status: MessageStatus
    create_time: datetime
    update_time: datetime
    request_id: str = ""
    contact_id: str = ""
    workflow_id: str = ""
    workflow_node: str = ""
    workflow_run: str = ""
    sms_content_id: str = ""
    status_reason: str = ""
    recipient: str = ""
    sender: str = ""
    text: str = ""
    encoding: SmsEncoding = SmsEncoding.UNSPECIFIED
    segments: int = 0
    provider_id: str = ""
    send_time: datetime | None = None
    delivery_time: datetime | None = None
    attempts: int = 0
    next_attempt_time: datetime | None = None
    # Quiet hours held it (SPEC: issue 18): QUEUED until then, judged again at that moment.
    hold_until: datetime | None = None


# A message in one of these states never changes again (except by a later, more final report).
FINAL = frozenset({MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.REJECTED, MessageStatus.SKIPPED})

# Instasent callback statuses → our status, with an order so that a late report never goes back.
_PROVIDER: dict[str, MessageStatus] = {
    "accepted": MessageStatus.SENT,
    "buffered": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "unknown": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "error": MessageStatus.FAILED,
    "failed": MessageStatus.FAILED,
    "expired": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
    "rejected": MessageStatus.REJECTED,
}


def provider_status(status: str) -> MessageStatus | None:
    """Our status for an Instasent callback status (None for `stop` and unknown words)."""
    return _PROVIDER.get(status.strip().lower())


def message_activity(m: Message, kind: ActivityType, now: datetime, reason: str = "") -> Activity | None:
    """The activity a message's change records on its contact (None for a message without one)."""
    if not m.contact_id:
        return None
    source = ActivitySource.WORKFLOW if m.workflow_id else ActivitySource.API
    details = {"message": str(MessageName(m.store_id, m.id))}
    if reason:
        details["reason"] = reason
    return Activity(m.store_id, m.contact_id, new_id(), kind, source, now, details)
