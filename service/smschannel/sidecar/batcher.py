"""Callbacks in flight, grouped into BatchReportProviderEvents calls.

Every SMS sent comes back as one or more callbacks, so the sidecar must absorb them as fast as the
outbox sends. One RPC and one transaction per callback cannot: the server's cost is mostly per call
and per commit. So up to IN_FLIGHT batches are on their way at once, and the callbacks that arrive
meanwhile wait and leave together, up to MAX_BATCH, in one call that the server applies in one
transaction. Nothing waits for a timer: with a call free a callback leaves at once (on the next turn
of the loop, with whatever arrived in the same turn), so a quiet sidecar adds no latency, and a busy
one batches as much as the server's pace lets it. Each caller is answered with its own result once the
batch is stored: never an acknowledgement before durability.

Instasent wants an answer within 5 s, so each callback has a DEADLINE from its arrival: past it the
caller answers 503 (Instasent retries; a callback stored meanwhile is then a duplicate), and a batch's
call gets only the time its oldest callback has left. A batch takes the stores' callbacks in turn, so
one store's flood does not hold up another store's `stop`; beyond MAX_WAITING waiting callbacks the
sidecar is overloaded and answers 503 at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..v1 import sms_channel_service_pb2 as pb

__all__ = ["DEADLINE", "MAX_BATCH", "Batcher", "Overloaded"]

MAX_BATCH = 200  # callbacks per call (the server takes up to 500)
MAX_WAITING = 2_000  # callbacks waiting for a call, beyond which new ones are refused at once
# Calls at once: while one is applied, another is on its way (and the next fills). With one, the server
# waited for each batch to cross the wire both ways: 7,259 callbacks/s against 10,007 with two
# (bench/callbacks, the same machine), at less CPU a callback on both sides. Two calls may commit in
# either order, as Instasent's own workers may deliver: statuses only move forward (a late `sent`
# changes nothing), a repeated callback is a duplicate, and a stop or a rejection applies either way.
IN_FLIGHT = 2
DEADLINE = 4.5  # seconds from a callback's arrival to its answer

Send = Callable[[pb.BatchReportProviderEventsRequest, float], Awaitable[pb.BatchReportProviderEventsResponse]]


class Overloaded(Exception):
    """Too many callbacks wait already: answer 503 now rather than late."""


@dataclass(frozen=True, slots=True)
class _Waiting:
    request: pb.ReportProviderEventRequest
    done: asyncio.Future[pb.ProviderEventResult]
    deadline: float  # the loop's clock


@dataclass
class Batcher:
    """Send callbacks through `send(batch, timeout)` (the batch RPC with its metadata) in groups."""

    send: Send
    max_batch: int = MAX_BATCH
    max_waiting: int = MAX_WAITING
    in_flight: int = IN_FLIGHT
    deadline: float = DEADLINE
    _waiting: dict[str, deque[_Waiting]] = field(default_factory=dict)  # by store (the request's parent)
    _count: int = 0
    _calls: set[asyncio.Task[None]] = field(default_factory=set)  # held, so they are not collected midway
    _scheduled: bool = False

    async def report(self, request: pb.ReportProviderEventRequest) -> pb.ProviderEventResult:
        """The callback's result once its batch is applied; the batch's RPC error if it failed;
        TimeoutError past the deadline; Overloaded when too many callbacks wait."""
        if self._count >= self.max_waiting:
            raise Overloaded
        loop = asyncio.get_running_loop()
        done: asyncio.Future[pb.ProviderEventResult] = loop.create_future()
        self._waiting.setdefault(request.parent, deque()).append(_Waiting(request, done, loop.time() + self.deadline))
        self._count += 1
        if self._count >= self.max_batch and len(self._calls) < self.in_flight:
            self._flush()
        elif not self._scheduled and len(self._calls) < self.in_flight:
            self._scheduled = True  # on the next turn: the callbacks that arrive in this one go along
            loop.call_soon(self._flush)
        return await asyncio.wait_for(done, self.deadline)  # on timeout `done` is cancelled: left out

    def _flush(self) -> None:
        self._scheduled = False
        while self._count and len(self._calls) < self.in_flight:
            batch = self._take()
            if not batch:
                break
            call = asyncio.ensure_future(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._landed)

    def _take(self) -> list[_Waiting]:
        """Up to max_batch waiting callbacks, one store's after another's in turn; gone callers left out."""
        batch: list[_Waiting] = []
        while self._waiting and len(batch) < self.max_batch:
            for parent in list(self._waiting):
                queue = self._waiting[parent]
                waiting = queue.popleft()
                self._count -= 1
                if not queue:
                    del self._waiting[parent]
                if not waiting.done.done():
                    batch.append(waiting)
                if len(batch) >= self.max_batch:
                    break
        return batch

    async def _call(self, batch: list[_Waiting]) -> None:
        timeout = max(0.05, min(w.deadline for w in batch) - asyncio.get_running_loop().time())
        try:
            request = pb.BatchReportProviderEventsRequest(requests=[w.request for w in batch])
            answer = await self.send(request, timeout)
            if len(answer.results) != len(batch):
                raise RuntimeError(f"{len(answer.results)} results for {len(batch)} callbacks")
        except Exception as e:  # the call failed as a whole (the server away, a deadline): each caller learns it
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(e)
        else:
            for w, result in zip(batch, answer.results, strict=True):
                if not w.done.done():
                    w.done.set_result(result)

    def _landed(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._flush()  # what piled up while this batch was on its way
