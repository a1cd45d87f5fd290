"""Resource names, parsed once at the edge into small value objects (AIP-122)."""

from __future__ import annotations

import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import ClassVar, Self

from .errors import InvalidArgument, echo

__all__ = [
    "ActivityName",
    "ApiKeyName",
    "CallbacksName",
    "ChannelConfigName",
    "ContactName",
    "MessageName",
    "SmsContentName",
    "StoreName",
    "WorkflowName",
    "WorkflowRunName",
    "new_id",
    "validate_id",
]

_STORE_ID = r"[a-z][a-z0-9-]{0,62}"
_ID = r"[a-z0-9][a-z0-9-]{0,62}"


def validate_id(field: str, value: str, *, store: bool = False) -> str:
    """Check a client-chosen resource id; returns it unchanged."""
    shape = _STORE_ID if store else _ID
    if not re.fullmatch(shape, value):
        raise InvalidArgument(field, f"{echo(value)} is not a valid id ({shape})")
    return value


# Ids must be unique, not secret (every resource is behind its store's key): a PRNG seeded from the
# OS is enough, and far cheaper per id than the OS's random source.
_random = random.Random(secrets.randbits(128))


def new_id() -> str:
    """A fresh id of 20 hex characters, valid as a resource id and a provider clientId (≤ 40).

    The first 13 are the time in microseconds, so ids created together sort together and index
    inserts stay local; the last 7 (28 random bits) keep ids created in the same microsecond apart."""
    return "%020x" % (time.time_ns() // 1000 << 28 | _random.getrandbits(28))  # one format: 0.25 µs, not 0.44


class _Name:
    """A resource name built from `template`: each `{field}` is a dataclass field of the subclass."""

    template: ClassVar[str]
    _pattern: ClassVar[re.Pattern[str]]

    def __init_subclass__(cls) -> None:
        regex = re.escape(cls.template).replace(r"\{", "{").replace(r"\}", "}")
        regex = re.sub(r"\{store\}", f"({_STORE_ID})", regex)
        cls._pattern = re.compile(re.sub(r"\{\w+\}", f"({_ID})", regex))

    @classmethod
    def parse(cls, field: str, value: str) -> Self:
        """Parse `value`, or raise InvalidArgument naming `field`."""
        if not value:
            raise InvalidArgument(field, f"required: a resource name {cls.template}")
        m = cls._pattern.fullmatch(value)
        if m is None:
            raise InvalidArgument(field, f"{echo(value)} is not a resource name {cls.template}")
        return cls(*m.groups())

    def __str__(self) -> str:
        # The fields are the template's placeholders; names are formatted on every answer, keep it cheap.
        return self.template.format_map(vars(self))


@dataclass(frozen=True)
class StoreName(_Name):
    """`stores/{store}`."""

    template = "stores/{store}"
    store: str


@dataclass(frozen=True)
class ContactName(_Name):
    """`stores/{store}/contacts/{contact}`."""

    template = "stores/{store}/contacts/{contact}"
    store: str
    contact: str

    @staticmethod
    def collection(store: str) -> str:
        """`stores/{store}/contacts`, the collection a store's contacts are created in."""
        return f"{StoreName(store)}/contacts"


@dataclass(frozen=True)
class ActivityName(_Name):
    """`stores/{store}/contacts/{contact}/activities/{activity}`."""

    template = "stores/{store}/contacts/{contact}/activities/{activity}"
    store: str
    contact: str
    activity: str


@dataclass(frozen=True)
class SmsContentName(_Name):
    """`stores/{store}/smsContents/{sms_content}`."""

    template = "stores/{store}/smsContents/{sms_content}"
    store: str
    sms_content: str


@dataclass(frozen=True)
class MessageName(_Name):
    """`stores/{store}/messages/{message}`."""

    template = "stores/{store}/messages/{message}"
    store: str
    message: str


@dataclass(frozen=True)
class WorkflowName(_Name):
    """`stores/{store}/workflows/{workflow}`."""

    template = "stores/{store}/workflows/{workflow}"
    store: str
    workflow: str


@dataclass(frozen=True)
class WorkflowRunName(_Name):
    """`stores/{store}/workflows/{workflow}/runs/{run}`."""

    template = "stores/{store}/workflows/{workflow}/runs/{run}"
    store: str
    workflow: str
    run: str


@dataclass(frozen=True)
class ApiKeyName(_Name):
    """`stores/{store}/apiKeys/{api_key}`."""

    template = "stores/{store}/apiKeys/{api_key}"
    store: str
    api_key: str


@dataclass(frozen=True)
class ChannelConfigName(_Name):
    """`stores/{store}/smsChannelConfig` (a singleton, AIP-156)."""

    template = "stores/{store}/smsChannelConfig"
    store: str


@dataclass(frozen=True)
class CallbacksName(_Name):
    """`stores/{store}/callbacks`: not a resource of the API but what a provider callback with an
    unknown store or a wrong secret is NOT_FOUND about (its URL names both; the answer says neither)."""

    template = "stores/{store}/callbacks"
    store: str
