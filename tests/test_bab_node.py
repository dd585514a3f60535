"""The frontier: best-first order, depth-first past the memory cap, nothing lost."""

from __future__ import annotations

import numpy as np

from bnbver.bab.node import Frontier, Node
from bnbver.splits import SplitSet


def _node(bound: float, depth: int, i: int) -> Node:
    return Node(np.zeros(1), np.ones(1), SplitSet(), bound, depth, node_id=i)


def test_best_first_order_and_global_bound() -> None:
    f = Frontier()
    for i, b in enumerate([0.5, -2.0, -1.0, 3.0]):
        f.push(_node(b, i, i))
    assert f.global_lower_bound() == -2.0
    assert [n.lower_bound for n in f.pop_batch(2)] == [-2.0, -1.0]
    assert f.global_lower_bound() == 0.5
    assert len(f) == 2


def test_depth_first_past_memory_cap_loses_nothing() -> None:
    f = Frontier(memory_cap=3)
    for i in range(6):
        f.push(_node(-float(i), depth=i % 3, i=i))
    first = f.pop_batch(1)[0]
    assert first.depth == 2  # over the cap: deepest first
    rest = f.pop_batch(100)
    assert sorted(n.node_id for n in [first, *rest]) == list(range(6))
    assert len(f) == 0 and f.global_lower_bound() == float("inf")


def test_pop_batch_stops_at_the_budget_in_best_first_order() -> None:
    """Nodes come best first until the next one's cost would overrun the budget; a node
    whose cost alone exceeds it still comes alone (a round takes at least one)."""
    f = Frontier()
    costs = {0: 3.0, 1: 2.0, 2: 4.0, 3: 1.0}
    for i, b in enumerate([-1.0, -4.0, -3.0, -2.0]):
        f.push(_node(b, 0, i))
    cost = lambda n: costs[n.node_id]  # noqa: E731
    assert [n.node_id for n in f.pop_batch(10, cost, budget=6.5)] == [1, 2]   # 2 + 4 (+ 1 > 6.5)
    assert [n.node_id for n in f.pop_batch(10, cost, budget=0.5)] == [3]      # alone, over
    assert [n.node_id for n in f.pop_batch(10, cost, budget=100.0)] == [0]
    assert len(f) == 0 and f.pop_batch(4, cost, 1.0) == []


def test_pop_batch_budget_skips_stale_entries_and_keeps_the_rest() -> None:
    """Past the memory cap the budget applies depth-first too; nodes not taken stay open
    and come out later in order."""
    f = Frontier(memory_cap=2)
    for i in range(5):
        f.push(_node(-float(i), depth=i, i=i))
    taken = f.pop_batch(10, lambda n: 1.0, budget=2.0)
    assert [n.node_id for n in taken] == [4, 3]   # deepest first, two fit
    assert [n.node_id for n in f.pop_batch(10)] == [2, 1, 0]   # best-first again (3 <= cap)
