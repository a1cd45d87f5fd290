"""WorkflowService: proto in, use case (operations/workflows.py), proto out."""

from __future__ import annotations

import json

import grpc
from google.protobuf import empty_pb2, json_format

from ..domain.stores import Store
from ..errors import InvalidArgument
from ..names import ContactName, StoreName, WorkflowName, WorkflowRunName, new_id, validate_id
from ..operations.preview import MAX_SAMPLES, Previews
from ..operations.stores import StoreOps
from ..operations.workflows import (
    WorkflowChanges,
    WorkflowOps,
    run_query,
    workflow_display_name,
    workflow_state_filter,
)
from ..v1 import workflow_service_pb2 as pb
from ..v1 import workflow_service_pb2_grpc as pb_grpc
from .interceptor import current_principal
from .masks import update_paths
from .pagination import PageTokens, page_size
from .workflows_proto import graph_from_proto, preview_to_proto, run_to_proto, workflow_to_proto

__all__ = ["WorkflowServicer"]

_WRITABLE = ("display_name", "trigger", "nodes", "start_node")


class WorkflowServicer(pb_grpc.WorkflowServiceServicer):
    """The WorkflowService RPCs."""

    def __init__(self, ops: WorkflowOps, stores: StoreOps, tokens: PageTokens, previews: Previews) -> None:
        self._ops = ops
        self._stores = stores
        self._tokens = tokens
        self._previews = previews

    async def _store(self, name: StoreName | WorkflowName | WorkflowRunName) -> Store:
        """The store of `name`, if the caller may see it; a missing store is NotFound as `name`."""
        current_principal().check_store(name.store, name)
        return await self._stores.get(name.store, str(name))

    async def CreateWorkflow(self, request: pb.CreateWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Create a workflow in DRAFT (the graph is checked on activation)."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        workflow_id = validate_id("workflow_id", request.workflow_id) if request.workflow_id else new_id()
        display_name = workflow_display_name(request.workflow.display_name)
        trigger, nodes = graph_from_proto(request.workflow, store.id, await self._ops.default_country(store.id))
        wf = await self._ops.create(store, workflow_id, display_name, trigger, nodes, request.workflow.start_node)
        return workflow_to_proto(wf)

    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Get a workflow."""
        name = WorkflowName.parse("name", request.name)
        return workflow_to_proto(await self._ops.get(await self._store(name), name.workflow))

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowsResponse:
        """Workflows, oldest first; filter `state = ACTIVE`."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        state = workflow_state_filter(request.filter)
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent, request.filter) or 0
        rows = await self._ops.page(store, state, after, limit + 1)
        page = self._tokens.page(rows, limit, request.parent, request.filter)
        return pb.ListWorkflowsResponse(
            workflows=[workflow_to_proto(w) for w in page.items], next_page_token=page.next_page_token
        )

    async def UpdateWorkflow(self, request: pb.UpdateWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Change a DRAFT or PAUSED workflow (pause an ACTIVE one first)."""
        msg = request.workflow
        name = WorkflowName.parse("workflow.name", msg.name)
        store = await self._store(name)
        current = await self._ops.editable(store, name.workflow, msg.etag)
        paths = update_paths(request.update_mask, msg, _WRITABLE)
        trigger, nodes = current.trigger, current.nodes
        if paths & {"trigger", "nodes"}:  # both convert together; each is written only when in the mask
            trigger, nodes = graph_from_proto(msg, store.id, await self._ops.default_country(store.id))
        changes = WorkflowChanges(
            display_name=workflow_display_name(msg.display_name) if "display_name" in paths else None,
            trigger=trigger if "trigger" in paths else None,
            nodes=nodes if "nodes" in paths else None,
            start_node=msg.start_node if "start_node" in paths else None,
        )
        return workflow_to_proto(await self._ops.update(current, changes))

    async def DeleteWorkflow(
        self, request: pb.DeleteWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        """Delete a workflow and its runs."""
        name = WorkflowName.parse("name", request.name)
        await self._ops.delete(await self._store(name), name.workflow, request.etag)
        return empty_pb2.Empty()

    async def ActivateWorkflow(
        self, request: pb.ActivateWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.Workflow:
        """Validate the whole graph (every violation at once) and activate; paused runs resume."""
        name = WorkflowName.parse("name", request.name)
        return workflow_to_proto(await self._ops.activate(await self._store(name), name.workflow))

    async def PauseWorkflow(self, request: pb.PauseWorkflowRequest, context: grpc.aio.ServicerContext) -> pb.Workflow:
        """Pause: runs stop at their next step."""
        name = WorkflowName.parse("name", request.name)
        return workflow_to_proto(await self._ops.pause(await self._store(name), name.workflow))

    async def TriggerEvent(
        self, request: pb.TriggerEventRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerEventResponse:
        """Start a run of every ACTIVE workflow waiting for this event, for the contact."""
        parent = StoreName.parse("parent", request.parent)
        store = await self._store(parent)
        if not request.event_name.strip():
            raise InvalidArgument("event_name", "required")
        contact = ContactName.parse("contact", request.contact)
        try:
            raw = json_format.MessageToDict(request.properties) if request.HasField("properties") else {}
        except ValueError as e:  # NaN or Infinity: JSON has no such number
            raise InvalidArgument("properties", "numbers must be finite (no NaN or Infinity)") from e
        event = {k: _property_text(v) for k, v in raw.items()}
        runs = await self._ops.trigger_event(store, request.event_name.strip(), contact, event, request.request_id)
        return pb.TriggerEventResponse(
            workflow_runs=[str(WorkflowRunName(r.store_id, r.workflow_id, r.id)) for r in runs]
        )

    async def ListWorkflowRuns(
        self, request: pb.ListWorkflowRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowRunsResponse:
        """Runs of a workflow, oldest first; filter `state = COMPLETED`, `contact = "..."`."""
        name = WorkflowName.parse("parent", request.parent)
        wf = await self._ops.get(await self._store(name), name.workflow)
        query = run_query(request.filter)
        limit = page_size(request.page_size)
        after = self._tokens.decode(request.page_token, request.parent, request.filter) or 0
        rows = await self._ops.page_runs(wf, query, after, limit + 1)
        page = self._tokens.page(rows, limit, request.parent, request.filter)
        return pb.ListWorkflowRunsResponse(
            workflow_runs=[run_to_proto(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def GetWorkflowRun(
        self, request: pb.GetWorkflowRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkflowRun:
        """A run with every step: time, outcome and the message it produced."""
        name = WorkflowRunName.parse("name", request.name)
        found = await self._ops.get_run(await self._store(name), name.workflow, name.run)
        return run_to_proto(found.run, found.steps)

    async def PreviewWorkflow(
        self, request: pb.PreviewWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkflowPreview:
        """A dry run: what each Send SMS node would do now for the workflow's audience."""
        name = WorkflowName.parse("name", request.name)
        store = await self._store(name)
        if not 0 <= request.sample_size <= MAX_SAMPLES:
            raise InvalidArgument("sample_size", f"from 0 to {MAX_SAMPLES} (3 when unset)")
        preview = await self._previews.workflow(store.id, name.workflow, request.sample_size or 3)
        return preview_to_proto(preview)


def _property_text(value: object) -> str:
    """An event property as text for SMS variables."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
