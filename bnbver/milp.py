r"""MILP formulations of a BaB node; export to MPS/LP; solve with HiGHS.

Every builder *receives* pre-activation bounds (it never computes them beyond intersecting
with float64 interval arithmetic) and encodes ``y = f(x)`` for x in the node's box, the
node's splits, and one disjunct ``C y <= d`` of the unsafe set through a margin variable
:math:`t \ge C_i y - d_i` (all i). With ``require_unsafe`` the row :math:`t \le 0` makes the
feasible set exactly the node's counterexamples for that disjunct (feasible = sat,
infeasible = unsat); the objective minimises t.

Affine layers: :math:`z = W h + b` as equality rows. Fixed neurons (stable by bounds or split)
are encoded exactly: :math:`a = z, z \ge 0` or :math:`a = 0, z \le 0`. An unstable neuron
:math:`a = \max(0, w^\top h + b)` with :math:`z \in [l, u]`, :math:`h \in [L, U]` and an
indicator :math:`\sigma \in \{0, 1\}` is encoded by one of (dispatch table ``RELU_FORMULATIONS``):

**big-M** (Fischetti & Jo 2018; Tjeng et al. 2019):

.. math::
    a \ge z,\quad a \ge 0,\quad a \le z - l(1-\sigma),\quad a \le u\sigma.

**extended / convex hull** (Aftabi et al. 2024, arXiv 2402.06697; Anderson et al. 2020):
copies :math:`h^1, h^0` of the neuron's inputs for the active and inactive pieces,

.. math::
    h = h^1 + h^0,\quad L\sigma \le h^1 \le U\sigma,\quad L(1-\sigma) \le h^0 \le U(1-\sigma),\\
    a = w^\top h^1 + b\sigma \ge 0,\quad w^\top h^0 + b(1-\sigma) \le 0,\\
    w^\top h^1 + b\sigma \le u\sigma,\quad w^\top h^0 + b(1-\sigma) \ge l(1-\sigma).

(the last two rows carry the given bounds l, u into the hull of the box).

**partition:N** (Tsay et al. 2021, "Partition-based formulations for mixed-integer
optimization of trained ReLU neural networks"): the support of w is split into groups
:math:`S_1..S_N`; with :math:`v_n = \sum_{i \in S_n} w_i h_i \in [LB_n, UB_n]` (intervals),
variables :math:`v^1_n, v^0_n`,

.. math::
    v^1_n + v^0_n = v_n,\quad LB_n\sigma \le v^1_n \le UB_n\sigma,\quad
    LB_n(1-\sigma) \le v^0_n \le UB_n(1-\sigma),\\
    a = \textstyle\sum_n v^1_n + b\sigma \ge 0,\quad \sum_n v^0_n + b(1-\sigma) \le 0,

plus the two rows with l and u as in the hull. N = 1 projects onto big-M; singleton groups
(N = |supp w|) give the hull. Groups: ``equal-size`` sorts the weights and cuts them into N
groups of equal size; ``equal-range`` cuts the weight range into N intervals of equal width.
In every formulation the LP relaxations are nested: hull ⊆ partition ⊆ big-M = triangle.

**Max pooling** (Fischetti & Jo): :math:`y = \max_j h_j` with one binary :math:`\delta_j` per
pooled input: :math:`y \ge h_j`, :math:`y \le h_j + (\max_k U_k - L_j)(1-\delta_j)`,
:math:`\sum_j \delta_j = 1`.

**Valid inequalities.** For a neuron with :math:`b \le 0` and non-negative inputs
(:math:`L \ge 0`, e.g. the outputs of the ReLU layer before), the non-positive-bias
inequality (Serra & Ramalingam's case, as used by Aftabi et al.)
:math:`a \le \sum_{i: w_i > 0} w_i h_i` is valid (:math:`w^\top h + b \le \sum_{w_i>0} w_i h_i`,
which is >= 0). Anderson et al.'s ideal cuts for big-M, for any :math:`I \subseteq supp(w)`,
with :math:`\breve L_i, \breve U_i` = (L_i, U_i) if :math:`w_i \ge 0` else (U_i, L_i):

.. math::
    a \le \sum_{i \in I} w_i (h_i - \breve L_i (1-\sigma))
        + (b + \sum_{i \notin I} w_i \breve U_i)\sigma,

separated in linear time: :math:`I = \{i : w_i h^*_i < w_i(\breve L_i(1-\sigma^*) +
\breve U_i\sigma^*)\}` (:func:`add_anderson_cuts` runs rounds of LP solve, separate, add).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from bnbver.errors import InputError
from bnbver.lp.highs import HighsOptions, WarmLp, solve, write_model
from bnbver.lp.intervals import affine_interval
from bnbver.lp.model import LinearProgram, LpSolution, LpStatus
from bnbver.lp.numerics import MARGIN, solver_safe
from bnbver.lp.relaxation import (
    AffineSource,
    Bounds,
    ColumnMap,
    Encoders,
    ModelBuilder,
    ReluRows,
    Splits,
    as_masks,
    encode_network,
    finish_objective,
    maxpool_milp,
    relaxed_cols,
    relu_bigm_rows,
)
from bnbver.network import Network
from bnbver.result import Counterexample, Status, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property

#: ``t <= MILP_UNSAT_SLACK`` when deciding: a point HiGHS's tolerances place just outside the
#: unsafe set still keeps the model feasible, so "infeasible" remains a sound unsat.
MILP_UNSAT_SLACK = 1e-6
#: A MIP dual bound closes a node only when it exceeds 0 by more than this.
MILP_CLOSE_TOL = 1e-6
#: An Anderson cut is added only when the LP point violates it by more than this.
CUT_VIOLATION_TOL = 1e-6


@dataclass(frozen=True, eq=False)
class Neuron:
    """An unstable neuron of a MILP, as the cut separators need it.

    Attributes:
        a: output column. sigma: indicator column. bias: b.
        h: (k,) input columns with nonzero weight; w: (k,) weights; L, U: (k,) input bounds.
    """

    a: int
    sigma: int
    bias: float
    h: np.ndarray
    w: np.ndarray
    L: np.ndarray
    U: np.ndarray


@dataclass(frozen=True, eq=False)
class MilpModel:
    """A built MILP with its column map (see :class:`~bnbver.lp.relaxation.ColumnMap`).

    Attributes:
        lp: the program (integrality marks the binaries).
        columns: where x, y, pre-activations, binaries and t live.
        neurons: the unstable neurons with their inputs (for cuts).
        formulation: the formulation name.
        infeasible: True when the node's bounds and splits already clash.
    """

    lp: LinearProgram
    columns: ColumnMap
    neurons: tuple[Neuron, ...]
    formulation: str
    infeasible: bool = False


def _neuron_inputs(b: ModelBuilder, src: AffineSource, j: int) -> tuple[np.ndarray, ...]:
    """Return the input columns, weights and input bounds of neuron j of ``src``."""
    row = src.W.getrow(j)
    h = src.cols[row.indices]
    L, U = b.bounds(h)
    return h, row.data.astype(np.float64), L, U


def _rows_of(b: ModelBuilder, terms: list[tuple[ArrayLike, ArrayLike]],
             lower: float, upper: float) -> int:
    """Add one row ``lower <= sum coef * col <= upper`` from (cols, coefs) pieces."""
    cols = np.concatenate([np.atleast_1d(c) for c, _ in terms])
    vals = np.concatenate([np.atleast_1d(np.asarray(v, float)) for _, v in terms])
    return int(b.add_rows(np.zeros(cols.size, int), cols, vals, [lower], [upper])[0])


def relu_bigm(
    b: ModelBuilder, z: np.ndarray, lo: np.ndarray, up: np.ndarray, m: np.ndarray,
    src: AffineSource | None, neurons: list[Neuron],
) -> ReluRows:
    """Encode a ReLU layer by big-M (see the module docstring)."""
    rows = relu_bigm_rows(b, z, lo, up, m)
    _record(b, src, rows.a, rows.binary, np.flatnonzero(rows.reserved), neurons)
    return rows


def _record(b: ModelBuilder, src: AffineSource | None, a: np.ndarray, sigma: np.ndarray,
            idx: np.ndarray, neurons: list[Neuron]) -> None:
    """Remember the unstable neurons' inputs for cut separation."""
    if src is None:
        return
    for j in idx:
        h, w, L, U = _neuron_inputs(b, src, int(j))
        neurons.append(Neuron(int(a[j]), int(sigma[j]), float(src.bias[j]), h, w, L, U))


def equal_size_groups(w: np.ndarray, n: int) -> list[np.ndarray]:
    """Split positions 0..k-1 into n groups of equal size after sorting by weight."""
    order = np.argsort(w, kind="stable")
    return [g for g in np.array_split(order, min(n, w.size)) if g.size]


def equal_range_groups(w: np.ndarray, n: int) -> list[np.ndarray]:
    """Split positions by cutting the weight range into n intervals of equal width."""
    if w.size == 0:
        return []
    edges = np.linspace(w.min(), w.max(), n + 1)[1:-1]
    bins = np.searchsorted(edges, w, side="right")
    return [np.flatnonzero(bins == i) for i in range(n) if np.any(bins == i)]


def _disjunctive_neuron(
    b: ModelBuilder, a: int, sigma: int, h: np.ndarray, inner: np.ndarray, outer: np.ndarray,
    groups: list[np.ndarray], bias: float, lo: float, up: float,
) -> None:
    """Add one neuron's disjunctive rows with group variables ``v_n = inner[S_n] @ h[S_n]``.

    The sums over pieces use ``outer[n] * v_n`` (partition: inner = w, outer = 1; hull:
    singleton groups, inner = 1, outer = w).
    """
    L, U = b.bounds(h)
    ip, im = np.maximum(inner, 0.0), np.minimum(inner, 0.0)
    lb = np.array([ip[g] @ L[g] + im[g] @ U[g] for g in groups])
    ub = np.array([ip[g] @ U[g] + im[g] @ L[g] for g in groups])
    n = len(groups)
    v1 = b.add_cols(np.minimum(lb, 0.0), np.maximum(ub, 0.0))
    v0 = b.add_cols(np.minimum(lb, 0.0), np.maximum(ub, 0.0))
    pos = np.concatenate(groups)
    gid = np.repeat(np.arange(n), [g.size for g in groups])
    b.add_rows(np.concatenate([np.arange(n), np.arange(n), gid]),
               np.concatenate([v1, v0, h[pos]]),
               np.concatenate([np.ones(2 * n), -inner[pos]]), np.zeros(n), np.zeros(n))
    sig = np.full(n, sigma)
    r2 = np.repeat(np.arange(n), 2)
    for col, sign_lo, sign_hi in ((v1, -lb, -ub), (v0, lb, ub)):
        shift = 0.0 if col is v1 else 1.0
        b.add_rows(r2, np.stack([col, sig], 1).ravel(), np.stack([np.ones(n), sign_lo], 1).ravel(),
                   shift * lb, np.full(n, np.inf))
        b.add_rows(r2, np.stack([col, sig], 1).ravel(), np.stack([np.ones(n), sign_hi], 1).ravel(),
                   np.full(n, -np.inf), shift * ub)
    _rows_of(b, [([a], [1.0]), (v1, -outer), ([sigma], [-bias])], 0.0, 0.0)
    _rows_of(b, [(v1, outer), ([sigma], [bias])], 0.0, np.inf)
    _rows_of(b, [(v0, outer), ([sigma], [-bias])], -np.inf, -bias)
    _rows_of(b, [(v1, outer), ([sigma], [bias - up])], -np.inf, 0.0)
    _rows_of(b, [(v0, outer), ([sigma], [lo - bias])], lo - bias, np.inf)


def relu_disjunctive(
    b: ModelBuilder, z: np.ndarray, lo: np.ndarray, up: np.ndarray, m: np.ndarray,
    src: AffineSource | None, neurons: list[Neuron], parts: int, strategy: str,
) -> ReluRows:
    """Encode a ReLU layer by the partition (parts >= 1) or hull (parts = 0) formulation.

    A layer whose input is not an affine map (e.g. after max pooling) falls back to big-M.
    """
    if src is None:
        return relu_bigm(b, z, lo, up, m, src, neurons)
    a, sigma, relaxed, idx = relaxed_cols(b, z, lo, up, m)
    split = equal_size_groups if strategy == "size" else equal_range_groups
    for j in idx:
        h, w, _L, _U = _neuron_inputs(b, src, int(j))
        if parts == 0:
            groups = [np.array([i]) for i in range(w.size)]
            inner, outer = np.ones(w.size), w
        else:
            groups, inner, outer = split(w, parts), w, np.ones(0)
            outer = np.ones(len(groups))
        _disjunctive_neuron(b, int(a[j]), int(sigma[j]), h, inner, outer, groups,
                            float(src.bias[j]), float(lo[j]), float(up[j]))
    _record(b, src, a, sigma, idx, neurons)
    lo, hi = b.bounds(z)
    none = np.full(z.size, -1, dtype=np.int64)
    return ReluRows(z, a, sigma, none, none, lo, hi, relaxed)


def add_nonpositive_bias_cuts(b: ModelBuilder, neurons: Sequence[Neuron]) -> int:
    """Add ``a <= sum_{w_i > 0} w_i h_i`` for neurons with b <= 0 and inputs >= 0; count."""
    added = 0
    for nr in neurons:
        if nr.bias <= 0.0 and np.all(nr.L >= 0.0):
            pos = nr.w > 0
            _rows_of(b, [([nr.a], [1.0]), (nr.h[pos], -nr.w[pos])], -np.inf, 0.0)
            added += 1
    return added


def parse_formulation(name: str) -> tuple[str, int, str]:
    """Parse ``bigm``, ``extended``/``hull`` or ``partition[:N[:size|range]]``.

    Returns:
        (kind, parts, strategy): kind in {"bigm", "extended", "partition"}.

    Raises:
        InputError: the name is not one of these.
    """
    bits = name.strip().lower().split(":")
    if bits[0] in ("bigm", "big-m") and len(bits) == 1:
        return "bigm", 1, "size"
    if bits[0] in ("extended", "hull") and len(bits) == 1:
        return "extended", 0, "size"
    if bits[0] == "partition" and len(bits) <= 3:
        try:
            n = int(bits[1]) if len(bits) > 1 else 2
        except ValueError:
            n = 0
        strategy = bits[2] if len(bits) > 2 else "size"
        if n >= 1 and strategy in ("size", "range"):
            return "partition", n, strategy
    raise InputError("--formulation", f"unknown formulation '{name}' (expected bigm, extended "
                     "or partition[:N[:size|range]])")


#: formulation kind -> ReLU encoder (extra keyword arguments come from the parsed name)
RELU_FORMULATIONS: dict[str, Callable[..., ReluRows]] = {
    "bigm": relu_bigm,
    "extended": relu_disjunctive,
    "partition": relu_disjunctive,
}


def milp_encoders(formulation: str, neurons: list[Neuron]) -> Encoders:
    """Return the ReLU and max-pool encoders of a formulation (through RELU_FORMULATIONS)."""
    kind, parts, strategy = parse_formulation(formulation)
    extra: dict[str, object] = {} if kind == "bigm" else {"parts": parts, "strategy": strategy}
    encode = RELU_FORMULATIONS[kind]
    return Encoders(relu=partial(encode, neurons=neurons, **extra), maxpool=maxpool_milp)


def _disjunct_of(prop: Property | HalfSpaces, disjunct: int, box: InputBox | None
                 ) -> tuple[HalfSpaces, InputBox]:
    """Return the disjunct and the box from a Property (or a HalfSpaces plus a box)."""
    if isinstance(prop, HalfSpaces):
        if box is None:
            raise ValueError("build_milp: a HalfSpaces property needs box=")
        return prop, box
    if not 0 <= disjunct < len(prop.unsafe.disjuncts):
        raise InputError("disjunct", f"{disjunct} outside 0..{len(prop.unsafe.disjuncts) - 1}")
    return prop.unsafe.disjuncts[disjunct], box or prop.box


def _encode(network: Network, box: InputBox, bounds: Bounds | None, splits: Splits,
            formulation: str, valid_inequalities: bool
            ) -> tuple[ModelBuilder, list[Neuron], tuple[np.ndarray, np.ndarray, list[ReluRows]]]:
    """Encode the network of a node by a formulation (plus the valid inequalities)."""
    b = ModelBuilder()
    neurons: list[Neuron] = []
    masks = as_masks(splits, network.relu_sizes)
    encoded = encode_network(b, network, box, bounds, masks,
                             milp_encoders(formulation, neurons))
    if valid_inequalities:
        add_nonpositive_bias_cuts(b, neurons)
    return b, neurons, encoded


def build_milp(
    network: Network, prop: Property | HalfSpaces, bounds: Bounds | None,
    splits: Splits = None, formulation: str = "bigm", objective: str | None = "margin", *,
    disjunct: int = 0, box: InputBox | None = None, require_unsafe: bool = True,
    unsafe_slack: float = 0.0, valid_inequalities: bool = False,
) -> MilpModel:
    """Build the MILP of a BaB node (see the module docstring for each formulation).

    Args:
        network: the network.
        prop: a Property (its ``disjunct``-th disjunct is encoded) or one HalfSpaces.
        bounds: per-ReLU-layer (lower list, upper list) pre-activation bounds valid on the
            node (computed by the caller; intersected with interval arithmetic here).
        splits: the node's splits (SplitSet or per-layer masks).
        formulation: ``bigm``, ``extended`` or ``partition[:N[:size|range]]``.
        objective: ``"margin"`` (minimise t) or None (feasibility only).
        disjunct: which disjunct of ``prop``.
        box: the node's input box (default: the property's).
        require_unsafe: add ``t <= unsafe_slack``: feasible points are counterexamples.
        unsafe_slack: see ``require_unsafe`` (0 for an exact export).
        valid_inequalities: add the non-positive-bias inequalities.

    Returns:
        The :class:`MilpModel`.
    """
    half, nbox = _disjunct_of(prop, disjunct, box)
    if objective not in ("margin", None):
        raise InputError("objective", f"'{objective}' (expected 'margin' or None)")
    b, neurons, (x, y, relus) = _encode(network, nbox, bounds, splits, formulation,
                                        valid_inequalities)
    lp, t = finish_objective(b, y, half, require_unsafe)
    if require_unsafe and unsafe_slack:
        cu = lp.col_upper.copy()
        cu[t] = min(unsafe_slack, float(lp.col_upper[t]) + unsafe_slack)
        lp = replace(lp, col_upper=cu)
    if objective is None:
        lp = replace(lp, c=np.zeros(lp.num_cols))
    lp = replace(lp, col_names=_names(lp.num_cols, x, y, relus, t))
    return MilpModel(lp, ColumnMap(x, y, tuple(relus), t), tuple(neurons), formulation,
                     b.infeasible or bool(np.any(lp.col_lower > lp.col_upper)))


def _names(n: int, x: np.ndarray, y: np.ndarray, relus: list[ReluRows], t: int
           ) -> tuple[str, ...]:
    """Name columns for exported files: x_i, z_l_j, a_l_j, s_l_j, y_i, t, c<j> otherwise."""
    names = [f"c{j}" for j in range(n)]
    for k, r in enumerate(relus):
        for j, (zc, ac, sc) in enumerate(zip(r.z, r.a, r.binary, strict=True)):
            names[zc] = f"z_{k}_{j}"
            if ac >= 0 and names[ac].startswith("c"):
                names[ac] = f"a_{k}_{j}"
            if sc >= 0:
                names[sc] = f"s_{k}_{j}"
    for i, c in enumerate(y):
        if names[c].startswith("c") or names[c].startswith("z_"):
            names[c] = f"y_{i}"
    for i, c in enumerate(x):
        names[c] = f"x_{i}"
    if t >= 0:
        names[t] = "t"
    seen: dict[str, int] = {}
    for j, nm in enumerate(names):
        if nm in seen:
            names[j] = f"{nm}_c{j}"
        seen[names[j]] = j
    return tuple(names)


def export_milp(model: MilpModel, path: str | Path) -> Path:
    """Write the model to ``path`` (``.mps`` or ``.lp``).

    Raises:
        InputError: the suffix is not .mps or .lp.
    """
    p = Path(path)
    if p.suffix.lower() not in (".mps", ".lp"):
        raise InputError(str(path), "output must end in .mps or .lp")
    write_model(model.lp, p)
    return p


def disjunct_paths(path: str | Path, count: int) -> list[Path]:
    """Return one path per disjunct: ``model.mps`` or ``model.d0.mps``, ``model.d1.mps``, ..."""
    p = Path(path)
    if count == 1:
        return [p]
    return [p.with_name(f"{p.stem}.d{i}{p.suffix}") for i in range(count)]


def solve_milp(model: MilpModel, time_limit: float = 60.0, threads: int = 1,
               first_solution: bool = False) -> LpSolution:
    """Solve the MILP with HiGHS under a time limit; an empty node answers INFEASIBLE."""
    if model.infeasible:
        return LpSolution(LpStatus.INFEASIBLE, bound=np.inf)
    opts = HighsOptions(time_limit=time_limit, threads=threads, first_solution=first_solution)
    return solve(model.lp, opts)


def separate_anderson(
    neurons: Sequence[Neuron], x: np.ndarray, n_cols: int, tol: float = CUT_VIOLATION_TOL
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Return the most violated Anderson cut of every neuron that ``x`` violates.

    Returns:
        Rows ``A`` (k, n_cols) with ``A x <= upper`` (lower is -inf), and ``upper`` (k,),
        ``lower`` (k,).
    """
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    upper: list[float] = []
    for nr in neurons:
        s = float(np.clip(x[nr.sigma], 0.0, 1.0))
        lb = np.where(nr.w >= 0, nr.L, nr.U)
        ub = np.where(nr.w >= 0, nr.U, nr.L)
        h = x[nr.h]
        inside = nr.w * h < nr.w * (lb * (1.0 - s) + ub * s)
        rhs = float(nr.w[inside] @ (h[inside] - lb[inside] * (1.0 - s))
                    + (nr.bias + nr.w[~inside] @ ub[~inside]) * s)
        if x[nr.a] <= rhs + tol:
            continue
        coef_s = float(nr.w[inside] @ lb[inside] + nr.bias + nr.w[~inside] @ ub[~inside])
        c = np.concatenate([[nr.a], nr.h[inside], [nr.sigma]])
        v = np.concatenate([[1.0], -nr.w[inside], [-coef_s]])
        rows.append(np.full(c.size, len(upper)))
        cols.append(c)
        vals.append(v)
        upper.append(-float(nr.w[inside] @ lb[inside]))
    k = len(upper)
    if k == 0:
        return sp.csr_matrix((0, n_cols)), np.zeros(0), np.zeros(0)
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(k, n_cols))
    return A, np.full(k, -np.inf), np.asarray(upper)


def add_anderson_cuts(
    model: MilpModel, rounds: int = 3, options: HighsOptions | None = None
) -> tuple[MilpModel, list[float]]:
    """Strengthen a MILP by rounds of: solve its LP relaxation, separate, add violated cuts.

    Args:
        model: the MILP (big-M is where the cuts help; they are valid for every formulation).
        rounds: the maximum number of separation rounds.
        options: HiGHS options of the LP solves.

    Returns:
        The model with the cuts appended as rows, and the LP relaxation value before the
        first and after every round (a non-decreasing list up to solver tolerance).
    """
    relaxed = replace(model.lp, integrality=None)
    warm = WarmLp(relaxed, options or HighsOptions(presolve=False))
    trace: list[float] = []
    for _ in range(rounds + 1):
        sol = warm.run()
        if sol.x is None or sol.objective is None:
            break
        trace.append(sol.objective)
        if len(trace) > rounds:
            break
        A, lo, hi = separate_anderson(model.neurons, sol.x, relaxed.num_cols)
        if A.shape[0] == 0:
            break
        warm.add_rows(A, lo, hi)
    cur = warm.current_lp()
    lp = replace(model.lp, A=cur.A, row_lower=cur.row_lower, row_upper=cur.row_upper)
    return replace(model, lp=lp), trace


@dataclass(frozen=True, eq=False)
class MilpVerdict:
    """The answer of :func:`decide_milp` for a node.

    Attributes:
        status: HOLDS (every disjunct infeasible), VIOLATED (with a checked
            counterexample) or UNKNOWN (time limit, or a candidate that failed the check).
        counterexample: the checked counterexample when VIOLATED.
        solutions: the HiGHS answer per disjunct tried.
    """

    status: Status
    counterexample: Counterexample | None
    solutions: tuple[LpSolution, ...]


def decide_milp(
    network: Network, prop: Property, bounds: Bounds | None, splits: Splits = None,
    formulation: str = "bigm", time_limit: float = 60.0, threads: int = 1,
    box: InputBox | None = None,
) -> MilpVerdict:
    """Decide a BaB node exactly by one MILP per disjunct under a time limit.

    Each MILP requires ``t <= MILP_UNSAT_SLACK`` (so infeasible is a sound unsat), stops at
    its first feasible point, and that point's input is checked by a float64 forward pass;
    if the check fails the disjunct is re-solved to optimality (the most violating point).
    The solver sees the relaxation of :func:`~bnbver.lp.numerics.solver_safe` (no silently
    dropped coefficients, every row widened by a margin), and its "infeasible" counts only
    when that model passed the numerical preconditions; otherwise the disjunct stays
    undecided.
    """
    deadline = time.monotonic() + time_limit
    node_prop = Property(box or prop.box, prop.unsafe, prop.name)
    sols: list[LpSolution] = []
    unknown = False
    for k in range(len(prop.unsafe.disjuncts)):
        model = build_milp(network, node_prop, bounds, splits, formulation, disjunct=k,
                           unsafe_slack=MILP_UNSAT_SLACK)
        safe = solver_safe(model.lp, MARGIN)
        model = replace(model, lp=safe.lp)
        for first in (True, False):
            left = deadline - time.monotonic()
            sol = solve_milp(model, max(left, 1e-3), threads, first_solution=first)
            sols.append(sol)
            cex = None if sol.x is None else validate_counterexample(
                network, node_prop, sol.x[model.columns.x])
            if cex is not None:
                return MilpVerdict(Status.VIOLATED, cex, tuple(sols))
            if sol.status is LpStatus.INFEASIBLE or sol.x is None:
                break
        # "Infeasible" is the solver's word: it closes the node only on a model that passed
        # the numerical preconditions, whose rows carry a margin far above the solver's
        # tolerances (an empty node by our own bounds always closes).
        proven = model.infeasible or (sol.status is LpStatus.INFEASIBLE and safe.trusted)
        unknown |= not proven
    return MilpVerdict(Status.UNKNOWN if unknown else Status.HOLDS, None, tuple(sols))


# ------------------------------------------------------------------- export: one file, headers


@dataclass(frozen=True, eq=False)
class DisjunctionMilp:
    r"""A MILP of a node with the whole unsafe disjunction in one model.

    Attributes:
        model: the program; ``model.columns.t`` is the margin, minimised.
        selectors: (K,) columns of the binaries :math:`\delta_k` (one per disjunct).
    """

    model: MilpModel
    selectors: np.ndarray


def _add_disjunction(b: ModelBuilder, y: np.ndarray, disjuncts: Sequence[HalfSpaces],
                     t_max: float) -> tuple[int, np.ndarray]:
    r"""Add t, one binary per disjunct and the rows of :func:`build_disjunction_milp`.

    With :math:`[L_{ki}, U_{ki}]` the interval of row i of disjunct k over y's bounds and
    :math:`T = \min_k \max_i L_{ki}` (no margin is below it), the constant
    :math:`M_{ki} = \max(U_{ki} - T, 0)` makes a row slack when its disjunct is not selected:
    :math:`C_{ki} y - d_{ki} - M_{ki} \le U_{ki} - M_{ki} \le T \le t`.
    """
    ylo, yhi = b.bounds(y)
    ranges = [affine_interval(sp.csr_matrix(h.C), -h.d, ylo, yhi) for h in disjuncts]
    floor = [float(lo.max()) for lo, _ in ranges]
    t_lo = min(floor)
    t_hi = min(t_max, max(float(hi.max()) for _, hi in ranges))
    t = int(b.add_cols(np.array([t_lo]), np.array([t_hi]))[0])
    # a disjunct whose margin cannot reach t_hi is never selected
    sel = b.add_cols(np.zeros(len(disjuncts)),
                     np.array([1.0 if f <= t_hi else 0.0 for f in floor]), integer=True)
    if t_lo > t_hi:
        b.infeasible = True
    b.add_rows(np.zeros(len(disjuncts), np.int64), sel, np.ones(len(disjuncts)), [1.0], [1.0])
    for h, (_, hi), s in zip(disjuncts, ranges, sel, strict=True):
        big = np.maximum(hi - t_lo, 0.0)
        coo = sp.coo_matrix(h.C)
        k = h.C.shape[0]
        b.add_rows(np.concatenate([np.arange(k), np.arange(k), coo.row]),
                   np.concatenate([np.full(k, t), np.full(k, s), y[coo.col]]),
                   np.concatenate([np.ones(k), -big, -coo.data]), -h.d - big,
                   np.full(k, np.inf))
    return t, sel


def build_disjunction_milp(
    network: Network, prop: Property, bounds: Bounds | None, splits: Splits = None,
    formulation: str = "bigm", *, box: InputBox | None = None, require_unsafe: bool = True,
    unsafe_slack: float = 0.0, valid_inequalities: bool = False,
) -> DisjunctionMilp:
    r"""Build one MILP of a node for the whole unsafe set ``C_1 y <= d_1 or ... or C_K y <= d_K``.

    The network is encoded once (as in :func:`build_milp`); binaries
    :math:`\delta_k \in \{0, 1\}` with :math:`\sum_k \delta_k = 1` select a disjunct, and

    .. math::
        t \ge C_{ki} y - d_{ki} - M_{ki}(1 - \delta_k)\quad\text{(all k, i)},\qquad
        t \le s\ \text{(with require_unsafe)},

    minimising t (the big-M constants are in :func:`_add_disjunction`). So the optimum is the
    minimum over k of the per-disjunct optima of :func:`build_milp`, and the model is feasible
    exactly when one of the per-disjunct models is: one file instead of K.

    Args:
        network, prop, bounds, splits, formulation, box, valid_inequalities: as for
            :func:`build_milp`.
        require_unsafe: add ``t <= unsafe_slack`` (feasible points are counterexamples).
        unsafe_slack: see ``require_unsafe``.

    Returns:
        The :class:`DisjunctionMilp`.
    """
    nbox = box or prop.box
    b, neurons, (x, y, relus) = _encode(network, nbox, bounds, splits, formulation,
                                        valid_inequalities)
    t, sel = _add_disjunction(b, y, prop.unsafe.disjuncts,
                              unsafe_slack if require_unsafe else np.inf)
    cost = np.zeros(b.n_cols)
    cost[t] = 1.0
    lp = b.finish(cost)
    names = list(_names(lp.num_cols, x, y, relus, t))
    for k, c in enumerate(sel):
        names[c] = f"delta_{k}"
    lp = replace(lp, col_names=tuple(names))
    model = MilpModel(lp, ColumnMap(x, y, tuple(relus), t), tuple(neurons), formulation,
                      b.infeasible or bool(np.any(lp.col_lower > lp.col_upper)))
    return DisjunctionMilp(model, sel)


def export_annotated(model: MilpModel, path: str | Path, comments: Sequence[str] = (),
                     name: str = "") -> Path:
    """Write the model like :func:`export_milp`, with comment lines at the top.

    The comments (e.g. where the bounds came from) are ``* ...`` lines in an MPS file and
    ``\\ ...`` lines in an LP file, which solvers skip; ``name`` (MPS only) fills the NAME
    record. Below the comments and NAME, the file is what :func:`export_milp` writes.

    Raises:
        InputError: the suffix is not .mps or .lp.
    """
    p = export_milp(model, path)
    mark = "*" if p.suffix.lower() == ".mps" else "\\"
    text = p.read_text()
    if name and mark == "*" and text.startswith("NAME"):
        _, _, rest = text.partition("\n")
        text = f"NAME        {_mps_name(name)}\n{rest}"
    header = "".join(f"{mark} {line}\n" for c in comments for line in c.splitlines())
    p.write_text(header + text)
    return p


def _mps_name(name: str) -> str:
    """Return ``name`` as one MPS token (no blanks)."""
    return "".join(c if c.isalnum() or c in "-_.:" else "_" for c in name)[:64]
