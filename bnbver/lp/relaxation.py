r"""The triangle (Planet) LP relaxation of a BaB node, and sound bounds from it.

Columns: the input x (box bounds), one column per affine output (pre-activations z, with
``z_i - \sum_j W_ij h_j = b_i`` as an equality row), one per unstable ReLU output, one per
pooled output, and the margin variable t. Every column has finite bounds (from the given
pre-activation bounds intersected with float64 interval arithmetic).

ReLU :math:`a = \max(z, 0)` with :math:`z \in [l, u]`:

* stable or split active (:math:`l \ge 0` or split +): :math:`a = z` (the same column),
  :math:`z \ge 0`;
* stable or split inactive (:math:`u \le 0` or split -): :math:`a = 0` (a shared column fixed at
  0), :math:`z \le 0`;
* unstable (:math:`l < 0 < u`): the triangle

  .. math::
      a \ge 0,\quad a \ge z,\quad a \le \frac{u}{u-l}(z - l).

For warm-started BaB (:class:`NodeLp`) unstable neurons keep their column and rows, and a
split only changes bounds: active sets ``z >= 0`` and the row ``a - z`` to ``[0, 0]`` (the
triangle row is then implied); inactive sets ``z <= 0`` and ``a = 0``.

Max pooling :math:`y = \max_{j \in W} h_j` with :math:`h_j \in [l_j, u_j]`:
:math:`y \ge h_j` for all j, :math:`y \le \max_j l_j + \sum_j (h_j - l_j)`,
:math:`y \le \max_j u_j`; when one input's lower bound reaches every other upper bound,
:math:`y = h_k` exactly.

Objective, for a disjunct :math:`C y \le d` of the unsafe set: the margin
:math:`\min t` subject to :math:`t \ge C_i y - d_i` for every row i. The node is safe for the
disjunct when the minimum is > 0. A linear objective :math:`c^\top y + c_0` is also accepted.

Soundness: every row is valid for the exact network in real arithmetic (the chord's right-hand
side is computed with rounding upwards for the slope actually used, interval bounds are
rounded outwards, and a layer's recorded float64 error widens its equality rows), and
:func:`interpret` trusts no solver number: a node's bound is the Lagrangian bound recomputed
in float64 from the solver's duals, with its own rounding error subtracted
(:func:`~bnbver.lp.model.lagrangian_bound`), whatever the solver's tolerances or the matrix
entries it ignored; infeasibility is accepted only with a Farkas certificate that the same
function checks. The primal objective is informative only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from bnbver.lp.highs import HighsOptions, WarmLp
from bnbver.lp.intervals import (
    affine_interval,
    affine_parts,
    down,
    gamma,
    layer_error,
    maxpool_interval,
    up,
)
from bnbver.lp.model import LinearProgram, LpSolution, LpStatus, lagrangian_bound
from bnbver.network import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from bnbver.spec import HalfSpaces, InputBox
from bnbver.splits import SplitSet, split_masks

Bounds = tuple[Sequence[np.ndarray], Sequence[np.ndarray]]
Splits = SplitSet | Sequence[np.ndarray] | None
Objective = HalfSpaces | tuple[np.ndarray, float] | None


class ModelBuilder:
    """Accumulates columns and sparse rows of a :class:`LinearProgram` (a private workspace)."""

    def __init__(self) -> None:
        self._lo = np.empty(0)
        self._hi = np.empty(0)
        self._int: list[np.ndarray] = []
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._rl: list[np.ndarray] = []
        self._ru: list[np.ndarray] = []
        self.n_cols = 0
        self.n_rows = 0
        self._zero = -1
        self.infeasible = False

    def add_cols(self, lower: np.ndarray, upper: np.ndarray, integer: bool = False) -> np.ndarray:
        """Append columns with the given bounds (k,); return their indices."""
        lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), lower.shape)
        need = self.n_cols + lower.size
        if need > self._lo.size:
            grow = max(need, 2 * self._lo.size, 64) - self._lo.size
            self._lo = np.concatenate([self._lo, np.zeros(grow)])
            self._hi = np.concatenate([self._hi, np.zeros(grow)])
        idx = np.arange(self.n_cols, need)
        self._lo[idx] = lower
        self._hi[idx] = upper
        self._int.append(np.full(lower.size, int(integer), dtype=np.uint8))
        self.n_cols = need
        return idx

    def zero(self) -> int:
        """Return the index of a column fixed at 0 (created on first use)."""
        if self._zero < 0:
            self._zero = int(self.add_cols(np.zeros(1), np.zeros(1))[0])
        return self._zero

    def bounds(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return copies of the bounds of ``cols``."""
        return self._lo[cols].copy(), self._hi[cols].copy()

    def tighten(self, cols: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Intersect the bounds of ``cols`` with [lower, upper]; flag an empty result."""
        np.maximum.at(self._lo, cols, lower)
        np.minimum.at(self._hi, cols, upper)
        if np.any(self._lo[cols] > self._hi[cols]):
            self.infeasible = True

    def set_bounds(self, cols: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Overwrite the bounds of ``cols``."""
        self._lo[cols] = lower
        self._hi[cols] = upper

    def add_rows(self, r: ArrayLike, c: ArrayLike, v: ArrayLike,
                 lower: ArrayLike, upper: ArrayLike) -> np.ndarray:
        """Append rows ``lower <= A x <= upper`` given A's triplets (r local to these rows)."""
        lower = np.atleast_1d(np.asarray(lower, dtype=np.float64))
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), lower.shape).copy()
        self._rows.append((np.asarray(r) + self.n_rows, np.asarray(c), np.asarray(v, float)))
        self._rl.append(lower)
        self._ru.append(upper)
        idx = np.arange(self.n_rows, self.n_rows + lower.size)
        self.n_rows += lower.size
        return idx

    def finish(self, cost: np.ndarray, offset: float = 0.0) -> LinearProgram:
        """Return the accumulated program with objective ``cost @ x + offset``."""
        r = np.concatenate([t[0] for t in self._rows]) if self._rows else np.zeros(0, int)
        c = np.concatenate([t[1] for t in self._rows]) if self._rows else np.zeros(0, int)
        v = np.concatenate([t[2] for t in self._rows]) if self._rows else np.zeros(0)
        A = sp.csr_matrix((v, (r, c)), shape=(self.n_rows, self.n_cols))
        A.sum_duplicates()
        integ = np.concatenate(self._int) if self._int else np.zeros(0, np.uint8)
        rl = np.concatenate(self._rl) if self._rl else np.zeros(0)
        ru = np.concatenate(self._ru) if self._ru else np.zeros(0)
        n = self.n_cols
        return LinearProgram(np.asarray(cost, float), A, rl, ru, self._lo[:n].copy(),
                             self._hi[:n].copy(), integ if integ.any() else None, offset)


@dataclass(frozen=True, eq=False)
class AffineSource:
    """The affine map feeding a ReLU layer: ``z = W h[cols] + bias`` (W sparse (n, k))."""

    W: sp.csr_matrix
    bias: np.ndarray
    cols: np.ndarray


@dataclass(frozen=True, eq=False)
class ReluRows:
    """Where one ReLU layer lives in the program (all (n_l,) arrays; -1 = none).

    Attributes:
        z: pre-activation columns.
        a: output columns (the z column when active, the zero column when inactive).
        binary: the indicator column of each neuron (MILP), -1 for fixed neurons.
        row_ge: the row ``a - z >= 0`` of a relaxed unstable neuron (for warm splits).
        row_tri: the triangle row ``a - s z <= -s l`` of a relaxed neuron.
        lower: pre-activation lower bounds used.
        upper: pre-activation upper bounds used.
        reserved: True where the neuron has its own triangle (splittable by bounds).
    """

    z: np.ndarray
    a: np.ndarray
    binary: np.ndarray
    row_ge: np.ndarray
    row_tri: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    reserved: np.ndarray


@dataclass(frozen=True, eq=False)
class ColumnMap:
    """Which columns hold the network's quantities.

    Attributes:
        x: (n_in,) input columns.
        y: (n_out,) output columns.
        relus: one :class:`ReluRows` per ReLU layer.
        margin: the column of t (-1 without a margin objective).
    """

    x: np.ndarray
    y: np.ndarray
    relus: tuple[ReluRows, ...]
    margin: int = -1

    @property
    def pre(self) -> tuple[np.ndarray, ...]:
        """Pre-activation columns per ReLU layer."""
        return tuple(r.z for r in self.relus)

    @property
    def binaries(self) -> tuple[np.ndarray, ...]:
        """Indicator columns per ReLU layer (-1 where the neuron is fixed)."""
        return tuple(r.binary for r in self.relus)


@dataclass(frozen=True, eq=False)
class Relaxation:
    """A built program with its column map; ``infeasible`` when bounds and splits clash."""

    lp: LinearProgram
    columns: ColumnMap
    infeasible: bool = False


#: relu encoder: (builder, z cols, lower, upper, split mask, affine source) -> ReluRows
ReluEncoder = Callable[[ModelBuilder, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                        "AffineSource | None"], ReluRows]
#: max-pool encoder: (builder, layer, input cols) -> output cols
PoolEncoder = Callable[[ModelBuilder, MaxPool2d, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Encoders:
    """How non-affine layers are encoded (the LP relaxation or a MILP formulation)."""

    relu: ReluEncoder
    maxpool: PoolEncoder
    extra: dict[str, object] = field(default_factory=dict)


def encode_affine(
    b: ModelBuilder, cols: np.ndarray, W: sp.csr_matrix, bias: np.ndarray,
    layer: Dense | Conv2d | None = None,
) -> tuple[np.ndarray, AffineSource]:
    """Add columns z with rows ``z - W h = bias``; bounds from interval arithmetic.

    When ``layer`` records an error of its float64 numbers (``weight_err``/``bias_err``),
    the rows become ``|z - W h - bias| <= layer_error`` so the program still contains every
    point of the exact layer.
    """
    keep = cols != b._zero if b._zero >= 0 else np.ones(cols.size, dtype=bool)
    Wk = sp.csr_matrix(W[:, np.flatnonzero(keep)]) if not keep.all() else sp.csr_matrix(W)
    cin = cols[keep]
    h_lo, h_hi = b.bounds(cin)
    err = None
    if layer is not None and (layer.weight_err or layer.bias_err is not None):
        err = layer_error(layer, W, np.maximum(np.abs(h_lo), np.abs(h_hi)))
    lo, hi = affine_interval(Wk, bias, h_lo, h_hi, err)
    z = b.add_cols(lo, hi)
    coo = Wk.tocoo()
    n = z.size
    row_lo, row_hi = (bias, bias) if err is None else (down(bias - err), up(bias + err))
    b.add_rows(np.concatenate([np.arange(n), coo.row]), np.concatenate([z, cin[coo.col]]),
               np.concatenate([np.ones(n), -coo.data]), row_lo, row_hi)
    return z, AffineSource(Wk, np.asarray(bias, dtype=np.float64), cin)


def chord_rhs(slope: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Return the right-hand side r of a valid triangle row ``a - s z <= r`` for the given
    (rounded) slope s: ``max(relu(t) - s t)`` over ``t in [l, u]`` is attained at l or u,
    ``max(-s l, u - s u)``, computed with rounding upwards."""
    at_lo = up(-slope * lower)
    at_hi = up(upper - down(slope * upper))
    return up(np.maximum(at_lo, at_hi))


def relu_pieces(
    lower: np.ndarray, upper: np.ndarray, mask: np.ndarray, reserve: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classify neurons as (active, inactive, relaxed) boolean (n,) arrays.

    Relaxed neurons are unstable by their bounds and either free or, with ``reserve``, kept
    relaxed so that a later split can fix them by changing bounds only.
    """
    unstable = (lower < 0) & (upper > 0)
    relaxed = unstable if reserve else unstable & (mask == 0)
    active = ~relaxed & ((mask > 0) | ((mask == 0) & (lower >= 0)))
    inactive = ~relaxed & ~active
    return active, inactive, relaxed


def fix_stable(
    b: ModelBuilder, z: np.ndarray, active: np.ndarray, inactive: np.ndarray
) -> np.ndarray:
    """Encode fixed neurons exactly (``a = z``, z >= 0 / ``a = 0``, z <= 0); return a cols."""
    n = z.size
    b.tighten(z[active], np.zeros(int(active.sum())), np.full(int(active.sum()), np.inf))
    b.tighten(z[inactive], np.full(int(inactive.sum()), -np.inf), np.zeros(int(inactive.sum())))
    a = np.full(n, -1, dtype=np.int64)
    a[active] = z[active]
    if inactive.any():
        a[inactive] = b.zero()
    return a


def relu_triangle(
    b: ModelBuilder, z: np.ndarray, lower: np.ndarray, upper: np.ndarray, mask: np.ndarray,
    src: AffineSource | None, reserve: bool = False,
) -> ReluRows:
    """Encode a ReLU layer by the triangle relaxation (see the module docstring)."""
    active, inactive, relaxed = relu_pieces(lower, upper, mask, reserve)
    a = fix_stable(b, z, active, inactive)
    row_ge = np.full(z.size, -1, dtype=np.int64)
    row_tri = row_ge.copy()
    k = int(relaxed.sum())
    if k:
        zr, lo, hi = z[relaxed], lower[relaxed], upper[relaxed]
        ar = b.add_cols(np.zeros(k), hi)
        s = hi / (hi - lo)
        rhs = chord_rhs(s, lo, hi)
        r2 = np.repeat(np.arange(k), 2)
        row_ge[relaxed] = b.add_rows(r2, np.stack([ar, zr], 1).ravel(),
                                     np.tile([1.0, -1.0], k), np.zeros(k), np.full(k, np.inf))
        row_tri[relaxed] = b.add_rows(r2, np.stack([ar, zr], 1).ravel(),
                                      np.stack([np.ones(k), -s], 1).ravel(),
                                      np.full(k, -np.inf), rhs)
        a[relaxed] = ar
    lo, hi = b.bounds(z)
    return ReluRows(z, a, np.full(z.size, -1, dtype=np.int64), row_ge, row_tri, lo, hi, relaxed)


def pool_windows(
    b: ModelBuilder, layer: MaxPool2d, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return window columns (n_out, k) (-1 padding), their bounds, and the dominant input.

    Returns:
        win: (n_out, k) input columns, -1 for padding.
        wl: (n_out, k) lower bounds (-inf for padding).
        wu: (n_out, k) upper bounds (-inf for padding).
        out_bounds: (2, n_out) interval of each pooled output.
        dominant: (n_out,) the column that is the max for sure, or -1.
    """
    idx = layer.window_indices()
    valid = idx >= 0
    cl, cu = b.bounds(cols)
    lo, hi = maxpool_interval(layer, cl, cu)
    win = np.where(valid, np.concatenate([cols, [-1]])[idx], -1)
    wl = np.where(valid, np.concatenate([cl, [-np.inf]])[idx], -np.inf)
    wu = np.where(valid, np.concatenate([cu, [-np.inf]])[idx], -np.inf)
    best = np.argmax(wl, axis=1)
    others = wu.copy()
    others[np.arange(idx.shape[0]), best] = -np.inf
    dom = wl[np.arange(idx.shape[0]), best] >= others.max(axis=1)
    dominant = np.where(dom, win[np.arange(idx.shape[0]), best], -1)
    return win, wl, wu, np.stack([lo, hi]), dominant


def maxpool_lp(b: ModelBuilder, layer: MaxPool2d, cols: np.ndarray) -> np.ndarray:
    """Encode max pooling by its LP relaxation (see the module docstring); return out cols."""
    win, wl, _wu, ob, dominant = pool_windows(b, layer, cols)
    out = dominant.copy()
    for o in np.flatnonzero(dominant < 0):
        ok = win[o] >= 0
        h, lh = win[o][ok], wl[o][ok]
        y = int(b.add_cols(ob[0, o:o + 1], ob[1, o:o + 1])[0])
        k = h.size
        b.add_rows(np.repeat(np.arange(k), 2), np.stack([np.full(k, y), h], 1).ravel(),
                   np.tile([1.0, -1.0], k), np.zeros(k), np.full(k, np.inf))
        rhs = lh.max() - lh.sum()
        rhs = up(rhs + 2.0 * gamma(k + 2) * (abs(lh.max()) + np.abs(lh).sum()))
        b.add_rows(np.zeros(k + 1, int), np.concatenate([[y], h]),
                   np.concatenate([[1.0], -np.ones(k)]), [-np.inf], [rhs])
        out[o] = y
    return out


def relaxed_cols(
    b: ModelBuilder, z: np.ndarray, lo: np.ndarray, up: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fix stable neurons; add output and indicator columns for the others."""
    active, inactive, relaxed = relu_pieces(lo, up, m, reserve=False)
    a = fix_stable(b, z, active, inactive)
    sigma = np.full(z.size, -1, dtype=np.int64)
    k = int(relaxed.sum())
    a[relaxed] = b.add_cols(np.zeros(k), up[relaxed])
    sigma[relaxed] = b.add_cols(np.zeros(k), np.ones(k), integer=True)
    return a, sigma, relaxed, np.flatnonzero(relaxed)


def relu_bigm_rows(
    b: ModelBuilder, z: np.ndarray, lo: np.ndarray, up: np.ndarray, m: np.ndarray
) -> ReluRows:
    r"""Encode a ReLU layer by big-M: :math:`a \ge z, a \le z - l(1-\sigma), a \le u\sigma`.

    Fixed neurons are exact; ``binary`` and ``reserved`` of the result mark the others.
    """
    a, sigma, relaxed, idx = relaxed_cols(b, z, lo, up, m)
    k = idx.size
    if k:
        ar, zr, sr, lr, ur = a[idx], z[idx], sigma[idx], lo[idx], up[idx]
        r2, r3 = np.repeat(np.arange(k), 2), np.repeat(np.arange(k), 3)
        b.add_rows(r2, np.stack([ar, zr], 1).ravel(), np.tile([1.0, -1.0], k),
                   np.zeros(k), np.full(k, np.inf))
        b.add_rows(r3, np.stack([ar, zr, sr], 1).ravel(),
                   np.stack([np.ones(k), -np.ones(k), -lr], 1).ravel(), np.full(k, -np.inf), -lr)
        b.add_rows(r2, np.stack([ar, sr], 1).ravel(), np.stack([np.ones(k), -ur], 1).ravel(),
                   np.full(k, -np.inf), np.zeros(k))
    lo, hi = b.bounds(z)
    none = np.full(z.size, -1, dtype=np.int64)
    return ReluRows(z, a, sigma, none, none, lo, hi, relaxed)


def maxpool_milp(b: ModelBuilder, layer: MaxPool2d, cols: np.ndarray) -> np.ndarray:
    """Encode max pooling exactly with one binary per pooled input (Fischetti & Jo)."""
    win, wl, wu, ob, dominant = pool_windows(b, layer, cols)
    out = dominant.copy()
    for o in np.flatnonzero(dominant < 0):
        ok = win[o] >= 0
        h, lh = win[o][ok], wl[o][ok]
        k = h.size
        y = int(b.add_cols(ob[0, o:o + 1], ob[1, o:o + 1])[0])
        d = b.add_cols(np.zeros(k), np.ones(k), integer=True)
        M = wu[o][ok].max() - lh
        yy = np.full(k, y)
        b.add_rows(np.repeat(np.arange(k), 2), np.stack([yy, h], 1).ravel(),
                   np.tile([1.0, -1.0], k), np.zeros(k), np.full(k, np.inf))
        b.add_rows(np.repeat(np.arange(k), 3), np.stack([yy, h, d], 1).ravel(),
                   np.stack([np.ones(k), -np.ones(k), M], 1).ravel(), np.full(k, -np.inf), M)
        b.add_rows(np.zeros(k, int), d, np.ones(k), [1.0], [1.0])
        out[o] = y
    return out


def bigm_encoders() -> Encoders:
    """Return the exact big-M encoders (used by MILP bound tightening)."""
    def relu(b: ModelBuilder, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, m: np.ndarray,
             src: AffineSource | None) -> ReluRows:
        return relu_bigm_rows(b, z, lo, hi, m)

    return Encoders(relu=relu, maxpool=maxpool_milp)


def lp_encoders(reserve: bool = False) -> Encoders:
    """Return the encoders of the LP relaxation (triangle ReLU, LP max pooling)."""
    def relu(b: ModelBuilder, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, m: np.ndarray,
             src: AffineSource | None) -> ReluRows:
        return relu_triangle(b, z, lo, hi, m, src, reserve)

    return Encoders(relu=relu, maxpool=maxpool_lp)


def encode_network(
    b: ModelBuilder, network: Network, box: InputBox, bounds: Bounds | None,
    masks: Sequence[np.ndarray] | None, enc: Encoders,
) -> tuple[np.ndarray, np.ndarray, list[ReluRows]]:
    """Encode the network layer by layer (a dispatch over layer types).

    In a DAG every tensor keeps its columns: a layer reads those of its inputs, a
    concatenation (and a Flatten) reuses them, and a residual sum is the affine map
    ``z = [I I] (h_1, h_2)`` (:func:`encode_affine`, so that it also has an affine source).

    Returns:
        The input columns, the output columns and one :class:`ReluRows` per ReLU layer.
    """
    x = b.add_cols(box.lower, box.upper)
    tensors: list[tuple[np.ndarray, AffineSource | None]] = [(x, None)]
    relus: list[ReluRows] = []
    for layer, ins in zip(network.layers, network.inputs, strict=True):
        cols, src = tensors[ins[0] + 1]
        if isinstance(layer, (Dense, Conv2d)):
            cols, src = encode_affine(b, cols, *affine_parts(layer), layer)
        elif isinstance(layer, ReLU):
            k = len(relus)
            if bounds is not None:
                b.tighten(cols, np.asarray(bounds[0][k]).reshape(-1),
                          np.asarray(bounds[1][k]).reshape(-1))
            m = np.zeros(cols.size, np.int8) if masks is None else masks[k]
            rows = enc.relu(b, cols, *b.bounds(cols), np.asarray(m).reshape(-1), src)
            relus.append(rows)
            cols, src = rows.a, None
        elif isinstance(layer, MaxPool2d):
            cols, src = enc.maxpool(b, layer, cols), None
        elif isinstance(layer, Add):
            parts = np.concatenate([tensors[t + 1][0] for t in ins])
            eye = sp.hstack([sp.identity(layer.size, format="csr")] * len(ins), format="csr")
            cols, src = encode_affine(b, parts, eye, np.zeros(layer.size))
        elif isinstance(layer, Concat):
            cols, src = np.concatenate([tensors[t + 1][0] for t in ins]), None
        elif not isinstance(layer, Flatten):
            raise TypeError(f"cannot encode layer {type(layer).__name__}")
        tensors.append((cols, src))
    return x, tensors[-1][0], relus


def add_abs_rows(b: ModelBuilder, d: np.ndarray, x: np.ndarray, centre: np.ndarray) -> None:
    """Add ``d_i >= x_i - c_i`` and ``d_i >= c_i - x_i`` (so ``d_i >= |x_i - c_i|``).

    ``d`` may repeat one column (an L-infinity distance: one ``e`` above every
    coordinate); with one column per coordinate, ``sum d`` is the L1 distance.
    """
    n = x.size
    r2 = np.repeat(np.arange(n), 2)
    pairs = np.stack([d, x], 1).ravel()
    b.add_rows(r2, pairs, np.tile([1.0, -1.0], n), -centre, np.full(n, np.inf))
    b.add_rows(r2, pairs, np.tile([1.0, 1.0], n), centre, np.full(n, np.inf))


def add_l1_distance(b: ModelBuilder, x: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Add columns ``d_i >= |x_i - c_i|`` (bounded by the box's reach); return them."""
    lo, hi = b.bounds(x)
    d = b.add_cols(np.zeros(x.size), np.maximum(np.maximum(centre - lo, hi - centre), 0.0))
    add_abs_rows(b, d, x, centre)
    return d


def add_l1_ball(b: ModelBuilder, x: np.ndarray, centre: np.ndarray, radius: float) -> None:
    """Restrict ``x`` to ``||x - centre||_1 <= radius`` (L1 distance columns, one row)."""
    d = add_l1_distance(b, x, centre)
    b.add_rows(np.zeros(d.size, np.int64), d, np.ones(d.size), np.array([-np.inf]),
               np.array([radius]))


def add_margin(b: ModelBuilder, y: np.ndarray, disjunct: HalfSpaces,
               require_unsafe: bool) -> int:
    """Add t with ``t >= C_i y - d_i`` for every row; t <= 0 too when ``require_unsafe``."""
    C, d = disjunct.C, disjunct.d
    lo, hi = affine_interval(sp.csr_matrix(C), -d, *b.bounds(y))
    t_hi = min(float(hi.max()), 0.0) if require_unsafe else float(hi.max())
    t = int(b.add_cols(np.array([lo.max()]), np.array([t_hi]))[0])
    if lo.max() > t_hi:
        b.infeasible = True
    coo = sp.coo_matrix(C)
    k = C.shape[0]
    b.add_rows(np.concatenate([np.arange(k), coo.row]),
               np.concatenate([np.full(k, t), y[coo.col]]),
               np.concatenate([np.ones(k), -coo.data]), -d, np.full(k, np.inf))
    return t


def as_masks(splits: Splits, relu_sizes: Sequence[int]) -> list[np.ndarray] | None:
    """Return per-layer (n_l,) int8 split states from a SplitSet or masks (or None)."""
    if splits is None:
        return None
    if isinstance(splits, SplitSet):
        return [m[0] for m in split_masks([splits], relu_sizes)]
    return [np.asarray(m, dtype=np.int8).reshape(-1) for m in splits]


def finish_objective(
    b: ModelBuilder, y: np.ndarray, objective: Objective, require_unsafe: bool
) -> tuple[LinearProgram, int]:
    """Add the objective (margin of a disjunct, or ``c @ y + c0``); return the program and t."""
    if isinstance(objective, HalfSpaces):
        t = add_margin(b, y, objective, require_unsafe)
        cost = np.zeros(b.n_cols)
        cost[t] = 1.0
        return b.finish(cost), t
    cost = np.zeros(b.n_cols)
    if objective is None:
        return b.finish(cost), -1
    np.add.at(cost, y, np.asarray(objective[0], dtype=np.float64))
    return b.finish(cost, float(objective[1])), -1


def build_relaxation(
    network: Network, box: InputBox, bounds: Bounds | None, splits: Splits = None,
    objective: Objective = None, *, reserve: bool = False, require_unsafe: bool = False,
) -> Relaxation:
    """Build the triangle LP relaxation of a node.

    Args:
        network: the network.
        box: the node's input box.
        bounds: per-ReLU-layer (lower list, upper list) of (n_l,) pre-activation bounds, valid
            on the box (they are intersected with interval arithmetic); None: intervals only.
        splits: a SplitSet or per-layer (n_l,) masks (+1 active, -1 inactive, 0 free).
        objective: a disjunct ``C y <= d`` (minimise its margin t), a pair ``(c, c0)``
            (minimise ``c @ y + c0``) or None (feasibility).
        reserve: give every unstable neuron its triangle even when split, so that
            :class:`NodeLp` can re-split by changing bounds (splits must then be None).
        require_unsafe: add ``t <= 0`` (the feasible set is then the node's counterexamples).

    Returns:
        The :class:`Relaxation`.
    """
    if reserve and splits is not None:
        raise ValueError("reserve=True builds the root model; apply splits with NodeLp.bound")
    b = ModelBuilder()
    masks = as_masks(splits, network.relu_sizes)
    x, y, relus = encode_network(b, network, box, bounds, masks, lp_encoders(reserve))
    lp, t = finish_objective(b, y, objective, require_unsafe)
    return Relaxation(lp, ColumnMap(x, y, tuple(relus), t), b.infeasible)


@dataclass(frozen=True, eq=False)
class LpBound:
    """A sound reading of one LP solve.

    Attributes:
        status: the solver status (INFEASIBLE only with a checked Farkas certificate, or
            when the bounds and splits clash before any solve).
        lower: a proven lower bound on the objective: the dual bound; +inf for a proven
            empty node; -inf when unknown.
        objective: the solver's primal objective (informative, never trusted alone).
        dual_bound: the Lagrangian bound recomputed in float64 from the duals (-inf if none).
        x: the full primal solution, or None.
        candidate: its input part (a counterexample candidate to check by forward pass).
        seconds: solver time.
        iterations: simplex iterations.
        row_duals: the solver's row duals (for a certificate), or the checked Farkas ray
            of an infeasible program.
    """

    status: LpStatus
    lower: float
    objective: float | None = None
    dual_bound: float = -np.inf
    x: np.ndarray | None = None
    candidate: np.ndarray | None = None
    seconds: float = 0.0
    iterations: int = 0
    row_duals: np.ndarray | None = None

    @property
    def closes(self) -> bool:
        """True when the bound proves the objective > 0 (node safe for this objective)."""
        return self.lower > 0.0


def interpret(
    lp: LinearProgram, sol: LpSolution, x_cols: np.ndarray, ray: np.ndarray | None = None
) -> LpBound:
    """Turn a solver answer into an :class:`LpBound` (see the module docstring).

    Args:
        lp: the program that was solved (exactly; used for the float64 recomputation).
        sol: the solver's answer.
        x_cols: the input columns.
        ray: HiGHS's dual ray when the status is infeasible.
    """
    iters = int(sol.extra.get("iterations", 0))
    if sol.status is LpStatus.INFEASIBLE:
        signs = [s for s in (1.0, -1.0) if ray is not None
                 and lagrangian_bound(lp, s * ray, np.zeros(lp.num_cols)) > 0.0]
        proven = bool(signs)
        status = LpStatus.INFEASIBLE if proven else LpStatus.ERROR
        farkas = signs[0] * ray if proven and ray is not None else None
        return LpBound(status, np.inf if proven else -np.inf, seconds=sol.seconds,
                       iterations=iters, row_duals=farkas)
    dual = lagrangian_bound(lp, sol.row_duals) if sol.row_duals is not None else -np.inf
    lower = dual
    cand = None if sol.x is None else sol.x[x_cols].copy()
    return LpBound(sol.status, lower, sol.objective, dual, sol.x, cand, sol.seconds, iters,
                   sol.row_duals)


def infeasible_bound() -> LpBound:
    """Return the bound of a node whose splits contradict its (valid) bounds."""
    return LpBound(LpStatus.INFEASIBLE, np.inf)


def lp_lower_bound(relax: Relaxation, options: HighsOptions | None = None) -> LpBound:
    """Solve a relaxation cold and return a sound :class:`LpBound` on its objective."""
    if relax.infeasible:
        return infeasible_bound()
    opts = options or HighsOptions(presolve=False)
    if relax.lp.integrality is not None:
        raise ValueError("lp_lower_bound takes an LP; use bnbver.milp.solve_milp for a MILP")
    warm = WarmLp(relax.lp, opts)
    sol = warm.run()
    ray = warm.dual_ray() if sol.status is LpStatus.INFEASIBLE else None
    return interpret(relax.lp, sol, relax.columns.x, ray)


def solve_fixed_node(
    network: Network, box: InputBox, bounds: Bounds | None, splits: Splits,
    disjunct: HalfSpaces, options: HighsOptions | None = None,
) -> LpBound:
    """Decide a node whose every ReLU is fixed (stable by its bounds or split) by one LP.

    With all neurons fixed the network is affine on the node, so the LP is exact: ``closes``
    means no counterexample for this disjunct in the node; otherwise ``candidate`` minimises
    the margin and should be checked by a float64 forward pass.

    Raises:
        ValueError: some neuron is neither stable nor split.
    """
    return lp_lower_bound(fixed_node_relaxation(network, box, bounds, splits, disjunct),
                          options)


def fixed_node_relaxation(network: Network, box: InputBox, bounds: Bounds | None,
                          splits: Splits, disjunct: HalfSpaces) -> Relaxation:
    """Return the (exact) LP of a node whose every ReLU is fixed (see solve_fixed_node).

    Raises:
        ValueError: some neuron is neither stable nor split.
    """
    relax = build_relaxation(network, box, bounds, splits, disjunct)
    free = [int(r.reserved.sum()) for r in relax.columns.relus]
    if any(free):
        raise ValueError(f"solve_fixed_node: unfixed neurons per layer {free}")
    return relax


def dual_proof(relax: Relaxation,
               row_duals: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Return an LP's duals as a certificate (``bnbver.check``): the weights of the margin
    rows and, per ReLU layer, the multipliers of the rows defining the pre-activations.

    Each pre-activation column is defined by the first row that holds it (``encode_affine``
    adds it before any row that uses it); the margin rows are those of the column t. With
    every neuron fixed, these multipliers are the coefficients ``nu`` of the dual form, and
    the checker's bound from them equals the LP's Lagrangian bound. None when a ReLU layer
    is not fed by an affine layer (after a max pool; certificates do not cover pooling).
    """
    A = relax.lp.A.tocsc()
    nus = []
    for r in relax.columns.relus:
        held = [A.indices[A.indptr[j]:A.indptr[j + 1]] for j in r.z]
        if any(h.size == 0 for h in held):
            return None  # a ReLU fed by a max pool: no affine row defines it
        nus.append(np.asarray(row_duals)[[int(h.min()) for h in held]])
    t = relax.columns.margin
    margin_rows = np.sort(A.indices[A.indptr[t]:A.indptr[t + 1]])
    weights = np.maximum(np.asarray(row_duals)[margin_rows], 0.0)
    return weights, np.concatenate(nus) if nus else np.zeros(0)


class NodeLp:
    """A warm-started LP for the nodes under one root: children change bounds only.

    Build it once from the root's relaxation (``reserve=True``), then call :meth:`bound`
    with each node's splits (and optionally tighter pre-activation bounds); the HiGHS model
    and its basis are reused, so a child is a dual simplex warm start from the last solve.

    Args:
        relax: a relaxation built with ``reserve=True`` (its triangles use the root bounds).
        options: HiGHS options.
    """

    def __init__(self, relax: Relaxation, options: HighsOptions | None = None) -> None:
        self.relax = relax
        self.warm = WarmLp(relax.lp, options or HighsOptions(presolve=False))
        self._zero_cost = np.zeros(relax.lp.num_cols)

    def _layer_targets(
        self, r: ReluRows, m: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None
    ) -> tuple[np.ndarray, ...]:
        """Return one layer's wanted z bounds, a upper bounds, row_ge uppers and new slopes."""
        cl, cu = self.relax.lp.col_lower, self.relax.lp.col_upper
        zl, zu = cl[r.z].copy(), cu[r.z].copy()
        if lower is not None and upper is not None:
            zl = np.maximum(zl, np.asarray(lower).reshape(-1))
            zu = np.minimum(zu, np.asarray(upper).reshape(-1))
        zl = np.where(m > 0, np.maximum(zl, 0.0), zl)
        zu = np.where(m < 0, np.minimum(zu, 0.0), zu)
        res = r.reserved
        on = (m > 0) | ((m == 0) & (zl >= 0))
        off = ~on & ((m < 0) | (zu <= 0))
        au = np.where(off, 0.0, np.maximum(zu, 0.0))[res]
        ge_upper = np.where(on, 0.0, np.inf)[res]
        free = res & ~on & ~off
        return zl, zu, au, ge_upper, free, zl[free], zu[free]

    def _apply(self, masks: list[np.ndarray] | None, lower: Sequence[np.ndarray] | None,
               upper: Sequence[np.ndarray] | None) -> bool:
        """Set the node's bounds, split rows and triangle slopes; False when it is empty."""
        for k, r in enumerate(self.relax.columns.relus):
            m = np.zeros(r.z.size, np.int8) if masks is None else masks[k]
            zl, zu, au, ge_u, free, fl, fu = self._layer_targets(
                r, m, None if lower is None else lower[k], None if upper is None else upper[k])
            if np.any(zl > zu):
                return False
            self.warm.set_col_bounds(r.z, zl, zu)
            res = r.reserved
            self.warm.set_col_bounds(r.a[res], np.zeros(int(res.sum())), au)
            self.warm.set_row_bounds(r.row_ge[res], np.zeros(int(res.sum())), ge_u)
            s = fu / (fu - fl)
            self.warm.set_coeffs(r.row_tri[free], r.z[free], -s)
            self.warm.set_row_bounds(r.row_tri[free], np.full(s.size, -np.inf),
                                     chord_rhs(s, fl, fu))
            # A neuron fixed in this node keeps the triangle row of the last node where it
            # was free; with a = z or a = 0 that stale row would impose that node's bounds
            # here (found by a brute-force test in the apps): switch it off.
            fixed = res & ~free
            n_fixed = int(fixed.sum())
            self.warm.set_row_bounds(r.row_tri[fixed], np.full(n_fixed, -np.inf),
                                     np.full(n_fixed, np.inf))
        return True

    def bound(
        self, splits: Splits = None, lower: Sequence[np.ndarray] | None = None,
        upper: Sequence[np.ndarray] | None = None, time_limit: float = np.inf,
    ) -> LpBound:
        """Return a sound LP bound of the node with ``splits`` (relative to the root).

        Args:
            splits: the node's splits (SplitSet or per-layer masks).
            lower: optional per-layer pre-activation lower bounds of the node (valid on the
                node); they tighten the z columns and the triangles' slopes.
            upper: likewise, upper bounds.
            time_limit: seconds for this solve.
        """
        masks = as_masks(splits, [r.z.size for r in self.relax.columns.relus])
        if not self._apply(masks, lower, upper):
            return infeasible_bound()
        sol = self.warm.run(time_limit)
        ray = self.warm.dual_ray() if sol.status is LpStatus.INFEASIBLE else None
        return interpret(self.warm.current_lp(), sol, self.relax.columns.x, ray)

    def minimize(self, cost: np.ndarray, offset: float = 0.0) -> LpBound:
        """Minimise another objective ``cost @ x + offset`` over the current node (warm)."""
        self.warm.set_cost(cost, offset)
        sol = self.warm.run()
        ray = self.warm.dual_ray() if sol.status is LpStatus.INFEASIBLE else None
        return interpret(self.warm.current_lp(), sol, self.relax.columns.x, ray)
