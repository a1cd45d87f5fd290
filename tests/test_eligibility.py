"""The eligibility matrix of SPEC §5 as one pure function, cell by cell: the same function decides when
a message is made (a Contact) and again at each hand-over to Instasent (the outbox's Reach)."""

from __future__ import annotations

import pytest

from smschannel.domain.contacts import Contact
from smschannel.domain.enums import MobilePhoneStatus, SmsSubscriptionStatus, SmsType
from smschannel.domain.sending import skip_reason
from smschannel.storage import Reach

ACTIVE, REJECTED, PAUSED = MobilePhoneStatus.ACTIVE, MobilePhoneStatus.REJECTED, MobilePhoneStatus.PAUSED
SUBSCRIBED, UNSUBSCRIBED, NONE = (
    SmsSubscriptionStatus.SUBSCRIBED,
    SmsSubscriptionStatus.UNSUBSCRIBED,
    SmsSubscriptionStatus.NONE,
)
TRANSACTIONAL, NEWSLETTER = SmsType.TRANSACTIONAL, SmsType.NEWSLETTER

# phone status (None: no phone), subscription, type → sent?
MATRIX = [
    (ACTIVE, SUBSCRIBED, TRANSACTIONAL, True),
    (ACTIVE, SUBSCRIBED, NEWSLETTER, True),
    (ACTIVE, UNSUBSCRIBED, TRANSACTIONAL, True),
    (ACTIVE, UNSUBSCRIBED, NEWSLETTER, False),
    (ACTIVE, NONE, TRANSACTIONAL, True),
    (ACTIVE, NONE, NEWSLETTER, False),
    *[
        (status, sub, kind, False)
        for status in (REJECTED, PAUSED, None)
        for sub in (SUBSCRIBED, UNSUBSCRIBED, NONE)
        for kind in (TRANSACTIONAL, NEWSLETTER)
    ],
]


@pytest.mark.parametrize(("status", "subscription", "kind", "sent"), MATRIX)
def test_the_matrix(
    status: MobilePhoneStatus | None, subscription: SmsSubscriptionStatus, kind: SmsType, sent: bool
) -> None:
    phone = "" if status is None else "+34612345678"
    phone_status = MobilePhoneStatus.UNSPECIFIED if status is None else status
    contact = Contact(
        "s", "c", mobile_phone=phone, mobile_phone_status=phone_status, sms_subscription_status=subscription
    )
    reach = Reach("c", phone, phone_status, subscription)
    reason = skip_reason(contact, kind)
    assert (reason is None) is sent
    assert skip_reason(reach, kind) == reason  # at the hand-over, the same decision and words
    if not sent:
        assert reason  # a skip is never silent
