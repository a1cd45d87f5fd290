"""Callers write before background work (storage/priority.py): a provider callback or an API call
waits for the transaction under way, not behind every page and status write the engine and the
outbox have queued."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from smschannel.operations.dispatcher import Dispatcher
from smschannel.operations.workflow_engine import WorkflowEngine
from smschannel.storage import priority
from smschannel.storage.priority import WriteLock, in_background, mark_background
from smschannel.storage.sqlite.db import Database


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _all(tasks: list[asyncio.Task[None]]) -> None:
    """The writers' ends, within 5 s: a lock left held fails the test instead of hanging the suite."""
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)


async def _hold(lock: WriteLock, background: bool) -> None:
    """Take `lock` as a caller or as background work would (released with `lock.__aexit__`)."""

    async def take() -> None:
        if background:
            mark_background()
        await lock.__aenter__()

    await asyncio.create_task(take())


async def _queue_writers(
    lock: WriteLock, names: list[str], order: list[str], *, work: Callable[[], Awaitable[None]] | None = None
) -> list[asyncio.Task[None]]:
    """One task per name waiting for `lock` in this order, each recording its turn; `bg…` names do
    background work."""

    async def writer(name: str) -> None:
        if name.startswith("bg"):
            mark_background()
        async with lock:
            order.append(name)
            if work is not None:
                await work()

    tasks = []
    for name in names:
        tasks.append(asyncio.create_task(writer(name)))
        await _settle()  # queued in this order
    return tasks


async def test_waiting_callers_go_before_waiting_background_work_first_come_first_served_within_each() -> None:
    lock, order = WriteLock(), []
    await lock.__aenter__()
    tasks = await _queue_writers(lock, ["bg1", "c1", "bg2", "c2", "bg3"], order)
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    assert order == ["c1", "c2", "bg1", "bg2", "bg3"]
    assert not lock.locked()


async def test_callers_cannot_starve_background_work() -> None:
    lock, order = WriteLock(callers_in_a_row=2), []
    await _hold(lock, background=True)
    tasks = await _queue_writers(lock, ["bg1", "bg2", "c1", "c2", "c3", "c4", "c5"], order)
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    assert order == ["c1", "c2", "bg1", "c3", "c4", "bg2", "c5"]


async def test_nor_can_callers_that_hold_the_lock_long(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(priority, "time", SimpleNamespace(monotonic=lambda: clock.now))
    lock, order = WriteLock(callers_in_a_row=100, callers_for=0.025), []

    async def import_batch() -> None:
        clock.now += 0.01  # an import batch of a thousand rows

    await _hold(lock, background=True)
    tasks = await _queue_writers(lock, ["bg1", "c1", "c2", "c3", "c4", "c5", "c6"], order, work=import_batch)
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    assert order == ["c1", "c2", "c3", "bg1", "c4", "c5", "c6"]  # 30 ms of callers, then the background


async def test_a_caller_arriving_while_background_work_waits_still_goes_first() -> None:
    lock, order = WriteLock(), []
    writing, go = asyncio.Event(), asyncio.Event()

    async def first_page() -> None:
        if order == ["bg1"]:
            writing.set()
            await go.wait()

    async def caller() -> None:
        async with lock:
            order.append("c-late")

    await lock.__aenter__()
    tasks = await _queue_writers(lock, ["bg1", "bg2"], order, work=first_page)
    await lock.__aexit__(None, None, None)
    await writing.wait()  # bg1 writes, bg2 waits: now a caller comes
    tasks.append(asyncio.create_task(caller()))
    await _settle()
    go.set()
    await _all(tasks)
    assert order == ["bg1", "c-late", "bg2"]


async def test_a_cancelled_waiter_is_skipped_and_one_cancelled_as_it_is_handed_the_lock_hands_it_on() -> None:
    lock, order = WriteLock(), []
    await lock.__aenter__()
    tasks = await _queue_writers(lock, ["c1", "c2", "bg1"], order)
    tasks[0].cancel()  # gone while it waits
    await _settle()
    await lock.__aexit__(None, None, None)  # handed to c2 ...
    tasks[1].cancel()  # ... cancelled before it runs: it must pass the lock on, not keep it
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks, return_exceptions=True)
    assert order == ["bg1"]
    assert not lock.locked()
    async with asyncio.timeout(1), lock:  # and it is free again
        assert lock.locked()
    assert not lock.locked()


async def test_the_background_mark_holds_for_the_task_and_those_it_starts_not_for_its_caller() -> None:
    seen: dict[str, bool] = {}

    async def child() -> None:
        seen["child"] = in_background()

    async def background() -> None:
        mark_background()
        seen["task"] = in_background()
        await asyncio.create_task(child())

    await asyncio.create_task(background())
    seen["caller"] = in_background()
    assert seen == {"task": True, "child": True, "caller": False}


async def test_a_callers_write_waits_for_the_transaction_under_way_not_for_the_queued_background_writes(
    tmp_path: Path,
) -> None:
    db = await Database.open(str(tmp_path / "p.db"))
    order: list[str] = []
    loop, writing, go = asyncio.get_running_loop(), asyncio.Event(), threading.Event()

    def page(name: str) -> Callable[[sqlite3.Connection], None]:
        def fn(conn: sqlite3.Connection) -> None:  # on the database thread
            loop.call_soon_threadsafe(writing.set)
            go.wait(5)  # the first page holds the lock until the caller waits for it
            order.append(name)

        return fn

    async def background() -> None:
        mark_background()
        await asyncio.gather(*(db.write_batch(page(f"page{i}")) for i in range(10)))

    try:
        async with asyncio.timeout(10):
            pages = asyncio.create_task(background())
            await writing.wait()
            callback = asyncio.create_task(db.write(lambda conn: order.append("callback")))
            await _settle()  # queued behind page0, with page1-9
            go.set()
            await callback
            await pages
    finally:
        await db.close()
    assert order[:2] == ["page0", "callback"], order


async def test_the_outbox_and_the_engine_write_as_background_work() -> None:
    seen: dict[str, bool] = {}
    both = asyncio.Event()

    def note(who: str) -> None:
        seen[who] = in_background()
        if len(seen) == 2:
            both.set()

    async def next_due() -> None:
        note("outbox")

    async def hold(*args: Any) -> bool:
        note("engine")
        return False

    storage = SimpleNamespace(messages=SimpleNamespace(next_due=next_due), meta=SimpleNamespace(hold=hold))
    # As an outbox process's (nothing handed over): it asks the outbox when the next message is due.
    dispatcher = Dispatcher(cast(Any, storage), cast(Any, None), cast(Any, None), asyncio.Event(), handed_over=False)
    engine = WorkflowEngine(cast(Any, storage), cast(Any, None), cast(Any, None))
    dispatcher.start()
    engine.start()
    try:
        await asyncio.wait_for(both.wait(), 10)
    finally:
        await dispatcher.stop(1.0)
        await engine.stop(1.0)
    assert seen == {"outbox": True, "engine": True}
    assert not in_background()


@pytest.mark.parametrize("bound", [1, 3])
async def test_with_only_background_work_waiting_it_goes_in_order(bound: int) -> None:
    lock, order = WriteLock(callers_in_a_row=bound), []
    await lock.__aenter__()
    tasks = await _queue_writers(lock, ["bg1", "bg2", "bg3"], order)
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    assert order == ["bg1", "bg2", "bg3"]


async def test_a_caller_that_had_to_wait_is_remembered_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    lock, order = WriteLock(), []
    async with lock:  # taken at once: nobody waited
        assert lock.locked()
    await lock.__aenter__()
    tasks = await _queue_writers(lock, ["c1", "bg1"], order)
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    assert not lock.callers_waited(1.0)  # for another caller, and background work waiting: neither counts
    await _hold(lock, background=True)
    tasks = await _queue_writers(lock, ["c2"], order)
    assert lock.callers_waited(1.0)  # for background work
    await lock.__aexit__(None, None, None)
    await _all(tasks)
    later = time.monotonic() + 2
    monkeypatch.setattr(priority, "time", SimpleNamespace(monotonic=lambda: later))
    assert lock.callers_waited(3.0)
    assert not lock.callers_waited(1.0)
