"""The product's enumerations. Values equal the proto enum numbers, so conversion is a cast."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ActivitySource",
    "ActivityType",
    "MobilePhoneStatus",
    "SmsSubscriptionStatus",
]


class MobilePhoneStatus(IntEnum):
    """`_mobilePhoneStatus`; UNSPECIFIED only for a contact without a phone."""

    UNSPECIFIED = 0
    ACTIVE = 1
    REJECTED = 2
    PAUSED = 3


class SmsSubscriptionStatus(IntEnum):
    """`_smsSubscriptionStatus`."""

    UNSPECIFIED = 0
    SUBSCRIBED = 1
    UNSUBSCRIBED = 2
    NONE = 3


class ActivityType(IntEnum):
    """What happened to a contact."""

    UNSPECIFIED = 0
    SMS_SENT = 1
    SMS_DELIVERED = 2
    SMS_FAILED = 3
    SMS_UNSUBSCRIBE = 4
    SMS_SUBSCRIBE = 5
    PHONE_REJECTED = 6
    PHONE_STATUS_CHANGED = 7
    CONTACT_IMPORTED = 8
    CONTACT_CREATED = 9
    SMS_SUBSCRIPTION_CHANGED = 10


class ActivitySource(IntEnum):
    """Where a change came from."""

    UNSPECIFIED = 0
    API = 1
    IMPORT = 2
    WORKFLOW = 3
    CONTACT_INFO_TAG = 4
    PROVIDER = 5
