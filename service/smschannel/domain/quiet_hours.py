"""Quiet hours: when an SMS may reach a person, in the person's own time (issue 18).

Two layers, and the allowed time is their intersection, so a store narrows but never widens:
- the store's quiet window (`QuietHours`, 21:00–09:00 by default), for NEWSLETTER SMS, and for
  TRANSACTIONAL ones only when the store says so;
- the recipient country's rules for marketing SMS (`COUNTRY_RULES`, NEWSLETTER only): days, public
  holidays and a daily window.

The person's time is the time zone of the number (`phonenumbers.timezone`). A number that spans zones
(a mobile of Spain: the Peninsula and the Canaries; of the US, Russia, Australia) must be allowed in
every one of them at once. A number with no known zone takes the store's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import timezone as phone_zones

from .enums import SmsType
from .phones import country_of

__all__ = [
    "COUNTRY_RULES",
    "DEFAULT_QUIET_HOURS",
    "SEARCH_DAYS",
    "CountryRule",
    "QuietHours",
    "held_until",
    "recipient_zones",
]

_MIDNIGHT = time(0)
_END_OF_DAY = time(23, 59, 59, 999_999)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A store's quiet window in the recipient's local time: [start, end), which may wrap midnight.
    start == end: no window."""

    start: time = time(21, 0)
    end: time = time(9, 0)
    transactional_exempt: bool = True

    @property
    def off(self) -> bool:
        """True when the store has no window."""
        return self.start == self.end

    def quiet_at(self, t: time) -> bool:
        """True when `t` (local) lies in the window."""
        if self.start < self.end:
            return self.start <= t < self.end
        return (t >= self.start or t < self.end) and not self.off


DEFAULT_QUIET_HOURS = QuietHours()


@dataclass(frozen=True, slots=True)
class CountryRule:
    """When marketing SMS may reach a number of one country, in its local time: on `days` (Monday = 0),
    not on a national public holiday when `no_public_holidays`, within [opens, closes)."""

    country: str
    days: frozenset[int]
    opens: time
    closes: time
    no_public_holidays: bool

    def open_on(self, day: date) -> bool:
        """True when marketing SMS may go on this local date at all."""
        return day.weekday() in self.days and not (self.no_public_holidays and day in _holidays(self.country, day.year))


COUNTRY_RULES: Mapping[str, CountryRule] = MappingProxyType(
    {
        # France. No statute sets hours for SMS itself; CNIL (cnil.fr, "La prospection commerciale par
        # SMS-MMS") sets consent only. The strictest published window is that of telephone prospecting,
        # décret n° 2022-1313 du 13 octobre 2022 (Code de la consommation, art. D. 223-8): 10:00–13:00 and
        # 14:00–20:00, Monday to Friday, never on a public holiday. The SMS industry's code (FFTélécoms /
        # AF2M, "Recommandations SMS+") allows Monday–Saturday and excludes Sundays and public holidays.
        # We keep Monday–Saturday, no public holiday (the `holidays` package, national list), 10:00–20:00.
        "FR": CountryRule("FR", frozenset(range(6)), time(10), time(20), no_public_holidays=True),
        # United States. TCPA, 47 CFR § 64.1200(c)(1): no telephone solicitation before 8 a.m. or after
        # 9 p.m. local time at the called party's location; the FCC applies it to text messages. Every
        # day; holidays are not excluded by the rule.
        "US": CountryRule("US", frozenset(range(7)), time(8), time(21), no_public_holidays=False),
    }
)

SEARCH_DAYS = 16  # how far ahead an opening is looked for (a window closed longer is a mistake)


@lru_cache(maxsize=64)
def _holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year))


@cache
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


# The zones of a number depend on its country code and leading digits (a geographic prefix, or the
# range that makes it a mobile): numbers sharing the first 7 digits share them. Parsing costs ~25 µs,
# a cached prefix well under 1 µs; a newsletter asks once per recipient, twice (made, handed over).
_PREFIX = 8  # "+" and 7 digits


@lru_cache(maxsize=65_536)
def _zones_of_prefix(phone: str) -> tuple[ZoneInfo, ...]:
    try:
        names = phone_zones.time_zones_for_number(phonenumbers.parse(phone))
    except phonenumbers.NumberParseException:
        return ()
    zones = (_zone(n) for n in names if n != phone_zones.UNKNOWN_TIMEZONE)
    return tuple(z for z in zones if z is not None)


_by_prefix: dict[str, str] = {}


def recipient_zones(phone_e164: str, store_zone: ZoneInfo) -> tuple[ZoneInfo, ...]:
    """The time zones of the number; the store's when none is known."""
    prefix = phone_e164[:_PREFIX]
    if len(_by_prefix) > 65_536:
        _by_prefix.clear()
    first = _by_prefix.setdefault(prefix, phone_e164)  # the number that stands for its prefix
    return _zones_of_prefix(first) or (store_zone,)


def _allowed_spans(day: date, window: QuietHours | None, rule: CountryRule | None) -> list[tuple[time, time]]:
    """The local [from, to) spans of `day` when an SMS may go (`to` = _END_OF_DAY: until midnight)."""
    spans = [(_MIDNIGHT, _END_OF_DAY)]
    if rule is not None:
        if not rule.open_on(day):
            return []
        spans = [(rule.opens, rule.closes)]
    if window is None or window.off:
        return spans
    if window.start < window.end:
        quiet = [(window.start, window.end)]
    else:
        quiet = [(window.start, _END_OF_DAY), (_MIDNIGHT, window.end)]
    for q_from, q_to in quiet:
        cut: list[tuple[time, time]] = []
        for a, b in spans:
            if q_to <= a or q_from >= b:  # no overlap
                cut.append((a, b))
                continue
            if a < q_from:
                cut.append((a, q_from))
            if q_to < b:
                cut.append((q_to, b))
        spans = cut
    return sorted(spans)


def _allowed_at(local: datetime, window: QuietHours | None, rule: CountryRule | None) -> bool:
    t = local.time()
    if window is not None and window.quiet_at(t):
        return False
    return rule is None or (rule.opens <= t < rule.closes and rule.open_on(local.date()))


def _next_open(at: datetime, zone: ZoneInfo, window: QuietHours | None, rule: CountryRule | None) -> datetime | None:
    """The earliest instant >= `at` (UTC) when an SMS may go in `zone`; None within SEARCH_DAYS."""
    local = at.astimezone(zone)
    if _allowed_at(local, window, rule):
        return at
    for offset in range(SEARCH_DAYS + 1):
        day = local.date() + timedelta(days=offset)
        for start, end in _allowed_spans(day, window, rule):
            if offset == 0 and end <= local.time():
                continue
            # A start on a day whose clock jumps (DST) is read with fold=0: a time the jump skips
            # lands just after it, as a clock would show it.
            opening = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
            if opening >= at:
                return opening
    return None


def held_until(
    phone_e164: str, sms_type: SmsType, at: datetime, quiet: QuietHours, store_zone: ZoneInfo
) -> datetime | None:
    """None when an SMS of this type to this number may be handed to the provider at `at` (aware,
    UTC); else the earliest instant after it when it may: outside the store's window (TRANSACTIONAL
    only if not exempt) and, for a NEWSLETTER, within the number's country rule, in every zone of the
    number at once. Should the zones share no opening within SEARCH_DAYS, the store's zone alone
    decides; should that find none either, the SMS waits a day and is judged again."""
    newsletter = sms_type is SmsType.NEWSLETTER
    window = quiet if (newsletter or not quiet.transactional_exempt) and not quiet.off else None
    rule = COUNTRY_RULES.get(country_of(phone_e164)) if newsletter else None
    if window is None and rule is None:
        return None
    zones = recipient_zones(phone_e164, store_zone)
    if all(_allowed_at(at.astimezone(z), window, rule) for z in zones):
        return None
    t: datetime | None = at
    for _ in range(8 * len(zones) + 8):  # each round moves t to a later opening, or ends
        assert t is not None
        moved = False
        for zone in zones:
            nxt = _next_open(t, zone, window, rule)
            if nxt is None:
                t = None
                break
            if nxt > t:
                t, moved = nxt, True
        if t is None or not moved:
            break
    else:
        t = None
    if t is None:  # no common opening: the store's zone decides
        t = _next_open(at, store_zone, window, rule) or at + timedelta(days=1)
    return None if t == at else t
