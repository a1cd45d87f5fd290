"""Encoding, length and segments (SPEC §4): the boundaries, as a table."""

from __future__ import annotations

import pytest

from smschannel.domain.analysis import analyze
from smschannel.domain.enums import SmsEncoding
from smschannel.domain.segments import measure

GSM, UCS = SmsEncoding.GSM7, SmsEncoding.UCS2


@pytest.mark.parametrize(
    ("text", "encoding", "length", "segments"),
    [
        ("", GSM, 0, 0),
        ("Hello", GSM, 5, 1),
        ("a" * 160, GSM, 160, 1),  # one part holds 160
        ("a" * 161, GSM, 161, 2),  # split: 153 per part
        ("a" * 306, GSM, 306, 2),
        ("a" * 307, GSM, 307, 3),
        ("€", GSM, 2, 1),  # extension characters cost two units
        ("^{}\\[~]|€\f", GSM, 20, 1),
        ("€" * 80, GSM, 160, 1),
        ("€" * 81, GSM, 162, 2),
        ("a" * 152 + "€" + "a", GSM, 155, 1),  # 155 units still fit one 160-unit part
        ("a" * 159 + "€", GSM, 161, 2),
        ("àéìòù ÄÖÑÜ äöñü ¿¡ £$¥ §", GSM, 24, 1),  # accents of the basic table stay GSM-7
        ("á", UCS, 1, 1),  # not in GSM 03.38: UCS-2
        ("ç", UCS, 1, 1),  # only capital Ç is in the basic table
        ("Ç", GSM, 1, 1),
        ("ñ" * 200 + "ó", UCS, 201, 3),  # 3 × 67
        ("é" * 70 + "á", UCS, 71, 2),
        ("á" * 70, UCS, 70, 1),  # one part holds 70
        ("á" * 71, UCS, 71, 2),  # split: 67 per part
        ("á" * 134, UCS, 134, 2),
        ("á" * 135, UCS, 135, 3),
        ("😀", UCS, 2, 1),  # outside the BMP: a surrogate pair, two units
        ("😀" * 35, UCS, 70, 1),
        ("😀" * 36, UCS, 72, 2),
        ("á" * 66 + "😀" + "á", UCS, 69, 1),
        ("á" * 66 + "😀" + "á" * 3, UCS, 71, 2),  # the pair would straddle 67: it moves to part two
    ],
)
def test_measure(text: str, encoding: SmsEncoding, length: int, segments: int) -> None:
    size = measure(text)
    assert (size.encoding, size.length, size.segments) == (encoding, length, segments)


def test_a_two_unit_character_at_the_gsm_part_boundary_moves_to_the_next_part() -> None:
    # 152 units then an escape pair: 154 > 153, so the pair starts part two; 161 units in 2 parts.
    assert measure("a" * 152 + "€" + "a" * 7).segments == 2
    # 153 * 2 = 306 units would fit two parts exactly, but a pair at 153/154 forces a third.
    assert measure("a" * 152 + "€" + "a" * 152).segments == 3


def test_analysis_per_country_uses_the_delivered_replacement() -> None:
    text = "a" * 140 + " {{unsubscribe}}"
    analysis = analyze(text, ["US", "FR", "ES"])
    by_country = {c.country: c for c in analysis.countries}
    assert analysis.has_marker
    assert by_country["US"].replacement == "Stop to opt-out"
    assert by_country["US"].size.length == 141 + 15
    assert by_country["FR"].size.length == 141 + 13
    assert by_country["ES"].size.length == 141 + 16
    assert by_country["ES"].size.segments == 1
    assert analyze("a" * 150 + " {{unsubscribe}}", ["ES"]).countries[0].size.segments == 2


def test_no_marker_no_countries() -> None:
    assert analyze("Hi {{first_name}}", []).countries == []
