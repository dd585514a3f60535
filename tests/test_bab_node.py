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
