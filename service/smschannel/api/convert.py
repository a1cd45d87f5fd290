"""Small proto ↔ Python conversions shared by the servicers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2, timestamp_pb2

from ..errors import InvalidArgument

__all__ = ["duration_from_proto", "fill_timestamp", "time_from_proto", "timestamp"]

# A Timestamp's valid range (google/protobuf/timestamp.proto): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799


def time_from_proto(field: str, ts: timestamp_pb2.Timestamp) -> datetime:
    """A request's Timestamp as an aware UTC datetime; INVALID_ARGUMENT naming `field` when it lies
    outside the range a Timestamp may hold (years 1 to 9999) or its nanos are not 0..999,999,999."""
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z")
    return ts.ToDatetime(tzinfo=UTC)


def duration_from_proto(field: str, d: duration_pb2.Duration, maximum: timedelta) -> timedelta:
    """A request's Duration; INVALID_ARGUMENT naming `field` when negative, malformed or over `maximum`
    (a limit each caller sets so that `now + duration` stays a date)."""
    if d.seconds < 0 or d.nanos < 0 or d.nanos >= 1_000_000_000 or d.seconds > maximum.total_seconds():
        raise InvalidArgument(field, f"a duration from 0s to {int(maximum.total_seconds())}s")
    value = d.ToTimedelta()
    if value > maximum:
        raise InvalidArgument(field, f"a duration from 0s to {int(maximum.total_seconds())}s")
    return value


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
