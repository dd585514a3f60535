"""Input-domain clipping: shrink a node's box to where a counterexample can still be.

An unsafe disjunct ``C_k y <= d_k`` needs every row margin ``m_i(x) <= 0``. With a linear
lower bound ``m_i(x) >= a x + c`` valid on the box (CROWN's, safety margin included), every
counterexample x in the box satisfies ``a x + c <= 0``, so for each input j

    a_j > 0:  x_j <= lo_j + s / a_j,        a_j < 0:  x_j >= hi_j - s / |a_j|,

with ``s = -(c + sum_i min(a_i lo_i, a_i hi_i)) >= 0`` the row's slack on the box (the box
is empty of counterexamples when ``s < 0``). Applying every row of a disjunct in turn (twice,
since each cut shrinks the box and so the next row's slack) gives a box per disjunct; the
node's new box is the hull of the disjuncts' non-empty boxes, and the node holds no
counterexample when all are empty. Each row's linear bound stays valid on the smaller boxes.

Rounding: the slack is raised by a rigorous bound on its own rounding error
(``gamma_{n+2} (|c| + sum_i |a_i| max(|lo_i|, |hi_i|))``) and every quotient and new face is
rounded outwards, so a clipped box always contains every counterexample of the original one
(the rows' constants already carry the bounds engine's rounding allowance).

Shapes: B nodes, R rows, ``n_in`` the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from bnbver.bounds import rounding

#: Passes over the rows of a disjunct.
PASSES = 2
#: Extra slack (relative to the row's magnitude) so that the independent checker
#: (``bnbver.check``), which recomputes the rows with its own code and rounding allowance,
#: never finds a clipped box too small: their constants differ by about 1e-13 relative.
REPLAY_SLACK = 1e-9


def _clip_row(a: Tensor, c: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Clip boxes (B, n_in) by one row ``a x + c <= 0`` (a (B, n_in), c (B,)).

    Returns the new (lo, hi) and (B,) True where the box holds no point of the half-space.
    """
    lows = torch.minimum(a * lo, a * hi)
    mag = (a.abs() * rounding.box_magnitude(lo, hi)).sum(dim=1) + c.abs()
    err = (rounding.gamma(a.shape[1] + 4, a.dtype) * 2.0 + REPLAY_SLACK) * mag
    slack = rounding.up(-(c + lows.sum(dim=1)) + err)
    empty = slack < 0
    reach = rounding.up(slack.clamp(min=0).unsqueeze(1) / a.abs())
    up = rounding.up(lo + reach)
    down = rounding.down(hi - reach)
    new_hi = torch.where(a > 0, torch.minimum(hi, up), hi)
    new_lo = torch.where(a < 0, torch.maximum(lo, down), lo)
    return new_lo, new_hi, empty


def clip_boxes(a: Tensor, c: Tensor, lower: Tensor, upper: Tensor,
               groups: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Return boxes shrunk to the possible counterexamples, and which are empty.

    Args:
        a: (B, R, n_in) float64 row coefficients; c: (B, R) constants, valid on the boxes.
        c: (B, R) constants.
        lower, upper: (B, n_in) float64 boxes.
        groups: one long index tensor of rows per unsafe disjunct (the rows that must all
            be <= 0 for a point to be unsafe in that disjunct).

    Returns:
        ``(lower', upper', empty)``: (B, n_in) boxes inside the given ones that contain every
        counterexample of them, and (B,) True where there is none (then the box is
        unchanged).
    """
    hull_lo = torch.full_like(lower, torch.inf)
    hull_hi = torch.full_like(upper, -torch.inf)
    all_empty = torch.ones(lower.shape[0], dtype=torch.bool, device=lower.device)
    for rows in groups:
        lo, hi = lower, upper
        empty = torch.zeros_like(all_empty)
        for _ in range(PASSES):
            for r in rows.tolist():
                usable = torch.isfinite(c[:, r]) & torch.isfinite(a[:, r]).all(dim=1)
                n_lo, n_hi, n_empty = _clip_row(a[:, r], c[:, r], lo, hi)
                keep = usable.unsqueeze(1)
                lo = torch.where(keep, n_lo, lo)
                hi = torch.where(keep, n_hi, hi)
                empty |= usable & n_empty
        live = (~empty).unsqueeze(1)
        hull_lo = torch.where(live, torch.minimum(hull_lo, lo), hull_lo)
        hull_hi = torch.where(live, torch.maximum(hull_hi, hi), hull_hi)
        all_empty &= empty
    keep = all_empty.unsqueeze(1)
    return (torch.where(keep, lower, torch.maximum(hull_lo, lower)),
            torch.where(keep, upper, torch.minimum(hull_hi, upper)), all_empty)
