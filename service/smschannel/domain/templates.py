"""SMS texts with `{{variables}}`: extraction, validation, single-pass rendering (SPEC §4–§6)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..errors import InvalidArgument, echo

__all__ = [
    "UNSUBSCRIBE",
    "UNSUBSCRIBE_MARKER",
    "has_unsubscribe_marker",
    "marker_replacement",
    "render",
    "validate_text",
    "variables_of",
]

UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBE_MARKER = "{{unsubscribe}}"
MAX_TEXT = 1600  # 10 GSM-7 parts; longer texts are refused rather than silently costly

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_BRACES = re.compile(r"\{\{(.*?)\}\}")


def variables_of(text: str) -> list[str]:
    """The variable names of a text, in order of first appearance (`unsubscribe` included)."""
    seen: dict[str, None] = {}
    for m in _VARIABLE.finditer(text):
        seen.setdefault(m.group(1))
    return list(seen)


def validate_text(field: str, text: str) -> str:
    """A text must be non-empty, not too long, and every `{{...}}` must be a variable name."""
    if not text.strip():
        raise InvalidArgument(field, "required: the SMS text")
    if len(text) > MAX_TEXT:
        raise InvalidArgument(field, f"at most {MAX_TEXT} characters")
    for m in _BRACES.finditer(text):
        if not _VARIABLE.fullmatch(m.group(0)):
            raise InvalidArgument(field, f"{echo(m.group(0))} is not a variable: names are [A-Za-z_][A-Za-z0-9_]*")
    return text


def has_unsubscribe_marker(text: str, literals: Mapping[str, str]) -> bool:
    """True when the text carries `{{unsubscribe}}` itself, or a variable mapped to that literal."""
    return any(
        name == UNSUBSCRIBE or literals.get(name, "").strip() == UNSUBSCRIBE_MARKER for name in variables_of(text)
    )


def render(text: str, value_of: Callable[[str], str]) -> str:
    """Replace every variable once (a substituted value is never expanded again). The reserved
    `{{unsubscribe}}` stays as written: Instasent replaces it per destination country."""

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1)
        return UNSUBSCRIBE_MARKER if name == UNSUBSCRIBE else value_of(name)

    return _VARIABLE.sub(substitute, text)


def marker_replacement(country: str) -> str:
    """What Instasent puts in place of the marker for a destination country (SPEC §6)."""
    if country in ("US", "CA"):
        return "Stop to opt-out"
    if country == "FR":
        return "STOP au #sms#"
    return "nosms.to/xxxxxxx"
