"""@record: built like a plain dataclass, hashed and compared like the frozen one it stands for."""

from __future__ import annotations

import pytest

from smschannel.domain.contacts import Contact
from smschannel.storage import ContactKey


def test_records_compare_and_hash_by_their_fields() -> None:
    assert ContactKey("c1", "a@x.co") == ContactKey("c1", "a@x.co")
    assert len({ContactKey("c1"), ContactKey("c1"), ContactKey(email="a@x.co")}) == 2
    with pytest.raises(TypeError):  # a dict field, as with frozen=True
        hash(Contact("s1", "c1"))
