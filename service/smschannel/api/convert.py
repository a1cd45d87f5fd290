"""Small proto ↔ Python conversions shared by the servicers."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

__all__ = ["fill_timestamp", "timestamp"]


def timestamp(t: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A proto Timestamp, or None to leave the field unset."""
    if t is None:
        return None
    out = timestamp_pb2.Timestamp()
    fill_timestamp(out, t)
    return out


def fill_timestamp(field: timestamp_pb2.Timestamp, t: datetime) -> None:
    """Set a message's Timestamp field in place (no Timestamp to build and copy in)."""
    # Integer arithmetic on the timedelta: exact to the microsecond, and several times cheaper than
    # Timestamp.FromDatetime (a timetuple and calendar.timegm) on every resource we answer with.
    delta = (t if t.tzinfo else t.replace(tzinfo=UTC)) - _EPOCH
    field.seconds = delta.days * 86_400 + delta.seconds
    field.nanos = delta.microseconds * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
