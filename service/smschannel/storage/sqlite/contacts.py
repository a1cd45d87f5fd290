"""Contacts and activities on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from ...domain.contacts import Activity, Contact, CustomValue
from ...domain.enums import ActivitySource, ActivityType, MobilePhoneStatus, SmsSubscriptionStatus
from ...errors import AlreadyExists, DomainError, echo
from ...names import ContactName
from .. import Applied, ContactKey, ContactQuery, Mutation, Outcome, Positioned, Reach, Touched
from . import jsoncol
from .db import Engine, Row, delete_checked, from_micros, to_micros

__all__ = ["INSERT_ACTIVITY", "SqliteContacts", "activity_params", "apply_to_phone"]

_COLUMNS = (
    "store_id, id, email, first_name, last_name, mobile_phone, mobile_phone_status, phone_paused,"
    " sms_subscription_status, custom_fields, create_time, update_time, version"
)
# Contacts are read by position (unpacking a row costs less than looking each column up by name).
_SELECT_CONTACT = f"SELECT seq, {_COLUMNS} FROM contacts"
_GET_CONTACT = f"{_SELECT_CONTACT} WHERE store_id = ? AND id = ?"
_PHONE_STATUSES = {int(s): s for s in MobilePhoneStatus}
_SUBSCRIPTIONS = {int(s): s for s in SmsSubscriptionStatus}
_INSERT = f"INSERT INTO contacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPDATE = (
    "UPDATE contacts SET email = ?, first_name = ?, last_name = ?, mobile_phone = ?, mobile_phone_status = ?,"
    " phone_paused = ?, sms_subscription_status = ?, custom_fields = ?, update_time = ?, version = ?"
    " WHERE store_id = ? AND id = ?"
)
INSERT_ACTIVITY = (
    "INSERT INTO activities (store_id, contact_id, id, type, source, details, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_IN_CHUNK = 500  # bound parameters per IN (...) lookup


def _encode_custom(fields: dict[str, CustomValue]) -> str:
    if not fields:
        return "{}"
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, bool):
            out[key] = {"b": value}
        elif isinstance(value, datetime):
            out[key] = {"t": to_micros(value)}
        elif isinstance(value, float):
            out[key] = {"n": value}
        else:
            out[key] = {"s": value}
    return jsoncol.dumps(out)


def _decode_custom(text: str) -> dict[str, CustomValue]:
    if text == "{}":
        return {}
    out: dict[str, CustomValue] = {}
    for key, tagged in jsoncol.loads(text).items():
        ((tag, value),) = tagged.items()
        out[key] = from_micros(value) if tag == "t" else float(value) if tag == "n" else value
    return out


def contact_from_row(row: Row) -> Contact:
    """A row of `_SELECT_CONTACT` (its position first) → Contact."""
    _, store_id, contact_id, email, first, last, phone = row[:7]
    phone_status, paused, subscription, custom, created, updated, version = row[7:]
    return Contact(
        store_id,
        contact_id,
        email,
        first,
        last,
        phone,
        _PHONE_STATUSES[phone_status],  # a dict, not the enum's call: a third of the cost
        bool(paused),
        _SUBSCRIPTIONS[subscription],
        _decode_custom(custom),
        from_micros(created),
        from_micros(updated),
        version,
    )


def _insert_params(c: Contact) -> tuple[Any, ...]:
    assert c.create_time is not None
    assert c.update_time is not None
    return (
        c.store_id,
        c.id,
        c.email,
        c.first_name,
        c.last_name,
        c.mobile_phone,
        int(c.mobile_phone_status),
        int(c.phone_paused),
        int(c.sms_subscription_status),
        _encode_custom(c.custom_fields),
        to_micros(c.create_time),
        to_micros(c.update_time),
        c.version,
    )


def _update_params(c: Contact) -> tuple[Any, ...]:
    assert c.update_time is not None
    return (
        c.email,
        c.first_name,
        c.last_name,
        c.mobile_phone,
        int(c.mobile_phone_status),
        int(c.phone_paused),
        int(c.sms_subscription_status),
        _encode_custom(c.custom_fields),
        to_micros(c.update_time),
        c.version,
        c.store_id,
        c.id,
    )


def activity_params(a: Activity) -> tuple[Any, ...]:
    """The activities row of an activity."""
    details = jsoncol.dumps(a.details)
    return (a.store_id, a.contact_id, a.id, int(a.type), int(a.source), details, to_micros(a.create_time))


def activity_from_row(row: Row) -> Activity:
    """An activities row → Activity."""
    return Activity(
        store_id=row["store_id"],
        contact_id=row["contact_id"],
        id=row["id"],
        type=ActivityType(row["type"]),
        source=ActivitySource(row["source"]),
        create_time=from_micros(row["create_time"]),
        details=jsoncol.loads(row["details"]),
    )


def _insert_activities(conn: sqlite3.Connection, activities: Sequence[Activity]) -> None:
    """Record activities inside the caller's transaction."""
    if activities:
        conn.executemany(INSERT_ACTIVITY, [activity_params(a) for a in activities])


def _fetch_by(conn: sqlite3.Connection, store_id: str, column: str, values: set[str]) -> list[Contact]:
    found: list[Contact] = []
    ordered = sorted(values)
    for i in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[i : i + _IN_CHUNK]
        # `!= ''` lets SQLite use the partial indexes on email and phone (which leave out empty values).
        marks = ",".join("?" * len(chunk))
        sql = f"{_SELECT_CONTACT} WHERE store_id = ? AND {column} != '' AND {column} IN ({marks})"
        found.extend(contact_from_row(r) for r in conn.execute(sql, (store_id, *chunk)))
    return found


def _apply(conn: sqlite3.Connection, store_id: str, changes: Sequence[tuple[ContactKey, Mutation]]) -> list[Outcome]:
    """Inside a write transaction: look the contacts up once, apply the changes in order, write in bulk."""
    by_id = {c.id: c for c in _fetch_by(conn, store_id, "id", {k.contact_id for k, _ in changes if k.contact_id})}
    by_email = {c.email: c for c in _fetch_by(conn, store_id, "email", {k.email for k, _ in changes if k.email})}
    by_email.update({c.email: c for c in by_id.values() if c.email})
    looked_up = {k.email for k, _ in changes if k.email}
    inserts: dict[str, Contact] = {}
    updates: dict[str, Contact] = {}
    activities: list[Activity] = []
    outcomes: list[Outcome] = []
    for key, mutation in changes:
        current = by_id.get(key.contact_id) if key.contact_id else by_email.get(key.email) if key.email else None
        try:
            new, acts = mutation(current)
            if new.email and new.email not in by_email and new.email not in looked_up:
                looked_up.add(new.email)  # a new email for this contact: is it someone else's?
                by_email.update({c.email: c for c in _fetch_by(conn, store_id, "email", {new.email})})
            owner = by_email.get(new.email) if new.email else None
            if owner is not None and owner.id != new.id:
                raise AlreadyExists(
                    str(ContactName(store_id, owner.id)),
                    f"email {echo(new.email)} belongs to another contact (stores/{store_id}/contacts/{owner.id})",
                )
        except DomainError as e:
            outcomes.append(e)
            continue
        if current is not None and new is current:
            outcomes.append(Applied("unchanged", current))
            continue
        if current is not None and current.email and current.email != new.email:
            by_email.pop(current.email, None)
        by_id[new.id] = new
        if new.email:
            by_email[new.email] = new
        if current is None or new.id in inserts:
            inserts[new.id] = new
        else:
            updates[new.id] = new
        activities.extend(acts)
        outcomes.append(Applied("created" if current is None else "updated", new))
    _write(conn, store_id, inserts, updates, activities)
    return outcomes


def _write(
    conn: sqlite3.Connection,
    store_id: str,
    inserts: dict[str, Contact],
    updates: dict[str, Contact],
    activities: list[Activity],
) -> None:
    try:
        if inserts:
            conn.executemany(_INSERT, [_insert_params(c) for c in inserts.values()])
        if updates:
            conn.executemany(_UPDATE, [_update_params(c) for c in updates.values()])
    except sqlite3.IntegrityError as e:
        # Only a contact id taken by a concurrent writer can get here: the lookups ran in this transaction.
        raise AlreadyExists(ContactName.collection(store_id), "a contact with that id already exists") from e
    _insert_activities(conn, activities)


def apply_to_phone(conn: sqlite3.Connection, store_id: str, phone: str, mutation: Mutation) -> list[Touched]:
    """Inside a write transaction: `mutation` on every contact of the store with this phone."""
    results: list[Touched] = []
    for current in _fetch_by(conn, store_id, "mobile_phone", {phone}):
        new, acts = mutation(current)
        changed = new is not current
        if changed:
            _write(conn, store_id, {}, {new.id: new}, acts)
        results.append(Touched(new, changed))
    return results


def _page_where(store_id: str, query: ContactQuery, after: int) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters of a page of a store's contacts matching `query`."""
    where = ["store_id = ?", "seq > ?"]
    params: list[Any] = [store_id, after]
    for column, value in (
        ("mobile_phone_status", query.mobile_phone_status),
        ("sms_subscription_status", query.sms_subscription_status),
        ("mobile_phone", query.mobile_phone),
        ("email", query.email),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(int(value) if isinstance(value, int) else value)
    return " AND ".join(where), params


class SqliteContacts:
    """ContactRepository on SQLite."""

    def __init__(self, db: Engine) -> None:
        self._db = db

    async def get(self, store_id: str, contact_id: str) -> Contact | None:
        """The contact, or None."""
        row = await self._db.fetch_one(_GET_CONTACT, (store_id, contact_id))
        return None if row is None else contact_from_row(row)

    async def page(self, store_id: str, query: ContactQuery, after: int, limit: int) -> list[Positioned[Contact]]:
        """Matching contacts after position `after`, oldest first."""
        where, params = _page_where(store_id, query, after)
        rows = await self._db.fetch_all(f"{_SELECT_CONTACT} WHERE {where} ORDER BY seq LIMIT ?", (*params, limit))
        return [Positioned(row[0], contact_from_row(row)) for row in rows]

    async def reach_page(self, store_id: str, query: ContactQuery, after: int, limit: int) -> list[Positioned[Reach]]:
        """`page` with the four columns eligibility reads: no Contact to build per row."""
        where, params = _page_where(store_id, query, after)
        rows = await self._db.fetch_all(
            "SELECT seq, id, mobile_phone, mobile_phone_status, sms_subscription_status FROM contacts"
            f" WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )
        return [
            Positioned(seq, Reach(contact_id, phone, _PHONE_STATUSES[status], _SUBSCRIPTIONS[subscription]))
            for seq, contact_id, phone, status, subscription in rows
        ]

    async def reach(self, store_id: str, contact_ids: Collection[str]) -> dict[str, Reach]:
        """The phone and statuses of these contacts now: four columns by primary key, read on the
        reader's thread (an outbox chunk of 100 took 4 µs a contact of the loop inline)."""
        found: dict[str, Reach] = {}
        ordered = sorted(contact_ids)
        for i in range(0, len(ordered), _IN_CHUNK):
            chunk = ordered[i : i + _IN_CHUNK]
            rows = await self._db.fetch_all(
                "SELECT id, mobile_phone, mobile_phone_status, sms_subscription_status FROM contacts"
                f" WHERE store_id = ? AND id IN ({','.join('?' * len(chunk))})",
                (store_id, *chunk),
            )
            for contact_id, phone, status, subscription in rows:
                found[contact_id] = Reach(contact_id, phone, _PHONE_STATUSES[status], _SUBSCRIPTIONS[subscription])
        return found

    async def apply(self, store_id: str, changes: Sequence[tuple[ContactKey, Mutation]]) -> list[Outcome]:
        """Apply each change in order in one transaction; a refused change does not stop the others.

        One contact's change is a short transaction inline on the loop; an import batch runs on the
        database thread in one hop."""
        return await self._db.write_rows(len(changes), lambda conn: _apply(conn, store_id, changes))

    async def apply_by_phone(self, store_id: str, phone: str, mutation: Mutation) -> list[Touched]:
        """Apply `mutation` to every contact of the store with this phone."""
        return await self._db.write(lambda conn: apply_to_phone(conn, store_id, phone, mutation))

    async def delete(self, store_id: str, contact_id: str, etag: str) -> None:
        """Delete a contact and its activities."""
        name = str(ContactName(store_id, contact_id))
        await delete_checked(self._db, "contacts", store_id, contact_id, etag, name, "activities.contact_id")

    async def list_activities(
        self, store_id: str, contact_id: str, types: set[ActivityType] | None, before: int | None, limit: int
    ) -> list[Positioned[Activity]]:
        """A contact's activities older than `before`, newest first."""
        where = "store_id = ? AND contact_id = ? AND seq < ?"
        params: list[Any] = [store_id, contact_id, before if before is not None else 2**62]
        if types:
            where += f" AND type IN ({','.join('?' * len(types))})"
            params.extend(int(t) for t in sorted(types))
        rows = await self._db.fetch_all(
            f"SELECT * FROM activities WHERE {where} ORDER BY seq DESC LIMIT ?", (*params, limit)
        )
        return [Positioned(row["seq"], activity_from_row(row)) for row in rows]
