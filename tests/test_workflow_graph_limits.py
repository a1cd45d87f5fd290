"""Big graphs: a documented node limit, and checks linear in nodes + edges, without recursion (SPEC §8)."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smschannel.domain.graphs import loops
from smschannel.domain.workflows import MAX_NODES, EndStep, Node, ReceivedSmsStep, Trigger, Workflow, WorkflowState
from smschannel.server import App
from smschannel.v1 import workflow_service_pb2 as wpb

from .conftest import StoreCtx, Stubs
from .rpc_errors import field_violations
from .test_workflows import activate, create_workflow, end, violations

EVENT = wpb.Trigger(event=wpb.EventTrigger(event_name="big"))
# Generous for a shared 2-core machine; the quadratic, recursive checks took seconds for big graphs.
FAST = 2.0


def chain(length: int, back_to: str = "") -> list[wpb.Node]:
    """`length` Received SMS nodes in a row, then an End; the last condition's yes exit goes `back_to`."""
    nodes = [
        wpb.Node(id=f"n{i}", received_sms=wpb.ReceivedSmsNode(yes_next=f"n{i + 1}", no_next=f"n{i + 1}"))
        for i in range(length)
    ]
    nodes[-1].received_sms.yes_next = back_to or "end"
    nodes[-1].received_sms.no_next = "end"
    return [*nodes, end()]


async def timed_create(stubs: Stubs, store: StoreCtx, nodes: list[wpb.Node]) -> tuple[float, grpc.aio.AioRpcError]:
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await create_workflow(stubs, store, EVENT, nodes)
    return time.perf_counter() - started, e.value


async def test_the_largest_graph_activates_fast(stubs: Stubs, store: StoreCtx) -> None:
    wf = await create_workflow(stubs, store, EVENT, chain(MAX_NODES - 1))
    assert len(wf.nodes) == MAX_NODES == 500
    started = time.perf_counter()
    assert (await activate(stubs, store, wf)).state == wpb.WORKFLOW_STATE_ACTIVE
    assert time.perf_counter() - started < FAST


@pytest.mark.parametrize("size", [MAX_NODES + 1, 10_000])
async def test_more_nodes_are_an_invalid_argument_answered_fast(stubs: Stubs, store: StoreCtx, size: int) -> None:
    took, err = await timed_create(stubs, store, chain(size - 1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err) == {"workflow.nodes": f"at most 500 nodes, not {size}"}
    assert took < FAST
    wf = await create_workflow(stubs, store, EVENT, chain(1))
    wf.nodes.extend(chain(size)[1:])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.workflows.UpdateWorkflow(wpb.UpdateWorkflowRequest(workflow=wf), metadata=store.md)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_long_loop_without_a_wait_is_found(stubs: Stubs, store: StoreCtx) -> None:
    wf = await create_workflow(stubs, store, EVENT, chain(MAX_NODES - 1, back_to="n0"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await activate(stubs, store, wf)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(e.value) == [("CYCLE_WITHOUT_WAIT", "nodes/n0")]


async def test_a_huge_stored_graph_is_refused_at_activation_not_internal(
    stubs: Stubs, app: App, store: StoreCtx
) -> None:
    # 5,000 nodes in one loop, written before the limit existed: the recursive search hit RecursionError.
    size = 5_000
    nodes = tuple(Node(f"n{i}", ReceivedSmsStep(f"n{(i + 1) % size}", "end")) for i in range(size))
    now = datetime.now(UTC)
    legacy = Workflow(
        store.id, f"huge-{uuid.uuid4().hex[:8]}", "Huge", WorkflowState.DRAFT, Trigger("event", event_name="big"),
        (*nodes, Node("end", EndStep())), "n0", now, now,
    )  # fmt: skip
    await app.storage.workflows.create(legacy)
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stubs.workflows.ActivateWorkflow(
            wpb.ActivateWorkflowRequest(name=f"{store.name}/workflows/{legacy.id}"), metadata=store.md
        )
    assert time.perf_counter() - started < FAST
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert violations(e.value) == [("TOO_MANY_NODES", "nodes"), ("CYCLE_WITHOUT_WAIT", "nodes/n0")]


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["a"]}, [["a", "a"]]),
        ({"a": ["b"], "b": ["c", "ghost"], "c": ["b"]}, [["b", "c", "b"]]),
        ({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}, [["a", "b", "a"], ["c", "d", "c"]]),
        ({"a": ["b", "c"], "b": ["a"], "c": ["a"]}, [["a", "b", "a"]]),  # one group, one loop shown
        ({"x": ["y"], "y": ["z"], "z": ["w"], "w": ["x"]}, [["x", "y", "z", "w", "x"]]),
        ({"a": ["w"], "b": ["a"]}, []),  # w is not in the graph (a wait node): no loop through it
    ],
)
def test_loops(edges: dict[str, list[str]], expected: list[list[str]]) -> None:
    assert loops(edges) == expected


def test_loops_of_a_very_deep_graph_need_no_recursion() -> None:
    size = 50_000
    edges = {f"n{i}": [f"n{(i + 1) % size}"] for i in range(size)}
    (found,) = loops(edges)
    assert len(found) == size + 1
    assert (found[0], found[-1]) == ("n0", "n0")


def _has_cycle(edges: dict[str, list[str]]) -> bool:
    """Kahn's algorithm: the graph is acyclic when every node can be peeled off by in-degree."""
    indegree = dict.fromkeys(edges, 0)
    for targets in edges.values():
        for t in targets:
            if t in edges:
                indegree[t] += 1
    ready = [n for n, d in indegree.items() if d == 0]
    peeled = 0
    while ready:
        node = ready.pop()
        peeled += 1
        for t in edges[node]:
            if t in edges:
                indegree[t] -= 1
                if indegree[t] == 0:
                    ready.append(t)
    return peeled < len(edges)


graphs = st.integers(1, 12).flatmap(
    lambda n: st.fixed_dictionaries(
        {f"n{i}": st.lists(st.sampled_from([f"n{j}" for j in range(n)] + ["out"]), max_size=2) for i in range(n)}
    )
)


@given(graphs)
def test_loops_are_real_and_found_exactly_when_there_is_a_cycle(edges: dict[str, list[str]]) -> None:
    found = loops(edges)
    assert bool(found) == _has_cycle(edges)
    seen: set[str] = set()
    for path in found:
        assert path[0] == path[-1]
        assert all(b in edges[a] for a, b in itertools.pairwise(path))
        assert not seen & set(path[:-1])  # one loop per group of nodes
        seen |= set(path[:-1])
