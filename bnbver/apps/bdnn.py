"""Train binarized networks by mixed-integer programming (Kurtz & Bah): three methods.

* ``exact``: one MILP over all weights (:mod:`bnbver.apps.bdnn_milp`); its optimum is a network of
  globally minimal training loss, and HiGHS's dual bound gives a proven gap when it stops early.
* ``local``: local search. Starting from a network (random in the weight domain unless given),
  re-optimise one layer at a time with the other layers fixed. With every other layer fixed, the
  inputs of the free layer are constants and the layers after it have fixed weights, so the MILP
  has no products ``W u`` at all. A step is accepted only when it lowers the loss, so the sweep
  stops at a local optimum (no single layer can improve) or at the deadline.
* ``kmeans``: iterative data splitting. Cluster each class with k-means; all points of a cluster
  share one activation pattern, which shrinks the MILP to one set of binaries per cluster. After
  each solve, split the clusters holding misclassified points (the wrong points leave a cluster
  that also has correct ones; an all-wrong cluster is split by 2-means) and solve again. Finer
  clusters relax the MILP, so the optimum can only improve; since solves are time-limited, the
  best network seen is returned, never one worse than the first feasible one.

The loss is the number of misclassified points (the paper's), certified-robust misclassified
points in the robust variant (``robust_eps > 0``), or the hinge loss
``sum_i max(0, gamma - min_{k != y_i} (s_{y_i} - s_k))``. The k-means step is a small numpy
Lloyd iteration with k-means++ seeding, so this module needs no scikit-learn.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from bnbver.apps.bdnn_milp import EPSILON, MilpOutcome, TrainingProblem, solve_training
from bnbver.apps.bdnn_model import ACTIVATIONS, BinarizedNetwork, WeightSpec, random_network
from bnbver.lp.highs import HighsOptions
from bnbver.lp.model import LpStatus

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("exact", "local", "kmeans")
LOSSES: tuple[str, ...] = ("count", "hinge")
#: a step of local search or k-means must lower the loss by more than this to count
IMPROVE_TOL = 1e-9


class TrainStatus(Enum):
    """How a training run ended."""

    OPTIMAL = "optimal"  # exact: proven globally optimal
    FEASIBLE = "feasible"  # exact: a network, optimality not proven in the time limit
    LOCAL_OPTIMUM = "local_optimum"  # local: no single layer can improve
    CONVERGED = "converged"  # kmeans: no cluster left to split, or zero loss
    STOPPED = "stopped"  # heuristics: deadline or round limit reached
    NO_SOLUTION = "no_solution"  # no network found; the zero network is returned


@dataclass(frozen=True)
class BdnnOptions:
    """Options of :func:`train`.

    Attributes:
        hidden: hidden widths ``n_1 .. n_L`` (at least one layer).
        spec: weight domain.
        activation: ``"step"`` or ``"sign"``.
        method: ``"exact"``, ``"local"`` or ``"kmeans"``.
        loss: ``"count"`` or ``"hinge"``.
        epsilon: strictness threshold of the MILP.
        robust_eps: L-inf radius of the robust variant (0: plain training; needs count loss).
        hinge_margin: gamma of the hinge loss.
        num_classes: K (default ``max(y) + 1``).
        time_limit: wall-clock budget of the whole run, seconds.
        threads: HiGHS threads.
        seed: seed of every random choice (initial network, k-means).
        clusters: k-means: initial number of clusters over all classes.
        max_rounds: k-means refinement rounds / local-search sweeps.
        mip_rel_gap: relative gap at which HiGHS stops.
        warm_start: exact method, count loss: fraction of the budget given to local search
            for an incumbent whose loss becomes the MILP's cutoff (0: none).
    """

    hidden: tuple[int, ...] = (2,)
    spec: WeightSpec = field(default_factory=WeightSpec)
    activation: str = "step"
    method: str = "exact"
    loss: str = "count"
    epsilon: float = EPSILON
    robust_eps: float = 0.0
    hinge_margin: float = 1.0
    num_classes: int | None = None
    time_limit: float = 60.0
    threads: int = 1
    seed: int = 0
    clusters: int = 10
    max_rounds: int = 20
    mip_rel_gap: float = 1e-6
    warm_start: float = 0.2


@dataclass(frozen=True, eq=False)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        network: the trained network.
        method: the method used.
        status: how the run ended.
        objective: the loss of ``network`` on the training set, recomputed by the forward pass.
        bound: a proven lower bound on the globally minimal loss (exact: HiGHS's dual bound,
            rounded up for the count loss; heuristics: the trivial bound 0).
        gap: ``(objective - bound) / objective`` (0 when both are 0).
        seconds: wall-clock time of the run.
        train_errors: misclassified (certified-robust when robust) training points.
        milp_objective: the last accepted MILP's objective (None when no MILP solution).
        history: the loss after each accepted step (exact: one entry).
        solves: number of MILPs solved.
    """

    network: BinarizedNetwork
    method: str
    status: TrainStatus
    objective: float
    bound: float
    gap: float
    seconds: float
    train_errors: int
    milp_objective: float | None
    history: tuple[float, ...]
    solves: int


def _validate(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> tuple[np.ndarray, np.ndarray]:
    """Check the data and the options; return x as float64 and y as int64.

    Raises:
        ValueError: naming the argument at fault and the expected value.
    """
    x = np.asarray(x, dtype=np.float64)
    y_raw = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"x: expected a finite (N, d) array with N >= 1, got shape {x.shape}")
    if y_raw.shape != (x.shape[0],) or np.any(y_raw != np.round(y_raw)) or np.any(y_raw < 0):
        raise ValueError("y: expected N non-negative integer labels")
    yi = y_raw.astype(np.int64)
    checks = [
        (len(options.hidden) >= 1 and min(options.hidden) >= 1, "hidden: expected widths >= 1"),
        (options.activation in ACTIVATIONS, f"activation: expected one of {ACTIVATIONS}"),
        (options.method in METHODS, f"method: expected one of {METHODS}"),
        (options.loss in LOSSES, f"loss: expected one of {LOSSES}"),
        (options.robust_eps >= 0, "robust_eps: expected >= 0"),
        (options.robust_eps == 0 or options.loss == "count", "robust_eps: needs loss='count'"),
        (options.epsilon > 0, "epsilon: expected > 0"),
        (options.time_limit > 0, "time_limit: expected > 0"),
        (options.num_classes is None or options.num_classes > int(yi.max()),
         "num_classes: expected more than the largest label"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return x, yi


def loss_value(network: BinarizedNetwork, x: np.ndarray, y: np.ndarray,
               options: BdnnOptions) -> float:
    """Return the training loss of ``network`` under ``options`` (see the module docstring)."""
    if options.loss == "count":
        return float(network.errors(x, y, options.robust_eps))
    s = network.forward(x)
    d = s[np.arange(len(y)), y][:, None] - s
    d[np.arange(len(y)), y] = np.inf
    return float(np.sum(np.maximum(0.0, options.hinge_margin - d.min(axis=1))))


def _sizes(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> tuple[int, ...]:
    """Return the layer sizes ``(d, n_1, .., n_L, K)`` with ``K >= 2``."""
    k = options.num_classes or int(y.max()) + 1
    return (x.shape[1], *options.hidden, max(k, 2))


def _problem(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> TrainingProblem:
    """Return the full (all layers variable, one group per point) training problem."""
    return TrainingProblem(x, y, _sizes(x, y, options), options.spec, options.activation,
                           loss=options.loss, epsilon=options.epsilon,
                           robust_eps=options.robust_eps, hinge_margin=options.hinge_margin)


def _highs(options: BdnnOptions, seconds: float) -> HighsOptions:
    """Return the HiGHS options of one solve with ``seconds`` left."""
    return HighsOptions(time_limit=max(seconds, 0.01), threads=options.threads,
                        mip_rel_gap=options.mip_rel_gap)


def _zero_network(sizes: tuple[int, ...], activation: str) -> BinarizedNetwork:
    """Return the all-zero network (every point predicted as class 0)."""
    pairs = list(itertools.pairwise(sizes))
    return BinarizedNetwork(tuple(np.zeros((o, i)) for i, o in pairs),
                            tuple(np.zeros(o) for _, o in pairs), activation)


def _result(network: BinarizedNetwork, x: np.ndarray, y: np.ndarray, options: BdnnOptions,
            **fields: object) -> TrainResult:
    """Assemble a TrainResult whose objective is recomputed by the forward pass."""
    objective = loss_value(network, x, y, options)
    bound = float(fields.pop("bound", 0.0))  # type: ignore[arg-type]
    gap = 0.0 if objective - bound <= IMPROVE_TOL else (objective - bound) / max(objective, 1e-12)
    return TrainResult(network=network, method=options.method, objective=objective, bound=bound,
                       gap=gap, train_errors=network.errors(x, y, options.robust_eps),
                       **fields)  # type: ignore[arg-type]


def _check_milp_matches(out: MilpOutcome, value: float) -> None:
    """Log when the decoded network's loss differs from the MILP's claim (it must not)."""
    if out.objective is not None and abs(out.objective - value) > 1e-6 * max(1.0, value):
        log.warning("decoded network has loss %g but the MILP claims %g", value, out.objective)


def _warm_incumbent(x: np.ndarray, y: np.ndarray,
                    options: BdnnOptions) -> TrainResult | None:
    """Return a local-search network for the exact method's cutoff (None when disabled)."""
    if options.warm_start <= 0 or options.loss != "count":
        return None
    return train_local_search(x, y, replace(options, method="local",
                                            time_limit=options.time_limit * options.warm_start))


def train_exact(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> TrainResult:
    """Solve the full training MILP (globally optimal when HiGHS proves optimality).

    With ``warm_start > 0`` (count loss), local search first finds a network of loss ``c`` in
    that fraction of the budget; the MILP then gets the cutoff ``loss <= c - 1``. Infeasible
    proves the incumbent optimal; a time-out without a better network returns the incumbent
    with the bound ``min(dual bound, c)``.
    """
    t0 = time.monotonic()
    warm = _warm_incumbent(x, y, options)
    problem = _problem(x, y, options)
    if warm is not None:
        if warm.objective <= IMPROVE_TOL:
            return replace(warm, method="exact", status=TrainStatus.OPTIMAL, bound=0.0, gap=0.0,
                           seconds=time.monotonic() - t0)
        problem = replace(problem, objective_cap=warm.objective - 1)
    left = options.time_limit - (time.monotonic() - t0)
    out = solve_training(problem, _highs(options, left))
    bound = max(out.bound, 0.0) if out.status is not LpStatus.INFEASIBLE else np.inf
    if options.loss == "count" and np.isfinite(bound):
        bound = float(math.ceil(bound - 1e-6))
    if out.network is not None:
        optimal = out.status is LpStatus.OPTIMAL
        network = out.network
        _check_milp_matches(out, loss_value(network, x, y, options))
    elif warm is not None:
        optimal, network = out.status is LpStatus.INFEASIBLE, warm.network
    else:
        optimal, network = False, _zero_network(problem.sizes, problem.activation)
    value = loss_value(network, x, y, options)
    status = TrainStatus.OPTIMAL if optimal else TrainStatus.FEASIBLE
    if out.network is None and warm is None:
        status = TrainStatus.NO_SOLUTION
    bound = value if optimal else min(bound, value)
    return _result(network, x, y, options, status=status, bound=bound,
                   seconds=time.monotonic() - t0, milp_objective=out.objective,
                   history=(value,) if warm is None else (warm.objective, value),
                   solves=1 + (warm.solves if warm is not None else 0))


def initial_network(x: np.ndarray, sizes: tuple[int, ...], options: BdnnOptions,
                    rng: np.random.Generator) -> BinarizedNetwork:
    """Return a random start for local search whose first-layer hyperplanes cut the data.

    Weights are random in the domain; each first-layer bias puts the neuron's hyperplane through
    a random training point (rounded and clipped to the domain), so no feature starts constant.
    """
    net = random_network(rng, list(sizes), options.spec, options.activation)
    w = net.weights[0].copy()
    for j in np.flatnonzero(~np.any(w != 0, axis=1)):
        w[j, rng.integers(w.shape[1])] = options.spec.bound
    b = -np.sum(w * x[rng.integers(len(x), size=w.shape[0])], axis=1)
    if options.spec.integer:
        b = np.round(b)
    b = np.clip(b, -options.spec.bound, options.spec.bound)
    return replace(net, weights=(w, *net.weights[1:]), biases=(b, *net.biases[1:]))


def _layer_problem(base: TrainingProblem, network: BinarizedNetwork, free: int) -> TrainingProblem:
    """Return ``base`` with every layer but ``free`` fixed to ``network``'s weights."""
    fixed = tuple(None if li == free else (w, b) for li, (w, b)
                  in enumerate(zip(network.weights, network.biases, strict=True)))
    return replace(base, fixed=fixed, symmetry_breaking=False)


def train_local_search(x: np.ndarray, y: np.ndarray, options: BdnnOptions,
                       init: BinarizedNetwork | None = None) -> TrainResult:
    """Local search: re-optimise one layer at a time, the others fixed, to a local optimum.

    Args:
        x: points ``(N, d)``.
        y: labels ``(N,)``.
        options: the options (``max_rounds`` bounds the number of sweeps over the layers).
        init: the starting network (default: :func:`initial_network` from ``seed``).
    """
    t0 = time.monotonic()
    deadline = t0 + options.time_limit
    base = _problem(x, y, options)
    rng = np.random.default_rng(options.seed)
    net = init or initial_network(x, base.sizes, options, rng)
    best = loss_value(net, x, y, options)
    history, solves, milp_obj = [best], 0, None
    n_layers, status = len(base.sizes) - 1, TrainStatus.STOPPED
    for _ in range(options.max_rounds):
        improved = False
        for free in range(n_layers):
            left = deadline - time.monotonic()
            if left <= 0 or best <= IMPROVE_TOL:
                break
            out = solve_training(_layer_problem(base, net, free), _highs(options, left))
            solves += 1
            if out.network is None:
                continue
            value = loss_value(out.network, x, y, options)
            _check_milp_matches(out, value)
            if value < best - IMPROVE_TOL:
                net, best, milp_obj, improved = out.network, value, out.objective, True
                history.append(value)
        if not improved:
            if time.monotonic() < deadline:
                status = TrainStatus.LOCAL_OPTIMUM
            break
    return _result(net, x, y, options, status=status, seconds=time.monotonic() - t0,
                   milp_objective=milp_obj, history=tuple(history), solves=solves)


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> np.ndarray:
    """Return cluster labels ``(n,)`` in ``0..k-1`` (Lloyd's algorithm, k-means++ seeding)."""
    n = points.shape[0]
    k = max(1, min(k, n))
    centers = [points[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centers)[None]) ** 2).sum(axis=2), axis=1)
        total = d2.sum()
        idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centers.append(points[idx])
    c = np.array(centers)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        labels = np.argmin(((points[:, None, :] - c[None]) ** 2).sum(axis=2), axis=1)
        new = np.array([points[labels == j].mean(axis=0) if np.any(labels == j) else c[j]
                        for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def initial_clusters(x: np.ndarray, y: np.ndarray, total: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Cluster each class separately (so clusters are label-pure); return group ids ``(N,)``."""
    groups = np.zeros(len(y), dtype=np.int64)
    classes = np.unique(y)
    next_id = 0
    for c in classes:
        idx = np.flatnonzero(y == c)
        k = max(1, round(total * len(idx) / len(y)))
        labels = kmeans(x[idx], k, rng)
        groups[idx] = next_id + labels
        next_id += int(labels.max()) + 1
    return groups


def refine_clusters(x: np.ndarray, groups: np.ndarray, wrong: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """Split the clusters holding misclassified points; return new group ids ``(N,)``.

    A cluster with both correct and wrong points loses its wrong points to a new cluster; an
    all-wrong cluster of two or more points is split by 2-means. Other clusters are kept.
    """
    out = groups.copy()
    next_id = int(groups.max()) + 1
    for g in np.unique(groups[wrong]):
        members = np.flatnonzero(groups == g)
        bad = wrong[members]
        if not np.all(bad):
            out[members[bad]] = next_id
        elif len(members) >= 2:
            labels = kmeans(x[members], 2, rng)
            out[members[labels == 1]] = next_id
        next_id += 1
    return np.unique(out, return_inverse=True)[1].astype(np.int64)


def train_kmeans(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> TrainResult:
    """Iterative data splitting: solve cluster-shared MILPs, split bad clusters, repeat."""
    t0 = time.monotonic()
    deadline = t0 + options.time_limit
    rng = np.random.default_rng(options.seed)
    base = _problem(x, y, options)
    groups = initial_clusters(x, y, options.clusters, rng)
    best: tuple[float, BinarizedNetwork, float | None] | None = None
    history: list[float] = []
    status, solves = TrainStatus.STOPPED, 0
    for _ in range(options.max_rounds):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        out = solve_training(replace(base, groups=groups), _highs(options, left))
        solves += 1
        if out.network is None:
            continue
        value = loss_value(out.network, x, y, options)
        _check_milp_matches(out, value)
        history.append(value)
        if best is None or value < best[0] - IMPROVE_TOL:
            best = (value, out.network, out.objective)
        wrong = out.network.error_mask(x, y, options.robust_eps)
        new_groups = refine_clusters(x, groups, wrong, rng)
        if value <= IMPROVE_TOL or len(np.unique(new_groups)) == len(np.unique(groups)):
            status = TrainStatus.CONVERGED
            break
        groups = new_groups
    if best is None:
        net = _zero_network(base.sizes, base.activation)
        return _result(net, x, y, options, status=TrainStatus.NO_SOLUTION,
                       seconds=time.monotonic() - t0, milp_objective=None,
                       history=tuple(history), solves=solves)
    return _result(best[1], x, y, options, status=status, seconds=time.monotonic() - t0,
                   milp_objective=best[2], history=tuple(history), solves=solves)


def train(x: np.ndarray, y: np.ndarray, options: BdnnOptions) -> TrainResult:
    """Train a binarized network on (x, y) by the method named in ``options``.

    Args:
        x: points ``(N, d)``.
        y: labels ``(N,)`` in ``0..K-1``.
        options: architecture, weight domain, method, loss and budget.

    Returns:
        The trained network with its loss, proven bound and timing.

    Raises:
        ValueError: the data or the options are invalid (the message names the argument).
    """
    x, yi = _validate(x, y, options)
    if options.method == "exact":
        return train_exact(x, yi, options)
    if options.method == "local":
        return train_local_search(x, yi, options)
    return train_kmeans(x, yi, options)
