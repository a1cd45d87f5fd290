"""Quiet hours and country rules (issue 18): when an SMS may go, on the recipient's clock.

The table reads like the spec: each row is a number, a type, an instant on some clock, the store's
window, and when the SMS may go (None: now). Then the zones of a number against phonenumbers itself,
and a property: whatever the number, window and instant, the answer is the first allowed instant."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from phonenumbers import timezone as phone_zones

from smschannel.domain import quiet_hours
from smschannel.domain.enums import SmsType
from smschannel.domain.quiet_hours import (
    COUNTRY_RULES,
    DEFAULT_QUIET_HOURS,
    SEARCH_LIMIT,
    CountryRule,
    QuietHours,
    held_until,
    phone_key,
    quiet_hours_problem,
    recipient_zones,
)

NEWSLETTER, TRANSACTIONAL = SmsType.NEWSLETTER, SmsType.TRANSACTIONAL
PARIS = ZoneInfo("Europe/Paris")
MADRID = ZoneInfo("Europe/Madrid")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TORONTO = ZoneInfo("America/Toronto")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
TOKYO = ZoneInfo("Asia/Tokyo")

FR = "+33612345678"  # a French mobile: Europe/Paris
US = "+12125551234"  # New York: America/New_York
CA = "+14165551234"  # Toronto: no country rule
IDAHO = "+12087572136"  # America/Boise and America/Los_Angeles
NANP = "+15005550006"  # a +1 personal number: 42 zones, Guam to Newfoundland
RU = "+79161234567"  # a Russian mobile: 16 zones, Bucharest's clock to Kamchatka's
ES = "+34612345678"  # a Spanish mobile: the Peninsula and the Canaries
DE = "+4915112345678"  # Germany: no country rule
GB = "+447911123456"  # a UK mobile: London and the Crown Dependencies
FREEPHONE = "+80012345678"  # international freephone: no zone known

OFF = QuietHours(time(0), time(0))  # start == end: no store window
NOT_EXEMPT = QuietHours(transactional_exempt=False)
LUNCH = QuietHours(time(12), time(14))
OFF_NOT_EXEMPT = QuietHours(time(0), time(0), transactional_exempt=False)
QUIET_1_TO_2_30 = QuietHours(time(1), time(2, 30), transactional_exempt=False)
QUIET_2_40_TO_5 = QuietHours(time(2, 40), time(5), transactional_exempt=False)
NARROWING = QuietHours(time(18), time(11))  # France's 10:00–20:00 narrowed to 11:00–18:00
WIDENING = QuietHours(time(23), time(6))  # would allow 06:00–23:00: France stays 10:00–20:00
TWO_HOURS = QuietHours(time(12), time(10))  # 10:00–12:00 only: no instant fits all 42 NANP zones


def on(zone: ZoneInfo, when: str) -> datetime:
    """A wall-clock time of `zone` as the UTC instant it names (fold=0 for a repeated one)."""
    return datetime.fromisoformat(when).replace(tzinfo=zone).astimezone(UTC)


def utc(when: str) -> datetime:
    return datetime.fromisoformat(when).replace(tzinfo=UTC)


def judge(phone: str, sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo) -> datetime | None:
    """held_until without the verdicts it remembers: each answer here is searched for anew."""
    quiet_hours._judged.clear()
    return held_until(phone, sms_type, at, quiet, store_zone)


def paris(when: str) -> datetime:
    return on(PARIS, when)


def ny(when: str) -> datetime:
    return on(NEW_YORK, when)


def la(when: str) -> datetime:
    return on(LOS_ANGELES, when)


def madrid(when: str) -> datetime:
    return on(MADRID, when)


def berlin(when: str) -> datetime:
    return on(BERLIN, when)


def tokyo(when: str) -> datetime:
    return on(TOKYO, when)


def row(
    name: str,
    phone: str,
    at: datetime,
    expected: datetime | None,
    sms_type: SmsType = NEWSLETTER,
    quiet: QuietHours = DEFAULT_QUIET_HOURS,
    store_zone: ZoneInfo = MADRID,
) -> object:
    """One case: a number, an instant, and when the SMS may go (None: now); a NEWSLETTER, the default
    window and a store in Madrid unless said."""
    return pytest.param(phone, sms_type, at, quiet, store_zone, expected, id=name)


T = TRANSACTIONAL
CASES = [
    # France: Monday–Saturday, 10:00–20:00 Paris, never on a public holiday (2026-06-16 is a Tuesday)
    row("fr-19:59:59-goes", FR, paris("2026-06-16 19:59:59"), None),
    row("fr-20:00:00-held", FR, paris("2026-06-16 20:00"), paris("2026-06-17 10:00")),
    row("fr-09:59:59.999999-held", FR, paris("2026-06-16 09:59:59.999999"), paris("2026-06-16 10:00")),
    row("fr-10:00-goes", FR, paris("2026-06-16 10:00"), None),
    row("fr-03:00-held-to-10:00", FR, paris("2026-06-16 03:00"), paris("2026-06-16 10:00")),
    row("fr-saturday-19:59:59-goes", FR, paris("2026-06-13 19:59:59"), None),
    row("fr-saturday-20:00-to-monday", FR, paris("2026-06-13 20:00"), paris("2026-06-15 10:00")),
    row("fr-sunday-midnight-to-monday-10:00", FR, paris("2026-06-14 00:00"), paris("2026-06-15 10:00")),
    row("fr-sunday-noon-to-monday-10:00", FR, paris("2026-06-14 12:00"), paris("2026-06-15 10:00")),
    row("fr-monday-midnight-to-10:00", FR, paris("2026-06-15 00:00"), paris("2026-06-15 10:00")),
    # 14 July: a Tuesday in 2026, a Sunday in 2024, a Saturday in 2029 (and then the 15th is a Sunday)
    row("fr-14-july-2026-tuesday", FR, paris("2026-07-14 12:00"), paris("2026-07-15 10:00")),
    row("fr-13-july-2026-evening-skips-the-14th", FR, paris("2026-07-13 20:00"), paris("2026-07-15 10:00")),
    row("fr-14-july-2024-sunday", FR, paris("2024-07-14 12:00"), paris("2024-07-15 10:00")),
    row("fr-14-july-2029-saturday-to-monday-16th", FR, paris("2029-07-14 12:00"), paris("2029-07-16 10:00")),
    row("fr-easter-weekend-2026-to-tuesday", FR, paris("2026-04-04 20:00"), paris("2026-04-07 10:00")),
    # Paris changes clocks on the last Sundays of March (29 March 2026: 02:00 CET -> 03:00 CEST, at
    # 01:00 UTC) and of October (25 October 2026: 03:00 CEST -> 02:00 CET, at 01:00 UTC)
    row("paris-saturday-before-spring-forward", FR, paris("2026-03-28 20:00"), utc("2026-03-30 08:00")),
    row("paris-spring-forward-09:00-is-07:00-utc", FR, utc("2026-03-29 00:30"), utc("2026-03-29 07:00"), T, NOT_EXEMPT),
    row("paris-spring-forward-after-the-jump", FR, utc("2026-03-29 01:30"), utc("2026-03-29 07:00"), T, NOT_EXEMPT),
    row("paris-skipped-02:30-opens-at-03:00", FR, utc("2026-03-29 00:45"), utc("2026-03-29 01:00"), T, QUIET_1_TO_2_30),
    row("paris-saturday-before-fall-back", FR, paris("2026-10-24 20:00"), utc("2026-10-26 09:00")),
    row("paris-fall-back-09:00-is-08:00-utc", FR, utc("2026-10-24 20:00"), utc("2026-10-25 08:00"), T, NOT_EXEMPT),
    row("paris-first-02:10-to-first-02:30", FR, utc("2026-10-25 00:10"), utc("2026-10-25 00:30"), T, QUIET_1_TO_2_30),
    row("paris-first-02:45-goes", FR, utc("2026-10-25 00:45"), None, T, QUIET_1_TO_2_30),
    row("paris-second-02:10-to-second-02:30", FR, utc("2026-10-25 01:10"), utc("2026-10-25 01:30"), T, QUIET_1_TO_2_30),
    row("paris-falls-back-out-of-window", FR, utc("2026-10-25 00:45"), utc("2026-10-25 01:00"), T, QUIET_2_40_TO_5),
    # New York: 08:00–21:00 every day (TCPA) within the store's 21:00–09:00: 09:00–21:00 on its clock;
    # clocks change on 8 March and 1 November 2026, not on Paris's days
    row("ny-spring-forward-8-march", US, utc("2026-03-08 06:00"), utc("2026-03-08 13:00")),
    row("ny-saturday-20:59:59-goes", US, ny("2026-03-07 20:59:59"), None),
    row("ny-saturday-21:00-to-sunday-09:00-edt", US, ny("2026-03-07 21:00"), utc("2026-03-08 13:00")),
    row("ny-fall-back-1-november", US, utc("2026-11-01 05:30"), utc("2026-11-01 14:00")),
    row("ny-on-paris-spring-forward-day", US, utc("2026-03-29 12:00"), utc("2026-03-29 13:00")),
    row("ny-on-paris-fall-back-day", US, utc("2026-10-25 12:30"), utc("2026-10-25 13:00")),
    row("us-07:59:59-to-08:00-without-store-window", US, ny("2026-06-16 07:59:59"), ny("2026-06-16 08:00"), quiet=OFF),
    row("us-21:00-to-08:00-without-store-window", US, ny("2026-06-16 21:00"), ny("2026-06-17 08:00"), quiet=OFF),
    row("us-independence-day-goes", US, ny("2026-07-04 12:00"), None),
    row("us-sunday-goes", US, ny("2026-06-14 12:00"), None),
    row("canada-has-no-rule-07:00-goes", CA, on(TORONTO, "2026-06-16 07:00"), None, quiet=OFF),
    # numbers over several zones: the window holds in all of them at once
    row("idaho-held-until-los-angeles-opens", IDAHO, utc("2026-06-16 14:30"), la("2026-06-16 09:00")),
    row("idaho-08:59:59-in-los-angeles-held", IDAHO, la("2026-06-16 08:59:59"), la("2026-06-16 09:00")),
    row("idaho-goes-until-boise-closes", IDAHO, utc("2026-06-17 02:59:59"), None),
    row("idaho-held-once-boise-closes", IDAHO, utc("2026-06-17 03:00"), la("2026-06-17 09:00")),
    row("nanp-42-zones-june-23:00-utc", NANP, utc("2026-06-16 12:00"), utc("2026-06-16 23:00")),
    row("nanp-42-zones-june-23:29:59-goes", NANP, utc("2026-06-16 23:29:59"), None),
    row("nanp-42-zones-june-23:30-st-johns-closes", NANP, utc("2026-06-16 23:30"), utc("2026-06-17 23:00")),
    row("nanp-42-zones-january-00:29:59-goes", NANP, utc("2026-01-17 00:29:59"), None),
    row("nanp-no-common-time-store-zone", NANP, utc("2026-06-16 12:00"), paris("2026-06-17 10:00"), quiet=TWO_HOURS),
    row("nanp-no-common-time-store-window-goes", NANP, paris("2026-06-17 10:30"), None, quiet=TWO_HOURS),
    row("russia-16-zones-until-bucharest-opens", RU, utc("2026-06-16 12:00"), utc("2026-06-17 06:00")),
    row("russia-16-zones-until-kamchatka-closes", RU, utc("2026-06-17 08:59:59"), None),
    # the store's window: wrapping midnight or not, or none (start == end)
    row("wraps-22:00-to-09:00", DE, berlin("2026-06-16 22:00"), berlin("2026-06-17 09:00")),
    row("wraps-08:59:59-to-09:00", DE, berlin("2026-06-17 08:59:59"), berlin("2026-06-17 09:00")),
    row("wraps-20:59:59-goes", DE, berlin("2026-06-16 20:59:59"), None),
    row("wraps-21:00-held", DE, berlin("2026-06-16 21:00"), berlin("2026-06-17 09:00")),
    row("lunch-12:00-to-14:00", DE, berlin("2026-06-16 12:00"), berlin("2026-06-16 14:00"), quiet=LUNCH),
    row("lunch-11:59:59-goes", DE, berlin("2026-06-16 11:59:59"), None, quiet=LUNCH),
    row("lunch-14:00-goes", DE, berlin("2026-06-16 14:00"), None, quiet=LUNCH),
    row("lunch-night-goes", DE, berlin("2026-06-16 23:00"), None, quiet=LUNCH),
    row("no-window-night-goes", DE, berlin("2026-06-16 03:00"), None, quiet=OFF),
    row("no-window-france-still-10:00", FR, paris("2026-06-16 03:00"), paris("2026-06-16 10:00"), quiet=OFF),
    row("no-window-france-still-not-sunday", FR, paris("2026-06-14 12:00"), paris("2026-06-15 10:00"), quiet=OFF),
    row("no-window-transactional-goes", FR, paris("2026-06-16 03:00"), None, T, OFF_NOT_EXEMPT),
    # a country without a rule: the store's window only, on any day
    row("germany-sunday-goes", DE, berlin("2026-06-14 12:00"), None),
    row("uk-mobile-sunday-goes", GB, paris("2026-06-14 12:00"), None),
    # TRANSACTIONAL: exempt by default; when not, the store's window only, never a country rule
    row("transactional-exempt-23:00-goes", FR, paris("2026-06-16 23:00"), None, T),
    row("transactional-not-exempt-to-09:00", FR, paris("2026-06-16 23:00"), paris("2026-06-17 09:00"), T, NOT_EXEMPT),
    row("transactional-not-exempt-sunday-goes", FR, paris("2026-06-14 12:00"), None, T, NOT_EXEMPT),
    row("transactional-not-exempt-us-08:30", US, ny("2026-06-16 08:30"), ny("2026-06-16 09:00"), T, NOT_EXEMPT),
    row("spain-waits-for-canaries", ES, madrid("2026-06-16 09:30"), madrid("2026-06-16 10:00"), T, NOT_EXEMPT),
    # no zone known: the store's
    row("no-zone-store-in-tokyo", FREEPHONE, tokyo("2026-06-16 22:00"), tokyo("2026-06-17 09:00"), store_zone=TOKYO),
    row("no-zone-store-in-paris", FREEPHONE, tokyo("2026-06-16 22:00"), None, store_zone=PARIS),
    # the store narrows France, never widens it
    row("narrowed-10:30-to-11:00", FR, paris("2026-06-16 10:30"), paris("2026-06-16 11:00"), quiet=NARROWING),
    row("narrowed-11:00-goes", FR, paris("2026-06-16 11:00"), None, quiet=NARROWING),
    row("narrowed-17:59:59-goes", FR, paris("2026-06-16 17:59:59"), None, quiet=NARROWING),
    row("narrowed-18:00-to-11:00", FR, paris("2026-06-16 18:00"), paris("2026-06-17 11:00"), quiet=NARROWING),
    row("not-widened-07:00-to-10:00", FR, paris("2026-06-16 07:00"), paris("2026-06-16 10:00"), quiet=WIDENING),
    row("not-widened-19:59:59-goes", FR, paris("2026-06-16 19:59:59"), None, quiet=WIDENING),
    row("not-widened-20:00-to-10:00", FR, paris("2026-06-16 20:00"), paris("2026-06-17 10:00"), quiet=WIDENING),
    row("not-widened-22:00-to-10:00", FR, paris("2026-06-16 22:00"), paris("2026-06-17 10:00"), quiet=WIDENING),
]


@pytest.mark.parametrize(("phone", "sms_type", "at", "quiet", "store_zone", "expected"), CASES)
def test_held_until(
    phone: str, sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo, expected: datetime | None
) -> None:
    got = judge(phone, sms_type, at, quiet, store_zone)
    assert got == expected
    assert got is None or got.utcoffset() == timedelta(0)
    # A second judge of the same instant gets the verdict remembered, and it is the same.
    assert held_until(phone, sms_type, at, quiet, store_zone) == expected


QUIET_5_TO_6 = QuietHours(time(5), time(6), transactional_exempt=False)


@pytest.mark.parametrize(
    ("phone", "sms_type", "quiet", "verdicts"),
    [
        pytest.param(
            FR,
            NEWSLETTER,
            DEFAULT_QUIET_HOURS,
            [
                (paris("2026-06-16 19:00"), None),
                (paris("2026-06-16 19:59:59"), None),
                (paris("2026-06-16 20:00"), paris("2026-06-17 10:00")),
                (paris("2026-06-17 09:59"), paris("2026-06-17 10:00")),
                (paris("2026-06-17 10:00"), None),
                (paris("2026-06-16 20:30"), paris("2026-06-17 10:00")),  # back in time
                (paris("2026-06-16 19:30"), None),
            ],
            id="france-an-evening-and-a-morning",
        ),
        pytest.param(
            FR,
            TRANSACTIONAL,
            QUIET_5_TO_6,
            [
                (utc("2026-03-28 12:00"), None),  # allowed until 05:00 CEST, 03:00 UTC, after the jump
                (utc("2026-03-29 02:59:59"), None),
                (utc("2026-03-29 03:30"), utc("2026-03-29 04:00")),
                (utc("2026-03-29 04:00"), None),
            ],
            id="paris-allowed-across-spring-forward",
        ),
        pytest.param(
            IDAHO,
            NEWSLETTER,
            DEFAULT_QUIET_HOURS,
            [
                (utc("2026-06-16 20:00"), None),  # until Boise's 21:00, 03:00 UTC
                (utc("2026-06-17 03:00"), la("2026-06-17 09:00")),
                (la("2026-06-17 08:59:59"), la("2026-06-17 09:00")),
                (la("2026-06-17 09:00"), None),
            ],
            id="idaho-a-night",
        ),
    ],
)
def test_remembered_verdicts_hold_only_until_the_next_change(
    phone: str, sms_type: SmsType, quiet: QuietHours, verdicts: list[tuple[datetime, datetime | None]]
) -> None:
    quiet_hours._judged.clear()
    for at, expected in verdicts:
        assert held_until(phone, sms_type, at, quiet, PARIS) == expected, at


def test_an_instant_in_another_zone_is_judged_as_the_same_instant() -> None:
    at = on(PARIS, "2026-06-16 20:00")
    assert judge(FR, NEWSLETTER, at.astimezone(TOKYO), DEFAULT_QUIET_HOURS, PARIS) == on(PARIS, "2026-06-17 10:00")


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        held_until(FR, NEWSLETTER, datetime(2026, 6, 16, 12), DEFAULT_QUIET_HOURS, PARIS)


def test_a_store_window_that_leaves_france_no_time_holds_for_the_search_limit() -> None:
    quiet = QuietHours(time(9), time(21))
    at = on(PARIS, "2026-06-16 12:00")
    assert quiet_hours_problem(quiet) is not None
    assert judge(FR, NEWSLETTER, at, quiet, PARIS) == at + SEARCH_LIMIT


# -- the rules as data ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", COUNTRY_RULES.values(), ids=COUNTRY_RULES.keys())
def test_each_country_rule_is_well_formed(rule: CountryRule) -> None:
    assert rule is COUNTRY_RULES[rule.country]
    assert rule.country in phonenumbers.SUPPORTED_REGIONS
    assert rule.days
    assert rule.days <= set(range(7))
    assert rule.opens < rule.closes
    if rule.no_public_holidays:
        assert holidays.country_holidays(rule.country, years=2026)


def test_france_and_the_us_as_issue_18_states_them() -> None:
    fr, us = COUNTRY_RULES["FR"], COUNTRY_RULES["US"]
    assert (fr.days, fr.opens, fr.closes, fr.no_public_holidays) == (frozenset(range(6)), time(10), time(20), True)
    assert (us.days, us.opens, us.closes, us.no_public_holidays) == (frozenset(range(7)), time(8), time(21), False)


@pytest.mark.parametrize(
    ("quiet", "problem"),
    [
        (DEFAULT_QUIET_HOURS, None),
        (OFF, None),
        (NARROWING, None),
        (WIDENING, None),
        (QuietHours(time(9, 59), time(19, 59)), None),  # 19:59–20:00 is left to France
        (QuietHours(time(9), time(21)), "quiet hours 09:00–21:00 leave no time for a NEWSLETTER to FR"),
        (QuietHours(time(10), time(20)), "quiet hours 10:00–20:00 leave no time for a NEWSLETTER to FR"),
        (QuietHours(time(7, 30), time(21, 0, 1)), "quiet hours 07:30–21:00:01 leave no time for a NEWSLETTER"),
    ],
)
def test_quiet_hours_problem(quiet: QuietHours, problem: str | None) -> None:
    found = quiet_hours_problem(quiet)
    assert found == problem if problem is None else found is not None and found.startswith(problem)


# -- the zones of a number ------------------------------------------------------------------------


def names(zones: tuple[ZoneInfo, ...]) -> tuple[str, ...]:
    return tuple(z.key for z in zones)


def test_zones_of_single_and_multi_zone_numbers() -> None:
    assert names(recipient_zones(FR, TOKYO)) == ("Europe/Paris",)
    assert names(recipient_zones(US, TOKYO)) == ("America/New_York",)
    assert names(recipient_zones(IDAHO, TOKYO)) == ("America/Boise", "America/Los_Angeles")
    assert names(recipient_zones(ES, TOKYO)) == ("Atlantic/Canary", "Europe/Madrid")
    assert len(recipient_zones(NANP, TOKYO)) == 42
    assert len(recipient_zones(RU, TOKYO)) == 16


@pytest.mark.parametrize("phone", [FREEPHONE, "+447700900123", "", "33612345678", "+", "+999123", "+33６12345678"])
def test_a_number_without_a_known_zone_takes_the_store_zone(phone: str) -> None:
    assert recipient_zones(phone, TOKYO) == (TOKYO,)


def test_an_unavailable_zone_name_is_replaced_by_the_store_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(quiet_hours.TIMEZONE_DATA, "999", ("Europe/Paris", "Mars/Olympus_Mons"))
    monkeypatch.setattr(quiet_hours, "_zones_of_key", quiet_hours._zones_of_key.__wrapped__)
    assert names(quiet_hours._zones("999", TOKYO)) == ("Europe/Paris", "Asia/Tokyo")
    assert names(quiet_hours._zones("999", PARIS)) == ("Europe/Paris",)


TYPES = [
    phonenumbers.PhoneNumberType.FIXED_LINE,
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.PREMIUM_RATE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.VOIP,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.PAGER,
    phonenumbers.PhoneNumberType.UAN,
    phonenumbers.PhoneNumberType.VOICEMAIL,
]


def sample_numbers(per_example: int) -> list[phonenumbers.PhoneNumber]:
    """Valid numbers of every type of every region and non-geographic code: each example, and
    variants of its last digits."""
    rnd = random.Random(18)
    examples = [phonenumbers.example_number_for_type(r, t) for r in phonenumbers.SUPPORTED_REGIONS for t in TYPES]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(c) for c in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    found = []
    for example in examples:
        if example is None:
            continue
        national = phonenumbers.national_significant_number(example)
        for i in range(per_example):
            cut = rnd.randint(1, min(6, len(national)))
            digits = national[:-cut] + "".join(rnd.choice("0123456789") for _ in range(cut)) if i else national
            number = phonenumbers.parse(f"+{example.country_code}{digits}")
            if phonenumbers.is_valid_number(number):
                found.append(number)
    return found


def test_zones_and_region_are_phonenumbers_own_for_every_type_of_every_region() -> None:
    numbers = sample_numbers(per_example=6)
    assert len(numbers) > 5000
    for number in numbers:
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        expected = tuple(phone_zones.time_zones_for_number(number))
        got = names(recipient_zones(e164, TOKYO))
        assert got == (("Asia/Tokyo",) if expected == (phone_zones.UNKNOWN_TIMEZONE,) else expected), e164
        assert quiet_hours._number(e164)[0] == (phonenumbers.region_code_for_number(number) or ""), e164


# -- the property: the first allowed instant, on every clock of the number ------------------------


def allowed(phone: str, sms_type: SmsType, instant: datetime, quiet: QuietHours, zones: tuple[ZoneInfo, ...]) -> bool:
    """The rules written out plainly, to judge the answers by."""
    marketing = sms_type is not SmsType.TRANSACTIONAL
    store_window = quiet.start != quiet.end and (marketing or not quiet.transactional_exempt)
    region = phonenumbers.region_code_for_number(phonenumbers.parse(phone)) if phone.startswith("+") else None
    rule = COUNTRY_RULES.get(region or "") if marketing else None
    for zone in zones:
        local = instant.astimezone(zone)
        t = local.time()
        if store_window and (
            quiet.start <= t < quiet.end if quiet.start < quiet.end else t >= quiet.start or t < quiet.end
        ):
            return False
        if rule is not None:
            if local.weekday() not in rule.days or not rule.opens <= t < rule.closes:
                return False
            if rule.no_public_holidays and local.date() in holidays.country_holidays(rule.country, years=local.year):
                return False
    return True


BASES = [
    ("+336", 8),
    ("+331", 8),
    ("+1212", 7),
    ("+1208757", 4),
    ("+1500555", 4),
    ("+1416", 7),
    ("+1876", 7),
    ("+346", 8),
    ("+3491", 7),
    ("+4915", 9),
    ("+79", 9),
    ("+614", 8),
    ("+4477", 8),
    ("+800", 8),
    ("+5511", 9),
]
ZONES = [PARIS, MADRID, NEW_YORK, TOKYO, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Australia/Lord_Howe")]
CLOCK_CHANGES = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 25), date(2026, 11, 1), date(2027, 4, 4)]

phones = st.builds(
    lambda base, digits: base[0] + digits[: base[1]].rjust(base[1], "5"),
    st.sampled_from(BASES),
    st.text("0123456789", min_size=9, max_size=9),
)
instants = st.one_of(
    st.datetimes(datetime(2024, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
    st.builds(
        lambda day, seconds: datetime.combine(day, time(), UTC) + timedelta(seconds=seconds),
        st.sampled_from(CLOCK_CHANGES),
        st.integers(-86_400, 2 * 86_400),
    ),
)
times = st.one_of(st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])), st.times())
windows = st.builds(QuietHours, times, times, st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    phone=phones,
    sms_type=st.sampled_from([NEWSLETTER, TRANSACTIONAL]),
    at=instants,
    quiet=windows,
    store_zone=st.sampled_from(ZONES),
    data=st.data(),
)
def test_held_until_is_the_first_allowed_instant(
    phone: str, sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo, data: st.DataObject
) -> None:
    assume(quiet_hours_problem(quiet) is None)
    zones = recipient_zones(phone, store_zone)
    until = judge(phone, sms_type, at, quiet, store_zone)
    event("held" if until is not None else "goes")
    if until is None:
        assert allowed(phone, sms_type, at, quiet, zones) or allowed(phone, sms_type, at, quiet, (store_zone,))
        return
    assert at < until <= at + SEARCH_LIMIT
    assert judge(phone, sms_type, until, quiet, store_zone) is None
    # Judged on every zone of the number, or on the store's alone when the zones share no time.
    if not allowed(phone, sms_type, until, quiet, zones):
        event("no common time: the store zone judges")
        zones = (store_zone,)
    assert allowed(phone, sms_type, until, quiet, zones)
    # Nothing allowed before it: just before, and on a sample of the minutes in between.
    before = [until - timedelta(microseconds=1), until - timedelta(seconds=1)]
    minutes = int((until - at) / timedelta(minutes=1))
    if minutes > 1:
        before += [at + timedelta(minutes=k) for k in data.draw(st.lists(st.integers(1, minutes - 1), max_size=40))]
        before += [at + timedelta(minutes=k) for k in range(1, minutes, max(1, minutes // 40))]
    for instant in before:
        if instant >= at:
            assert not allowed(phone, sms_type, instant, quiet, zones), instant
            assert judge(phone, sms_type, instant, quiet, store_zone) is not None, instant


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=st.tuples(phones, phones),
    sms_type=st.sampled_from([NEWSLETTER, TRANSACTIONAL]),
    at=instants,
    quiet=st.one_of(windows, st.just(QuietHours(time(0), time(0)))),
    store_zone=st.sampled_from(ZONES),
)
def test_phone_key_is_all_that_held_until_reads_of_a_number(
    pair: tuple[str, str], sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo
) -> None:
    """A broadcast judges quiet hours once per `phone_key`: two numbers with one key are held alike,
    and a number without one is never held."""
    assume(quiet_hours_problem(quiet) is None)
    first, second = pair
    key = phone_key(first, sms_type, quiet)
    if key is None:
        event("no key")
        assert held_until(first, sms_type, at, quiet, store_zone) is None
    if key is not None and key == phone_key(second, sms_type, quiet):
        event("same key")
        assert held_until(first, sms_type, at, quiet, store_zone) == held_until(second, sms_type, at, quiet, store_zone)
