"""JSON columns (orjson): what the json module stored before reads back the same, and what is
stored now is plain JSON that any reader parses to the same value."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from smschannel.domain.enums import MobilePhoneStatus
from smschannel.storage.sqlite import jsoncol

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_round_trip_and_json_module_agree(value: Any) -> None:
    text = jsoncol.dumps(value)
    assert jsoncol.loads(text) == value
    assert json.loads(text) == value
    assert jsoncol.loads(json.dumps(value)) == value  # rows written before orjson


def test_text_is_compact_utf8_and_odd_values_keep_their_old_form() -> None:
    when = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    value = {"nome": "João ☺", "status": MobilePhoneStatus.ACTIVE, "at": when, 7: "int key"}
    assert jsoncol.dumps(value) == '{"nome":"João ☺","status":1,"at":"2026-11-25 17:00:00+00:00","7":"int key"}'
