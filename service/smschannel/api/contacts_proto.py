"""Contact protos ↔ domain: what a request sets (a ContactPatch) and how a contact is shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import struct_pb2

from ..domain.contacts import Activity, Contact, ContactPatch, CustomValue, normalize_email, validate_custom_fields
from ..domain.enums import MobilePhoneStatus, SmsSubscriptionStatus
from ..domain.phones import normalize_phone
from ..errors import FieldViolation, InvalidArgument, echo
from ..names import ActivityName, ContactName
from ..storage import ContactKey
from ..v1 import common_pb2
from ..v1 import contacts_service_pb2 as pb
from .convert import fill_timestamp, time_from_proto, timestamp

__all__ = [
    "WRITABLE",
    "ImportedRow",
    "activity_to_proto",
    "contact_key",
    "contact_to_proto",
    "parse_import_rows",
    "patch_from_proto",
]

WRITABLE = (
    "email",
    "first_name",
    "last_name",
    "mobile_phone",
    "mobile_phone_status",
    "sms_subscription_status",
    "custom_fields",
)
MAX_NAME = 200
_WRITABLE_SORTED = sorted(WRITABLE)  # the order in which violations are reported


def _custom_from_proto(field: str, value: common_pb2.CustomFieldValue) -> CustomValue | None:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "timestamp_value":
        return time_from_proto(field, value.timestamp_value)
    return None


def _custom_to_proto(value: CustomValue) -> common_pb2.CustomFieldValue:
    if isinstance(value, bool):
        return common_pb2.CustomFieldValue(bool_value=value)
    if isinstance(value, float):
        return common_pb2.CustomFieldValue(number_value=value)
    if isinstance(value, str):
        return common_pb2.CustomFieldValue(string_value=value)
    return common_pb2.CustomFieldValue(timestamp_value=timestamp(value))


def _enum(kind: type[MobilePhoneStatus] | type[SmsSubscriptionStatus], field: str, value: int) -> Any:
    if value not in kind.__members__.values():
        raise InvalidArgument(field, f"{value} is not a {kind.__name__} value")
    return kind(value)


def _text(field: str, value: str) -> str:
    text = value.strip()
    if len(text) > MAX_NAME:
        raise InvalidArgument(field, f"at most {MAX_NAME} characters")
    return text


# path → (message, field name for errors, default country) → the patch value
_PARSERS: dict[str, Callable[[pb.Contact, str, str], Any]] = {
    "email": lambda m, f, _: normalize_email(f, m.email),
    "first_name": lambda m, f, _: _text(f, m.first_name),
    "last_name": lambda m, f, _: _text(f, m.last_name),
    "mobile_phone_status": lambda m, f, _: _enum(MobilePhoneStatus, f, m.mobile_phone_status),
    "sms_subscription_status": lambda m, f, _: _enum(SmsSubscriptionStatus, f, m.sms_subscription_status),
}


def patch_from_proto(
    msg: pb.Contact,
    paths: set[str] | None,
    default_country: str,
    prefix: str = "",
) -> ContactPatch:
    """The patch a request makes. `paths` None means "the fields that are set" (custom fields merged
    key by key); otherwise exactly those paths, where an empty value clears the field and
    `custom_fields` replaces the whole map.

    Every bad field is reported at once, named `{prefix}{field}`."""
    patch = ContactPatch()
    violations: list[FieldViolation] = []
    # No field has explicit presence: "set" is a non-default value (a non-empty map).
    wanted = [path for path in _WRITABLE_SORTED if getattr(msg, path)] if paths is None else sorted(paths)
    for path in wanted:
        field = prefix + path
        if path == "mobile_phone":
            try:
                patch.mobile_phone = normalize_phone(field, msg.mobile_phone, default_country)
            except InvalidArgument as e:
                violations.extend(e.violations)
        elif path in _PARSERS:
            try:
                setattr(patch, path, _PARSERS[path](msg, field, default_country))
            except InvalidArgument as e:
                violations.extend(e.violations)
        elif path == "custom_fields" and paths is not None:
            patch.replace_custom_fields = True
            patch.custom_fields = {
                k: v
                for k, pv in msg.custom_fields.items()
                if (v := _custom_from_proto(f"{prefix}custom_fields.{k}", pv)) is not None
            }
        elif path == "custom_fields" or path.startswith("custom_fields."):
            for key in list(msg.custom_fields) if path == "custom_fields" else [path.removeprefix("custom_fields.")]:
                custom = msg.custom_fields.get(key)
                value = None if custom is None else _custom_from_proto(f"{prefix}custom_fields.{key}", custom)
                if value is None:
                    patch.remove_custom_fields.add(key)
                else:
                    patch.custom_fields[key] = value
        else:
            violations.append(FieldViolation("update_mask", f"{echo(path)} is not a writable field of Contact"))
    violations += validate_custom_fields(prefix + "custom_fields", patch.custom_fields)
    if violations:
        raise InvalidArgument.of(violations)
    return patch


def contact_key(store_id: str, msg: pb.Contact, prefix: str, email: str) -> ContactKey:
    """The key of an upsert (an import row, the contact-info tag): the contact's name when the
    message has one (it must be of `store_id`), else `email` (normalised)."""
    if not msg.name:
        return ContactKey(email=email)
    name = ContactName.parse(prefix + "name", msg.name)
    if name.store != store_id:
        raise InvalidArgument(prefix + "name", f"{echo(msg.name)} is not a contact of stores/{store_id}")
    return ContactKey(contact_id=name.contact)


# An import row's (contact id, email, patch) to upsert, or why the row is refused.
ImportedRow = tuple[str, str, ContactPatch] | list[FieldViolation]


def parse_import_rows(data: bytes, store_id: str, default_country: str) -> list[ImportedRow]:
    """Each row of a serialized ImportContactsRequest, in order, checked and turned into a patch.

    The CPU-bound part of an import (proto parsing, phone numbers, validation), so it runs in the
    worker processes; the answer is plain tuples and patches, cheap to send back."""
    out: list[ImportedRow] = []
    for row in pb.ImportContactsRequest.FromString(data).contacts:
        try:
            patch = patch_from_proto(row, None, default_country)
            key = contact_key(store_id, row, "", patch.email or "")
            if not key.contact_id and not key.email:
                raise InvalidArgument("email", "required: each row needs an email or a contact name to match on")
        except InvalidArgument as e:
            out.append(list(e.violations))
            continue
        out.append((key.contact_id, key.email, patch))
    return out


def contact_to_proto(c: Contact) -> pb.Contact:
    """Contact → proto. (Timestamps are set in place: half the cost of building them, per answer.)"""
    msg = pb.Contact(
        name=str(ContactName(c.store_id, c.id)),
        email=c.email,
        first_name=c.first_name,
        last_name=c.last_name,
        mobile_phone=c.mobile_phone,
        mobile_phone_status=int(c.mobile_phone_status),  # type: ignore[arg-type]
        sms_subscription_status=int(c.sms_subscription_status),  # type: ignore[arg-type]
        custom_fields={k: _custom_to_proto(v) for k, v in c.custom_fields.items()} if c.custom_fields else None,
        etag=c.etag,
    )
    if c.create_time is not None:
        fill_timestamp(msg.create_time, c.create_time)
    if c.update_time is not None:
        fill_timestamp(msg.update_time, c.update_time)
    return msg


def activity_to_proto(a: Activity) -> pb.Activity:
    """Activity → proto."""
    details = struct_pb2.Struct()
    details.update(a.details)
    return pb.Activity(
        name=str(ActivityName(a.store_id, a.contact_id, a.id)),
        type=int(a.type),  # type: ignore[arg-type]
        create_time=timestamp(a.create_time),
        source=int(a.source),  # type: ignore[arg-type]
        details=details,
    )
