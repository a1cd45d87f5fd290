"""Helpers for the server's background loops (the outbox dispatcher, the workflow engine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["Backoff", "nap", "stop_task"]


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


@dataclass
class Backoff:
    """Exponential retry delays per key (e.g. a workflow and its version): what keeps failing is tried
    less and less often, without delaying anything else."""

    first: timedelta
    longest: timedelta
    _failures: dict[Hashable, tuple[int, datetime]] = field(default_factory=dict)

    def ready(self, key: Hashable, now: datetime) -> bool:
        """Whether `key` may be tried now."""
        entry = self._failures.get(key)
        return entry is None or entry[1] <= now

    def failed(self, key: Hashable, now: datetime) -> tuple[int, datetime]:
        """Count a failure of `key`: its number of failures in a row and when to try it again."""
        count = self._failures.get(key, (0, now))[0] + 1
        delay = min(self.longest, self.first * 2 ** min(count - 1, 30))
        self._failures[key] = (count, now + delay)
        return self._failures[key]

    def succeeded(self, key: Hashable) -> None:
        """Forget the failures of `key`."""
        self._failures.pop(key, None)

    def forget_others(self, keys: set[Hashable]) -> None:
        """Drop every key but these (the ones still worth tracking), so the table stays small."""
        for key in self._failures.keys() - keys:
            del self._failures[key]
