"""Solver runners with one answer schema: bnbver's BaB and generic MILP solvers.

Every runner decides one loaded instance under a deadline and returns an :class:`Outcome`.
The MILP runners share one decision loop (:func:`decide_by_milp`): one MILP per (input box,
unsafe disjunct), built by :func:`bnbver.milp.build_milp` from the bounds of a named source
(:class:`BoundsCache`, ``bnbver.bab.bound_sources``; default ``auto``: the *same* root bounds
that bnbver's BaB starts from, the root of ``NodeBounder`` with bnbver's default options;
``bnbver export-milp --bounds`` writes the same models), with ``t <= MILP_UNSAT_SLACK``: a
model is feasible exactly when the
disjunct has a counterexample (up to that slack), so "all infeasible" is unsat. A feasible
point counts only after its input passes bnbver's float64 check; otherwise the disjunct is
re-solved to optimality (the most violating point) in the time left.

Backends differ only in how they solve one built model (:data:`BACKENDS`): HiGHS through
``bnbver.milp.solve_milp``; SCIP (``pyscipopt``) and Gurobi (``gurobipy``) read the exported
MPS file and are imported lazily, so a missing package only removes them from the study.
Gurobi's pip licence is size-limited: such a model gives the answer ``too large``.

Remaining gap: for an undecided instance, ``lower_bound`` is the best proven lower bound of
the unsafe margin min over disjuncts (the BaB's global lower bound; for a MILP the minimum of
the solvers' dual bounds of ``t``); unsat needs it > 0, so ``gap = -lower_bound`` is how far
the proof still was.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.bab.bound_sources import node_bounds, validate_source
from bnbver.driver import verify
from bnbver.lp.model import LpStatus
from bnbver.milp import (
    MILP_UNSAT_SLACK,
    MilpModel,
    build_milp,
    export_milp,
    parse_formulation,
    solve_milp,
)
from bnbver.network import Network
from bnbver.result import Status, validate_counterexample
from bnbver.spec import Property

from .instances import LoadedInstance

#: Answers that decide an instance; the others are "timeout", "unknown", "error",
#: "too large" (size-limited licence).
DECIDED = ("sat", "unsat")

Bounds = tuple[list[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Outcome:
    """One solver's answer on one instance.

    Attributes:
        answer: sat / unsat / timeout / unknown / error / too large.
        seconds: wall time, root bounds and model building included.
        nodes: branch-and-bound nodes (bnbver's nodes, or the MILP solvers' nodes summed).
        lower_bound: proven lower bound of the unsafe margin when undecided (nan otherwise).
        message: free text (reason of an error, where the counterexample came from, ...).
        extra: solver-specific numbers (bounds_s, solve_s, max_depth, ...), as CSV columns.
        x: the counterexample input of a sat answer (re-checked by the harness).
    """

    answer: str
    seconds: float
    nodes: int = 0
    lower_bound: float = math.nan
    message: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    x: np.ndarray | None = None


@dataclass(frozen=True)
class MilpAnswer:
    """A backend's answer for one built model.

    Attributes:
        status: "infeasible", "feasible" (x set), "timeout", "error" or "too large".
        x: the full primal point (model columns) when feasible.
        nodes: solver nodes. bound: dual bound of the objective t (-inf when none).
    """

    status: str
    x: np.ndarray | None = None
    nodes: int = 0
    bound: float = -math.inf
    message: str = ""


Backend = Callable[[MilpModel, float, bool], MilpAnswer]
Runner = Callable[[LoadedInstance, float], Outcome]


# --------------------------------------------------------------------------- bounds
#: ``--milp-bounds`` names kept for old commands: "relu" was the alpha-optimised root.
SOURCE_ALIASES = {"relu": "alpha"}


def root_bounds(network: Network, prop: Property, source: str = "auto",
                ) -> tuple[Bounds, float]:
    """Return the root pre-activation bounds of ``source`` and the root's margin bound.

    ``auto`` is the root that bnbver's BaB starts from (``node_bounds`` bounds it exactly
    as ``run_bab`` does), so the MILP solvers and the BaB share the same intermediate bounds.
    """
    nb = node_bounds(network, prop, source)
    return (nb.lower, nb.upper), nb.margin_lower


class BoundsCache:
    """Pre-activation bounds per instance, computed once and shared by every MILP runner.

    The bounds come from ``bnbver.bab.bound_sources.node_bounds(source)``, the function
    behind ``bnbver export-milp --bounds``, so ``export-milp --bounds SOURCE`` writes the
    model a runner solved (``auto``: the BaB's own root bounds; ``alpha``: the
    alpha-optimised root of a ReLU-split search, tighter on ACAS Xu, where bnbver itself
    splits inputs). Each runner still pays the bounding time (``seconds`` includes
    ``bounds_s``), so no solver gets the bounds for free.
    """

    def __init__(self, source: str = "auto") -> None:
        self.source = validate_source(SOURCE_ALIASES.get(source, source), "--milp-bounds")
        self._cache: dict[str, tuple[list[Bounds], float]] = {}

    def get(self, inst: LoadedInstance, timeout: float = math.inf) -> tuple[list[Bounds], float]:
        """Return (bounds per property, seconds it took to compute them).

        ``timeout`` caps the ``lp`` / ``milp`` tightening (the first caller's timeout).
        """
        key = inst.ref.name
        if key not in self._cache:
            t0 = time.monotonic()
            deadline = t0 + timeout if math.isfinite(timeout) else None
            nbs = [node_bounds(inst.network, p, self.source, deadline=deadline)
                   for p in inst.props]
            self._cache[key] = ([(nb.lower, nb.upper) for nb in nbs], time.monotonic() - t0)
        return self._cache[key]


# --------------------------------------------------------------------------- bnbver
def run_bnbver(inst: LoadedInstance, timeout: float, **options: Any) -> Outcome:
    """Run ``bnbver.verify`` (falsifier + BaB) on one instance.

    Args:
        inst: the instance.
        timeout: seconds.
        **options: ``VerifierOptions.from_kwargs`` keywords (branching, split, record, ...).
    """
    t0 = time.monotonic()
    result = verify(inst.network, list(inst.props), timeout=timeout, **options)
    seconds = time.monotonic() - t0
    answer = {Status.HOLDS: "unsat", Status.VIOLATED: "sat", Status.TIMEOUT: "timeout",
              Status.UNKNOWN: "unknown", Status.ERROR: "error"}[result.status]
    trace = result.stats.lower_bound_trace
    lower = trace[-1][1] if trace and answer not in DECIDED else math.nan
    x = result.counterexample.x if result.counterexample is not None else None
    extra = {"max_depth": float(result.stats.max_depth), "lp_calls": float(result.stats.lp_calls),
             "milp_calls": float(result.stats.milp_calls)}
    return Outcome(answer, seconds, result.stats.nodes, lower, result.message, extra, x)


# --------------------------------------------------------------------------- MILP loop
@dataclass
class _Tally:
    """Running totals of one MILP decision (mutable; owned by ``decide_by_milp``)."""

    nodes: int = 0
    lower: float = math.inf
    solve_s: float = 0.0
    build_s: float = 0.0


def _solve_disjunct(network: Network, prop: Property, model: MilpModel, backend: Backend,
                    deadline: float, tally: _Tally) -> tuple[MilpAnswer, np.ndarray | None]:
    """Solve one model: first feasible point, then (if it fails the check) to optimality."""
    answer = MilpAnswer("timeout")
    for first in (True, False):
        left = deadline - time.monotonic()
        if left <= 0:
            return MilpAnswer("timeout", bound=answer.bound), None
        t0 = time.monotonic()
        answer = backend(model, left, first)
        tally.solve_s += time.monotonic() - t0
        tally.nodes += answer.nodes
        if answer.status != "feasible" or answer.x is None:
            return answer, None
        cex = validate_counterexample(network, prop, answer.x[model.columns.x])
        if cex is not None:
            return answer, cex.x
    return MilpAnswer("unknown", message="solver points fail the float64 check"), None


def decide_by_milp(inst: LoadedInstance, bounds: list[Bounds], formulation: str,
                   backend: Backend, deadline: float) -> tuple[str, _Tally, str,
                                                              np.ndarray | None]:
    """Decide an instance by one MILP per (property, disjunct); return (answer, totals, msg, x).

    Answers: sat (a checked counterexample), unsat (every model infeasible), or the first
    non-deciding status met (timeout, unknown, error, too large).
    """
    tally = _Tally()
    for prop, bnd in zip(inst.props, bounds, strict=True):
        for k in range(len(prop.unsafe.disjuncts)):
            t0 = time.monotonic()
            model = build_milp(inst.network, prop, bnd, None, formulation, disjunct=k,
                               unsafe_slack=MILP_UNSAT_SLACK)
            tally.build_s += time.monotonic() - t0
            if model.infeasible:
                continue
            answer, x = _solve_disjunct(inst.network, prop, model, backend, deadline, tally)
            if x is not None:
                return "sat", tally, f"disjunct {k}", x
            if answer.status != "infeasible":
                tally.lower = min(tally.lower, answer.bound)
                return answer.status, tally, answer.message, None
    return "unsat", tally, "", None


def milp_runner(backend_name: str, formulation: str, cache: BoundsCache) -> Runner:
    """Return a runner deciding instances with ``backend_name`` on ``formulation`` models."""
    backend = BACKENDS[backend_name]

    def run(inst: LoadedInstance, timeout: float) -> Outcome:
        bounds, bounds_s = cache.get(inst, timeout)
        t0 = time.monotonic()
        deadline = t0 + max(timeout - bounds_s, 0.0)
        answer, tally, msg, x = decide_by_milp(inst, bounds, formulation, backend, deadline)
        seconds = time.monotonic() - t0 + bounds_s
        lower = tally.lower if answer not in DECIDED else math.nan
        extra = {"bounds_s": bounds_s, "build_s": tally.build_s, "solve_s": tally.solve_s}
        return Outcome(answer, seconds, tally.nodes, lower, msg, extra, x)

    return run


# --------------------------------------------------------------------------- backends
def highs_backend(model: MilpModel, time_limit: float, first: bool) -> MilpAnswer:
    """Solve with HiGHS (one thread) through ``bnbver.milp.solve_milp``."""
    sol = solve_milp(model, time_limit, threads=1, first_solution=first)
    if sol.status is LpStatus.INFEASIBLE:
        return MilpAnswer("infeasible", nodes=sol.nodes, bound=math.inf)
    if sol.x is not None:
        return MilpAnswer("feasible", sol.x, sol.nodes, sol.bound)
    status = "timeout" if sol.status is LpStatus.TIME_LIMIT else "error"
    return MilpAnswer(status, nodes=sol.nodes, bound=sol.bound,
                      message="" if status == "timeout" else f"HiGHS status {sol.status.value}")


def _column_vector(model: MilpModel, values: dict[str, float]) -> np.ndarray:
    """Return the model's column vector from a {column name: value} map (0 if missing)."""
    names = model.lp.col_names or tuple(f"c{j}" for j in range(model.lp.num_cols))
    return np.array([values.get(n, 0.0) for n in names], dtype=np.float64)


def scip_backend(model: MilpModel, time_limit: float, first: bool) -> MilpAnswer:
    """Solve the exported MPS model with SCIP (``pyscipopt``, one thread)."""
    import pyscipopt

    with tempfile.TemporaryDirectory() as tmp:
        path = export_milp(model, Path(tmp) / "model.mps")
        m = pyscipopt.Model()
        m.hideOutput()
        m.readProblem(str(path))
    m.setParam("limits/time", max(time_limit, 1e-3))  # SCIP's B&B is single-threaded
    if first:
        m.setParam("limits/solutions", 1)
    m.optimize()
    status, nodes = m.getStatus(), int(m.getNNodes())
    if status == "infeasible":
        return MilpAnswer("infeasible", nodes=nodes, bound=math.inf)
    if m.getNSols() > 0:
        sol = m.getBestSol()
        x = _column_vector(model, {v.name: m.getSolVal(sol, v) for v in m.getVars()})
        return MilpAnswer("feasible", x, nodes, float(m.getDualbound()))
    if status in ("timelimit", "userinterrupt"):
        return MilpAnswer("timeout", nodes=nodes, bound=float(m.getDualbound()))
    return MilpAnswer("error", nodes=nodes, message=f"SCIP status {status}")


#: Gurobi error code of a model beyond the size-limited (pip) licence.
GUROBI_SIZE_LIMIT = 10010


def gurobi_backend(model: MilpModel, time_limit: float, first: bool) -> MilpAnswer:
    """Solve the exported MPS model with Gurobi (``gurobipy``, one thread)."""
    import gurobipy as gp

    try:
        return _gurobi_solve(gp, model, time_limit, first)
    except gp.GurobiError as exc:
        if getattr(exc, "errno", None) == GUROBI_SIZE_LIMIT or "size-limited" in str(exc):
            return MilpAnswer("too large", message=str(exc))
        return MilpAnswer("error", message=f"GurobiError: {exc}")


def _gurobi_solve(gp: Any, model: MilpModel, time_limit: float, first: bool) -> MilpAnswer:
    """Run Gurobi on the exported model (raises ``gp.GurobiError``)."""
    grb = gp.GRB
    with tempfile.TemporaryDirectory() as tmp:
        path = export_milp(model, Path(tmp) / "model.mps")
        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.start()
        m = gp.read(str(path), env)
    m.Params.TimeLimit = max(time_limit, 1e-3)
    m.Params.Threads = 1
    if first:
        m.Params.SolutionLimit = 1
    m.optimize()
    nodes = int(m.NodeCount)
    if m.Status == grb.INFEASIBLE:
        return MilpAnswer("infeasible", nodes=nodes, bound=math.inf)
    bound = _gurobi_bound(gp, m)
    if m.SolCount > 0:
        x = _column_vector(model, {v.VarName: v.X for v in m.getVars()})
        return MilpAnswer("feasible", x, nodes, bound)
    if m.Status == grb.TIME_LIMIT:
        return MilpAnswer("timeout", nodes=nodes, bound=bound)
    return MilpAnswer("error", nodes=nodes, message=f"Gurobi status {m.Status}")


def _gurobi_bound(gp: Any, m: Any) -> float:
    """Return Gurobi's dual bound, -inf when it has none (the attribute then raises)."""
    try:
        return float(m.ObjBound)
    except (gp.GurobiError, AttributeError):
        return -math.inf


BACKENDS: dict[str, Backend] = {
    "highs": highs_backend,
    "scip": scip_backend,
    "gurobi": gurobi_backend,
}

#: backend -> the Python module it needs (checked before a run; absent = skipped).
BACKEND_MODULES = {"highs": "highspy", "scip": "pyscipopt", "gurobi": "gurobipy"}


def milp_solver_name(backend: str, formulation: str) -> str:
    """Return the study name of a MILP configuration, e.g. ``highs-bigm``."""
    return f"{backend}-{formulation}"


#: Extra runners by name (factories taking the shared bounds cache); tests plant fakes here.
EXTRA_RUNNERS: dict[str, Callable[[BoundsCache], Runner]] = {}


def make_runner(name: str, cache: BoundsCache) -> Runner:
    """Return the runner of ``bnbver``, ``BACKEND-FORMULATION`` or an extra runner.

    Raises:
        ValueError: the name is none of these.
        InputError: the formulation is unknown.
    """
    if name in EXTRA_RUNNERS:
        return EXTRA_RUNNERS[name](cache)
    if name == "bnbver":
        return run_bnbver
    backend, _, formulation = name.partition("-")
    if backend not in BACKENDS or not formulation:
        raise ValueError(f"unknown solver {name!r}: expected bnbver or BACKEND-FORMULATION "
                         f"with BACKEND in {sorted(BACKENDS)} (e.g. highs-bigm)")
    parse_formulation(formulation)
    return milp_runner(backend, formulation, cache)


def missing_package(name: str) -> str | None:
    """Return the Python package a solver needs but cannot import (None when usable)."""
    backend = name.partition("-")[0]
    module = BACKEND_MODULES.get(backend)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return module
