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
                      upper: np.ndarray) -> tuple[float, np.ndarray]:
    """Return (max over the box of c . f(x), an argmax) for a Dense/ReLU network."""
    layers = _dense_layers(net)
    sizes = [w.shape[0] for w, _ in layers[:-1]]
    best, arg = -np.inf, lower
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
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
