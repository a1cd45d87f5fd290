"""The product's enumerations. Values equal the proto enum numbers, so conversion is a cast."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ActivitySource",
    "ActivityType",
    "MessageStatus",
    "MobilePhoneStatus",
    "RecipientMode",
    "SmsEncoding",
    "SmsSubscriptionStatus",
    "SmsType",
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


class SmsType(IntEnum):
    """Transactional or newsletter."""

    UNSPECIFIED = 0
    TRANSACTIONAL = 1
    NEWSLETTER = 2


class RecipientMode(IntEnum):
    """The contact's own phone, or a fixed alert phone."""

    UNSPECIFIED = 0
    CONTACT = 1
    ALERT = 2


class MessageStatus(IntEnum):
    """The life of a message. QUEUED → SENT → DELIVERED, or FAILED / REJECTED; SKIPPED never queued."""

    UNSPECIFIED = 0
    QUEUED = 1
    SENT = 2
    DELIVERED = 3
    FAILED = 4
    REJECTED = 5
    SKIPPED = 6


class SmsEncoding(IntEnum):
    """GSM 03.38 7-bit or UCS-2."""

    UNSPECIFIED = 0
    GSM7 = 1
    UCS2 = 2
