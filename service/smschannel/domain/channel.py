"""The per-store SMS channel configuration (SPEC §2) and sender rules (SPEC §5)."""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, available_timezones

from ..errors import InvalidArgument, echo
from .quiet_hours import DEFAULT_QUIET_HOURS, QuietHours

__all__ = [
    "ChannelConfig",
    "FrequencyCap",
    "SendingRules",
    "TokenStatus",
    "new_callback_secret",
    "token_hint",
    "validate_sender",
    "validate_time_zone",
    "zone_of",
]

_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,11}")
_NUMERIC_SENDER = re.compile(r"\+?[0-9]{1,15}")


class TokenStatus(enum.IntEnum):
    """Outcome of the last check of the token against the provider."""

    UNSPECIFIED = 0
    VALID = 1
    INVALID = 2
    UNCHECKED = 3


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most `max_sms` NEWSLETTER SMS per contact in any rolling `period` (SPEC: issue 18)."""

    max_sms: int
    period: timedelta

    MAX_SMS = 1000
    SHORTEST = timedelta(hours=1)
    LONGEST = timedelta(days=366)


_NO_PRICES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SendingRules:
    """How a store's SMS are paced: its time zone, quiet hours, frequency cap and part prices."""

    time_zone: str = ""  # IANA; UTC when empty
    quiet_hours: QuietHours = DEFAULT_QUIET_HOURS
    frequency_cap: FrequencyCap | None = None
    currency: str = ""  # ISO 4217 of every part price
    part_prices: Mapping[str, int] = field(
        default_factory=lambda: _NO_PRICES
    )  # country ("" = any other) → nanos a part

    def price_of(self, country: str) -> int | None:
        """Nanos of the currency for one part to `country`, or None when the store sets no price."""
        price = self.part_prices.get(country)
        return self.part_prices.get("") if price is None else price


DEFAULT_RULES = SendingRules()


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
    rules: SendingRules = DEFAULT_RULES

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


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+){0,2}")


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def validate_time_zone(field: str, name: str) -> str:
    """An IANA time zone name this machine knows (tzdata), e.g. `Europe/Madrid`."""
    if not (len(name) <= 64 and _ZONE_NAME.fullmatch(name) and name in _zones()):
        raise InvalidArgument(field, f"{echo(name)} is not an IANA time zone such as Europe/Madrid")
    return name


@cache
def zone_of(name: str) -> ZoneInfo:
    """The zone of a stored, validated name; UTC for an empty one."""
    return ZoneInfo(name or "UTC")
