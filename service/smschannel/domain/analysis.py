"""AnalyzeSmsText: a text's cost as written and, with the marker, per destination country."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .segments import TextSize, measure
from .templates import UNSUBSCRIBE, UNSUBSCRIBE_MARKER, marker_replacement, render, variables_of

__all__ = ["Analysis", "CountryCost", "analyze"]

# One country per replacement when none is asked for: the three lengths Instasent uses.
_DEFAULT_COUNTRIES = ("US", "FR", "")


@dataclass(frozen=True, slots=True)
class CountryCost:
    """The text as delivered to one country."""

    country: str
    replacement: str
    size: TextSize


@dataclass(frozen=True, slots=True)
class Analysis:
    """A text's size as written, and per country when it carries the unsubscribe marker."""

    size: TextSize
    has_marker: bool
    countries: list[CountryCost]


def analyze(text: str, countries: Sequence[str]) -> Analysis:
    """Variables other than the marker are measured as written (their values are not known yet)."""
    written = render(text, lambda name: "{{" + name + "}}")
    has_marker = UNSUBSCRIBE in variables_of(text)
    costs = []
    if has_marker:
        for country in countries or _DEFAULT_COUNTRIES:
            replacement = marker_replacement(country)
            costs.append(CountryCost(country, replacement, measure(written.replace(UNSUBSCRIBE_MARKER, replacement))))
    return Analysis(measure(written), has_marker, costs)
