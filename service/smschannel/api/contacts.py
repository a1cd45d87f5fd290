"""ContactsService: proto in, use case, proto out."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator

import grpc
from google.protobuf import empty_pb2

from ..domain.enums import ActivitySource, ActivityType
from ..domain.phones import normalize_phone
from ..domain.stores import Store
from ..errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from ..filters import parse_filter
from ..names import ContactName, StoreName, new_id, validate_id
from ..operations.contacts import ContactOps, ImportRow, contact_query, enum_value
from ..operations.worker_pool import WorkerPool
from ..storage import Applied, ContactKey
from ..v1 import contacts_service_pb2 as pb
from ..v1 import contacts_service_pb2_grpc as pb_grpc
from .contacts_proto import (
    WRITABLE,
    ImportedRow,
    activity_to_proto,
    contact_key,
    contact_to_proto,
    parse_import_rows,
    patch_from_proto,
)
from .interceptor import current_principal
from .pagination import PageTokens, page_size

__all__ = ["ContactsServicer"]

log = logging.getLogger("smschannel.contacts")

IMPORT_BATCH = 1000  # rows per transaction
IMPORT_READ_AHEAD = 3  # messages whose rows the workers parse while an earlier one is applied
IMPORT_INLINE_ROWS = 50  # a message with fewer rows is parsed here rather than shipped to a worker
IMPORT_PROGRESS_EVERY = 100_000  # rows between progress log lines
MAX_IMPORT_ERRORS = 20_000  # row errors returned, keeping the answer under 4 MB (all are counted)

_ACTIVITY_FILTERS = {"type": {"="}}


class ContactsServicer(pb_grpc.ContactsServiceServicer):
    """The ContactsService RPCs."""

    def __init__(self, ops: ContactOps, tokens: PageTokens, workers: WorkerPool) -> None:
        self._ops = ops
        self._tokens = tokens
        self._workers = workers

    async def _store(self, name: StoreName | ContactName) -> Store:
        current_principal().check_store(name.store, name)
        return await self._ops.store(name.store)

    async def CreateContact(self, request: pb.CreateContactRequest, context: grpc.aio.ServicerContext) -> pb.Contact:
        """Create a contact."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        contact_id = validate_id("contact_id", request.contact_id) if request.contact_id else new_id()
        patch = patch_from_proto(request.contact, None, await self._ops.default_country(store.id), "contact.")
        return contact_to_proto(await self._ops.create(store, contact_id, patch, ActivitySource.API))

    async def GetContact(self, request: pb.GetContactRequest, context: grpc.aio.ServicerContext) -> pb.Contact:
        """Get a contact."""
        name = ContactName.parse("name", request.name)
        current_principal().check_store(name.store, name)
        return contact_to_proto(await self._ops.get(name))

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContactsResponse:
        """List contacts, oldest first; stable while contacts are added."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent, request.filter) or 0
        query = contact_query(request.filter, await self._ops.default_country(store.id))
        rows = await self._ops.page(store, query, after, limit + 1)
        page = self._tokens.page(rows, limit, request.parent, request.filter)
        return pb.ListContactsResponse(
            contacts=[contact_to_proto(c) for c in page.items], next_page_token=page.next_page_token
        )

    async def UpdateContact(self, request: pb.UpdateContactRequest, context: grpc.aio.ServicerContext) -> pb.Contact:
        """Update the fields of the mask (the fields set when there is no mask; `*` for all)."""
        name = ContactName.parse("contact.name", request.contact.name)
        store = await self._store(name)
        paths: set[str] | None = set(request.update_mask.paths) or None
        if paths == {"*"}:
            paths = set(WRITABLE)
        patch = patch_from_proto(request.contact, paths, await self._ops.default_country(store.id), "contact.")
        contact = await self._ops.update(store, name.contact, patch, request.contact.etag, ActivitySource.API)
        return contact_to_proto(contact)

    async def DeleteContact(
        self, request: pb.DeleteContactRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Delete a contact and its activities."""
        name = ContactName.parse("name", request.name)
        await self._store(name)
        await self._ops.delete(name, request.etag)
        return empty_pb2.Empty()

    async def UpsertContactInfo(
        self, request: pb.UpsertContactInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertContactInfoResponse:
        """The contact-info tag: merge the fields present into the contact found by name or email."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        info = request.contact_info
        patch = patch_from_proto(info, None, await self._ops.default_country(store.id), "contact_info.")
        key = contact_key(store.id, info, "contact_info.", patch.email or "")
        if not key.contact_id and not key.email:
            raise InvalidArgument("contact_info.email", "required: the contact's email or its name is the key")
        applied = await self._ops.upsert(store, key, patch, ActivitySource.CONTACT_INFO_TAG, new_id())
        return pb.UpsertContactInfoResponse(
            contact=contact_to_proto(applied.contact), created=applied.kind == "created"
        )

    async def UnsubscribeSms(
        self, request: pb.UnsubscribeSmsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnsubscribeSmsResponse:
        """UNSUBSCRIBED for a contact, or every contact of the store with a phone."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        target = request.WhichOneof("target")
        if target == "contact":
            name = ContactName.parse("contact", request.contact)
            if name.store != store.id:
                raise NotFound(str(name))
            results = await self._ops.unsubscribe(store, ActivitySource.API, contact_id=name.contact)
        elif target == "phone" and request.phone.strip():
            phone = normalize_phone("phone", request.phone, await self._ops.default_country(store.id))
            results = await self._ops.unsubscribe(store, ActivitySource.API, phone=phone)
        else:
            raise InvalidArgument("contact", "required: a contact name or a phone")
        return pb.UnsubscribeSmsResponse(
            contacts=[str(ContactName(t.contact.store_id, t.contact.id)) for t in results],
            changed_count=sum(t.changed for t in results),
        )

    async def ListActivities(
        self, request: pb.ListActivitiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListActivitiesResponse:
        """A contact's activities, newest first."""
        name = ContactName.parse("parent", request.parent)
        await self._store(name)
        limit = page_size(request.page_size)
        before = self._tokens.decode(request.page_token, request.parent, request.filter)
        types = {ActivityType(enum_value(ActivityType, t)) for t in parse_filter(request.filter, _ACTIVITY_FILTERS)}
        rows = await self._ops.activities(name, types or None, before, limit + 1)
        page = self._tokens.page(rows, limit, request.parent, request.filter)
        return pb.ListActivitiesResponse(
            activities=[activity_to_proto(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def ImportContacts(
        self, request_iterator: AsyncIterator[pb.ImportContactsRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportContactsResponse:
        """Upsert streamed rows in batches; bad rows are reported and skipped, good rows are kept."""
        importer: _Import | None = None
        # Messages read ahead: their rows are parsed by the workers while an earlier one is applied.
        ahead: deque[asyncio.Future[list[ImportedRow]]] = deque()
        try:
            async for message in request_iterator:
                if importer is None:
                    parent = StoreName.parse("parent", message.parent)
                    store = await self._store(parent)
                    importer = _Import(self, store, await self._ops.default_country(store.id))
                elif message.parent and message.parent != str(StoreName(importer.store.id)):
                    raise InvalidArgument("parent", "every message of an import must name the same store")
                rows = self._workers.submit(
                    parse_import_rows,
                    message.SerializeToString(),
                    importer.store.id,
                    importer.default_country,
                    inline=len(message.contacts) < IMPORT_INLINE_ROWS,
                )
                ahead.append(rows)
                if len(ahead) > IMPORT_READ_AHEAD:
                    await importer.add(await ahead.popleft())
            if importer is None:
                raise InvalidArgument("parent", "required: the import stream was empty")
            while ahead:
                await importer.add(await ahead.popleft())
        finally:
            for rows in ahead:  # the stream failed or was cancelled: drop the work still in the workers
                rows.cancel()
        await importer.flush()
        log.info("import finished", extra=importer.summary())
        return importer.response


def _row_error_field(error: DomainError) -> str:
    """The row's field an import row error is about."""
    if isinstance(error, InvalidArgument):
        return error.violations[0].field
    if isinstance(error, NotFound):
        return "name"  # the row names a contact that does not exist (any more)
    if isinstance(error, FailedPrecondition):
        return "mobile_phone_status"  # a rejected number cannot be made ACTIVE or PAUSED
    return "email"  # AlreadyExists: the email belongs to another contact


class _Import:
    """The state of one ImportContacts stream: the pending batch and the running summary."""

    def __init__(self, servicer: ContactsServicer, store: Store, default_country: str) -> None:
        self.servicer = servicer
        self.store = store
        self.default_country = default_country
        self.pending: list[ImportRow] = []
        self.response = pb.ImportContactsResponse()
        self._next_progress = IMPORT_PROGRESS_EVERY
        self._in_flight: asyncio.Future[None] | None = None

    def _fail(self, number: int, field: str, reason: str) -> None:
        self.response.failed_count += 1
        if len(self.response.errors) < MAX_IMPORT_ERRORS:
            self.response.errors.append(pb.ImportRowError(row_number=number, field=field, reason=reason))

    async def add(self, rows: list[ImportedRow]) -> None:
        """Number the parsed rows and report the bad ones; every full batch is written while the next
        ones are parsed."""
        for row in rows:
            self.response.total_count += 1
            number = self.response.total_count
            if isinstance(row, list):
                for v in row:
                    self._fail(number, v.field, v.description)
                continue
            contact_id, email, patch = row
            self.pending.append(ImportRow(number, ContactKey(contact_id, email), patch))
            if len(self.pending) >= IMPORT_BATCH:
                await self._start_write()

    async def _start_write(self) -> None:
        # One batch in flight: its SQL runs on the database thread while this loop parses the next.
        # Transactions take the write lock in order, so a later batch sees an earlier one's contacts.
        await self._finish_write()
        rows, self.pending = self.pending, []
        if rows:
            self._in_flight = asyncio.ensure_future(self._write(rows))

    async def _finish_write(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def flush(self) -> None:
        """Write what is pending and wait for every write."""
        await self._start_write()
        await self._finish_write()

    async def _write(self, rows: list[ImportRow]) -> None:
        outcomes = await self.servicer._ops.import_rows(self.store, rows)
        counts = self.response
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, Applied):
                if outcome.kind == "created":
                    counts.created_count += 1
                elif outcome.kind == "updated":
                    counts.updated_count += 1
                else:
                    counts.unchanged_count += 1
            else:
                self._fail(row.number, _row_error_field(outcome), outcome.message)
        if counts.total_count >= self._next_progress:
            self._next_progress += IMPORT_PROGRESS_EVERY
            log.info("import progress", extra=self.summary())

    def summary(self) -> dict[str, object]:
        """The counts so far, for the log (keys clear of LogRecord's own attributes, such as `created`)."""
        r = self.response
        return {
            "store": self.store.id,
            "rows": r.total_count,
            "created_count": r.created_count,
            "updated_count": r.updated_count,
            "unchanged_count": r.unchanged_count,
            "failed_count": r.failed_count,
        }
