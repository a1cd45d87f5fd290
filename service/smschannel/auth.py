"""API keys and who is calling: the admin, a store, or the sidecar (provider events)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .errors import NotFound, PermissionDenied

__all__ = ["Principal", "Role", "derive_provider_events_key", "hash_key", "new_store_key"]


class Role(enum.Enum):
    """What a key may do."""

    ADMIN = "admin"
    STORE = "store"
    PROVIDER_EVENTS = "provider_events"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one RPC."""

    role: Role
    store: str | None = None

    def check_store(self, store: str, resource: object) -> None:
        """A store key sees only its own store: anything else does not exist for it (NOT_FOUND).

        `resource` (a name object or string) is formatted only for the error."""
        if self.role is Role.ADMIN:
            return
        if self.role is Role.STORE and self.store == store:
            return
        raise NotFound(str(resource))

    def require(self, role: Role, what: str) -> None:
        """Only `role` (or the admin) may do `what`."""
        if self.role is not role and self.role is not Role.ADMIN:
            raise PermissionDenied(f"this API key may not {what}")


def hash_key(key: str) -> str:
    """The stored form of a key. Keys are 256-bit random, so a plain SHA-256 is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_store_key() -> str:
    """A fresh clear store key."""
    return "sk_" + secrets.token_urlsafe(32)


def derive_provider_events_key(secret_key: str) -> str:
    """The sidecar's key, derived from the shared secret key so server and sidecar agree on it."""
    digest = hmac.new(secret_key.encode(), b"smschannel provider-events key v1", hashlib.sha256)
    return "pe_" + digest.hexdigest()
