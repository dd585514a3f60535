"""An independent oracle for tiny networks: enumerate activation patterns, one LP each.

For a fixed pattern the network is affine on the polyhedron where the pattern holds, so
``max_x c.f(x)`` over the box is the max over patterns of an LP. Written with scipy's
``linprog`` and plain numpy, sharing no code with bnbver's search, bounds or LP layers.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linprog


def _dense_layers(net) -> list[tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    return [(layer.weight, layer.bias) for layer in net.layers if hasattr(layer, "weight")]


def max_linear_output(net, c: np.ndarray, lower: np.ndarray,  # type: ignore[no-untyped-def]
                      upper: np.ndarray,
                      fixed: dict[int, int] | None = None) -> tuple[float, np.ndarray]:
    """Return (max over the box of c . f(x), an argmax) for a Dense/ReLU network; with
    ``fixed`` ({flat ReLU index: 1 active / 0 inactive}) only over the inputs where those
    neurons take those phases (-inf when there is none)."""
    layers = _dense_layers(net)
    sizes = [w.shape[0] for w, _ in layers[:-1]]
    best, arg = -np.inf, lower
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        if fixed and any(pattern[i] != v for i, v in fixed.items()):
            continue
        M, v = np.eye(lower.size), np.zeros(lower.size)
        rows, rhs = [], []
        pos = 0
        for (w, b), n in zip(layers[:-1], sizes, strict=True):
            M, v = w @ M, w @ v + b
            on = np.array(pattern[pos:pos + n], dtype=float)
            pos += n
            sign = np.where(on > 0, -1.0, 1.0)  # active: -z <= 0; inactive: z <= 0
            rows.append(sign[:, None] * M)
            rhs.append(-sign * v)
            M, v = M * on[:, None], v * on
        w, b = layers[-1]
        obj = c @ (w @ M)
        res = linprog(-obj, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs),
                      bounds=list(zip(lower, upper, strict=True)), method="highs")
        if res.status == 0 and -res.fun + c @ (w @ v + b) > best:
            best, arg = -res.fun + float(c @ (w @ v + b)), res.x
    return best, arg


def _affine_map(layer) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Return (W, b) of an affine layer from its forward pass on unit vectors."""
    n = layer.in_size
    b = layer.forward(np.zeros((1, n)))[0]
    W = (layer.forward(np.eye(n)) - b).T
    return W, b


def max_linear_output_graph(net, c: np.ndarray, lower: np.ndarray,  # type: ignore[no-untyped-def]
                            upper: np.ndarray) -> tuple[float, np.ndarray]:
    """Return (max over the box of c . f(x), an argmax) for a DAG of affine layers, ReLU,
    Add (sums), Concat and Flatten: per activation pattern every tensor is ``M x + v``."""
    relus = [i for i, layer in enumerate(net.layers) if type(layer).__name__ == "ReLU"]
    sizes = [net.layers[i].size for i in relus]
    maps = {i: _affine_map(layer) for i, layer in enumerate(net.layers) if hasattr(layer, "weight")}
    best, arg = -np.inf, lower
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        vals = {-1: (np.eye(lower.size), np.zeros(lower.size))}
        rows, rhs, pos = [], [], 0
        for i, (layer, ins) in enumerate(zip(net.layers, net.inputs, strict=True)):
            kind = type(layer).__name__
            args = [vals[t] for t in ins]
            if i in maps:
                W, b = maps[i]
                vals[i] = (W @ args[0][0], W @ args[0][1] + b)
            elif kind == "ReLU":
                M, v = args[0]
                on = np.array(pattern[pos:pos + layer.size], dtype=float)
                pos += layer.size
                sign = np.where(on > 0, -1.0, 1.0)
                rows.append(sign[:, None] * M)
                rhs.append(-sign * v)
                vals[i] = (M * on[:, None], v * on)
            elif kind == "Add":
                vals[i] = (sum(a[0] for a in args), sum(a[1] for a in args))
            elif kind == "Concat":
                vals[i] = (np.vstack([a[0] for a in args]), np.concatenate([a[1] for a in args]))
            else:  # Flatten
                vals[i] = args[0]
        M, v = vals[len(net.layers) - 1]
        res = linprog(-(c @ M), A_ub=np.vstack(rows) if rows else None,
                      b_ub=np.concatenate(rhs) if rhs else None,
                      bounds=list(zip(lower, upper, strict=True)), method="highs")
        if res.status == 0 and -res.fun + c @ v > best:
            best, arg = -res.fun + float(c @ v), res.x
    return best, arg


def max_linear_output_milp(net, c: np.ndarray, lower: np.ndarray,  # type: ignore[no-untyped-def]
                           upper: np.ndarray) -> float:
    """Return max over the box of c . f(x) for a DAG (affine, ReLU, Add, Concat, Flatten) by
    an exact big-M MILP with scipy's ``milp`` (HiGHS), big-M from plain interval arithmetic
    widened by a relative 1e-9 (so the MILP is exact up to HiGHS's tolerances, about 1e-6)."""
    from scipy.optimize import LinearConstraint, milp

    maps = {i: _affine_map(layer) for i, layer in enumerate(net.layers)
            if hasattr(layer, "weight")}
    # columns: x, then per ReLU layer (z, a, s); every tensor is an affine map of columns
    cols_lo, cols_hi, integ = list(lower), list(upper), [0] * lower.size
    n0 = lower.size
    rows: list[np.ndarray] = []
    rl: list[float] = []
    ru: list[float] = []
    vals = {-1: (np.eye(n0), np.zeros(n0), lower.copy(), upper.copy())}

    def new_cols(lo: np.ndarray, hi: np.ndarray, integer: int) -> list[int]:
        start = len(cols_lo)
        cols_lo.extend(lo)
        cols_hi.extend(hi)
        integ.extend([integer] * len(lo))
        return list(range(start, start + len(lo)))

    for i, (layer, ins) in enumerate(zip(net.layers, net.inputs, strict=True)):
        kind = type(layer).__name__
        args = [vals[t] for t in ins]
        if i in maps:
            W, b = maps[i]
            M, v, lo, hi = args[0]
            mid, rad = W @ ((lo + hi) / 2) + b, np.abs(W) @ ((hi - lo) / 2)
            slack = 1e-9 * (np.abs(mid) + rad + 1.0)
            vals[i] = (W @ M, W @ v + b, mid - rad - slack, mid + rad + slack)
        elif kind == "ReLU":
            M, v, lo, hi = args[0]
            a = new_cols(np.maximum(lo, 0), np.maximum(hi, 0), 0)
            # stable neurons get a fixed indicator (HiGHS fails on some models otherwise)
            s = new_cols((lo >= 0).astype(float), (hi > 0).astype(float), 1)
            for j in range(lo.size):
                for r, lo_r, hi_r in _bigm_rows(len(cols_lo), M[j], v[j], lo[j], hi[j],
                                                a[j], s[j]):
                    rows.append(r)
                    rl.append(lo_r)
                    ru.append(hi_r)
            E = np.zeros((lo.size, len(cols_lo)))
            E[np.arange(lo.size), a] = 1
            vals[i] = (E, np.zeros(lo.size), np.maximum(lo, 0), np.maximum(hi, 0))
        elif kind == "Add":
            width = max(a[0].shape[1] for a in args)
            lo_sum, hi_sum = sum(a[2] for a in args), sum(a[3] for a in args)
            slack = 1e-9 * (np.abs(lo_sum) + np.abs(hi_sum) + 1.0)
            vals[i] = (sum(_pad(a[0], width) for a in args), sum(a[1] for a in args),
                       lo_sum - slack, hi_sum + slack)
        elif kind == "Concat":
            width = max(a[0].shape[1] for a in args)
            vals[i] = (np.vstack([_pad(a[0], width) for a in args]),
                       *(np.concatenate([a[k] for a in args]) for k in (1, 2, 3)))
        else:
            vals[i] = args[0]
    M, v, _, _ = vals[len(net.layers) - 1]
    n = len(cols_lo)
    cost = -(c @ _pad(M, n))
    A = np.vstack([_pad(r[None], n) for r in rows]) if rows else np.zeros((0, n))
    res = milp(cost, integrality=np.array(integ), bounds=(cols_lo, cols_hi),
               constraints=[LinearConstraint(A, rl, ru)] if rows else [],
               options={"mip_rel_gap": 1e-9})
    assert res.status == 0, res.message
    return float(-res.fun + c @ v)


def _pad(M: np.ndarray, width: int) -> np.ndarray:
    return np.hstack([M, np.zeros((M.shape[0], width - M.shape[1]))])


def _bigm_rows(n: int, m: np.ndarray, v: float, lo: float, hi: float, a: int,
               s: int) -> list[tuple[np.ndarray, float, float]]:
    """Rows of ``a >= z``, ``a <= z - lo (1 - s)``, ``a <= max(hi, 0) s`` for ``z = m x + v``."""
    r1 = np.zeros(n)
    r1[:m.size] = -m
    r1[a] += 1.0
    r2 = r1.copy()
    r2[s] -= lo
    r3 = np.zeros(n)
    r3[a] = 1.0
    r3[s] = -max(hi, 0.0)
    return [(r1, v, np.inf), (r2, -np.inf, v - lo), (r3, -np.inf, 0.0)]
