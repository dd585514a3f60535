"""Interval bounds on the input gradient of one margin row over a node's box.

Over a box, a ReLU whose pre-activation bounds straddle 0 has a derivative anywhere in
[0, 1]; a stable or split one has 0 or 1. Propagating the row's gradient backwards with
these derivative intervals (interval arithmetic) bounds ``d row / d x_j`` over the whole box.
This is the quantity behind ReluVal's "smear" input-splitting heuristic (Wang et al. 2018,
"Formal security analysis of neural networks using symbolic intervals"): width times the
largest gradient magnitude. Unlike the coefficient of a linear relaxation (a secant), it
sees dimensions along which the row is steep but not monotone (a V shape over the box has a
secant slope near 0 and a large gradient interval).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bnbver.bounds.prepared import AffineOp, BoundedNetwork, ReluOp


def supports_gradient(net: BoundedNetwork) -> bool:
    """True for dense ReLU networks (the only ones :func:`gradient_bounds` handles)."""
    return all(isinstance(op, ReluOp) or (isinstance(op, AffineOp) and op.conv is None)
               for op in net.ops)


def gradient_bounds(net: BoundedNetwork, rows: Tensor, pre_lower: Sequence[Tensor],
                    pre_upper: Sequence[Tensor], splits: Sequence[Tensor]
                    ) -> tuple[Tensor, Tensor]:
    """Return ``(g_lo, g_hi)``, each (B, n_in): bounds on ``d margin_row / dx`` over the box.

    Args:
        net: a dense ReLU network with the specification folded in (``supports_gradient``).
        rows: (B,) long, the margin row of each node.
        pre_lower, pre_upper: per ReLU layer (B, n_l) pre-activation bounds of each node.
        splits: per ReLU layer (B, n_l) split states (+1 active, -1 inactive, 0 free).

    Raises:
        ValueError: the network has convolutions or pooling.
    """
    if not supports_gradient(net):
        raise ValueError("gradient bounds need a dense ReLU network")
    last = net.ops[-1]
    assert isinstance(last, AffineOp)
    g = last.weight.index_select(0, rows.to(last.weight.device))  # (B, n_last): exact
    g_lo, g_hi = g, g.clone()
    for op in reversed(net.ops[:-1]):
        if isinstance(op, ReluOp):
            g_lo, g_hi = _relu_back(g_lo, g_hi, pre_lower[op.layer], pre_upper[op.layer],
                                    splits[op.layer])
        else:
            assert isinstance(op, AffineOp)
            mid, rad = (g_hi + g_lo) / 2, (g_hi - g_lo) / 2
            centre, spread = mid @ op.weight, rad @ op.abs_weight
            g_lo, g_hi = centre - spread, centre + spread
    return g_lo, g_hi


def _relu_back(g_lo: Tensor, g_hi: Tensor, lo: Tensor, hi: Tensor,
               split: Tensor) -> tuple[Tensor, Tensor]:
    """Multiply the gradient interval by each ReLU's derivative set ({0}, {1} or [0, 1])."""
    active = (split > 0) | ((split == 0) & (lo >= 0))
    inactive = (split < 0) | ((split == 0) & (hi <= 0))
    zero = torch.zeros_like(g_lo)
    unstable = ~(active | inactive)
    new_lo = torch.where(active, g_lo, torch.where(unstable, g_lo.clamp(max=0), zero))
    new_hi = torch.where(active, g_hi, torch.where(unstable, g_hi.clamp(min=0), zero))
    return new_lo, new_hi
