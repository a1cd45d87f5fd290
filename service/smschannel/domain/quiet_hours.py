"""Quiet hours and country rules (issue 18): when an SMS may be handed to the provider, judged on the
recipient's own clock, which comes from the number alone (`phonenumbers.timezone`).

The allowed time is the intersection of "outside the store's quiet window" and the country rule of
the number (NEWSLETTER only), so a store narrows the rule but never widens it; a number over several
zones must be allowed in all of them at once. `held_until` answers "now" in a few microseconds for
the common case, and otherwise searches the earliest allowed instant opening by opening, never
minute by minute, following each zone's clock changes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumberDesc, PhoneNumberType
from phonenumbers.timezone import UNKNOWN_TIMEZONE
from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from .enums import SmsType

__all__ = [
    "COUNTRY_RULES",
    "DEFAULT_QUIET_HOURS",
    "SEARCH_DAYS",
    "SEARCH_LIMIT",
    "CountryRule",
    "QuietHours",
    "held_until",
    "phone_key",
    "quiet_hours_problem",
    "recipient_zones",
]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A store's quiet window, in the recipient's local time: [start, end), may wrap midnight.
    start == end: no window."""

    start: time = time(21, 0)
    end: time = time(9, 0)
    transactional_exempt: bool = True

    @property
    def off(self) -> bool:
        """True when the store has no window."""
        return self.start == self.end


DEFAULT_QUIET_HOURS = QuietHours()


@dataclass(frozen=True, slots=True)
class CountryRule:
    """When marketing SMS (NEWSLETTER) may reach a number of `country`, on the recipient's clock."""

    country: str  # ISO 3166 alpha-2
    days: frozenset[int]  # weekdays allowed, Monday=0
    opens: time  # local allowed window [opens, closes), opens < closes
    closes: time
    no_public_holidays: bool  # never on a national public holiday of `country` (the `holidays` package)


COUNTRY_RULES: Mapping[str, CountryRule] = MappingProxyType(
    {
        # France. No legal text found sets hours for marketing SMS. Code de la consommation art. D223-9
        # (décret n° 2022-1313 du 13 octobre 2022, in force 1 March 2023, Légifrance JORFTEXT000046421823)
        # limits *telephone calls* for prospection to Monday–Friday 10:00–13:00 and 14:00–20:00, never
        # on a public holiday (Code du travail L3133-1), on the consumer's clock; its title and notice
        # speak of calls ("appels téléphoniques"), not SMS. The CNIL ("La prospection commerciale par
        # SMS-MMS") sets consent (CPCE L34-5), no hours. Hours come from the operators' codes: the af2m
        # charte Business Messaging (1 September 2024): "jours ouvrables" (Monday–Saturday, not public
        # holidays), 08:00–22:00 (its 2026 edition, as reported: 08:00–21:30); the operators' earlier
        # SMS+ rules, as providers quote them: 08:00–20:30, never on Sundays or public holidays. Issue 18
        # asks for the strictest published window: 10:00–20:00, Monday–Saturday, no public holiday.
        "FR": CountryRule("FR", frozenset(range(6)), time(10, 0), time(20, 0), no_public_holidays=True),
        # United States. TCPA, 47 CFR § 64.1200(c)(1): no telephone solicitation "before the hour of
        # 8 a.m. or after 9 p.m. (local time at the called party's location)"; texts count as calls
        # under the TCPA. Every day; holidays are not excluded.
        "US": CountryRule("US", frozenset(range(7)), time(8, 0), time(21, 0), no_public_holidays=False),
    }
)
# The calling codes of the countries with a rule ("+33", "+1"): a number of another cannot get one.
_RULED_CODES = tuple(f"+{phonenumbers.country_code_for_region(region)}" for region in COUNTRY_RULES)

# How far ahead the earliest instant that suits every zone of a number is searched for. A number whose
# zones share no allowed instant in that time (a +1 number of the whole NANP against a narrow store
# window) is judged on the store's clock alone; when even that finds nothing (a store window leaving
# no time inside a country rule: see quiet_hours_problem), the SMS is held this long and judged again.
SEARCH_DAYS = 16
SEARCH_LIMIT = timedelta(days=SEARCH_DAYS)

_DAY = 86_400_000_000  # microseconds
_ONE_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
_EVERY_DAY = frozenset(range(7))
# Two changes of a zone's UTC offset are never this close: checking the offset at these steps finds each.
_OFFSET_STEP = timedelta(hours=12)


def _micros(t: time | datetime) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _clock(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second or t.microsecond else "%H:%M")


# -- the zones of a number ------------------------------------------------------------------------
# time_zones_for_number gives the zones of the number's prefix for a geographic number (fixed line,
# and mobiles where they are geographic) and the whole country's otherwise (a Jamaican or Russian
# mobile); deciding which takes a parse and the number's type: 20 µs, for every recipient. The same
# decision is made here from the metadata with one regular expression per region, cached per
# calling code, and skipped for a calling code whose numbers all share one region and one set of
# zones (+33, +49): tests/test_quiet_hours.py checks it against the library for every region and type.

_NON_GEOGRAPHIC = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail")


@dataclass(frozen=True, slots=True)
class _Region:
    code: str
    leading: re.Pattern[str] | None  # the region's leading digits, which decide it when given
    kind: re.Pattern[str] | None  # groups n (non-geographic), f (fixed line) and m (mobile)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What decides the region and the zones of the numbers of one calling code."""

    regions: tuple[_Region, ...]
    country_key: str  # TIMEZONE_DATA key of the zones of the whole country ("" none)
    geographic_mobiles: bool
    same: tuple[str, str] | None  # (region, key) when every valid number has them


def _desc(desc: PhoneNumberDesc | None, group: str) -> str | None:
    """A number description as a pattern of its own group, with its possible lengths."""
    pattern = desc.national_number_pattern if desc is not None else None
    if not pattern:
        return None
    lengths = desc.possible_length if desc is not None else ()
    ahead = "(?=(?:{})\\Z)".format("|".join(f"\\d{{{n}}}" for n in lengths)) if lengths else ""
    return f"(?P<{group}>{ahead}(?:{pattern}))"


def _region(code: str, metadata: PhoneMetadata) -> _Region:
    # The order of phonenumbers' _number_type_helper: a number matching no general description has no
    # type; the non-geographic types are tried first, then fixed line, then mobile.
    general = _desc(metadata.general_desc, "g")
    kinds = [d for i, name in enumerate(_NON_GEOGRAPHIC) if (d := _desc(getattr(metadata, name), f"n{i}"))]
    kinds.append(_desc(metadata.fixed_line, "f") or "")
    if not metadata.same_mobile_and_fixed_line_pattern:
        kinds.append(_desc(metadata.mobile, "m") or "")
    kinds = [k for k in kinds if k]
    kind = re.compile(f"(?={general}\\Z)(?:{'|'.join(kinds)})") if general and kinds else None
    leading = re.compile(metadata.leading_digits) if metadata.leading_digits is not None else None
    return _Region(code, leading, kind)


def _country_key(code: str) -> str:
    # As phonenumbers' _country_level_time_zones_for_number looks it up.
    for size in range(TIMEZONE_LONGEST_PREFIX, 0, -1):
        if code[: 1 + size] in TIMEZONE_DATA:
            return code[: 1 + size]
    return ""


@cache
def _plan(code: str) -> _Plan | None:
    """The plan of a calling code (its digits), None when it is not one."""
    if not code.isdigit() or code.startswith("0"):
        return None
    region_codes = COUNTRY_CODE_TO_REGION_CODE.get(int(code))
    if not region_codes:
        return None
    regions = []
    for region_code in region_codes:
        if region_code == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
            metadata = PhoneMetadata.metadata_for_nongeo_region(int(code), None)
        else:
            metadata = PhoneMetadata.metadata_for_region(region_code, None)
        if metadata is not None:
            regions.append(_region(region_code, metadata))
    country_key = _country_key(code)
    same = None
    if len(region_codes) == 1 and country_key == code:
        zones = set(TIMEZONE_DATA[code])
        if all(set(v) == zones for k, v in TIMEZONE_DATA.items() if k.startswith(code)):
            same = (region_codes[0], code)
    geographic_mobiles = bool(phonenumbers.is_number_type_geographical(PhoneNumberType.MOBILE, int(code)))
    return _Plan(tuple(regions), country_key, geographic_mobiles, same)


def _number(e164: str) -> tuple[str, str]:
    """(region, TIMEZONE_DATA key of its zones) of a valid E.164 number; "" for what is not known."""
    digits = e164[1:]
    if not (e164.startswith("+") and digits.isascii() and digits.isdigit()):
        return "", ""
    for size in (1, 2, 3):
        plan = _plan(digits[:size])
        if plan is not None:
            break
    else:
        return "", ""
    if plan.same is not None:
        return plan.same
    national = digits[size:]
    # phonenumbers' region_code_for_number: the only region, or the first whose leading digits, else
    # whose number types, match.
    chosen = plan.regions[0] if len(plan.regions) == 1 else None
    for region in plan.regions if chosen is None else ():
        if region.leading.match(national) if region.leading is not None else _kind(region, national):
            chosen = region
            break
    if chosen is None:
        return "", ""
    kind = _kind(chosen, national)
    if kind is None:
        return chosen.code, ""
    if kind == "n" or (kind == "m" and not plan.geographic_mobiles):
        return chosen.code, plan.country_key
    for size in range(min(TIMEZONE_LONGEST_PREFIX, len(digits)), 0, -1):
        if digits[:size] in TIMEZONE_DATA:
            return chosen.code, digits[:size]
    return chosen.code, ""


def phone_key(phone_e164: str, sms_type: SmsType, quiet: QuietHours) -> tuple[str, str] | None:
    """All that `held_until` reads of a number for this type under this store window: its region and
    the key of its zones; None when it reads nothing of it (the window does not apply to the type and
    no country rule can: the number's calling code is no ruled country's). Numbers with one key are
    held alike at any instant: a broadcast judges quiet hours once per key."""
    marketing, store_window = _applies(sms_type, quiet)
    if not store_window and not (marketing and phone_e164.startswith(_RULED_CODES)):
        return None  # nothing can hold it: no need to read the number (a newsletter's every SMS)
    return _number(phone_e164)


def _applies(sms_type: SmsType, quiet: QuietHours) -> tuple[bool, bool]:
    """(whether country rules apply: marketing SMS, whether the store's window applies) to a type."""
    marketing = sms_type is not SmsType.TRANSACTIONAL
    return marketing, not quiet.off and (marketing or not quiet.transactional_exempt)


def _kind(region: _Region, national: str) -> str | None:
    """n (a non-geographic type), f (fixed line), m (mobile), None (no type: not a valid number)."""
    pattern = region.kind
    found = pattern.fullmatch(national) if pattern is not None else None
    if pattern is None or found is None:
        return None
    groups = pattern.groupindex
    if "f" in groups and found.group("f") is not None:
        return "f"
    return "m" if "m" in groups and found.group("m") is not None else "n"


@cache
def _zone(name: str) -> ZoneInfo | None:
    if name == UNKNOWN_TIMEZONE:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@cache
def _zones_of_key(key: str) -> tuple[tuple[ZoneInfo, ...], bool]:
    """The zones of a TIMEZONE_DATA key that this machine knows, and whether any is not known."""
    zones = [_zone(name) for name in TIMEZONE_DATA[key]] if key else [None]
    return tuple(z for z in zones if z is not None), None in zones


def _zones(key: str, store_zone: ZoneInfo) -> tuple[ZoneInfo, ...]:
    zones, unknown = _zones_of_key(key)
    return (*zones, store_zone) if unknown and store_zone not in zones else zones


def recipient_zones(phone_e164: str, store_zone: ZoneInfo) -> tuple[ZoneInfo, ...]:
    """The time zones of the number (phonenumbers.timezone.time_zones_for_number); the store's zone
    when the number has none known ("Etc/Unknown") or a zone name is not available."""
    return _zones(_number(phone_e164)[1], store_zone)


# -- the allowed times on one clock ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Window:
    """When a local clock allows sending: on `days`, not on a public holiday of `holidays_of`, within `spans`."""

    spans: tuple[tuple[int, int], ...]  # [a, b) in microseconds of the local day, sorted
    days: frozenset[int]
    holidays_of: str  # "" none


@cache
def _window(quiet: QuietHours | None, rule: CountryRule | None) -> _Window:
    """Outside the store's window and inside the country's: the store narrows, never widens."""
    spans = [(0, _DAY)]
    if quiet is not None and not quiet.off:
        start, end = _micros(quiet.start), _micros(quiet.end)
        spans = [(end, start)] if start > end else [(0, start), (end, _DAY)]
    if rule is None:
        return _Window(tuple(s for s in spans if s[0] < s[1]), _EVERY_DAY, "")
    opens, closes = _micros(rule.opens), _micros(rule.closes)
    spans = [(max(a, opens), min(b, closes)) for a, b in spans]
    return _Window(tuple(s for s in spans if s[0] < s[1]), rule.days, rule.country if rule.no_public_holidays else "")


@cache
def _holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year).keys())


def _day_allowed(window: _Window, day: date) -> bool:
    if day.weekday() not in window.days:
        return False
    return not window.holidays_of or day not in _holidays(window.holidays_of, day.year)


def _allowed(window: _Window, local: datetime) -> bool:
    if not _day_allowed(window, local.date()):
        return False
    now = _micros(local)
    return any(a <= now < b for a, b in window.spans)


# The searches below measure from the local clock of an instant in microseconds of wall time, and add
# them to the instant: right as long as the zone's offset does not change in between, which
# _offset_change checks.


def _next_wall(window: _Window, local: datetime, days: int) -> int | None:
    """How far ahead of `local`'s wall-clock time the window first allows one, within `days` days."""
    now = _micros(local)
    day = local.date()
    if _day_allowed(window, day):
        for a, b in window.spans:
            if now < b:
                return max(a - now, 0)
    for ahead in range(1, days + 1) if window.spans else ():
        day += _ONE_DAY
        if _day_allowed(window, day):
            return ahead * _DAY + window.spans[0][0] - now
    return None


def _run_end(window: _Window, local: datetime, days: int) -> int | None:
    """How far ahead of `local`'s wall-clock time (allowed) the window first stops allowing one; None
    when it allows all of the next `days` days."""
    now = _micros(local)
    day = local.date()
    end = next(b for a, b in window.spans if a <= now < b)
    ahead = 0
    while end == _DAY:  # allowed until midnight: on into the next day when it opens at midnight
        ahead += 1
        day += _ONE_DAY
        if ahead > days:
            return None
        if not _day_allowed(window, day) or window.spans[0][0] != 0:
            return ahead * _DAY - now
        end = window.spans[0][1]
    return ahead * _DAY + end - now


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _offset_change(zone: ZoneInfo, start: datetime, end: datetime, offset: timedelta | None) -> datetime | None:
    """The first instant in (start, end] when the zone's UTC offset is no longer `offset` (DST)."""
    low = start
    while low < end:
        high = min(low + _OFFSET_STEP, end)
        if _offset_at(zone, high) != offset:
            below, above = 0, (high - low) // _MICROSECOND  # the offset at low + above differs
            while above - below > 1:
                middle = (below + above) // 2
                if _offset_at(zone, low + middle * _MICROSECOND) != offset:
                    above = middle
                else:
                    below = middle
            return low + above * _MICROSECOND
        low = high
    return None


def _next_opening(zone: ZoneInfo, window: _Window, instant: datetime, limit: datetime) -> datetime | None:
    """The first UTC instant >= `instant` when the zone's clock is allowed, None if none up to `limit`.

    Between two changes of the zone's offset its clock runs with UTC, so the next allowed wall time
    gives the instant; when an offset change comes first, the search starts again from it: a gap
    (spring forward) opens at the change when the skipped time was to open, and a fold (fall back)
    can move the clock back into an allowed span."""
    while instant <= limit:
        local = instant.astimezone(zone)
        ahead = _next_wall(window, local, (limit - instant).days + 1)
        if ahead is None:
            return None
        found = instant + ahead * _MICROSECOND
        change = _offset_change(zone, instant, found, local.utcoffset())
        if change is None:
            return found if found <= limit else None
        instant = change
    return None


def _next_closing(zone: ZoneInfo, window: _Window, instant: datetime, limit: datetime) -> datetime:
    """The first UTC instant after `instant` (allowed) when the zone's clock is not, or `limit`."""
    while instant < limit:
        local = instant.astimezone(zone)
        ahead = _run_end(window, local, (limit - instant).days + 1)
        found = limit if ahead is None else min(limit, instant + ahead * _MICROSECOND)
        change = _offset_change(zone, instant, found, local.utcoffset())
        if change is None:
            return found
        if not _allowed(window, change.astimezone(zone)):
            return change
        instant = change
    return limit


def _earliest(zones: tuple[ZoneInfo, ...], window: _Window, at: datetime) -> datetime | None:
    """The first instant >= `at` that every zone allows, within SEARCH_LIMIT.

    A fixpoint: each zone in turn moves the candidate to its own next opening; no instant skipped was
    allowed by the zone that skipped it, so the first candidate all zones accept is the earliest."""
    limit = at + SEARCH_LIMIT
    candidate, accepted, i = at, 0, 0
    while accepted < len(zones):
        found = _next_opening(zones[i], window, candidate, limit)
        if found is None:
            return None
        if found == candidate:
            accepted += 1
        else:
            candidate, accepted = found, 1
        i = (i + 1) % len(zones)
    return candidate


def held_until(
    phone_e164: str, sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo
) -> datetime | None:
    """None when a message of this type may be handed to the provider at `at` (an aware UTC datetime);
    otherwise the earliest UTC instant >= at when it may, i.e. when, in EVERY zone of the number, the
    local time is outside the store's quiet window and (NEWSLETTER only) the country rule of the
    number's country allows it (allowed weekday, not a public holiday of that country when the rule
    says so — `holidays` package, national holidays —, within [opens, closes)). TRANSACTIONAL: only the
    store window, and only when not transactional_exempt; country rules are for marketing SMS
    (NEWSLETTER) only.

    Anything but TRANSACTIONAL is judged as marketing. The number is one phonenumbers deems valid (as
    every stored one is). When the number's zones share no allowed instant within SEARCH_LIMIT, the
    store's zone alone judges; when nothing is allowed there either, the SMS is held SEARCH_LIMIT."""
    if at.tzinfo is None:
        raise ValueError("held_until needs an aware datetime")
    number = phone_key(phone_e164, sms_type, quiet)  # all it reads of the number (a broadcast groups by it)
    if number is None:
        return None
    region, key = number
    marketing, store_window = _applies(sms_type, quiet)
    rule = COUNTRY_RULES.get(region) if marketing else None
    if rule is None and not store_window:
        return None
    window = _window(quiet if store_window else None, rule)
    seen = (key, window, store_zone)
    span = _judged.get(seen)
    if span is not None and span[0] <= at < span[1]:
        return span[2]
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    zones = _zones(key, store_zone)
    if all(_allowed(window, at.astimezone(zone)) for zone in zones):
        until = min(_next_closing(zone, window, at, at + _ONE_DAY) for zone in zones)
        _remember(seen, (at, until, None))
        return None
    found = _earliest(zones, window, at)
    if found is not None:
        _remember(seen, (at, found, found))
        return found
    found = _earliest((store_zone,), window, at) if zones != (store_zone,) else None
    if found is None:
        return at + SEARCH_LIMIT
    return None if found == at else found


# The last verdict per (zones, window, store zone), with the span of time it holds for: every instant
# from the one judged to the next change (a closing, or the opening it was held until) gets the same.
# A newsletter judges many numbers sharing a few zone sets within minutes: one search serves them all.
_judged: dict[tuple[str, _Window, ZoneInfo], tuple[datetime, datetime, datetime | None]] = {}
_JUDGED_MAX = 4096


def _remember(seen: tuple[str, _Window, ZoneInfo], verdict: tuple[datetime, datetime, datetime | None]) -> None:
    if len(_judged) >= _JUDGED_MAX:
        _judged.clear()
    _judged[seen] = verdict


def quiet_hours_problem(quiet: QuietHours) -> str | None:
    """Why a store's quiet hours cannot be used (they would hold every NEWSLETTER to a country with a
    rule for ever), or None."""
    for rule in COUNTRY_RULES.values():
        if not _window(quiet, rule).spans:
            return (
                f"quiet hours {_clock(quiet.start)}–{_clock(quiet.end)} leave no time for a NEWSLETTER to "
                f"{rule.country}, allowed only {_clock(rule.opens)}–{_clock(rule.closes)} local time"
            )
    return None
