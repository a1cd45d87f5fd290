"""Small proto ↔ Python conversions shared by the servicers."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

__all__ = ["timestamp"]


def timestamp(t: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A proto Timestamp, or None to leave the field unset."""
    if t is None:
        return None
    # Integer arithmetic on the timedelta: exact to the microsecond, and several times cheaper than
    # Timestamp.FromDatetime (a timetuple and calendar.timegm) on every resource we answer with.
    delta = (t if t.tzinfo else t.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
