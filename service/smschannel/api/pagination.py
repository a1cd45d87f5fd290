"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography.fernet import Fernet, InvalidToken

from ..errors import InvalidArgument
from ..storage import Positioned

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "Page", "PageTokens", "page_size"]

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """0 → the default, above the maximum → the maximum, negative → INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """The items of one page, and the token to the next ("" on the last page)."""

    items: list[T]
    next_page_token: str


class PageTokens:
    """Encrypted, authenticated tokens bound to the list call they came from (parent + filter)."""

    def __init__(self, secret_key: str) -> None:
        derived = hashlib.sha256(b"smschannel page tokens v1:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    @staticmethod
    def _scope(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]

    def encode(self, position: int, *scope: str) -> str:
        """A token for the page after `position`."""
        payload = json.dumps({"p": position, "s": self._scope(*scope)}).encode()
        return self._fernet.encrypt(payload).decode()

    def page(self, rows: Sequence[Positioned[T]], limit: int, *scope: str) -> Page[T]:
        """The first `limit` of `rows`, read as limit + 1 (one more says a next page exists)."""
        token = self.encode(rows[limit - 1].position, *scope) if len(rows) > limit else ""
        return Page([r.item for r in rows[:limit]], token)

    def decode(self, token: str, *scope: str) -> int | None:
        """The position in `token` (None for the first page); INVALID_ARGUMENT if forged or reused."""
        if not token:
            return None
        try:
            payload = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            raise InvalidArgument("page_token", "not a page token from this list") from None
        if payload.get("s") != self._scope(*scope):
            raise InvalidArgument("page_token", "the page token belongs to a list call with other arguments")
        return int(payload["p"])
