"""The storage seam: one typed protocol per aggregate, each in its module (contacts, messages,
workflows, stores, channel, sms_contents), units of work over several, and the Storage that holds
them. Only implementations of it (sqlite/) contain SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from .channel import ChannelConfigRepository
from .contacts import Applied, ContactKey, ContactQuery, ContactRepository, Mutation, Outcome, Reach, Touched
from .messages import MessageQuery, MessageRepository, MessageUpdate
from .pages import Positioned
from .sms_contents import SmsContentRepository
from .stores import MetaRepository, StoreRepository
from .unit_of_work import ContactChanges, MessageChanges, ProviderEventLog, RunChanges, UnitOfWork
from .workflows import BroadcastDue, BroadcastPage, PageSends, RunUpdate, RunWithSteps, WorkflowRepository

__all__ = [
    "Applied",
    "BroadcastDue",
    "BroadcastPage",
    "ChannelConfigRepository",
    "ContactChanges",
    "ContactKey",
    "ContactQuery",
    "ContactRepository",
    "MessageChanges",
    "MessageQuery",
    "MessageRepository",
    "MessageUpdate",
    "MetaRepository",
    "Mutation",
    "Outcome",
    "PageSends",
    "Positioned",
    "ProviderEventLog",
    "Reach",
    "RunChanges",
    "RunUpdate",
    "RunWithSteps",
    "SmsContentRepository",
    "Storage",
    "StoreRepository",
    "Touched",
    "UnitOfWork",
    "WorkflowRepository",
]

T = TypeVar("T")


class Storage(Protocol):
    """Everything the service keeps."""

    @property
    def meta(self) -> MetaRepository:
        """Server-wide settings."""
        ...

    @property
    def stores(self) -> StoreRepository:
        """Stores and keys."""
        ...

    @property
    def contacts(self) -> ContactRepository:
        """Contacts and activities."""
        ...

    @property
    def channel_configs(self) -> ChannelConfigRepository:
        """Channel configs."""
        ...

    @property
    def sms_contents(self) -> SmsContentRepository:
        """SMS contents."""
        ...

    @property
    def messages(self) -> MessageRepository:
        """Messages."""
        ...

    @property
    def workflows(self) -> WorkflowRepository:
        """Workflows and runs."""
        ...

    async def atomically(self, work: Callable[[UnitOfWork], Awaitable[T]], size: int) -> T:
        """Run `work` as one transaction: all its writes land, or none. `size`: about how many rows it
        writes (a backend may run small ones differently from big ones)."""
        ...

    def callers_waited(self, within: float) -> bool:
        """Whether a caller (an RPC, a callback: not background work, storage/priority.py) had to wait
        to write in the last `within` seconds. Background work then writes in smaller transactions."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
