"""The storage seam: one typed protocol per aggregate. Only implementations of it contain SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from ..domain.channel import ChannelConfig
from ..domain.contacts import Activity, Contact
from ..domain.enums import ActivityType, MessageStatus, MobilePhoneStatus, SmsSubscriptionStatus, SmsType
from ..domain.messages import Message, SmsContent
from ..domain.stores import ApiKey, Store
from ..domain.workflows import Run, RunState, RunStep, Workflow, WorkflowState
from ..errors import DomainError
from ..records import record

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
    "ProviderEventLog",
    "Reach",
    "RunUpdate",
    "SmsContentRepository",
    "Storage",
    "StoreRepository",
    "UnitOfWork",
    "WorkflowRepository",
]

T = TypeVar("T")

# Given the current contact (None when none matched), the new contact and its activities.
# It may raise a DomainError to refuse the change.
Mutation = Callable[[Contact | None], tuple[Contact, list[Activity]]]


@record
class Applied:
    """A change that was applied (or matched and changed nothing)."""

    kind: Literal["created", "updated", "unchanged"]
    contact: Contact


Outcome = Applied | DomainError


@record
class Reach:
    """A contact's phone and statuses as they are now: what eligibility reads at each hand-over."""

    contact_id: str
    mobile_phone: str
    mobile_phone_status: MobilePhoneStatus
    sms_subscription_status: SmsSubscriptionStatus


@record
class ContactKey:
    """Which contact a change is for: by id when given, else by email (None/"" = not used)."""

    contact_id: str = ""
    email: str = ""


@dataclass(frozen=True, slots=True)
class ContactQuery:
    """ListContacts filters (None = any)."""

    mobile_phone_status: MobilePhoneStatus | None = None
    sms_subscription_status: SmsSubscriptionStatus | None = None
    mobile_phone: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """ListMessages filters (None = any); `since` inclusive, `until` exclusive."""

    contact_id: str | None = None
    workflow_id: str | None = None
    sms_content_id: str | None = None
    type: SmsType | None = None
    status: MessageStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


@record
class MessageUpdate:
    """A status change of one message, applied only while it is in one of the `expect` statuses."""

    store_id: str
    message_id: str
    status: MessageStatus
    expect: frozenset[MessageStatus]
    time: datetime
    reason: str = ""
    provider_id: str | None = None
    send_time: datetime | None = None
    delivery_time: datetime | None = None
    next_attempt_time: datetime | None = None
    attempted: bool = False
    activity: Activity | None = None  # recorded only if the message changed
    # The contact's number changed while the message waited: it goes to, and records, the new one.
    recipient: str | None = None
    segments: int | None = None


@dataclass(frozen=True, slots=True)
class BroadcastDue:
    """A broadcast still turning contacts into runs: its workflow's key and version, and its cursor."""

    store_id: str
    workflow_id: str
    version: int
    after: int


@record
class BroadcastPage:
    """A broadcast's page to record with its runs: the cursor after it, and whether it was the last.
    It is recorded only while the workflow is still ACTIVE at `version`."""

    store_id: str
    workflow_id: str
    version: int
    after: int
    last: bool


@record
class RunUpdate:
    """A run's new position after a round, with the steps it took."""

    run: Run
    steps: tuple[RunStep, ...] = ()


class MetaRepository(Protocol):
    """Server-wide settings (e.g. the hash of a generated admin key)."""

    async def get(self, key: str) -> str | None:
        """The value, or None."""
        ...

    async def put_if_absent(self, key: str, value: str) -> str:
        """Store `value` unless a value exists; return the value that is stored now."""
        ...


class StoreRepository(Protocol):
    """Stores and API keys."""

    async def create(self, store: Store, first_key: ApiKey) -> None:
        """Create a store with its first key; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str) -> Store | None:
        """The store, or None."""
        ...

    async def add_api_key(self, key: ApiKey) -> None:
        """Add a key to an existing store."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, or None."""
        ...


class ContactRepository(Protocol):
    """Contacts and their activities. Every write stores the contact and its activities atomically."""

    async def get(self, store_id: str, contact_id: str) -> Contact | None:
        """The contact, or None."""
        ...

    async def page(self, store_id: str, query: ContactQuery, after: int, limit: int) -> list[tuple[int, Contact]]:
        """Up to `limit` matching contacts with a position greater than `after`, oldest first."""
        ...

    async def reach(self, store_id: str, contact_ids: Collection[str]) -> dict[str, Reach]:
        """The phone and statuses of these contacts now, by id (a deleted contact is absent)."""
        ...

    async def apply(self, store_id: str, changes: Sequence[tuple[ContactKey, Mutation]]) -> list[Outcome]:
        """Apply each change to the contact its key finds, in order, in one transaction.

        A change that raises a DomainError (or would give an email to a second contact) is refused
        alone: its outcome is the error and the others still apply."""
        ...

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[tuple[Contact, bool]]:
        """Apply `mutation` to every contact with this phone; each contact and whether it changed."""
        ...

    async def delete(self, store_id: str, contact_id: str, etag: str) -> None:
        """Delete a contact and its activities; NotFound, or Aborted when `etag` is set and stale."""
        ...

    async def list_activities(
        self, store_id: str, contact_id: str, types: set[ActivityType] | None, before: int | None, limit: int
    ) -> list[tuple[int, Activity]]:
        """Up to `limit` activities of a contact older than position `before`, newest first."""
        ...


class ChannelConfigRepository(Protocol):
    """The singleton channel config of each store."""

    async def get(self, store_id: str) -> ChannelConfig | None:
        """The config, or None when never saved."""
        ...

    async def update(self, store_id: str, change: Callable[[ChannelConfig | None], ChannelConfig]) -> ChannelConfig:
        """Read, change and write the config atomically."""
        ...


class SmsContentRepository(Protocol):
    """SMS contents."""

    async def create(self, content: SmsContent) -> None:
        """Store a new content; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str, content_id: str) -> SmsContent | None:
        """The content, or None."""
        ...

    async def page(self, store_id: str, after: int, limit: int) -> list[tuple[int, SmsContent]]:
        """Contents after position `after`, oldest first."""
        ...

    async def update(self, content: SmsContent, expected_version: int) -> None:
        """Replace a content still at `expected_version`, else Aborted."""
        ...

    async def delete(self, store_id: str, content_id: str, etag: str) -> None:
        """Delete a content; NotFound, or Aborted on a stale etag."""
        ...


class MessageRepository(Protocol):
    """The message log, which is also the outbox (QUEUED messages)."""

    async def add(self, messages: Sequence[Message]) -> list[Message]:
        """Store messages; one whose request id is known returns the first message instead."""
        ...

    async def get(self, store_id: str, message_id: str) -> Message | None:
        """The message, or None."""
        ...

    async def get_many(self, store_id: str, message_ids: Collection[str]) -> dict[str, Message]:
        """The messages with these ids, by id (absent when unknown)."""
        ...

    async def find_by_provider_ids(self, store_id: str, provider_ids: Collection[str]) -> dict[str, Message]:
        """The messages with these provider ids, by provider id (absent when unknown)."""
        ...

    async def find_by_request(self, store_id: str, request_id: str) -> Message | None:
        """The message created by this request id, or None."""
        ...

    async def page(
        self, store_id: str, query: MessageQuery, before: int | None, limit: int
    ) -> list[tuple[int, Message]]:
        """Matching messages older than position `before`, newest first."""
        ...

    async def due(self, now: datetime, limit: int) -> list[Message]:
        """QUEUED messages due by `now`, oldest first."""
        ...

    async def next_due(self) -> datetime | None:
        """When the next QUEUED message is due."""
        ...

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        """Apply status changes (and the activities of those that changed) atomically; which changed."""
        ...

    async def count_received(
        self,
        store_id: str,
        contact_id: str,
        content_id: str,
        sms_type: SmsType | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        """How many SMS the contact received (SENT or DELIVERED) matching, by an indexed query."""
        ...


class WorkflowRepository(Protocol):
    """Workflows and their durable runs."""

    async def create(self, wf: Workflow) -> None:
        """Store a new workflow; AlreadyExists if the id is taken."""
        ...

    async def get(self, store_id: str, workflow_id: str) -> Workflow | None:
        """The workflow, or None."""
        ...

    async def page(
        self, store_id: str, state: WorkflowState | None, after: int, limit: int
    ) -> list[tuple[int, Workflow]]:
        """Workflows after position `after`, oldest first."""
        ...

    async def update(self, wf: Workflow, expected_version: int, now: datetime) -> None:
        """Replace a workflow still at `expected_version` (else Aborted); its runs follow its state."""
        ...

    async def delete(self, store_id: str, workflow_id: str, etag: str) -> None:
        """Delete a workflow and its runs."""
        ...

    async def active_for(self, store_id: str, trigger_kind: str, event_name: str = "") -> list[Workflow]:
        """ACTIVE workflows with this trigger."""
        ...

    async def broadcasts_due(self) -> list[BroadcastDue]:
        """ACTIVE broadcasts not yet through their contacts, with their cursor."""
        ...

    async def set_error(self, store_id: str, workflow_id: str, version: int, error: str, time: datetime) -> None:
        """Record why the engine could not move a workflow still at `version` (its etag stays)."""
        ...

    async def add_runs(self, runs: Sequence[RunUpdate], page: BroadcastPage | None = None) -> list[Run]:
        """Store new runs with the steps they already took (duplicates skipped); with a broadcast's
        `page`, advance its cursor in the same transaction, or store nothing when the workflow was
        paused, changed or deleted meanwhile."""
        ...

    async def find_run_by_request(self, store_id: str, workflow_id: str, request_id: str) -> Run | None:
        """The run started by this request id."""
        ...

    async def get_run(self, store_id: str, workflow_id: str, run_id: str) -> tuple[Run, list[RunStep]] | None:
        """A run with its steps."""
        ...

    async def page_runs(
        self, store_id: str, workflow_id: str, state: RunState | None, contact_id: str | None, after: int, limit: int
    ) -> list[tuple[int, Run]]:
        """Runs of a workflow, oldest first."""
        ...

    async def due_runs(self, now: datetime, limit: int) -> list[Run]:
        """Runs ready to take a step."""
        ...

    async def next_wake(self) -> datetime | None:
        """The earliest timer."""
        ...

    async def save_round(self, updates: Sequence[RunUpdate]) -> None:
        """New positions and steps of runs, atomically."""
        ...


class ProviderEventLog(Protocol):
    """The provider events applied so far, so that a repeated callback changes nothing."""

    async def record(self, store_id: str, message_id: str, status: str, time: datetime) -> bool:
        """Record that (store, message id, status) was applied; False if it was recorded before."""
        ...


class MessageChanges(Protocol):
    """Message writes inside a unit of work."""

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        """As MessageRepository.update, inside the unit of work's transaction."""
        ...


class ContactChanges(Protocol):
    """Contact writes inside a unit of work."""

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[tuple[Contact, bool]]:
        """As ContactRepository.apply_by_phone, inside the unit of work's transaction."""
        ...


class UnitOfWork(Protocol):
    """One transaction over several aggregates, for a use case that must change them together (a
    provider event: its record, its message and the contacts of its phone): the use case says what it
    changes, instead of one repository writing another's aggregate behind its back.

    A unit of work must await nothing but these writes (no I/O, no sleep): one backend runs it as one
    synchronous step on its database thread, another inside one database transaction."""

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

    async def close(self) -> None:
        """Release connections."""
        ...
