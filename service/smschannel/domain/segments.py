"""Encoding, length and segment count of an SMS text (SPEC §4).

GSM-7 when every character is in the GSM 03.38 basic or extension table (extension characters cost
two units: the escape and the character), else UCS-2 (UTF-16 code units: characters outside the BMP
cost two). One part holds 160 GSM-7 units or 70 UCS-2 units; a split message holds 153 or 67 per part
(the rest is the concatenation header), and a two-unit character is never split across parts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .enums import SmsEncoding

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "TextSize", "measure"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

_SINGLE = {SmsEncoding.GSM7: 160, SmsEncoding.UCS2: 70}
_MULTI = {SmsEncoding.GSM7: 153, SmsEncoding.UCS2: 67}


@dataclass(frozen=True, slots=True)
class TextSize:
    """What a text costs."""

    encoding: SmsEncoding
    length: int  # encoded units
    segments: int


def _widths(text: str) -> tuple[SmsEncoding, list[int]]:
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return SmsEncoding.GSM7, [2 if c in GSM7_EXTENSION else 1 for c in text]
    return SmsEncoding.UCS2, [2 if ord(c) > 0xFFFF else 1 for c in text]


@functools.lru_cache(maxsize=4096)  # a newsletter measures the same few texts for every recipient
def measure(text: str) -> TextSize:
    """Encoding, length in units and segments of `text` as it will be delivered."""
    encoding, widths = _widths(text)
    length = sum(widths)
    if length == 0:
        return TextSize(encoding, 0, 0)
    if length <= _SINGLE[encoding]:
        return TextSize(encoding, length, 1)
    capacity = _MULTI[encoding]
    segments, used = 1, 0
    for width in widths:
        if used + width > capacity:  # never split a two-unit character
            segments, used = segments + 1, 0
        used += width
    return TextSize(encoding, length, segments)
