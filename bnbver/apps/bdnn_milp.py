r"""The MILP that trains a binarized network (Kurtz & Bah) to a globally minimal training loss.

Notation: points ``x_i`` (N of them, labels ``y_i`` in ``0..K-1``), layers ``l = 1..L+1`` (the last
is the output layer), weight bound ``B`` (weights and biases in ``[-B, B]``, integer in ``int``
mode). A hidden value is ``h = a u + c`` with a binary ``u``: ``(a, c) = (1, 0)`` for step and
``(2, -1)`` for sign. Any layer may be *fixed* (weights given, used by local search); the layers
before the first variable one are evaluated numerically and their output is a constant input.

**Pre-activations.** With constant input ``h_i`` (the data, or fixed earlier layers) and variable
weights, ``z_ij = sum_k W_jk h_ik + b_j`` is linear, ``|z_ij| <= B (||h_i||_1 + 1)``. With
variable input ``u`` and fixed weights, ``z = sum_k W_jk (a u_k + c) + b_j`` is linear in ``u``.
With both variable, each product ``p_jk = W_jk u_k`` (``u`` binary, ``|W| <= B``) is exact under

    -B u <= p <= B u,    W - B (1 - u) <= p <= W + B (1 - u),

and ``z = sum_k (a p_jk + c W_jk) + b_j``, ``|z| <= B (n_in + 1)``.

**Binary activations.** With ``z in [zl, zu]``, a binary ``u`` per point and neuron, and strictness
thresholds ``theta_+ >= 0, theta_- > 0``:

    z >= theta_+ - (theta_+ - zl)(1 - u)        (u = 1  =>  z >= theta_+)
    z <= -theta_- + (zu + theta_-) u            (u = 0  =>  z <= -theta_-)

so the forward rule ``u = [z >= 0]`` reproduces ``u``. Thresholds: in ``int`` mode on integer data,
and on every layer fed binary values, z is an integer and ``(theta_+, theta_-) = (0, 1)`` loses
no network. Otherwise ``theta_+ = theta_- = epsilon / 2``: networks with a point in the band
``|z| < epsilon/2`` are excluded, and the band absorbs the solver's tolerances (1e-6).

**Robust variant** (first layer, radius ``eps``): with ``A_jk >= |W_jk|`` (``A >= W, A >= -W``),

    u = 1  =>  z - eps sum_k A_jk >= theta_+,        u = 0  =>  z + eps sum_k A_jk <= -theta_-,

so the first-layer pattern, hence the class, is constant on ``||x' - x_i||_inf <= eps``.

**Output and loss.** Scores ``s = W^{L+1} h^L + b^{L+1}``; ``d_k = s_y - s_k``. Under argmax with
ties to the lowest index, in ``int`` mode (integer scores) a point is correct iff
``d_k >= [k < y]`` for all k, and wrong iff ``-d_k >= [k > y]`` for some k; in ``cont`` mode both
thresholds are ``epsilon / 2``. The *count* loss (the paper's) has binaries ``e`` (error) and
``v_k`` (class k wins):

    min sum e    s.t.    e = 0  =>  d_k >= tau_c(k)  (all k != y),
                         v_k = 1  =>  -d_k >= tau_w(k),    sum_k v_k >= e,

so ``e`` equals the forward pass's error indicator in every feasible solution, not only at the
optimum. The *hinge* loss replaces them by ``xi >= 0``, ``xi >= gamma - d_k`` and minimises
``sum xi`` (the error count is then read from the forward pass).

**Data splitting** (k-means heuristic): points carry a group id and all points of a group share
the binaries ``u`` (their first-layer rows stay per point); deeper rows, scores and the loss are
per group, with one ``e`` per (group, label) weighted by its point count.

**Cutoff.** Given a known network of loss ``c``, the row ``sum e <= c - 1`` keeps only strictly
better networks: an infeasible MILP then proves that network optimal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from bnbver.apps.bdnn_model import BinarizedNetwork, WeightSpec, activate, robust_mask
from bnbver.lp.highs import HighsOptions, solve
from bnbver.lp.model import LinearProgram, LpStatus

log = logging.getLogger(__name__)

#: default strictness epsilon of the activation and output thresholds (see the module docstring)
EPSILON = 1e-3
#: integrality / rounding tolerance used when decoding integer weights
ROUND_TOL = 1e-4

Layer = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class TrainingProblem:
    """One training MILP.

    Attributes:
        x: points ``(N, d)``.
        y: labels ``(N,)`` in ``0..K-1``.
        sizes: ``[d, n_1, .., n_L, K]`` (at least one hidden layer).
        spec: the weight domain.
        activation: ``"step"`` or ``"sign"``.
        fixed: per layer ``(W, b)`` to keep fixed, or None for a variable layer.
        groups: group id per point ``(N,)`` (points sharing activations), or None for one each.
        loss: ``"count"`` (misclassified points) or ``"hinge"``.
        epsilon: strictness threshold.
        robust_eps: L-inf radius of the robust variant (0 for plain training).
        hinge_margin: gamma of the hinge loss.
        symmetry_breaking: order the biases of interchangeable hidden neurons.
        objective_cap: count loss only: add ``objective <= cap`` (a cutoff from a known
            network, so the solver only searches for strictly better ones).
    """

    x: np.ndarray
    y: np.ndarray
    sizes: tuple[int, ...]
    spec: WeightSpec
    activation: str = "step"
    fixed: tuple[Layer | None, ...] | None = None
    groups: np.ndarray | None = None
    loss: str = "count"
    epsilon: float = EPSILON
    robust_eps: float = 0.0
    hinge_margin: float = 1.0
    symmetry_breaking: bool = True
    objective_cap: float | None = None

    def fixed_layer(self, li: int) -> Layer | None:
        """Return the fixed ``(W, b)`` of layer ``li`` (0-based) or None when it is variable."""
        return None if self.fixed is None else self.fixed[li]


@dataclass(frozen=True, eq=False)
class MilpOutcome:
    """The result of one training MILP solve.

    Attributes:
        network: the decoded network, or None when the solver found no solution.
        status: the solver status.
        objective: the MILP objective (None without a solution).
        bound: the proven lower bound on the optimum (-inf when unknown).
        seconds: solver time.
        nodes: branch-and-bound nodes.
        num_rows: rows of the MILP.
        num_cols: columns of the MILP.
    """

    network: BinarizedNetwork | None
    status: LpStatus
    objective: float | None
    bound: float
    seconds: float
    nodes: int
    num_rows: int
    num_cols: int


class _Builder:
    """Accumulates columns and rows (COO) of a LinearProgram; the one stateful piece here."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n = 0
        self.coo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.row_lo: list[np.ndarray] = []
        self.row_hi: list[np.ndarray] = []
        self.m = 0

    def variables(self, shape: tuple[int, ...], lower: float, upper: float,
                  integer: bool = False, cost: float | np.ndarray = 0.0) -> np.ndarray:
        """Add ``prod(shape)`` columns and return their indices in that shape."""
        size = int(np.prod(shape))
        self.lower.append(np.full(size, lower, dtype=np.float64))
        self.upper.append(np.full(size, upper, dtype=np.float64))
        self.cost.append(np.broadcast_to(np.asarray(cost, dtype=np.float64), (size,)).copy())
        self.integer.append(np.full(size, 1 if integer else 0, dtype=np.uint8))
        idx = np.arange(self.n, self.n + size).reshape(shape)
        self.n += size
        return idx

    def rows(self, cols: np.ndarray, coefs: np.ndarray, lo: np.ndarray | float,
             hi: np.ndarray | float) -> None:
        """Add rows ``lo <= coefs . x[cols] <= hi``; cols and coefs are ``(R, m)``."""
        r, m = cols.shape
        if r == 0:
            return
        rows = np.repeat(np.arange(self.m, self.m + r), m)
        self.coo.append((rows, cols.reshape(-1), coefs.reshape(-1).astype(np.float64)))
        self.row_lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (r,)).copy())
        self.row_hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (r,)).copy())
        self.m += r

    def program(self, offset: float) -> LinearProgram:
        """Return the accumulated LinearProgram."""
        rows, cols, vals = (np.concatenate(p) for p in zip(*self.coo, strict=True))
        A = sp.coo_matrix((vals, (rows, cols)), shape=(self.m, self.n)).tocsr()
        A.eliminate_zeros()
        cat = np.concatenate
        return LinearProgram(cat(self.cost), A, cat(self.row_lo), cat(self.row_hi),
                             cat(self.lower), cat(self.upper), cat(self.integer), float(offset))


@dataclass(frozen=True, eq=False)
class _Expr:
    """Affine expressions ``coefs . x[cols] + const`` over a grid ``(U, n)``, with bounds."""

    cols: np.ndarray  # (U, n, m)
    coefs: np.ndarray  # (U, n, m)
    const: np.ndarray  # (U, n)
    lo: np.ndarray  # (U, n), including const
    hi: np.ndarray  # (U, n)

    def shifted(self, cols: np.ndarray, coefs: np.ndarray, delta: float) -> _Expr:
        """Return self plus ``coefs . x[cols]`` (``(n, m')``) ranging in ``[-delta, delta]``."""
        u = self.cols.shape[0]
        cols = np.broadcast_to(cols, (u, *cols.shape))
        coefs = np.broadcast_to(coefs, (u, *coefs.shape))
        return _Expr(np.concatenate([self.cols, cols], axis=2),
                     np.concatenate([self.coefs, coefs], axis=2),
                     self.const, self.lo - delta, self.hi + delta)


def _act_coefficients(activation: str) -> tuple[float, float]:
    """Return (a, c) with ``h = a u + c`` for the activation."""
    return (1.0, 0.0) if activation == "step" else (2.0, -1.0)


def _affine_const_input(h: np.ndarray, wc: np.ndarray, bc: np.ndarray, bound: float) -> _Expr:
    """Pre-activations of variable weights on constant inputs ``h (S, n_in)``."""
    s, n = h.shape[0], wc.shape[0]
    cols = np.concatenate([np.broadcast_to(wc, (s, *wc.shape)),
                           np.broadcast_to(bc[None, :, None], (s, n, 1))], axis=2)
    coefs = np.concatenate([np.broadcast_to(h[:, None, :], (s, n, h.shape[1])),
                            np.ones((s, n, 1))], axis=2)
    big = np.broadcast_to((bound * (np.abs(h).sum(axis=1) + 1.0))[:, None], (s, n))
    return _Expr(cols, coefs, np.zeros((s, n)), -big, big)


def _affine_fixed_weights(ucols: np.ndarray, activation: str, layer: Layer) -> _Expr:
    """Pre-activations of fixed weights on binary variables ``ucols (G, n_in)``."""
    w, b = layer
    a, c = _act_coefficients(activation)
    g, n = ucols.shape[0], w.shape[0]
    cols = np.broadcast_to(ucols[:, None, :], (g, n, ucols.shape[1]))
    coefs = np.broadcast_to(a * w, (g, n, w.shape[1]))
    const = np.broadcast_to(c * w.sum(axis=1) + b, (g, n))
    ends = np.stack([w * c, w * (a + c)])
    lo = np.broadcast_to(ends.min(axis=0).sum(axis=1) + b, (g, n))
    hi = np.broadcast_to(ends.max(axis=0).sum(axis=1) + b, (g, n))
    return _Expr(cols, coefs, const, lo, hi)


def _affine_products(bld: _Builder, ucols: np.ndarray, activation: str, wc: np.ndarray,
                     bc: np.ndarray, bound: float) -> _Expr:
    """Pre-activations of variable weights on binary variables, with exact products p = W u."""
    a, c = _act_coefficients(activation)
    g, (n, n_in) = ucols.shape[0], wc.shape
    p = bld.variables((g, n, n_in), -bound, bound)
    u = np.broadcast_to(ucols[:, None, :], p.shape).reshape(-1)
    w = np.broadcast_to(wc, p.shape).reshape(-1)
    pf = p.reshape(-1)
    ones = np.ones_like(pf, dtype=np.float64)
    cols = np.stack([pf, u, w], axis=1)
    bld.rows(cols, np.stack([ones, -bound * ones, 0 * ones], axis=1), -np.inf, 0.0)
    bld.rows(cols, np.stack([ones, bound * ones, 0 * ones], axis=1), 0.0, np.inf)
    bld.rows(cols, np.stack([ones, bound * ones, -ones], axis=1), -np.inf, bound)
    bld.rows(cols, np.stack([ones, -bound * ones, -ones], axis=1), -bound, np.inf)
    cols_e = np.concatenate([p, np.broadcast_to(wc, p.shape),
                             np.broadcast_to(bc[None, :, None], (g, n, 1))], axis=2)
    coefs_e = np.concatenate([np.full(p.shape, a), np.full(p.shape, c), np.ones((g, n, 1))],
                             axis=2)
    big = np.full((g, n), bound * (n_in + 1.0))
    return _Expr(cols_e, coefs_e, np.zeros((g, n)), -big, big)


def _activation_rows(bld: _Builder, on: _Expr, off: _Expr, ucols: np.ndarray,
                     unit_group: np.ndarray, thetas: tuple[float, float]) -> None:
    """Tie binaries ``ucols (G, n)`` to expressions over units ``(U, n)`` (module docstring)."""
    t_pos, t_neg = thetas
    u = ucols[unit_group].reshape(-1, 1)
    m = on.cols.shape[2]
    cols = np.concatenate([on.cols.reshape(-1, m), u], axis=1)
    coefs = np.concatenate([on.coefs.reshape(-1, m), -(t_pos - on.lo).reshape(-1, 1)], axis=1)
    bld.rows(cols, coefs, (on.lo - on.const).reshape(-1), np.inf)
    m = off.cols.shape[2]
    cols = np.concatenate([off.cols.reshape(-1, m), u], axis=1)
    coefs = np.concatenate([off.coefs.reshape(-1, m), -(off.hi + t_neg).reshape(-1, 1)], axis=1)
    bld.rows(cols, coefs, -np.inf, (-t_neg - off.const).reshape(-1))


def _thresholds(problem: TrainingProblem, data_input: bool) -> tuple[float, float]:
    """Return (theta_+, theta_-) for a layer fed the data or binary values."""
    integral = problem.spec.integer and (
        not data_input or bool(np.all(problem.x == np.round(problem.x))))
    return (0.0, 1.0) if integral else (problem.epsilon / 2, problem.epsilon / 2)


def _score_gap(s: _Expr, units: np.ndarray, y: np.ndarray, k: int) -> _Expr:
    """Return ``d_k = s_y - s_k`` per (unit, label) pair as an expression grid ``(P, 1)``."""
    cols = np.concatenate([s.cols[units, y], s.cols[units, k]], axis=1)[:, None, :]
    coefs = np.concatenate([s.coefs[units, y], -s.coefs[units, k]], axis=1)[:, None, :]
    const = (s.const[units, y] - s.const[units, k])[:, None]
    lo = (s.lo[units, y] - s.hi[units, k])[:, None]
    hi = (s.hi[units, y] - s.lo[units, k])[:, None]
    return _Expr(cols, coefs, const, lo, hi)


def _loss_rows(bld: _Builder, problem: TrainingProblem, s: _Expr, units: np.ndarray,
               y: np.ndarray, count: np.ndarray, cap: float | None) -> None:
    """Add the loss variables and rows over (unit, label, count) pairs (module docstring)."""
    k_all = s.cols.shape[1]
    integer = problem.spec.integer
    if problem.loss == "hinge":
        xi = bld.variables((len(units),), 0.0, np.inf, cost=count)
    else:
        e = bld.variables((len(units),), 0.0, 1.0, integer=True, cost=count)
        v = bld.variables((len(units), k_all), 0.0, 1.0, integer=True)
        coef_v = (y[:, None] != np.arange(k_all)[None, :]).astype(np.float64)
        if cap is not None:
            bld.rows(e[None, :], count[None, :], -np.inf, cap)
        bld.rows(np.concatenate([v, e[:, None]], axis=1),
                 np.concatenate([coef_v, -np.ones((len(units), 1))], axis=1), 0.0, np.inf)
    for k in range(k_all):
        sel = y != k
        if not np.any(sel):
            continue
        d = _score_gap(s, units[sel], y[sel], k)
        cols, coefs = d.cols[:, 0], d.coefs[:, 0]
        const, lo, hi = d.const[:, 0], d.lo[:, 0], d.hi[:, 0]
        if problem.loss == "hinge":
            bld.rows(np.concatenate([cols, xi[sel, None]], axis=1),
                     np.concatenate([coefs, np.ones((len(const), 1))], axis=1),
                     problem.hinge_margin - const, np.inf)
            continue
        half = problem.epsilon / 2
        tau_c = (k < y[sel]).astype(np.float64) if integer else np.full(len(const), half)
        tau_w = (k > y[sel]).astype(np.float64) if integer else np.full(len(const), half)
        bld.rows(np.concatenate([cols, e[sel, None]], axis=1),
                 np.concatenate([coefs, (tau_c - lo)[:, None]], axis=1), tau_c - const, np.inf)
        bld.rows(np.concatenate([cols, v[sel, k][:, None]], axis=1),
                 np.concatenate([-coefs, -(tau_w + hi)[:, None]], axis=1), -hi + const, np.inf)


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where the variable weights live in the MILP, and the objective's constant part."""

    weight_cols: tuple[tuple[np.ndarray, np.ndarray] | None, ...]
    offset: float


def _weight_columns(bld: _Builder, problem: TrainingProblem) -> list[tuple[np.ndarray, np.ndarray]
                                                                     | None]:
    """Add the columns of the variable layers' weights and biases."""
    bound, integer = problem.spec.bound, problem.spec.integer
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    sizes = problem.sizes
    for li in range(len(sizes) - 1):
        if problem.fixed_layer(li) is not None:
            out.append(None)
            continue
        wc = bld.variables((sizes[li + 1], sizes[li]), -bound, bound, integer)
        bc = bld.variables((sizes[li + 1],), -bound, bound, integer)
        out.append((wc, bc))
    return out


def _symmetry_rows(bld: _Builder, problem: TrainingProblem,
                   wcols: list[tuple[np.ndarray, np.ndarray] | None]) -> None:
    """Order the biases ``b_j <= b_{j+1}`` of hidden layers whose neurons are interchangeable.

    Permuting the neurons of hidden layer l (and the columns of layer l+1) keeps the function,
    so when both layers are variable one ordering of the biases is w.l.o.g.
    """
    for li in range(len(wcols) - 1):
        here, nxt = wcols[li], wcols[li + 1]
        if here is None or nxt is None or here[1].size < 2:
            continue
        bc = here[1]
        cols = np.stack([bc[1:], bc[:-1]], axis=1)
        bld.rows(cols, np.tile([1.0, -1.0], (len(bc) - 1, 1)), 0.0, np.inf)


def _robust_exprs(bld: _Builder, problem: TrainingProblem, z: _Expr,
                  wc: np.ndarray) -> tuple[_Expr, _Expr]:
    """Return (z - eps ||w||_1, z + eps ||w||_1) with ``A >= |W|`` linearised."""
    eps, bound = problem.robust_eps, problem.spec.bound
    acols = bld.variables(wc.shape, 0.0, bound)
    flat_a, flat_w = acols.reshape(-1), wc.reshape(-1)
    ones = np.ones((flat_a.size, 1))
    pair = np.stack([flat_a, flat_w], axis=1)
    bld.rows(pair, np.concatenate([ones, -ones], axis=1), 0.0, np.inf)
    bld.rows(pair, np.concatenate([ones, ones], axis=1), 0.0, np.inf)
    delta = eps * bound * wc.shape[1]
    coefs = np.full(acols.shape, eps)
    return z.shifted(acols, -coefs, delta), z.shifted(acols, coefs, delta)


def _constant_prefix(problem: TrainingProblem) -> tuple[int, np.ndarray, np.ndarray]:
    """Evaluate the fixed leading layers; return (first variable layer, kept points, inputs).

    In the robust variant with a fixed first layer, points whose first-layer pattern is not
    constant on the ball are certified errors whatever the other layers are: they are dropped
    (and counted in the objective offset by the caller).
    """
    keep = np.arange(len(problem.y))
    h = np.asarray(problem.x, dtype=np.float64)
    first = problem.fixed_layer(0)
    if problem.robust_eps > 0 and first is not None:
        keep = np.flatnonzero(robust_mask(first[0], first[1], h, problem.robust_eps))
        h = h[keep]
    l0 = 0
    while l0 < len(problem.sizes) - 2 and problem.fixed_layer(l0) is not None:
        w, b = problem.fixed_layer(l0)  # type: ignore[misc]
        h = activate(h @ w.T + b, problem.activation)
        l0 += 1
    if problem.fixed_layer(l0) is None:
        return l0, keep, h
    raise ValueError("a training problem needs at least one variable layer")


def _output_pairs(units: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the distinct (unit, label) pairs and their counts."""
    pairs, count = np.unique(np.stack([units, labels], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1], count.astype(np.float64)


def build_training_milp(problem: TrainingProblem) -> tuple[LinearProgram, _Layout]:
    """Build the training MILP of ``problem`` (see the module docstring).

    Returns:
        The program and the layout needed by :func:`decode`.
    """
    bld = _Builder()
    l0, keep, h = _constant_prefix(problem)
    offset = float(len(problem.y) - len(keep))
    y = np.asarray(problem.y)[keep].astype(np.int64)
    raw = np.arange(len(keep)) if problem.groups is None else np.asarray(problem.groups)[keep]
    _, group_of = np.unique(raw, return_inverse=True)
    n_groups = int(group_of.max()) + 1 if len(group_of) else 0
    wcols = _weight_columns(bld, problem)
    if problem.symmetry_breaking:
        _symmetry_rows(bld, problem, wcols)
    bound, n_layers = problem.spec.bound, len(problem.sizes) - 1
    ucols: np.ndarray | None = None
    for li in range(l0, n_layers):
        var, fixed = wcols[li], problem.fixed_layer(li)
        if ucols is None:
            assert var is not None
            z = _affine_const_input(h, var[0], var[1], bound)
            units = group_of
        elif var is None:
            assert fixed is not None
            z = _affine_fixed_weights(ucols, problem.activation, fixed)
            units = np.arange(n_groups)
        else:
            z = _affine_products(bld, ucols, problem.activation, var[0], var[1], bound)
            units = np.arange(n_groups)
        if li == n_layers - 1:
            unit_of_point = np.arange(len(y)) if ucols is None else group_of
            pu, py, pc = _output_pairs(unit_of_point, y)
            cap = problem.objective_cap
            _loss_rows(bld, problem, z, pu, py, pc, None if cap is None else cap - offset)
            break
        on = off = z
        if li == 0 and problem.robust_eps > 0 and var is not None:
            on, off = _robust_exprs(bld, problem, z, var[0])
        new_u = bld.variables((n_groups, problem.sizes[li + 1]), 0.0, 1.0, integer=True)
        _activation_rows(bld, on, off, new_u, units, _thresholds(problem, li == 0))
        ucols = new_u
    return bld.program(offset), _Layout(tuple(wcols), offset)


def decode(problem: TrainingProblem, layout: _Layout, x: np.ndarray) -> BinarizedNetwork:
    """Read the network out of a MILP solution (integer weights are rounded, all clipped)."""
    bound = problem.spec.bound
    weights, biases = [], []
    for li, cols in enumerate(layout.weight_cols):
        if cols is None:
            w, b = problem.fixed_layer(li)  # type: ignore[misc]
        else:
            w, b = x[cols[0]], x[cols[1]]
            if problem.spec.integer:
                off = max(np.max(np.abs(w - np.round(w))), np.max(np.abs(b - np.round(b))))
                if off > ROUND_TOL:
                    log.warning("integer weight off by more than %g before rounding", ROUND_TOL)
                w, b = np.round(w), np.round(b)
            w, b = np.clip(w, -bound, bound), np.clip(b, -bound, bound)
        weights.append(np.array(w, dtype=np.float64))
        biases.append(np.array(b, dtype=np.float64))
    return BinarizedNetwork(tuple(weights), tuple(biases), problem.activation)


def solve_training(problem: TrainingProblem, options: HighsOptions) -> MilpOutcome:
    """Build, solve and decode the training MILP of ``problem``."""
    lp, layout = build_training_milp(problem)
    sol = solve(lp, options)
    network = decode(problem, layout, sol.x) if sol.x is not None else None
    return MilpOutcome(network, sol.status, sol.objective, float(sol.bound), sol.seconds,
                       sol.nodes, lp.num_rows, lp.num_cols)
