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
