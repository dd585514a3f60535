r"""Rigorous bounds for the checker: interval propagation and the dual (Lagrangian) bound.

For any coefficient vectors :math:`\nu_k` of the pre-activations :math:`\hat z_k` and the
target :math:`g(y) = c^\top y - d`, the telescoping identity gives

.. math::
    g(y) = \mu_0^\top x + \sum_k \sum_j \big(\mu_{kj} \max(\hat z_{kj}, 0)
           - \nu_{kj} \hat z_{kj}\big) + \text{(bias terms)},

with :math:`\mu_k` the coefficients of the ReLU outputs, :math:`\mu_k = S_{k+1}^\top \nu_{k+1}`
through the affine segment after them (:math:`\mu_L = S_{L+1}^\top c`). Each neuron's term is a
piecewise-linear function of one variable, so its minimum over the neuron's interval is the
smallest of its values at the interval's ends and at 0 (when inside), and the input term's
minimum over the box is taken coordinate-wise. The sum of these minima, minus a rigorous bound
on float64 rounding and on the layers' recorded error, is a lower bound of g on the node:
**valid for any** :math:`\nu` (a proof from the engine, or CROWN's own choice, :func:`crown_nu`)
and monotone in the intervals (a smaller interval can only raise each minimum).

Intervals (:func:`segment_interval`) are propagated with the centre-radius form, the radius
rounded up so that it covers the box, and widened by their rounding and recorded error.

Everything works on a *batch* of B nodes at once (Python overhead per node would dominate
on small networks): node arrays have a leading node axis (B, n), and a :class:`Target` is K
functions on each of G nodes of the batch, (G, K, n), so that each node's bounds broadcast
over its rows. Each entry of a batched product is still one dot product of the same length n,
so every error term is the one-node term, ``gamma(n + 4) |a|.|b|``, per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bnbver.check.arith import U, down, gamma, magnitude, up
from bnbver.check.net import Affine, CheckNet

#: Relative safety factor on every accumulated error term (it covers their own rounding).
ERR_SCALE = 1.0 + 1e-6

#: Most float64 entries of one (rows, width) array in a bound computation: targets with more
#: rows are bounded in chunks, so that memory stays bounded on wide networks.
CHUNK_ENTRIES = 1 << 15


@dataclass
class Bounds:
    """Bounds of a batch of B nodes, and what a backward pass through them needs.

    Attributes:
        lower, upper: per ReLU layer, split-clamped pre-activation bounds (B, n_k).
        mags: per segment, a bound on the magnitude of each affine layer's input (B, n).
        out_lo, out_hi: an interval of the network output (B, n_out).
        infeasible: (B,) some clamped lower bound of the node exceeds its upper bound.
        inputs: (3, B, n_in) the input boxes' lower and upper ends and magnitudes.
        relu: per ReLU layer (8, B, n_k), see :func:`relu_pack`.
        back_err: per segment, per affine layer (B, n_out) the rounding and recorded error of
            each output of the layer, per unit of the coefficient carried back through it.
    """

    lower: list[np.ndarray] = field(default_factory=list)
    upper: list[np.ndarray] = field(default_factory=list)
    mags: list[list[np.ndarray]] = field(default_factory=list)
    out_lo: np.ndarray = field(default_factory=lambda: np.zeros(0))
    out_hi: np.ndarray = field(default_factory=lambda: np.zeros(0))
    infeasible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    inputs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    relu: list[np.ndarray] = field(default_factory=list)
    back_err: list[list[np.ndarray]] = field(default_factory=list)


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the dot product of each row of a with its node's row of b:
    (G, K, n) and (G, 1, n) -> (G, K)."""
    out: np.ndarray = (a @ np.swapaxes(b, -1, -2))[..., 0]
    return out


def _matmul(coef: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Return ``coef @ W`` for (G, K, n) rows as one 2-D product."""
    g, k, n = coef.shape
    out: np.ndarray = (coef.reshape(g * k, n) @ W).reshape(g, k, -1)
    return out


def affine_interval(A: Affine, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return rigorous intervals of ``W* h + b*`` for each row's h in [lo, hi] (B, n)."""
    c = (lo + hi) / 2.0
    r = up(np.maximum(hi - c, c - lo))
    m = up(np.abs(c) + r)
    mid = c @ A.W.T + A.b
    rad = r @ A.abs_w.T
    size = m @ A.abs_w.T + np.abs(A.b)
    err = ((2.0 * gamma(A.W.shape[1] + 4) + A.werr) * size + A.berr) * ERR_SCALE
    slack = up(rad + err)
    return down(mid - slack), up(mid + slack)


def segment_interval(segment: Sequence[Affine], lo: np.ndarray,
                     hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Return the intervals after a segment and the input magnitude of each of its layers."""
    mags = []
    for A in segment:
        mags.append(magnitude(lo, hi))
        lo, hi = affine_interval(A, lo, hi)
    return lo, hi, mags


def back_err(A: Affine, m: np.ndarray) -> np.ndarray:
    """Return per node (B, n_out) the error of each output of ``W h + b`` for inputs of
    magnitude at most ``m`` (B, n_in) when carried back (:func:`through`): rounding of a
    product of length n_out, and the layer's recorded weight and bias error."""
    wm = m @ A.abs_w.T
    out: np.ndarray = gamma(A.W.shape[0] + 4) * (wm + np.abs(A.b)) + A.werr * wm + A.berr
    return out


def relu_pack(lo: np.ndarray, hi: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Return (8, B, n) per neuron of a ReLU layer what a backward step through it needs:
    ``lo``, ``hi``, ``max(lo, 0)``, ``max(hi, 0)``, a cap on its term's minimum (0 where the
    interval holds 0 inside, else inf), ``max(|lo|, |hi|)``, and CROWN's slope for positive
    and negative coefficients (:func:`crown_nu`)."""
    active = (split > 0) | ((split == 0) & (lo >= 0))
    unstable = (split == 0) & (lo < 0) & (hi > 0)
    width = np.where(unstable, hi - lo, 1.0)
    chord = np.where(unstable, hi / width, active.astype(float))
    slope = np.where(unstable, (hi >= -lo).astype(float), active.astype(float))
    cap = np.where((lo < 0) & (hi > 0), 0.0, np.inf)
    return np.stack([lo, hi, np.maximum(lo, 0.0), np.maximum(hi, 0.0), cap,
                     magnitude(lo, hi), slope, chord])


def crown_nu(mu: np.ndarray, slope: np.ndarray, chord: np.ndarray) -> np.ndarray:
    """Return CROWN's coefficients of the pre-activations for ReLU-output coefficients mu.

    Positive coefficients take the lower relaxation (``slope``: 1 if ``u >= -l`` else 0),
    negative ones the chord ``u / (u - l)``; stable and split neurons take 1 (active) or 0
    (inactive) (both from :func:`relu_pack`). ``max(mu, 0) slope + min(mu, 0) chord`` gives
    the same numbers as choosing by sign (one of the two products is 0), without a branch
    per entry.
    """
    out: np.ndarray = np.maximum(mu, 0.0) * slope
    out += np.minimum(mu, 0.0) * chord
    return out


def _relu_terms(mu: np.ndarray, nu: np.ndarray | None,
                pack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the pre-activation coefficients (``nu``, or CROWN's when None), per row the
    sum of the neurons' exact minima, and its rounding bound (``pack``: (8, G, 1, n), each
    node's :func:`relu_pack`; ``mu``, ``nu``: (G, K, n))."""
    lo, hi, relu_lo, relu_hi, cap, mag, slope, chord = pack
    if nu is None:
        nu = crown_nu(mu, slope, chord)
    low = mu * relu_lo
    low -= nu * lo
    at_hi = mu * relu_hi
    at_hi -= nu * hi
    np.minimum(low, at_hi, out=low)
    np.minimum(low, cap, out=low)
    size = rowdot(np.abs(mu), mag) + rowdot(np.abs(nu), mag)
    return nu, _row_sum(low), gamma(lo.shape[-1] + 4) * size


def _row_sum(a: np.ndarray) -> np.ndarray:
    """Return the sum of each row of a (G, K, n) -> (G, K) (any order: the error bounds hold
    for every order of summation)."""
    out: np.ndarray = a @ np.ones(a.shape[-1])
    return out


@dataclass(frozen=True, eq=False)
class Target:
    """K functions on each of G nodes of a batch: row (g, r) is ``coef[g, r] . h +
    const[g, r]`` of the output of segment ``segment``, on node ``node[g]``.

    ``err`` (G, K) is a bound on how far they are from the functions meant (e.g. a rounded row
    combination); it is subtracted like every other error term.
    """

    segment: int
    coef: np.ndarray
    const: np.ndarray
    err: np.ndarray
    node: np.ndarray

    def take(self, sel: slice | np.ndarray) -> Target:
        """The target on some of its nodes (a slice or a mask of G)."""
        return Target(self.segment, self.coef[sel], self.const[sel], self.err[sel],
                      self.node[sel])


def chunk_rows(net: CheckNet) -> int:
    """Return how many target rows to bound at once (see :data:`CHUNK_ENTRIES`)."""
    widest: int = max(net.input_size, *net.relu_sizes,
                      *(A.W.shape[0] for seg in net.segments for A in seg))
    return max(1, CHUNK_ENTRIES // widest)


def lower_bound(net: CheckNet, nb: Bounds, target: Target,
                nus: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Return rigorous lower bounds of a target's rows over their nodes, with their linear form.

    Args:
        net: the segments.
        nb: the batch's bounds (layers before ``target.segment`` are used) and input boxes.
        target: the (G, K) functions to bound.
        nus: per ReLU layer before the target, (G, K, n_k) coefficients of the
            pre-activations (a proof); None: CROWN's (:func:`crown_nu`).

    Returns:
        ``(lower (G, K), a (G, K, n_in), c (G, K))`` with ``target_gr(x) >= a_gr x + c_gr``
        on the box of node ``target.node[g]``.
    """
    step = max(1, chunk_rows(net) // max(1, target.coef.shape[1]))
    nodes = target.coef.shape[0]
    if nodes <= step:
        return _lower_bound(net, nb, target, nus)
    parts = []
    for start in range(0, nodes, step):
        sel = slice(start, start + step)
        part_nus = None if nus is None else [nu[sel] for nu in nus]
        parts.append(_lower_bound(net, nb, target.take(sel), part_nus))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _lower_bound(net: CheckNet, nb: Bounds, target: Target,
                 nus: Sequence[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray]:
    """:func:`lower_bound` on one chunk of nodes."""
    node, s = target.node, target.segment
    coef, const, err = target.coef, target.const.astype(float), target.err.astype(float)
    coef, const, err = through(net.segments[s], nb.back_err[s], node, coef, const, err)
    for k in range(s - 1, -1, -1):
        nu, terms, term_err = _relu_terms(coef, None if nus is None else nus[k],
                                          nb.relu[k][:, node, None])
        const, err = const + terms, err + term_err + 2.0 * U * np.abs(const + terms)
        coef, const, err = through(net.segments[k], nb.back_err[k], node, nu, const, err)
    lo_x, hi_x, mag_x = nb.inputs[:, node, None]
    low = np.minimum(coef * lo_x, coef * hi_x).sum(axis=-1)
    input_err = gamma(lo_x.shape[-1] + 4) * rowdot(np.abs(coef), mag_x)
    total = const + low
    lin_c = down(const - err * ERR_SCALE)
    return down(total - (err + input_err + 2.0 * U * np.abs(total)) * ERR_SCALE), coef, lin_c


def _clamp(lo: np.ndarray, hi: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.where(split > 0, np.maximum(lo, 0.0), lo), np.where(split < 0,
                                                                  np.minimum(hi, 0.0), hi)


@dataclass(frozen=True, eq=False)
class RootProofs:
    """Proofs of intermediate bounds of nodes of a batch (optimised slopes at a root).

    Attributes:
        node: (Q,) the node (position in the batch) each proof is for.
        layer, unit, sign: (Q,) which bound: sign > 0 a lower, else an upper bound, of
            neuron ``unit``.
        nu: (Q, sum n_k) coefficients of the pre-activations of the layers before.
    """

    node: np.ndarray
    layer: np.ndarray
    unit: np.ndarray
    sign: np.ndarray
    nu: np.ndarray


def node_bounds(net: CheckNet, box: tuple[np.ndarray, np.ndarray],
                splits: Sequence[np.ndarray], parent: tuple[list[np.ndarray], list[np.ndarray]],
                recompute: np.ndarray, proofs: RootProofs | None = None) -> Bounds:
    """Derive a batch's bounds layer by layer, as the engine does (but with its own code).

    Each ReLU layer's pre-activation interval is propagated from the previous layer's,
    intersected with the parent's (``parent``: lower and upper per layer, (B, n_k); a child's
    region lies inside its parent's; a root's are infinite), refined where ``recompute`` (B,)
    by the CROWN bound of every neuron still unstable and free, tightened by the nodes' own
    proofs of intermediate bounds, and clamped by the nodes' splits.
    """
    lo, hi = box
    nb = Bounds(infeasible=np.zeros(lo.shape[0], bool),
                inputs=np.stack([lo, hi, magnitude(lo, hi)]))
    for k, seg in enumerate(net.segments[:-1]):
        lo_k, hi_k, mags = segment_interval(seg, lo, hi)
        _add_segment(nb, seg, mags)
        lo_k, hi_k = np.maximum(lo_k, parent[0][k]), np.minimum(hi_k, parent[1][k])
        _crown_layer(net, nb, k, lo_k, hi_k, splits[k], recompute)
        if proofs is not None:
            _proven_layer(net, nb, k, lo_k, hi_k, proofs)
        lo_k, hi_k = _clamp(lo_k, hi_k, splits[k])
        nb.lower.append(lo_k)
        nb.upper.append(hi_k)
        nb.relu.append(relu_pack(lo_k, hi_k, splits[k]))
        nb.infeasible |= np.any(lo_k > hi_k, axis=1)
        lo, hi = np.maximum(lo_k, 0.0), np.maximum(hi_k, 0.0)
    nb.out_lo, nb.out_hi, mags = segment_interval(net.segments[-1], lo, hi)
    _add_segment(nb, net.segments[-1], mags)
    return nb


def _add_segment(nb: Bounds, segment: Sequence[Affine], mags: list[np.ndarray]) -> None:
    """Record a segment's input magnitudes and backward errors (:func:`back_err`)."""
    nb.mags.append(mags)
    nb.back_err.append([back_err(A, m) for A, m in zip(segment, mags, strict=True)])


def _crown_layer(net: CheckNet, nb: Bounds, k: int, lo_k: np.ndarray, hi_k: np.ndarray,
                 split: np.ndarray, recompute: np.ndarray) -> None:
    """Intersect (in place) layer k's intervals with CROWN bounds of the unstable free neurons
    of the nodes that recompute: two rows (+z_j, -z_j) per such neuron.

    Nodes go in groups of similar counts (most first), each node's rows padded with zero rows
    to the group's largest count (their bounds are dropped)."""
    free = (lo_k < 0) & (hi_k > 0) & (split == 0) & recompute[:, None]
    count = free.sum(axis=1)
    nodes = np.flatnonzero(count)
    nodes = nodes[np.argsort(-count[nodes], kind="stable")]
    start = 0
    while start < nodes.size:
        width = int(count[nodes[start]])
        group = nodes[start:start + max(1, chunk_rows(net) // (2 * width))]
        start += group.size
        # each node's free neurons first (in order), then padding
        unit = np.argsort(~free[group], axis=1, kind="stable")[:, :width]
        real = np.take_along_axis(free[group], unit, axis=1)
        g, r = np.nonzero(real)
        rows = np.zeros((group.size, 2 * width, lo_k.shape[1]))
        rows[g, r, unit[g, r]] = 1.0
        rows[g, width + r, unit[g, r]] = -1.0
        zero = np.zeros(rows.shape[:2])
        lb, _, _ = lower_bound(net, nb, Target(k, rows, zero, zero, group))
        b, j = group[g], unit[g, r]
        lo_k[b, j] = np.maximum(lo_k[b, j], lb[g, r])
        hi_k[b, j] = np.minimum(hi_k[b, j], -lb[g, width + r])


def _proven_layer(net: CheckNet, nb: Bounds, k: int, lo_k: np.ndarray, hi_k: np.ndarray,
                  proofs: RootProofs) -> None:
    """Intersect (in place) layer k's intervals with the bounds its stored proofs give.

    A proof bounds the row ``+z_j`` (sign > 0) or ``-z_j`` (otherwise): the sign only picks
    the side, so no stored number can scale the bound it yields.
    """
    sel = np.flatnonzero(proofs.layer == k)
    if sel.size == 0:
        return
    lower = proofs.sign[sel] > 0
    node, unit = proofs.node[sel], proofs.unit[sel]
    rows = np.zeros((sel.size, 1, lo_k.shape[1]))
    rows[np.arange(sel.size), 0, unit] = np.where(lower, 1.0, -1.0)
    zero = np.zeros((sel.size, 1))
    nus = split_layers(proofs.nu[sel][:, None], net.relu_sizes)
    lb = lower_bound(net, nb, Target(k, rows, zero, zero, node), nus)[0][:, 0]
    np.maximum.at(lo_k, (node[lower], unit[lower]), lb[lower])
    np.minimum.at(hi_k, (node[~lower], unit[~lower]), -lb[~lower])


def split_layers(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cut (..., sum n_k) coefficients into per-layer (..., n_k) blocks."""
    edges = np.cumsum([0, *sizes])
    return [flat[..., edges[i]:edges[i + 1]] for i in range(len(sizes))]


def through(segment: Sequence[Affine], errs: Sequence[np.ndarray], node: np.ndarray,
            coef: np.ndarray, const: np.ndarray,
            err: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carry (G, K) coefficient rows (row (g, r) on node ``node[g]``) back through a segment's
    affine layers: ``coef W`` and ``coef b``, with the error of both (``errs``: per layer
    each node's :func:`back_err`)."""
    for A, e in zip(reversed(segment), reversed(errs), strict=True):
        const = const + coef @ A.b
        err = err + rowdot(np.abs(coef), e[node, None]) + 2.0 * U * np.abs(const)
        coef = _matmul(coef, A.W)
    return coef, const, err
