"""BaB nodes and the frontier of open nodes.

A node is a sub-problem of the verification question: the input box (possibly a piece of the
root box after input splits) and a set of ReLU splits. ``state`` carries what the bounds engine
needs to warm-start the node's children (inherited intermediate bounds, alpha/beta); the loop
treats it as opaque.

The frontier pops the nodes with the lowest lower bound first (best-first: they are the most
likely to hold a counterexample and decide the global bound). Past ``memory_cap`` open nodes it
pops the deepest nodes first instead (depth-first), which closes subtrees and bounds memory
rather than dying.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnbver.splits import SplitSet


@dataclass(frozen=True, eq=False)
class Node:
    """An open or closed sub-problem.

    Attributes:
        lower: (n_in,) lower corner of the node's input box.
        upper: (n_in,) upper corner.
        splits: the ReLU splits on the path from the root.
        lower_bound: proven lower bound of the node's unsafe margin (closes when > 0).
        depth: number of branchings from the root.
        state: bounds-engine payload for warm starts (opaque to the loop).
        node_id: unique id (for recording the tree).
        parent_id: id of the parent (-1 for the root).
        decision: the branching decision that made it from its parent, as the search
            tree record writes it (``["relu", layer, unit, active]`` or
            ``["input", dim, "lower" | "upper"]``), None for the root.
    """

    lower: np.ndarray
    upper: np.ndarray
    splits: SplitSet
    lower_bound: float
    depth: int
    state: Any = None
    node_id: int = 0
    parent_id: int = -1
    decision: list[object] | None = None


@dataclass
class Frontier:
    """Open nodes; best-first by lower bound, depth-first past ``memory_cap`` nodes."""

    memory_cap: int = 200_000
    _by_bound: list[tuple[float, int, int]] = field(default_factory=list)
    _by_depth: list[tuple[int, int]] = field(default_factory=list)
    _nodes: dict[int, Node] = field(default_factory=dict)
    _counter: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    def __len__(self) -> int:
        return len(self._nodes)

    def push(self, node: Node) -> None:
        """Add an open node."""
        key = next(self._counter)
        self._nodes[key] = node
        heapq.heappush(self._by_bound, (node.lower_bound, -node.depth, key))
        heapq.heappush(self._by_depth, (-node.depth, key))

    def pop_batch(self, k: int, cost: Callable[[Node], float] | None = None,
                  budget: float = float("inf")) -> list[Node]:
        """Remove and return up to k nodes (lowest bound first, or deepest past the cap),
        and no more than fit in ``budget`` by their ``cost`` (at least one)."""
        heap_is_depth = len(self._nodes) > self.memory_cap
        heap: list[Any] = self._by_depth if heap_is_depth else self._by_bound
        out: list[Node] = []
        spent = 0.0
        while heap and len(out) < k:
            key = heap[0][-1]
            node = self._nodes.get(key)
            if node is not None and cost is not None:
                spent += cost(node)
                if out and spent > budget:
                    break
            heapq.heappop(heap)
            if node is not None:
                out.append(self._nodes.pop(key))
        self._compact()
        return out

    def global_lower_bound(self) -> float:
        """Return the lowest lower bound over open nodes (+inf when empty)."""
        while self._by_bound and self._by_bound[0][2] not in self._nodes:
            heapq.heappop(self._by_bound)
        return self._by_bound[0][0] if self._by_bound else float("inf")

    def max_depth(self) -> int:
        """Return the largest depth among open nodes (0 when empty)."""
        return max((n.depth for n in self._nodes.values()), default=0)

    def drain(self) -> list[Node]:
        """Remove and return every open node."""
        nodes = list(self._nodes.values())
        self._nodes.clear()
        self._by_bound.clear()
        self._by_depth.clear()
        return nodes

    def _compact(self) -> None:
        """Drop stale heap entries when the heaps grow far beyond the live node count."""
        if len(self._by_bound) > 4 * len(self._nodes) + 1024:
            self._by_bound = [e for e in self._by_bound if e[2] in self._nodes]
            heapq.heapify(self._by_bound)
        if len(self._by_depth) > 4 * len(self._nodes) + 1024:
            self._by_depth = [e for e in self._by_depth if e[1] in self._nodes]
            heapq.heapify(self._by_depth)
