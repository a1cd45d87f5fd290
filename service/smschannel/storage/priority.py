"""Callers write before background work.

The workflow engine and the outbox write in bulk and without pause while a newsletter goes out (a page
of runs and messages, a chunk's statuses: milliseconds each). A provider callback or an API call that
writes meanwhile waited in one first-come queue behind all of them, so callbacks were absorbed at a
fraction of the send rate while sending, the backlog the sidecar exists to prevent (bench/callbacks,
"while sending"). So the background tasks mark themselves, and a storage's write lock lets a waiting
caller in before any waiting background writer: a caller waits at most for the transaction under way.

Background work also writes in smaller transactions while callers wait (`callers_waited`): a caller
then waits for less. The workflow engine pages a broadcast by BROADCAST_PAGE_SHARED contacts instead
of BROADCAST_PAGE meanwhile.

Callers cannot starve the background: after CALLERS_IN_A_ROW callers have gone first while background
work waited, the oldest background writer goes next. A tenant that floods write RPCs slows sending
for everyone by at most that share, never stops it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextvars import ContextVar
from types import TracebackType

__all__ = ["CALLERS_IN_A_ROW", "WriteLock", "in_background", "mark_background"]

CALLERS_IN_A_ROW = 8

_BACKGROUND: ContextVar[bool] = ContextVar("smschannel_background", default=False)


def mark_background() -> None:
    """The current task, and the tasks it starts from now on, do background work."""
    _BACKGROUND.set(True)


def in_background() -> bool:
    """Whether the current task does background work (`mark_background`)."""
    return _BACKGROUND.get()


class WriteLock:
    """An asyncio lock that lets waiting callers in before waiting background work (`mark_background`),
    first come first served within each, up to CALLERS_IN_A_ROW callers ahead of background work."""

    def __init__(self, callers_in_a_row: int = CALLERS_IN_A_ROW) -> None:
        self._locked = False
        self._callers: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        self._callers_in_a_row = callers_in_a_row
        self._ahead = 0  # callers let in while background work waited, since the last background turn
        self._caller_waited = -float("inf")  # when a caller last had to wait (time.monotonic)

    def locked(self) -> bool:
        """Whether a writer holds it."""
        return self._locked

    def callers_waited(self, within: float) -> bool:
        """Whether a caller had to wait for it in the last `within` seconds."""
        return time.monotonic() - self._caller_waited < within

    async def __aenter__(self) -> None:
        if not self._locked:  # free: then nobody waits either (a release hands it straight on)
            self._locked = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._background if in_background() else self._callers
        queue.append(waiter)
        if queue is self._callers:
            self._caller_waited = time.monotonic()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed the lock as it was cancelled: hand it on
            elif waiter in queue:  # (a release may have dropped it already)
                queue.remove(waiter)
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        """Hand the lock to the next waiter (it stays locked), or unlock."""
        background_turn = self._ahead >= self._callers_in_a_row
        for queue in (self._background, self._callers) if background_turn else (self._callers, self._background):
            while queue:
                waiter = queue.popleft()
                if waiter.done():  # cancelled while it waited
                    continue
                if queue is self._callers and self._background:
                    self._ahead += 1
                else:
                    self._ahead = 0
                waiter.set_result(None)
                return
        self._locked = False
        self._ahead = 0
