"""The workflow engine: durable runs, stepped in rounds (SPEC §8).

Each round takes the runs that are ready, moves each one node, and saves every run's new position and
step in one transaction, with the messages its Send SMS nodes make (a unit of work: the outbox sends
them once it is committed, in bulk requests); a run paused meanwhile gets nothing written, and takes
its step again when resumed. A message's idempotency key is workflow + run + step number, so a step
taken again finds any message it made before: never twice, never skipped. Waits are timers in the
database. Broadcasts turn contacts into runs a page at a time, each new run taking its first step at
once; a page's runs, steps and messages are written with the broadcast's cursor in one transaction
(when the database refuses one run's message, a run at a time, the cursor last), so a broadcast runs
in bounded memory and survives restarts.

What one workflow gets wrong stays with it: a step that raises, or a message the database refuses,
fails that run (the reason is its last step's outcome), and a broadcast whose page fails is retried on
its own backoff with the reason shown on the workflow (`last_error`), so no store's mistake holds up
the runs of the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
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
    send_outcome,
)
from ..errors import Aborted, DomainError
from ..names import WorkflowName, new_id
from ..storage import BroadcastDue, BroadcastPage, ContactQuery, PageSends, RunUpdate, Storage, UnitOfWork
from ..storage.priority import mark_background
from .background import Backoff, nap, stop_task
from .contacts import ContactOps, contact_query
from .sending import Sender, SendRequest

__all__ = ["WORKFLOW_REQUEST_PREFIX", "WorkflowEngine"]

log = logging.getLogger("smschannel.workflows")

ROUND = 300  # runs per round
# Contacts turned into runs per transaction: a page's work blocks the loop in slices. bench/newsletter
# and bench/broadcast, the same machine: 150 gave 0.23-0.26 x the storage floor and GetContact's p99
# 4.3 x idle during a broadcast; 300, 0.31-0.35 x and 3.8 x; 500, 0.31-0.35 x and 6.2-8.1 x.
BROADCAST_BATCH = 300
# Contacts a page while callers wait to write (storage/priority.py): a page's transaction holds SQLite's
# write lock about 2 ms per 100 contacts, and a callback waits for the one under way. Measured
# (bench/callbacks, callbacks while a newsletter sends, 64 in flight, alternating runs): callbacks were
# absorbed at 0.59-0.60 x the send rate with pages of 300, 0.79-0.87 x with 150, 1.08 x with 100; but
# a newsletter alone went 17-25% slower by 100 than by 300. So pages shrink only while callers wait:
# 1.00-1.11 x while sending, and a newsletter alone pages by 300.
BROADCAST_BATCH_SHARED = 100
SHARED_WITHIN = 1.0  # seconds since a caller last waited for background work
MAX_STEPS = 1000  # a run that takes more steps than this is failed (a runaway loop)
WORKFLOW_REQUEST_PREFIX = "wf:"  # of a Send SMS step's request id (SendSms refuses ids that start so)
BROADCAST_RUN = "b-"  # a broadcast's run for a contact: this + the contact's id
# A broadcast whose page fails is tried again after 1 s, then 2, 4... and at most every 10 minutes.
# Replicas on one database: the engine runs in one at a time, the holder of this lease, renewed at
# every turn of its loop (at least every second); the others try again every ENGINE_LEASE_RETRY (or
# sooner when the lease is shorter).
ENGINE_LEASE_NAME = "workflow-engine"
ENGINE_LEASE = timedelta(seconds=30)
ENGINE_LEASE_RETRY = 2.0
BROADCAST_RETRY_FIRST = timedelta(seconds=1)
BROADCAST_RETRY_LONGEST = timedelta(minutes=10)


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
    lease: timedelta = ENGINE_LEASE  # the engine's lease among replicas, renewed at every turn
    # Broadcast pages whose runs start with a Send SMS are written set-wise (`_send_page`); off, each
    # contact is judged and written on its own (the tests compare both ways).
    set_based: bool = True
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _broadcast_retries: Backoff = field(default_factory=lambda: Backoff(BROADCAST_RETRY_FIRST, BROADCAST_RETRY_LONGEST))
    # Each broadcast's page whose runs and messages are still being written: the next page is read and
    # prepared meanwhile, on the loop, while the database writes (SQLite's thread, PostgreSQL's pool).
    _writing: dict[tuple[str, str, int], _PageWrite] = field(default_factory=dict)

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._loop(), name="workflow-engine")

    async def stop(self, grace: float) -> None:
        """Finish the round in progress (within `grace`); runs resume from the database."""
        self._stopping = True
        self.wakeup.set()
        await stop_task(self._task, grace)
        await self._finish_page_writes()

    async def _loop(self) -> None:
        mark_background()
        while not self._stopping:
            if not await self._leading():
                if self._stopping:
                    break
                # Another replica runs the engine: try for its lease again soon. A stop cuts the wait.
                await nap(self.wakeup, None, self.clock(), min(ENGINE_LEASE_RETRY, self.lease.total_seconds() / 4))
                continue
            try:
                # Both every time: a long broadcast must not hold up the runs already under way.
                busy = await self.broadcast_batch()
                busy = await self.round() or busy
            except Exception:  # a database that fails for everyone: nothing to isolate, try again
                log.exception("workflow round failed; retrying")
                busy = False
                await asyncio.sleep(1.0)
            if not busy:
                await self._sleep()
            else:
                await asyncio.sleep(0)  # let RPCs in between rounds

    async def _leading(self) -> bool:
        """Whether this replica runs the engine now: it holds (or renews) the engine's lease. One
        replica at a time steps runs, fires timers and pages broadcasts; another takes over when the
        lease runs out, i.e. the holder died or hangs. A database error counts as not leading."""
        try:
            return await self.storage.meta.hold(ENGINE_LEASE_NAME, self.clock(), self.lease)
        except Exception:
            log.exception("cannot renew the workflow engine's lease; retrying")
            return False

    async def _sleep(self) -> None:
        await nap(self.wakeup, await self.storage.workflows.next_wake(), self.clock(), 1.0)

    # -- starting runs -----------------------------------------------------------------------

    def new_run(
        self,
        wf: Workflow,
        contact_id: str,
        run_id: str,
        event: dict[str, str],
        request_id: str = "",
        now: datetime | None = None,
    ) -> Run:
        """A run at the start node, ready `now` (the clock's now by default; a page of runs reads it once)."""
        now = now or self.clock()
        return Run(
            wf.store_id, wf.id, run_id, contact_id, RunState.RUNNING, wf.start_node, now, now, now, event, request_id
        )

    async def start_runs(self, runs: list[Run]) -> list[Run]:
        """Store runs and wake the loop; returns the runs stored (not those whose id or request id was
        taken)."""
        created = await self.storage.workflows.add_runs([RunUpdate(run) for run in runs])
        if created:
            self.wakeup.set()
        return created

    async def start_run(self, run: Run) -> Run:
        """Store one run, or find the run its request id already started: either way, the stored run.

        Concurrent calls with one request id can all miss an earlier lookup; the insert decides which
        run is stored, and the others answer with that one."""
        if await self.start_runs([run]):
            return run
        if run.request_id:
            stored = await self.storage.workflows.find_run_by_request(run.store_id, run.workflow_id, run.request_id)
            if stored is not None:
                return stored
        raise Aborted(f"run id {run.id!r} is taken; send the request again")

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
        transaction as the broadcast's cursor. A broadcast whose page fails waits for its own retry."""
        did = False
        now = self.clock()
        due = await self.storage.workflows.broadcasts_due()
        keys: set[Hashable] = {(b.store_id, b.workflow_id, b.version) for b in due}
        self._broadcast_retries.forget_others(keys)
        for key, pending in list(self._writing.items()):  # a paused, edited or deleted broadcast's
            if key not in keys and pending.task.done():
                del self._writing[key]
                if not pending.task.cancelled() and pending.task.exception() is not None:
                    log.warning("a broadcast page's write failed", exc_info=pending.task.exception())
        for b in due:
            key = (b.store_id, b.workflow_id, b.version)  # a new activation (a new version) starts afresh
            if not self._broadcast_retries.ready(key, now):
                continue
            try:
                moved = await self._broadcast_page(b)
            except Exception as e:
                await self._broadcast_failed(b, key, e)
                continue
            self._broadcast_retries.succeeded(key)
            did = did or moved
        if did:
            self.wakeup.set()  # runs that moved on to a next node
        return did

    async def _broadcast_page(self, b: BroadcastDue) -> bool:
        """One page of one broadcast; True if it turned contacts into runs.

        A page's cursor, runs, steps and messages are written (one transaction) while the next page is
        read and its messages prepared; that next page's write starts once the one before has landed,
        so a failure stops the chain, and the broadcast resumes from the cursor stored last."""
        key = (b.store_id, b.workflow_id, b.version)
        after = b.after
        pending = self._writing.get(key)
        if pending is not None:
            after = pending.cursor  # ahead of the database's until that write lands
            if pending.task.done() or pending.last:
                await self._landed(key)  # raises its failure: the broadcast's own backoff takes it from there
                if pending.last:
                    return False
        wf = await self.storage.workflows.get(b.store_id, b.workflow_id)
        if wf is None or wf.version != b.version:
            return False  # deleted or changed since: the next batch sees it as it is now
        now = self.clock()
        if wf.trigger.start_time is not None and wf.trigger.start_time > now:
            return False
        config = await self.storage.channel_configs.get(wf.store_id)
        query = contact_query(
            wf.trigger.contact_filter, config.default_country if config else "", "trigger.broadcast.contact_filter"
        )
        node = wf.node(wf.start_node)
        step = node.step if node is not None else None
        size = BROADCAST_BATCH_SHARED if self.storage.callers_waited(SHARED_WITHIN) else BROADCAST_BATCH
        if self.set_based and isinstance(step, SendSmsStep) and step.recipient_mode is RecipientMode.CONTACT:
            sent = await self._send_page(wf, step, query, after, size, now, key)
            if sent is not None:
                return sent
        moves, page, any_rows = await self._page_by_contact(wf, query, after, size, now)
        if key in self._writing:  # one page in writing at a time: a broadcast does not run ahead of SQL
            await self._landed(key)  # raises its failure: the broadcast's backoff takes it
        write = asyncio.ensure_future(self._write(moves, page))
        self._writing[key] = _PageWrite(write, page.after, page.last)
        return any_rows

    async def _send_page(
        self,
        wf: Workflow,
        step: SendSmsStep,
        query: ContactQuery,
        after: int,
        size: int,
        now: datetime,
        key: tuple[str, str, int],
    ) -> bool | None:
        """A page of a broadcast whose runs start with a Send SMS to their contact, set-wise: the sender
        judges the page once per group of contacts it cannot tell apart, and the page's messages, runs
        and steps are written by one statement each (PageSends), with no object per contact. None when
        the page cannot be judged so (a contact field in the text, or a send every run would fail):
        the caller takes it contact by contact. True if it turned contacts into runs."""
        rows = await self.storage.contacts.reach_page(wf.store_id, query, after, size)
        template = self.new_run(wf, "", BROADCAST_RUN, {}, now=now)
        try:
            judged = await self.sender.judge_page(
                await self._send_request(wf, template, step, None), [row.item for row in rows]
            )
        except DomainError:
            return None  # each run fails with the reason, on the way that fails runs one by one
        if judged is None:
            return None
        templates, groups = judged
        request_prefix, request_suffix = _request_id(wf.id, BROADCAST_RUN + "\0", 0).split("\0")
        cursor = rows[-1].position if rows else after
        last = len(rows) < size
        sends = PageSends(
            page=BroadcastPage(wf.store_id, wf.id, wf.version, cursor, last),
            node=wf.start_node,
            run=self._go(template, step.next, now, "").run,
            templates=tuple(templates),
            members=tuple(
                (row.item.contact_id, new_id(), group, row.item.mobile_phone)
                for row, group in zip(rows, groups, strict=True)
            ),
            run_prefix=BROADCAST_RUN,
            request_prefix=request_prefix,
            request_suffix=request_suffix,
        )
        if key in self._writing:  # one page in writing at a time: a broadcast does not run ahead of SQL
            await self._landed(key)
        write = asyncio.ensure_future(self._write_sends(sends, wf, now))
        self._writing[key] = _PageWrite(write, cursor, last)
        return bool(rows)

    async def _write_sends(self, sends: PageSends, wf: Workflow, now: datetime) -> None:
        """A set-wise page's cursor, messages, runs and steps in one transaction; nothing when its
        workflow was paused, edited or deleted meanwhile. The outbox hears of the new messages.
        Should it fail, the page is done again contact by contact (where what the database refuses
        of one contact's message fails that contact's run only)."""

        async def work(tx: UnitOfWork) -> list[Message]:
            if not await tx.runs.page(sends.page):
                return []
            stored = await tx.messages.add_page(sends)
            await tx.runs.add_page(sends)
            return stored

        try:
            stored = await self.storage.atomically(work, 3 * len(sends.members))
        except DomainError:  # what the database refuses of a contact's message (anything else: retried)
            log.exception("a broadcast page failed set-wise; doing it again contact by contact")
            # The same contacts and the same cursor (the next page is read from it already), each
            # contact read again by its run's send.
            runs = [self.new_run(wf, member[0], BROADCAST_RUN + member[0], {}, now=now) for member in sends.members]
            await self._write(await self._advance(runs, now), sends.page)
            return
        self.sender.stored(stored, stored)

    async def _page_by_contact(
        self, wf: Workflow, query: ContactQuery, after: int, size: int, now: datetime
    ) -> tuple[_Moves, BroadcastPage, bool]:
        """A page of a broadcast contact by contact: each contact's new run moved by its first step
        (not written), the page, and whether it had contacts."""
        rows = await self.storage.contacts.page(wf.store_id, query, after, size)
        contacts = [row.item for row in rows]
        runs = [self.new_run(wf, c.id, BROADCAST_RUN + c.id, {}, now=now) for c in contacts]
        moves = await self._advance(runs, now, {c.id: c for c in contacts})
        cursor = rows[-1].position if rows else after
        return moves, BroadcastPage(wf.store_id, wf.id, wf.version, cursor, len(rows) < size), bool(rows)

    async def _landed(self, key: tuple[str, str, int]) -> None:
        """Wait for a broadcast's page write to land (raising its failure) and forget it. A stop that
        cancels the wait does not cancel the write: `_finish_page_writes` waits for it."""
        task = self._writing[key].task
        try:
            await asyncio.shield(task)
        finally:
            if task.done():
                self._writing.pop(key, None)

    async def _finish_page_writes(self) -> None:
        """Let the page writes under way land (at a stop); a failed one is logged, the broadcast resumes."""
        writes, self._writing = self._writing, {}
        for (_, workflow_id, _), pending in writes.items():
            try:
                await pending.task
            except Exception:
                log.exception("a broadcast page's write failed", extra={"workflow_id": workflow_id})

    async def _broadcast_failed(self, b: BroadcastDue, key: tuple[str, str, int], error: Exception) -> None:
        now = self.clock()
        attempts, retry = self._broadcast_retries.failed(key, now)
        name = str(WorkflowName(b.store_id, b.workflow_id))
        _log_failure(
            "broadcast page failed; retrying later",
            error,
            workflow=name,
            attempts=attempts,
            retry_time=retry.isoformat(),
        )
        why = f"the broadcast failed {attempts} time(s) in a row, next try at {retry.isoformat()}: {_reason(error)}"
        try:
            await self.storage.workflows.set_error(b.store_id, b.workflow_id, b.version, why, now)
        except Exception:
            log.exception("could not record a workflow's error", extra={"workflow": name})

    # -- stepping --------------------------------------------------------------------------------

    async def round(self) -> bool:
        """Move every ready run one node; True if there was work."""
        now = self.clock()
        runs = await self.storage.workflows.due_runs(now, ROUND)
        if not runs:
            return False
        await self._write(await self._advance(runs, now))
        return True

    # -- writing moves ---------------------------------------------------------------------------

    async def _write(self, moves: _Moves, page: BroadcastPage | None = None) -> None:
        """Write a round's moves (runs already stored move on), or a broadcast page's (new runs, and the
        page's cursor), with the messages their sends made, in one unit of work; then the outbox hears
        of the new messages. A page's workflow paused, edited or deleted meanwhile gets nothing written
        (its runs would run under a paused workflow, or under none), nor does a run of a round no
        longer live (paused with its workflow, or deleted): it takes its step again when resumed.

        Should the database refuse what one run writes (a DomainError: PostgreSQL's text cannot hold
        U+0000), each run is written alone: the run whose own write is refused is failed with the
        reason, and the other runs move on; a page's cursor moves once its runs are written. Any other
        failure (the database's, for everyone) is raised: the round, or the page, is done again."""
        try:
            written = await self.storage.atomically(self._unit(moves, page, True), moves.size)
        except DomainError:
            log.exception("writing a workflow round or page was refused; writing its runs one by one")
            await self._write_one_by_one(moves, page)
            return
        self.sender.stored(*written)

    def _unit(
        self, moves: _Moves, page: BroadcastPage | None, cursor: bool
    ) -> Callable[[UnitOfWork], Awaitable[tuple[list[Message], list[Message]]]]:
        """`_write_in` as a unit of work."""
        return lambda tx: self._write_in(tx, moves, page, cursor)

    async def _write_in(
        self, tx: UnitOfWork, moves: _Moves, page: BroadcastPage | None, cursor: bool
    ) -> tuple[list[Message], list[Message]]:
        """Inside a unit of work (which may run more than once: `moves` is not changed): the moves of
        live runs and their messages; returns (the messages written, as stored), for `Sender.stored`.
        `cursor`: move the page's cursor too (else only check its workflow is still ACTIVE)."""
        runs = moves.runs  # as they were read
        if page is not None:
            if not await (tx.runs.page(page) if cursor else tx.runs.active(page)):
                return [], []
            # A page done again (after a partial write, one run at a time): its runs stored already
            # keep what they have, and get no message more.
            moves = moves.only(await tx.runs.new(runs))
        else:
            moves = moves.only(await tx.runs.live(runs))
        stored = await tx.messages.add(moves.messages)
        settled = self._settled(moves, stored)
        await (tx.runs.save(settled) if page is None else tx.runs.add(settled))
        return moves.messages, stored

    async def _write_one_by_one(self, moves: _Moves, page: BroadcastPage | None) -> None:
        """`_write`, a run at a time (with its message); a run whose own write is refused is failed
        with the reason, without its message. A page's cursor moves last."""
        count = len(moves.updates)
        for j in range(count):
            part = moves.only([i == j for i in range(count)])
            try:
                written = await self.storage.atomically(self._unit(part, page, False), part.size)
            except DomainError as e:
                (run,) = part.runs
                _log_failure("a workflow run's write was refused; failing the run", e, run_id=run.id)
                failed = _Moves([run], [self._failed(run, part.now, _reason(e))], [], [], part.now)
                await self.storage.atomically(self._unit(failed, page, False), failed.size)
                continue
            self.sender.stored(*written)
        if page is not None:
            await self.storage.atomically(lambda tx: tx.runs.page(page), 1)

    async def _advance(self, runs: list[Run], now: datetime, contacts: dict[str, Contact] | None = None) -> _Moves:
        """Each run's move by one node and the messages its sends make, not written (the caller writes
        them in one unit of work). `contacts` are the runs' contacts when already read.

        Whatever raises for one run (or for reading its workflow) fails that run, with the reason as
        its last step: the others move on (and `_write` keeps it so for what the database refuses)."""
        workflows: dict[tuple[str, str], Workflow | Exception | None] = {}
        for run in runs:
            key = (run.store_id, run.workflow_id)
            if key not in workflows:
                try:
                    workflows[key] = await self.storage.workflows.get(*key)
                except Exception as e:
                    log.exception("cannot read a workflow; failing its runs", extra={"workflow_id": key[1]})
                    workflows[key] = e
        updates: list[RunUpdate] = []
        sends: list[tuple[int, Run, SendSmsStep, SendRequest]] = []
        for n, run in enumerate(runs):
            if n % 50 == 49:
                await asyncio.sleep(0)  # keep the loop responsive to other RPCs during big rounds
            wf = workflows[(run.store_id, run.workflow_id)]
            if isinstance(wf, Exception):
                updates.append(self._failed(run, now, f"the workflow cannot be read: {_reason(wf)}"))
                continue
            try:
                moved = await self._step(wf, run, now, contacts)
            except Exception as e:
                _log_failure("a workflow step failed; failing its run", e, run_id=run.id)
                updates.append(self._failed(run, now, _reason(e)))
                continue
            if isinstance(moved, RunUpdate):
                updates.append(moved)
            else:
                sends.append((len(updates), *moved))
                updates.append(RunUpdate(moved[0]))  # a placeholder for the outcome of the send
        moves = _Moves(list(runs), updates, [], [], now)
        if sends:
            await self._send(moves, sends)
        return moves

    async def _step(
        self, wf: Workflow | None, run: Run, now: datetime, contacts: dict[str, Contact] | None
    ) -> RunUpdate | tuple[Run, SendSmsStep, SendRequest]:
        """A run's move by one node, or the send it makes (sent with the round's others)."""
        node = wf.node(run.current_node) if wf else None
        if wf is None or node is None or run.step_count >= MAX_STEPS:
            why = "failed: the node no longer exists" if wf and not node else "failed: too many steps"
            return self._moved(run, RunState.FAILED, run.current_node, now, why)
        step = node.step
        if isinstance(step, SendSmsStep):
            known = contacts.get(run.contact_id) if contacts else None
            return run, step, await self._send_request(wf, run, step, known)
        if isinstance(step, ReceivedSmsStep):
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
            return self._go(run, step.yes_next if yes else step.no_next, now, f"{'yes' if yes else 'no'} ({count})")
        if isinstance(step, WaitStep):
            return self._wait(run, step, now)
        if isinstance(step, UpdateContactStep):
            return await self._update_contact(wf, run, step, now)
        assert step is None or isinstance(step, EndStep)  # EndStep or a node that says nothing
        return self._moved(run, RunState.COMPLETED, run.current_node, now, "ended")

    async def _send(self, moves: _Moves, sends: list[tuple[int, Run, SendSmsStep, SendRequest]]) -> None:
        """The messages of the round's sends, judged in one batch, into `moves`, each send's run moving on
        with its message's outcome. Should the batch raise, each is judged again alone: only the runs
        whose own send raises fail."""
        try:
            results: list[tuple[Message, str] | DomainError | Exception] = [
                *await self.sender.judge_many([req for *_, req in sends])
            ]
        except Exception:
            log.exception("a batch of workflow sends failed; judging them one by one")
            results = []
            for *_, req in sends:
                try:
                    results += await self.sender.judge_many([req])
                except Exception as e:
                    log.exception("a workflow send failed; failing its run", extra={"run_id": req.workflow_run})
                    results.append(e)
        for (i, run, step, _), result in zip(sends, results, strict=True):
            if isinstance(result, Exception):
                moves.updates[i] = self._failed(run, moves.now, _reason(result))
            else:
                moves.updates[i] = self._sent(run, step, result[0], moves.now)
                moves.messages.append(result[0])
                moves.sends.append((i, run, step))

    def _settled(self, moves: _Moves, stored: list[Message]) -> list[RunUpdate]:
        """The moves' updates once their messages are stored as `stored`: a request id already used
        stored nothing new, and its step names the message stored first (in a unit of work: it may run
        more than once, so `moves` is not changed)."""
        if all(s is m for s, m in zip(stored, moves.messages, strict=True)):
            return moves.updates
        updates = list(moves.updates)
        for (i, run, step), m, s in zip(moves.sends, moves.messages, stored, strict=True):
            if s is not m:
                updates[i] = self._sent(run, step, s, moves.now)
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
            request_id=_request_id(wf.id, run.id, run.step_count),
            workflow_id=wf.id,
            workflow_node=run.current_node,
            workflow_run=run.id,
            event=run.event,
            contact=contact,
        )

    def _sent(self, run: Run, step: SendSmsStep, result: Message, now: datetime) -> RunUpdate:
        return self._go(run, step.next, now, send_outcome(result.status, result.status_reason), result.id)

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
            return self._failed(run, now, _reason(e))
        return self._go(run, step.next, now, "updated")

    def _go(self, run: Run, next_node: str, now: datetime, outcome: str, message_id: str = "") -> RunUpdate:
        """Record the step at the current node and move on (an empty exit ends the run)."""
        state = RunState.RUNNING if next_node else RunState.COMPLETED
        return self._moved(run, state, next_node or run.current_node, now, outcome, message_id)

    def _failed(self, run: Run, now: datetime, why: str) -> RunUpdate:
        """Fail the run where it is; `why` becomes its last step's outcome."""
        return self._moved(run, RunState.FAILED, run.current_node, now, f"failed: {why}")

    @staticmethod
    def _moved(run: Run, state: RunState, node: str, now: datetime, outcome: str, message_id: str = "") -> RunUpdate:
        # Made field by field, not with dataclasses.replace: a broadcast moves a run per contact, and
        # replace() cost 7 µs a run (it inspects the fields each time).
        moved = Run(
            run.store_id,
            run.workflow_id,
            run.id,
            run.contact_id,
            state,
            node,
            now,
            run.create_time,
            now,
            run.event,
            run.request_id,
            run.step_count + 1,
        )
        return RunUpdate(moved, (RunStep(run.current_node, now, outcome, message_id),))


@dataclass(frozen=True, slots=True)
class _Moves:
    """Runs' moves by one node, not yet written: the runs as they were, each run's update (in the same
    order), the messages their sends make, and for each message its send: (index in `updates`, run,
    step)."""

    runs: list[Run]
    updates: list[RunUpdate]
    messages: list[Message]
    sends: list[tuple[int, Run, SendSmsStep]]
    now: datetime

    @property
    def size(self) -> int:
        """About how many rows writing them takes."""
        return 2 * len(self.updates) + len(self.messages)

    def only(self, keep: Sequence[bool]) -> _Moves:
        """The moves of the runs kept (`keep`: one flag per update), with their messages."""
        if all(keep):
            return self
        at: dict[int, int] = {}
        runs: list[Run] = []
        updates: list[RunUpdate] = []
        for i, (run, update, kept) in enumerate(zip(self.runs, self.updates, keep, strict=True)):
            if kept:
                at[i] = len(updates)
                runs.append(run)
                updates.append(update)
        sends, messages = [], []
        for (i, run, step), message in zip(self.sends, self.messages, strict=True):
            if i in at:
                sends.append((at[i], run, step))
                messages.append(message)
        return _Moves(runs, updates, messages, sends, self.now)


@dataclass(frozen=True, slots=True)
class _PageWrite:
    """A broadcast page's cursor, runs, steps and messages on their way to the database."""

    task: asyncio.Future[None]
    cursor: int
    last: bool


def _request_id(workflow_id: str, run_id: str, step_count: int) -> str:
    """The request id of the message a run's step sends: the same step of the same run finds it again."""
    return f"{WORKFLOW_REQUEST_PREFIX}{workflow_id}:{run_id}:{step_count}"


def _log_failure(event: str, error: Exception, **extra: object) -> None:
    """A failure in the log. A domain error is the store's own (a filter, a number it gave): its text
    may quote a phone or an email, so the log gets its reason only; the store reads the whole of it on
    the run or in Workflow.last_error. Anything else is a fault of ours: its traceback is logged."""
    if isinstance(error, DomainError):
        log.warning(event, extra={**extra, "error": error.reason})
    else:
        log.warning(event, exc_info=error, extra=extra)


def _reason(error: Exception) -> str:
    """Why something failed, for a run's step or a workflow's `last_error`: a domain error's message,
    else the exception's type and text (the stack trace is in the log)."""
    if isinstance(error, DomainError):
        return error.message
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 300 else text[:299] + "…"
