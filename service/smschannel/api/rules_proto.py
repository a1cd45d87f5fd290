"""A store's sending rules (time zone, quiet hours, frequency cap, part prices) ↔ proto."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time, timedelta

from google.type import money_pb2, timeofday_pb2

from ..domain.channel import FrequencyCap, SendingRules, validate_time_zone
from ..domain.phones import country_of, normalize_country
from ..domain.quiet_hours import QuietHours, quiet_hours_problem
from ..errors import FieldViolation, InvalidArgument, echo
from ..v1 import sms_channel_service_pb2 as pb
from .convert import duration_from_proto

__all__ = ["estimated_cost", "fill_rules", "money", "populated_rules", "rule_changes"]

NANOS = 1_000_000_000
MAX_PRICES = 300
_CURRENCY = re.compile(r"[A-Z]{3}")


def _time_of_day(t: time) -> timeofday_pb2.TimeOfDay:
    return timeofday_pb2.TimeOfDay(hours=t.hour, minutes=t.minute, seconds=t.second)


def money(currency: str, nanos: int) -> money_pb2.Money:
    """google.type.Money of `nanos` billionths of the currency's unit."""
    units, rest = divmod(nanos, NANOS)
    return money_pb2.Money(currency_code=currency, units=units, nanos=rest)


def estimated_cost(rules: SendingRules, recipient: str, parts: int) -> money_pb2.Money | None:
    """`parts` at the store's price for the recipient's country, or None when it sets none."""
    price = rules.price_of(country_of(recipient)) if recipient else None
    return None if price is None else money(rules.currency, price * parts)


def fill_rules(out: pb.SmsChannelConfig, rules: SendingRules) -> None:
    """The rules' fields of a config answer (quiet hours always: the defaults when the store set none)."""
    out.time_zone = rules.time_zone
    q = rules.quiet_hours
    out.quiet_hours.CopyFrom(
        pb.QuietHours(
            start=_time_of_day(q.start), end=_time_of_day(q.end), include_transactional=not q.transactional_exempt
        )
    )
    if rules.frequency_cap is not None:
        out.frequency_cap.max_sms = rules.frequency_cap.max_sms
        out.frequency_cap.period.FromTimedelta(rules.frequency_cap.period)
    for country, nanos in sorted(rules.part_prices.items()):
        out.part_prices.append(pb.PartPrice(country=country, price=money(rules.currency, nanos)))


def _time_from_proto(field: str, t: timeofday_pb2.TimeOfDay) -> time:
    if not (0 <= t.hours <= 23 and 0 <= t.minutes <= 59 and 0 <= t.seconds <= 59 and t.nanos == 0):
        raise InvalidArgument(field, "a time of day from 00:00:00 to 23:59:59, in whole seconds")
    return time(t.hours, t.minutes, t.seconds)


def _quiet_hours(field: str, q: pb.QuietHours) -> QuietHours:
    violations: list[FieldViolation] = []
    times: list[time] = []
    for name in ("start", "end"):
        try:
            times.append(_time_from_proto(f"{field}.{name}", getattr(q, name)))
        except InvalidArgument as e:
            violations.extend(e.violations)
    if violations:
        raise InvalidArgument.of(violations)
    quiet = QuietHours(times[0], times[1], transactional_exempt=not q.include_transactional)
    if (problem := quiet_hours_problem(quiet)) is not None:
        raise InvalidArgument(field, problem)
    return quiet


def _frequency_cap(field: str, msg: pb.SmsChannelConfig) -> FrequencyCap:
    if not msg.HasField("frequency_cap"):
        return FrequencyCap(0, timedelta(0))  # the path named, the field unset: no cap
    cap = msg.frequency_cap
    if not 1 <= cap.max_sms <= FrequencyCap.MAX_SMS:
        raise InvalidArgument(f"{field}.max_sms", f"from 1 to {FrequencyCap.MAX_SMS} (unset the cap for none)")
    period = duration_from_proto(f"{field}.period", cap.period, FrequencyCap.LONGEST)
    if period < FrequencyCap.SHORTEST:
        raise InvalidArgument(f"{field}.period", "from 1 hour to 366 days")
    return FrequencyCap(cap.max_sms, period)


def _part_prices(field: str, prices: list[pb.PartPrice]) -> tuple[str, Mapping[str, int]]:
    if len(prices) > MAX_PRICES:
        raise InvalidArgument(field, f"at most {MAX_PRICES} prices")
    currencies = {p.price.currency_code for p in prices}
    violations: list[FieldViolation] = []
    nanos: dict[str, int] = {}
    for i, p in enumerate(prices):
        at = f"{field}[{i}]"
        try:
            country = normalize_country(f"{at}.country", p.country)
        except InvalidArgument as e:
            violations.extend(e.violations)
            continue
        price = p.price
        if not _CURRENCY.fullmatch(price.currency_code):
            violations.append(FieldViolation(f"{at}.price.currency_code", "an ISO 4217 code such as EUR"))
        elif len(currencies) > 1:
            violations.append(FieldViolation(f"{at}.price.currency_code", "every price in one currency"))
        if price.units < 0 or not 0 <= price.nanos < NANOS or price.units > 1_000_000:
            violations.append(FieldViolation(f"{at}.price", "from 0 to 1,000,000 units, nanos 0 to 999,999,999"))
        if country in nanos:
            violations.append(FieldViolation(f"{at}.country", f"{echo(country or 'every other country')} twice"))
        nanos[country] = price.units * NANOS + price.nanos
    if violations:
        raise InvalidArgument.of(violations)
    return (currencies.pop() if currencies else ""), nanos


RULE_FIELDS = ("time_zone", "quiet_hours", "frequency_cap", "part_prices")


def populated_rules(msg: pb.SmsChannelConfig) -> set[str]:
    """The rule fields an update with an empty mask sets (AIP-134: the populated ones)."""
    present = {f for f in ("quiet_hours", "frequency_cap") if msg.HasField(f)}
    return present | ({"time_zone"} if msg.time_zone else set()) | ({"part_prices"} if msg.part_prices else set())


def rule_changes(msg: pb.SmsChannelConfig, path: str, prefix: str) -> object:
    """The new value of one rule field named by the mask (InvalidArgument naming the field)."""
    field = prefix + path
    if path == "time_zone":
        return validate_time_zone(field, msg.time_zone.strip()) if msg.time_zone.strip() else ""
    if path == "quiet_hours":
        return _quiet_hours(field, msg.quiet_hours)
    if path == "frequency_cap":
        return _frequency_cap(field, msg)
    return _part_prices(field, list(msg.part_prices))
