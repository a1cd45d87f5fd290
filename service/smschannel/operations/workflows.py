"""Workflow use cases (SPEC §8): edits, activation with whole-graph validation, events and runs.

The engine (workflow_engine.py) moves the runs; these are the changes a client asks for, each checked
against the workflow as it is stored: its etag, its state, the contents and contacts it names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..domain.phones import normalize_phone
from ..domain.stores import Store
from ..domain.workflows import Node, Run, RunState, Trigger, Workflow, WorkflowState, graph_violations
from ..errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, echo
from ..filters import parse_filter
from ..names import ContactName, WorkflowName, WorkflowRunName, new_id
from ..records import record
from ..storage import Positioned, RunWithSteps, Storage
from .contacts import contact_query
from .workflow_engine import WorkflowEngine

__all__ = [
    "RunQuery",
    "WorkflowChanges",
    "WorkflowOps",
    "run_query",
    "workflow_display_name",
    "workflow_state_filter",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def workflow_display_name(value: str) -> str:
    """A workflow's display name as stored: trimmed, 1 to 200 characters, else InvalidArgument."""
    display_name = value.strip()
    if not display_name or len(display_name) > 200:
        raise InvalidArgument("workflow.display_name", "required, at most 200 characters")
    return display_name


def workflow_state_filter(text: str) -> WorkflowState | None:
    """A ListWorkflows filter (`state = ACTIVE`) → the state it asks for (None = any)."""
    state = None
    for term in parse_filter(text, {"state": {"="}}):
        name = term.value.upper().removeprefix("WORKFLOW_STATE_")
        if name not in WorkflowState.__members__ or name == "UNSPECIFIED":
            raise InvalidArgument("filter", f"state must be DRAFT, ACTIVE or PAUSED, not {echo(term.value)}")
        state = WorkflowState[name]
    return state


@record
class RunQuery:
    """ListWorkflowRuns filters (None = any)."""

    state: RunState | None = None
    contact_id: str | None = None


def run_query(text: str) -> RunQuery:
    """A ListWorkflowRuns filter (`state = COMPLETED`, `contact = "..."`) → RunQuery."""
    state, contact_id = None, None
    for term in parse_filter(text, {"state": {"="}, "contact": {"="}}):
        if term.field == "state":
            name = term.value.upper().removeprefix("WORKFLOW_RUN_STATE_")
            if name not in RunState.__members__ or name == "UNSPECIFIED":
                raise InvalidArgument("filter", f"state must be a WorkflowRunState, not {echo(term.value)}")
            state = RunState[name]
        else:
            contact_id = ContactName.parse("filter", term.value).contact
    return RunQuery(state, contact_id)


@record
class WorkflowChanges:
    """What an UpdateWorkflow writes (None = leave as is); each value already converted and checked."""

    display_name: str | None = None
    trigger: Trigger | None = None
    nodes: tuple[Node, ...] | None = None
    start_node: str | None = None


@dataclass
class WorkflowOps:
    """The workflow use cases of one service instance; runs are started through the engine."""

    storage: Storage
    engine: WorkflowEngine
    clock: Callable[[], datetime] = field(default=_utcnow)

    async def default_country(self, store_id: str) -> str:
        """The country of the graph's numbers without `+`/`00` ("" when the channel has none)."""
        config = await self.storage.channel_configs.get(store_id)
        return config.default_country if config else ""

    async def get(self, store: Store, workflow_id: str) -> Workflow:
        """The workflow, or NotFound."""
        wf = await self.storage.workflows.get(store.id, workflow_id)
        if wf is None:
            raise NotFound(str(WorkflowName(store.id, workflow_id)))
        return wf

    async def page(
        self, store: Store, state: WorkflowState | None, after: int, limit: int
    ) -> list[Positioned[Workflow]]:
        """Up to `limit` workflows after position `after`, oldest first (the caller makes the token)."""
        return await self.storage.workflows.page(store.id, state, after, limit)

    async def create(
        self,
        store: Store,
        workflow_id: str,
        display_name: str,
        trigger: Trigger,
        nodes: tuple[Node, ...],
        start_node: str,
    ) -> Workflow:
        """A new workflow in DRAFT: its graph is judged whole on activation, so a client can build it
        in several edits. Without a start node it starts at the first node."""
        now = self.clock()
        wf = Workflow(
            store.id,
            workflow_id,
            display_name,
            WorkflowState.DRAFT,
            trigger,
            nodes,
            start_node or (nodes[0].id if nodes else ""),
            now,
            now,
        )
        await self.storage.workflows.create(wf)
        return wf

    async def editable(self, store: Store, workflow_id: str, etag: str) -> Workflow:
        """The workflow an Update may change: Aborted when `etag` is set and stale, FailedPrecondition
        while ACTIVE (its runs read the graph as they go: it is paused first). Checked before the
        request's graph is converted, so a stale or active workflow says so whatever the graph."""
        current = await self.get(store, workflow_id)
        if etag and etag != current.etag:
            raise Aborted(f"{WorkflowName(store.id, workflow_id)} changed since etag {echo(etag)}; get it again")
        if current.state is WorkflowState.ACTIVE:
            raise FailedPrecondition("an ACTIVE workflow cannot be edited: pause it first")
        return current

    async def update(self, current: Workflow, changes: WorkflowChanges) -> Workflow:
        """Write `changes` over `current` as `editable` returned it; Aborted when it changed since (the
        write expects its version, so an activation in between is not overwritten)."""
        new = replace(
            current,
            display_name=current.display_name if changes.display_name is None else changes.display_name,
            trigger=current.trigger if changes.trigger is None else changes.trigger,
            nodes=current.nodes if changes.nodes is None else changes.nodes,
            start_node=current.start_node if changes.start_node is None else changes.start_node,
            update_time=self.clock(),
            version=current.version + 1,
        )
        await self.storage.workflows.update(new, current.version, new.update_time)
        return new

    async def delete(self, store: Store, workflow_id: str, etag: str) -> None:
        """Delete a workflow and its runs; NotFound, or Aborted when `etag` is set and stale."""
        await self.storage.workflows.delete(store.id, workflow_id, etag)

    async def activate(self, store: Store, workflow_id: str) -> Workflow:
        """Validate the whole graph (every violation at once) and activate; paused runs resume.

        The graph is judged as the engine will run it: against the contents' texts, the channel's
        default sender and country, and the broadcast filter as the engine pages it."""
        wf = await self.get(store, workflow_id)
        if wf.state is WorkflowState.ACTIVE:
            return wf
        config = await self.storage.channel_configs.get(wf.store_id)
        country = config.default_country if config else ""
        texts = {}
        for cid in {getattr(node.step, "sms_content", "") for node in wf.nodes} - {""}:
            content = await self.storage.sms_contents.get(wf.store_id, cid)
            if content is not None:
                texts[cid] = content.text
        violations = graph_violations(
            wf,
            texts,
            config.default_sender if config else "",
            lambda f, raw: normalize_phone(f, raw, country),
            lambda f, text: contact_query(text, country, f),  # as the engine will page the broadcast
        )
        if violations:
            raise FailedPrecondition(f"the workflow cannot be activated: {len(violations)} problem(s)", violations)
        now = self.clock()
        active = replace(wf, state=WorkflowState.ACTIVE, update_time=now, version=wf.version + 1)
        await self.storage.workflows.update(active, wf.version, now)
        self.engine.wakeup.set()
        return active

    async def pause(self, store: Store, workflow_id: str) -> Workflow:
        """Pause an ACTIVE workflow: its runs stop at their next step. Pausing a PAUSED one is a no-op."""
        wf = await self.get(store, workflow_id)
        if wf.state is WorkflowState.PAUSED:
            return wf
        if wf.state is not WorkflowState.ACTIVE:
            raise FailedPrecondition("only an ACTIVE workflow can be paused")
        now = self.clock()
        paused = replace(wf, state=WorkflowState.PAUSED, update_time=now, version=wf.version + 1)
        await self.storage.workflows.update(paused, wf.version, now)
        return paused

    async def trigger_event(
        self, store: Store, event_name: str, contact: ContactName, event: Mapping[str, str], request_id: str
    ) -> list[Run]:
        """Start a run of every ACTIVE workflow waiting for `event_name`, for the contact; NotFound when
        the contact is not the store's.

        With a request id, a workflow that already ran for it answers that run (AIP-155): a client
        may send an event again after a timeout without starting a second run."""
        if contact.store != store.id or await self.storage.contacts.get(store.id, contact.contact) is None:
            raise NotFound(str(contact))
        runs = []
        for wf in await self.storage.workflows.active_for(store.id, "event", event_name):
            run = None
            if request_id:
                run = await self.storage.workflows.find_run_by_request(wf.store_id, wf.id, request_id)
            if run is None:  # a concurrent call with this request id may still win: answer the stored run
                run = await self.engine.start_run(
                    self.engine.new_run(wf, contact.contact, new_id(), dict(event), request_id)
                )
            runs.append(run)
        return runs

    async def page_runs(self, wf: Workflow, query: RunQuery, after: int, limit: int) -> list[Positioned[Run]]:
        """Up to `limit` runs of a workflow after position `after`, oldest first."""
        return await self.storage.workflows.page_runs(wf.store_id, wf.id, query.state, query.contact_id, after, limit)

    async def get_run(self, store: Store, workflow_id: str, run_id: str) -> RunWithSteps:
        """A run with every step, or NotFound."""
        found = await self.storage.workflows.get_run(store.id, workflow_id, run_id)
        if found is None:
            raise NotFound(str(WorkflowRunName(store.id, workflow_id, run_id)))
        return found
