"""Update masks (AIP-134): which fields of a resource an Update writes."""

from __future__ import annotations

from collections.abc import Collection

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from ..errors import InvalidArgument, echo

__all__ = ["update_paths"]


def update_paths(mask: field_mask_pb2.FieldMask, resource: Message, writable: Collection[str]) -> set[str]:
    """The writable top-level fields an Update writes.

    An empty mask means the fields populated in `resource` (a set scalar, a non-empty list, a present
    message), so a client that sends one field changes that field only; `*` alone means every writable
    field, replaced by what was sent (unset clears); any other path must be a writable field."""
    paths = set(mask.paths)
    if not paths:
        return {f.name for f, _ in resource.ListFields()} & set(writable)
    if "*" in paths:
        if len(paths) > 1:
            raise InvalidArgument("update_mask", "`*` stands alone: it already means every writable field")
        return set(writable)
    unknown = sorted(paths - set(writable))
    if unknown:
        shown = ", ".join(echo(p) for p in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InvalidArgument("update_mask", f"not writable: {shown}; writable: {', '.join(sorted(writable))}")
    return paths
