r"""Bound tightening by optimisation (Fischetti & Jo 2018; Tjeng et al. 2019).

Layer by layer, for every unstable neuron j of ReLU layer k, minimise and maximise its
pre-activation :math:`z_{k,j}` over a relaxation of the network *before* layer k (whose
ReLU layers already carry tightened bounds):

* ``interval``: plain interval arithmetic (:mod:`bnbver.lp.intervals`);
* ``lp``: the triangle LP relaxation; one HiGHS model per layer, warm-started from neuron to
  neuron (only the cost changes: primal simplex from the last basis);
* ``milp``: the whole LP pass (unless ``lp_pass`` is off), then a second pass with the
  big-M MILP of the prefix per still-unstable neuron under a per-neuron time limit, optionally
  shared among ``jobs`` processes.
* any mode over an L1 ball (``l1_ball``): only the points of the box near a centre count.

Soundness: a tightened value is the Lagrangian bound recomputed in float64 from the LP duals
(:func:`~bnbver.lp.model.lagrangian_bound`), or the MIP dual bound lowered by
``MILP_TIGHTEN_TOL`` (relative) of a model that passed the numerical preconditions of
:func:`~bnbver.lp.numerics.solver_safe` (a MIP bound cannot be re-checked); never a primal
value. Results are intersected with the given
bounds, so they are never looser. Layer 0 is skipped when only one affine layer precedes it
(intervals are then exact).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bnbver.lp.highs import HighsOptions, WarmLp, solve
from bnbver.lp.intervals import (
    SortedRows,
    first_affine,
    interval_bounds,
    l1_ball_interval,
    sort_rows,
)
from bnbver.lp.model import LinearProgram, LpStatus, lagrangian_bound
from bnbver.lp.numerics import solver_safe
from bnbver.lp.relaxation import (
    Bounds,
    Encoders,
    ModelBuilder,
    Splits,
    add_l1_ball,
    as_masks,
    bigm_encoders,
    encode_network,
    lp_encoders,
)
from bnbver.network import Add, Concat, Conv2d, Dense, Network
from bnbver.spec import InputBox

#: The MIP dual bound used for a tightened value is lowered by this times (1 + |value|).
MILP_TIGHTEN_TOL = 1e-6
MODES = ("interval", "lp", "milp")


@dataclass(frozen=True)
class TightenOptions:
    """Options of :func:`tighten_bounds`.

    Attributes:
        mode: ``interval``, ``lp`` or ``milp``.
        deadline: absolute ``time.monotonic()`` after which remaining neurons keep their
            bounds (None: no limit).
        threads: HiGHS threads for the MILP solves.
        milp_time_per_neuron: seconds per MILP solve (``milp`` mode).
        lp_pass: in ``milp`` mode, run the LP pass first (skip it when the given bounds are
            already as tight as the LP's, e.g. alpha-CROWN's optimised intermediate bounds).
        jobs: processes that share a layer's MILP solves (joblib; 1 = in this process).
        layers: the ReLU layers to tighten (None: all); the others keep their bounds up to
            interval propagation.
        l1_ball: optional (centre, radius): tighten over the points of the box within this
            L1 distance of the centre only (an optimisation query's incumbent region: every
            better point lies in it). The first ReLU layer then gets the exact range over
            box and ball (:func:`~bnbver.lp.intervals.l1_ball_interval`), and every LP and
            MILP carries the ball as rows.
        stop_at_sign: end a neuron's MILP as soon as its sign is decided (the dual bound
            passes 0: the neuron is stable on that side; or an incumbent does: no bound on
            that side can make it stable), keeping the dual bound reached, instead of
            spending ``milp_time_per_neuron`` on proving optimality.
        priority: per ReLU layer (n_l,) scores; neurons with higher scores are tightened
            first (None: the widest triangle relaxation first, ``-l u / (u - l)``), so a
            deadline cuts off the neurons that matter least.
    """

    mode: str = "lp"
    deadline: float | None = None
    threads: int = 1
    milp_time_per_neuron: float = 1.0
    lp_pass: bool = True
    jobs: int = 1
    layers: tuple[int, ...] | None = None
    l1_ball: tuple[np.ndarray, float] | None = None
    stop_at_sign: bool = True
    priority: tuple[np.ndarray, ...] | None = None


@dataclass(frozen=True, eq=False)
class TightenResult:
    """Tightened pre-activation bounds (lists of (n_l,) arrays) and counts.

    Attributes:
        lower: per-ReLU-layer lower bounds.
        upper: per-ReLU-layer upper bounds.
        infeasible: True when a solve proved the node empty.
        lp_solves: LP solves run.
        milp_solves: MILP solves run.
        seconds: wall time.
        timed_out: True when the deadline stopped the pass early.
    """

    lower: list[np.ndarray]
    upper: list[np.ndarray]
    infeasible: bool = False
    lp_solves: int = 0
    milp_solves: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    stats: dict[str, float] = field(default_factory=dict)


def _prefix_program(network: Network, box: InputBox, k: int, lower: list[np.ndarray],
                    upper: list[np.ndarray], masks: list[np.ndarray] | None,
                    enc: Encoders, ball: tuple[np.ndarray, float] | None = None
                    ) -> tuple[LinearProgram, np.ndarray, bool]:
    """Encode the layers before ReLU layer k (and the L1 ball, if any); return the
    program, z columns and emptiness."""
    prefix = network.relu_input_prefix(k)
    b = ModelBuilder()
    x, z, _ = encode_network(b, prefix, box, (lower[:k], upper[:k]),
                             None if masks is None else masks[:k], enc)
    if ball is not None:
        add_l1_ball(b, x, *ball)
    return b.finish(np.zeros(b.n_cols)), z, b.infeasible


def _exact_first(network: Network) -> bool:
    """True when a single affine layer precedes the first ReLU (intervals are exact there)."""
    pos = network.relu_positions[0]
    before = network.layers[:pos]
    return (sum(isinstance(layer, (Dense, Conv2d)) for layer in before) <= 1
            and not any(isinstance(layer, (Add, Concat)) for layer in before))


def _ball_first(network: Network, opts: TightenOptions) -> bool:
    """True when the first layer's range over box and ball is exact (``l1_ball_cut``)."""
    return opts.l1_ball is not None and first_affine(network) is not None


def l1_ball_cut(network: Network, box: InputBox, lo: list[np.ndarray], hi: list[np.ndarray],
                ball: tuple[np.ndarray, float], rows: SortedRows | None = None) -> None:
    """Intersect (in place) the first ReLU layer's bounds with their exact range over the
    box cut to the L1 ball; no-op unless one affine layer precedes that layer.

    ``rows``: the first layer's rows already sorted (:func:`sort_rows`), for callers that cut
    many times. A centre outside the box moves onto it: for x in the box that only shortens
    every ``|x_i - c_i|``, so the ball of the same radius still holds every point of the region.
    """
    if rows is None:
        first = first_affine(network)
        if first is None:
            return
        rows = sort_rows(*first)
    centre, radius = ball
    b_lo, b_hi = l1_ball_interval(rows, box.lower, box.upper,
                                  np.clip(centre, box.lower, box.upper), radius)
    lo[0], hi[0] = np.maximum(lo[0], b_lo), np.minimum(hi[0], b_hi)


def _targets(lo: np.ndarray, hi: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    free = (lo < 0) & (hi > 0)
    if mask is not None:
        free &= mask == 0
    return np.flatnonzero(free)


def _order(todo: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           priority: np.ndarray | None) -> np.ndarray:
    """Return the neurons ``todo`` with the highest priority (or widest relaxation) first."""
    if priority is None:
        score = -lo[todo] * hi[todo] / np.maximum(hi[todo] - lo[todo], 1e-300)
    else:
        score = np.asarray(priority, dtype=np.float64)[todo]
    return todo[np.argsort(-score, kind="stable")]


def _lp_layer(lp: LinearProgram, z: np.ndarray, todo: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, deadline: float) -> tuple[int, bool, bool]:
    """Tighten lo/hi (in place) of neurons ``todo`` by warm-started LPs; return counts."""
    warm = WarmLp(lp, HighsOptions(presolve=False, simplex_strategy=4))
    solves = 0
    for j in todo:
        for sign in (1.0, -1.0):
            if time.monotonic() > deadline:
                return solves, False, True
            cost = np.zeros(lp.num_cols)
            cost[z[j]] = sign
            warm.set_cost(cost)
            sol = warm.run()
            solves += 1
            if sol.status is LpStatus.INFEASIBLE:
                ray = warm.dual_ray()
                cur = warm.current_lp()
                if ray is not None and any(lagrangian_bound(cur, s * ray, 0 * cost) > 0
                                           for s in (1.0, -1.0)):
                    return solves, True, False
                continue
            if sol.row_duals is None:
                continue
            val = lagrangian_bound(warm.current_lp(), sol.row_duals)
            if sign > 0:
                lo[j] = max(lo[j], val)
            else:
                hi[j] = min(hi[j], -val)
    return solves, False, False


def _milp_layer(lp: LinearProgram, z: np.ndarray, todo: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, deadline: float, opts: TightenOptions) -> tuple[int, bool, bool]:
    """Tighten lo/hi (in place) by the MIP dual bounds of per-neuron big-M MILPs, in
    ``opts.jobs`` processes (neurons dealt round-robin, so each gets a share of the hard
    ones)."""
    safe = solver_safe(lp)
    if not safe.trusted:
        return 0, False, False
    lp = safe.lp
    if opts.jobs <= 1 or todo.size < 2:
        return _milp_neurons(lp, z, todo, lo, hi, deadline, opts)
    from joblib import Parallel, delayed

    parts = [todo[i::opts.jobs] for i in range(min(opts.jobs, todo.size))]
    out = Parallel(n_jobs=len(parts), backend="loky")(
        delayed(_milp_part)(lp, z, part, lo, hi, deadline, opts) for part in parts)
    solves, infeasible, timed_out = 0, False, False
    for part, (p_lo, p_hi, n, inf, late) in zip(parts, out, strict=True):
        lo[part], hi[part] = np.maximum(lo[part], p_lo), np.minimum(hi[part], p_hi)
        solves, infeasible, timed_out = solves + n, infeasible or inf, timed_out or late
    return solves, infeasible, timed_out


def _milp_part(lp: LinearProgram, z: np.ndarray, part: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, deadline: float, opts: TightenOptions
               ) -> tuple[np.ndarray, np.ndarray, int, bool, bool]:
    """One process's share of :func:`_milp_layer`: the bounds of ``part`` and the counts."""
    lo, hi = lo.copy(), hi.copy()
    n, infeasible, timed_out = _milp_neurons(lp, z, part, lo, hi, deadline, opts)
    return lo[part], hi[part], n, infeasible, timed_out


def _sign_decided(dual: float, incumbent: float) -> bool:
    """Stop rule of a neuron's MILP (min +z or min -z): the sign of z is settled."""
    return dual > 0.0 or incumbent < 0.0


def _milp_neurons(lp: LinearProgram, z: np.ndarray, todo: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray, deadline: float, opts: TightenOptions
                  ) -> tuple[int, bool, bool]:
    """Tighten lo/hi (in place) of neurons ``todo``, one MILP per neuron and direction."""
    solves = 0
    for j in todo:
        for sign in (1.0, -1.0):
            left = deadline - time.monotonic()
            if left <= 0:
                return solves, False, True
            cost = np.zeros(lp.num_cols)
            cost[z[j]] = sign
            limit = min(opts.milp_time_per_neuron, left)
            stop = _sign_decided if opts.stop_at_sign else None
            sol = solve(replace(lp, c=cost), HighsOptions(time_limit=limit, threads=opts.threads),
                        stop)
            solves += 1
            if sol.status is LpStatus.INFEASIBLE:
                return solves, True, False
            if not np.isfinite(sol.bound):
                continue
            val = sol.bound - MILP_TIGHTEN_TOL * (1.0 + abs(sol.bound))
            if sign > 0:
                lo[j] = max(lo[j], val)
            else:
                hi[j] = min(hi[j], -val)
    return solves, False, False


def _validate_mode(mode: str) -> None:
    if mode not in MODES:
        from bnbver.errors import InputError

        raise InputError("--tighten", f"unknown mode '{mode}' (expected one of {MODES})")


def _pass(network: Network, box: InputBox, lo: list[np.ndarray], hi: list[np.ndarray],
          masks: list[np.ndarray] | None, name: str, deadline: float, opts: TightenOptions
          ) -> tuple[list[np.ndarray], list[np.ndarray], int, bool, bool]:
    """Run one layer-by-layer pass (``lp`` or ``milp``); return bounds, solves, flags."""
    solves, infeasible, timed_out = 0, False, False
    enc = lp_encoders() if name == "lp" else bigm_encoders()
    for k in range(len(lo)):
        if infeasible or timed_out:
            break
        if (opts.layers is not None and k not in opts.layers) or (
                k == 0 and (_exact_first(network) or _ball_first(network, opts))):
            continue
        lp, z, empty = _prefix_program(network, box, k, lo, hi, masks, enc, opts.l1_ball)
        if empty:
            return lo, hi, solves, True, False
        todo = _order(_targets(lo[k], hi[k], None if masks is None else masks[k]), lo[k],
                      hi[k], None if opts.priority is None else opts.priority[k])
        if name == "lp":
            n, infeasible, timed_out = _lp_layer(lp, z, todo, lo[k], hi[k], deadline)
        else:
            n, infeasible, timed_out = _milp_layer(lp, z, todo, lo[k], hi[k], deadline, opts)
        solves += n
        lo, hi, _ = interval_bounds(network, box.lower, box.upper, (lo, hi), masks)
    return lo, hi, solves, infeasible, timed_out


def tighten_bounds(
    network: Network, box: InputBox, bounds: Bounds | None = None, splits: Splits = None,
    options: TightenOptions | None = None,
) -> TightenResult:
    """Return per-ReLU-layer pre-activation bounds tightened by the chosen mode.

    ``milp`` runs the whole LP pass first (unless ``options.lp_pass`` is off), then the
    MILP pass with the time left, so a deadline that stops the MILP pass still leaves every
    layer LP-tightened.

    Args:
        network: the network.
        box: the input box of the node.
        bounds: optional valid bounds to start from (the result is never looser).
        splits: the node's splits (split neurons are not tightened).
        options: mode, deadline and threads.

    Returns:
        The :class:`TightenResult`.
    """
    opts = options or TightenOptions()
    _validate_mode(opts.mode)
    t0 = time.monotonic()
    deadline = np.inf if opts.deadline is None else opts.deadline
    masks = as_masks(splits, network.relu_sizes)
    lo, hi, _ = interval_bounds(network, box.lower, box.upper, bounds, masks)
    if opts.l1_ball is not None:
        l1_ball_cut(network, box, lo, hi, opts.l1_ball)
        lo, hi, _ = interval_bounds(network, box.lower, box.upper, (lo, hi), masks)
    counts = {"lp": 0, "milp": 0}
    infeasible = any(bool(np.any(a > b)) for a, b in zip(lo, hi, strict=True))
    timed_out = False
    passes = {"interval": [], "lp": ["lp"],
              "milp": ["lp", "milp"] if opts.lp_pass else ["milp"]}[opts.mode]
    for name in passes:
        if infeasible or timed_out:
            break
        lo, hi, n, infeasible, timed_out = _pass(network, box, lo, hi, masks, name,
                                                 deadline, opts)
        counts[name] += n
    return TightenResult(lo, hi, infeasible, counts["lp"], counts["milp"],
                         time.monotonic() - t0, timed_out)


def count_unstable(lower: Sequence[np.ndarray], upper: Sequence[np.ndarray]) -> int:
    """Return the number of neurons with lower < 0 < upper."""
    return int(sum(int(np.sum((a < 0) & (b > 0))) for a, b in zip(lower, upper, strict=True)))
