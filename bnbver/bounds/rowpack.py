"""Optimise each node's own open rows: every open (node, row) pair as a one-row entry.

A child inherits the margin rows its parent proved, so deep in a search each node has only a
few rows left, but which ones differs from node to node: the union over a batch is much
larger than any node's own share (three times on sri_resnet_a's nine-row robustness
properties). Optimising the union does every node's work on every row of it; packing gives
each open (node, row) pair its own entry of the batch, with the node's box, relaxation and
error vectors and the row's coefficients, parameters and warm start, so the backward passes
cost one row per open pair. The results go back to their (node, row) places; the rows a
parent proved keep its bound (the child's set is a subset of the parent's).

Shapes: B nodes, R rows, P open pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from bnbver.bounds.linear import ErrorVectors, Linear, Relax
from bnbver.bounds.optimize import Optimized, cut_relax

#: Pack when the open pairs are at most this share of the (node, row) entries the union of
#: the batch's open rows would optimise (packing copies each pair's node data once).
PACK_SHARE = 0.75


@dataclass(frozen=True, eq=False)
class Pairs:
    """The open (node, row) pairs of a batch: ``node`` and ``row`` are (P,) long."""

    node: Tensor
    row: Tensor

    def rows(self, t: Tensor) -> Tensor:
        """Return ``t`` (1 or B, R, ...) at the pairs, as (P, 1, ...)."""
        if t.shape[0] == 1:
            return t[0].index_select(0, self.row).unsqueeze(1)
        return t[self.node, self.row].unsqueeze(1)

    def nodes(self, t: Tensor, batch: int) -> Tensor:
        """Return ``t`` at the pairs' nodes when it has a node dimension (B, ...), else ``t``."""
        if t.dim() > 0 and t.shape[0] == batch:
            return t.index_select(0, self.node)
        return t

    def put(self, full: Tensor, part: Tensor) -> Tensor:
        """Return a copy of ``full`` (B, R, ...) with the pairs' entries from ``part``
        (P, 1, ...)."""
        out = full.detach().clone()
        out[self.node, self.row] = part[:, 0].to(out.dtype)
        return out


def open_pairs(parent_rows: Tensor) -> Pairs | None:
    """Return the batch's open pairs (a row its parent has not proven: bound not > 0, NaN
    included) when packing them pays against optimising the union of open rows, else None."""
    open_ = ~(parent_rows > 0)
    union = int(open_.any(dim=0).sum())
    pairs = open_.nonzero()
    if pairs.shape[0] == 0 or pairs.shape[0] > PACK_SHARE * parent_rows.shape[0] * union:
        return None
    return Pairs(pairs[:, 0], pairs[:, 1])


@dataclass(frozen=True, eq=False)
class PackedProblem:
    """An optimisation problem over the P pairs (each one node's box and one row)."""

    lin0: Linear
    lo: Tensor
    hi: Tensor
    relax: list[Relax]
    errs: ErrorVectors
    alpha0: list[Tensor]
    beta0: list[Tensor | None] | None


def pack(pairs: Pairs, lin0: Linear, lo: Tensor, hi: Tensor, relax: Sequence[Relax],
         errs: ErrorVectors, alpha0: Sequence[Tensor],
         beta0: Sequence[Tensor | None] | None) -> PackedProblem:
    """Return the problem of the pairs: node data taken per pair, row data per pair."""
    b = lo.shape[0]

    def cut(t: Tensor) -> Tensor:
        return pairs.nodes(t, b)

    return PackedProblem(
        Linear(pairs.rows(lin0.a), pairs.rows(lin0.bias.unsqueeze(2)).squeeze(2),
               pairs.rows(lin0.err.unsqueeze(2)).squeeze(2)),
        lo.index_select(0, pairs.node), hi.index_select(0, pairs.node),
        [cut_relax(rx, cut) for rx in relax], [None if e is None else cut(e) for e in errs],
        [pairs.rows(t) for t in alpha0],
        None if beta0 is None else [None if t is None else pairs.rows(t) for t in beta0])


def unpack(pairs: Pairs, part: Optimized, parent_rows: Tensor, alpha0: Sequence[Tensor],
           beta0: Sequence[Tensor | None] | None, n_in: int) -> Optimized:
    """Return the whole batch's result: the pairs' optimised rows in their places, every other
    row the parent's proven bound (coefficients 0: the bound ``0 x + parent's bound``)."""
    lower = pairs.put(parent_rows.unsqueeze(2), part.lower.unsqueeze(2)).squeeze(2)
    const = pairs.put(parent_rows.unsqueeze(2), part.const.unsqueeze(2)).squeeze(2)
    coeffs = pairs.put(part.coeffs.new_zeros((*parent_rows.shape, n_in)), part.coeffs)
    alpha = tuple(pairs.put(full, new) for full, new in zip(alpha0, part.alpha, strict=True))
    beta: tuple[Tensor | None, ...] | None = None
    if beta0 is not None and part.beta is not None:
        beta = tuple(None if full is None or new is None else pairs.put(full, new)
                     for full, new in zip(beta0, part.beta, strict=True))
    return Optimized(lower, alpha, beta, coeffs, const)

