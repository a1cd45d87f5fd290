"""Consent as a property (SPEC §3, §5, §6): the model of tests/consent_model.py against the real server,
sidecar and fake Instasent, over random interleavings with outages and restarts.

`make test` runs a bounded version; `make consent` a long one (CONSENT_EXAMPLES × CONSENT_STEPS steps).
A failure prints its seed (CONSENT_SEED=<seed> make consent replays it) and hypothesis's minimal
sequence of steps."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis.stateful import run_state_machine_as_test

from smschannel.instasent.fake import FakeInstasent

from . import consent_model
from .conftest import make_config

# A step takes longer on two replicas: a broadcast or a workflow run started through the replica that
# does not hold the engine's lease waits for the holder's next turn, up to a second. On PostgreSQL the
# bounded run takes fewer steps, to stay well within 40 s (`make consent` runs long).
BOUNDED = (30, 30) if consent_model.REPLICAS == 1 else (20, 15)
EXAMPLES = int(os.environ.get("CONSENT_EXAMPLES") or BOUNDED[0])
STEPS = int(os.environ.get("CONSENT_STEPS") or BOUNDED[1])


@pytest.fixture
async def consent_stack(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeInstasent
) -> AsyncIterator[consent_model.Stack]:
    """A server of its own (it restarts it), retrying Instasent quickly and without giving up, so that
    a message waits as long as an outage lasts. On PostgreSQL, REPLICAS of it on one database, with a
    short lease: should one lag, the other takes its claims and the engine within seconds, not 30."""
    config = make_config(
        tmp_path_factory.mktemp("consent"),
        instasent_base_url=fake.base_url,
        retry_max=0.1,
        retry_attempts=1_000_000,
    )
    configs = [config]
    if consent_model.REPLICAS > 1:  # the first with its outbox process (SMSCHANNEL_OUTBOX=process), the other inline
        lease = consent_model.REPLICA_LEASE
        configs = [
            replace(config, replica=f"r{i}", lease_seconds=lease, outbox="process" if i == 0 else "inline")
            for i in range(consent_model.REPLICAS)
        ]
    stack = consent_model.Stack(asyncio.get_running_loop(), fake, configs)
    await stack.start()
    try:
        yield stack
    finally:
        stack.close_channel()
        await stack.stop()


async def test_consent_holds_under_random_interleavings(consent_stack: consent_model.Stack) -> None:
    chosen = int(os.environ.get("CONSENT_SEED") or random.randrange(2**32))
    consent_model.STACK = consent_stack
    machine = seed(chosen)(consent_model.ConsentMachine)
    first = next(consent_model.steps_run)
    options = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    try:
        # The machine calls the server over real gRPC from a worker thread while this loop serves it.
        await asyncio.to_thread(run_state_machine_as_test, machine, settings=options)
    except BaseException:
        print(f"\nconsent model FAILED with seed {chosen}: CONSENT_SEED={chosen} make consent replays it")
        raise
    finally:
        consent_model.STACK = None
    steps = next(consent_model.steps_run) - first - 1
    print(
        f"\nconsent model: {EXAMPLES} examples, {steps} steps, {len(consent_stack.replicas)} replica(s),"
        f" {consent_stack.restarts} restarts,"
        f" {consent_model.seen['held']} held by quiet hours, {consent_model.seen['capped']} skipped by the cap,"
        f" seed {chosen}: every send, skip and status as the model says"
    )
