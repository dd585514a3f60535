"""The only module that imports highspy: solve a :class:`LinearProgram` with HiGHS.

HiGHS calls return statuses instead of raising, so every call is checked here and model
statuses are collapsed to :class:`LpStatus` by one table; anything not in the table is ERROR.

Two ways in:

* :func:`solve` builds a fresh HiGHS instance, solves once and returns an :class:`LpSolution`
  (LP or MIP); :func:`write_model` / :func:`solve_file` export and re-read MPS / LP files.
* :class:`WarmLp` holds one HiGHS model (the only stateful piece). Changing column or row
  bounds, costs or appending rows keeps the simplex basis, so the next :meth:`WarmLp.run` is a
  dual (bound changes) or primal (cost changes) simplex warm start from the previous optimum.

HiGHS prints a banner on stdout the first time an instance is built; :func:`new_highs` hides
it (file descriptor 1 points at /dev/null during that first construction) because the CLI's
stdout carries results.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highspy
import numpy as np
import scipy.sparse as sp

from bnbver.errors import SolverError
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

_BANNER_LOCK = threading.Lock()
_banner_shown = False


@dataclass(frozen=True)
class HighsOptions:
    """Options passed to HiGHS for one solve.

    Attributes:
        time_limit: seconds for one run (inf: none).
        threads: HiGHS threads (0: HiGHS decides).
        mip_rel_gap: relative MIP gap at which a MIP counts as solved.
        presolve: run presolve (off keeps warm starts cheap for small LPs).
        output: let HiGHS log to stdout.
        first_solution: stop a MIP at its first feasible solution (deciding sat).
        simplex_strategy: HiGHS ``simplex_strategy`` (1: dual simplex, 4: primal).
    """

    time_limit: float = np.inf
    threads: int = 1
    mip_rel_gap: float = 1e-6
    presolve: bool = True
    output: bool = False
    first_solution: bool = False
    simplex_strategy: int = 1


def _construct() -> highspy.Highs:
    """Return ``highspy.Highs()``, hiding the banner the first construction prints."""
    global _banner_shown
    with _BANNER_LOCK:
        if _banner_shown:
            return highspy.Highs()  # type: ignore[no-untyped-call]
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()  # type: ignore[no-untyped-call]
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _banner_shown = True
        return h


def to_highs_lp(lp: LinearProgram) -> highspy.HighsLp:
    """Return a ``HighsLp`` holding ``lp`` (column-wise matrix; bounds by :func:`_lower`
    and :func:`_upper`)."""
    h = highspy.HighsLp()
    h.num_col_ = lp.num_cols
    h.num_row_ = lp.num_rows
    h.col_cost_ = np.asarray(lp.c, dtype=np.float64)
    h.offset_ = float(lp.offset)
    h.col_lower_ = _lower(lp.col_lower)
    h.col_upper_ = _upper(lp.col_upper)
    h.row_lower_ = _lower(lp.row_lower)
    h.row_upper_ = _upper(lp.row_upper)
    csc = sp.csc_matrix(lp.A)
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
    h = _construct()
    h.setOptionValue("output_flag", bool(options.output))
    if options.threads > 0:
        h.setOptionValue("threads", int(options.threads))
    if np.isfinite(options.time_limit):
        h.setOptionValue("time_limit", max(float(options.time_limit), 1e-3))
    h.setOptionValue("mip_rel_gap", float(options.mip_rel_gap))
    h.setOptionValue("presolve", "on" if options.presolve else "off")
    h.setOptionValue("simplex_strategy", int(options.simplex_strategy))
    if options.first_solution:
        h.setOptionValue("mip_max_improving_sols", 1)
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
    extra = {"iterations": float(info.simplex_iteration_count)}
    if is_mip:
        ok = status in (LpStatus.OPTIMAL, LpStatus.TIME_LIMIT)
        bound = float(info.mip_dual_bound) if ok else -np.inf
        if status is LpStatus.INFEASIBLE:
            bound = np.inf
        return LpSolution(status, obj, x, bound, mip_gap=float(info.mip_gap),
                          nodes=int(info.mip_node_count), seconds=seconds, extra=extra)
    duals_ok = bool(info.dual_solution_status == 2)
    row_duals = np.array(sol.row_dual) if duals_ok else None
    col_duals = np.array(sol.col_dual) if duals_ok else None
    bound = obj if (status is LpStatus.OPTIMAL and obj is not None) else -np.inf
    return LpSolution(status, obj, x, bound if bound is not None else -np.inf,
                      row_duals, col_duals, seconds=seconds, extra=extra)


def _is_mip(lp: LinearProgram) -> bool:
    return lp.integrality is not None and bool(np.any(lp.integrality))


def _check(status: highspy.HighsStatus, what: str) -> None:
    if status == highspy.HighsStatus.kError:
        raise SolverError(f"HiGHS {what} failed")


#: A MIP stop rule: (dual bound, incumbent objective) -> True to stop the solve now.
StopRule = Callable[[float, float], bool]


def solve(lp: LinearProgram, options: HighsOptions | None = None,
          stop: StopRule | None = None) -> LpSolution:
    """Solve ``lp`` (an LP, or a MIP when it has integer columns) from scratch with HiGHS.

    ``stop`` (MIPs only) is polled by HiGHS's interrupt callback with the current dual bound
    and incumbent; when it returns True the solve ends (status TIME_LIMIT, with the dual
    bound reached so far): e.g. as soon as a bound has decided a neuron's sign.
    """
    options = options or HighsOptions()
    h = new_highs(options)
    _check(h.passModel(to_highs_lp(lp)), "passModel")
    if stop is not None and _is_mip(lp):
        def interrupt(kind: Any, message: Any, data_out: Any, data_in: Any,
                      user: Any) -> None:
            if stop(float(data_out.mip_dual_bound), float(data_out.objective_function_value)):
                data_in.user_interrupt = True

        h.setCallback(interrupt, None)
        h.startCallback(highspy.cb.HighsCallbackType.kCallbackMipInterrupt)
    t0 = time.perf_counter()
    h.run()
    return read_solution(h, _is_mip(lp), time.perf_counter() - t0)


def write_model(lp: LinearProgram, path: str | Path) -> None:
    """Write ``lp`` as an MPS (``.mps``) or CPLEX LP (``.lp``) file; the suffix decides.

    Raises:
        SolverError: HiGHS could not write the file.
    """
    h = new_highs(HighsOptions())
    _check(h.passModel(to_highs_lp(lp)), "passModel")
    if lp.col_names is not None:
        for j, name in enumerate(lp.col_names):
            h.passColName(j, name)
    _check(h.writeModel(str(path)), f"writeModel({path})")


def solve_file(path: str | Path, options: HighsOptions | None = None) -> LpSolution:
    """Read an MPS / LP model file with HiGHS and solve it.

    Raises:
        SolverError: HiGHS could not read the file.
    """
    options = options or HighsOptions()
    h = new_highs(options)
    _check(h.readModel(str(path)), f"readModel({path})")
    t0 = time.perf_counter()
    h.run()
    is_mip = any(v != highspy.HighsVarType.kContinuous for v in h.getLp().integrality_)
    return read_solution(h, is_mip, time.perf_counter() - t0)


def _idx(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int32)


#: HiGHS's ``infinite_bound`` option: bounds of this magnitude or more are infinite to it.
INFINITE_BOUND = 1e20


def _lower(a: np.ndarray) -> np.ndarray:
    """Lower bounds as HiGHS reads them. HiGHS takes every magnitude from
    :data:`INFINITE_BOUND` up as infinite, so a lower bound at or beyond +1e20 (extreme
    weights make them) would read as +inf and the model is refused: it is dropped (-inf). Dropping a
    bound relaxes the program, so a claim of the solver on it still holds for ours (and
    every LP bound is re-derived from the original program anyway)."""
    a = np.asarray(a, dtype=np.float64)
    inf = highspy.kHighsInf
    return np.ascontiguousarray(np.where(a >= INFINITE_BOUND, -inf, np.maximum(a, -inf)))


def _upper(a: np.ndarray) -> np.ndarray:
    """Upper bounds as HiGHS reads them: one at or beyond -1e20 is dropped (see
    :func:`_lower`)."""
    return -_lower(-np.asarray(a, dtype=np.float64))


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(a, -highspy.kHighsInf, highspy.kHighsInf),
                                dtype=np.float64)


def _changed(
    idx: np.ndarray, lower: np.ndarray, upper: np.ndarray, cur_l: np.ndarray, cur_u: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep only the entries whose bounds differ from the current ones (the last wins)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), idx.shape)
    upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), idx.shape)
    idx, first = np.unique(idx[::-1], return_index=True)
    lower, upper = lower[::-1][first], upper[::-1][first]
    diff = (lower != cur_l[idx]) | (upper != cur_u[idx])
    return _idx(idx[diff]), lower[diff], upper[diff]


class WarmLp:
    """One HiGHS LP kept alive between solves so that each re-solve starts from the last basis.

    The instance mirrors the current costs and bounds in numpy (``current_lp``), so that
    :func:`~bnbver.lp.model.lagrangian_bound` can be evaluated in float64 against exactly the
    program HiGHS solved.

    Args:
        lp: the program (continuous; integrality is ignored).
        options: HiGHS options; presolve is switched off (it would discard the basis).
    """

    def __init__(self, lp: LinearProgram, options: HighsOptions | None = None) -> None:
        opts = options or HighsOptions()
        self._h = new_highs(opts)
        self._h.setOptionValue("presolve", "off")
        self._c = np.array(lp.c, dtype=np.float64)
        self._cl = np.array(lp.col_lower, dtype=np.float64)
        self._cu = np.array(lp.col_upper, dtype=np.float64)
        self._rl = np.array(lp.row_lower, dtype=np.float64)
        self._ru = np.array(lp.row_upper, dtype=np.float64)
        self._A = sp.csr_matrix(lp.A, copy=True)
        self._offset = float(lp.offset)
        base = LinearProgram(lp.c, lp.A, lp.row_lower, lp.row_upper, lp.col_lower,
                             lp.col_upper, None, lp.offset)
        _check(self._h.passModel(to_highs_lp(base)), "passModel")
        self.solves = 0

    def current_lp(self) -> LinearProgram:
        """Return the program as it stands now (a snapshot of the mirrors)."""
        return LinearProgram(self._c.copy(), self._A, self._rl.copy(), self._ru.copy(),
                             self._cl.copy(), self._cu.copy(), None, self._offset)

    def set_col_bounds(self, cols: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Set the bounds of columns ``cols`` (k,) to ``lower``/``upper`` (k,)."""
        cols, lower, upper = _changed(cols, lower, upper, self._cl, self._cu)
        if cols.size == 0:
            return
        self._cl[cols], self._cu[cols] = lower, upper
        _check(self._h.changeColsBounds(cols.size, cols, _lower(self._cl[cols]),
                                        _upper(self._cu[cols])), "changeColsBounds")

    def set_row_bounds(self, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Set the bounds of rows ``rows`` (k,) to ``lower``/``upper`` (k,)."""
        rows, lower, upper = _changed(rows, lower, upper, self._rl, self._ru)
        if rows.size == 0:
            return
        self._rl[rows], self._ru[rows] = lower, upper
        change = self._h.changeRowsBounds  # type: ignore[attr-defined]
        _check(change(rows.size, rows, _lower(self._rl[rows]), _upper(self._ru[rows])),
               "changeRowsBounds")

    def set_cost(self, cost: np.ndarray, offset: float = 0.0) -> None:
        """Replace the objective by ``cost @ x + offset``; only changed entries go to HiGHS."""
        cost = np.asarray(cost, dtype=np.float64)
        changed = _idx(np.flatnonzero(cost != self._c))
        self._c = cost.copy()
        self._offset = float(offset)
        if changed.size:
            _check(self._h.changeColsCost(changed.size, changed, _f64(cost[changed])),
                   "changeColsCost")
        _check(self._h.changeObjectiveOffset(self._offset), "changeObjectiveOffset")

    def set_coeffs(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        """Set matrix entries ``A[rows[i], cols[i]] = values[i]`` (changed ones only)."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if rows.size == 0:
            return
        A = self._A
        for r, c, v in zip(rows.tolist(), cols.tolist(), values.tolist(), strict=True):
            lo, hi = A.indptr[r], A.indptr[r + 1]
            pos = lo + np.flatnonzero(A.indices[lo:hi] == c)
            if pos.size and A.data[pos[0]] == v:
                continue
            _check(self._h.changeCoeff(r, c, v), "changeCoeff")
            if pos.size:
                A.data[pos[0]] = v
            else:
                lil = A.tolil()
                lil[r, c] = v
                A = self._A = sp.csr_matrix(lil)

    def add_rows(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        """Append the rows ``lower <= A x <= upper`` (A is (k, n_cols))."""
        A = sp.csr_matrix(A)
        if A.shape[0] == 0:
            return
        A.sort_indices()
        _check(self._h.addRows(A.shape[0], _lower(lower), _upper(upper), A.nnz,
                               _idx(A.indptr[:-1]), _idx(A.indices), _f64(A.data)), "addRows")
        self._A = sp.csr_matrix(sp.vstack([self._A, A]))
        self._rl = np.concatenate([self._rl, lower])
        self._ru = np.concatenate([self._ru, upper])

    def run(self, time_limit: float = np.inf) -> LpSolution:
        """Re-solve from the current basis; return the solution (duals included)."""
        # HiGHS measures time_limit on the instance's cumulative clock: a long-lived warm
        # model must be given "time used so far + this solve's budget".
        limit = (self._h.getRunTime() + max(float(time_limit), 1e-3)
                 if np.isfinite(time_limit) else np.inf)
        self._h.setOptionValue("time_limit", float(min(limit, highspy.kHighsInf)))
        t0 = time.perf_counter()
        self._h.run()
        self.solves += 1
        return read_solution(self._h, False, time.perf_counter() - t0)

    def dual_ray(self) -> np.ndarray | None:
        """Return HiGHS's dual ray (a Farkas certificate candidate) after an infeasible run."""
        status, has, ray = self._h.getDualRay()  # type: ignore[attr-defined]
        if status == highspy.HighsStatus.kError or not has:
            return None
        return np.asarray(ray, dtype=np.float64)[: self._rl.size]
