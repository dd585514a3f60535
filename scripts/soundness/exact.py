"""Exact rational arithmetic on a :class:`~netspec.NetSpec` (no bnbver imports).

Every float64 weight is converted with ``Fraction(float)``, which is exact, so the forward
pass here is the network's value in real arithmetic on the weights as written to ONNX.

The network becomes a chain of exact operators on flat vectors:

- ``Affine(rows, bias)``: ``y_i = sum_j w_ij x_j + b_i`` with only the non-zero ``w_ij``
  stored (Dense, Conv and the elementwise Add/Sub/Mul all become this);
- ``Pool(windows)``: ``y_o = max_{j in windows[o]} x_j`` (padded cells are left out of the
  window, so they never win, as in ONNX);
- ``RELU``: elementwise ``max(x, 0)``;
- a residual block ``body(h) + shortcut(h)`` is ``PUSH`` (keep h), the body's operators,
  then ``AddPop(shortcut)`` (add the shortcut's affine map of the kept h, or h itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .netspec import Conv, Dense, Elementwise, Flatten, MaxPool, NetSpec, OutRow, Relu, Residual

Row = tuple[tuple[int, Fraction], ...]


@dataclass(frozen=True)
class Affine:
    """``y_i = sum_(j, w) in rows[i] w x_j + bias[i]``."""

    rows: tuple[Row, ...]
    bias: tuple[Fraction, ...]


@dataclass(frozen=True)
class Pool:
    """``y_o = max_(j in windows[o]) x_j``."""

    windows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ReluOp:
    """Elementwise ``max(x, 0)``."""


@dataclass(frozen=True)
class PushOp:
    """Keep the current vector for the join of a residual block."""


@dataclass(frozen=True)
class AddPop:
    """Add the kept vector (through ``shortcut`` when given) to the current one."""

    shortcut: Affine | None


RELU = ReluOp()
PUSH = PushOp()
ExactOp = Affine | Pool | ReluOp | PushOp | AddPop


def fr(v: float) -> Fraction:
    """Return the exact value of the float ``v`` (``Fraction`` of a float is exact)."""
    return Fraction(float(v))


def exact_ops(net: NetSpec) -> tuple[ExactOp, ...]:
    """Return the network as exact operators on flat vectors."""
    return _exact(net.ops)


def _exact(ops: Sequence[object]) -> tuple[ExactOp, ...]:
    out: list[ExactOp] = []
    for op in ops:
        if isinstance(op, Residual):
            short = None if op.shortcut is None else _dense(op.shortcut.weight,
                                                            op.shortcut.bias)
            out += [PUSH, *_exact(op.body), AddPop(short)]
        elif isinstance(op, Dense):
            out.append(_dense(op.weight, op.bias))
        elif isinstance(op, Conv):
            out.append(_conv(op))
        elif isinstance(op, Elementwise):
            out.append(_elementwise(op))
        elif isinstance(op, MaxPool):
            out.append(Pool(_pool_windows(op)))
        elif isinstance(op, Relu):
            out.append(RELU)
        else:
            assert isinstance(op, Flatten)
    return tuple(out)


def _dense(w: np.ndarray, b: np.ndarray) -> Affine:
    rows = tuple(tuple((j, fr(v)) for j, v in enumerate(r) if v != 0) for r in w.tolist())
    return Affine(rows, tuple(fr(v) for v in b.tolist()))


def _elementwise(op: Elementwise) -> Affine:
    c = [fr(v) for v in op.const.reshape(-1).tolist()]
    if op.op == "Mul":
        return Affine(tuple(((i, v),) if v != 0 else () for i, v in enumerate(c)),
                      tuple(Fraction(0) for _ in c))
    sign = 1 if op.op == "Add" else -1
    assert op.op in ("Add", "Sub")
    return Affine(tuple(((i, Fraction(1)),) for i in range(len(c))), tuple(sign * v for v in c))


def _conv(op: Conv) -> Affine:
    """Return the convolution as a sparse matrix (zero padding: padded cells drop out)."""
    ci_n, h, w = op.in_shape
    co_n, _, kh, kw = op.weight.shape
    _, oh_n, ow_n = op.out_shape
    wf = [[[[fr(v) for v in r] for r in k] for k in c] for c in op.weight.tolist()]
    rows, bias = [], []
    for co in range(co_n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                row = []
                for ci in range(ci_n):
                    for a in range(kh):
                        for b in range(kw):
                            ih = oh * op.stride[0] - op.pads[0] + a
                            iw = ow * op.stride[1] - op.pads[1] + b
                            v = wf[co][ci][a][b]
                            if 0 <= ih < h and 0 <= iw < w and v != 0:
                                row.append((ci * h * w + ih * w + iw, v))
                rows.append(tuple(row))
                bias.append(fr(op.bias[co]))
    return Affine(tuple(rows), tuple(bias))


def _pool_windows(op: MaxPool) -> tuple[tuple[int, ...], ...]:
    c_n, h, w = op.in_shape
    _, oh_n, ow_n = op.out_shape
    out = []
    for c in range(c_n):
        for oh in range(oh_n):
            for ow in range(ow_n):
                win = [c * h * w + ih * w + iw
                       for ih in range(oh * op.stride[0] - op.pads[0],
                                       oh * op.stride[0] - op.pads[0] + op.kernel[0])
                       for iw in range(ow * op.stride[1] - op.pads[1],
                                       ow * op.stride[1] - op.pads[1] + op.kernel[1])
                       if 0 <= ih < h and 0 <= iw < w]
                assert win, "a pooling window lies entirely in the padding"
                out.append(tuple(win))
    return tuple(out)


def forward(ops: Sequence[ExactOp], x: Sequence[Fraction]) -> list[Fraction]:
    """Return the exact output of the network on the exact input ``x``."""
    v = list(x)
    kept: list[list[Fraction]] = []
    for op in ops:
        if isinstance(op, Affine):
            v = _apply(op, v)
        elif isinstance(op, Pool):
            v = [max(v[j] for j in win) for win in op.windows]
        elif isinstance(op, PushOp):
            kept.append(v)
        elif isinstance(op, AddPop):
            h = kept.pop()
            s = h if op.shortcut is None else _apply(op.shortcut, h)
            v = [a + b for a, b in zip(v, s, strict=True)]
        else:
            v = [max(t, Fraction(0)) for t in v]
    return v


def _apply(op: Affine, v: Sequence[Fraction]) -> list[Fraction]:
    return [sum((w * v[j] for j, w in row), b) for row, b in zip(op.rows, op.bias, strict=True)]


def forward_spec(net: NetSpec, x: np.ndarray) -> list[Fraction]:
    """Return the exact output of ``net`` on the float64 input ``x`` (flat)."""
    return forward(exact_ops(net), [fr(v) for v in np.asarray(x, dtype=np.float64).ravel()])


def row_holds(row: OutRow, y: Sequence[Fraction]) -> bool:
    """Return whether the exact output ``y`` satisfies ``row``."""
    rhs = y[row.rhs_var] if row.rhs_var is not None else fr(row.rhs)
    return y[row.lhs] <= rhs if row.op == "<=" else y[row.lhs] >= rhs


def violated_disjunct(disjuncts: Sequence[Sequence[OutRow]],
                      y: Sequence[Fraction]) -> int | None:
    """Return the index of the first conjunction that ``y`` satisfies, else None."""
    for k, conj in enumerate(disjuncts):
        if all(row_holds(r, y) for r in conj):
            return k
    return None


def in_box(x: Sequence[Fraction], lower: np.ndarray, upper: np.ndarray) -> bool:
    """Return whether ``lower <= x <= upper`` holds exactly."""
    return all(fr(lo) <= v <= fr(up) for v, lo, up in zip(x, lower.tolist(), upper.tolist(),
                                                          strict=True))


def round_down(q: Fraction) -> float:
    """Return the largest float64 that is <= q."""
    f = float(q)
    return f if Fraction(f) <= q else math.nextafter(f, -math.inf)


def round_up(q: Fraction) -> float:
    """Return the smallest float64 that is >= q."""
    f = float(q)
    return f if Fraction(f) >= q else math.nextafter(f, math.inf)
