"""Mobile phone normalisation to E.164 (`phonenumbers`)."""

from __future__ import annotations

import re

import phonenumbers

from ..errors import InvalidArgument, echo

__all__ = ["country_of", "normalize_country", "normalize_phone"]

# What a typed mobile number may hold: digits (any script), spaces and the usual punctuation. phonenumbers
# alone reads letters as a keypad ("+34612345678x" was stored as +34612345678; "1-800-FLOWERS" too)
# and an "x"/"ext." as an extension, which an SMS cannot reach.
_TYPED_PHONE = re.compile(r"\+?[\d\s().\-/]+")


def normalize_country(field: str, value: str) -> str:
    """An ISO 3166 alpha-2 code that phonenumbers knows, upper-cased; "" stays ""."""
    code = value.strip().upper()
    if code and code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidArgument(field, f"{echo(value)} is not an ISO 3166 alpha-2 country code with a phone plan")
    return code


def normalize_phone(field: str, raw: str, default_country: str) -> str:
    """E.164 (`+...`) for any common format; "" for no phone. A number without `+`/`00` takes the
    default country; with no default country such a number is refused, saying so."""
    text = raw.strip()
    if not text:
        return ""
    return _normalize(field, text, default_country)


def _normalize(field: str, text: str, default_country: str) -> str:
    # Not cached: an import's numbers are all different, and in the workers a cache of 65,536 of them
    # cost 1.6 µs a row just to look up and evict (7% of a worker, measured), for no hit.
    if not _TYPED_PHONE.fullmatch(text):
        raise InvalidArgument(field, f"{echo(text)} is not a phone number: only digits, spaces, + ( ) . - /")
    international = text.startswith("+") or text.startswith("00")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not international and not default_country:
        raise InvalidArgument(
            field,
            f"{echo(text)} has no country code (+ or 00) and the store has no default country: "
            "set smsChannelConfig.default_country or send the number in international format",
        )
    try:
        number = phonenumbers.parse(text, None if international else default_country)
    except phonenumbers.NumberParseException as e:
        raise InvalidArgument(field, f"{echo(text)} is not a phone number ({e._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidArgument(field, f"{echo(text)} is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def country_of(e164: str) -> str:
    """The ISO country of an E.164 number ("" when unknown)."""
    # Calling codes are prefix-free: when the code belongs to one country (most do) that is the
    # answer, without a full parse (a newsletter asks this once per recipient).
    for size in (1, 2, 3):
        digits = e164[1 : 1 + size]
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(digits)) if digits.isdigit() else None
        if regions:
            if len(regions) == 1 and regions[0] != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
                return str(regions[0])
            break
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None)) or ""
    except phonenumbers.NumberParseException:
        return ""
