"""Contact use cases, shared by ContactsService, imports, the contact-info tag and provider events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..domain.contacts import Activity, Contact, ContactPatch, apply_patch
from ..domain.enums import ActivitySource, ActivityType, MobilePhoneStatus, SmsSubscriptionStatus
from ..domain.phones import normalize_phone
from ..domain.stores import Store
from ..errors import Aborted, AlreadyExists, DomainError, InvalidArgument, NotFound, echo
from ..filters import Term, parse_filter
from ..names import ContactName, StoreName, new_id
from ..records import record
from ..storage import Applied, ContactKey, ContactQuery, Mutation, Outcome, Positioned, Storage, Touched

__all__ = ["ContactOps", "ImportRow", "contact_query", "enum_value"]

_CONTACT_FILTERS = {f: {"="} for f in ("mobile_phone_status", "sms_subscription_status", "mobile_phone", "email")}


def enum_value(kind: type[MobilePhoneStatus] | type[SmsSubscriptionStatus] | type[ActivityType], term: Term) -> int:
    """A filter term's enum value, written short (`ACTIVE`) or in full (`MOBILE_PHONE_STATUS_ACTIVE`)."""
    prefix = {"MobilePhoneStatus": "MOBILE_PHONE_STATUS_", "SmsSubscriptionStatus": "SMS_SUBSCRIPTION_STATUS_"}.get(
        kind.__name__, "ACTIVITY_TYPE_"
    )
    name = term.value.upper().removeprefix(prefix)
    if name not in kind.__members__ or name == "UNSPECIFIED":
        values = ", ".join(m for m in kind.__members__ if m != "UNSPECIFIED")
        raise InvalidArgument("filter", f"{term.field} must be one of {values}, not {echo(term.value)}")
    return int(kind[name])


def contact_query(text: str, default_country: str, field: str = "filter") -> ContactQuery:
    """A ListContacts (or broadcast) filter → ContactQuery."""
    values: dict[str, object] = {}
    for term in parse_filter(text, _CONTACT_FILTERS, field):
        if term.field == "mobile_phone_status":
            values[term.field] = MobilePhoneStatus(enum_value(MobilePhoneStatus, term))
        elif term.field == "sms_subscription_status":
            values[term.field] = SmsSubscriptionStatus(enum_value(SmsSubscriptionStatus, term))
        elif term.field == "mobile_phone":
            values[term.field] = normalize_phone(field, term.value, default_country)
        else:
            values[term.field] = term.value.strip().lower()
    return ContactQuery(**values)  # type: ignore[arg-type]


def _unsubscribed() -> ContactPatch:
    return ContactPatch(sms_subscription_status=SmsSubscriptionStatus.UNSUBSCRIBED)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _named_must_exist(store: Store, key: ContactKey) -> Callable[[Contact | None], None] | None:
    """For an upsert keyed by a contact's name: NotFound when no such contact exists (any more)."""
    if not key.contact_id:
        return None
    name = str(ContactName(store.id, key.contact_id))

    def check(current: Contact | None) -> None:
        if current is None:
            raise NotFound(name)

    return check


@record
class ImportRow:
    """One good row of an import: how to find its contact and what it sets."""

    number: int
    key: ContactKey
    patch: ContactPatch


@dataclass
class ContactOps:
    """The contact use cases of one service instance."""

    storage: Storage
    clock: Callable[[], datetime] = field(default=_utcnow)
    # Told about contacts just created (the workflows' contact-created trigger).
    on_created: Callable[[str, list[Contact]], Awaitable[None]] | None = None

    async def store(self, store_id: str) -> Store:
        """The store, or NotFound."""
        store = await self.storage.stores.get(store_id)
        if store is None:
            raise NotFound(str(StoreName(store_id)))
        return store

    async def get(self, name: ContactName) -> Contact:
        """The contact, or NotFound."""
        contact = await self.storage.contacts.get(name.store, name.contact)
        if contact is None:
            raise NotFound(str(name))
        return contact

    async def page(self, store: Store, query: ContactQuery, after: int, limit: int) -> list[Positioned[Contact]]:
        """Up to `limit` contacts matching `query` after position `after`, oldest first."""
        return await self.storage.contacts.page(store.id, query, after, limit)

    async def delete(self, name: ContactName, etag: str) -> None:
        """Delete a contact and its activities; NotFound, or Aborted on a stale etag."""
        await self.storage.contacts.delete(name.store, name.contact, etag)

    async def activities(
        self, name: ContactName, types: set[ActivityType] | None, before: int | None, limit: int
    ) -> list[Positioned[Activity]]:
        """Up to `limit` of a contact's activities before position `before`, newest first; NotFound
        when the contact is not there (an empty list would say it has none)."""
        await self.get(name)
        return await self.storage.contacts.list_activities(name.store, name.contact, types, before, limit)

    async def default_country(self, store_id: str) -> str:
        """The country of numbers without `+`/`00` ("" when the channel has none)."""
        config = await self.storage.channel_configs.get(store_id)
        return config.default_country if config else ""

    def _mutation(
        self,
        store: Store,
        contact_id: str,
        patch: ContactPatch,
        source: ActivitySource,
        check: Callable[[Contact | None], None] | None = None,
        now: datetime | None = None,
    ) -> Mutation:
        now = now or self.clock()

        def mutate(current: Contact | None) -> tuple[Contact, list[Activity]]:
            if check is not None:
                check(current)
            return apply_patch(
                current,
                patch,
                store_id=store.id,
                contact_id=current.id if current else contact_id,
                source=source,
                now=now,
                default_subscription=store.default_sms_subscription_status,
            )

        return mutate

    async def _apply(self, store_id: str, changes: list[tuple[ContactKey, Mutation]]) -> list[Outcome]:
        outcomes = await self.storage.contacts.apply(store_id, changes)
        created = [o.contact for o in outcomes if isinstance(o, Applied) and o.kind == "created"]
        if created and self.on_created is not None:
            await self.on_created(store_id, created)
        return outcomes

    async def _apply_one(self, store_id: str, key: ContactKey, mutation: Mutation) -> Applied:
        (outcome,) = await self._apply(store_id, [(key, mutation)])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    async def create(self, store: Store, contact_id: str, patch: ContactPatch, source: ActivitySource) -> Contact:
        """Create a contact; AlreadyExists when the id or the email is taken."""
        name = str(ContactName(store.id, contact_id))

        def must_be_new(current: Contact | None) -> None:
            if current is not None:
                raise AlreadyExists(name)

        key = ContactKey(contact_id=contact_id)
        return (
            await self._apply_one(store.id, key, self._mutation(store, contact_id, patch, source, must_be_new))
        ).contact

    async def update(
        self, store: Store, contact_id: str, patch: ContactPatch, etag: str, source: ActivitySource
    ) -> Contact:
        """Update an existing contact; Aborted when `etag` is set and stale."""
        name = str(ContactName(store.id, contact_id))

        def must_exist(current: Contact | None) -> None:
            if current is None:
                raise NotFound(name)
            if etag and etag != current.etag:
                raise Aborted(f"{name} changed since etag {echo(etag)}; get it again")

        key = ContactKey(contact_id=contact_id)
        return (
            await self._apply_one(store.id, key, self._mutation(store, contact_id, patch, source, must_exist))
        ).contact

    async def upsert(
        self, store: Store, key: ContactKey, patch: ContactPatch, source: ActivitySource, new_id: str
    ) -> Applied:
        """Merge into the contact `key` finds: by id it must exist; by email it is created if missing."""
        mutation = self._mutation(store, new_id, patch, source, _named_must_exist(store, key))
        return await self._apply_one(store.id, key, mutation)

    async def import_rows(self, store: Store, rows: Sequence[ImportRow]) -> list[Outcome]:
        """Upsert a batch of rows in one transaction: by id (which must exist: a row naming a deleted
        contact is an error, never a re-creation), else by email (created when missing)."""
        now = self.clock()  # one time for the batch, as it is one transaction
        changes = [
            (
                row.key,
                self._mutation(
                    store,
                    row.key.contact_id or new_id(),
                    row.patch,
                    ActivitySource.IMPORT,
                    _named_must_exist(store, row.key),
                    now=now,
                ),
            )
            for row in rows
        ]
        return await self._apply(store.id, changes)

    def unsubscribe_change(self, store: Store, source: ActivitySource) -> Mutation:
        """The change that unsubscribes a contact (UnsubscribeSms, the provider's `stop`)."""
        return self._mutation(store, "", _unsubscribed(), source)

    def reject_change(self, store: Store, source: ActivitySource) -> Mutation:
        """The change that marks a contact's phone REJECTED (the provider refused the number)."""
        return self._mutation(store, "", ContactPatch(mobile_phone_status=MobilePhoneStatus.REJECTED), source)

    async def unsubscribe(
        self, store: Store, source: ActivitySource, *, contact_id: str = "", phone: str = ""
    ) -> list[Touched]:
        """UNSUBSCRIBED for one contact, or for every contact of the store with `phone` (E.164).

        The one change for ContactsService.UnsubscribeSms and the provider's `stop` callbacks."""
        if phone:
            return await self.storage.contacts.apply_by_phone(store.id, phone, self.unsubscribe_change(store, source))
        applied = await self.upsert(store, ContactKey(contact_id=contact_id), _unsubscribed(), source, contact_id)
        return [Touched(applied.contact, applied.kind != "unchanged")]
