"""Random verification instances with planted counterexamples (no bnbver imports).

Everything derives from ``np.random.default_rng([seed, case, ...])``, so ``(seed, case)``
(and the family, when forced) reproduces an instance exactly.

Families (``FAMILIES``; the weights of ``FAMILY_WEIGHTS`` pick one per case):

- ``dense``: small fully connected nets (1-4 inputs, up to 10 ReLUs), Gaussian, dyadic (ties
  and exact zeros) or sparse weights, sometimes ending in a ReLU.
- ``wide``: 12-20 ReLUs in two layers on 2-3 inputs, so that a ReLU-split search branches
  before its MILP leaves (at most 8 unstable neurons by default) take over.
- ``conv``: Conv (kernel 1-3, stride 1-2, zero padding) -> ReLU -> MaxPool -> (ReLU right
  after the pool) -> Flatten -> Dense, on 1-2 channel 3x3/4x4 images with 1-4 free pixels.
- ``narrow``: dense nets with boxes 1e-6 to 1e-4 wide around a planted counterexample
  whose threshold is tight (exactly the output, rounded the safe way) or nearly so.
- ``extreme``: per-layer weight scales from 1e-11 to 1e9 and inputs up to 1e6.
- ``tiny-out``: inputs up to 1e6 and output weights 1e-11 to 1e-8.
- ``hilo``, ``sub-gemm``, ``add-big``: the known-bad cases (a), (b), (c) of issue 15, with
  their parameters varied.
- ``residual`` (``--family residual`` only, see ``EXTRA_FAMILIES``): dense residual nets,
  identity or projection shortcuts, written as ONNX DAGs (issue 19).

Biases are "centred": each neuron's hyperplane passes near a random point of a box, so the
ReLUs are unstable on the boxes (otherwise random nets are mostly linear there). A planted
counterexample ``x*`` lies in a box and one unsafe conjunction is built to hold at ``x*`` in
exact arithmetic (thresholds from the exact output, rounded to float64 the safe way); the
generator re-checks it with the exact forward pass and drops the plant if it fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np

from .exact import (
    AddPop,
    Affine,
    Pool,
    PushOp,
    exact_ops,
    forward_spec,
    fr,
    in_box,
    round_down,
    round_up,
)
from .exact import violated_disjunct as _violated
from .netspec import (
    Conv,
    Dense,
    Elementwise,
    Flatten,
    Instance,
    MaxPool,
    NetSpec,
    Op,
    OutRow,
    Relu,
    Residual,
    as_dtype,
)

Box = tuple[np.ndarray, np.ndarray]
Rng = np.random.Generator

#: Largest number of ReLU neurons + pool outputs a generated net may have (the oracle's limit).
MAX_UNITS = 24
#: Sample points per box used to centre biases and pick thresholds.
SAMPLES = 64


# ------------------------------------------------------------------------------ utilities


FloatProgram = list[tuple[str, Any]]


def compile_float(ops: list[Op], input_shape: tuple[int, ...]) -> FloatProgram:
    """Return the chain as float64 steps ("affine", (W, b)), ("pool", windows), ("relu", None)."""
    prog: FloatProgram = []
    size = int(np.prod(input_shape))
    for op in exact_ops(NetSpec(tuple(ops), input_shape, "float64")):
        if isinstance(op, Affine):
            prog.append(("affine", _float_affine(op, size)))
            size = len(op.rows)
        elif isinstance(op, PushOp):
            prog.append(("push", None))
        elif isinstance(op, AddPop):
            prog.append(("addpop", None if op.shortcut is None
                         else _float_affine(op.shortcut, size)))
        elif isinstance(op, Pool):
            prog.append(("pool", [list(win) for win in op.windows]))
            size = len(op.windows)
        else:
            prog.append(("relu", None))
    return prog


def _float_affine(op: Affine, size: int) -> tuple[np.ndarray, np.ndarray]:
    W = np.zeros((len(op.rows), size))
    for i, row in enumerate(op.rows):
        for j, w in row:
            W[i, j] = float(w)
    return W, np.array([float(b) for b in op.bias])


def run_float(prog: FloatProgram, X: np.ndarray) -> np.ndarray:
    """Return the float64 outputs (B, m) of a compiled chain on inputs X (B, n)."""
    H = np.asarray(X, dtype=np.float64)
    kept: list[np.ndarray] = []
    for kind, data in prog:
        if kind == "push":
            kept.append(H)
        elif kind == "addpop":
            h = kept.pop()
            H = H + (h if data is None else h @ data[0].T + data[1])
        elif kind == "affine":
            W, b = data
            H = H @ W.T + b
        elif kind == "pool":
            H = np.stack([H[:, win].max(axis=1) for win in data], axis=1)
        else:
            H = np.maximum(H, 0.0)
    return H


def float_forward(ops: list[Op], input_shape: tuple[int, ...], X: np.ndarray) -> np.ndarray:
    """Return the float64 outputs (B, m) of the chain ``ops`` on inputs X (B, n); a guide only."""
    return run_float(compile_float(ops, input_shape), X)


def log_uniform(rng: Rng, lo: float, hi: float, size: int | tuple[int, ...] | None = None
                ) -> np.ndarray:
    """Return 10**U(lo, hi) samples."""
    return np.asarray(10.0 ** rng.uniform(lo, hi, size))


def sample_boxes(rng: Rng, boxes: tuple[Box, ...], k: int = SAMPLES) -> np.ndarray:
    """Return k points from each box, corners included, stacked (k * len(boxes), n)."""
    pts = []
    for lo, up in boxes:
        u = rng.uniform(size=(k, lo.size))
        u[: k // 4] = rng.integers(0, 2, size=(k // 4, lo.size))
        pts.append(np.clip(lo + u * (up - lo), lo, up))
    return np.concatenate(pts)


def _spread(y: np.ndarray) -> float:
    """Return a positive scale of the sample outputs y (B,)."""
    s = float(np.std(y))
    if s > 0:
        return s
    return max(abs(float(np.mean(y))) * 1e-3, 1e-12)


def centred_bias(rng: Rng, W: np.ndarray, H: np.ndarray, jitter: float = 0.3) -> np.ndarray:
    """Return biases putting each neuron's zero near a random sample of H (B, in) plus jitter."""
    Z = H @ W.T
    pick = Z[rng.integers(0, Z.shape[0], size=W.shape[0]), np.arange(W.shape[0])]
    spread = np.array([_spread(Z[:, i]) for i in range(W.shape[0])])
    return np.asarray(-pick + jitter * spread * rng.normal(size=W.shape[0]))


# ------------------------------------------------------------------------------ boxes


def make_boxes(rng: Rng, n: int, n_boxes: int, centre: Callable[[], np.ndarray],
               width: Callable[[], np.ndarray], p_fixed: float = 0.0) -> tuple[Box, ...]:
    """Return distinct boxes ``centre -+ width / 2`` (a dimension is fixed with p_fixed)."""
    out: list[Box] = []
    while len(out) < n_boxes:
        c, w = centre(), width()
        w = np.where(rng.uniform(size=n) < p_fixed, 0.0, w)
        lo, up = c - w / 2, c + w / 2
        if np.all(lo <= up) and not any(np.array_equal(lo, a) and np.array_equal(up, b)
                                        for a, b in out):
            out.append((lo, up))
    return tuple(out)


def plant_point(rng: Rng, box: Box, dtype: str) -> np.ndarray:
    """Return a point of the box: random, with some coordinates on a face; float32 if it can."""
    lo, up = box
    x = lo + rng.uniform(size=lo.size) * (up - lo)
    face = rng.uniform(size=lo.size) < 0.25
    x = np.where(face, np.where(rng.uniform(size=lo.size) < 0.5, lo, up), x)
    x = np.clip(x, lo, up)
    if dtype == "float32" and rng.uniform() < 0.7:
        x32 = as_dtype(x, "float32")
        x = np.where((x32 >= lo) & (x32 <= up), x32, x)
    return np.asarray(x)


# ------------------------------------------------------------------------------ properties


def planted_rows(rng: Rng, y: list[Fraction], spread: float) -> tuple[OutRow, ...]:
    """Return 1-2 rows that the exact output y satisfies (tight, tiny or moderate margins)."""
    rows = []
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(len(y)))
        kind = rng.choice(["ge", "le", "var"]) if len(y) > 1 else rng.choice(["ge", "le"])
        mode = rng.choice(["tight", "tiny", "moderate"], p=[0.4, 0.3, 0.3])
        scale = abs(float(y[i])) + 1e-300
        margin = Fraction(0) if mode == "tight" else fr(
            float(log_uniform(rng, -15, -9)) * scale if mode == "tiny"
            else float(log_uniform(rng, -6, -1)) * spread)
        if kind == "var":
            j = int(rng.choice([k for k in range(len(y)) if k != i]))
            lo, hi = (i, j) if y[i] <= y[j] else (j, i)
            rows.append(OutRow(lo, "<=", hi))
        elif kind == "ge":
            rows.append(OutRow(i, ">=", None, round_down(y[i] - margin)))
        else:
            rows.append(OutRow(i, "<=", None, round_up(y[i] + margin)))
    return tuple(rows)


def random_rows(rng: Rng, Y: np.ndarray) -> tuple[OutRow, ...]:
    """Return 1-2 rows with thresholds near the sample outputs' extremes (often tight unsat)."""
    rows = []
    m = Y.shape[1]
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(m))
        # beyond the sample extreme (towards unsat) two times in three
        delta = float(log_uniform(rng, -7, 0)) * _spread(Y[:, i]) * (
            1.0 if rng.uniform() < 0.65 else -1.0)
        if m > 1 and rng.uniform() < 0.25:
            j = int(rng.choice([k for k in range(m) if k != i]))
            rows.append(OutRow(i, "<=", j))
        elif rng.uniform() < 0.5:
            rows.append(OutRow(i, ">=", None, float(Y[:, i].max() + delta)))
        else:
            rows.append(OutRow(i, "<=", None, float(Y[:, i].min() - delta)))
    return tuple(rows)


def make_property(rng: Rng, family: str, net: NetSpec, boxes: tuple[Box, ...],
                  p_plant: float = 0.65, note: str = "") -> Instance:
    """Return an instance on ``net`` with 1-3 disjuncts, one planted with probability p_plant."""
    Y = float_forward(list(net.ops), net.input_shape, sample_boxes(rng, boxes))
    n_disj = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    disjuncts = [random_rows(rng, Y) for _ in range(n_disj)]
    planted = None
    if rng.uniform() < p_plant:
        b = int(rng.integers(len(boxes)))
        slot = int(rng.integers(n_disj))
        if rng.uniform() < 0.5:
            x = plant_point(rng, boxes[b], net.dtype)
            spread = float(np.median([_spread(Y[:, i]) for i in range(Y.shape[1])]))
            disjuncts[slot] = planted_rows(rng, forward_spec(net, x), spread)
        else:
            x, disjuncts[slot] = plant_at_max(rng, net, boxes[b])
        planted = (x, b)
    inst = Instance(family, net, boxes, tuple(disjuncts), planted, note)
    return check_plant(inst)


def plant_at_max(rng: Rng, net: NetSpec, box: Box) -> tuple[np.ndarray, tuple[OutRow, ...]]:
    """Return (x, rows): x near a maximiser of +-y_i on the box, the row tight at x.

    The unsafe region ``y_i >= y_i(x)`` is then tiny (a neighbourhood of a local maximum),
    so a falsifier rarely finds it and a proof must not cut it off.
    """
    prog = compile_float(list(net.ops), net.input_shape)
    i = int(rng.integers(net.num_outputs))
    sign = float(rng.choice([-1.0, 1.0]))
    X = sample_boxes(rng, (box,), 256)
    x = X[int(np.argmax(sign * run_float(prog, X)[:, i]))]
    x = local_search(prog, box, x, i, sign)
    if net.dtype == "float32" and rng.uniform() < 0.5:
        x32 = as_dtype(x, "float32")
        x = np.where((x32 >= box[0]) & (x32 <= box[1]), x32, x)
    y = forward_spec(net, x)[i]
    row = OutRow(i, ">=", None, round_down(y)) if sign > 0 else OutRow(i, "<=", None, round_up(y))
    return x, (row,)


def local_search(prog: FloatProgram, box: Box, x: np.ndarray, i: int, sign: float,
                 rounds: int = 40) -> np.ndarray:
    """Return x improved by coordinate steps (halving) on ``sign * y_i`` inside the box."""
    lo, up = box
    step = (up - lo) / 4
    best = float(sign * run_float(prog, x[None])[0, i])
    for _ in range(rounds):
        cand = np.clip(np.concatenate([x + np.diag(step), x - np.diag(step)]), lo, up)
        vals = sign * run_float(prog, cand)[:, i]
        k = int(np.argmax(vals))
        if vals[k] > best:
            x, best = cand[k], float(vals[k])
        else:
            step = step / 2
    return np.asarray(x)


def check_plant(inst: Instance) -> Instance:
    """Return the instance, without its plant when the exact forward pass refutes it."""
    if inst.planted is None:
        return inst
    x, b = inst.planted
    xf = [fr(v) for v in x.tolist()]
    if in_box(xf, *inst.boxes[b]) and _violated(inst.disjuncts,
                                                forward_spec(inst.net, x)) is not None:
        return inst
    return Instance(inst.family, inst.net, inst.boxes, inst.disjuncts, None,
                    inst.note + " (plant dropped)")


# ------------------------------------------------------------------------------ dense nets


def dense_layers(rng: Rng, boxes: tuple[Box, ...], hidden: list[int], n_out: int, dtype: str,
                 scales: list[float], mode: str, final_relu: bool) -> list[Op]:
    """Return Dense/ReLU ops with centred biases; ``scales[k]`` multiplies layer k's weights."""
    n_in = boxes[0][0].size
    H = sample_boxes(rng, boxes)
    ops: list[Op] = []
    sizes = [n_in, *hidden, n_out]
    for k in range(len(sizes) - 1):
        W = as_dtype(_weights(rng, sizes[k + 1], sizes[k], mode) * scales[k], dtype)
        last = k == len(sizes) - 2
        b = centred_bias(rng, W, H) if not last or rng.uniform() < 0.5 else rng.normal(
            size=sizes[k + 1]) * _spread(H @ W.T)
        layer: list[Op] = [Dense(W, as_dtype(b, dtype), matmul=bool(rng.uniform() < 0.3))]
        if not last or final_relu:
            layer.append(Relu())
        H = float_forward(layer, (sizes[k],), H)
        ops += layer
    return ops


def _weights(rng: Rng, n_out: int, n_in: int, mode: str) -> np.ndarray:
    if mode == "dyadic":
        return np.asarray(rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], size=(n_out, n_in)))
    W = rng.normal(size=(n_out, n_in)) / math.sqrt(n_in)
    if mode == "sparse":
        W = np.where(rng.uniform(size=W.shape) < 0.4, 0.0, W)
    return np.asarray(W)


def _hidden(rng: Rng, max_units: int = 10) -> list[int]:
    while True:
        hidden = [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 4)))]
        if sum(hidden) <= max_units:
            return hidden


def _n_boxes(rng: Rng) -> int:
    return int(rng.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))


def _dtype(rng: Rng, p32: float = 0.6) -> str:
    return "float32" if rng.uniform() < p32 else "float64"


def gen_dense(rng: Rng) -> Instance:
    """Small dense nets with moderate weights."""
    n_in, dtype = int(rng.integers(1, 5)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: rng.uniform(-1, 1, n_in),
                       lambda: rng.uniform(0.05, 2.0, n_in), p_fixed=0.1)
    hidden, n_out = _hidden(rng), int(rng.integers(1, 4))
    mode = str(rng.choice(["normal", "dyadic", "sparse"], p=[0.5, 0.25, 0.25]))
    final = bool(rng.uniform() < 0.25)
    ops = dense_layers(rng, boxes, hidden, n_out, dtype, [1.0] * (len(hidden) + 1), mode, final)
    note = f"dense {n_in}-{'-'.join(map(str, hidden))}-{n_out} {mode}{' +relu' if final else ''}"
    return make_property(rng, "dense", NetSpec(tuple(ops), (n_in,), dtype), boxes, note=note)


def gen_wide(rng: Rng) -> Instance:
    """Dense nets with 12-20 ReLUs on 2-3 inputs: the search branches before MILP leaves."""
    n_in, dtype = int(rng.integers(2, 4)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: rng.uniform(-1, 1, n_in),
                       lambda: rng.uniform(0.1, 2.0, n_in))
    hidden = [int(rng.integers(6, 11)) for _ in range(2)]
    hidden = hidden if sum(hidden) <= 20 else [hidden[0], 20 - hidden[0]]
    n_out = int(rng.integers(1, 4))
    ops = dense_layers(rng, boxes, hidden, n_out, dtype, [1.0] * 3, "normal",
                       bool(rng.uniform() < 0.2))
    net = NetSpec(tuple(ops), (n_in,), dtype)
    return make_property(rng, "wide", net, boxes,
                         note=f"wide {n_in}-{'-'.join(map(str, hidden))}-{n_out}")


def gen_narrow(rng: Rng) -> Instance:
    """Dense nets, boxes 1e-6 to 1e-4 wide, a planted counterexample with a tight threshold."""
    n_in, dtype = int(rng.integers(1, 4)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: rng.uniform(-1, 1, n_in),
                       lambda: log_uniform(rng, -6, -4, n_in))
    hidden, n_out = _hidden(rng, 8), int(rng.integers(1, 3))
    ops = dense_layers(rng, boxes, hidden, n_out, dtype, [1.0] * (len(hidden) + 1), "normal",
                       bool(rng.uniform() < 0.2))
    net = NetSpec(tuple(ops), (n_in,), dtype)
    return make_property(rng, "narrow", net, boxes, p_plant=0.9,
                         note=f"narrow boxes, dense {n_in}-{'-'.join(map(str, hidden))}-{n_out}")


def _input_centre(rng: Rng, n: int, lo: float, hi: float) -> np.ndarray:
    return np.asarray(rng.choice([-1.0, 1.0], size=n) * log_uniform(rng, lo, hi, n))


def gen_extreme(rng: Rng) -> Instance:
    """Layer scales 1e-11..1e9, inputs up to 1e6 (the product of the scales stays < 1e24)."""
    n_in, dtype = int(rng.integers(1, 4)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: _input_centre(rng, n_in, -1, 6),
                       lambda: log_uniform(rng, -6, 1, n_in))
    hidden, n_out = _hidden(rng, 8), int(rng.integers(1, 3))
    scales: list[float] = []
    for _ in range(len(hidden) + 1):
        s = float(log_uniform(rng, -11, 9))
        while abs(sum(math.log10(v) for v in [*scales, s])) > 24:
            s = float(log_uniform(rng, -11, 9))
        scales.append(s)
    ops = dense_layers(rng, boxes, hidden, n_out, dtype, scales, "normal",
                       bool(rng.uniform() < 0.2))
    note = "extreme scales " + " ".join(f"{s:.0e}" for s in scales)
    return make_property(rng, "extreme", NetSpec(tuple(ops), (n_in,), dtype), boxes, note=note)


def gen_tiny_out(rng: Rng) -> Instance:
    """Inputs up to 1e6 and output weights 1e-11..1e-8."""
    n_in, dtype = int(rng.integers(1, 4)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: _input_centre(rng, n_in, 3, 6),
                       lambda: log_uniform(rng, -3, 1, n_in))
    hidden, n_out = _hidden(rng, 8), int(rng.integers(1, 3))
    out_scale = float(log_uniform(rng, -11, -8))
    ops = dense_layers(rng, boxes, hidden, n_out, dtype, [1.0] * len(hidden) + [out_scale],
                       "normal", bool(rng.uniform() < 0.2))
    net = NetSpec(tuple(ops), (n_in,), dtype)
    return make_property(rng, "tiny-out", net, boxes, note=f"inputs ~1e6, out scale "
                         f"{out_scale:.1e}")


# ------------------------------------------------------------------------------ conv nets


def gen_conv(rng: Rng) -> Instance:
    """Conv -> ReLU -> MaxPool -> (ReLU) -> Flatten -> Dense, with 1-4 free pixels."""
    for _ in range(100):
        shape = (1, int(rng.integers(3, 5)), int(rng.integers(3, 5))) if rng.uniform() < 0.7 \
            else (2, 3, 3)
        dtype = "float32"  # onnxruntime has no float64 Conv kernel on the CPU
        n = int(np.prod(shape))
        n_free = int(rng.integers(1, 5))

        def centre(n: int = n) -> np.ndarray:
            return np.asarray(rng.uniform(-1, 1, n))

        def width(n: int = n, n_free: int = n_free) -> np.ndarray:
            w = np.zeros(n)
            w[rng.choice(n, size=n_free, replace=False)] = rng.uniform(0.1, 2.0, n_free)
            return w

        boxes = make_boxes(rng, n, _n_boxes(rng), centre, width)
        ops, tags = conv_layers(rng, boxes, shape, dtype)
        net = NetSpec(tuple(ops), shape, dtype)
        if net.num_units <= MAX_UNITS and net.num_units > 0:
            note = f"conv {shape} " + " ".join(tags)
            return make_property(rng, "conv", net, boxes, note=note)
    raise RuntimeError("no conv net within MAX_UNITS")  # pragma: no cover


def conv_layers(rng: Rng, boxes: tuple[Box, ...], shape: tuple[int, int, int], dtype: str
                ) -> tuple[list[Op], list[str]]:
    """Return the conv-family ops (centred biases) and a few descriptive tags."""
    H = sample_boxes(rng, boxes)
    k = int(rng.integers(1, min(shape[1], shape[2], 3) + 1))
    p = [int(v) for v in rng.integers(0, 2, 4)] if rng.uniform() < 0.4 else [0, 0, 0, 0]
    pads = (p[0], p[1], p[2], p[3])
    co, s = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    W = as_dtype(rng.normal(size=(co, shape[0], k, k)) / k, dtype)
    conv = Conv(W, np.zeros(co), (s, s), pads, shape)
    Z = float_forward([conv], shape, H).reshape(H.shape[0], co, -1)
    bias = np.array([-Z[rng.integers(Z.shape[0]), c, rng.integers(Z.shape[2])] for c in range(co)])
    conv = Conv(W, as_dtype(bias, dtype), conv.stride, pads, shape)
    ops: list[Op] = [conv]
    tags = [f"k{k}s{conv.stride[0]}p{''.join(map(str, pads))}"]
    if rng.uniform() < 0.8:
        ops.append(Relu())
        tags.append("relu")
    ops, tags = _maybe_pool(rng, ops, tags, conv.out_shape)
    ops.append(Flatten())
    H = float_forward(ops, shape, H)
    n_out = int(rng.integers(1, 3))
    tail = dense_layers(rng, ((H.min(0), H.max(0)),), [], n_out, dtype, [1.0], "normal",
                        bool(rng.uniform() < 0.25))
    tags += ["final-relu"] if isinstance(tail[-1], Relu) else []
    return ops + tail, tags


def _maybe_pool(rng: Rng, ops: list[Op], tags: list[str], shape: tuple[int, int, int]
                ) -> tuple[list[Op], list[str]]:
    if rng.uniform() >= 0.65 or min(shape[1], shape[2]) < 2:
        return ops, tags
    kernel = (2, 2) if rng.uniform() < 0.8 else (1, 2)
    s = int(rng.integers(1, 3))
    stride = (s, s)
    pads = (0, 0, 0, 0) if rng.uniform() < 0.8 else (0, 0, 1, 1)
    if pads[2] >= kernel[0] or pads[3] >= kernel[1]:
        pads = (0, 0, 0, 0)  # ONNX needs every pad smaller than the kernel
    pool = MaxPool(kernel, stride, pads, shape)
    _, oh, ow = pool.out_shape
    if (oh - 1) * s - pads[0] >= shape[1] or (ow - 1) * s - pads[1] >= shape[2]:
        pool = MaxPool(kernel, stride, (0, 0, 0, 0), shape)  # a window all in the padding
    ops = [*ops, pool]
    tags = [*tags, f"pool{kernel[0]}{kernel[1]}s{stride[0]}"]
    if rng.uniform() < 0.5:
        ops.append(Relu())
        tags.append("relu-after-pool")
    return ops, tags


# ------------------------------------------------------------------------------ issue 15 cases


def gen_hilo(rng: Rng) -> Instance:
    """Case (a): HiGHS drops |a| <= 1e-9; the net is sat at x = c with y1 = g S r >= y0."""
    n_used, n_unused = int(rng.choice([2, 3], p=[0.3, 0.7])), int(rng.integers(0, 19))
    dtype = _dtype(rng, 0.5)
    S = float(rng.choice([1e8, 1e9]))
    c = np.round(rng.uniform(-0.5, 0.5, n_used), 4)
    r = float(np.round(rng.uniform(0.01, 0.03), 3))
    t = float(rng.choice([0.01, 0.005]))
    g = float(rng.uniform(0.3, 1.0)) * 2 * t / (S * r)  # sat iff g S r >= t, about 70 %
    if rng.uniform() < 0.2:  # the issue's own instance
        n_used, n_unused, S, r, t, g = 3, 18, 1e9, 0.02, 0.01, 9e-10
        c = np.array([0.3141, -0.2718, 0.1618])
    n = n_used + n_unused
    W1 = np.zeros((2 * n_used, n))
    for k in range(n_used):
        W1[k, k], W1[n_used + k, k] = S, -S
    b1 = np.concatenate([-S * c, S * c])
    ops: list[Op] = [Dense(as_dtype(W1, dtype), as_dtype(b1, dtype)), Relu(),
                     Dense(as_dtype(-np.ones((1, 2 * n_used)), dtype),
                           as_dtype(np.array([S * r]), dtype)), Relu(),
                     Dense(as_dtype(np.array([[0.0], [g]]), dtype),
                           as_dtype(np.array([t, 0.0]), dtype))]
    net = NetSpec(tuple(ops), (n,), dtype)
    lo, up = -np.ones(n), np.ones(n)
    x = np.concatenate([c, np.zeros(n_unused)])
    inst = Instance("hilo", net, ((lo, up),), ((OutRow(1, ">=", 0),),), (x, 0),
                    f"issue 15 (a): S={S:.0e} r={r} g={g:.2e} t={t}, {n_unused} unused inputs")
    return check_plant(inst)


def gen_sub_gemm(rng: Rng) -> Instance:
    """Case (b): ``y0 = x - K`` as ONNX Sub then Gemm, unsafe ``y0 <= -delta``."""
    dtype = _dtype(rng, 0.5)
    K = 10000.0003 if rng.uniform() < 0.4 else float(np.round(log_uniform(rng, 3, 6), 4))
    delta = 2e-4 if rng.uniform() < 0.5 else float(log_uniform(rng, -5, -3))
    ops: list[Op] = [Elementwise("Sub", as_dtype(np.array([K]), dtype)),
                     Dense(as_dtype(np.array([[1.0]]), dtype), np.zeros(1),
                           matmul=bool(rng.uniform() < 0.3))]
    q = fr(as_dtype(np.array([K]), dtype)[0]) - fr(delta)  # sat iff x <= q
    w = float(log_uniform(rng, -6, -3))
    mode = str(rng.choice(["edge", "inner", "unsat"]))
    if mode == "edge":
        lower = round_down(q)
    elif mode == "inner":
        lower = round_down(q - fr(w / 2))
    else:  # the least float64 above q: no input of the box is unsafe, by a hair
        lower = round_up(q) if round_up(q) > q else math.nextafter(round_up(q), math.inf)
    box = (np.array([lower]), np.array([lower + w]))
    net = NetSpec(tuple(ops), (1,), dtype)
    planted = (box[0].copy(), 0) if mode != "unsat" else None
    inst = Instance("sub-gemm", net, (box,), ((OutRow(0, "<=", None, -delta),),), planted,
                    f"issue 15 (b): y0 = x - {K} (Sub, Gemm), y0 <= -{delta:.1e}, {mode}")
    return check_plant(inst)


def gen_add_big(rng: Rng) -> Instance:
    """Case (c): ``y = x + K``, unsafe ``y >= K + t``, x in [0, t +- w] (float32 loses t)."""
    dtype = _dtype(rng, 0.75)
    K = float(rng.choice([1e3, 1e4, 1e4, 1e5]))
    t = 0.0004 if rng.uniform() < 0.5 else float(np.round(log_uniform(rng, -5, -3), 6))
    w = float(log_uniform(rng, -6, -4))
    sat = bool(rng.uniform() < 0.7)
    upper = t + w if sat else t - w
    if rng.uniform() < 0.2:  # the issue's own instance
        K, t, upper, sat = 1e4, 0.0004, 0.00045, True
    if rng.uniform() < 0.5:
        ops: list[Op] = [Dense(np.ones((1, 1)), as_dtype(np.array([K]), dtype))]
    else:
        ops = [Elementwise("Add", as_dtype(np.array([K]), dtype))]
    net = NetSpec(tuple(ops), (1,), dtype)
    thr = float(K + t)
    box = (np.zeros(1), np.array([max(upper, 0.0)]))
    inst = Instance("add-big", net, (box,), ((OutRow(0, ">=", None, thr),),),
                    (box[1].copy(), 0) if sat else None,
                    f"issue 15 (c): y = x + {K:g} ({type(ops[0]).__name__}), y >= {thr!r}, "
                    f"x <= {box[1][0]:.6g}, {dtype}")
    return check_plant(inst)


def gen_residual(rng: Rng) -> Instance:
    """Dense residual nets (issue 19): Dense -> ReLU, then 1-2 blocks ``body(h) + s(h)``
    (``body`` Dense-ReLU-Dense, ``s`` the identity or a projection), each maybe followed by a
    ReLU, then a Dense head; written as a DAG (the block input read twice, joined by Add)."""
    n_in, dtype = int(rng.integers(1, 4)), _dtype(rng)
    boxes = make_boxes(rng, n_in, _n_boxes(rng), lambda: rng.uniform(-1, 1, n_in),
                       lambda: rng.uniform(0.1, 2.0, n_in), p_fixed=0.1)
    w = int(rng.integers(2, 5))
    ops: list[Op] = dense_layers(rng, boxes, [], w, dtype, [1.0], "normal", True)
    H = float_forward(ops, (n_in,), sample_boxes(rng, boxes))
    kinds = []
    for _ in range(int(rng.integers(1, 3))):
        hid = int(rng.integers(1, 4))
        body: list[Dense | Relu] = []
        for n_out, n_prev in ((hid, w), (w, hid)):
            W = as_dtype(_weights(rng, n_out, n_prev, "normal"), dtype)
            Hb = float_forward(list(body), (w,), H) if body else H
            body.append(Dense(W, as_dtype(centred_bias(rng, W, Hb), dtype)))
            if n_out == hid:
                body.append(Relu())
        short = None
        if rng.uniform() < 0.5:
            P = as_dtype(_weights(rng, w, w, "normal"), dtype)
            short = Dense(P, as_dtype(rng.normal(size=w) * 0.3, dtype))
        block: list[Op] = [Residual(tuple(body), short)]
        if rng.uniform() < 0.7:
            block.append(Relu())
        ops += block
        H = float_forward(block, (w,), H)
        kinds.append(("proj" if short is not None else "id") + ("+relu" if len(block) > 1
                                                                 else ""))
    n_out = int(rng.integers(1, 4))
    Wo = as_dtype(_weights(rng, n_out, w, "normal"), dtype)
    ops.append(Dense(Wo, as_dtype(rng.normal(size=n_out) * _spread(H @ Wo.T), dtype)))
    net = NetSpec(tuple(ops), (n_in,), dtype)
    note = f"residual {n_in}-{w} blocks {','.join(kinds)} -> {n_out}"
    return make_property(rng, "residual", net, boxes, note=note)


FAMILIES: dict[str, Callable[[Rng], Instance]] = {
    "dense": gen_dense,
    "wide": gen_wide,
    "conv": gen_conv,
    "narrow": gen_narrow,
    "extreme": gen_extreme,
    "tiny-out": gen_tiny_out,
    "hilo": gen_hilo,
    "sub-gemm": gen_sub_gemm,
    "add-big": gen_add_big,
    "residual": gen_residual,
}
FAMILY_WEIGHTS = {"dense": 20, "wide": 12, "conv": 16, "narrow": 10, "extreme": 14,
                  "tiny-out": 10, "hilo": 8, "sub-gemm": 5, "add-big": 5}
#: Families outside the default rotation (``--family`` picks them): adding one to
#: FAMILY_WEIGHTS would change the family of existing (seed, case) pairs.
EXTRA_FAMILIES = ("residual",)


def family_of(seed: int, case: int) -> str:
    """Return the family of case ``case`` (its own random stream, so --family can override)."""
    names = list(FAMILY_WEIGHTS)
    p = np.array([FAMILY_WEIGHTS[k] for k in names], dtype=float)
    return str(np.random.default_rng([seed, case, 0]).choice(names, p=p / p.sum()))


def generate(seed: int, case: int, family: str | None = None) -> Instance:
    """Return instance ``case`` of ``seed`` (of ``family`` when given, else the case's own)."""
    fam = family or family_of(seed, case)
    return FAMILIES[fam](np.random.default_rng([seed, case, 1]))
