"""The dispatcher's hand-over of new messages, and why it never hands the same message over twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from smschannel.domain.channel import ChannelConfig, FrequencyCap, SendingRules
from smschannel.domain.enums import MessageStatus, RecipientMode, SmsType
from smschannel.domain.messages import Message
from smschannel.domain.quiet_hours import QuietHours
from smschannel.operations import dispatcher as dispatcher_module
from smschannel.operations.dispatcher import Dispatcher
from smschannel.storage import MessageUpdate

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def queued(message_id: str) -> Message:
    return Message(
        "s1",
        message_id,
        SmsType.NEWSLETTER,
        RecipientMode.CONTACT,
        MessageStatus.QUEUED,
        NOW,
        NOW,
        next_attempt_time=NOW,
    )


def dispatcher_over(outbox: Any) -> Dispatcher:
    """A dispatcher whose outbox read is `outbox(now, limit)`; nothing else of it is used here."""
    storage = SimpleNamespace(messages=SimpleNamespace(due=outbox))
    return Dispatcher(cast(Any, storage), cast(Any, None), cast(Any, None), asyncio.Event(), clock=lambda: NOW)


async def test_an_outbox_read_leaves_out_what_finished_while_it_ran() -> None:
    stale = queued("m1")

    async def outbox(now: datetime, limit: int, own: bool = True) -> list[Message]:
        # The chunk holding m1 is recorded SENT while this snapshot is taken: the snapshot still says
        # QUEUED, and m1 is no longer in flight.
        d._finished.add("m1")
        return [stale, queued("m2")]

    d = dispatcher_over(outbox)
    assert [m.id for m in await d._read_due(100)] == ["m2"]


async def test_handed_over_messages_are_taken_in_order_and_not_read_back() -> None:
    async def outbox(now: datetime, limit: int, own: bool = True) -> list[Message]:
        return [queued("m1"), queued("m2"), queued("m3")]  # committed, so the outbox has them too

    d = dispatcher_over(outbox)
    d.offer([queued("m1"), queued("m2")])
    assert d.wakeup.is_set()
    assert [m.id for m in d._take_ready(1)] == ["m1"]
    d._in_flight.add("m1")
    assert [m.id for m in await d._read_due(100)] == ["m3"]  # m1 in flight, m2 still held
    assert [m.id for m in d._take_ready(100)] == ["m2"]
    assert d._take_ready(100) == []


async def test_the_hand_over_is_bounded_and_the_rest_waits_in_the_outbox(monkeypatch: Any) -> None:
    monkeypatch.setattr(dispatcher_module, "READY_MAX", 3)

    async def outbox(now: datetime, limit: int, own: bool = True) -> list[Message]:
        return [queued(f"m{i}") for i in range(5)]

    d = dispatcher_over(outbox)
    d.offer([queued(f"m{i}") for i in range(5)])
    assert len(d._ready) == 3
    assert [m.id for m in await d._read_due(100)] == ["m3", "m4"]


async def test_the_cap_counts_a_contacts_newsletter_still_on_its_way() -> None:
    """Two chunks for one contact in flight at once: the second reads the SENT count before the first
    is recorded, yet the cap of one lets only the first go."""
    updates: list[MessageUpdate] = []

    async def newsletters_received(store_id: str, contact_ids: object, since: datetime) -> dict[str, int]:
        return {}  # nothing recorded SENT yet: the first is still at Instasent

    async def update(changes: list[MessageUpdate]) -> list[bool]:
        updates.extend(changes)
        return [True] * len(changes)

    storage = SimpleNamespace(messages=SimpleNamespace(newsletters_received=newsletters_received, update=update))
    d = Dispatcher(cast(Any, storage), cast(Any, None), cast(Any, None), asyncio.Event(), clock=lambda: NOW)
    rules = SendingRules(
        quiet_hours=QuietHours(start=NOW.time(), end=NOW.time()), frequency_cap=FrequencyCap(1, timedelta(days=1))
    )
    config = ChannelConfig(store_id="s1", callback_secret="x", rules=rules)

    def to_ana(message_id: str) -> Message:
        return replace(queued(message_id), contact_id="ana", recipient="+34612345678")

    assert [m.id for m in await d._paced(config, [to_ana("m1")])] == ["m1"]  # on its way
    assert await d._paced(config, [to_ana("m2")]) == []
    (skipped,) = updates
    assert (skipped.message_id, skipped.status) == ("m2", MessageStatus.SKIPPED)
    assert skipped.reason.startswith("frequency_cap")
    # m1's chunk ends (its outcome stored): the in-flight count lets go of it.
    limiter = asyncio.Semaphore(0)

    async def delivered(store_id: str, chunk: list[Message], claimed_at: datetime | None) -> None:
        return None

    d._deliver = delivered  # type: ignore[method-assign]
    await d._send("s1", [to_ana("m1")], limiter, None)
    assert not d._capped_out
    assert not d._capped_ids


async def test_a_chunk_that_broke_is_read_again_even_by_a_read_under_way_as_it_ended() -> None:
    """A chunk that ends on an unexpected error is let go, QUEUED and due again: unlike a recorded one, an
    outbox read that ran while it ended must not leave it out (it claimed it: left out, it would wait for
    that claim to run out)."""
    let_go: list[MessageUpdate] = []

    async def update(changes: list[MessageUpdate]) -> list[bool]:
        let_go.extend(changes)
        return [True] * len(changes)

    async def outbox(now: datetime, limit: int, own: bool = True) -> list[Message]:
        await d._send("s1", [queued("m1")], limiter, None)  # ends while the read runs
        return [queued("m1")]

    storage = SimpleNamespace(messages=SimpleNamespace(due=outbox, update=update))
    d = Dispatcher(
        cast(Any, storage), cast(Any, None), cast(Any, None), asyncio.Event(), clock=lambda: NOW, retry_base=0
    )
    limiter = asyncio.Semaphore(0)

    async def broken(store_id: str, chunk: list[Message], claimed_at: datetime | None) -> None:
        raise RuntimeError("a bug")

    d._deliver = broken  # type: ignore[method-assign]
    d._in_flight.add("m1")
    assert [m.id for m in await d._read_due(100)] == ["m1"]
    (released,) = let_go
    assert (released.message_id, released.status, released.release) == ("m1", MessageStatus.QUEUED, True)
    assert released.next_attempt_time == NOW
