"""The status rules of SPEC §3, on the domain function every path goes through."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smschannel.domain.contacts import Contact, ContactPatch, apply_patch
from smschannel.domain.enums import ActivitySource, ActivityType, MobilePhoneStatus, SmsSubscriptionStatus
from smschannel.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ES1, ES2 = "+34612345678", "+34699999999"


def apply(
    current: Contact | None,
    source: ActivitySource = ActivitySource.API,
    default: SmsSubscriptionStatus = SmsSubscriptionStatus.NONE,
    **patch: object,
) -> tuple[Contact, list]:  # type: ignore[type-arg]
    return apply_patch(
        current,
        ContactPatch(**patch),  # type: ignore[arg-type]
        store_id="s",
        contact_id="c",
        source=source,
        now=NOW,
        default_subscription=default,
    )


def existing(**fields: object) -> Contact:
    contact, _ = apply(None, **fields)
    return contact


def test_new_contact_with_a_phone_is_active_and_takes_the_store_default() -> None:
    c, acts = apply(None, mobile_phone=ES1)
    assert c.mobile_phone_status is MobilePhoneStatus.ACTIVE
    assert c.sms_subscription_status is SmsSubscriptionStatus.NONE
    assert [a.type for a in acts] == [ActivityType.CONTACT_CREATED]
    c2, _ = apply(None, default=SmsSubscriptionStatus.SUBSCRIBED, mobile_phone=ES1)
    assert c2.sms_subscription_status is SmsSubscriptionStatus.SUBSCRIBED


def test_new_contact_without_a_phone_has_no_phone_status() -> None:
    c, _ = apply(None, email="a@b.co")
    assert c.mobile_phone_status is MobilePhoneStatus.UNSPECIFIED


def test_a_phone_status_without_a_phone_is_refused() -> None:
    with pytest.raises(InvalidArgument) as e:
        apply(None, mobile_phone_status=MobilePhoneStatus.PAUSED)
    assert e.value.violations[0].field == "mobile_phone_status"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (MobilePhoneStatus.ACTIVE, MobilePhoneStatus.ACTIVE),
        (MobilePhoneStatus.REJECTED, MobilePhoneStatus.ACTIVE),  # the rejection belonged to the old number
        (MobilePhoneStatus.PAUSED, MobilePhoneStatus.PAUSED),  # the store's choice stays
    ],
)
def test_a_new_number_resets_rejected_and_keeps_paused(before: MobilePhoneStatus, after: MobilePhoneStatus) -> None:
    c = existing(mobile_phone=ES1, mobile_phone_status=before)
    new, acts = apply(c, mobile_phone=ES2)
    assert new.mobile_phone == ES2
    assert new.mobile_phone_status is after
    assert [a.type for a in acts] == [ActivityType.PHONE_STATUS_CHANGED]
    assert acts[0].details["old_mobile_phone"] == ES1


def test_the_same_number_keeps_rejected() -> None:
    c = existing(mobile_phone=ES1, mobile_phone_status=MobilePhoneStatus.REJECTED)
    new, acts = apply(c, mobile_phone=ES1)
    assert new is c
    assert acts == []


ACTIVE, PAUSED, REJECTED = MobilePhoneStatus.ACTIVE, MobilePhoneStatus.PAUSED, MobilePhoneStatus.REJECTED


# Pause and rejection are two facts (SPEC §3): each row is a history of patches and what it reads as.
@pytest.mark.parametrize(
    ("steps", "reads"),
    [
        ([{"mobile_phone_status": PAUSED}, {"mobile_phone_status": REJECTED}], REJECTED),
        ([{"mobile_phone_status": PAUSED}, {"mobile_phone_status": REJECTED}, {"mobile_phone": ES2}], PAUSED),
        ([{"mobile_phone_status": REJECTED}, {"mobile_phone": ES2}], ACTIVE),
        ([{"mobile_phone_status": PAUSED}, {"mobile_phone": ""}, {"mobile_phone": ES2}], PAUSED),
        ([{"mobile_phone_status": REJECTED}, {"mobile_phone": ""}, {"mobile_phone": ES1}], ACTIVE),
        ([{"mobile_phone_status": PAUSED}, {"mobile_phone_status": ACTIVE}], ACTIVE),
        ([{"mobile_phone_status": REJECTED}, {"mobile_phone": ES2, "mobile_phone_status": ACTIVE}], ACTIVE),
        ([{"mobile_phone_status": REJECTED}, {"mobile_phone": ES2, "mobile_phone_status": PAUSED}], PAUSED),
        ([{"mobile_phone_status": PAUSED}, {"mobile_phone": ES2, "mobile_phone_status": REJECTED}], REJECTED),
    ],
)
def test_pause_and_rejection_are_two_facts(steps: list[dict[str, object]], reads: MobilePhoneStatus) -> None:
    c = existing(mobile_phone=ES1)
    for patch in steps:
        c, _ = apply(c, **patch)
    assert c.mobile_phone_status is reads


@pytest.mark.parametrize("wanted", [ACTIVE, PAUSED])
@pytest.mark.parametrize("source", list(ActivitySource)[1:])
def test_only_a_different_number_lifts_a_rejection(wanted: MobilePhoneStatus, source: ActivitySource) -> None:
    c = existing(mobile_phone=ES1, mobile_phone_status=REJECTED)
    for patch in ({"mobile_phone_status": wanted}, {"mobile_phone": ES1, "mobile_phone_status": wanted}):
        with pytest.raises(FailedPrecondition) as e:
            apply(c, source, **patch)  # type: ignore[arg-type]
        assert e.value.reason == "PHONE_REJECTED"
        assert e.value.violations[0].subject == "stores/s/contacts/c"
        assert ES1 in e.value.message
    unchanged, acts = apply(c, source, mobile_phone_status=REJECTED)
    assert unchanged is c
    assert acts == []


def test_removing_the_phone_clears_its_status() -> None:
    c = existing(mobile_phone=ES1)
    new, _ = apply(c, mobile_phone="")
    assert new.mobile_phone_status is MobilePhoneStatus.UNSPECIFIED


@pytest.mark.parametrize(
    ("status", "activity"),
    [
        (SmsSubscriptionStatus.SUBSCRIBED, ActivityType.SMS_SUBSCRIBE),
        (SmsSubscriptionStatus.UNSUBSCRIBED, ActivityType.SMS_UNSUBSCRIBE),
    ],
)
@pytest.mark.parametrize("source", list(ActivitySource)[1:])
def test_every_subscription_change_records_its_activity_and_source(
    status: SmsSubscriptionStatus, activity: ActivityType, source: ActivitySource
) -> None:
    c = existing(mobile_phone=ES1)
    new, acts = apply(c, source, sms_subscription_status=status)
    assert new.sms_subscription_status is status
    types = [a.type for a in acts]
    assert activity in types
    assert all(a.source is source for a in acts)
    assert new.version == c.version + 1


def test_rejecting_records_phone_rejected() -> None:
    c = existing(mobile_phone=ES1)
    _, acts = apply(c, ActivitySource.PROVIDER, mobile_phone_status=MobilePhoneStatus.REJECTED)
    assert [a.type for a in acts] == [ActivityType.PHONE_REJECTED]


def test_an_import_that_changes_nothing_records_nothing() -> None:
    c = existing(email="a@b.co", mobile_phone=ES1, first_name="Ana")
    new, acts = apply(c, ActivitySource.IMPORT, email="a@b.co", mobile_phone=ES1, first_name="Ana")
    assert new is c
    assert acts == []


def test_custom_fields_merge_replace_and_remove() -> None:
    c = existing(custom_fields={"a": "1", "b": 2.0})
    merged, _ = apply(c, custom_fields={"c": True})
    assert merged.custom_fields == {"a": "1", "b": 2.0, "c": True}
    removed, _ = apply(merged, remove_custom_fields={"a"})
    assert removed.custom_fields == {"b": 2.0, "c": True}
    replaced, _ = apply(removed, custom_fields={"z": "x"}, replace_custom_fields=True)
    assert replaced.custom_fields == {"z": "x"}
