"""Resource names: every pattern is built by names.py, and what it builds parses back to the same value."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smschannel.errors import InvalidArgument
from smschannel.names import (
    ActivityName,
    ApiKeyName,
    CallbacksName,
    ChannelConfigName,
    ContactName,
    MessageName,
    SmsContentName,
    StoreName,
    WorkflowName,
    WorkflowRunName,
)

# Each pattern, with the ids it is built from and the name it makes.
NAMES: list[tuple[type[Any], tuple[str, ...], str]] = [
    (StoreName, ("acme",), "stores/acme"),
    (ContactName, ("acme", "c1"), "stores/acme/contacts/c1"),
    (ActivityName, ("acme", "c1", "a1"), "stores/acme/contacts/c1/activities/a1"),
    (SmsContentName, ("acme", "t1"), "stores/acme/smsContents/t1"),
    (MessageName, ("acme", "m1"), "stores/acme/messages/m1"),
    (WorkflowName, ("acme", "w1"), "stores/acme/workflows/w1"),
    (WorkflowRunName, ("acme", "w1", "r1"), "stores/acme/workflows/w1/runs/r1"),
    (ApiKeyName, ("acme", "k1"), "stores/acme/apiKeys/k1"),
    (ChannelConfigName, ("acme",), "stores/acme/smsChannelConfig"),
    (CallbacksName, ("acme",), "stores/acme/callbacks"),
]


@pytest.mark.parametrize(("kind", "ids", "text"), NAMES, ids=[text for _, _, text in NAMES])
def test_a_name_is_its_pattern_and_parses_back(kind: type[Any], ids: tuple[str, ...], text: str) -> None:
    name = kind(*ids)
    assert str(name) == text
    assert kind.parse("name", text) == name


def test_the_contacts_collection_is_the_parent_of_a_contact() -> None:
    assert ContactName.collection("acme") == "stores/acme/contacts"
    assert str(ContactName("acme", "c1")).startswith(ContactName.collection("acme") + "/")


STORE_IDS = st.from_regex(r"[a-z][a-z0-9-]{0,62}", fullmatch=True)
IDS = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)


@given(kind=st.sampled_from([kind for kind, _, _ in NAMES]), data=st.data())
def test_any_valid_ids_round_trip(kind: type[Any], data: st.DataObject) -> None:
    fields = dataclasses.fields(kind)
    ids = [data.draw(STORE_IDS if f.name == "store" else IDS) for f in fields]
    name = kind(*ids)
    assert kind.parse("name", str(name)) == name


@pytest.mark.parametrize("text", ["", "stores/acme/contacts", "stores/Acme/contacts/c1", "stores/acme/contacts/c1/x"])
def test_what_is_not_the_pattern_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        ContactName.parse("contact", text)
    assert [v.field for v in e.value.violations] == ["contact"]
