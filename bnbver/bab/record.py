"""Search-tree recording: one JSON line per bounded node, for plots and audits.

Each line: ``id``, ``parent``, ``depth``, ``split`` (the branching decision that made the
node: ``["relu", layer, unit, active]`` or ``["input", dim, "lower"|"upper"]``; null for the
root), ``bound_before`` (the parent's bound; null for the root), ``bound`` (the node's proven
bound), ``method`` (how it was bounded or closed), ``status`` (``open``, the closing method,
or ``counterexample``) and ``time`` (seconds since the start).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

import numpy as np

from bnbver.bab.node import Node


def branching_decision(node: Node, parent: Node | None) -> list[object] | None:
    """Return the decision that made ``node`` from ``parent`` (see the module docstring).

    The search stores it on the node; it is rebuilt from the splits and boxes only for
    nodes made elsewhere (an input-split child's box may also be clipped, so the changed
    sides alone do not tell which dimension was split).
    """
    if parent is None:
        return None
    if node.decision is not None:
        return node.decision
    new = set(node.splits.splits) - set(parent.splits.splits)
    if new:
        s = min(new)
        return ["relu", s.layer, s.unit, s.active]
    changed = np.flatnonzero((node.lower != parent.lower) | (node.upper != parent.upper))
    if changed.size:
        dim = int(changed[0])
        half = "lower" if node.upper[dim] < parent.upper[dim] else "upper"
        return ["input", dim, half]
    return None


class TreeRecorder:
    """Append node records to a JSON-lines file; a no-op when ``path`` is None."""

    def __init__(self, path: str | Path | None, append: bool = False) -> None:
        mode = "a" if append else "w"
        self._file: IO[str] | None = Path(path).open(mode) if path else None  # noqa: SIM115

    def node(self, node: Node, parent: Node | None, status: str, seconds: float,
             method: str = "") -> None:
        """Record one bounded node."""
        if self._file is None:
            return
        row = {"id": node.node_id, "parent": node.parent_id, "depth": node.depth,
               "split": branching_decision(node, parent),
               "bound_before": None if parent is None else parent.lower_bound,
               "bound": node.lower_bound, "method": method, "status": status,
               "time": round(seconds, 6)}
        self._file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
