"""Helpers for the server's background loops (the outbox dispatcher, the workflow engine)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

__all__ = ["nap", "stop_task"]


async def stop_task(task: asyncio.Task[None] | None, grace: float) -> None:
    """Let `task` finish what it is doing within `grace` seconds, then cancel it."""
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def nap(wakeup: asyncio.Event, due: datetime | None, now: datetime, longest: float) -> None:
    """Sleep until `wakeup` is set, `due` comes, or `longest` seconds pass."""
    wakeup.clear()
    timeout = longest if due is None else min(longest, max(0.01, (due - now).total_seconds()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeup.wait(), timeout)
