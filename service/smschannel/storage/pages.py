"""A listed item with its position: what a page token resumes after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Positioned"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Positioned(Generic[T]):
    """An item of a listing and its position in it (the storage's insertion order)."""

    position: int
    item: T
