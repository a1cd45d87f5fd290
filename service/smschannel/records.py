"""`@record`: the immutable records made once per row of an import, a broadcast or a newsletter.

To the type checker a record is a frozen dataclass: assigning a field is an error that `make lint`
reports. At run time it is a plain slots dataclass, because a frozen dataclass's `__init__` sets each
field through `object.__setattr__`: a Contact took 1.06 µs to make against 0.31, and an imported row
makes a Contact and an Activity (measured: the import's database thread 6.1 -> 4.3 µs of Python a row).
Records hash by their fields like frozen dataclasses (so one with a dict field cannot be hashed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

__all__ = ["record"]

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Make `cls` a record (see the module)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
