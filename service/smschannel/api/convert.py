"""Small proto ↔ Python conversions shared by the servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

__all__ = ["timestamp"]


def timestamp(t: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A proto Timestamp, or None to leave the field unset."""
    if t is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts
