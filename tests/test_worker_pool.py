"""The import's workers: the same answers as inline, and no worker outlives a killed server."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time

import pytest

from smschannel.api.contacts_proto import parse_import_rows
from smschannel.errors import Unavailable
from smschannel.gctuning import FULL_COLLECTION_EVERY
from smschannel.operations.worker_pool import WorkerPool
from smschannel.v1 import contacts_service_pb2 as pb

from .procs import wait_for

ROWS = pb.ImportContactsRequest(
    contacts=[pb.Contact(email=f"c{i}@x.co", mobile_phone=f"612 {i:03d} 000", first_name="Ana") for i in range(60)]
    + [pb.Contact(email="bad@x.co", mobile_phone="call me"), pb.Contact(first_name="no key")]
).SerializeToString()


async def test_the_pool_answers_like_the_inline_path() -> None:
    pool = WorkerPool(1)
    try:
        pooled = await pool.submit(parse_import_rows, ROWS, "s1", "ES")
        direct = await WorkerPool(0).submit(parse_import_rows, ROWS, "s1", "ES")
        assert pooled == direct
        assert [r[2].mobile_phone for r in pooled[:2] if isinstance(r, tuple)] == ["+34612000000", "+34612001000"]
        assert [[v.field for v in r] for r in pooled[-2:] if isinstance(r, list)] == [["mobile_phone"], ["email"]]
    finally:
        pool.close()


async def test_a_worker_that_dies_fails_its_call_and_the_next_call_gets_a_new_pool() -> None:
    pool = WorkerPool(1)
    try:
        assert await pool.submit(sorted, [2, 1]) == [1, 2]
        assert pool._pool is not None
        (worker,) = pool._pool._processes  # the worker (private attribute: there is no public one)
        slow = pool.submit(time.sleep, 30)
        os.kill(worker, signal.SIGKILL)  # as the kernel's OOM killer would
        with pytest.raises(Unavailable):
            await asyncio.wait_for(slow, 20)
        assert await asyncio.wait_for(pool.submit(parse_import_rows, ROWS, "s1", "ES"), 20) == await WorkerPool(
            0
        ).submit(parse_import_rows, ROWS, "s1", "ES")
    finally:
        pool.close()


SERVER_STAND_IN = """
import asyncio, sys
from smschannel.operations.worker_pool import WorkerPool

async def main():
    pool = WorkerPool(1)
    await pool.submit(sorted, [3, 1, 2])
    print(*pool._pool._processes, flush=True)  # the worker pids
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, the killed stand-in, cannot reap it).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_server_killed_with_sigkill_leaves_no_worker_behind() -> None:
    with subprocess.Popen([sys.executable, "-c", SERVER_STAND_IN], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            workers = [int(pid) for pid in proc.stdout.readline().split()]
            assert workers
            assert all(alive(pid) for pid in workers)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            wait_for(lambda: not any(alive(pid) for pid in workers), timeout=10, what="the orphaned workers to exit")
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_workers_run_with_the_servers_collector_tuning() -> None:
    pool = WorkerPool(1)
    try:
        assert (await pool.submit(gc.get_threshold))[2] == FULL_COLLECTION_EVERY
        assert await pool.submit(gc.get_freeze_count) > 0
    finally:
        pool.close()


def test_the_server_process_tunes_its_collector_once_started() -> None:
    # In a process of its own: freezing this test process's heap would outlive the test.
    code = (
        "import gc; from smschannel.gctuning import tune_gc; tune_gc();"
        "print(gc.get_threshold()[2], gc.get_freeze_count() > 0, gc.get_count()[0] < 50)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(FULL_COLLECTION_EVERY), "True", "True"]
