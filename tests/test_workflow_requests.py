"""WorkflowService request conventions: update masks (AIP-134) and request ids (AIP-155)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import StoreCtx, Stubs
from .rpc_errors import field_violations
from .test_workflows import activate, contact, create_workflow, end

EVENT = wpb.Trigger(event=wpb.EventTrigger(event_name="signup"))
NODES = [wpb.Node(id="w", wait=wpb.WaitNode(duration=duration_pb2.Duration(seconds=60), next="end")), end()]


async def update(stubs: Stubs, store: StoreCtx, wf: wpb.Workflow, *paths: str) -> wpb.Workflow:
    return await stubs.workflows.UpdateWorkflow(
        wpb.UpdateWorkflowRequest(workflow=wf, update_mask=field_mask_pb2.FieldMask(paths=paths)), metadata=store.md
    )


def graph(wf: wpb.Workflow) -> tuple[wpb.Trigger, list[wpb.Node], str]:
    return wf.trigger, list(wf.nodes), wf.start_node


async def test_an_update_without_a_mask_writes_only_the_fields_sent(stubs: Stubs, store: StoreCtx) -> None:
    wf = await create_workflow(stubs, store, EVENT, NODES)
    renamed = await update(stubs, store, wpb.Workflow(name=wf.name, display_name="Renamed"))
    assert renamed.display_name == "Renamed"
    assert graph(renamed) == graph(wf)
    got = await stubs.workflows.GetWorkflow(wpb.GetWorkflowRequest(name=wf.name), metadata=store.md)
    assert graph(got) == graph(wf)
    # Nodes alone: the trigger and the name stay.
    regraphed = await update(stubs, store, wpb.Workflow(name=wf.name, nodes=[end("only")], start_node="only"))
    assert (regraphed.display_name, regraphed.trigger) == ("Renamed", EVENT)
    assert [n.id for n in regraphed.nodes] == ["only"]


async def test_a_star_mask_replaces_every_writable_field(stubs: Stubs, store: StoreCtx) -> None:
    wf = await create_workflow(stubs, store, EVENT, NODES)
    replaced = await update(stubs, store, wpb.Workflow(name=wf.name, display_name="Bare"), "*")
    assert replaced.display_name == "Bare"
    assert graph(replaced) == (wpb.Trigger(), [], "")


@pytest.mark.parametrize(
    ("paths", "field"),
    [(["state"], "update_mask"), (["*", "nodes"], "update_mask"), (["display_name"], "workflow.display_name")],
)
async def test_a_bad_mask_or_a_masked_empty_name_is_invalid(
    stubs: Stubs, store: StoreCtx, paths: list[str], field: str
) -> None:
    wf = await create_workflow(stubs, store, EVENT, NODES)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await update(stubs, store, wpb.Workflow(name=wf.name), *paths)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(e.value)) == {field}


async def test_concurrent_events_with_one_request_id_answer_the_one_stored_run(stubs: Stubs, store: StoreCtx) -> None:
    wf = await activate(stubs, store, await create_workflow(stubs, store, EVENT, NODES))
    c = await contact(stubs, store, "+34612500950")
    request = wpb.TriggerEventRequest(
        parent=store.name, event_name="signup", contact=c.name, request_id=uuid.uuid4().hex
    )
    answers = await asyncio.gather(*(stubs.workflows.TriggerEvent(request, metadata=store.md) for _ in range(10)))
    names = {name for answer in answers for name in answer.workflow_runs}
    assert all(len(answer.workflow_runs) == 1 for answer in answers)
    assert len(names) == 1, names
    (name,) = names
    run = await stubs.workflows.GetWorkflowRun(wpb.GetWorkflowRunRequest(name=name), metadata=store.md)
    assert run.contact == c.name
    listed = await stubs.workflows.ListWorkflowRuns(wpb.ListWorkflowRunsRequest(parent=wf.name), metadata=store.md)
    assert [r.name for r in listed.workflow_runs] == [name]
