"""WorkflowService: CRUD, activation with whole-graph validation, events and runs."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2, json_format

from ..domain.phones import normalize_phone
from ..domain.workflows import RunState, Workflow, WorkflowState, graph_violations
from ..errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, echo
from ..filters import parse_filter
from ..names import ContactName, StoreName, WorkflowName, WorkflowRunName, new_id, validate_id
from ..operations.contacts import contact_query
from ..operations.workflow_engine import WorkflowEngine
from ..storage import Storage
from ..v1 import workflow_service_pb2 as pb
from ..v1 import workflow_service_pb2_grpc as pb_grpc
from .interceptor import current_principal
from .masks import update_paths
from .pagination import PageTokens, page_size
from .workflows_proto import graph_from_proto, run_to_proto, workflow_to_proto

__all__ = ["WorkflowServicer"]

_WRITABLE = ("display_name", "trigger", "nodes", "start_node")


class WorkflowServicer(pb_grpc.WorkflowServiceServicer):
    """The WorkflowService RPCs."""

    def __init__(self, storage: Storage, engine: WorkflowEngine, tokens: PageTokens) -> None:
        self._storage = storage
        self._engine = engine
        self._tokens = tokens

    async def _store(self, store_id: str, resource: str) -> None:
        current_principal().check_store(store_id, resource)
        if await self._storage.stores.get(store_id) is None:
            raise NotFound(resource)

    async def _country(self, store_id: str) -> str:
        config = await self._storage.channel_configs.get(store_id)
        return config.default_country if config else ""

    async def _workflow(self, name: WorkflowName) -> Workflow:
        await self._store(name.store, str(name))
        wf = await self._storage.workflows.get(name.store, name.workflow)
        if wf is None:
            raise NotFound(str(name))
        return wf

    async def CreateWorkflow(self, request: pb.CreateWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Create a workflow in DRAFT (the graph is checked on activation)."""
        parent = StoreName.parse("parent", request.parent)
        await self._store(parent.store, str(parent))
        workflow_id = validate_id("workflow_id", request.workflow_id) if request.workflow_id else new_id()
        display_name = _display_name(request.workflow)
        trigger, nodes = graph_from_proto(request.workflow, parent.store, await self._country(parent.store))
        now = datetime.now(UTC)
        wf = Workflow(
            parent.store,
            workflow_id,
            display_name,
            WorkflowState.DRAFT,
            trigger,
            nodes,
            request.workflow.start_node or (nodes[0].id if nodes else ""),
            now,
            now,
        )
        await self._storage.workflows.create(wf)
        return workflow_to_proto(wf)

    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Get a workflow."""
        return workflow_to_proto(await self._workflow(WorkflowName.parse("name", request.name)))

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        """Workflows, oldest first; filter `state = ACTIVE`."""
        parent = StoreName.parse("parent", request.parent)
        await self._store(parent.store, str(parent))
        state = None
        for term in parse_filter(request.filter, {"state": {"="}}):
            name = term.value.upper().removeprefix("WORKFLOW_STATE_")
            if name not in WorkflowState.__members__ or name == "UNSPECIFIED":
                raise InvalidArgument("filter", f"state must be DRAFT, ACTIVE or PAUSED, not {echo(term.value)}")
            state = WorkflowState[name]
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent, request.filter) or 0
        rows = await self._storage.workflows.page(parent.store, state, after, limit + 1)
        token = self._tokens.encode(rows[limit - 1][0], request.parent, request.filter) if len(rows) > limit else ""
        return pb.ListWorkflowsResponse(
            workflows=[workflow_to_proto(w) for _, w in rows[:limit]], next_page_token=token
        )

    async def UpdateWorkflow(self, request: pb.UpdateWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Change a DRAFT or PAUSED workflow (pause an ACTIVE one first)."""
        msg = request.workflow
        current = await self._workflow(WorkflowName.parse("workflow.name", msg.name))
        if msg.etag and msg.etag != current.etag:
            raise Aborted(f"{msg.name} changed since etag {msg.etag}; get it again")
        if current.state is WorkflowState.ACTIVE:
            raise FailedPrecondition("an ACTIVE workflow cannot be edited: pause it first")
        paths = update_paths(request.update_mask, msg, _WRITABLE)
        trigger, nodes = current.trigger, current.nodes
        if paths & {"trigger", "nodes"}:
            trigger, nodes = graph_from_proto(msg, current.store_id, await self._country(current.store_id))
        new = replace(
            current,
            display_name=_display_name(msg) if "display_name" in paths else current.display_name,
            trigger=trigger if "trigger" in paths else current.trigger,
            nodes=nodes if "nodes" in paths else current.nodes,
            start_node=msg.start_node if "start_node" in paths else current.start_node,
            update_time=datetime.now(UTC),
            version=current.version + 1,
        )
        await self._storage.workflows.update(new, current.version, new.update_time)
        return workflow_to_proto(new)

    async def DeleteWorkflow(
        self, request: pb.DeleteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Delete a workflow and its runs."""
        name = WorkflowName.parse("name", request.name)
        await self._store(name.store, str(name))
        await self._storage.workflows.delete(name.store, name.workflow, request.etag)
        return empty_pb2.Empty()

    async def ActivateWorkflow(
        self, request: pb.ActivateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workflow:
        """Validate the whole graph (every violation at once) and activate; paused runs resume."""
        wf = await self._workflow(WorkflowName.parse("name", request.name))
        if wf.state is WorkflowState.ACTIVE:
            return workflow_to_proto(wf)
        config = await self._storage.channel_configs.get(wf.store_id)
        country = config.default_country if config else ""
        texts = {}
        for cid in {getattr(node.step, "sms_content", "") for node in wf.nodes} - {""}:
            content = await self._storage.sms_contents.get(wf.store_id, cid)
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
        now = datetime.now(UTC)
        active = replace(wf, state=WorkflowState.ACTIVE, update_time=now, version=wf.version + 1)
        await self._storage.workflows.update(active, wf.version, now)
        self._engine.wakeup.set()
        return workflow_to_proto(active)

    async def PauseWorkflow(self, request: pb.PauseWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Pause: runs stop at their next step."""
        wf = await self._workflow(WorkflowName.parse("name", request.name))
        if wf.state is WorkflowState.PAUSED:
            return workflow_to_proto(wf)
        if wf.state is not WorkflowState.ACTIVE:
            raise FailedPrecondition("only an ACTIVE workflow can be paused")
        now = datetime.now(UTC)
        paused = replace(wf, state=WorkflowState.PAUSED, update_time=now, version=wf.version + 1)
        await self._storage.workflows.update(paused, wf.version, now)
        return workflow_to_proto(paused)

    async def TriggerEvent(
        self, request: pb.TriggerEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerEventResponse:
        """Start a run of every ACTIVE workflow waiting for this event, for the contact."""
        parent = StoreName.parse("parent", request.parent)
        await self._store(parent.store, str(parent))
        if not request.event_name.strip():
            raise InvalidArgument("event_name", "required")
        contact = ContactName.parse("contact", request.contact)
        if contact.store != parent.store or await self._storage.contacts.get(parent.store, contact.contact) is None:
            raise NotFound(request.contact)
        raw = json_format.MessageToDict(request.properties) if request.HasField("properties") else {}
        event = {k: _property_text(v) for k, v in raw.items()}
        names = []
        for wf in await self._storage.workflows.active_for(parent.store, "event", request.event_name.strip()):
            run = None
            if request.request_id:
                run = await self._storage.workflows.find_run_by_request(wf.store_id, wf.id, request.request_id)
            if run is None:  # a concurrent call with this request id may still win: answer the stored run
                run = await self._engine.start_run(
                    self._engine.new_run(wf, contact.contact, new_id(), event, request.request_id)
                )
            names.append(str(WorkflowRunName(wf.store_id, wf.id, run.id)))
        return pb.TriggerEventResponse(workflow_runs=names)

    async def ListWorkflowRuns(
        self, request: pb.ListWorkflowRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowRunsResponse:
        """Runs of a workflow, oldest first; filter `state = COMPLETED`, `contact = "..."`."""
        wf = await self._workflow(WorkflowName.parse("parent", request.parent))
        state, contact_id = None, None
        for term in parse_filter(request.filter, {"state": {"="}, "contact": {"="}}):
            if term.field == "state":
                name = term.value.upper().removeprefix("WORKFLOW_RUN_STATE_")
                if name not in RunState.__members__ or name == "UNSPECIFIED":
                    raise InvalidArgument("filter", f"state must be a WorkflowRunState, not {echo(term.value)}")
                state = RunState[name]
            else:
                contact_id = ContactName.parse("filter", term.value).contact
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent, request.filter) or 0
        rows = await self._storage.workflows.page_runs(wf.store_id, wf.id, state, contact_id, after, limit + 1)
        token = self._tokens.encode(rows[limit - 1][0], request.parent, request.filter) if len(rows) > limit else ""
        return pb.ListWorkflowRunsResponse(
            workflow_runs=[run_to_proto(r) for _, r in rows[:limit]], next_page_token=token
        )

    async def GetWorkflowRun(
        self, request: pb.GetWorkflowRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkflowRun:
        """A run with every step: time, outcome and the message it produced."""
        name = WorkflowRunName.parse("name", request.name)
        await self._store(name.store, str(name))
        found = await self._storage.workflows.get_run(name.store, name.workflow, name.run)
        if found is None:
            raise NotFound(str(name))
        return run_to_proto(*found)


def _display_name(msg: pb.Workflow) -> str:
    display_name = msg.display_name.strip()
    if not display_name or len(display_name) > 200:
        raise InvalidArgument("workflow.display_name", "required, at most 200 characters")
    return display_name


def _property_text(value: object) -> str:
    """An event property as text for SMS variables."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
