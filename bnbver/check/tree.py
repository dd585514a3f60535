"""Walk a proof tree: coverage of the property's box, and every leaf's closing argument.

Coverage: the root is the property's box without splits; every internal node has exactly two
children that split it (a ReLU fixed active and inactive, or the box cut at one point of one
dimension), so the leaves' regions cover the root's. A child's box may be smaller than its
half of the parent's (input-domain clipping): the checker then recomputes the clipping from
its own CROWN bounds of the unsafe rows and requires the stored box to contain what that
leaves. The tree's shape is checked first, for all nodes at once (:func:`_check_structure`).

Bounds are derived top-down (:func:`~bnbver.check.bounds.node_bounds`), so a child uses its
parent's. Nodes are checked in batches of up to :data:`BATCH` nodes whose parents are done
(numpy call overhead per node would dominate on small networks): a stack holds the children
of checked batches, and the next batch is taken from its top (a depth-first walk over
batches), so memory stays bounded by the tree's depth times the batch size.

A leaf closes when every unsafe disjunct is excluded on it: by a proof stored at the leaf or
at an ancestor (a rigorous dual bound > 0), by a claim at an ancestor (whose own interval or
CROWN bound, re-derived there, is > 0), by the interval or CROWN bound of one of its rows
(or of their mean) > 0, or when its bounds are contradictory (an empty node).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnbver.check.arith import U, down, gamma, magnitude, up
from bnbver.check.bounds import (
    Bounds,
    RootProofs,
    Target,
    lower_bound,
    node_bounds,
    rowdot,
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
    STATUS_NAMES,
    Tree,
)
from bnbver.check.net import CheckNet
from bnbver.spec import HalfSpaces, Property

#: Passes of input-domain clipping over a disjunct's rows (as the engine makes them).
CLIP_PASSES = 2

#: Most nodes checked together (their bounds are held at once).
BATCH = 256

Box = tuple[np.ndarray, np.ndarray]


class CheckError(Exception):
    """A certificate does not prove what it claims (the message says where and why)."""


@dataclass
class TreeReport:
    """What one tree showed: leaves checked, leaves only a solver closed."""

    leaves: int = 0
    uncertified: int = 0
    proofs: int = 0


@dataclass
class _Batch:
    """B nodes whose parents are checked, and what the parents handed down.

    Attributes:
        index: (B,) the nodes.
        box: their regions' boxes before clipping, (B, n_in) each.
        splits: per ReLU layer (B, n_k) split states (+1, -1, 0).
        parent_lower, parent_upper: per ReLU layer (B, n_k) the parents' bounds.
        proven: (B, D) the disjuncts an ancestor's proofs exclude.
    """

    index: np.ndarray
    box: Box
    splits: list[np.ndarray]
    parent_lower: list[np.ndarray]
    parent_upper: list[np.ndarray]
    proven: np.ndarray

    def take(self, sel: slice) -> _Batch:
        """The batch restricted to some nodes."""
        return _Batch(self.index[sel], (self.box[0][sel], self.box[1][sel]),
                      [s[sel] for s in self.splits], [a[sel] for a in self.parent_lower],
                      [a[sel] for a in self.parent_upper], self.proven[sel])

    @staticmethod
    def concat(parts: list[_Batch]) -> _Batch:
        """One batch of the nodes of several."""
        if len(parts) == 1:
            return parts[0]

        def cat(get: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(get)

        layers = range(len(parts[0].splits))
        return _Batch(cat([p.index for p in parts]),
                      (cat([p.box[0] for p in parts]), cat([p.box[1] for p in parts])),
                      [cat([p.splits[k] for p in parts]) for k in layers],
                      [cat([p.parent_lower[k] for p in parts]) for k in layers],
                      [cat([p.parent_upper[k] for p in parts]) for k in layers],
                      cat([p.proven for p in parts]))


class _Rows:
    """The rows of a certificate's per-row arrays that belong to each node (e.g. the proofs,
    by ``proof_node``), found for a batch of nodes without scanning them all."""

    def __init__(self, node: np.ndarray) -> None:
        self.order = np.argsort(node, kind="stable")
        self.sorted = node[self.order]

    def of(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the rows of the nodes ``index`` (B,) (per node in the file's order) and the
        position in ``index`` of each row's node."""
        start = np.searchsorted(self.sorted, index, "left")
        count = np.searchsorted(self.sorted, index, "right") - start
        pos = np.repeat(np.arange(index.size), count)
        first = np.repeat(start - (np.cumsum(count) - count), count)
        return self.order[first + np.arange(pos.size)], pos


@dataclass
class _TreeRows:
    """A tree's proofs, root proofs, clipping rows and claims, grouped by node."""

    proofs: _Rows
    roots: _Rows
    clips: _Rows
    claims: _Rows

    @staticmethod
    def of(tree: Tree) -> _TreeRows:
        """Group the rows of ``tree``."""
        return _TreeRows(_Rows(tree.proof_node), _Rows(tree.root_node), _Rows(tree.clip_node),
                         _Rows(tree.claim_node))


def check_tree(net: CheckNet, prop: Property, tree: Tree) -> TreeReport:
    """Check one property's tree; raise :class:`CheckError` at the first problem."""
    _check_shape(net, tree)
    kids = _check_structure(net, tree)
    rows = _TreeRows.of(tree)
    report = TreeReport()
    stack = [_root_batch(net, prop)]
    while stack:
        batch = _next_batch(stack)
        bounds, box, proven = _visit(net, prop, tree, rows, batch, report)
        children = _children(tree, kids, batch, bounds, box, proven)
        if children.index.size:
            stack.append(children)
    return report


def _root_batch(net: CheckNet, prop: Property) -> _Batch:
    """The root: the property's box, no splits, no bounds inherited."""
    sizes = net.relu_sizes
    return _Batch(np.zeros(1, np.int64),
                  (prop.box.lower.copy()[None], prop.box.upper.copy()[None]),
                  [np.zeros((1, n), np.int8) for n in sizes],
                  [np.full((1, n), -np.inf) for n in sizes],
                  [np.full((1, n), np.inf) for n in sizes],
                  np.zeros((1, len(prop.unsafe.disjuncts)), bool))


def _next_batch(stack: list[_Batch]) -> _Batch:
    """Pop up to :data:`BATCH` nodes from the top of the stack (the rest goes back)."""
    parts = [stack.pop()]
    size = parts[0].index.size
    while stack and size < BATCH:
        parts.append(stack.pop())
        size += parts[-1].index.size
    batch = _Batch.concat(parts)
    if size > BATCH:
        stack.append(batch.take(slice(BATCH, None)))
        batch = batch.take(slice(0, BATCH))
    return batch


def _fail(mask: np.ndarray, index: np.ndarray, what: str) -> None:
    """Raise a :class:`CheckError` naming the first node of ``index`` where ``mask`` holds."""
    if np.any(mask):
        raise CheckError(f"node {int(index[np.argmax(mask)])}: {what}")


def _check_shape(net: CheckNet, tree: Tree) -> None:
    if tree.size == 0 or tree.parent[0] != -1 or tree.kind[0] != ROOT:
        raise CheckError("the tree has no root")
    if np.any(tree.parent[1:] < 0) or np.any(tree.parent[1:] >= np.arange(1, tree.size)):
        raise CheckError("every node but the root must come after its parent")
    width = sum(net.relu_sizes)
    for name, arr in (("proof_nu", tree.proof_nu), ("root_nu", tree.root_nu)):
        if arr.shape[0] and arr.shape[1] != width:
            raise CheckError(f"{name} has {arr.shape[1]} columns, the network {width}")


def _check_structure(net: CheckNet, tree: Tree) -> np.ndarray:
    """Check that every node has a known status, every internal node two children that split
    it in two, and no leaf children; return each node's children (N, 2) (-1 for a leaf).

    Split points of input splits are checked against the parent's box when it is known
    (:func:`_children`)."""
    nodes = np.arange(tree.size)
    status = tree.status
    unknown = ~np.isin(status, list(STATUS_NAMES))
    if np.any(unknown):
        i = int(np.argmax(unknown))
        raise CheckError(f"node {i}: unknown status {int(status[i])}")
    parent = tree.parent.astype(np.int64)
    count = np.bincount(parent[1:], minlength=tree.size)
    internal = status == INTERNAL
    _fail(~internal & (count > 0), nodes, "a closed node has children")
    wrong = internal & (count != 2)
    if np.any(wrong):
        i = int(np.argmax(wrong))
        raise CheckError(f"node {i}: an internal node needs 2 children, has {count[i]}")
    # Now every node with children has two: grouped by parent, they pair up in node order.
    pairs = (np.argsort(parent[1:], kind="stable") + 1).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    same = ((tree.kind[a] == tree.kind[b]) & (tree.layer[a] == tree.layer[b])
            & (tree.unit[a] == tree.unit[b]) & (tree.mid[a] == tree.mid[b]))
    split = same & (tree.active[a] != tree.active[b]) & np.isin(tree.kind[a], (RELU, INPUT))
    _fail(~split, parent[a], "its children do not split it in two")
    sizes = np.asarray(net.relu_sizes, np.int64)
    relu = np.flatnonzero(tree.kind == RELU)
    layer, unit = tree.layer[relu], tree.unit[relu]
    ok = (layer >= 0) & (layer < sizes.size)
    ok[ok] = (unit[ok] >= 0) & (unit[ok] < sizes[layer[ok]])
    if not np.all(ok):
        c = int(relu[np.argmin(ok)])
        raise CheckError(f"node {c}: no neuron ({int(tree.layer[c])}, {int(tree.unit[c])})")
    kids = np.full((tree.size, 2), -1, np.int64)
    kids[parent[a]] = pairs
    return kids


def _children(tree: Tree, kids: np.ndarray, batch: _Batch, bounds: Bounds, box: Box,
              proven: np.ndarray) -> _Batch:
    """Return the children of a checked batch's internal nodes, with their regions (the
    parent's box, ``box``, cut at an input split, or the parent's splits and one more)."""
    pos = np.repeat(np.flatnonzero(tree.status[batch.index] == INTERNAL), 2)
    child = kids[batch.index[pos[::2]]].ravel()
    lo, hi = box[0][pos].copy(), box[1][pos].copy()
    cut = np.flatnonzero(tree.kind[child] == INPUT)
    if cut.size:
        j, mid = tree.layer[child[cut]].astype(np.int64), tree.mid[child[cut]]
        inside = (j >= 0) & (j < lo.shape[1])
        inside[inside] = ((lo[cut[inside], j[inside]] <= mid[inside])
                          & (mid[inside] <= hi[cut[inside], j[inside]]))
        if not np.all(inside):
            c = int(np.argmin(inside))
            raise CheckError(f"node {int(batch.index[pos[cut[c]]])}: input split point "
                             f"{float(mid[c])} outside dimension {int(j[c])}")
        upper = tree.active[child[cut]].astype(bool)
        lo[cut[upper], j[upper]] = mid[upper]
        hi[cut[~upper], j[~upper]] = mid[~upper]
    splits = [s[pos].copy() for s in batch.splits]
    for k, s in enumerate(splits):
        fix = np.flatnonzero((tree.kind[child] == RELU) & (tree.layer[child] == k))
        s[fix, tree.unit[child[fix]].astype(np.int64)] = np.where(tree.active[child[fix]], 1, -1)
    return _Batch(child, (lo, hi), splits, [a[pos] for a in bounds.lower],
                  [a[pos] for a in bounds.upper], proven[pos])


def _visit(net: CheckNet, prop: Property, tree: Tree, rows: _TreeRows, batch: _Batch,
           report: TreeReport) -> tuple[Bounds, Box, np.ndarray]:
    """Derive a batch's bounds, check its proofs and clipping, and close its leaves.

    Returns the bounds, the boxes the children split (after clipping) and the disjuncts
    excluded at each node or above.
    """
    idx, box, splits = batch.index, batch.box, batch.splits
    recompute = tree.recompute[idx].astype(bool) | (idx == 0)
    nb = node_bounds(net, box, splits, (batch.parent_lower, batch.parent_upper), recompute,
                     _root_proofs(tree, rows, idx))
    proven = batch.proven | _proofs(net, prop, tree, rows, idx, nb, report)
    proven |= _claims(net, prop, tree, rows, idx, nb, proven)
    stored = box
    if tree.box_lo.shape[0]:
        stored = (tree.box_lo[idx], tree.box_hi[idx])
        _check_clip(net, prop, tree, rows, idx, nb, box, stored, proven)
    _close_leaves(net, prop, tree, idx, nb, proven, report)
    return nb, stored, proven


def _close_leaves(net: CheckNet, prop: Property, tree: Tree, idx: np.ndarray, nb: Bounds,
                  proven: np.ndarray, report: TreeReport) -> None:
    """Count the batch's leaves and check each one's closing argument."""
    status = tree.status[idx]
    report.leaves += int(np.count_nonzero(status != INTERNAL))
    report.uncertified += int(np.count_nonzero(status == SOLVER))
    _fail((status == INFEASIBLE) & ~nb.infeasible, idx,
          "closed as infeasible, but its bounds are not")
    leaves = np.flatnonzero(np.isin(status, (BOUND, CROWN)) & ~nb.infeasible)
    if leaves.size:
        _close(net, prop, idx, leaves, nb, proven)


def _root_proofs(tree: Tree, rows: _TreeRows, idx: np.ndarray) -> RootProofs | None:
    sel, pos = rows.roots.of(idx)
    if sel.size == 0:
        return None
    return RootProofs(pos, tree.root_layer[sel], tree.root_unit[sel], tree.root_sign[sel],
                      tree.root_nu[sel])


def _proofs(net: CheckNet, prop: Property, tree: Tree, rows: _TreeRows, idx: np.ndarray,
            nb: Bounds, report: TreeReport) -> np.ndarray:
    """Return (B, D) the disjuncts that the batch's stored proofs exclude at each node."""
    disjuncts = prop.unsafe.disjuncts
    out = np.zeros((idx.size, len(disjuncts)), bool)
    sel, pos = rows.proofs.of(idx)
    if sel.size == 0:
        return out
    named = tree.proof_disjunct[sel]
    bad = (named < 0) | (named >= len(disjuncts))
    if np.any(bad):
        f = int(np.argmax(bad))
        raise CheckError(f"node {int(idx[pos[f]])}: a proof names disjunct {int(named[f])}")
    report.proofs += sel.size
    for k, h in enumerate(disjuncts):
        p, node = sel[named == k], pos[named == k]
        if p.size == 0:
            continue
        n_rows = h.C.shape[0]
        w = tree.proof_weights[p, :n_rows]
        _fail(np.any(w < 0, axis=1) | np.any(tree.proof_weights[p, n_rows:] != 0, axis=1),
              idx[node], f"a proof's row weights are not a positive combination of "
                         f"disjunct {k}'s rows")
        # All-zero weights: a proof that the node holds no point at all (the bound of the
        # zero function is > 0 only when the node's constraints contradict each other).
        empty = ~np.any(w > 0, axis=1)
        nus = split_layers(tree.proof_nu[p][:, None], net.relu_sizes)
        lb = lower_bound(net, nb, _combination(h, w[:, None], nb, node), nus)[0][:, 0]
        out[node[(lb > 0) & ~empty], k] = True
        out[node[(lb > 0) & empty]] = True
    return out


def _claims(net: CheckNet, prop: Property, tree: Tree, rows: _TreeRows, idx: np.ndarray,
            nb: Bounds, proven: np.ndarray) -> np.ndarray:
    """Return (B, D) the disjuncts that the batch's nodes claim to exclude by their own
    bounds, each re-derived here (interval or CROWN bound of a row, or of the rows' mean,
    > 0) unless already excluded."""
    out = np.zeros_like(proven)
    sel, pos = rows.claims.of(idx)
    if sel.size == 0:
        return out
    named = tree.claim_disjunct[sel]
    bad = (named < 0) | (named >= out.shape[1])
    if np.any(bad):
        f = int(np.argmax(bad))
        raise CheckError(f"node {int(idx[pos[f]])}: a claim names disjunct {int(named[f])}")
    out[pos, named] = True
    todo = out & ~proven & ~nb.infeasible[:, None]
    for k in range(out.shape[1]):
        nodes = np.flatnonzero(todo[:, k])
        if nodes.size:
            _exclude(net, prop.unsafe.disjuncts[k], k, idx, nodes, nb)
    return out


def _combination(h: HalfSpaces, weights: np.ndarray, nb: Bounds, node: np.ndarray) -> Target:
    """Return the targets ``w (C y - d)`` (weights (G, K, rows): K on each node ``node[g]``),
    with the error of forming the combined row in float64 charged against the output's
    magnitude."""
    coef = weights @ h.C
    const = -(weights @ h.d)
    g = gamma(h.C.shape[0] + 2)
    out_mag = magnitude(nb.out_lo, nb.out_hi)[node, None]
    err = g * rowdot(weights @ np.abs(h.C), out_mag) + g * (weights @ np.abs(h.d))
    return Target(len(nb.mags) - 1, coef, const, up(err * 1.000001), node)


def _row_weights(h: HalfSpaces) -> np.ndarray:
    """Each row alone, then (for several rows) their mean: the engine's rows."""
    k = h.C.shape[0]
    eye = np.eye(k)
    return eye if k == 1 else np.vstack([eye, np.full((1, k), 1.0 / k)])


def _row_targets(h: HalfSpaces, nb: Bounds, nodes: np.ndarray) -> Target:
    """The engine's rows of a disjunct (:func:`_row_weights`) on each of ``nodes``."""
    w = _row_weights(h)
    return _combination(h, np.broadcast_to(w, (nodes.size, *w.shape)), nb, nodes)


def _close(net: CheckNet, prop: Property, idx: np.ndarray, leaves: np.ndarray, nb: Bounds,
           proven: np.ndarray) -> None:
    """Require every disjunct to be excluded on the leaves (positions in the batch; see the
    module docstring)."""
    for k, h in enumerate(prop.unsafe.disjuncts):
        todo = leaves[~proven[leaves, k]]
        if todo.size:
            _exclude(net, h, k, idx, todo, nb)


def _exclude(net: CheckNet, h: HalfSpaces, k: int, idx: np.ndarray, todo: np.ndarray,
             nb: Bounds) -> None:
    """Require disjunct k's interval or CROWN bound to be > 0 on the nodes at batch
    positions ``todo``."""
    target = _row_targets(h, nb, todo)
    interval = _interval_lower(net, target, nb)
    open_ = ~np.any(interval > 0, axis=1)
    if not np.any(open_):
        return
    lb = lower_bound(net, nb, target.take(open_))[0]
    fail = ~np.any(lb > 0, axis=1)
    if np.any(fail):
        f = int(np.argmax(fail))
        best = float(max(lb[f].max(), interval[open_][f].max()))
        raise CheckError(f"node {int(idx[todo[open_][f]])}: disjunct {k} is not excluded "
                         f"(best bound {best:.6g})")


def _interval_lower(net: CheckNet, target: Target, nb: Bounds) -> np.ndarray:
    """Return rigorous lower bounds of the targets by interval arithmetic, with the targets'
    rows folded into the last affine segment first (as the engine folds the specification
    into the last layer: much tighter than bounding the outputs one by one)."""
    k, node = target.segment, target.node
    coef, const, err = through(net.segments[k], nb.back_err[k], node, target.coef,
                               target.const.astype(float), target.err.astype(float))
    if k > 0:
        lo = np.maximum(nb.lower[k - 1][node, None], 0.0)
        hi = np.maximum(nb.upper[k - 1][node, None], 0.0)
    else:
        lo, hi = nb.inputs[0][node, None], nb.inputs[1][node, None]
    low = np.minimum(coef * lo, coef * hi).sum(axis=-1)
    total = const + low
    err = err + gamma(lo.shape[-1] + 4) * rowdot(np.abs(coef), magnitude(lo, hi)) + 4 * U * (
        np.abs(total))
    return down(total - err * 1.000001)


def _check_clip(net: CheckNet, prop: Property, tree: Tree, rows: _TreeRows, idx: np.ndarray,
                nb: Bounds, box: Box, stored: Box, proven: np.ndarray) -> None:
    """Each stored box lies in its node's region and contains every counterexample of it."""
    (lo, hi), (s_lo, s_hi) = box, stored
    status = tree.status[idx]
    _fail(np.any(s_lo < lo, axis=1) | np.any(s_hi > hi, axis=1), idx,
          "its box is not inside the region it comes from")
    empty = status == EMPTY
    todo = ~(np.all(s_lo == lo, axis=1) & np.all(s_hi == hi, axis=1)) | empty
    _fail(todo & ~tree.clipped[idx].astype(bool) & ~empty, idx,
          "its box differs from its region but is not clipped")
    pos = np.flatnonzero(todo)
    if pos.size == 0:
        return
    h_lo, h_hi, left = _clip_hull(net, prop, tree, rows, idx, pos, nb, box, proven)
    _fail(left & empty[pos], idx[pos], "closed as empty by clipping, but clipping leaves "
                                       "points")
    out = left & (np.any(h_lo < s_lo[pos], axis=1) | np.any(h_hi > s_hi[pos], axis=1))
    if np.any(out):
        f = int(np.argmax(out))
        j = int(np.argmax(np.maximum(s_lo[pos[f]] - h_lo[f], h_hi[f] - s_hi[pos[f]])))
        raise CheckError(f"node {int(idx[pos[f]])}: clipping leaves [{h_lo[f, j]!r}, "
                         f"{h_hi[f, j]!r}] in dimension {j}, outside the stored box")


def _clip_hull(net: CheckNet, prop: Property, tree: Tree, rows: _TreeRows, idx: np.ndarray,
               pos: np.ndarray, nb: Bounds, box: Box,
               proven: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return, for the nodes at batch positions ``pos``, the hull of the disjuncts' clipped
    boxes and whether any point is left (where none is, the hull is empty: +inf, -inf).

    Each disjunct's rows (and their mean) clip the region in turn, by their CROWN linear
    bounds, or by the node's stored coefficients where the engine optimised them (a root).
    """
    sel, at = rows.clips.of(idx[pos])
    stored = {(int(pos[a]), int(tree.clip_row[q])): int(q) for q, a in zip(sel, at,
                                                                        strict=True)}
    h_lo = np.full(box[0][pos].shape, np.inf)
    h_hi = np.full(box[0][pos].shape, -np.inf)
    left = np.zeros(pos.size, bool)
    offset = 0
    for k, h in enumerate(prop.unsafe.disjuncts):
        n_rows = _row_weights(h).shape[0]
        numbers = range(offset, offset + n_rows)
        offset += n_rows
        need = np.flatnonzero(~proven[pos, k])
        if need.size == 0:
            continue
        own = np.array([all((int(pos[q]), r) in stored for r in numbers) for q in need]
                       if stored else np.zeros(need.size, bool), bool)
        a = np.empty((need.size, n_rows, box[0].shape[1]))
        c = np.empty((need.size, n_rows))
        for use_stored in (True, False):
            group = own if use_stored else ~own
            if not np.any(group):
                continue
            nodes = pos[need[group]]
            nus = None
            if use_stored:
                picked = [stored[(int(p), r)] for p in nodes for r in numbers]
                nus = split_layers(tree.clip_nu[picked].reshape(nodes.size, n_rows, -1),
                                   net.relu_sizes)
            _, a[group], c[group] = lower_bound(net, nb, _row_targets(h, nb, nodes), nus)
        p_lo, p_hi = box[0][pos[need]], box[1][pos[need]]
        alive = np.ones(need.size, bool)
        for _ in range(CLIP_PASSES):
            for r in range(n_rows):
                p_lo, p_hi, alive = clip_rows(a[:, r], c[:, r], p_lo, p_hi, alive)
        kept = need[alive]
        h_lo[kept] = np.minimum(h_lo[kept], p_lo[alive])
        h_hi[kept] = np.maximum(h_hi[kept], p_hi[alive])
        left[kept] = True
    return h_lo, h_hi, left


def clip_rows(a: np.ndarray, c: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip each row's box [lo, hi] (B, n) by its own constraint ``a x + c <= 0`` (a (B, n),
    c (B,)): return the smallest boxes holding every such x, rounded outwards, and ``alive``
    cleared where none is. A row with a non-finite constraint keeps its box."""
    finite = np.all(np.isfinite(a), axis=1) & np.isfinite(c)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lows = np.minimum(a * lo, a * hi)
        mag = np.einsum("bn,bn->b", np.abs(a), magnitude(lo, hi)) + np.abs(c)
        slack = up(-(c + lows.sum(axis=1)) + 2.0 * gamma(a.shape[1] + 4) * mag)
        reach = up(slack[:, None] / np.abs(a))
        new_hi = np.where(a > 0, np.minimum(hi, up(lo + reach)), hi)
        new_lo = np.where(a < 0, np.maximum(lo, down(hi - reach)), lo)
    keep = ~finite[:, None]
    return (np.where(keep, lo, new_lo), np.where(keep, hi, new_hi),
            alive & ~(finite & (slack < 0)))
