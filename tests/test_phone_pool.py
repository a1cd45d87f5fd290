"""The import's phone workers: the same answers as inline, and no worker outlives a killed server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from smschannel.errors import InvalidArgument
from smschannel.operations.phone_pool import PhonePool

from .procs import wait_for

RAWS = [f"612 {i:03d} 000" for i in range(60)] + ["call me"]


async def test_the_pool_answers_like_the_inline_path() -> None:
    pool, inline = PhonePool(1), PhonePool(0)
    try:
        pooled, direct = await pool.submit(RAWS, "ES"), await inline.submit(RAWS, "ES")
        for raw in RAWS[:-1]:
            assert pooled("mobile_phone", raw, "ES") == direct("mobile_phone", raw, "ES")
        with pytest.raises(InvalidArgument):
            pooled("mobile_phone", "call me", "ES")
    finally:
        pool.close()


SERVER_STAND_IN = """
import asyncio, sys
from smschannel.operations.phone_pool import PhonePool

async def main():
    pool = PhonePool(1)
    await pool.submit([f"612 {i:03d} 000" for i in range(60)], "ES")
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


def test_a_server_killed_with_sigkill_leaves_no_phone_worker_behind() -> None:
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
