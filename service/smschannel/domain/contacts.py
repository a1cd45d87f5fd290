"""Contacts and the rules of their two SMS statuses (SPEC §3).

Every change goes through `apply_patch`, which returns the new contact and the activities that the
change must record, so the rules hold the same way for the API, imports, the contact-info tag,
workflows and provider callbacks.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import FailedPrecondition, FieldViolation, InvalidArgument, Violation, echo
from ..names import ContactName, new_id
from ..records import record
from .enums import ActivitySource, ActivityType, MobilePhoneStatus, SmsSubscriptionStatus

__all__ = [
    "Activity",
    "Contact",
    "ContactPatch",
    "CustomValue",
    "apply_patch",
    "normalize_email",
    "phone_status",
    "validate_custom_fields",
]

CustomValue = str | float | bool | datetime

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CUSTOM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_CUSTOM_FIELDS = 100
MAX_TEXT = 1000


@record
class Contact:
    """A contact as stored.

    The store's pause and the provider's rejection are two facts (SPEC §3): `phone_paused` is the
    store's, kept whatever happens to the number; a rejection belongs to the current number and shows
    as REJECTED. `mobile_phone_status` is what both read as together (`phone_status`)."""

    store_id: str
    id: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    mobile_phone: str = ""
    mobile_phone_status: MobilePhoneStatus = MobilePhoneStatus.UNSPECIFIED
    phone_paused: bool = False
    sms_subscription_status: SmsSubscriptionStatus = SmsSubscriptionStatus.NONE
    custom_fields: dict[str, CustomValue] = field(default_factory=dict)
    create_time: datetime | None = None
    update_time: datetime | None = None
    version: int = 0

    @property
    def etag(self) -> str:
        """Changes on every stored change."""
        return f'W/"{self.version}"'


@record
class Activity:
    """Something that happened to a contact."""

    store_id: str
    contact_id: str
    id: str
    type: ActivityType
    source: ActivitySource
    create_time: datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ContactPatch:
    """The fields a change sets; None means "not present, leave as is".

    `mobile_phone` must already be normalised (E.164 or "" to remove it). `custom_fields` entries
    are set; `remove_custom_fields` keys are removed; `replace_custom_fields` replaces the whole map.
    """

    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    mobile_phone: str | None = None
    mobile_phone_status: MobilePhoneStatus | None = None
    sms_subscription_status: SmsSubscriptionStatus | None = None
    custom_fields: dict[str, CustomValue] = field(default_factory=dict)
    remove_custom_fields: set[str] = field(default_factory=set)
    replace_custom_fields: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Import workers send patches back: as the constructor's arguments they load several times
        # faster than the default (an object, then one attribute at a time).
        return ContactPatch, (
            self.email,
            self.first_name,
            self.last_name,
            self.mobile_phone,
            self.mobile_phone_status,
            self.sms_subscription_status,
            self.custom_fields,
            self.remove_custom_fields,
            self.replace_custom_fields,
        )


def phone_status(phone: str, rejected: bool, paused: bool) -> MobilePhoneStatus:
    """What `_mobilePhoneStatus` reads: REJECTED while the number is rejected, else PAUSED while the
    store has paused the phone, else ACTIVE; UNSPECIFIED without a number."""
    if not phone:
        return MobilePhoneStatus.UNSPECIFIED
    if rejected:
        return MobilePhoneStatus.REJECTED
    return MobilePhoneStatus.PAUSED if paused else MobilePhoneStatus.ACTIVE


def normalize_email(field_path: str, raw: str) -> str:
    """Trimmed and lower-cased; "" for none; INVALID_ARGUMENT when not an address."""
    email = raw.strip().lower()
    if email and (len(email) > 254 or not _EMAIL.fullmatch(email)):
        raise InvalidArgument(field_path, f"{echo(raw)} is not an email address")
    return email


def validate_custom_fields(field_path: str, values: dict[str, CustomValue]) -> list[FieldViolation]:
    """Violations of the custom field rules (key shape, count, text length, finite numbers)."""
    violations = []
    if len(values) > MAX_CUSTOM_FIELDS:
        violations.append(FieldViolation(field_path, f"at most {MAX_CUSTOM_FIELDS} custom fields"))
    for key, value in values.items():
        if not _CUSTOM_KEY.fullmatch(key):
            violations.append(FieldViolation(f"{field_path}.{key}", "keys are [A-Za-z_][A-Za-z0-9_]{0,63}"))
        elif isinstance(value, str) and len(value) > MAX_TEXT:
            violations.append(FieldViolation(f"{field_path}.{key}", f"at most {MAX_TEXT} characters"))
        elif isinstance(value, float) and not math.isfinite(value):
            violations.append(FieldViolation(f"{field_path}.{key}", "numbers must be finite"))
    return violations


def _subscription_activity(new: SmsSubscriptionStatus) -> ActivityType:
    if new is SmsSubscriptionStatus.SUBSCRIBED:
        return ActivityType.SMS_SUBSCRIBE
    if new is SmsSubscriptionStatus.UNSUBSCRIBED:
        return ActivityType.SMS_UNSUBSCRIBE
    return ActivityType.SMS_SUBSCRIPTION_CHANGED


@functools.lru_cache(maxsize=64)
def _starting_values(store_id: str, subscription: SmsSubscriptionStatus) -> Contact:
    """What a new contact of a store starts from, before its patch (its id is set when it is made)."""
    return Contact(store_id=store_id, id="", sms_subscription_status=subscription)


def _still_rejected(store_id: str, contact_id: str, phone: str, wanted: MobilePhoneStatus) -> FailedPrecondition:
    subject = str(ContactName(store_id, contact_id))
    why = (
        f"{phone} was rejected by the provider: only a different number lifts a rejection,"
        f" so the phone cannot be made {wanted.name}"
    )
    return FailedPrecondition(why, [Violation("PHONE_REJECTED", subject, why)], reason="PHONE_REJECTED")


def apply_patch(
    current: Contact | None,
    patch: ContactPatch,
    *,
    store_id: str,
    contact_id: str,
    source: ActivitySource,
    now: datetime,
    default_subscription: SmsSubscriptionStatus,
) -> tuple[Contact, list[Activity]]:
    """The contact after `patch` and the activities to record; `current` None creates it.

    Returns `current` itself (and no activities) when the patch changes nothing.
    """
    base = current or _starting_values(store_id, default_subscription)
    custom = base.custom_fields  # shared, never mutated: contacts are values
    if patch.custom_fields or patch.remove_custom_fields or patch.replace_custom_fields:
        custom = {} if patch.replace_custom_fields else dict(base.custom_fields)
        for key in patch.remove_custom_fields:
            custom.pop(key, None)
        custom.update(patch.custom_fields)

    phone = base.mobile_phone if patch.mobile_phone is None else patch.mobile_phone
    # The rejection belonged to the old number; the pause is the store's and outlives any number.
    rejected = base.mobile_phone_status is MobilePhoneStatus.REJECTED and phone == base.mobile_phone
    paused = base.phone_paused
    wanted = patch.mobile_phone_status
    if wanted is not None and wanted is not MobilePhoneStatus.UNSPECIFIED:
        if not phone:
            raise InvalidArgument("mobile_phone_status", "a contact without a mobile phone has no phone status")
        if wanted is MobilePhoneStatus.REJECTED:
            rejected = True
        elif rejected:
            raise _still_rejected(store_id, base.id or contact_id, phone, wanted)
        else:
            paused = wanted is MobilePhoneStatus.PAUSED
    phone_status_now = phone_status(phone, rejected, paused)

    values = (
        base.email if patch.email is None else patch.email,
        base.first_name if patch.first_name is None else patch.first_name,
        base.last_name if patch.last_name is None else patch.last_name,
        phone,
        phone_status_now,
        paused,
        patch.sms_subscription_status or base.sms_subscription_status,
        custom,
    )
    if current is not None and values == (
        current.email,
        current.first_name,
        current.last_name,
        current.mobile_phone,
        current.mobile_phone_status,
        current.phone_paused,
        current.sms_subscription_status,
        current.custom_fields,
    ):
        return current, []
    new = Contact(base.store_id, base.id or contact_id, *values, base.create_time or now, now, base.version + 1)

    def activity(kind: ActivityType, **details: Any) -> Activity:
        return Activity(store_id, new.id, new_id(), kind, source, now, details)

    if current is None:
        kind = ActivityType.CONTACT_IMPORTED if source is ActivitySource.IMPORT else ActivityType.CONTACT_CREATED
        details: dict[str, Any] = {"sms_subscription_status": new.sms_subscription_status.name}
        if new.mobile_phone:
            details |= {"mobile_phone": new.mobile_phone, "mobile_phone_status": new.mobile_phone_status.name}
        return new, [activity(kind, **details)]

    activities = []
    if source is ActivitySource.IMPORT:
        activities.append(activity(ActivityType.CONTACT_IMPORTED))
    if new.mobile_phone != current.mobile_phone or new.mobile_phone_status != current.mobile_phone_status:
        kind = (
            ActivityType.PHONE_REJECTED
            if new.mobile_phone_status is MobilePhoneStatus.REJECTED
            and current.mobile_phone_status is not MobilePhoneStatus.REJECTED
            else ActivityType.PHONE_STATUS_CHANGED
        )
        activities.append(
            activity(
                kind,
                old_mobile_phone=current.mobile_phone,
                mobile_phone=new.mobile_phone,
                old_status=current.mobile_phone_status.name,
                status=new.mobile_phone_status.name,
            )
        )
    if new.sms_subscription_status != current.sms_subscription_status:
        activities.append(
            activity(
                _subscription_activity(new.sms_subscription_status),
                old_status=current.sms_subscription_status.name,
                status=new.sms_subscription_status.name,
            )
        )
    return new, activities
