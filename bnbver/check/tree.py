"""Walk a proof tree: coverage of the property's box, and every leaf's closing argument.

Coverage: the root is the property's box without splits; every internal node has exactly two
children that split it (a ReLU fixed active and inactive, or the box cut at one point of one
dimension), so the leaves' regions cover the root's. A child's box may be smaller than its
half of the parent's (input-domain clipping): the checker then recomputes the clipping from
its own CROWN bounds of the unsafe rows and requires the stored box to contain what that
leaves. Bounds are derived top-down (:func:`~bnbver.check.bounds.node_bounds`), so a child
uses its parent's; a depth-first walk keeps only one path's bounds in memory.

A leaf closes when every unsafe disjunct is excluded on it: by a proof stored at the leaf or
at an ancestor (a rigorous dual bound > 0), by the interval or CROWN bound of one of its rows
(or of their mean) > 0, or when its bounds are contradictory (an empty node).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnbver.check.arith import U, down, gamma, magnitude, up
from bnbver.check.bounds import (
    NodeBounds,
    RootProofs,
    Target,
    lower_bound,
    node_bounds,
    split_layers,
    through,
)
from bnbver.check.format import (
    BOUND,
    CROWN,
    EMPTY,
    INFEASIBLE,
    INPUT,
    INTERNAL,
    RELU,
    ROOT,
    SOLVER,
    Tree,
)
from bnbver.check.net import CheckNet
from bnbver.spec import HalfSpaces, Property

#: Passes of input-domain clipping over a disjunct's rows (as the engine makes them).
CLIP_PASSES = 2


class CheckError(Exception):
    """A certificate does not prove what it claims (the message says where and why)."""


@dataclass
class TreeReport:
    """What one tree showed: leaves checked, leaves only a solver closed."""

    leaves: int = 0
    uncertified: int = 0
    proofs: int = 0


@dataclass
class _Node:
    """What a node hands to its children."""

    index: int
    box: tuple[np.ndarray, np.ndarray]
    splits: list[np.ndarray]
    bounds: NodeBounds
    proven: frozenset[int] = field(default_factory=frozenset)


def check_tree(net: CheckNet, prop: Property, tree: Tree) -> TreeReport:
    """Check one property's tree; raise :class:`CheckError` at the first problem."""
    _check_shape(net, tree)
    children = _children(tree)
    report = TreeReport()
    root_box = (prop.box.lower.copy(), prop.box.upper.copy())
    splits = [np.zeros(n, np.int8) for n in net.relu_sizes]
    stack: list[tuple[int, tuple[np.ndarray, np.ndarray], list[np.ndarray],
                      NodeBounds | None, frozenset[int]]] = [(0, root_box, splits, None,
                                                               frozenset())]
    while stack:
        i, box, splits, parent, proven = stack.pop()
        node = _visit(net, prop, tree, i, box, splits, parent, proven, report)
        kids = children.get(i, [])
        if tree.status[i] == INTERNAL:
            _check_pair(tree, i, kids, node)
            for c in kids:
                c_box, c_splits = _child_region(tree, c, node)
                stack.append((c, c_box, c_splits, node.bounds, node.proven))
        elif kids:
            raise CheckError(f"node {i}: a closed node has children")
    return report


def _check_shape(net: CheckNet, tree: Tree) -> None:
    if tree.size == 0 or tree.parent[0] != -1 or tree.kind[0] != ROOT:
        raise CheckError("the tree has no root")
    if np.any(tree.parent[1:] < 0) or np.any(tree.parent[1:] >= np.arange(1, tree.size)):
        raise CheckError("every node but the root must come after its parent")
    width = sum(net.relu_sizes)
    for name, arr in (("proof_nu", tree.proof_nu), ("root_nu", tree.root_nu)):
        if arr.shape[0] and arr.shape[1] != width:
            raise CheckError(f"{name} has {arr.shape[1]} columns, the network {width}")


def _children(tree: Tree) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for c in range(1, tree.size):
        out.setdefault(int(tree.parent[c]), []).append(c)
    return out


def _check_pair(tree: Tree, i: int, kids: list[int], node: _Node) -> None:
    """An internal node has two children that split it the same way, one per side."""
    if len(kids) != 2:
        raise CheckError(f"node {i}: an internal node needs 2 children, has {len(kids)}")
    a, b = kids
    same = (tree.kind[a] == tree.kind[b] and tree.layer[a] == tree.layer[b]
            and tree.unit[a] == tree.unit[b] and tree.mid[a] == tree.mid[b])
    if not same or tree.active[a] == tree.active[b] or tree.kind[a] not in (RELU, INPUT):
        raise CheckError(f"node {i}: its children do not split it in two")
    if tree.kind[a] == INPUT:
        j, mid = int(tree.layer[a]), float(tree.mid[a])
        if not (0 <= j < node.box[0].size and node.box[0][j] <= mid <= node.box[1][j]):
            raise CheckError(f"node {i}: input split point {mid} outside dimension {j}")


def _child_region(tree: Tree, c: int,
                  node: _Node) -> tuple[tuple[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Return the region a child of ``node`` covers before clipping: its box and splits."""
    lo, hi = node.box[0].copy(), node.box[1].copy()
    splits = node.splits
    if tree.kind[c] == INPUT:
        j = int(tree.layer[c])
        if tree.active[c]:
            lo[j] = tree.mid[c]
        else:
            hi[j] = tree.mid[c]
    else:
        layer, unit = int(tree.layer[c]), int(tree.unit[c])
        if not (0 <= layer < len(splits) and 0 <= unit < splits[layer].size):
            raise CheckError(f"node {c}: no neuron ({layer}, {unit})")
        splits = [s.copy() for s in splits]
        splits[layer][unit] = 1 if tree.active[c] else -1
    return (lo, hi), splits


def _visit(net: CheckNet, prop: Property, tree: Tree, i: int,
           box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray],
           parent: NodeBounds | None, proven: frozenset[int], report: TreeReport) -> _Node:
    """Derive a node's bounds, check its proofs and clipping, and close it if a leaf."""
    recompute = bool(tree.recompute[i]) or parent is None
    nb = node_bounds(net, box, splits, parent, recompute, _root_proofs(tree, i))
    proven = proven | _proofs(net, prop, tree, i, nb, box, splits, report)
    proven = proven | _claims(net, prop, tree, i, nb, box, splits, proven)
    stored = box
    if tree.box_lo.shape[0]:
        stored = (tree.box_lo[i], tree.box_hi[i])
        _check_clip(net, prop, tree, i, nb, box, stored, splits, proven)
    node = _Node(i, stored, splits, nb, proven)
    status = int(tree.status[i])
    if status == INTERNAL:
        return node
    report.leaves += 1
    if status == SOLVER:
        report.uncertified += 1
    elif status == INFEASIBLE:
        if not nb.infeasible:
            raise CheckError(f"node {i}: closed as infeasible, but its bounds are not")
    elif status in (BOUND, CROWN):
        _close(net, prop, i, nb, box, splits, proven)
    elif status != EMPTY:
        raise CheckError(f"node {i}: unknown status {status}")
    return node


def _root_proofs(tree: Tree, i: int) -> RootProofs | None:
    sel = np.flatnonzero(tree.root_node == i)
    if sel.size == 0:
        return None
    return RootProofs(tree.root_layer[sel], tree.root_unit[sel], tree.root_sign[sel],
                      tree.root_nu[sel])


def _proofs(net: CheckNet, prop: Property, tree: Tree, i: int, nb: NodeBounds,
            box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray],
            report: TreeReport) -> frozenset[int]:
    """Return the disjuncts that the node's stored proofs exclude."""
    out: set[int] = set()
    for p in np.flatnonzero(tree.proof_node == i):
        k = int(tree.proof_disjunct[p])
        if not 0 <= k < len(prop.unsafe.disjuncts):
            raise CheckError(f"node {i}: a proof names disjunct {k}")
        h = prop.unsafe.disjuncts[k]
        w = tree.proof_weights[p, :h.C.shape[0]]
        if np.any(w < 0) or np.any(tree.proof_weights[p, h.C.shape[0]:]):
            raise CheckError(f"node {i}: a proof's row weights are not a positive "
                             f"combination of disjunct {k}'s rows")
        # All-zero weights: a proof that the node holds no point at all (the bound of the
        # zero function is > 0 only when the node's constraints contradict each other).
        empty = not np.any(w > 0)
        target = _combination(h, w[None], nb)
        nus = split_layers(tree.proof_nu[p:p + 1], net.relu_sizes)
        lb, _, _ = lower_bound(net, nb, box, target, splits, nus)
        report.proofs += 1
        if lb[0] > 0:
            out.update(range(len(prop.unsafe.disjuncts)) if empty else (k,))
    return frozenset(out)


def _claims(net: CheckNet, prop: Property, tree: Tree, i: int, nb: NodeBounds,
            box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray],
            proven: frozenset[int]) -> frozenset[int]:
    """Return the disjuncts that node i claims to exclude by its own bounds, each
    re-derived here (interval or CROWN bound of a row or of the rows' mean > 0)."""
    out: set[int] = set()
    for q in np.flatnonzero(tree.claim_node == i):
        k = int(tree.claim_disjunct[q])
        if not 0 <= k < len(prop.unsafe.disjuncts):
            raise CheckError(f"node {i}: a claim names disjunct {k}")
        if k not in proven and not nb.infeasible:
            _exclude(net, prop.unsafe.disjuncts[k], i, k, nb, box, splits)
        out.add(k)
    return frozenset(out)


def _combination(h: HalfSpaces, weights: np.ndarray, nb: NodeBounds) -> Target:
    """Return the targets ``w (C y - d)`` (one per row of weights), with the error of forming
    the combined row in float64 charged against the output's magnitude."""
    coef = weights @ h.C
    const = -(weights @ h.d)
    g = gamma(h.C.shape[0] + 2)
    err = g * (weights @ np.abs(h.C)) @ magnitude(nb.out_lo, nb.out_hi) + g * (
        weights @ np.abs(h.d))
    return Target(len(nb.mags) - 1, coef, const, up(err * 1.000001))


def _row_weights(h: HalfSpaces) -> np.ndarray:
    """Each row alone, then (for several rows) their mean: the engine's rows."""
    k = h.C.shape[0]
    eye = np.eye(k)
    return eye if k == 1 else np.vstack([eye, np.full((1, k), 1.0 / k)])


def _close(net: CheckNet, prop: Property, i: int, nb: NodeBounds,
           box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray],
           proven: frozenset[int]) -> None:
    """Require every disjunct to be excluded on leaf i (see the module docstring)."""
    if nb.infeasible:
        return
    for k, h in enumerate(prop.unsafe.disjuncts):
        if k not in proven:
            _exclude(net, h, i, k, nb, box, splits)


def _exclude(net: CheckNet, h: HalfSpaces, i: int, k: int, nb: NodeBounds,
             box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray]) -> None:
    """Require disjunct k's interval or CROWN bound on node i to be > 0."""
    target = _combination(h, _row_weights(h), nb)
    interval = _interval_lower(net, target, nb, box)
    if np.any(interval > 0):
        return
    lb, _, _ = lower_bound(net, nb, box, target, splits)
    if not np.any(lb > 0):
        raise CheckError(f"node {i}: disjunct {k} is not excluded (best bound "
                         f"{float(max(lb.max(), interval.max())):.6g})")


def _interval_lower(net: CheckNet, target: Target, nb: NodeBounds,
                    box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Return rigorous lower bounds of the targets by interval arithmetic, with the targets'
    rows folded into the last affine segment first (as the engine folds the specification
    into the last layer: much tighter than bounding the outputs one by one)."""
    k = target.segment
    coef, const, err = through(net.segments[k], nb.mags[k], target.coef,
                                target.const.astype(float), target.err.astype(float))
    if k > 0:
        lo, hi = np.maximum(nb.lower[k - 1], 0.0), np.maximum(nb.upper[k - 1], 0.0)
    else:
        lo, hi = box
    low = np.minimum(coef * lo, coef * hi).sum(axis=1)
    total = const + low
    err = err + gamma(lo.size + 4) * (np.abs(coef) @ magnitude(lo, hi)) + 4 * U * np.abs(
        total)
    return down(total - err * 1.000001)


def _check_clip(net: CheckNet, prop: Property, tree: Tree, i: int, nb: NodeBounds,
                box: tuple[np.ndarray, np.ndarray], stored: tuple[np.ndarray, np.ndarray],
                splits: list[np.ndarray], proven: frozenset[int]) -> None:
    """A stored box lies in the node's region and contains every counterexample of it."""
    lo, hi = box
    s_lo, s_hi = stored
    if np.any(s_lo < lo) or np.any(s_hi > hi):
        raise CheckError(f"node {i}: its box is not inside the region it comes from")
    same = np.array_equal(s_lo, lo) and np.array_equal(s_hi, hi)
    if same and tree.status[i] != EMPTY:
        return
    if not tree.clipped[i] and tree.status[i] != EMPTY:
        raise CheckError(f"node {i}: its box differs from its region but is not clipped")
    hull = _clip_hull(net, prop, tree, i, nb, box, splits, proven)
    if hull is None:
        return
    if tree.status[i] == EMPTY:
        raise CheckError(f"node {i}: closed as empty by clipping, but clipping leaves "
                           f"points")
    h_lo, h_hi = hull
    if np.any(h_lo < s_lo) or np.any(h_hi > s_hi):
        j = int(np.argmax(np.maximum(s_lo - h_lo, h_hi - s_hi)))
        raise CheckError(f"node {i}: clipping leaves [{h_lo[j]!r}, {h_hi[j]!r}] in "
                           f"dimension {j}, outside the stored box")


def _clip_hull(net: CheckNet, prop: Property, tree: Tree, i: int, nb: NodeBounds,
               box: tuple[np.ndarray, np.ndarray], splits: list[np.ndarray],
               proven: frozenset[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the hull of the disjuncts' clipped boxes (None: no counterexample left).

    Each disjunct's rows (and their mean) clip the region in turn, by their CROWN linear
    bounds, or by the node's stored coefficients where the engine optimised them (a root).
    """
    stored = {int(r): tree.clip_nu[q] for q, r in enumerate(tree.clip_row)
              if tree.clip_node[q] == i}
    hull: tuple[np.ndarray, np.ndarray] | None = None
    offset = 0
    for k, h in enumerate(prop.unsafe.disjuncts):
        weights = _row_weights(h)
        rows = range(offset, offset + weights.shape[0])
        offset += weights.shape[0]
        if k in proven:
            continue
        target = _combination(h, weights, nb)
        nus = None
        if all(r in stored for r in rows):
            nus = split_layers(np.stack([stored[r] for r in rows]), net.relu_sizes)
        _, a, c = lower_bound(net, nb, box, target, splits, nus)
        part: tuple[np.ndarray, np.ndarray] | None = box
        for _ in range(CLIP_PASSES):
            for r in range(a.shape[0]):
                part = None if part is None else clip_row(a[r], float(c[r]), *part)
        if part is not None:
            hull = part if hull is None else (np.minimum(hull[0], part[0]),
                                              np.maximum(hull[1], part[1]))
    return hull


def clip_row(a: np.ndarray, c: float, lo: np.ndarray,
             hi: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the smallest box inside [lo, hi] holding every x with ``a x + c <= 0`` there,
    rounded outwards (None when there is none)."""
    if not (np.all(np.isfinite(a)) and np.isfinite(c)):
        return lo, hi
    lows = np.minimum(a * lo, a * hi)
    mag = np.abs(a) @ magnitude(lo, hi) + abs(c)
    slack = float(up(np.array(-(c + lows.sum()) + 2.0 * gamma(a.size + 4) * mag)))
    if slack < 0:
        return None
    with np.errstate(divide="ignore"):
        reach = up(slack / np.abs(a))
    new_hi = np.where(a > 0, np.minimum(hi, up(lo + reach)), hi)
    new_lo = np.where(a < 0, np.maximum(lo, down(hi - reach)), lo)
    return new_lo, new_hi
