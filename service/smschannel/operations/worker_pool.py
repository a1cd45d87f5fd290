"""Worker processes for CPU-bound work (an import's rows), so it runs on every core, not one."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import Unavailable
from ..gctuning import tune_gc

__all__ = ["WorkerPool", "exit_with_parent", "start_worker"]

T = TypeVar("T")


class WorkerPool:
    """A process pool started on first use (spawned, so no gRPC state is forked); 0 workers = inline.

    A worker that dies (killed, out of memory) breaks the pool: the calls in flight fail with
    Unavailable, and the next call starts a new pool."""

    def __init__(self, workers: int | None = None) -> None:
        self._workers = max(0, (os.cpu_count() or 1) - 1) if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: Any, inline: bool = False) -> asyncio.Future[T]:
        """Start `fn(*args)` in a worker, or here when `inline` (work too small to ship) or without
        workers. `fn` must be a module-level function and its arguments and answer picklable."""
        loop = asyncio.get_running_loop()
        if inline or self._workers == 0:
            done: asyncio.Future[T] = loop.create_future()
            try:
                done.set_result(fn(*args))
            except Exception as e:
                done.set_exception(e)
            return done
        pool = self._pool
        if pool is None:
            pool = self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
        try:
            work = loop.run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            self._forget(pool)  # a worker died before this call (killed, out of memory): start afresh
            return self.submit(fn, *args)
        return asyncio.ensure_future(self._answer(work, pool))

    async def _answer(self, work: asyncio.Future[T], pool: ProcessPoolExecutor) -> T:
        try:
            return await work
        except BrokenProcessPool:
            self._forget(pool)
            raise Unavailable("a worker process stopped (killed or out of memory): send the request again") from None

    def _forget(self, pool: ProcessPoolExecutor) -> None:
        """A broken pool answers nothing any more: the next call starts a new one."""
        if self._pool is pool:
            self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._forget(self._pool)


def start_worker(parent_pid: int) -> None:
    """A worker's set-up: the server's collector tuning, and exit when the server is gone."""
    tune_gc()
    exit_with_parent(parent_pid)


def exit_with_parent(parent_pid: int, every: float = 1.0) -> None:
    """In a worker: exit as soon as the server is gone. A worker's queues hold both ends of their
    pipes, so a server killed with SIGKILL would otherwise leave its workers waiting forever."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
