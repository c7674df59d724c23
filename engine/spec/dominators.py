"""Dominators of a directed graph (Lengauer-Tarjan with path compression), without recursion.

The spec checker uses them to know which states have *always* completed when another state runs:
state ``b`` dominates ``a`` when every path from the initial state to ``a`` passes through ``b``.
Everything here is iterative and O(E log V), so a 20,000-state spec is checked in well under a
second and a deep chain cannot exhaust the Python stack.
"""

from __future__ import annotations

from collections.abc import Sequence


class DominatorTree:
    """Answers "does ``d`` dominate ``v``?" in O(1) after one near-linear pass over the graph."""

    def __init__(self, succ: Sequence[Sequence[int]], root: int = 0) -> None:
        idom = immediate_dominators(succ, root)
        n = len(succ)
        children: list[list[int]] = [[] for _ in range(n)]
        for v, d in enumerate(idom):
            if d >= 0 and v != root:
                children[d].append(v)
        self.enter, self.leave = [-1] * n, [-1] * n
        clock, stack = 0, [(root, False)]
        while stack:
            v, done = stack.pop()
            if done:
                self.leave[v] = clock
                clock += 1
                continue
            self.enter[v] = clock
            clock += 1
            stack.append((v, True))
            stack.extend((c, False) for c in children[v])

    def reachable(self, v: int) -> bool:
        return self.enter[v] >= 0

    def dominates(self, d: int, v: int) -> bool:
        """True when every path from the root to ``v`` passes through ``d`` (``v`` reachable)."""
        if not (self.reachable(d) and self.reachable(v)):
            return False
        return self.enter[d] <= self.enter[v] and self.leave[v] <= self.leave[d]


def immediate_dominators(succ: Sequence[Sequence[int]], root: int = 0) -> list[int]:
    """``idom[v]`` for every vertex: the root maps to itself, unreachable vertices to -1."""
    n = len(succ)
    num = [-1] * n  # DFS number of each vertex
    order: list[int] = []  # vertex of each DFS number
    parent: list[int] = []  # DFS number of each DFS number's tree parent
    stack = [(root, -1)]
    while stack:  # an explicit-stack DFS; every edge still goes to an ancestor or an earlier vertex
        v, p = stack.pop()
        if num[v] != -1:
            continue
        num[v] = len(order)
        order.append(v)
        parent.append(p)
        stack.extend((w, num[v]) for w in reversed(succ[v]) if num[w] == -1)
    m = len(order)
    preds: list[list[int]] = [[] for _ in range(m)]
    for v in order:
        for w in succ[v]:
            preds[num[w]].append(num[v])
    semi = list(range(m))
    label = list(range(m))
    ancestor = [-1] * m
    idom = [0] * m
    bucket: list[list[int]] = [[] for _ in range(m)]

    def evaluate(v: int) -> int:
        if ancestor[v] == -1:
            return v
        path = []
        x = v
        while ancestor[ancestor[x]] != -1:  # compress the forest path, top-most link first
            path.append(x)
            x = ancestor[x]
        for x in reversed(path):
            a = ancestor[x]
            if semi[label[a]] < semi[label[x]]:
                label[x] = label[a]
            ancestor[x] = ancestor[a]
        return label[v]

    for w in range(m - 1, 0, -1):
        for v in preds[w]:
            u = evaluate(v)
            if semi[u] < semi[w]:
                semi[w] = semi[u]
        bucket[semi[w]].append(w)
        p = parent[w]
        ancestor[w] = p
        for v in bucket[p]:
            u = evaluate(v)
            idom[v] = u if semi[u] < semi[v] else p
        bucket[p] = []
    for w in range(1, m):
        if idom[w] != semi[w]:
            idom[w] = idom[idom[w]]
    out = [-1] * n
    for i, v in enumerate(order):
        out[v] = order[idom[i]] if i else v
    return out
