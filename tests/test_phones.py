"""Phone normalisation: any common format in, E.164 out (property tests with hypothesis)."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smschannel.domain.phones import normalize_country, normalize_phone
from smschannel.errors import InvalidArgument

REGIONS = sorted(
    r
    for r in phonenumbers.SUPPORTED_REGIONS
    if phonenumbers.example_number_for_type(r, phonenumbers.PhoneNumberType.MOBILE)
)


def example(region: str) -> phonenumbers.PhoneNumber:
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert number is not None
    return number


FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.RFC3966,
]


@settings(max_examples=300, deadline=None)
@given(region=st.sampled_from(REGIONS), fmt=st.sampled_from(FORMATS), pad=st.sampled_from(["", " ", "\t", "  "]))
def test_any_common_format_of_a_valid_number_gives_its_e164(region: str, fmt: int, pad: str) -> None:
    number = example(region)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    written = pad + phonenumbers.format_number(number, fmt) + pad
    if fmt == phonenumbers.PhoneNumberFormat.RFC3966:
        written = written.replace("tel:", "")
    # National formats take the store's default country; international ones ignore it.
    assert normalize_phone("mobile_phone", written, region) == e164


@settings(max_examples=200, deadline=None)
@given(region=st.sampled_from(REGIONS), default=st.sampled_from(["", "ES", "US", "FR"]))
def test_00_prefix_is_international_whatever_the_default_country(region: str, default: str) -> None:
    e164 = phonenumbers.format_number(example(region), phonenumbers.PhoneNumberFormat.E164)
    assert normalize_phone("mobile_phone", "00" + e164[1:], default) == e164


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_is_a_number_or_a_named_invalid_argument(text: str) -> None:
    try:
        result = normalize_phone("contact.mobile_phone", text, "ES")
    except InvalidArgument as e:
        result = e.violations[0].field
    assert result in ("", "contact.mobile_phone") or (result.startswith("+") and result[1:].isdigit())
    if result.startswith("+"):
        assert normalize_phone("contact.mobile_phone", result, "") == result  # idempotent


@pytest.mark.parametrize(
    ("raw", "country", "e164"),
    [
        ("612 34 56 78", "ES", "+34612345678"),
        ("+34 612-34-56-78", "", "+34612345678"),
        ("0034612345678", "", "+34612345678"),
        ("(202) 555-0143", "US", "+12025550143"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("", "ES", ""),
        ("   ", "", ""),
    ],
)
def test_examples(raw: str, country: str, e164: str) -> None:
    assert normalize_phone("mobile_phone", raw, country) == e164


def test_a_national_number_without_default_country_says_so() -> None:
    with pytest.raises(InvalidArgument) as e:
        normalize_phone("mobile_phone", "612345678", "")
    assert e.value.violations[0].field == "mobile_phone"
    assert "default country" in e.value.violations[0].description


@pytest.mark.parametrize(
    "raw",
    [
        "+34 1",
        "+999 123456",
        "hello",
        "+34 612 34 56 78 99 99",
        "+34612345678x",  # letters are not read as a keypad
        "1-800-FLOWERS",
        "+34 612 345 678 ext. 12",  # an extension cannot take an SMS
        "+34 612 345 678;",
    ],
)
def test_invalid_numbers_name_the_field_and_the_value(raw: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        normalize_phone("mobile_phone", raw, "ES")
    assert e.value.violations[0].field == "mobile_phone"
    assert raw.strip() in e.value.violations[0].description


def test_countries() -> None:
    assert normalize_country("c", " es ") == "ES"
    assert normalize_country("c", "") == ""
    with pytest.raises(InvalidArgument):
        normalize_country("c", "XX")
