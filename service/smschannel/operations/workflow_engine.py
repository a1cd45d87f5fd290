"""The workflow engine: durable runs, stepped in rounds (SPEC §8).

Each round takes the runs that are ready, moves each one node, and saves every run's new position and
step in one transaction. The Send SMS nodes of a round go to the outbox together (one transaction, then
bulk requests), with an idempotency key of workflow + run + step number, so a crash before the round
is saved makes the next round take the same step again and find the same message: never twice, never
skipped. Waits are timers in the database. Broadcasts turn contacts into runs a page at a time, each
new run taking its first step at once; the runs are written with the broadcast's cursor, so a
broadcast runs in bounded memory and survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from ..domain.contacts import Contact
from ..domain.enums import ActivitySource, RecipientMode, SmsType
from ..domain.messages import Message
from ..domain.workflows import (
    EndStep,
    ReceivedSmsStep,
    Run,
    RunState,
    RunStep,
    SendSmsStep,
    UpdateContactStep,
    WaitStep,
    Workflow,
    compare_count,
    received_window,
)
from ..errors import DomainError
from ..storage import RunUpdate, Storage
from .background import nap, stop_task
from .contacts import ContactOps, contact_query
from .sending import Sender, SendRequest

__all__ = ["WorkflowEngine"]

log = logging.getLogger("smschannel.workflows")

ROUND = 300  # runs per round
BROADCAST_BATCH = 150  # contacts turned into runs per transaction (its work blocks the loop in slices)
MAX_STEPS = 1000  # a run that takes more steps than this is failed (a runaway loop)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class WorkflowEngine:
    """One background task per server process."""

    storage: Storage
    sender: Sender
    contacts: ContactOps
    clock: Callable[[], datetime] = field(default=_utcnow)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop(), name="workflow-engine")

    async def stop(self, grace: float) -> None:
        """Finish the round in progress (within `grace`); runs resume from the database."""
        self._stopping = True
        self.wakeup.set()
        await stop_task(self._task, grace)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                busy = await self.broadcast_batch() or await self.round()
            except Exception:
                log.exception("workflow round failed; retrying")
                busy = False
                await asyncio.sleep(1.0)
            if not busy:
                await self._sleep()
            else:
                await asyncio.sleep(0)  # let RPCs in between rounds

    async def _sleep(self) -> None:
        await nap(self.wakeup, await self.storage.workflows.next_wake(), self.clock(), 1.0)

    # -- starting runs -----------------------------------------------------------------------

    def new_run(self, wf: Workflow, contact_id: str, run_id: str, event: dict[str, str], request_id: str = "") -> Run:
        """A run at the start node, ready now."""
        now = self.clock()
        return Run(
            wf.store_id, wf.id, run_id, contact_id, RunState.RUNNING, wf.start_node, now, now, now, event, request_id
        )

    async def start_runs(self, runs: list[Run]) -> list[Run]:
        """Store runs and wake the loop."""
        created = await self.storage.workflows.add_runs([RunUpdate(run) for run in runs])
        if created:
            self.wakeup.set()
        return created

    async def contacts_created(self, store_id: str, contacts: list[Contact]) -> None:
        """The contact-created trigger: a run per new contact in every such ACTIVE workflow."""
        workflows = await self.storage.workflows.active_for(store_id, "contact_created")
        runs = [self.new_run(wf, c.id, f"c-{c.id}", {}) for wf in workflows for c in contacts]
        if runs:
            await self.start_runs(runs)

    async def broadcast_batch(self) -> bool:
        """Turn the next contacts of due broadcasts into runs; True if there was work.

        Each new run takes its first step at once, with the contact already read: a newsletter's
        messages are queued as the contacts are paged, and each run is written once, in the same
        transaction as the broadcast's cursor."""
        did = False
        for wf, after in await self.storage.workflows.broadcasts_due():
            if wf.trigger.start_time is not None and wf.trigger.start_time > self.clock():
                continue
            config = await self.storage.channel_configs.get(wf.store_id)
            query = contact_query(wf.trigger.contact_filter, config.default_country if config else "")
            rows = await self.storage.contacts.page(wf.store_id, query, after, BROADCAST_BATCH)
            runs = [self.new_run(wf, c.id, f"b-{c.id}", {}) for _, c in rows]
            updates = await self._advance(runs, self.clock(), {c.id: c for _, c in rows})
            cursor = rows[-1][0] if rows else after
            await self.storage.workflows.add_runs(updates, (wf.store_id, wf.id, cursor, len(rows) < BROADCAST_BATCH))
            did = did or bool(rows)
        if did:
            self.wakeup.set()  # runs that moved on to a next node
        return did

    # -- stepping --------------------------------------------------------------------------------

    async def round(self) -> bool:
        """Move every ready run one node; True if there was work."""
        now = self.clock()
        runs = await self.storage.workflows.due_runs(now, ROUND)
        if not runs:
            return False
        await self.storage.workflows.save_round(await self._advance(runs, now))
        return True

    async def _advance(
        self, runs: list[Run], now: datetime, contacts: dict[str, Contact] | None = None
    ) -> list[RunUpdate]:
        """Each run's move by one node (not saved). `contacts` are the runs' contacts when already read."""
        workflows: dict[tuple[str, str], Workflow | None] = {}
        for run in runs:
            key = (run.store_id, run.workflow_id)
            if key not in workflows:
                workflows[key] = await self.storage.workflows.get(*key)
        updates: list[RunUpdate] = []
        sends: list[tuple[Run, SendSmsStep, SendRequest]] = []
        for n, run in enumerate(runs):
            if n % 50 == 49:
                await asyncio.sleep(0)  # keep the loop responsive to other RPCs during big rounds
            wf = workflows[(run.store_id, run.workflow_id)]
            node = wf.node(run.current_node) if wf else None
            if wf is None or node is None or run.step_count >= MAX_STEPS:
                why = "failed: the node no longer exists" if wf and not node else "failed: too many steps"
                updates.append(self._moved(run, RunState.FAILED, run.current_node, now, why))
                continue
            step = node.step
            if isinstance(step, SendSmsStep):
                known = contacts.get(run.contact_id) if contacts else None
                sends.append((run, step, await self._send_request(wf, run, step, known)))
            elif isinstance(step, ReceivedSmsStep):
                since, until = received_window(step, now)
                count = await self.storage.messages.count_received(
                    run.store_id,
                    run.contact_id,
                    step.sms_content,
                    None if step.type is SmsType.UNSPECIFIED else step.type,
                    since,
                    until,
                )
                yes = compare_count(step, count)
                updates.append(
                    self._go(run, step.yes_next if yes else step.no_next, now, f"{'yes' if yes else 'no'} ({count})")
                )
            elif isinstance(step, WaitStep):
                updates.append(self._wait(run, step, now))
            elif isinstance(step, UpdateContactStep):
                updates.append(await self._update_contact(wf, run, step, now))
            else:  # EndStep or a node that says nothing
                assert step is None or isinstance(step, EndStep)
                updates.append(self._moved(run, RunState.COMPLETED, run.current_node, now, "ended"))
        if sends:
            results = await self.sender.send_many([req for _, _, req in sends])
            for (run, step, _), result in zip(sends, results, strict=True):
                updates.append(self._sent(run, step, result, now))
        return updates

    async def _send_request(self, wf: Workflow, run: Run, step: SendSmsStep, contact: Contact | None) -> SendRequest:
        if contact is None and step.recipient_mode is RecipientMode.ALERT and run.contact_id:
            contact = await self.storage.contacts.get(run.store_id, run.contact_id)  # for its fields in the text
        return SendRequest(
            store_id=run.store_id,
            content_id=step.sms_content,
            type=step.type,
            mappings=step.variables,
            sender=step.sender,
            contact_id=run.contact_id if step.recipient_mode is RecipientMode.CONTACT else "",
            alert_phone=step.alert_phone,
            request_id=f"wf:{wf.id}:{run.id}:{run.step_count}",
            workflow_id=wf.id,
            workflow_node=run.current_node,
            workflow_run=run.id,
            event=run.event,
            contact=contact,
        )

    def _sent(self, run: Run, step: SendSmsStep, result: Message | DomainError, now: datetime) -> RunUpdate:
        if isinstance(result, DomainError):
            return self._moved(run, RunState.FAILED, run.current_node, now, f"failed: {result.message}")
        outcome = result.status.name.lower() + (f": {result.status_reason}" if result.status_reason else "")
        return self._go(run, step.next, now, outcome, result.id)

    def _wait(self, run: Run, step: WaitStep, now: datetime) -> RunUpdate:
        if run.state is RunState.WAITING:  # the timer rang
            return self._go(run, step.next, now, "waited")
        wake = step.until if step.until is not None else now + (step.duration or timedelta(0))
        if wake <= now:
            return self._go(run, step.next, now, "waited (already past)")
        waiting = replace(run, state=RunState.WAITING, wake_time=wake, update_time=now, step_count=run.step_count + 1)
        return RunUpdate(waiting, (RunStep(run.current_node, now, f"waiting until {wake.isoformat()}"),))

    async def _update_contact(self, wf: Workflow, run: Run, step: UpdateContactStep, now: datetime) -> RunUpdate:
        try:
            store = await self.contacts.store(run.store_id)
            await self.contacts.update(store, run.contact_id, step.patch, "", ActivitySource.WORKFLOW)
        except DomainError as e:
            return self._moved(run, RunState.FAILED, run.current_node, now, f"failed: {e.message}")
        return self._go(run, step.next, now, "updated")

    def _go(self, run: Run, next_node: str, now: datetime, outcome: str, message_id: str = "") -> RunUpdate:
        """Record the step at the current node and move on (an empty exit ends the run)."""
        state = RunState.RUNNING if next_node else RunState.COMPLETED
        return self._moved(run, state, next_node or run.current_node, now, outcome, message_id)

    @staticmethod
    def _moved(run: Run, state: RunState, node: str, now: datetime, outcome: str, message_id: str = "") -> RunUpdate:
        moved = replace(
            run, state=state, current_node=node, wake_time=now, update_time=now, step_count=run.step_count + 1
        )
        return RunUpdate(moved, (RunStep(run.current_node, now, outcome, message_id),))
