"""Read, summarise and plot a recorded search tree (``--record tree.jsonl``).

The recorder (``bnbver.bab.record.TreeRecorder``) writes one JSON line per bounded node:
``id``, ``parent``, ``depth``, ``split``, ``bound``, ``status`` (``open``, a closing method
such as ``beta`` / ``lp`` / ``milp`` / ``infeasible``, or ``counterexample``) and ``time``.
Everything else is derived here, without re-running the search:

- *bound before* a node was bounded is its parent's bound (the root has none);
- an ``open`` node that has children was *branched*; one without children was still open
  when the run ended (a timeout);
- the *global lower bound* at time t is the minimum bound over the nodes open at t: a node
  enters the open set when it is recorded ``open`` and leaves it when its *last* recorded
  child is in (it was popped and branched), or when a later record of the same node closes
  it (a stall MILP decides an open node). Once the open set is empty every leaf is closed.

  Why the last child: a round records its children one by one, so after a parent's first
  child the second is not in yet. Dropping the parent there (as this module once did) left
  the region of the missing child uncovered for a moment, and the minimum jumped up, then
  down again when the sibling arrived: upward spikes that no search state ever had. Until
  its last child is in, the parent's own bound (a valid bound on both children) stands in.
- the record is in time order (one process appends it), and :func:`load_tree` merges a
  node recorded twice (open, then closed by a stall MILP) into one node with ``closed_at``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bnbver.errors import InputError

#: Statuses that are not closing methods.
OPEN, CEX = "open", "counterexample"


@dataclass(frozen=True)
class TreeNode:
    """One recorded node (``bound_before`` is the parent's bound, nan for the root).

    A node closed after it was open (a stall MILP) has ``closed_at`` (when) and
    ``bound_open`` (its bound while open); both are nan otherwise.
    """

    id: int
    parent: int
    depth: int
    split: tuple[Any, ...] | None
    bound: float
    status: str
    time: float
    bound_before: float = math.nan
    closed_at: float = math.nan
    bound_open: float = math.nan

    @property
    def closed(self) -> bool:
        """True for a leaf closed by a method (a proof piece of the certificate)."""
        return self.status not in (OPEN, CEX)


def load_tree(path: Path) -> list[TreeNode]:
    """Read a JSON-lines tree; a truncated last line (a killed run) is ignored.

    A node recorded twice (``open``, then closed by a stall MILP) becomes one node: its
    status and bound are the closing record's, ``time`` the first record's and ``closed_at``
    the second's.

    Raises:
        InputError: the file holds no tree record, or a line other than the last one is
            not a record (it is not a tree file).
    """
    lines = path.read_text().splitlines()
    raw: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
            raw.append({k: row[k] for k in ("id", "parent", "depth", "split", "bound",
                                            "status", "time")})
        except (json.JSONDecodeError, KeyError, TypeError):
            if i < len(lines) - 1 or not raw:
                raise InputError(str(path), f"line {i + 1} is not a tree record "
                                 "(expected one written by --record)") from None
    return _merge(raw)


def _merge(raw: list[dict[str, Any]]) -> list[TreeNode]:
    """Return one TreeNode per id (see :func:`load_tree`), in first-record order."""
    bound = {int(r["id"]): float(r["bound"]) for r in raw if r["status"] == OPEN}
    nodes: dict[int, TreeNode] = {}
    for r in raw:
        node_id = int(r["id"])
        if node_id in nodes:  # re-recorded: closed after it was open
            first = nodes[node_id]
            nodes[node_id] = replace(first, status=str(r["status"]), bound=float(r["bound"]),
                                     closed_at=float(r["time"]), bound_open=first.bound)
            continue
        nodes[node_id] = TreeNode(node_id, int(r["parent"]), int(r["depth"]),
                                  None if r["split"] is None else tuple(r["split"]),
                                  float(r["bound"]), str(r["status"]), float(r["time"]),
                                  bound.get(int(r["parent"]), math.nan))
    return list(nodes.values())


def relu_split_set(nodes: Sequence[TreeNode], node: TreeNode) -> frozenset[tuple[Any, ...]]:
    """Return the node's ReLU splits, rebuilt by walking the recorded decisions to the root."""
    by_id = {n.id: n for n in nodes if n.status == OPEN or n.id == node.id}
    out = set()
    cur: TreeNode | None = node
    while cur is not None:
        if cur.split is not None and cur.split[0] == "relu":
            out.add((int(cur.split[1]), int(cur.split[2]), bool(cur.split[3])))
        cur = by_id.get(cur.parent)
    return frozenset(out)


def bound_curve(nodes: Sequence[TreeNode]) -> list[tuple[float, float]]:
    """Return (time, global lower bound) after every record (+inf once all are closed).

    See the module docstring: a parent stays in the open set until its last recorded child
    is in, so every point of the curve is the bound of a set of nodes covering what is left.
    """
    children = Counter(n.parent for n in nodes)
    seen: Counter[int] = Counter()
    events = sorted([(n.time, 0, i) for i, n in enumerate(nodes)]
                    + [(n.closed_at, 1, i) for i, n in enumerate(nodes)
                       if not math.isnan(n.closed_at)])
    open_bounds: dict[int, float] = {}
    curve = []
    for t, closing, i in events:
        n = nodes[i]
        if closing:
            open_bounds.pop(n.id, None)
        else:
            seen[n.parent] += 1
            if seen[n.parent] == children[n.parent]:
                open_bounds.pop(n.parent, None)
            if n.status == OPEN or not math.isnan(n.closed_at):
                open_bounds[n.id] = n.bound if math.isnan(n.closed_at) else n.bound_open
        curve.append((t, min(open_bounds.values(), default=math.inf)))
    return curve


def roles(nodes: Sequence[TreeNode]) -> dict[int, str]:
    """Return {id: "branched" | "open at end" | "closed" | "counterexample"}."""
    parents = {n.parent for n in nodes}
    out = {}
    for n in nodes:
        if n.status == OPEN:
            out[n.id] = "branched" if n.id in parents else "open at end"
        else:
            out[n.id] = "closed" if n.closed else CEX
    return out


def summarize(nodes: Sequence[TreeNode]) -> dict[str, Any]:
    """Return the run's tree statistics (all derived from the record)."""
    role = Counter(roles(nodes).values())
    curve = bound_curve(nodes)
    gains = [n.bound - n.bound_before for n in nodes
             if not math.isnan(n.bound_before) and math.isfinite(n.bound)
             and math.isfinite(n.bound_before)]
    return {"nodes": len(nodes), "max_depth": max((n.depth for n in nodes), default=0),
            "seconds": nodes[-1].time if nodes else 0.0,
            "branched": role["branched"], "closed": role["closed"],
            "open_at_end": role["open at end"], "counterexample": role[CEX] > 0,
            "closed_by": dict(Counter(n.status for n in nodes if n.closed)),
            "root_bound": nodes[0].bound if nodes else math.nan,
            "final_global_lower_bound": curve[-1][1] if curve else math.nan,
            "median_bound_gain": sorted(gains)[len(gains) // 2] if gains else math.nan}


def depth_profile(nodes: Sequence[TreeNode]) -> dict[str, list[int]]:
    """Return {role: count per depth 0..max_depth}."""
    role = roles(nodes)
    depth = max((n.depth for n in nodes), default=0)
    prof = {r: [0] * (depth + 1) for r in ("branched", "closed", "open at end", CEX)}
    for n in nodes:
        prof[role[n.id]][n.depth] += 1
    return prof


def plot_tree(nodes: Sequence[TreeNode], path: Path, title: str = "") -> dict[str, int]:
    """Draw the global lower bound over time and the depth profile; return artist counts.

    Returns:
        {"bound_lines": lines in the bound panel (the bound and the y = 0 proof line),
        "depth_bars": bar groups (roles) in the depth panel}.
    """
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    curve = [(t, b) for t, b in bound_curve(nodes) if math.isfinite(b)]
    end = nodes[-1].time if nodes else 0.0
    if curve and curve[-1][0] < end:
        curve.append((end, curve[-1][1]))  # the bound holds until the run ends
    ax1.step([t for t, _ in curve], [b for _, b in curve], where="post", label="global LB")
    ax1.axhline(0.0, color="grey", lw=0.8, ls="--", label="proof (LB > 0)")
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("global lower bound of the margin")
    ax1.legend(loc="lower right", fontsize="small")
    prof = depth_profile(nodes)
    bottom = [0] * len(next(iter(prof.values())))
    bars = 0
    for role, counts in prof.items():
        if any(counts):
            ax2.bar(range(len(counts)), counts, bottom=bottom, label=role)
            bottom = [a + b for a, b in zip(bottom, counts, strict=True)]
            bars += 1
    ax2.set_xlabel("depth")
    ax2.set_ylabel("nodes")
    ax2.legend(fontsize="small")
    fig.suptitle(title)
    drawn = {"bound_lines": len(ax1.get_lines()), "depth_bars": bars}
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return drawn


def certificate_mismatches(nodes: Sequence[TreeNode], leaves: Sequence[Any],
                           tol: float = 1e-9) -> list[str]:
    """Compare the recorded closed leaves with a ``Certificate``'s leaves; list differences.

    Leaves are matched as multisets of (method, depth, split set), the split set of a
    recorded leaf rebuilt from the decisions on its path (ReLU splitting from an unsplit
    root: a certificate leaf's depth is its number of splits). Bounds are compared too.
    """
    problems = []
    closed = [n for n in nodes if n.closed]
    if len(closed) != len(leaves):
        problems.append(f"{len(closed)} closed leaves recorded, {len(leaves)} in certificate")
    rec = Counter((n.status, n.depth, relu_split_set(nodes, n)) for n in closed)
    cert = Counter((lf.method, len(lf.splits), _split_set(lf)) for lf in leaves)
    if rec != cert:
        problems.append(f"leaf keys differ: recorded-only {dict(rec - cert)}, "
                        f"certificate-only {dict(cert - rec)}")
    rb = sorted(n.bound for n in closed)
    cb = sorted(float(lf.bound) for lf in leaves)
    if len(rb) == len(cb) and any(abs(a - b) > tol for a, b in zip(rb, cb, strict=True)
                                  if math.isfinite(a) or math.isfinite(b)):
        problems.append("leaf bounds differ")
    return problems


def _split_set(leaf: Any) -> frozenset[tuple[Any, ...]]:
    return frozenset((int(s.layer), int(s.unit), bool(s.active)) for s in leaf.splits.splits)
