"""Interval arithmetic (IBP) in float64 numpy, for the LP/MILP builders and bound tightening.

For an affine map :math:`z = W h + b` with :math:`h \\in [l, u]`, with centre
:math:`c = (l+u)/2` and radius :math:`r = (u-l)/2`,

.. math::
    z \\in [W c + b - |W| r,\\; W c + b + |W| r].

ReLU maps :math:`[l, u]` to :math:`[\\max(l,0), \\max(u,0)]`; max pooling takes the max of the
window's lower and of its upper bounds. Each affine result is widened by a rigorous bound on
its float64 rounding (:math:`2\\gamma_{n+2} (|W| (|c| + r) + |b|)`, with r rounded up so that
``c +- r`` covers the box) and on the layer's recorded error (``weight_err``, ``bias_err``),
then rounded outwards, so it holds in real arithmetic. Given pre-activation bounds and
split states are intersected in at every ReLU layer. The torch bound engine is separate
(``bnbver.bounds``); this one serves the LP layer, which must not import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from bnbver.network import (
    Add,
    Concat,
    Conv2d,
    Dense,
    MaxPool2d,
    Network,
    ReLU,
    flat_bias_err,
)

U64 = 2.0 ** -53


def gamma(n: int) -> float:
    """Return gamma_n = n u / (1 - n u) of float64, rounded up."""
    nu = max(int(n), 1) * U64
    return float(np.nextafter(nu / (1.0 - nu), np.inf)) * (1.0 + 1e-12)


def up(x: np.ndarray) -> np.ndarray:
    """Return x moved one ulp up (a rounded-up result)."""
    out: np.ndarray = np.nextafter(x, np.inf)
    return out


def down(x: np.ndarray) -> np.ndarray:
    """Return x moved one ulp down (a rounded-down result)."""
    out: np.ndarray = np.nextafter(x, -np.inf)
    return out


def affine_parts(layer: Dense | Conv2d) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return the (n_out, n_in) matrix (sparse) and (n_out,) bias of an affine layer."""
    if isinstance(layer, Dense):
        return sp.csr_matrix(layer.weight), np.asarray(layer.bias)
    return sp.csr_matrix(layer.matrix()), layer.flat_bias()


def layer_error(layer: Dense | Conv2d, W: sp.csr_matrix, magnitude: np.ndarray) -> np.ndarray:
    """Return (n_out,) bounds on ``|(W* - W) h + (b* - b)|`` for ``|h| <= magnitude``: how far
    the layer's float64 numbers may be from the source model's exact ones (0 when exact)."""
    err = np.asarray(flat_bias_err(layer), dtype=np.float64)
    if layer.weight_err:
        err = err + layer.weight_err * np.asarray(abs(W) @ magnitude).reshape(-1)
    return up(err * (1.0 + 4.0 * U64))


def affine_interval(
    W: sp.csr_matrix | np.ndarray, bias: np.ndarray, lower: np.ndarray, upper: np.ndarray,
    err: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return a rigorous interval of ``W h + bias`` over ``lower <= h <= upper`` ((n,) arrays).

    ``err`` (n_out,) widens it further by the layer's own error (:func:`layer_error`).
    """
    c = (lower + upper) / 2.0
    r = up(np.maximum(upper - c, c - lower))
    mid = np.asarray(W @ c).reshape(-1) + bias
    absW = abs(W)
    rad = np.asarray(absW @ r).reshape(-1)
    size = np.asarray(absW @ np.abs(c)).reshape(-1) + rad + np.abs(bias)
    slack = rad + 2.0 * gamma(W.shape[1] + 4) * size
    if err is not None:
        slack = slack + err
    slack = up(slack * (1.0 + 8.0 * U64))
    return down(mid - slack), up(mid + slack)


@dataclass(frozen=True, eq=False)
class SortedRows:
    """An affine map's rows with each row's coefficients sorted by decreasing magnitude
    (built once by :func:`sort_rows`; :func:`l1_ball_interval` reuses it per radius).

    Attributes:
        weight: (n_out, n_in) dense matrix.
        bias: (n_out,).
        order: (n_out, n_in) column order per row, largest ``|w|`` first.
        gain: (n_out, n_in) ``|w|`` in that order.
        positive: (n_out, n_in) ``w > 0`` in that order.
    """

    weight: np.ndarray
    bias: np.ndarray
    order: np.ndarray
    gain: np.ndarray
    positive: np.ndarray


def sort_rows(W: sp.csr_matrix | np.ndarray, bias: np.ndarray) -> SortedRows:
    """Return the rows of ``W x + bias`` prepared for :func:`l1_ball_interval`."""
    A = sp.csr_matrix(W).toarray()
    order = np.argsort(-np.abs(A), axis=1)
    return SortedRows(A, np.asarray(bias, dtype=np.float64), order,
                      np.take_along_axis(np.abs(A), order, axis=1),
                      np.take_along_axis(A > 0, order, axis=1))


def l1_ball_interval(rows: SortedRows, lower: np.ndarray, upper: np.ndarray,
                     centre: np.ndarray, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the exact interval of ``W x + bias`` over the box cut to an L1 ball.

    The set is ``{lower <= x <= upper, ||x - centre||_1 <= budget}`` (``centre`` in the
    box). Row by row, the largest increase of ``w . x`` from ``w . centre`` is a fractional
    knapsack: spend the budget on the coordinates of largest ``|w_i|`` first, each up to the
    distance from the centre to the face that ``sign(w_i)`` points to; the largest decrease
    likewise, towards the other faces. Widened like :func:`affine_interval`.
    """
    c = np.asarray(centre, dtype=np.float64)
    up_room, down_room = np.maximum(upper - c, 0.0), np.maximum(c - lower, 0.0)
    mid = rows.weight @ c + rows.bias
    moves = []
    for room_pos, room_neg in ((up_room, down_room), (down_room, up_room)):
        room = np.where(rows.positive, room_pos[rows.order], room_neg[rows.order])
        spent_before = np.cumsum(room, axis=1) - room
        take = np.clip(budget - spent_before, 0.0, room)
        moves.append(np.sum(rows.gain * take, axis=1))
    # Rounding of the centre product, of the cumulative sums and of the moves: each is a
    # sum of at most 2 n + 4 terms bounded by |w| (|c| + room) or by max|w| sum(room).
    room_sum = float(np.sum(up_room + down_room))
    size = (np.abs(rows.weight) @ (np.abs(c) + up_room + down_room) + np.abs(rows.bias)
            + rows.gain[:, 0] * room_sum if rows.gain.size else np.abs(rows.bias))
    slack = up(4.0 * gamma(2 * c.size + 8) * size)
    return down(mid - moves[1] - slack), up(mid + moves[0] + slack)


def first_affine(network: Network) -> tuple[sp.csr_matrix, np.ndarray] | None:
    """Return the affine map from the input to the first ReLU layer's pre-activations, when
    exactly one affine layer (and only flattening) precedes it; else None."""
    positions = network.relu_positions
    if not positions:
        return None
    before = network.layers[:positions[0]]
    affine = [layer for layer in before if isinstance(layer, (Dense, Conv2d))]
    if len(affine) != 1 or any(isinstance(layer, (MaxPool2d, Add, Concat)) for layer in before):
        return None
    if not network.is_chain and _reads_through(network, positions[0]) != before.index(affine[0]):
        return None
    return affine_parts(affine[0])


def _reads_through(network: Network, i: int) -> int:
    """Return the tensor layer i reads, following Flatten layers back to their source."""
    t = network.inputs[i][0]
    while t >= 0 and network.layers[t].__class__.__name__ == "Flatten":
        t = network.inputs[t][0]
    return t


def maxpool_interval(
    layer: MaxPool2d, lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the interval of max pooling over ``[lower, upper]``; padding never wins."""
    idx = layer.window_indices()
    lo = np.concatenate([lower, [-np.inf]])[idx].max(axis=1)
    hi = np.concatenate([upper, [-np.inf]])[idx].max(axis=1)
    return lo, hi


def apply_split_masks(
    lower: np.ndarray, upper: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Return bounds with active splits (mask +1) clipped to >= 0 and inactive ones to <= 0."""
    if mask is None:
        return lower, upper
    m = np.asarray(mask).reshape(-1)
    return (np.where(m > 0, np.maximum(lower, 0.0), lower),
            np.where(m < 0, np.minimum(upper, 0.0), upper))


def interval_bounds(
    network: Network,
    box_lower: np.ndarray,
    box_upper: np.ndarray,
    given: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    masks: Sequence[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Propagate intervals through ``network``.

    Args:
        network: the network.
        box_lower: (n_in,) input lower bounds.
        box_upper: (n_in,) input upper bounds.
        given: optional per-ReLU-layer (lower, upper) pre-activation bounds to intersect with.
        masks: optional per-ReLU-layer split states (+1 active, -1 inactive, 0 free).

    Returns:
        Per-ReLU-layer pre-activation lower and upper bounds (lists of (n_l,) arrays), and
        the output interval. A lower above an upper means the node is empty.
    """
    lo = np.asarray(box_lower, dtype=np.float64)
    hi = np.asarray(box_upper, dtype=np.float64)
    lowers: list[np.ndarray] = []
    uppers: list[np.ndarray] = []
    vals = [(lo, hi)]
    for layer, ins in zip(network.layers, network.inputs, strict=True):
        lo, hi = vals[ins[0] + 1]
        if isinstance(layer, (Dense, Conv2d)):
            W, b = affine_parts(layer)
            err = layer_error(layer, W, np.maximum(np.abs(lo), np.abs(hi)))
            lo, hi = affine_interval(W, b, lo, hi, err)
        elif isinstance(layer, MaxPool2d):
            lo, hi = maxpool_interval(layer, lo, hi)
        elif isinstance(layer, ReLU):
            k = len(lowers)
            if given is not None:
                lo = np.maximum(lo, given[0][k])
                hi = np.minimum(hi, given[1][k])
            lo, hi = apply_split_masks(lo, hi, None if masks is None else masks[k])
            lowers.append(lo)
            uppers.append(hi)
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        elif isinstance(layer, (Add, Concat)):
            lo, hi = join_interval(layer, [vals[t + 1] for t in ins])
        vals.append((lo, hi))
    return lowers, uppers, vals[-1]


def join_interval(layer: Add | Concat, parts: Sequence[tuple[np.ndarray, np.ndarray]]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Return the interval of a residual sum (each addition rounded outwards) or of a
    concatenation."""
    if isinstance(layer, Concat):
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    lo, hi = parts[0]
    for p_lo, p_hi in parts[1:]:
        lo, hi = down(lo + p_lo), up(hi + p_hi)
    return lo, hi
