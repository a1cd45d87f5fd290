"""Stores (tenants) and their API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import FieldViolation, InvalidArgument
from ..names import validate_id
from .enums import SmsSubscriptionStatus

__all__ = ["ApiKey", "Store", "new_store"]


@dataclass(frozen=True, slots=True)
class Store:
    """A tenant."""

    id: str
    display_name: str
    default_sms_subscription_status: SmsSubscriptionStatus
    create_time: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A store's API key; only the hash of the clear key is ever stored."""

    store_id: str
    id: str
    display_name: str
    key_hash: str
    create_time: datetime


def new_store(store_id: str, display_name: str, default_status: int, now: datetime) -> Store:
    """Validate a CreateStore request's content and build the store."""
    violations = []
    try:
        validate_id("store_id", store_id, store=True)
    except InvalidArgument as e:
        violations += e.violations
    if not display_name.strip():
        violations.append(FieldViolation("store.display_name", "required"))
    elif len(display_name) > 200:
        violations.append(FieldViolation("store.display_name", "at most 200 characters"))
    if default_status not in SmsSubscriptionStatus.__members__.values():
        violations.append(FieldViolation("store.default_sms_subscription_status", "unknown value"))
    if violations:
        raise InvalidArgument.of(violations)
    status = SmsSubscriptionStatus(default_status)
    return Store(
        id=store_id,
        display_name=display_name.strip(),
        default_sms_subscription_status=status or SmsSubscriptionStatus.NONE,
        create_time=now,
    )
