"""The per-store SMS channel configuration (SPEC §2) and sender rules (SPEC §5)."""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from ..errors import InvalidArgument, echo

__all__ = ["ChannelConfig", "TokenStatus", "new_callback_secret", "token_hint", "validate_sender"]

_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,11}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")


class TokenStatus(enum.IntEnum):
    """Outcome of the last check of the token against the provider."""

    UNSPECIFIED = 0
    VALID = 1
    INVALID = 2
    UNCHECKED = 3


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """`stores/{store}/smsChannelConfig`. The token is held encrypted; nothing here is ever logged."""

    store_id: str
    callback_secret: str
    provider: int = 1
    token_ciphertext: bytes | None = None
    token_hint: str = ""
    default_country: str = ""
    default_sender: str = ""
    token_status: TokenStatus = TokenStatus.UNSPECIFIED
    token_status_message: str = ""
    account_balance: float = 0.0
    update_time: datetime | None = None
    version: int = 0

    @property
    def has_token(self) -> bool:
        """True when a token is configured."""
        return self.token_ciphertext is not None

    @property
    def etag(self) -> str:
        """Changes on every stored change."""
        return f'W/"{self.version}"'

    def __repr__(self) -> str:  # never print the ciphertext or the secret, even in a traceback
        return f"ChannelConfig(store_id={self.store_id!r}, version={self.version})"


def new_callback_secret() -> str:
    """An unguessable callback secret (256 bits)."""
    return secrets.token_urlsafe(32)


def token_hint(token: str) -> str:
    """The masked form shown instead of the token: bullets and its last four characters."""
    return "••••" + token[-4:] if len(token) > 8 else "••••"


def validate_sender(field: str, sender: str) -> str:
    """A sender is 1–11 alphanumerics (with a letter) or a number of up to 15 digits."""
    if not (_ALPHA_SENDER.fullmatch(sender) or _NUMERIC_SENDER.fullmatch(sender)):
        raise InvalidArgument(
            field, f"{echo(sender)} is not a sender: use 1–11 letters and digits, or a number of up to 15 digits"
        )
    return sender
