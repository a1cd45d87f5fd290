"""The dispatcher's hand-over of new messages, and why it never hands the same message over twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from smschannel.domain.enums import MessageStatus, RecipientMode, SmsType
from smschannel.domain.messages import Message
from smschannel.operations import dispatcher as dispatcher_module
from smschannel.operations.dispatcher import Dispatcher

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

    async def outbox(now: datetime, limit: int) -> list[Message]:
        # The chunk holding m1 is recorded SENT while this snapshot is taken: the snapshot still says
        # QUEUED, and m1 is no longer in flight.
        d._finished.add("m1")
        return [stale, queued("m2")]

    d = dispatcher_over(outbox)
    assert [m.id for m in await d._read_due(100)] == ["m2"]


async def test_handed_over_messages_are_taken_in_order_and_not_read_back() -> None:
    async def outbox(now: datetime, limit: int) -> list[Message]:
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

    async def outbox(now: datetime, limit: int) -> list[Message]:
        return [queued(f"m{i}") for i in range(5)]

    d = dispatcher_over(outbox)
    d.offer([queued(f"m{i}") for i in range(5)])
    assert len(d._ready) == 3
    assert [m.id for m in await d._read_due(100)] == ["m3", "m4"]
