"""Which margin rows an optimisation carries: the ones a node's parent has not proven.

A child inherits the margin rows its parent proved (bound > 0; the child's set is a subset
of the parent's), so deep in a search each node has only a few rows left to optimise. Two
selections, both putting their results back among the parent's proven rows afterwards:

- :class:`Columns`: the rows some node of the batch has open, for every node (no copies);
- :class:`Pairs`: each open (node, row) pair as its own one-row entry of the batch, with the
  node's box, relaxation and error vectors and the row's coefficients and warm start. Which
  rows are open differs from node to node, so the union is often much larger than any node's
  own share (three times on sri_resnet_a's nine-row robustness properties); pairs then cost
  one row's backward pass per open pair.

Shapes: B nodes, R rows, P open pairs, R' open columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from bnbver.bounds.linear import ErrorVectors, Linear, Relax
from bnbver.bounds.optimize import Optimized, cut_relax

#: Pack pairs when they are at most this share of the (node, row) entries the union of the
#: batch's open rows would optimise (packing copies each pair's node data once).
PACK_SHARE = 0.75


@dataclass(frozen=True, eq=False)
class Problem:
    """What an optimisation runs on: the starting bound, boxes, relaxations, error vectors
    and the warm start, one entry per node (or per pair)."""

    lin0: Linear
    lo: Tensor
    hi: Tensor
    relax: Sequence[Relax]
    errs: ErrorVectors
    alpha0: list[Tensor]
    beta0: list[Tensor | None] | None


@dataclass(frozen=True, eq=False)
class Columns:
    """The rows ``rows`` (R',) some node of the batch has open, kept for every node."""

    rows: Tensor

    def pick(self, t: Tensor) -> Tensor:
        """Return ``t`` (1 or B, R, ...) at the open rows, (1 or B, R', ...)."""
        return t[:, self.rows]

    def pack(self, p: Problem) -> Problem:
        """Return ``p`` with the open rows only (the node data stays as it is)."""
        return _select(p, self.pick, None)

    def put(self, full: Tensor, part: Tensor) -> Tensor:
        """Return a copy of ``full`` (B, R, ...) with the open rows from ``part`` (B, R', ...)."""
        out = full.detach().clone()
        out[:, self.rows] = part.to(out.dtype)
        return out


@dataclass(frozen=True, eq=False)
class Pairs:
    """The open (node, row) pairs of a batch: ``node`` and ``row`` are (P,) long."""

    node: Tensor
    row: Tensor

    def pick(self, t: Tensor) -> Tensor:
        """Return ``t`` (1 or B, R, ...) at the pairs, as (P, 1, ...)."""
        if t.shape[0] == 1:
            return t[0].index_select(0, self.row).unsqueeze(1)
        return t[self.node, self.row].unsqueeze(1)

    def pack(self, p: Problem) -> Problem:
        """Return the problem of the pairs: node data taken per pair, row data per pair."""
        b = p.lo.shape[0]

        def nodes(t: Tensor) -> Tensor:
            return t.index_select(0, self.node) if t.dim() > 0 and t.shape[0] == b else t

        return _select(p, self.pick, nodes)

    def put(self, full: Tensor, part: Tensor) -> Tensor:
        """Return a copy of ``full`` (B, R, ...) with the pairs' entries from ``part``
        (P, 1, ...)."""
        out = full.detach().clone()
        out[self.node, self.row] = part[:, 0].to(out.dtype)
        return out


Selection = Columns | Pairs


def open_mask(rows: Tensor) -> Tensor:
    """Return the rows still open: a bound not > 0, NaN included (never taken as proven)."""
    return ~(rows > 0)


def open_rows(parent_rows: Tensor) -> Selection | None:
    """Return the rows to optimise given the parents' bounds (B, R): a row is open when its
    bound is not > 0 (NaN included). Pairs when they pay against the union of open rows,
    else the union's columns, else None (every row is open somewhere, or none is)."""
    open_ = open_mask(parent_rows)
    union = open_.any(dim=0)
    n_union = int(union.sum())
    if n_union == 0:
        return None
    pairs = open_.nonzero()
    if pairs.shape[0] <= PACK_SHARE * parent_rows.shape[0] * n_union:
        return Pairs(pairs[:, 0], pairs[:, 1])
    if n_union == parent_rows.shape[1]:
        return None
    return Columns(union.nonzero().flatten())


def _select(p: Problem, pick: Callable[[Tensor], Tensor],
            nodes: Callable[[Tensor], Tensor] | None) -> Problem:
    """Return ``p`` with its row data ``pick``-ed and, unless ``nodes`` is None, its node
    data taken by ``nodes``."""
    relax, errs, lo, hi = p.relax, p.errs, p.lo, p.hi
    if nodes is not None:
        relax = [cut_relax(rx, nodes) for rx in relax]
        errs = [None if e is None else nodes(e) for e in errs]
        lo, hi = nodes(lo), nodes(hi)
    return Problem(
        Linear(pick(p.lin0.a), pick(p.lin0.bias.unsqueeze(2)).squeeze(-1),
               pick(p.lin0.err.unsqueeze(2)).squeeze(-1)),
        lo, hi, relax, errs, [pick(t) for t in p.alpha0],
        None if p.beta0 is None else [None if t is None else pick(t) for t in p.beta0])


def unpack(sel: Selection, part: Optimized, parent_rows: Tensor, alpha0: Sequence[Tensor],
           beta0: Sequence[Tensor | None] | None, n_in: int) -> Optimized:
    """Return the whole batch's result: the optimised rows in their places, every other row
    the parent's proven bound (coefficients 0: the bound ``0 x + parent's bound``) and its
    parameters."""
    lower = sel.put(parent_rows.unsqueeze(2), part.lower.unsqueeze(2)).squeeze(2)
    const = sel.put(parent_rows.unsqueeze(2), part.const.unsqueeze(2)).squeeze(2)
    coeffs = sel.put(part.coeffs.new_zeros((*parent_rows.shape, n_in)), part.coeffs)
    alpha = tuple(sel.put(full, new) for full, new in zip(alpha0, part.alpha, strict=True))
    beta: tuple[Tensor | None, ...] | None = None
    if beta0 is not None and part.beta is not None:
        beta = tuple(None if full is None or new is None else sel.put(full, new)
                     for full, new in zip(beta0, part.beta, strict=True))
    return Optimized(lower, alpha, beta, coeffs, const)
