"""Domain errors. Domain and storage code raise these; the API layer maps them to gRPC statuses."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RequestIdReused",
    "Unauthenticated",
    "Unavailable",
    "Violation",
    "echo",
]

ECHO_LIMIT = 60  # characters of a client's input quoted back in an error message


def echo(value: object) -> str:
    """A client's input as an error message quotes it: its repr, cut to ECHO_LIMIT characters.

    An error's text travels in the response's trailers, which clients cap (8 KiB by default): a
    6,000-character id quoted whole made the answer RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= ECHO_LIMIT:
        return repr(text)
    return f"{text[:ECHO_LIMIT]!r}… ({len(text)} characters)"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field: its path in the request and why."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error that has a meaning for the caller."""

    reason = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input; carries every field violation found."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *more: FieldViolation) -> None:
        self.violations = [FieldViolation(field, description), *more]
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in self.violations))

    @classmethod
    def of(cls, violations: list[FieldViolation]) -> InvalidArgument:
        """One error carrying several violations (there must be at least one)."""
        first, *rest = violations
        return cls(first.field, first.description, *rest)


class NotFound(DomainError):
    """The resource does not exist, or the caller may not see it."""

    reason = "NOT_FOUND"

    def __init__(self, resource: str) -> None:
        super().__init__(f"{resource} not found")
        self.resource = resource


class AlreadyExists(DomainError):
    """A resource with that id or unique key exists."""

    reason = "ALREADY_EXISTS"

    def __init__(self, resource: str, what: str = "") -> None:
        super().__init__(what or f"{resource} already exists")
        self.resource = resource


class RequestIdReused(AlreadyExists):
    """A request id sent again with a different request (AIP-155): it names the first one's result."""

    reason = "REQUEST_ID_REUSED"


@dataclass(frozen=True, slots=True)
class Violation:
    """One precondition that does not hold (AIP-193 PreconditionFailure)."""

    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the call (stale etag, missing config, bad graph)."""

    reason = "FAILED_PRECONDITION"

    def __init__(self, message: str, violations: list[Violation] | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.violations: list[Violation] = violations or []
        if reason:
            self.reason = reason  # the case, for ErrorInfo (AIP-193): e.g. PHONE_REJECTED


class Unauthenticated(DomainError):
    """No or bad credentials."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Authenticated, but this key may not do that."""

    reason = "PERMISSION_DENIED"


class Aborted(DomainError):
    """A concurrency conflict: the etag sent is not the current one (AIP-154)."""

    reason = "ABORTED"


class Unavailable(DomainError):
    """A transient failure on our side: the same request, sent again, can succeed."""

    reason = "UNAVAILABLE"
