"""SMS contents and messages (the log and the outbox) on SQLite."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from ...domain.contacts import Activity
from ...domain.enums import MessageStatus, RecipientMode, SmsEncoding, SmsType
from ...domain.messages import Message, SmsContent
from ...errors import Aborted
from ...names import SmsContentName
from .. import MessageQuery, MessageUpdate, PageSends, Positioned
from .contacts import INSERT_ACTIVITY, activity_params
from .db import INLINE_ROWS, Engine, Row, delete_checked, from_micros, insert_new, to_micros

__all__ = ["SqliteMessages", "SqliteSmsContents", "apply_updates", "insert_page_messages"]

_ENUMS: dict[str, type[IntEnum]] = {
    "type": SmsType,
    "recipient_mode": RecipientMode,
    "status": MessageStatus,
    "encoding": SmsEncoding,
}
_TIMES = ("create_time", "update_time", "send_time", "delivery_time", "next_attempt_time", "hold_until")
_MESSAGE_COLUMNS = [f.name for f in fields(Message)]
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}, claim_owner, claim_until)"
    f" VALUES ({', '.join('?' * len(_MESSAGE_COLUMNS))}, ?, ?)"
)
# The outbox is claimed, for replicas sharing a database (0007_outbox_claims.sql): a QUEUED message is
# held by the replica that stored it (unless an outbox process of its own sends: then by nobody), then
# by the one that reads it due, for CLAIM; another replica takes it only once that claim has expired
# (its holder died, or is far behind).
CLAIM = timedelta(seconds=30)  # by default; SMSCHANNEL_LEASE_SECONDS
# Messages are read by position, after their seq (unpacking a row costs less than looking columns up by name).
_SELECT_MESSAGE = f"SELECT seq, {', '.join(_MESSAGE_COLUMNS)} FROM messages"


# Statuses are bound as parameters: SQLite still proves `status = ?` (bound to QUEUED) implies the
# outbox's partial index `WHERE status = 1`, as the query plan test shows.
_QUEUED = int(MessageStatus.QUEUED)
_RECEIVED = (int(MessageStatus.SENT), int(MessageStatus.DELIVERED))
OUTBOX_DUE = (
    "SELECT seq FROM messages WHERE status = ? AND next_attempt_time <= ? AND (claim_owner = ? OR claim_until <= ?)"
    " ORDER BY next_attempt_time, seq LIMIT ?"
)
OUTBOX_CLAIM = (
    f"UPDATE messages SET claim_owner = ?, claim_until = ? WHERE seq IN ({OUTBOX_DUE})"
    f" RETURNING seq, {', '.join(_MESSAGE_COLUMNS)}"
)
OUTBOX_NEXT = "SELECT MIN(next_attempt_time) AS t FROM messages WHERE status = ?"
# The frequency cap: a batch's contacts' newsletters sent since a time, through (store, contact, status).
NEWSLETTERS_RECEIVED = (
    "SELECT contact_id, COUNT(*) AS n FROM messages WHERE store_id = ? AND contact_id != ''"
    " AND contact_id IN ({marks}) AND status IN (?, ?) AND type = ? AND send_time >= ? GROUP BY contact_id"
)
# A store's rules changed: what quiet hours held is due now, to be judged again (through the outbox index).
RELEASE_HELD = (
    "UPDATE messages SET next_attempt_time = ? WHERE status = ? AND next_attempt_time > ?"
    " AND store_id || '' = ? AND hold_until IS NOT NULL"  # the outbox's QUEUED rows, not all the store's
)
_IN_CHUNK = 500  # bound parameters per IN (...) lookup
# Message ids are unique by themselves: `store_id || ''` keeps SQLite from choosing the (store, seq)
# index for `store_id = ?`, which scanned every message of the store for each batch of callbacks (the
# usual `+store_id` is not SQL PostgreSQL reads). Provider
# ids are unique per store; `!= ''` lets SQLite use their partial index (which leaves out empty ones).
_BY_KEYS = {
    "id": _SELECT_MESSAGE + " WHERE id IN ({marks}) AND store_id || '' = ?",
    "provider_id": _SELECT_MESSAGE + " WHERE provider_id != '' AND provider_id IN ({marks}) AND store_id = ?",
}
_MESSAGE_VALUES = operator.attrgetter(*_MESSAGE_COLUMNS)  # all columns' values in one C call
_TIME_AT = [i for i, name in enumerate(_MESSAGE_COLUMNS) if name in _TIMES]
_ENUM_AT = [i for i, name in enumerate(_MESSAGE_COLUMNS) if name in _ENUMS]


def _message_params(m: Message) -> list[Any]:
    # A newsletter writes one per contact: fetch every value at once, convert only the times and enums.
    values = list(_MESSAGE_VALUES(m))
    for i in _TIME_AT:
        if values[i] is not None:
            values[i] = to_micros(values[i])
    for i in _ENUM_AT:
        values[i] = int(values[i])
    return values


_FROM_INT = {
    i: {int(member): member for member in _ENUMS[name]} for i, name in enumerate(_MESSAGE_COLUMNS) if name in _ENUMS
}


def message_from_row(row: Row) -> Message:
    """A row of `_SELECT_MESSAGE` (its seq first) → Message."""
    values = list(row)[1:]
    for i in _TIME_AT:
        if values[i] is not None:
            values[i] = from_micros(values[i])
    for i, members in _FROM_INT.items():
        values[i] = members[values[i]]  # a dict, not the enum's call
    return Message(*values)


def _add(conn: sqlite3.Connection, messages: Sequence[Message], owner: str, claim: int) -> list[Message]:
    """Inside a write transaction: look the request ids up once, insert the new messages in bulk."""
    first: dict[tuple[str, str], Message] = {}
    by_store: dict[str, list[str]] = {}
    for m in messages:
        if m.request_id:
            by_store.setdefault(m.store_id, []).append(m.request_id)
    for store_id, request_ids in by_store.items():
        for i in range(0, len(request_ids), 500):
            chunk = request_ids[i : i + 500]
            sql = (
                f"{_SELECT_MESSAGE} WHERE store_id = ? AND request_id != ''"
                f" AND request_id IN ({','.join('?' * len(chunk))})"
            )
            for row in conn.execute(sql, (store_id, *chunk)):
                found = message_from_row(row)
                first[(found.store_id, found.request_id)] = found
    stored: list[Message] = []
    new: list[Message] = []
    for m in messages:
        key = (m.store_id, m.request_id)
        if m.request_id and key in first:
            stored.append(first[key])
            continue
        if m.request_id:
            first[key] = m  # the same id twice in one batch: the second is the first
        stored.append(m)
        new.append(m)
    if new:
        conn.executemany(
            _INSERT_MESSAGE,
            [[*_message_params(m), owner, to_micros(m.create_time) + claim] for m in new],
        )
    return stored


# Stamped into each message of a page of sends (PageSends); every other column is its group's template's.
_STAMPED = {
    "id": "p.message_id",
    "request_id": "? || p.contact_id || ?",
    "contact_id": "p.contact_id",
    "workflow_run": "? || p.contact_id",
    "recipient": "p.phone",
}
_INTEGERS = {*_TIMES, *_ENUMS, "segments", "attempts"}


def _page_messages_sql(members: int, groups: int) -> str:
    """INSERT ... SELECT of a page's messages: the members and the templates are VALUES lists; a
    template's columns are cast to their type (PostgreSQL types an all-NULL column of VALUES as text)."""
    member = "(?, ?, ?, ?)"
    template = f"({', '.join('?' * (1 + len(_MESSAGE_COLUMNS)))})"
    values = [_STAMPED.get(c) or f"CAST(g.{c} AS {'BIGINT' if c in _INTEGERS else 'TEXT'})" for c in _MESSAGE_COLUMNS]
    return (
        f"WITH p (contact_id, message_id, grp, phone) AS (VALUES {', '.join([member] * members)}),"
        f" g (grp, {', '.join(_MESSAGE_COLUMNS)}) AS (VALUES {', '.join([template] * groups)})"
        f" INSERT INTO messages ({', '.join(_MESSAGE_COLUMNS)}, claim_owner, claim_until)"
        f" SELECT {', '.join(values)}, ?, CAST(g.create_time AS BIGINT) + ? FROM p JOIN g ON g.grp = p.grp"
        " WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.store_id = ? AND m.request_id != ''"
        " AND m.request_id = ? || p.contact_id || ?)"
        # a run stored already (a page done again) keeps what it has: no message more
        " AND NOT EXISTS (SELECT 1 FROM workflow_runs r"
        " WHERE r.store_id = ? AND r.workflow_id = ? AND r.id = ? || p.contact_id)"
        " RETURNING contact_id"
    )


def insert_page_messages(conn: sqlite3.Connection, sends: PageSends, owner: str, claim: int) -> list[Message]:
    """Inside a write transaction: the messages of a page of sends (PageSends) whose request ids are
    new, for runs that are new, in one statement; returns the QUEUED ones stored (for the outbox),
    stamped from their templates."""
    if not sends.members:
        return []
    stamped = {
        "request_id": (sends.request_prefix, sends.request_suffix),
        "workflow_run": (sends.run_prefix,),
    }
    params: list[Any] = [v for member in sends.members for v in member]
    for group, template in enumerate(sends.templates):
        params += [group, *_message_params(template)]
    for column in _MESSAGE_COLUMNS:  # the stamps' own parameters, in the SELECT list's order
        params += stamped.get(column, ())
    page = sends.page
    params += [owner, claim, page.store_id, sends.request_prefix, sends.request_suffix]
    params += [page.store_id, page.workflow_id, sends.run_prefix]
    rows = conn.execute(_page_messages_sql(len(sends.members), len(sends.templates)), params).fetchall()
    member = {m[0]: m for m in sends.members}
    queued = []
    for (contact_id,) in rows:
        _, message_id, group, phone = member[contact_id]
        t = sends.templates[group]
        if t.status is MessageStatus.QUEUED:
            queued.append(
                Message(
                    t.store_id,
                    message_id,
                    t.type,
                    t.recipient_mode,
                    t.status,
                    t.create_time,
                    t.update_time,
                    sends.request_prefix + contact_id + sends.request_suffix,
                    contact_id,
                    t.workflow_id,
                    t.workflow_node,
                    sends.run_prefix + contact_id,
                    t.sms_content_id,
                    t.status_reason,
                    phone,
                    t.sender,
                    t.text,
                    t.encoding,
                    t.segments,
                    t.provider_id,
                    t.send_time,
                    t.delivery_time,
                    t.attempts,
                    t.next_attempt_time,
                    t.hold_until,
                )
            )
    return queued


class SqliteMessages:
    """MessageRepository on SQLite."""

    def __init__(
        self, db: Engine, replica: str, claim: timedelta = CLAIM, hold_stored: bool = True, updates_inline: bool = False
    ) -> None:
        """`hold_stored`: messages this process stores are claimed by it (its own outbox sends them, handed
        over in memory); False when an outbox process of its own sends them (they are anyone's at once).
        `updates_inline`: status changes, however many, are written on the event loop's thread (an outbox
        process, which serves nothing else: on the database thread, each row's step gave the GIL away to
        the loop and waited for it back, the write lock held all the while)."""
        self._db = db
        self._updates_inline = updates_inline
        self._replica = replica  # this process, as the owner of its outbox claims
        self._claim = int(claim.total_seconds() * 1_000_000)
        self._stored_by = (replica, self._claim) if hold_stored else ("", 0)

    async def add(self, messages: Sequence[Message]) -> list[Message]:
        """Store new messages; a message whose request id is known is not stored and the first one
        with that id is returned in its place."""
        return await self._db.write_rows(len(messages), lambda conn: self.add_in(conn, messages))

    def add_in(self, conn: sqlite3.Connection, messages: Sequence[Message]) -> list[Message]:
        """`add` inside a write transaction (a unit of work's)."""
        return _add(conn, messages, *self._stored_by)

    def add_page_in(self, conn: sqlite3.Connection, sends: PageSends) -> list[Message]:
        """A page's messages (PageSends) inside a write transaction, claimed as `add_in` claims."""
        return insert_page_messages(conn, sends, *self._stored_by)

    async def get(self, store_id: str, message_id: str) -> Message | None:
        """The message, or None."""
        row = await self._db.fetch_one(f"{_SELECT_MESSAGE} WHERE store_id = ? AND id = ?", (store_id, message_id))
        return None if row is None else message_from_row(row)

    async def get_many(self, store_id: str, message_ids: Collection[str]) -> dict[str, Message]:
        """The messages with these ids, by id: a bounded IN by primary key, read inline."""
        return {m.id: m for m in await self._by_keys("id", store_id, message_ids)}

    async def find_by_provider_ids(self, store_id: str, provider_ids: Collection[str]) -> dict[str, Message]:
        """The messages Instasent knows by these ids, by provider id."""
        return {m.provider_id: m for m in await self._by_keys("provider_id", store_id, provider_ids)}

    async def _by_keys(self, column: str, store_id: str, keys: Collection[str]) -> list[Message]:
        found: list[Message] = []
        ordered = sorted(keys)
        for i in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[i : i + _IN_CHUNK]
            rows = await self._db.fetch_by_keys(
                _BY_KEYS[column].format(marks=",".join("?" * len(chunk))), (*chunk, store_id)
            )
            found += [message_from_row(r) for r in rows]
        return found

    async def find_by_request(self, store_id: str, request_id: str) -> Message | None:
        """The message created by this request id, or None."""
        row = await self._db.fetch_one(
            f"{_SELECT_MESSAGE} WHERE store_id = ? AND request_id != '' AND request_id = ?", (store_id, request_id)
        )
        return None if row is None else message_from_row(row)

    async def page(
        self, store_id: str, query: MessageQuery, before: int | None, limit: int
    ) -> list[Positioned[Message]]:
        """Matching messages older than position `before`, newest first."""
        where = ["store_id = ?", "seq < ?"]
        params: list[Any] = [store_id, 2**62 if before is None else before]
        for column, value in (
            ("contact_id", query.contact_id),
            ("workflow_id", query.workflow_id),
            ("sms_content_id", query.sms_content_id),
            ("type", query.type),
            ("status", query.status),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(int(value) if isinstance(value, int) else value)
        if query.contact_id:
            where.append("contact_id != ''")  # lets the partial (store, contact) index serve the filter
        if query.since is not None:
            where.append("create_time >= ?")
            params.append(to_micros(query.since))
        if query.until is not None:
            where.append("create_time < ?")
            params.append(to_micros(query.until))
        rows = await self._db.fetch_all(
            f"{_SELECT_MESSAGE} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        return [Positioned(row[0], message_from_row(row)) for row in rows]

    async def due(self, now: datetime, limit: int, own: bool = True) -> list[Message]:
        """QUEUED messages whose next attempt is due and that no other replica holds, oldest first,
        claimed by this one for CLAIM: one UPDATE ... RETURNING (two replicas claiming at once are
        serialized by the engine: the second claims what the first left). With `own` False, not those
        this replica holds either (they are in flight here)."""
        at = to_micros(now)
        params = (self._replica, at + self._claim, _QUEUED, at, self._replica if own else None, at, limit)
        rows = await self._db.write(lambda conn: conn.execute(OUTBOX_CLAIM, params).fetchall())
        return sorted((message_from_row(r) for r in rows), key=lambda m: m.next_attempt_time or now)

    async def hold(self, store_id: str, message_ids: Collection[str], now: datetime) -> set[str]:
        """Renew (or take run-out) claims on these QUEUED messages, in one UPDATE ... RETURNING."""
        ids = list(message_ids)
        if not ids:
            return set()
        at = to_micros(now)
        sql = (
            f"UPDATE messages SET claim_owner = ?, claim_until = ? WHERE id IN ({','.join('?' * len(ids))})"
            " AND store_id || '' = ? AND status = ? AND (claim_owner = ? OR claim_until <= ?) RETURNING id"
        )
        params = (self._replica, at + self._claim, *ids, store_id, _QUEUED, self._replica, at)
        return {row[0] for row in await self._db.write(lambda conn: conn.execute(sql, params).fetchall())}

    async def next_due(self) -> datetime | None:
        """When the next QUEUED message is due, or None when the outbox is empty."""
        row = await self._db.fetch_one(OUTBOX_NEXT, (_QUEUED,))
        return None if row is None or row["t"] is None else from_micros(row["t"])

    async def update(self, updates: Sequence[MessageUpdate]) -> list[bool]:
        """Apply status changes, each only from a status it expects, with the activities of those that
        changed, atomically. Returns which changed: an update whose message moved on is dropped (but for
        the record of a send that a provider report overtook: MessageUpdate.fill_from)."""
        if not updates:
            return []
        # Their parameters are built before the transaction: the write lock is held for the SQL only
        # (another process, an outbox or a replica, may be waiting for it).
        prepared = _Prepared(updates)
        inline = len(updates) if self._updates_inline else INLINE_ROWS
        return await self._db.write_rows(len(updates), lambda conn: apply_updates(conn, updates, prepared), inline)

    async def count_by_status(self) -> dict[MessageStatus, int]:
        """Messages by status, in one scan of the log (a scrape's worth, not a hot path)."""
        rows = await self._db.fetch_all("SELECT status, COUNT(*) AS n FROM messages GROUP BY status")
        return {MessageStatus(row["status"]): int(row["n"]) for row in rows}

    async def newsletters_received(
        self, store_id: str, contact_ids: Collection[str], since: datetime
    ) -> dict[str, int]:
        """NEWSLETTER SMS sent to each contact since `since`: through the (store, contact, status) index."""
        counts: dict[str, int] = {}
        ordered = sorted(contact_ids)
        for i in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[i : i + _IN_CHUNK]
            sql = NEWSLETTERS_RECEIVED.format(marks=",".join("?" * len(chunk)))
            params = (store_id, *chunk, *_RECEIVED, int(SmsType.NEWSLETTER), to_micros(since))
            counts.update((r[0], int(r[1])) for r in await self._db.fetch_all(sql, params))
        return counts

    async def release_held(self, store_id: str, now: datetime) -> int:
        """Held messages of the store due now (through the outbox's partial index)."""
        at = to_micros(now)
        return await self._db.write(lambda conn: conn.execute(RELEASE_HELD, (at, _QUEUED, at, store_id)).rowcount)

    async def count_received(
        self,
        store_id: str,
        contact_id: str,
        content_id: str,
        sms_type: SmsType | None,
        since: datetime | None,
        until: datetime | None,
    ) -> int:
        """SENT or DELIVERED messages of a contact, through the (store, contact, status, time) index."""
        sql = (
            "SELECT COUNT(*) AS n FROM messages"
            " WHERE store_id = ? AND contact_id != '' AND contact_id = ? AND status IN (?, ?)"
        )
        params: list[Any] = [store_id, contact_id, *_RECEIVED]
        if since is not None:
            sql += " AND create_time >= ?"
            params.append(to_micros(since))
        if until is not None:
            sql += " AND create_time < ?"
            params.append(to_micros(until))
        if content_id:
            sql += " AND sms_content_id = ?"
            params.append(content_id)
        if sms_type is not None:
            sql += " AND type = ?"
            params.append(int(sms_type))
        row = await self._db.fetch_one(sql, params)
        return int(row["n"]) if row is not None else 0


_UPDATE_MESSAGE = (
    "UPDATE messages SET status = ?, status_reason = ?, provider_id = COALESCE(?, provider_id),"
    " send_time = COALESCE(?, send_time), delivery_time = COALESCE(?, delivery_time),"
    " attempts = attempts + ?, next_attempt_time = ?, update_time = ?, recipient = COALESCE(?, recipient),"
    " segments = COALESCE(?, segments), hold_until = COALESCE(?, hold_until), claim_until = COALESCE(?, claim_until)"
    " WHERE store_id = ? AND id = ?"
)


# The same change, made only while the message is in one of the expected statuses (a bit mask).
_UPDATE_MESSAGE_IF = _UPDATE_MESSAGE + " AND ((1 << status) & ?) != 0"
# A send recorded on a message a provider report moved on already (MessageUpdate.fill_from): what the
# send knows, its status, reason and times kept (a send time it has stays).
_FILL_SENT = (
    "UPDATE messages SET provider_id = COALESCE(?, provider_id), send_time = COALESCE(send_time, ?),"
    " attempts = attempts + ?, update_time = ?, recipient = COALESCE(?, recipient), segments = COALESCE(?, segments),"
    " claim_until = COALESCE(?, claim_until) WHERE store_id = ? AND id = ?"
)


def _update_params(u: MessageUpdate) -> tuple[Any, ...]:
    return (
        int(u.status),
        u.reason,
        u.provider_id,
        None if u.send_time is None else to_micros(u.send_time),
        None if u.delivery_time is None else to_micros(u.delivery_time),
        1 if u.attempted else 0,
        None if u.next_attempt_time is None else to_micros(u.next_attempt_time),
        to_micros(u.time),
        u.recipient,
        u.segments,
        None if u.hold_until is None else to_micros(u.hold_until),
        0 if u.release else None,
        u.store_id,
        u.message_id,
    )


def _fill_params(u: MessageUpdate) -> tuple[Any, ...]:
    return (
        u.provider_id,
        None if u.send_time is None else to_micros(u.send_time),
        1 if u.attempted else 0,
        to_micros(u.time),
        u.recipient,
        u.segments,
        0 if u.release else None,
        u.store_id,
        u.message_id,
    )


class _Prepared:
    """The parameters of `apply_updates`' optimistic statements, built once."""

    __slots__ = ("activities", "checked")

    def __init__(self, updates: Sequence[MessageUpdate]) -> None:
        self.checked = [(*_update_params(u), sum(1 << int(s) for s in u.expect)) for u in updates]
        self.activities = [activity_params(u.activity) for u in updates if u.activity is not None]


def apply_updates(
    conn: sqlite3.Connection, updates: Sequence[MessageUpdate], prepared: _Prepared | None = None
) -> list[bool]:
    """Inside a write transaction: each update applied only from a status it expects, in order (a
    later update of a message sees an earlier one's status), with the activities of those applied.

    Optimistic first: almost always every update applies (an answer of Instasent for messages still
    QUEUED), so they are written with the expected statuses in the WHERE clause, and if SQLite changed
    as many rows as there are updates, that is all. Else they are rolled back and judged one by one
    on the statuses read first; there, an update whose message moved on to one of its `fill_from`
    statuses writes only its record of the send (`_FILL_SENT`) and its activity."""
    prepared = prepared or _Prepared(updates)
    conn.execute("SAVEPOINT updates")
    done = conn.executemany(_UPDATE_MESSAGE_IF, prepared.checked).rowcount
    if done == len(updates):
        conn.execute("RELEASE updates")
        if prepared.activities:
            conn.executemany(INSERT_ACTIVITY, prepared.activities)
        return [True] * len(updates)
    conn.execute("ROLLBACK TO updates")
    conn.execute("RELEASE updates")
    current: dict[tuple[str, str], int] = {}
    keys = sorted({(u.store_id, u.message_id) for u in updates})
    for i in range(0, len(keys), 400):
        chunk = keys[i : i + 400]
        terms = " OR ".join("(store_id = ? AND id = ?)" for _ in chunk)
        rows = conn.execute(f"SELECT store_id, id, status FROM messages WHERE {terms}", [v for k in chunk for v in k])
        current.update(((r[0], r[1]), r[2]) for r in rows)
    changed: list[bool] = []
    params: list[tuple[Any, ...]] = []
    fills: list[tuple[Any, ...]] = []
    activities: list[Activity] = []
    for u in updates:
        key = (u.store_id, u.message_id)
        status = current.get(key)
        ok = status is not None and status in u.expect  # IntEnum members equal and hash as their ints
        filled = not ok and status is not None and status in u.fill_from
        changed.append(ok or filled)
        if ok:
            current[key] = int(u.status)  # a later update of the same message sees this one
            params.append(_update_params(u))
        elif filled:
            fills.append(_fill_params(u))
        else:
            continue
        if u.activity is not None:
            activities.append(u.activity)
    conn.executemany(_UPDATE_MESSAGE, params)
    conn.executemany(_FILL_SENT, fills)
    _insert_activities(conn, activities)
    return changed


def _insert_activities(conn: sqlite3.Connection, activities: list[Activity]) -> None:
    if activities:
        conn.executemany(INSERT_ACTIVITY, [activity_params(a) for a in activities])


def _content_from_row(row: Row) -> SmsContent:
    return SmsContent(
        store_id=row["store_id"],
        id=row["id"],
        display_name=row["display_name"],
        text=row["text"],
        create_time=from_micros(row["create_time"]),
        update_time=from_micros(row["update_time"]),
        version=row["version"],
    )


class SqliteSmsContents:
    """SmsContentRepository on SQLite."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    async def create(self, content: SmsContent) -> None:
        """Store a new content; AlreadyExists if the id is taken."""
        await insert_new(
            self._db,
            "INSERT INTO sms_contents (store_id, id, display_name, text, create_time, update_time, version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                content.store_id,
                content.id,
                content.display_name,
                content.text,
                to_micros(content.create_time),
                to_micros(content.update_time),
                content.version,
            ),
            str(SmsContentName(content.store_id, content.id)),
        )

    async def get(self, store_id: str, content_id: str) -> SmsContent | None:
        """The content, or None."""
        row = await self._db.fetch_one(
            "SELECT * FROM sms_contents WHERE store_id = ? AND id = ?", (store_id, content_id)
        )
        return None if row is None else _content_from_row(row)

    async def page(self, store_id: str, after: int, limit: int) -> list[Positioned[SmsContent]]:
        """Contents after position `after`, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT * FROM sms_contents WHERE store_id = ? AND seq > ? ORDER BY seq LIMIT ?", (store_id, after, limit)
        )
        return [Positioned(row["seq"], _content_from_row(row)) for row in rows]

    async def update(self, content: SmsContent, expected_version: int) -> None:
        """Replace a content if it is still at `expected_version` (else Aborted)."""

        def update(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE sms_contents SET display_name = ?, text = ?, update_time = ?, version = ?"
                " WHERE store_id = ? AND id = ? AND version = ?",
                (
                    content.display_name,
                    content.text,
                    to_micros(content.update_time),
                    content.version,
                    content.store_id,
                    content.id,
                    expected_version,
                ),
            )
            if cur.rowcount == 0:
                raise Aborted(f"{SmsContentName(content.store_id, content.id)} changed meanwhile; get it again")

        await self._db.write(update)

    async def delete(self, store_id: str, content_id: str, etag: str) -> None:
        """Delete a content (messages keep their copy of the text)."""
        name = str(SmsContentName(store_id, content_id))
        await delete_checked(self._db, "sms_contents", store_id, content_id, etag, name)
