"""Callbacks in flight, grouped into BatchReportProviderEvents calls.

Every SMS sent comes back as one or more callbacks, so the sidecar must absorb them as fast as the
outbox sends. One RPC and one transaction per callback cannot: the server's cost is mostly per call
and per commit. So the callbacks that arrive while earlier batches are on their way wait and leave
together, up to MAX_BATCH, in one call that the server applies in one transaction. Nothing waits
for a timer: with no batch in flight a callback leaves at once (on the next turn of the loop, with
whatever arrived in the same turn), so a quiet sidecar adds no latency, and a busy one batches as
much as the server's pace lets it. Each caller is answered with its own result once the batch is
stored: never an acknowledgement before durability.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..v1 import sms_channel_service_pb2 as pb

__all__ = ["MAX_BATCH", "Batcher"]

MAX_BATCH = 200  # callbacks per call (the server takes up to 500)
IN_FLIGHT = 1  # calls at once: while one is applied, the next one fills

Send = Callable[[pb.BatchReportProviderEventsRequest], Awaitable[pb.BatchReportProviderEventsResponse]]


@dataclass
class Batcher:
    """Send callbacks through `send` (the batch RPC, with its metadata and deadline) in groups."""

    send: Send
    max_batch: int = MAX_BATCH
    in_flight: int = IN_FLIGHT
    _waiting: list[tuple[pb.ReportProviderEventRequest, asyncio.Future[pb.ProviderEventResult]]] = field(
        default_factory=list
    )
    _calls: set[asyncio.Task[None]] = field(default_factory=set)  # held, so they are not collected midway
    _scheduled: bool = False

    @property
    def _flying(self) -> int:
        return len(self._calls)

    async def report(self, request: pb.ReportProviderEventRequest) -> pb.ProviderEventResult:
        """The callback's result once its batch is applied; the batch's RPC error if it failed."""
        done: asyncio.Future[pb.ProviderEventResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, done))
        if len(self._waiting) >= self.max_batch and self._flying < self.in_flight:
            self._flush()
        elif not self._scheduled and self._flying < self.in_flight:
            self._scheduled = True  # on the next turn: the callbacks that arrive in this one go along
            asyncio.get_running_loop().call_soon(self._flush)
        return await done

    def _flush(self) -> None:
        self._scheduled = False
        while self._waiting and self._flying < self.in_flight:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            call = asyncio.ensure_future(self._call(batch))
            self._calls.add(call)
            call.add_done_callback(self._landed)

    async def _call(
        self, batch: list[tuple[pb.ReportProviderEventRequest, asyncio.Future[pb.ProviderEventResult]]]
    ) -> None:
        try:
            answer = await self.send(pb.BatchReportProviderEventsRequest(requests=[r for r, _ in batch]))
            if len(answer.results) != len(batch):
                raise RuntimeError(f"{len(answer.results)} results for {len(batch)} callbacks")
        except Exception as e:  # the call failed as a whole (the server away, a deadline): each caller learns it
            for _, done in batch:
                if not done.done():
                    done.set_exception(e)
        else:
            for (_, done), result in zip(batch, answer.results, strict=True):
                if not done.done():
                    done.set_result(result)

    def _landed(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        self._flush()  # what piled up while this batch was on its way
