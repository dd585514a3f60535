"""The only module that imports highspy: solve a :class:`LinearProgram` with HiGHS.

HiGHS calls return statuses instead of raising, so every call is checked here and model
statuses are collapsed to :class:`LpStatus` by one table; anything not in the table is ERROR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from bnbver.lp.model import LinearProgram, LpSolution, LpStatus

_MS = highspy.HighsModelStatus
STATUS_TABLE: dict[object, LpStatus] = {
    _MS.kOptimal: LpStatus.OPTIMAL,
    _MS.kInfeasible: LpStatus.INFEASIBLE,
    _MS.kUnbounded: LpStatus.UNBOUNDED,
    _MS.kUnboundedOrInfeasible: LpStatus.ERROR,
    _MS.kTimeLimit: LpStatus.TIME_LIMIT,
    _MS.kIterationLimit: LpStatus.TIME_LIMIT,
    _MS.kSolutionLimit: LpStatus.TIME_LIMIT,
    _MS.kInterrupt: LpStatus.TIME_LIMIT,
}


@dataclass(frozen=True)
class HighsOptions:
    """Options passed to HiGHS for one solve."""

    time_limit: float = np.inf
    threads: int = 1
    mip_rel_gap: float = 1e-6
    presolve: bool = True
    output: bool = False


def to_highs_lp(lp: LinearProgram) -> highspy.HighsLp:
    """Return a ``HighsLp`` holding ``lp`` (column-wise matrix, inf mapped to kHighsInf)."""
    inf = highspy.kHighsInf
    h = highspy.HighsLp()
    h.num_col_ = lp.num_cols
    h.num_row_ = lp.num_rows
    h.col_cost_ = np.asarray(lp.c, dtype=np.float64)
    h.offset_ = float(lp.offset)
    h.col_lower_ = np.clip(lp.col_lower, -inf, inf)
    h.col_upper_ = np.clip(lp.col_upper, -inf, inf)
    h.row_lower_ = np.clip(lp.row_lower, -inf, inf)
    h.row_upper_ = np.clip(lp.row_upper, -inf, inf)
    csc = lp.A.tocsc()
    csc.sort_indices()
    h.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    h.a_matrix_.start_ = csc.indptr.astype(np.int32)
    h.a_matrix_.index_ = csc.indices.astype(np.int32)
    h.a_matrix_.value_ = csc.data.astype(np.float64)
    if lp.integrality is not None and np.any(lp.integrality):
        h.integrality_ = [
            highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous
            for v in lp.integrality
        ]
    return h


def new_highs(options: HighsOptions) -> highspy.Highs:
    """Return a silent HiGHS instance configured by ``options``."""
    h = highspy.Highs()
    h.setOptionValue("output_flag", bool(options.output))
    h.setOptionValue("threads", int(options.threads))
    if np.isfinite(options.time_limit):
        h.setOptionValue("time_limit", max(float(options.time_limit), 1e-3))
    h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    h.setOptionValue("presolve", "on" if options.presolve else "off")
    return h


def read_solution(h: highspy.Highs, is_mip: bool, seconds: float) -> LpSolution:
    """Collect status, primal/dual values and bounds from a solved HiGHS instance."""
    status = STATUS_TABLE.get(h.getModelStatus(), LpStatus.ERROR)
    info = h.getInfo()
    sol = h.getSolution()
    has_primal = bool(info.primal_solution_status == 2) or (
        is_mip and info.primal_solution_status >= 1
    )
    x = np.array(sol.col_value, dtype=np.float64) if has_primal else None
    obj = float(info.objective_function_value) if x is not None else None
    if is_mip:
        bound = float(info.mip_dual_bound) if status in (LpStatus.OPTIMAL, LpStatus.TIME_LIMIT) else -np.inf
        return LpSolution(status, obj, x, bound, mip_gap=float(info.mip_gap),
                          nodes=int(info.mip_node_count), seconds=seconds)
    duals_ok = bool(info.dual_solution_status == 2)
    row_duals = np.array(sol.row_dual) if duals_ok else None
    col_duals = np.array(sol.col_dual) if duals_ok else None
    bound = obj if (status is LpStatus.OPTIMAL and obj is not None) else -np.inf
    return LpSolution(status, obj, x, bound if bound is not None else -np.inf,
                      row_duals, col_duals, seconds=seconds)


def solve(lp: LinearProgram, options: HighsOptions | None = None) -> LpSolution:
    """Solve ``lp`` (an LP, or a MIP when it has integer columns) from scratch with HiGHS."""
    options = options or HighsOptions()
    h = new_highs(options)
    h.passModel(to_highs_lp(lp))
    t0 = time.perf_counter()
    h.run()
    is_mip = lp.integrality is not None and bool(np.any(lp.integrality))
    return read_solution(h, is_mip, time.perf_counter() - t0)
