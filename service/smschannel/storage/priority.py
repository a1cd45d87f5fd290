"""Callers write before background work.

The workflow engine and the outbox write in bulk and without pause while a newsletter goes out (a page
of runs and messages, a chunk's statuses: milliseconds each). A provider callback or an API call that
writes meanwhile waited in one first-come queue behind all of them, so callbacks were absorbed at a
fraction of the send rate while sending, the backlog the sidecar exists to prevent (bench/callbacks,
"while sending"). So the background tasks mark themselves, and a storage's write lock lets a waiting
caller in before any waiting background writer: a caller waits for the transaction under way and for
the callers ahead of it, not for the background writes queued. The lock also tells when a caller
waited for background work (`callers_waited`), so that background work can write in smaller
transactions meanwhile (the workflow engine's broadcast pages).

Callers cannot starve the background: once callers have gone first CALLERS_IN_A_ROW times, or held
the lock CALLERS_FOR seconds, while background work waited, the oldest background writer goes next.
Tenants that flood write RPCs or imports slow sending for everyone, never stop it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from contextvars import ContextVar
from types import TracebackType

__all__ = ["CALLERS_FOR", "CALLERS_IN_A_ROW", "WriteLock", "in_background", "mark_background"]

CALLERS_IN_A_ROW = 8  # callbacks and single-row RPCs: a millisecond or two each
CALLERS_FOR = 0.025  # seconds: an import batch holds the lock about 10 ms

_BACKGROUND: ContextVar[bool] = ContextVar("smschannel_background", default=False)


def mark_background() -> None:
    """The current task, and the tasks it starts from now on, do background work."""
    _BACKGROUND.set(True)


def in_background() -> bool:
    """Whether the current task does background work (`mark_background`)."""
    return _BACKGROUND.get()


class WriteLock:
    """An asyncio lock that lets waiting callers in before waiting background work (`mark_background`),
    first come first served within each, up to a bound (CALLERS_IN_A_ROW, CALLERS_FOR) while
    background work waits."""

    def __init__(self, callers_in_a_row: int = CALLERS_IN_A_ROW, callers_for: float = CALLERS_FOR) -> None:
        self._locked = False
        self._callers: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()
        self._callers_in_a_row = callers_in_a_row
        self._callers_for = callers_for
        self._holder_is_caller = False
        self._held_since = 0.0  # time.monotonic() when the holder was let in
        # Callers let in, and the seconds they held it, while background work waited, since its last turn.
        self._ahead = 0
        self._ahead_for = 0.0
        self._caller_waited = -float("inf")  # when a caller last had to wait for background work

    def locked(self) -> bool:
        """Whether a writer holds it."""
        return self._locked

    def callers_waited(self, within: float) -> bool:
        """Whether a caller had to wait for background work in the last `within` seconds."""
        return time.monotonic() - self._caller_waited < within

    async def __aenter__(self) -> None:
        caller = not in_background()
        if not self._locked:  # free: then nobody waits either (a release hands it straight on)
            self._let_in(caller)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._callers if caller else self._background
        queue.append(waiter)
        if caller and not self._holder_is_caller:
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

    def _let_in(self, caller: bool) -> None:
        self._locked, self._holder_is_caller, self._held_since = True, caller, time.monotonic()

    def _release(self) -> None:
        """Hand the lock to the next waiter (it stays locked), or unlock."""
        if self._holder_is_caller and self._background:
            self._ahead += 1
            self._ahead_for += time.monotonic() - self._held_since
        background_turn = self._ahead >= self._callers_in_a_row or self._ahead_for >= self._callers_for
        for queue in (self._background, self._callers) if background_turn else (self._callers, self._background):
            while queue:
                waiter = queue.popleft()
                if waiter.done():  # cancelled while it waited
                    continue
                caller = queue is self._callers
                if not caller:
                    self._ahead, self._ahead_for = 0, 0.0
                self._let_in(caller)
                waiter.set_result(None)
                return
        self._locked = False
        self._ahead, self._ahead_for = 0, 0.0
