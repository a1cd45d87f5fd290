"""A small AIP-160 filter subset: `field op value` terms joined by AND.

Values are bare words (`ACTIVE`, `42`) or double-quoted strings (`"a b"`, with `\\"` escapes).
Each list method says which fields and operators it accepts; everything else is INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument, echo

__all__ = ["Term", "parse_filter"]

_TOKEN = re.compile(
    r'\s*(?:(?P<q>"(?:[^"\\]|\\.)*")|(?P<op>>=|<=|!=|=|<|>)|(?P<w>[^\s"=<>!]+))',
)


@dataclass(frozen=True, slots=True)
class Term:
    """One `field op value` comparison."""

    field: str
    op: str
    value: str


def parse_filter(text: str, allowed: dict[str, set[str]], field: str = "filter") -> list[Term]:
    """Parse `text`; `allowed` maps each filterable field to its operators."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidArgument(field, f"cannot parse the filter near {text[pos : pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "q":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    terms: list[Term] = []
    i = 0
    while i < len(tokens):
        if terms:
            if tokens[i] != ("w", "AND"):
                raise InvalidArgument(field, "terms must be joined by AND (OR and NOT are not supported)")
            i += 1
        if len(tokens) - i < 3:
            raise InvalidArgument(field, "each term is `field operator value`")
        (k1, name), (k2, op), (k3, value) = tokens[i : i + 3]
        if k1 != "w" or k2 != "op" or k3 not in ("w", "q"):
            raise InvalidArgument(field, "each term is `field operator value`")
        if name not in allowed:
            raise InvalidArgument(field, f"cannot filter on {echo(name)}; filterable: {', '.join(sorted(allowed))}")
        if op not in allowed[name]:
            raise InvalidArgument(field, f"{echo(name)} supports {' '.join(sorted(allowed[name]))}, not {echo(op)}")
        terms.append(Term(name, op, value))
        i += 3
    return terms
