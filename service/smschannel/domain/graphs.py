"""Directed graphs of node ids: the loops of a workflow graph, found in linear time without recursion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["loops"]


def loops(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One closed path per group of nodes that loop into each other (a strongly connected component
    with a cycle), e.g. `["b", "c", "b"]`; targets absent from `edges` are ignored.

    Each path starts and ends at the group's first node in the order of `edges`, and is a shortest way
    back to it. O(nodes + edges), iterative: a graph as deep as it is long must not hit the recursion
    limit nor hold the event loop."""
    order = {node: i for i, node in enumerate(edges)}
    found: list[list[str]] = []
    for group in _components(edges):
        first = min(group, key=order.__getitem__)
        if len(group) > 1 or first in edges[first]:
            found.append(_way_back(edges, first, set(group)))
    found.sort(key=lambda path: order[path[0]])
    return found


def _components(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, with an explicit stack of (node, next edge) frames."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        frames = [(root, 0)]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while frames:
            node, i = frames[-1]
            targets = edges[node]
            if i < len(targets):
                frames[-1] = (node, i + 1)
                target = targets[i]
                if target not in edges:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    frames.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _way_back(edges: Mapping[str, Sequence[str]], start: str, group: set[str]) -> list[str]:
    """A shortest closed path from `start` through `group` (breadth first)."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in edges[node]:
                if target == start:
                    middle, back = [], node
                    while back != start:
                        middle.append(back)
                        back = came_from[back]
                    return [start, *reversed(middle), start]
                if target in group and target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise ValueError(f"{start!r} has no way back: not a loop")
