"""Contacts and their activities: the repository protocol and its records."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..domain.contacts import Activity, Contact
from ..domain.enums import ActivityType, MobilePhoneStatus, SmsSubscriptionStatus
from ..errors import DomainError
from ..records import record
from .pages import Positioned

__all__ = ["Applied", "ContactKey", "ContactQuery", "ContactRepository", "Mutation", "Outcome", "Reach", "Touched"]

# Given the current contact (None when none matched), the new contact and its activities.
# It may raise a DomainError to refuse the change.
Mutation = Callable[[Contact | None], tuple[Contact, list[Activity]]]


@record
class Touched:
    """A contact a change reached, and whether it changed it."""

    contact: Contact
    changed: bool


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


class ContactRepository(Protocol):
    """Contacts and their activities. Every write stores the contact and its activities atomically."""

    async def get(self, store_id: str, contact_id: str) -> Contact | None:
        """The contact, or None."""
        ...

    async def page(self, store_id: str, query: ContactQuery, after: int, limit: int) -> list[Positioned[Contact]]:
        """Up to `limit` matching contacts with a position greater than `after`, oldest first."""
        ...

    async def reach(self, store_id: str, contact_ids: Collection[str]) -> dict[str, Reach]:
        """The phone and statuses of these contacts now, by id (a deleted contact is absent)."""
        ...

    async def reach_page(self, store_id: str, query: ContactQuery, after: int, limit: int) -> list[Positioned[Reach]]:
        """`page`, with only what eligibility reads of each contact (a broadcast's page of sends)."""
        ...

    async def apply(self, store_id: str, changes: Sequence[tuple[ContactKey, Mutation]]) -> list[Outcome]:
        """Apply each change to the contact its key finds, in order, in one transaction.

        A change that raises a DomainError (or would give an email to a second contact) is refused
        alone: its outcome is the error and the others still apply."""
        ...

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[Touched]:
        """Apply `mutation` to every contact with this phone; each contact and whether it changed."""
        ...

    async def delete(self, store_id: str, contact_id: str, etag: str) -> None:
        """Delete a contact and its activities; NotFound, or Aborted when `etag` is set and stale."""
        ...

    async def list_activities(
        self, store_id: str, contact_id: str, types: set[ActivityType] | None, before: int | None, limit: int
    ) -> list[Positioned[Activity]]:
        """Up to `limit` activities of a contact older than position `before`, newest first."""
        ...
