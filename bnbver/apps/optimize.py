r"""Exact optimisation over a ReLU network: a best-bound BaB, and the full MILP for comparison.

The seed papers (Fischetti & Jo 2018; Aftabi et al. 2024) use the 0-1 MILP of a network to
*optimise*, not only to decide. An :class:`Problem` states such a query as

.. math::
    \min_x\; g(x, f(x)) \quad\text{s.t.}\quad x \in X,\; h(f(x)) \ge 0,

where g and h are linear in x, the network's pre-activations and outputs, plus auxiliary
columns the problem adds itself (e.g. :math:`d_i \ge |x_i - x^0_i|` for an L1 distance).

**Best-bound BaB** (:func:`minimize`). A node is a set of ReLU splits (per-layer masks, +1
active / -1 inactive / 0 free). Its lower bound is the triangle LP relaxation of the node
with the problem's objective (one warm-started :class:`~bnbver.lp.relaxation.NodeLp` for the
whole tree; a child changes bounds only), read soundly through
:attr:`~bnbver.lp.relaxation.LpBound.lower` (the Lagrangian bound recomputed in float64 from
the duals). Nodes are popped in order of their parent's bound. Pruning: a node whose bound is
at least ``incumbent - tol`` cannot hold a better point. Branching: the free neuron whose
triangle is most violated at the LP point (:math:`a^* - \max(z^*, 0)`).

Incumbents come only from points whose float64 forward pass satisfies the problem
(:meth:`Problem.evaluate`): the LP point itself, and the *pattern LP* of its activation
pattern (every ReLU and max-pool winner fixed to the pattern of the point, so the network is
affine and the LP is exact on that linear region), solved with the output constraints tightened
by ``CONSTRAINT_SLACKS`` so that the point still passes the exact check after solver tolerances.

**Objective radius.** Once an incumbent of value v exists, every better point lies within
``Problem.radius(v)`` of the problem's centre in every coordinate (for a distance objective
:math:`|x_i - x^0_i| \le \|x - x^0\| < v`). Nodes re-propagate intervals on the box cut to
that radius, with their splits, before the LP, so the triangles tighten as the incumbent
improves. This is sound for the reported bound because the global bound is
``min(incumbent, open node bounds)``: a point outside the radius is worse than the incumbent.

**Leaves.** A node with no free neuron left whose LP is still inexact (max pooling, which the
LP only relaxes) is solved as a MILP (big-M, one binary per pooled input) under a time limit;
its MIP dual bound, lowered by ``MILP_BOUND_TOL`` relative, stays in the global bound when the
limit stops it.

**Statuses.** ``optimal``: the gap ``incumbent - bound`` is at most
``max(gap_abs, gap_rel * |incumbent|)``; ``infeasible``: every node was proven empty;
``feasible``: the time limit stopped the search with an incumbent; ``timeout``: it stopped
without one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np

from bnbver.errors import InputError
from bnbver.lp.highs import HighsOptions, solve
from bnbver.lp.intervals import first_affine, interval_bounds, sort_rows
from bnbver.lp.model import LinearProgram, LpSolution, LpStatus
from bnbver.lp.relaxation import (
    ColumnMap,
    Encoders,
    LpBound,
    ModelBuilder,
    NodeLp,
    Relaxation,
    ReluRows,
    encode_network,
    fix_stable,
    lp_encoders,
    pool_windows,
)
from bnbver.lp.tighten import TightenOptions, count_unstable, l1_ball_cut, tighten_bounds
from bnbver.milp import milp_encoders, parse_formulation
from bnbver.network import MaxPool2d, Network, ReLU, apply_layer
from bnbver.spec import InputBox

log = logging.getLogger(__name__)

#: Output constraints of heuristic (pattern) LPs are tightened by these (tried in order), so
#: that their points pass the exact float64 check despite HiGHS's feasibility tolerance (1e-7).
CONSTRAINT_SLACKS = (1e-6, 1e-4)
#: A triangle violated by at most this at the LP point is treated as exact.
VIOLATION_TOL = 1e-7
#: A MIP dual bound is lowered by this times (1 + |bound|) before it is trusted.
MILP_BOUND_TOL = 1e-6
TIGHTEN_MODES = ("none", "interval", "lp", "milp")

Bounds = tuple[list[np.ndarray], list[np.ndarray]]
Terms = list[tuple[np.ndarray, np.ndarray]]


class OptStatus(Enum):
    """The outcome of an optimisation (see the module docstring)."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    TIMEOUT = "timeout"


class Problem(Protocol):
    """An optimisation query over a network (see the module docstring)."""

    def add_terms(self, b: ModelBuilder, columns: ColumnMap, slack: float) -> tuple[Terms, float]:
        """Add the problem's columns and rows; return objective terms (cols, coefs) and offset.

        ``slack`` tightens the output constraints (0 for bounds, > 0 for heuristic LPs).
        """
        ...

    def evaluate(self, network: Network, x: np.ndarray) -> float | None:
        """Return the objective of x from a float64 forward pass, or None if x is infeasible."""
        ...

    def radius(self, incumbent: float, columns: ColumnMap, col_upper: np.ndarray) -> float:
        """Return r such that every point better than ``incumbent`` has |x - centre| <= r."""
        ...

    def centre(self) -> np.ndarray | None:
        """Return the centre that :meth:`radius` refers to (None: no radius)."""
        ...

    def radius_norm(self) -> str:
        """Return the norm :meth:`radius` is measured in: ``l1`` or ``linf``."""
        ...


@dataclass(frozen=True)
class OptimizeOptions:
    """Options of :func:`minimize` and :func:`solve_full_milp`.

    Attributes:
        time_limit: seconds for the whole call (tightening included).
        tighten: root bound tightening: ``none`` (interval arithmetic on the domain, the least
            any encoding needs), ``interval`` (also re-propagated per node with the node's
            splits and the incumbent radius), ``lp`` or ``milp`` (optimisation-based, see
            :mod:`bnbver.lp.tighten`, plus the per-node intervals).
        tighten_share: the largest share of ``time_limit`` tightening may use.
        milp_time_per_neuron: seconds per neuron MILP in ``milp`` tightening.
        gap_abs: absolute optimality gap at which the search stops.
        gap_rel: relative optimality gap (times |incumbent|) at which the search stops.
        leaf_milp_seconds: time limit of one leaf MILP (max-pool networks).
        max_nodes: node limit (status ``feasible``/``timeout`` when reached).
        threads: HiGHS threads.
    """

    time_limit: float = 60.0
    tighten: str = "lp"
    tighten_share: float = 0.5
    milp_time_per_neuron: float = 1.0
    gap_abs: float = 1e-5
    gap_rel: float = 1e-4
    leaf_milp_seconds: float = 10.0
    max_nodes: int = 1_000_000
    threads: int = 1


@dataclass(frozen=True, eq=False)
class OptimizeResult:
    """The answer of :func:`minimize` or :func:`solve_full_milp` (minimisation sense).

    Attributes:
        status: see :class:`OptStatus`.
        x: (n_in,) the best input found (checked by a float64 forward pass), or None.
        objective: its objective value (+inf without one).
        bound: a proven lower bound on the optimum (+inf when infeasible).
        seconds: wall time of the call.
        method: ``bab`` or ``milp:<formulation>``.
        nodes: BaB nodes bounded (or MIP nodes).
        lp_solves: LP solves (BaB), tightening excluded.
        tighten_seconds: time spent tightening root bounds.
        unstable: unstable neurons after tightening.
        stats: other counters.
    """

    status: OptStatus
    x: np.ndarray | None
    objective: float
    bound: float
    seconds: float
    method: str = "bab"
    nodes: int = 0
    lp_solves: int = 0
    tighten_seconds: float = 0.0
    unstable: int = 0
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Return ``objective - bound`` (0 when infeasible, +inf without an incumbent)."""
        if self.status is OptStatus.INFEASIBLE:
            return 0.0
        return float(self.objective - self.bound) if self.x is not None else np.inf


def validate_tighten(mode: str) -> None:
    """Raise InputError unless ``mode`` is one of ``TIGHTEN_MODES``."""
    if mode not in TIGHTEN_MODES:
        raise InputError("--tighten", f"unknown mode '{mode}' (expected one of "
                         f"{', '.join(TIGHTEN_MODES)})")


def root_bounds(network: Network, box: InputBox, options: OptimizeOptions,
                deadline: float, ball: tuple[np.ndarray, float] | None = None
                ) -> tuple[Bounds, bool]:
    """Return per-ReLU-layer pre-activation bounds on ``box`` and whether the box is empty.

    With ``ball`` (centre, L1 radius) the bounds hold only for the points of the box within
    the ball (``interval``, ``lp`` and ``milp`` modes; ``none`` ignores it): pass it only
    when every point that matters lies there.
    """
    validate_tighten(options.tighten)
    if options.tighten == "none" or (options.tighten == "interval" and ball is None):
        lo, hi, _ = interval_bounds(network, box.lower, box.upper)
        empty = any(bool(np.any(a > b)) for a, b in zip(lo, hi, strict=True))
        return (lo, hi), empty
    t_opts = TightenOptions(mode=options.tighten, deadline=deadline, threads=options.threads,
                            milp_time_per_neuron=options.milp_time_per_neuron, l1_ball=ball)
    res = tighten_bounds(network, box, options=t_opts)
    return (res.lower, res.upper), res.infeasible


def has_pooling(network: Network) -> bool:
    """True when the network has a max-pooling layer (its LP is a relaxation)."""
    return any(isinstance(layer, MaxPool2d) for layer in network.layers)


def encode_problem(
    network: Network, box: InputBox, bounds: Bounds | None, masks: Sequence[np.ndarray] | None,
    enc: Encoders, problem: Problem, slack: float,
) -> tuple[LinearProgram, ColumnMap, bool]:
    """Encode network and problem into one program; return it, its columns and emptiness."""
    b = ModelBuilder()
    x, y, relus = encode_network(b, network, box, bounds, masks, enc)
    columns = ColumnMap(x, y, tuple(relus))
    terms, offset = problem.add_terms(b, columns, slack)
    cost = np.zeros(b.n_cols)
    for cols, coefs in terms:
        np.add.at(cost, np.asarray(cols, dtype=np.int64), coefs)
    lp = b.finish(cost, offset)
    return lp, columns, b.infeasible or bool(np.any(lp.col_lower > lp.col_upper))


def _tol(incumbent: float, options: OptimizeOptions) -> float:
    return max(options.gap_abs, options.gap_rel * abs(incumbent)) if np.isfinite(
        incumbent) else 0.0


def activation_pattern(
    network: Network, x: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return the ReLU split masks (+1 where z >= 0) and max-pool winners at the point x.

    Returns:
        Per ReLU layer an (n_l,) int8 mask, and per max-pool layer the (n_out,) position of
        each window's winner (the first maximum, as ``argmax`` picks it).
    """
    vals = [np.asarray(x, dtype=np.float64).reshape(1, -1)]
    masks: list[np.ndarray] = []
    winners: list[np.ndarray] = []
    for layer, ins in zip(network.layers, network.inputs, strict=True):
        h = vals[ins[0] + 1]
        if isinstance(layer, MaxPool2d):
            idx = layer.window_indices()
            padded = np.concatenate([h, np.full((1, 1), -np.inf)], axis=1)[0]
            pos = np.argmax(padded[idx], axis=1)
            winners.append(pos)
            h = padded[idx][np.arange(idx.shape[0]), pos][None, :]
        elif isinstance(layer, ReLU):
            masks.append(np.where(h[0] >= 0.0, 1, -1).astype(np.int8))
            h = np.maximum(h, 0.0)
        else:
            h = apply_layer(layer, [vals[t + 1] for t in ins])
        vals.append(h)
    return masks, winners


def pattern_encoders(winners: Sequence[np.ndarray]) -> Encoders:
    """Return encoders that fix every ReLU by its mask and every pool to its winner (exact)."""
    queue = list(winners)

    def relu(b: ModelBuilder, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, m: np.ndarray,
             src: object) -> ReluRows:
        a = fix_stable(b, z, m > 0, m <= 0)
        zl, zh = b.bounds(z)
        none = np.full(z.size, -1, dtype=np.int64)
        return ReluRows(z, a, none, none, none, zl, zh, np.zeros(z.size, dtype=bool))

    def pool(b: ModelBuilder, layer: MaxPool2d, cols: np.ndarray) -> np.ndarray:
        win, _, _, _, _ = pool_windows(b, layer, cols)
        pos = queue.pop(0)
        n = win.shape[0]
        best: np.ndarray = win[np.arange(n), pos]
        others = win.copy()
        others[np.arange(n), pos] = -1
        o, j = np.nonzero(others >= 0)
        if o.size:
            r2 = np.repeat(np.arange(o.size), 2)
            b.add_rows(r2, np.stack([best[o], others[o, j]], 1).ravel(),
                       np.tile([1.0, -1.0], o.size), np.zeros(o.size), np.full(o.size, np.inf))
        return best

    return Encoders(relu=relu, maxpool=pool)


def pattern_point(
    network: Network, box: InputBox, problem: Problem, x: np.ndarray, deadline: float,
    threads: int = 1,
) -> tuple[np.ndarray, float] | None:
    """Return the best checked point of the linear region of x (its pattern LP), or None.

    The LP fixes x's activation pattern, so the network is affine on its feasible set and its
    optimum is a local optimum of the problem; the output constraints carry
    ``CONSTRAINT_SLACKS`` and the point is re-checked by :meth:`Problem.evaluate`.
    """
    masks, winners = activation_pattern(network, x)
    for slack in CONSTRAINT_SLACKS:
        lp, columns, empty = encode_problem(network, box, None, masks,
                                            pattern_encoders(winners), problem, slack)
        left = deadline - time.monotonic()
        if empty or left <= 0:
            return None
        sol = solve(lp, HighsOptions(time_limit=left, threads=threads))
        if sol.x is None:
            return None
        cand = np.clip(sol.x[columns.x], box.lower, box.upper)
        value = problem.evaluate(network, cand)
        if value is not None:
            return cand, value
    return None


def _pattern_key(network: Network, x: np.ndarray) -> bytes:
    masks, winners = activation_pattern(network, x)
    return b"".join(a.tobytes() for a in (*masks, *winners))


@dataclass(frozen=True, eq=False)
class _Node:
    """A BaB node: per-ReLU-layer split masks (+1 active, -1 inactive, 0 free)."""

    masks: tuple[np.ndarray, ...]
    depth: int = 0


class _Incumbent:
    """The best checked point so far and the activation patterns already improved by LP."""

    def __init__(self, network: Network, box: InputBox, problem: Problem, deadline: float,
                 threads: int) -> None:
        self.network, self.box, self.problem = network, box, problem
        self.deadline, self.threads = deadline, threads
        self.x: np.ndarray | None = None
        self.value = np.inf
        self.seen: set[bytes] = set()
        self.lp_solves = 0

    def offer(self, x: np.ndarray) -> None:
        """Check x (and its pattern LP's optimum) as incumbents."""
        cand = np.clip(x, self.box.lower, self.box.upper)
        value = self.problem.evaluate(self.network, cand)
        if value is not None and value < self.value:
            self.x, self.value = cand, value
        key = _pattern_key(self.network, cand)
        if key in self.seen or time.monotonic() > self.deadline:
            return
        self.seen.add(key)
        self.lp_solves += 1
        found = pattern_point(self.network, self.box, self.problem, cand, self.deadline,
                              self.threads)
        if found is not None and found[1] < self.value:
            self.x, self.value = found

    def ball(self, bounds: Bounds) -> tuple[np.ndarray, float] | None:
        """Return (centre, L1 radius) holding every point better than the incumbent, or None
        (no incumbent, no centre, or a problem whose radius is not an L1 distance).

        ``bounds`` only serve the problem's radius (a visualisation's reads the unit's
        upper bound from them).
        """
        centre = self.problem.centre()
        if centre is None or self.x is None or self.problem.radius_norm() != "l1":
            return None
        lp, columns, _ = encode_problem(self.network, self.box, bounds, None, lp_encoders(),
                                        self.problem, 0.0)
        radius = self.problem.radius(self.value, columns, lp.col_upper)
        return (centre, radius) if np.isfinite(radius) else None


class _Search:
    """The state of one best-bound search (a stateful resource, like ``bab.node.Frontier``)."""

    def __init__(self, network: Network, box: InputBox, problem: Problem,
                 options: OptimizeOptions, bounds: Bounds, deadline: float,
                 incumbent: _Incumbent) -> None:
        self.network, self.box, self.problem = network, box, problem
        self.options, self.bounds, self.deadline = options, bounds, deadline
        lp, self.columns, empty = encode_problem(network, box, bounds, None,
                                                 lp_encoders(reserve=True), problem, 0.0)
        self.empty = empty
        self.node_lp = NodeLp(Relaxation(lp, self.columns, empty),
                              HighsOptions(presolve=False, threads=options.threads))
        self.col_upper = lp.col_upper
        self.incumbent = incumbent
        self.heap: list[tuple[float, int, _Node]] = []
        self.counter = itertools.count()
        self.closed_min = np.inf  # least bound of a node closed with a bound (pruned/unresolved)
        self.nodes = 0
        self.lp_solves = 0
        self.leaf_milps = 0
        self.per_node = options.tighten != "none"
        self.tri_rows = np.concatenate([r.row_tri[r.reserved] for r in self.columns.relus]
                                       or [np.zeros(0, np.int64)])
        first = first_affine(network) if problem.radius_norm() == "l1" else None
        self.first = None if first is None else sort_rows(*first)
        self.ball: tuple[float, Bounds] | None = None

    @property
    def best_x(self) -> np.ndarray | None:
        return self.incumbent.x

    @property
    def best_v(self) -> float:
        return float(self.incumbent.value)

    def offer(self, x: np.ndarray) -> None:
        """Check x (and its pattern LP's optimum) as incumbents."""
        self.incumbent.offer(x)

    def tol(self) -> float:
        return _tol(self.best_v, self.options)

    def node_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box cut to the incumbent's radius (the whole box before one exists)."""
        lo, hi = self.box.lower, self.box.upper
        centre = self.problem.centre()
        if not self.per_node or centre is None or not np.isfinite(self.best_v):
            return lo, hi
        r = self.problem.radius(self.best_v, self.columns, self.col_upper)
        return np.maximum(lo, centre - r), np.minimum(hi, centre + r)

    def ball_bounds(self, lo: np.ndarray, hi: np.ndarray) -> Bounds:
        """Return the root bounds with the first ReLU layer's cut to the incumbent's L1 ball.

        With an L1 radius r (every better point has ``||x - centre||_1 <= r``), the first
        layer's pre-activations range over the box cut to that ball
        (:func:`~bnbver.lp.intervals.l1_ball_interval`), far less than over the box when
        r is a few pixels' worth: on MNIST the whole box is ``[0, 1]^784``. Recomputed only
        when the incumbent improves (the rows' sort is done once, in ``__init__``).
        """
        centre = self.problem.centre()
        if self.first is None or centre is None or not np.isfinite(self.best_v):
            return self.bounds
        if self.ball is None or self.ball[0] != self.best_v:
            r = self.problem.radius(self.best_v, self.columns, self.col_upper)
            lows, ups = list(self.bounds[0]), list(self.bounds[1])
            l1_ball_cut(self.network, InputBox(lo, hi), lows, ups, (centre, r), self.first)
            self.ball = (self.best_v, (lows, ups))
        return self.ball[1]

    def node_bounds(self, node: _Node) -> tuple[np.ndarray, np.ndarray, Bounds] | None:
        """Return the node's input box and pre-activation bounds, or None when it is empty."""
        lo, hi = self.node_box()
        if np.any(lo > hi):
            return None
        if not self.per_node:
            return lo, hi, self.bounds
        given = self.ball_bounds(lo, hi)
        pl, ph, _ = interval_bounds(self.network, lo, hi, given, list(node.masks))
        if any(bool(np.any(a > b)) for a, b in zip(pl, ph, strict=True)):
            return None
        return lo, hi, (pl, ph)

    def close(self, lower: float) -> None:
        """Remember the bound of a node that leaves the search without being split."""
        self.closed_min = min(self.closed_min, lower)

    def push(self, node: _Node, lower: float) -> None:
        heapq.heappush(self.heap, (lower, next(self.counter), node))

    def global_bound(self) -> float:
        """Return min(incumbent, open node bounds, closed node bounds): a valid lower bound."""
        open_min = self.heap[0][0] if self.heap else np.inf
        return float(min(self.best_v, open_min, self.closed_min))


def _branch_choice(search: _Search, node: _Node, x: np.ndarray,
                   bounds: Bounds) -> tuple[int, int] | None:
    """Return the free neuron (layer, unit) whose triangle the LP point violates most."""
    best, choice = VIOLATION_TOL, None
    for k, r in enumerate(search.columns.relus):
        free = r.reserved & (node.masks[k] == 0) & (bounds[0][k] < 0) & (bounds[1][k] > 0)
        if not free.any():
            continue
        viol = np.where(free, x[np.maximum(r.a, 0)] - np.maximum(x[r.z], 0.0), -np.inf)
        j = int(np.argmax(viol))
        if viol[j] > best:
            best, choice = float(viol[j]), (k, j)
    return choice


def _children(node: _Node, k: int, j: int) -> list[_Node]:
    out = []
    for state in (1, -1):
        masks = [m.copy() for m in node.masks]
        masks[k][j] = state
        out.append(_Node(tuple(masks), node.depth + 1))
    return out


def _leaf_milp(search: _Search, node: _Node, lo: np.ndarray, hi: np.ndarray,
               bounds: Bounds, lower: float) -> None:
    """Solve a node whose LP is exact in its ReLUs but not optimal, by its big-M MILP."""
    left = min(search.options.leaf_milp_seconds, search.deadline - time.monotonic())
    if left <= 0:
        search.close(lower)
        return
    lp, columns, empty = encode_problem(search.network, InputBox(lo, hi), bounds,
                                        list(node.masks), milp_encoders("bigm", []),
                                        search.problem, 0.0)
    if empty:
        return
    search.leaf_milps += 1
    sol = solve(lp, HighsOptions(time_limit=left, threads=search.options.threads,
                                 mip_rel_gap=search.options.gap_rel))
    if sol.status is LpStatus.INFEASIBLE:
        return
    if sol.x is not None:
        search.offer(sol.x[columns.x])
    mip_lower = sol.bound - MILP_BOUND_TOL * (1.0 + abs(sol.bound))
    search.close(max(lower, mip_lower) if np.isfinite(sol.bound) else lower)


def _expand(search: _Search, node: _Node, parent_lower: float) -> None:
    """Bound one node, offer its LP point, then prune, branch or solve it as a leaf."""
    got = search.node_bounds(node)
    if got is None:
        return
    lo, hi, bounds = got
    search.node_lp.warm.set_col_bounds(search.columns.x, lo, hi)
    # NodeLp only rewrites the triangles of free neurons: a neuron fixed here would keep the
    # triangle of the last node where it was free, whose bounds need not hold in this node.
    # Relax them all (a fixed neuron is exact without it); NodeLp then sets the free ones.
    k = search.tri_rows.size
    search.node_lp.warm.set_row_bounds(search.tri_rows, np.full(k, -np.inf), np.full(k, np.inf))
    # The LP gets the time left (a root LP over 784 inputs can take tens of seconds); one it
    # stops is not optimal and closes the node with its parent's bound.
    left = max(search.deadline - time.monotonic(), 1e-3)
    res: LpBound = search.node_lp.bound(list(node.masks), bounds[0], bounds[1], left)
    search.nodes += 1
    search.lp_solves += 1
    if res.status is LpStatus.INFEASIBLE:
        return
    lower = max(parent_lower, res.lower)
    if res.x is None or res.status is not LpStatus.OPTIMAL:
        search.close(lower)
        return
    if lower < search.best_v - search.tol():
        search.offer(res.x[search.columns.x])
    if lower >= search.best_v - search.tol():
        search.close(lower)
        return
    choice = _branch_choice(search, node, res.x, bounds)
    if choice is None:
        _leaf_milp(search, node, lo, hi, bounds, lower)
        return
    for child in _children(node, *choice):
        search.push(child, lower)


def _run(search: _Search) -> None:
    """Pop nodes best-bound first until the gap closes, the tree empties or time runs out."""
    while search.heap:
        if time.monotonic() > search.deadline or search.nodes >= search.options.max_nodes:
            return
        if search.best_v - search.global_bound() <= search.tol():
            return
        lower, _, node = heapq.heappop(search.heap)
        if lower >= search.best_v - search.tol():
            search.close(lower)
            continue
        _expand(search, node, lower)


def _status(best_x: np.ndarray | None, gap: float, tol: float, exhausted: bool) -> OptStatus:
    if best_x is None:
        return OptStatus.INFEASIBLE if exhausted else OptStatus.TIMEOUT
    return OptStatus.OPTIMAL if gap <= tol else OptStatus.FEASIBLE


def _root_bounds(network: Network, box: InputBox, options: OptimizeOptions, deadline: float,
                 incumbent: _Incumbent) -> tuple[Bounds, bool]:
    """Return the root's bounds, tightened over the incumbent's L1 ball when there is one.

    Every point better than the incumbent lies in its ball, and the global bound is
    ``min(incumbent, node bounds)``, so bounds that hold only inside the ball are sound for
    the search. The ball holds the incumbent itself, so "empty" there can only be a
    solver's tolerance: the bounds are then recomputed on the whole box.
    """
    if options.tighten == "none":
        return root_bounds(network, box, options, deadline)
    plain, empty = interval_bounds(network, box.lower, box.upper)[:2], False
    ball = incumbent.ball(plain)
    if ball is not None:
        bounds, empty = root_bounds(network, box, options, deadline, ball)
        if not empty:
            return bounds, False
    return root_bounds(network, box, options, deadline)


def minimize(
    network: Network, box: InputBox, problem: Problem, options: OptimizeOptions | None = None,
    initial_points: Sequence[np.ndarray] = (),
) -> OptimizeResult:
    """Solve ``problem`` exactly by best-bound BaB (see the module docstring).

    Args:
        network: the network.
        box: the input domain.
        problem: the objective and constraints.
        options: limits, gaps and the bound tightening mode.
        initial_points: inputs to try as incumbents first (any heuristic's points).

    Returns:
        The :class:`OptimizeResult`; ``bound`` is a valid lower bound of the optimum.
    """
    opts = options or OptimizeOptions()
    t0 = time.monotonic()
    deadline = t0 + opts.time_limit
    incumbent = _Incumbent(network, box, problem, deadline, opts.threads)
    for point in initial_points:
        incumbent.offer(np.asarray(point, dtype=np.float64))
    t1 = time.monotonic()
    bounds, empty = _root_bounds(network, box, opts, t0 + opts.tighten_share * opts.time_limit,
                                 incumbent)
    t_tight = time.monotonic() - t1
    unstable = count_unstable(*bounds)
    if empty:
        return OptimizeResult(OptStatus.INFEASIBLE, None, np.inf, np.inf,
                              time.monotonic() - t0, "bab", 0, 0, t_tight, unstable)
    search = _Search(network, box, problem, opts, bounds, deadline, incumbent)
    if not search.empty:
        search.push(_Node(tuple(np.zeros(n, np.int8) for n in network.relu_sizes)), -np.inf)
        _run(search)
    bound = search.global_bound() if (search.heap or search.best_x is not None
                                      or np.isfinite(search.closed_min)) else np.inf
    exhausted = not search.heap and not np.isfinite(search.closed_min)
    status = _status(search.best_x, search.best_v - bound, search.tol(), exhausted)
    if status is OptStatus.INFEASIBLE:
        bound = np.inf
    stats = {"leaf_milps": float(search.leaf_milps), "open_nodes": float(len(search.heap))}
    return OptimizeResult(status, search.best_x, float(search.best_v), float(bound),
                          time.monotonic() - t0, "bab", search.nodes,
                          search.lp_solves + incumbent.lp_solves,
                          t_tight, unstable, stats)


def solve_full_milp(
    network: Network, box: InputBox, problem: Problem, formulation: str = "bigm",
    options: OptimizeOptions | None = None,
) -> OptimizeResult:
    """Solve ``problem`` as one MILP with HiGHS (the seed papers' approach), for comparison.

    Root bounds come from ``options.tighten`` (``none`` and ``interval`` coincide here: a
    big-M needs finite bounds, and interval arithmetic is the least that gives them). The
    solver's point is re-checked by :meth:`Problem.evaluate` (and repaired through its pattern
    LP when tolerances put it just outside the constraints).

    Args:
        network: the network.
        box: the input domain.
        problem: the objective and constraints.
        formulation: ``bigm``, ``extended`` or ``partition[:N[:size|range]]``.
        options: time limit, gap and tightening mode.

    Returns:
        The :class:`OptimizeResult` with ``method = "milp:<formulation>"``.
    """
    opts = options or OptimizeOptions()
    parse_formulation(formulation)
    t0 = time.monotonic()
    deadline = t0 + opts.time_limit
    bounds, empty = root_bounds(network, box, opts, t0 + opts.tighten_share * opts.time_limit)
    t_tight = time.monotonic() - t0
    method = f"milp:{formulation}"
    lp, columns, bad = encode_problem(network, box, bounds, None,
                                      milp_encoders(formulation, []), problem, 0.0)
    if empty or bad:
        return OptimizeResult(OptStatus.INFEASIBLE, None, np.inf, np.inf,
                              time.monotonic() - t0, method, 0, 0, t_tight)
    sol = solve(lp, HighsOptions(time_limit=max(deadline - time.monotonic(), 1e-3),
                                 threads=opts.threads, mip_rel_gap=opts.gap_rel))
    return _milp_result(network, box, problem, sol, columns, opts, t0, deadline, method,
                        t_tight, count_unstable(*bounds))


def _milp_result(network: Network, box: InputBox, problem: Problem, sol: LpSolution,
                 columns: ColumnMap, opts: OptimizeOptions, t0: float, deadline: float,
                 method: str, t_tight: float, unstable: int) -> OptimizeResult:
    """Check the MILP's point and turn the HiGHS answer into an :class:`OptimizeResult`."""
    if sol.status is LpStatus.INFEASIBLE:
        return OptimizeResult(OptStatus.INFEASIBLE, None, np.inf, np.inf,
                              time.monotonic() - t0, method, sol.nodes, 0, t_tight, unstable)
    x, value = None, np.inf
    if sol.x is not None:
        cand = np.clip(sol.x[columns.x], box.lower, box.upper)
        checked = problem.evaluate(network, cand)
        found = (cand, checked) if checked is not None else pattern_point(
            network, box, problem, cand, deadline + 5.0, opts.threads)
        if found is not None:
            x, value = found
    bound = sol.bound - MILP_BOUND_TOL * (1.0 + abs(sol.bound)) if np.isfinite(
        sol.bound) else -np.inf
    bound = min(bound, value)
    status = _status(x, value - bound, max(_tol(value, opts), opts.gap_rel * abs(value)),
                     False)
    if status is OptStatus.OPTIMAL and sol.status is not LpStatus.OPTIMAL:
        status = OptStatus.FEASIBLE
    return OptimizeResult(status, x, float(value), float(bound), time.monotonic() - t0,
                          method, sol.nodes, 0, t_tight, unstable,
                          {"milp_objective": float(sol.objective or np.nan)})


def solve_problem(
    network: Network, box: InputBox, problem: Problem, options: OptimizeOptions | None,
    method: str = "bab", initial_points: Sequence[np.ndarray] = (),
) -> OptimizeResult:
    """Solve by the BaB (``bab``) or by one full MILP (``milp[:<formulation>]``).

    Raises:
        InputError: an unknown method or formulation.
    """
    if method == "bab":
        return minimize(network, box, problem, options, initial_points)
    if method == "milp" or method.startswith("milp:"):
        return solve_full_milp(network, box, problem, method.partition(":")[2] or "bigm",
                               options)
    raise InputError("--method", f"unknown method '{method}' (expected bab or "
                     "milp:<bigm|extended|partition:N>)")
