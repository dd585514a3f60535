r"""Numerical preconditions for trusting a MILP solver's claims we cannot re-check.

An LP's bound is re-certified from its duals (:func:`~bnbver.lp.model.lagrangian_bound`); a
MILP's "infeasible" or dual bound cannot be. HiGHS silently ignores matrix entries with
:math:`|a| \le` ``small_matrix_value`` (1e-9) and judges feasibility to 1e-7, so a model with
extreme coefficients can come back "infeasible" although it has a solution (a net with a
weight of 9e-10 on its only path to the unsafe output did). Before such a claim may close a
node, the model goes through :func:`solver_safe`:

1. every row is scaled by a power of two so that its largest coefficient has magnitude in
   [0.5, 1) (exact: no rounding);
2. coefficients below ``DROP`` (relative to that) are removed, and the row's bounds are
   widened by their largest possible contribution :math:`\sum |a_{ij}| \max |x_j|` (rounded
   up): the new program contains every point of the old one, so its infeasibility and its
   dual bounds still hold for the old one;
3. the claim is trusted only when every column bound is finite and at most ``MAX_BOUND`` in
   magnitude, every column that is not fixed is at least ``MIN_WIDTH`` wide relative to its
   magnitude, and every finite row bound is at most ``MAX_RHS`` after scaling (beyond them,
   the solver's tolerances are no longer small against the numbers it compares);
4. for a feasibility claim (``bnbver.milp.decide_milp``), every finite row bound is moved
   outwards by ``MARGIN`` times the row's activity scale, so
   that each point of the original program is feasible with room to spare in the solver's
   program: a presolve reduction that errs by a tolerance (1e-9 to 1e-7) cannot remove it.

Nothing here is a proof: it is the checked, logged precondition that the soundness rule asks
of the claims no float64 check can certify; a model that fails it leaves the node open.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from bnbver.lp.model import LinearProgram

log = logging.getLogger(__name__)

#: Coefficients below this (relative to their row's largest) are removed and accounted for.
DROP = 1e-7
#: Largest column bound magnitude at which a solver's claim is trusted.
MAX_BOUND = 1e7
#: Largest finite row bound magnitude (after scaling) at which a claim is trusted.
MAX_RHS = 1e9
#: Outward move of every row bound, relative to the row's activity scale.
MARGIN = 1e-6
#: Smallest relative width of a column that is not fixed: below it the solver's tolerances
#: (1e-7 to 1e-9) are no longer small against the range it reasons about, and its presolve
#: was seen to declare a feasible model infeasible (a box 1.5e-6 wide around 0.96).
MIN_WIDTH = 1e-5


@dataclass(frozen=True, eq=False)
class SafeProgram:
    """A relaxation of a program prepared for a solver, and whether its claims may be used.

    Attributes:
        lp: the scaled program with tiny coefficients removed (contains the original's
            feasible set).
        trusted: True when the preconditions hold.
        reason: why they do not ("" when trusted).
        dropped: how many coefficients were removed.
    """

    lp: LinearProgram
    trusted: bool
    reason: str
    dropped: int


def solver_safe(lp: LinearProgram, margin: float = 0.0) -> SafeProgram:
    r"""Return the scaled, tiny-coefficient-free relaxation of ``lp`` and the precondition.

    With ``margin`` > 0 every finite row bound is moved outwards by ``margin`` times the
    row's activity scale :math:`1 + \sum_j |a_{ij}| \max |x_j|` (see :data:`MARGIN`).
    """
    A = sp.csr_matrix(lp.A, dtype=np.float64, copy=True)
    scale = _row_scale(A)
    A = sp.csr_matrix(sp.diags(scale) @ A)
    row_lo, row_hi = lp.row_lower * scale, lp.row_upper * scale
    xmax = np.maximum(np.abs(lp.col_lower), np.abs(lp.col_upper))
    small = np.abs(A.data) < DROP
    if small.any():
        coo = A.tocoo()
        cut = np.abs(coo.data) < DROP
        spill = np.bincount(coo.row[cut], weights=np.abs(coo.data[cut]) * xmax[coo.col[cut]],
                            minlength=A.shape[0])
        spill = np.nextafter(spill * (1.0 + 1e-12), np.inf)
        with np.errstate(invalid="ignore"):
            row_lo = np.where(np.isfinite(row_lo), np.nextafter(row_lo - spill, -np.inf), row_lo)
            row_hi = np.where(np.isfinite(row_hi), np.nextafter(row_hi + spill, np.inf), row_hi)
        A.data[small] = 0.0
        A.eliminate_zeros()
    if margin > 0:
        row_lo, row_hi = _widen_rows(A, row_lo, row_hi, xmax, margin)
    safe = replace(lp, A=A, row_lower=row_lo, row_upper=row_hi)
    reason = _precondition(safe, xmax)
    if reason:
        log.info("solver claims on this model are not trusted: %s", reason)
    return SafeProgram(safe, not reason, reason, int(small.sum()))


def _widen_rows(A: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray, xmax: np.ndarray,
                margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Move finite row bounds outwards by ``margin`` times each row's activity scale."""
    scale = 1.0 + np.asarray(abs(A) @ np.where(np.isfinite(xmax), xmax, 0.0)).reshape(-1)
    pad = np.nextafter(margin * scale, np.inf)
    with np.errstate(invalid="ignore"):
        return (np.where(np.isfinite(lo), np.nextafter(lo - pad, -np.inf), lo),
                np.where(np.isfinite(hi), np.nextafter(hi + pad, np.inf), hi))


def _row_scale(A: sp.csr_matrix) -> np.ndarray:
    """Return per-row powers of two that bring each row's largest |a| into [0.5, 1)."""
    big = np.asarray(abs(A).max(axis=1).todense()).reshape(-1)
    exp = np.zeros_like(big)
    ok = big > 0
    exp[ok] = np.frexp(big[ok])[1]
    return np.ldexp(1.0, -exp.astype(np.int64))


def _precondition(lp: LinearProgram, xmax: np.ndarray) -> str:
    """Return "" when the solver's claims on ``lp`` may be trusted, else the reason."""
    if not np.all(np.isfinite(xmax)):
        return "a column has an infinite bound"
    if xmax.size and float(xmax.max()) > MAX_BOUND:
        return f"a column bound reaches {float(xmax.max()):.3g} > {MAX_BOUND:g}"
    width = lp.col_upper - lp.col_lower
    narrow = (width > 0) & (width < MIN_WIDTH * np.maximum(xmax, 1.0))
    if np.any(narrow):
        j = int(np.flatnonzero(narrow)[0])
        return f"column {j} is only {float(width[j]):.3g} wide (< {MIN_WIDTH:g} relative)"
    rhs = np.concatenate([lp.row_lower, lp.row_upper])
    rhs = np.abs(rhs[np.isfinite(rhs)])
    if rhs.size and float(rhs.max()) > MAX_RHS:
        return f"a scaled row bound reaches {float(rhs.max()):.3g} > {MAX_RHS:g}"
    if not np.all(np.isfinite(lp.A.data)):
        return "a coefficient is not finite"
    return ""
