"""The rules of a send (SPEC §5–§6): variable mappings, eligibility, the sender, the rendered text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ..errors import FieldViolation, echo
from .channel import FrequencyCap, SendingRules, zone_of
from .contacts import Contact, CustomValue
from .enums import MobilePhoneStatus, SmsSubscriptionStatus, SmsType
from .phones import country_of
from .quiet_hours import held_until
from .segments import TextSize, measure
from .templates import UNSUBSCRIBE, UNSUBSCRIBE_MARKER, has_unsubscribe_marker, marker_replacement, render, variables_of

__all__ = [
    "CONTACT_FIELDS",
    "FREQUENCY_CAP",
    "Reachable",
    "Rendered",
    "Skip",
    "VariableSource",
    "capped",
    "check_mappings",
    "contact_field_value",
    "held_reason",
    "hold_for",
    "measure_as_delivered",
    "render_for",
    "skip",
    "skip_reason",
]

# API names and the article's system names (SPEC §5).
CONTACT_FIELDS = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "mobile_phone": "mobile_phone",
    "mobile_phone_status": "mobile_phone_status",
    "sms_subscription_status": "sms_subscription_status",
    "_mobilePhone": "mobile_phone",
    "_mobilePhoneStatus": "mobile_phone_status",
    "_smsSubscriptionStatus": "sms_subscription_status",
}


@dataclass(frozen=True, slots=True)
class VariableSource:
    """Where a variable's value comes from, with a fallback for an empty value."""

    kind: Literal["literal", "contact_field", "event_property"]
    value: str
    fallback: str = ""


def _is_contact_field(name: str) -> bool:
    return name in CONTACT_FIELDS or (name.startswith("custom_fields.") and len(name) > len("custom_fields."))


def check_mappings(
    field: str,
    text: str,
    mappings: Mapping[str, VariableSource],
    sms_type: SmsType,
    *,
    events: bool,
    contact: bool,
) -> list[FieldViolation]:
    """Every problem of a send's variables at once: unmapped or unknown variables, bad sources, and a
    newsletter without the unsubscribe marker. `events`/`contact` say which sources can resolve."""
    violations = []
    names = variables_of(text)
    for name in names:
        if name != UNSUBSCRIBE and name not in mappings:
            violations.append(FieldViolation(f"{field}.{name}", f"the text uses {{{{{name}}}}} but it is not mapped"))
    for name, source in mappings.items():
        path = f"{field}.{name}"
        if name not in names:
            violations.append(FieldViolation(path, "not a variable of the text"))
        elif name == UNSUBSCRIBE:
            violations.append(FieldViolation(path, "{{unsubscribe}} is reserved: Instasent fills it in"))
        elif source.kind == "contact_field" and not _is_contact_field(source.value):
            violations.append(FieldViolation(path, f"{echo(source.value)} is not a contact field"))
        elif source.kind == "contact_field" and not contact and not source.fallback:
            violations.append(FieldViolation(path, "a contact field needs a contact recipient (or a fallback)"))
        elif source.kind == "event_property" and not events:
            violations.append(FieldViolation(path, "event properties exist only in workflows"))
        elif source.kind == "event_property" and not source.value:
            violations.append(FieldViolation(path, "name the event property"))
    literals = {n: s.value for n, s in mappings.items() if s.kind == "literal"}
    if sms_type is SmsType.NEWSLETTER and not has_unsubscribe_marker(text, literals):
        violations.append(
            FieldViolation(
                field,
                f"a NEWSLETTER must carry the unsubscribe marker: {UNSUBSCRIBE_MARKER} in the text, "
                f"or a variable mapped to the literal {UNSUBSCRIBE_MARKER}",
            )
        )
    return violations


def _custom_text(value: CustomValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.date().isoformat()
    return value


def contact_field_value(contact: Contact | None, name: str) -> str:
    """A contact field as text ("" when absent)."""
    if contact is None:
        return ""
    if name.startswith("custom_fields."):
        value = contact.custom_fields.get(name.removeprefix("custom_fields."))
        return "" if value is None else _custom_text(value)
    attr = CONTACT_FIELDS[name]
    value = getattr(contact, attr)
    return value.name if isinstance(value, MobilePhoneStatus | SmsSubscriptionStatus) else str(value)


class Reachable(Protocol):
    """What eligibility reads of a contact: a Contact, or the few columns the outbox re-reads."""

    @property
    def mobile_phone(self) -> str: ...

    @property
    def mobile_phone_status(self) -> MobilePhoneStatus: ...

    @property
    def sms_subscription_status(self) -> SmsSubscriptionStatus: ...


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a send is skipped: a stable code (dry-run counts) and the text the message log shows."""

    code: str
    text: str


_NO_PHONE = Skip("no_phone", "the contact has no mobile phone")
_REJECTED = Skip("phone_rejected", "the contact's mobile phone was rejected by the provider (REJECTED)")
_PAUSED = Skip("phone_paused", "the contact's mobile phone is PAUSED")
FREQUENCY_CAP = "frequency_cap"


def skip(contact: Reachable, sms_type: SmsType) -> Skip | None:
    """Why a CONTACT-mode send to this contact must be skipped (None: send). The matrix of SPEC §5.

    Judged when a message is made and again at every hand-over to the provider (SPEC §5)."""
    if not contact.mobile_phone:
        return _NO_PHONE
    if contact.mobile_phone_status is MobilePhoneStatus.REJECTED:
        return _REJECTED
    if contact.mobile_phone_status is MobilePhoneStatus.PAUSED:
        return _PAUSED
    if sms_type is SmsType.NEWSLETTER and contact.sms_subscription_status is not SmsSubscriptionStatus.SUBSCRIBED:
        status = contact.sms_subscription_status.name
        return Skip("not_subscribed", f"a NEWSLETTER needs SUBSCRIBED; the contact is {status}")
    return None


def skip_reason(contact: Reachable, sms_type: SmsType) -> str | None:
    """The text of `skip` (None: send)."""
    found = skip(contact, sms_type)
    return None if found is None else found.text


def capped(sms_type: SmsType, recent: int, cap: FrequencyCap | None) -> Skip | None:
    """The frequency cap: a NEWSLETTER to a contact who got `recent` NEWSLETTER SMS in the cap's
    period is skipped once that reaches the cap (TRANSACTIONAL SMS are never capped nor counted)."""
    if cap is None or sms_type is not SmsType.NEWSLETTER or recent < cap.max_sms:
        return None
    hours = int(cap.period.total_seconds() // 3600)
    period = f"{hours // 24} days" if hours % 24 == 0 else f"{hours} hours"
    return Skip(
        FREQUENCY_CAP, f"{FREQUENCY_CAP}: {recent} NEWSLETTER SMS in the last {period} (the store allows {cap.max_sms})"
    )


def held_reason(hold: datetime) -> str:
    """The status reason of a QUEUED message that quiet hours hold."""
    return f"held by quiet hours until {hold.isoformat(timespec='seconds')}"


def hold_for(rules: SendingRules, recipient: str, sms_type: SmsType, now: datetime) -> datetime | None:
    """Until when quiet hours hold an SMS to `recipient` at `now` (None: it may go now)."""
    return held_until(recipient, sms_type, now, rules.quiet_hours, zone_of(rules.time_zone))


@dataclass(frozen=True, slots=True)
class Rendered:
    """The text as sent (marker still literal) and its cost as delivered to the recipient's country."""

    text: str
    size: TextSize


def render_for(
    text: str,
    mappings: Mapping[str, VariableSource],
    recipient: str,
    contact: Contact | None,
    event: Mapping[str, str] | None = None,
) -> Rendered:
    """Fill the variables once and measure the text with the marker as Instasent will replace it."""

    def value_of(name: str) -> str:
        source = mappings[name]
        if source.kind == "literal":
            value = source.value
        elif source.kind == "contact_field":
            value = contact_field_value(contact, source.value)
        else:
            value = (event or {}).get(source.value, "")
        return value or source.fallback

    rendered = render(text, value_of)
    return Rendered(rendered, measure_as_delivered(rendered, recipient))


def measure_as_delivered(text: str, recipient: str) -> TextSize:
    """The size of a rendered text once Instasent has put the recipient country's unsubscribe text in."""
    return measure(text.replace(UNSUBSCRIBE_MARKER, marker_replacement(country_of(recipient))))
