"""Units of work: one transaction over several aggregates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ..domain.messages import Message
from ..domain.workflows import Run
from .contacts import Mutation, Touched
from .messages import MessageUpdate
from .workflows import BroadcastPage, PageSends, RunUpdate

__all__ = ["ContactChanges", "MessageChanges", "ProviderEventLog", "RunChanges", "UnitOfWork"]


class ProviderEventLog(Protocol):
    """The provider events applied so far, so that a repeated callback changes nothing."""

    async def record(self, store_id: str, message_id: str, status: str, time: datetime) -> bool:
        """Record that (store, message id, status) was applied; False if it was recorded before."""
        ...


class MessageChanges(Protocol):
    """Message writes inside a unit of work."""

    async def add(self, messages: Sequence[Message]) -> list[Message]:
        """As MessageRepository.add, inside the unit of work's transaction."""
        ...

    async def add_page(self, sends: PageSends) -> list[Message]:
        """The messages of a page of sends (see PageSends) whose request ids are new, for the runs
        that are new; returns the QUEUED ones stored (for the outbox)."""
        ...

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        """As MessageRepository.update, inside the unit of work's transaction."""
        ...


class ContactChanges(Protocol):
    """Contact writes inside a unit of work."""

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[Touched]:
        """As ContactRepository.apply_by_phone, inside the unit of work's transaction."""
        ...


class RunChanges(Protocol):
    """Workflow run writes inside a unit of work."""

    async def page(self, page: BroadcastPage) -> bool:
        """Advance a broadcast's cursor past `page`, only while the workflow is still ACTIVE at the page's
        version (its error is cleared: it moved); False, and nothing written, otherwise."""
        ...

    async def active(self, page: BroadcastPage) -> bool:
        """Whether the page's workflow is still ACTIVE at the page's version (nothing written)."""
        ...

    async def add(self, runs: Sequence[RunUpdate]) -> list[Run]:
        """Store new runs with the steps they already took; ids and request ids already used are
        skipped, with their steps. Returns the runs stored."""
        ...

    async def add_page(self, sends: PageSends) -> None:
        """The new runs of a page of sends and their steps (see PageSends), once its messages are in."""
        ...

    async def live(self, runs: Sequence[Run]) -> list[bool]:
        """Whether each run is still as it was read: RUNNING or WAITING at the same step (not paused,
        failed, deleted, or moved on since: by this same write landing twice)."""
        ...

    async def new(self, runs: Sequence[Run]) -> list[bool]:
        """Whether each run is new: its id and request id unused (as `add` judges it)."""
        ...

    async def save(self, updates: Sequence[RunUpdate]) -> None:
        """Each run's new position and the steps it took (runs found `live` in this unit of work)."""
        ...


class UnitOfWork(Protocol):
    """One transaction over several aggregates, for a use case that must change them together (a
    provider event: its record, its message and the contacts of its phone; a workflow round or a
    broadcast page: its runs, their steps and the messages they send): the use case says what it
    changes, instead of one repository writing another's aggregate behind its back.

    A unit of work must await nothing but these writes (no I/O, no sleep): one backend runs it as one
    synchronous step on its database thread, another inside one database transaction, which it runs
    again from the start when the database reports a conflict: so it must change nothing outside the
    transaction (its inputs included) before it returns."""

    @property
    def provider_events(self) -> ProviderEventLog:
        """Which provider events were applied."""
        ...

    @property
    def messages(self) -> MessageChanges:
        """Message writes."""
        ...

    @property
    def contacts(self) -> ContactChanges:
        """Contact writes."""
        ...

    @property
    def runs(self) -> RunChanges:
        """Workflow run writes."""
        ...
