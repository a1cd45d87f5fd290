"""Domain errors → gRPC statuses with google.rpc details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["DOMAIN", "code_of", "internal_status", "to_status", "with_request_id"]

DOMAIN = "smschannel.example.com"
# An error's texts ride in the trailers, which clients cap (8 KiB by default): bounded whatever the input,
# in UTF-8 bytes (grpc-message percent-encodes each non-ASCII byte: an emoji is 12 bytes there).
MAX_MESSAGE = 1000
MAX_TEXT = 300
MAX_VIOLATIONS = 20
SHOWN_PRECONDITIONS = 3  # PreconditionFailure reasons repeated in the message, for clients that skip details


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text` in at most `limit` UTF-8 bytes, cut on a character boundary and marked with an ellipsis."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


_CODES: list[tuple[type[DomainError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (Aborted, code_pb2.ABORTED),
    (Unavailable, code_pb2.UNAVAILABLE),
]


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)  # type: ignore[arg-type]
        packed.append(a)
    return packed


def code_of(err: DomainError) -> int:
    """The google.rpc.Code of a domain error."""
    return next((c for t, c in _CODES if isinstance(err, t)), code_pb2.UNKNOWN)


def to_status(err: DomainError) -> grpc.Status:
    """The gRPC status for a domain error: its code, message, ErrorInfo and field/precondition details."""
    code = code_of(err)
    message = err.message
    details: list[object] = [error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN)]
    if isinstance(err, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=_clip(v.field), description=_clip(v.description))
                    for v in err.violations[:MAX_VIOLATIONS]
                ]
            )
        )
    if isinstance(err, FailedPrecondition) and err.violations:
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=_clip(v.subject), description=_clip(v.description)
                    )
                    for v in err.violations[:MAX_VIOLATIONS]
                ]
            )
        )
        shown = [f"{v.subject}: {v.description}" for v in err.violations[:SHOWN_PRECONDITIONS]]
        if not any(v.description in message for v in err.violations[:SHOWN_PRECONDITIONS]):
            more = len(err.violations) - len(shown)
            message += " — " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    if isinstance(err, NotFound):
        details.append(
            error_details_pb2.ResourceInfo(resource_name=_clip(err.resource), description=_clip(err.message))
        )
    status = status_pb2.Status(code=code, message=_clip(message, MAX_MESSAGE), details=_pack(*details))
    return rpc_status.to_status(status)


def with_request_id(status: grpc.Status, request_id: str) -> grpc.Status:
    """The status with the `x-request-id` trailer (aborting replaces the trailers set before)."""
    # rpc_status.to_status answers a namedtuple: a copy with one more trailer.
    trailers = (*(status.trailing_metadata or ()), ("x-request-id", request_id))
    return status._replace(trailing_metadata=trailers)


def internal_status(request_id: str) -> grpc.Status:
    """An INTERNAL status that leaks nothing but the request id to look up in the logs."""
    message = f"internal error; request id {request_id}"
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"request_id": request_id})
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=_pack(info)))
