"""Interval bound propagation (IBP) with split clamping.

For an affine layer and an input interval with centre c and radius r (both (B, n_in)):

    W x + b  in  [W c + b - |W| r,  W c + b + |W| r]

(moved outwards by a rigorous bound on rounding and on the weights' recorded error, see
:func:`affine_interval` and :mod:`bnbver.bounds.rounding`). A ReLU maps
``[l, u]`` to ``[max(l, 0), max(u, 0)]`` and a max pool maps each window to
``[max_j l_j, max_j u_j]`` (padding cells are -inf and never win). A residual sum maps its
inputs' intervals to ``[sum_k l_k, sum_k u_k]``, each addition rounded outwards (one ulp), and
a concatenation concatenates them.

Splits clamp the pre-activation bounds of a ReLU layer: an active neuron (+1) satisfies
``z >= 0`` so ``l := max(l, 0)``; an inactive one (-1) satisfies ``z <= 0`` so ``u := min(u, 0)``.
A node whose clamped bounds cross (``l > u + tol``) has no feasible input: it is infeasible.

Shapes: B nodes, ``n_s`` the size of the input of nonlinear slot s, R specification rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds import rounding
from bnbver.bounds.prepared import AddOp, AffineOp, BoundedNetwork, ConcatOp, PoolOp, ReluOp


@dataclass(frozen=True, eq=False)
class IntervalBounds:
    """Result of :func:`ibp`.

    Attributes:
        lower: per slot, (B, n_s) lower bounds of the slot's input (split-clamped).
        upper: per slot, (B, n_s) upper bounds.
        row_lower: (B, R) lower bounds of the margins.
        row_upper: (B, R) upper bounds of the margins.
        infeasible: (B,) bool, True where clamped bounds cross.
    """

    lower: tuple[Tensor, ...]
    upper: tuple[Tensor, ...]
    row_lower: Tensor
    row_upper: Tensor
    infeasible: Tensor


def affine_interval(op: AffineOp, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Return a rigorous interval of ``W* x + b*`` for x in ``[lo, hi]`` (each (B, n_in)).

    The box is written ``c +- r`` with r rounded up so that it contains ``[lo, hi]``; the
    slack covers the rounding of ``W c + b`` and ``|W| r`` and the weights' own error
    (``AffineOp.error_vector`` of the magnitude ``|c| + r``, which also carries the
    ``gamma |W| (|c| + r)`` rounding of both products).
    """
    center = (hi + lo) / 2
    radius = rounding.enclosing_radius(lo, hi, center)
    mid = op.linear(center) + op.bias
    rad = op.linear(radius, absolute=True)
    # |W| (|c| + r) + |b| = |W| |c| + rad + |b|: one more product, not two.
    size = op.linear(center.abs(), absolute=True) + rad + op.abs_bias
    v = op.kappa_fwd * size + op.const_error(center.abs() + radius)
    slack = (rad + 2.0 * v) * (1.0 + 8.0 * rounding.unit(lo.dtype))
    return rounding.down(mid - slack), rounding.up(mid + slack)


def nonlinear_interval(op: ReluOp | PoolOp, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Return the output interval of a ReLU or max pool given its input interval (exact)."""
    if isinstance(op, ReluOp):
        return lo.clamp(min=0), hi.clamp(min=0)
    pad = lo.new_full((lo.shape[0], 1), -torch.inf)
    lo_w = torch.cat([lo, pad], 1)[:, op.windows].amax(dim=2)
    hi_w = torch.cat([hi, pad], 1)[:, op.windows].amax(dim=2)
    return lo_w, hi_w


def clamp_splits(lo: Tensor, hi: Tensor, split: Tensor | None) -> tuple[Tensor, Tensor]:
    """Clamp pre-activation bounds (B, n_l) with a split state (B, n_l) in {-1, 0, +1}."""
    if split is None:
        return lo, hi
    lo = torch.where(split > 0, lo.clamp(min=0), lo)
    hi = torch.where(split < 0, hi.clamp(max=0), hi)
    return lo, hi


def crossing(lo: Tensor, hi: Tensor, tol: float) -> Tensor:
    """Return (B,) True where some ``lo > hi + tol`` (an empty feasible set)."""
    return (lo > hi + tol).any(dim=1)


def join_interval(op: AddOp | ConcatOp, parts: Sequence[tuple[Tensor, Tensor]]
                  ) -> tuple[Tensor, Tensor]:
    """Return a rigorous interval of a sum (each addition rounded outwards) or concatenation
    of tensors with intervals ``parts``."""
    if isinstance(op, ConcatOp):
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
    lo, hi = parts[0]
    for p_lo, p_hi in parts[1:]:
        lo, hi = rounding.down(lo + p_lo), rounding.up(hi + p_hi)
    return lo, hi


def tensor_interval(net: BoundedNetwork, t: int, lower: Sequence[Tensor],
                    upper: Sequence[Tensor], box_lo: Tensor,
                    box_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Return IBP bounds of the output of op ``t`` (-1: the box) from the slot bounds.

    Walks back through affine and join ops to the outputs of earlier slots (whose input
    bounds ``lower[s]``, ``upper[s]`` must be known) or to the input.
    """
    if t < 0:
        return box_lo, box_hi
    op = net.ops[t]
    if isinstance(op, (ReluOp, PoolOp)):
        return nonlinear_interval(op, lower[op.slot], upper[op.slot])
    parts = [tensor_interval(net, s, lower, upper, box_lo, box_hi) for s in net.inputs[t]]
    if isinstance(op, AffineOp):
        return affine_interval(op, *parts[0])
    return join_interval(op, parts)


def slot_input_interval(net: BoundedNetwork, slot: int, lower: Sequence[Tensor],
                        upper: Sequence[Tensor], box_lo: Tensor,
                        box_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Return IBP bounds of the input of ``slot`` (``len(slot_ops)`` means the output).

    Starts from the bounds of the previous slot's input (``lower[slot-1]``), or the box; in
    a DAG from those of every slot whose output reaches it (:func:`tensor_interval`).
    """
    if not net.is_chain:
        t = net.producer(slot) if slot < len(net.slot_ops) else len(net.ops) - 1
        return tensor_interval(net, t, lower, upper, box_lo, box_hi)
    if slot == 0:
        lo, hi, start = box_lo, box_hi, 0
    else:
        prev = net.ops[net.slot_ops[slot - 1]]
        assert isinstance(prev, (ReluOp, PoolOp))
        lo, hi = nonlinear_interval(prev, lower[slot - 1], upper[slot - 1])
        start = net.slot_ops[slot - 1] + 1
    end = net.slot_ops[slot] if slot < len(net.slot_ops) else len(net.ops)
    for op in net.ops[start:end]:
        assert isinstance(op, AffineOp)
        lo, hi = affine_interval(op, lo, hi)
    return lo, hi


def slot_split(net: BoundedNetwork, splits: Sequence[Tensor] | None,
               slot: int) -> Tensor | None:
    """Return the split state of ``slot`` if it is a ReLU layer with splits, else None."""
    op = net.ops[net.slot_ops[slot]]
    if splits is None or not isinstance(op, ReluOp):
        return None
    return splits[op.layer]


def ibp(net: BoundedNetwork, lower: Tensor, upper: Tensor,
        splits: Sequence[Tensor] | None = None,
        inherited: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None) -> IntervalBounds:
    """Propagate intervals through the network, clamping with splits and inherited bounds.

    Args:
        net: the prepared network.
        lower: (B, n_in) box lower corners (in ``net``'s dtype and device).
        upper: (B, n_in) box upper corners.
        splits: per ReLU layer (B, n_l) split states, or None.
        inherited: per slot ``(lower, upper)`` bounds to intersect with, or None.

    Returns:
        The bounds of every slot input and of the margins.
    """
    _, _, tol = net.margins
    los: list[Tensor] = []
    his: list[Tensor] = []
    infeasible = torch.zeros(lower.shape[0], dtype=torch.bool, device=lower.device)
    with torch.no_grad():
        for s in range(len(net.slot_ops)):
            lo, hi = slot_input_interval(net, s, los, his, lower, upper)
            if inherited is not None:
                lo, hi = torch.maximum(lo, inherited[0][s]), torch.minimum(hi, inherited[1][s])
            lo, hi = clamp_splits(lo, hi, slot_split(net, splits, s))
            infeasible |= crossing(lo, hi, tol)
            los.append(lo)
            his.append(hi)
        row_lo, row_hi = slot_input_interval(net, len(net.slot_ops), los, his, lower, upper)
    return IntervalBounds(tuple(los), tuple(his), row_lo, row_hi, infeasible)
