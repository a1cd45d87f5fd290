"""Phone normalisation in worker processes, so big imports parse numbers on every core."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from ..domain.phones import normalize_many, normalize_phone
from ..errors import InvalidArgument

__all__ = ["NormalizedPhones", "PhonePool"]


class NormalizedPhones:
    """The results for one batch of raw phones, used as a PhoneNormalizer."""

    def __init__(self, raws: Sequence[str], results: Sequence[str | tuple[str]]) -> None:
        self._results = dict(zip(raws, results, strict=True))

    def __call__(self, field: str, raw: str, default_country: str) -> str:
        result = self._results.get(raw)
        if result is None:  # not in the batch: do it here
            return normalize_phone(field, raw, default_country)
        if isinstance(result, tuple):
            raise InvalidArgument(field, result[0])
        return result


class PhonePool:
    """A process pool started on first use (spawned, so no gRPC state is forked); 0 workers = inline."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = max(0, (os.cpu_count() or 1) - 1) if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, raws: Sequence[str], default_country: str) -> asyncio.Future[NormalizedPhones]:
        """Start normalising; the future resolves to the batch's results."""
        loop = asyncio.get_running_loop()
        raws = [r for r in raws if r.strip()]
        if self._workers == 0 or len(raws) < 50:
            done: asyncio.Future[NormalizedPhones] = loop.create_future()
            done.set_result(NormalizedPhones(raws, normalize_many(raws, default_country)))
            return done
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        work = loop.run_in_executor(self._pool, normalize_many, raws, default_country)
        return asyncio.ensure_future(_wrap(raws, work))

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def exit_with_parent(parent_pid: int, every: float = 1.0) -> None:
    """In a worker: exit as soon as the server is gone. A worker's queues hold both ends of their
    pipes, so a server killed with SIGKILL would otherwise leave its workers waiting forever."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


async def _wrap(raws: Sequence[str], work: asyncio.Future[list[str | tuple[str]]]) -> NormalizedPhones:
    return NormalizedPhones(raws, await work)
