"""A linear (or mixed-integer) program as plain arrays, independent of any solver.

    minimise    c @ x + offset
    subject to  row_lower <= A @ x <= row_upper
                col_lower <= x <= col_upper
                x_j integer where integrality[j] == 1

Infinite bounds are ``np.inf`` / ``-np.inf``. ``A`` is a scipy CSR matrix (n_rows, n_cols).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class LinearProgram:
    """A solver-independent LP/MILP (see the module docstring for the math)."""

    c: np.ndarray
    A: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray | None = None
    offset: float = 0.0
    col_names: tuple[str, ...] | None = None

    @property
    def num_cols(self) -> int:
        return int(self.c.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.A.shape[0])


class LpStatus(Enum):
    """Solver outcomes collapsed to what bnbver acts on (one table maps HiGHS statuses)."""

    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    TIME_LIMIT = "time_limit"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class LpSolution:
    """A solver answer.

    Attributes:
        status: the collapsed status.
        objective: objective value of ``x`` (None when there is no primal solution).
        x: primal solution (n_cols,) or None.
        bound: a proven lower bound on the optimum (for a MIP the dual bound; for an LP the
            objective at optimality); -inf when unknown.
        row_duals: row dual values (n_rows,) for LPs, when available.
        col_duals: reduced costs (n_cols,) for LPs, when available.
        mip_gap: relative MIP gap reported by the solver, when a MIP was solved.
        nodes: branch-and-bound nodes used by a MIP solve.
        seconds: solver run time.
    """

    status: LpStatus
    objective: float | None = None
    x: np.ndarray | None = None
    bound: float = -np.inf
    row_duals: np.ndarray | None = None
    col_duals: np.ndarray | None = None
    mip_gap: float | None = None
    nodes: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


#: Relative size of the float64 rounding error allowed for in :func:`lagrangian_bound`: the
#: bound is lowered by this times (number of terms) times the sum of absolute terms.
ROUNDING_EPS = float(np.finfo(np.float64).eps)


def lagrangian_bound(
    lp: LinearProgram, row_duals: np.ndarray, cost: np.ndarray | None = None
) -> float:
    r"""Return a lower bound on ``min cost @ x`` over ``lp``'s feasible set from any row duals.

    For every vector :math:`\lambda` and every feasible x,

    .. math::
        c^\top x = \lambda^\top A x + r^\top x, \qquad r = c - A^\top \lambda,

    and each term is bounded below using the bounds of its row or column:
    :math:`\lambda_i (Ax)_i \ge \lambda_i\,\mathrm{rl}_i` when :math:`\lambda_i > 0`,
    :math:`\ge \lambda_i\,\mathrm{ru}_i` when :math:`\lambda_i < 0`;
    :math:`r_j x_j \ge r_j\,\mathrm{cl}_j` when :math:`r_j > 0`, :math:`\ge r_j\,\mathrm{cu}_j`
    when :math:`r_j < 0`. A multiplier that would meet an infinite row bound is set to 0
    (any :math:`\lambda` is allowed), and an infinite column bound met by a nonzero
    :math:`r_j` gives -inf. The sum is computed in float64 and then lowered by a bound on its
    rounding error (including the error of computing r), so the result holds whatever
    tolerances the solver used; a column with an infinite bound gives -inf unless no row and
    no cost touch it (its reduced cost is then exactly 0). With
    ``cost = 0`` a positive result proves the LP infeasible (a Farkas certificate).

    Args:
        lp: the program (its ``c`` and ``offset`` are used unless ``cost`` is given).
        row_duals: (n_rows,) any multipliers, e.g. the solver's row duals or dual ray.
        cost: (n_cols,) objective to bound instead of ``lp.c`` (then the offset is ignored).

    Returns:
        A lower bound on the optimum (+inf is never returned; -inf when unbounded below).
    """
    c = lp.c if cost is None else np.asarray(cost, dtype=np.float64)
    offset = lp.offset if cost is None else 0.0
    lam = np.array(row_duals, dtype=np.float64).reshape(-1)
    lam[~np.isfinite(lam)] = 0.0
    lam[(lam > 0) & ~np.isfinite(lp.row_lower)] = 0.0
    lam[(lam < 0) & ~np.isfinite(lp.row_upper)] = 0.0
    r = c - lp.A.T @ lam
    col_bound = np.where(r > 0, lp.col_lower, np.where(r < 0, lp.col_upper, 0.0))
    if not np.all(np.isfinite(col_bound)):
        return -np.inf
    row_bound = np.where(lam > 0, lp.row_lower, np.where(lam < 0, lp.row_upper, 0.0))
    terms = np.concatenate([r * col_bound, lam * row_bound])
    total = float(np.sum(terms)) + offset
    err = ROUNDING_EPS * (terms.size + 2) * (float(np.sum(np.abs(terms))) + abs(offset))
    return float(np.nextafter(total - err - _reduced_cost_error(lp, c, lam), -np.inf))


def _reduced_cost_error(lp: LinearProgram, c: np.ndarray, lam: np.ndarray) -> float:
    """Bound ``|(r_exact - r_computed) @ x|`` over the box (columns with finite bounds)."""
    abs_a = abs(lp.A)
    per_col = np.diff(abs_a.tocsc().indptr) if lp.num_rows else np.zeros(lp.num_cols)
    k = float(np.max(per_col, initial=0)) + 2.0
    size = np.abs(c) + abs_a.T @ np.abs(lam)
    xmax = np.maximum(np.abs(lp.col_lower), np.abs(lp.col_upper))
    if np.any(~np.isfinite(xmax) & (size > 0)):
        # An unbounded column whose reduced cost may be off by rounding: no bound.
        return float(np.inf)
    xmax = np.where(np.isfinite(xmax), xmax, 0.0)
    return float(ROUNDING_EPS * k * np.sum(size * xmax)) * (1.0 + 1e-6)
