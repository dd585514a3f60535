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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bnbver.check.arith import U, down, gamma, magnitude, up
from bnbver.check.net import Affine, CheckNet

#: Relative safety factor on every accumulated error term (it covers their own rounding).
ERR_SCALE = 1.0 + 1e-6


@dataclass
class NodeBounds:
    """Bounds of one node.

    Attributes:
        lower, upper: per ReLU layer, split-clamped pre-activation bounds (n_k,).
        mags: per segment, a bound on the magnitude of each affine layer's input.
        out_lo, out_hi: an interval of the network output.
        infeasible: some clamped lower bound exceeds its upper bound.
    """

    lower: list[np.ndarray]
    upper: list[np.ndarray]
    mags: list[list[np.ndarray]]
    out_lo: np.ndarray
    out_hi: np.ndarray
    infeasible: bool = False


def affine_interval(A: Affine, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return a rigorous interval of ``W* h + b*`` for h in [lo, hi]."""
    c = (lo + hi) / 2.0
    r = up(np.maximum(hi - c, c - lo))
    m = up(np.abs(c) + r)
    mid = A.W @ c + A.b
    rad = A.abs_w @ r
    size = A.abs_w @ m + np.abs(A.b)
    err = ((2.0 * gamma(A.W.shape[1] + 4) + A.werr) * size + A.berr) * ERR_SCALE
    slack = up(rad + err)
    return down(mid - slack), up(mid + slack)


def segment_interval(segment: Sequence[Affine], lo: np.ndarray,
                     hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Return the interval after a segment and the input magnitude of each of its layers."""
    mags = []
    for A in segment:
        mags.append(magnitude(lo, hi))
        lo, hi = affine_interval(A, lo, hi)
    return lo, hi, mags


def crown_nu(mu: np.ndarray, lo: np.ndarray, hi: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Return CROWN's coefficients of the pre-activations for ReLU-output coefficients mu.

    Positive coefficients take the lower relaxation (slope 1 if ``u >= -l`` else 0), negative
    ones the chord ``u / (u - l)``; stable and split neurons take 1 (active) or 0 (inactive).
    """
    active = (split > 0) | ((split == 0) & (lo >= 0))
    unstable = (split == 0) & (lo < 0) & (hi > 0)
    width = np.where(unstable, hi - lo, 1.0)
    chord = np.where(unstable, hi / width, active.astype(float))
    slope = np.where(unstable, (hi >= -lo).astype(float), active.astype(float))
    return np.where(mu >= 0, mu * slope, mu * chord)


def _relu_terms(mu: np.ndarray, nu: np.ndarray, lo: np.ndarray,
                hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return per row the sum of the neurons' exact minima and its rounding bound."""
    at_lo = mu * np.maximum(lo, 0.0) - nu * lo
    at_hi = mu * np.maximum(hi, 0.0) - nu * hi
    low = np.minimum(at_lo, at_hi)
    low = np.where((lo < 0) & (hi > 0), np.minimum(low, 0.0), low)
    size = (np.abs(mu) + np.abs(nu)) @ magnitude(lo, hi)
    return low.sum(axis=1), gamma(lo.size + 4) * size


def _affine_back(A: Affine, coef: np.ndarray, m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``coef W``, ``coef b`` and the error of both (and of the weights) per row."""
    e = gamma(A.W.shape[0] + 4) * (A.abs_w @ m + np.abs(A.b)) + A.werr * (A.abs_w @ m) + A.berr
    return coef @ A.W, coef @ A.b, np.abs(coef) @ e


@dataclass(frozen=True, eq=False)
class Target:
    """K functions ``coef . h + const`` of the output of segment ``segment``.

    ``err`` (K,) is a bound on how far they are from the functions meant (e.g. a rounded row
    combination); it is subtracted like every other error term.
    """

    segment: int
    coef: np.ndarray
    const: np.ndarray
    err: np.ndarray


def lower_bound(net: CheckNet, nb: NodeBounds, box: tuple[np.ndarray, np.ndarray],
                target: Target, splits: Sequence[np.ndarray],
                nus: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """Return rigorous lower bounds of a target over a node, with their linear form.

    Args:
        net: the segments.
        nb: the node's bounds (layers before ``target.segment`` are used).
        box: the node's input box.
        target: the K functions to bound.
        splits: per ReLU layer the node's split states (+1, -1, 0).
        nus: per ReLU layer before the target, (K, n_k) coefficients of the pre-activations
            (a proof); None: CROWN's (:func:`crown_nu`).

    Returns:
        ``(lower (K,), a (K, n_in), c (K,))`` with ``target(x) >= a x + c`` on the box.
    """
    coef, const, err = target.coef, target.const.astype(float), target.err.astype(float)
    coef, const, err = through(net.segments[target.segment], nb.mags[target.segment],
                                coef, const, err)
    for k in range(target.segment - 1, -1, -1):
        lo, hi = nb.lower[k], nb.upper[k]
        nu = crown_nu(coef, lo, hi, splits[k]) if nus is None else nus[k]
        terms, term_err = _relu_terms(coef, nu, lo, hi)
        const, err = const + terms, err + term_err + 2.0 * U * np.abs(const + terms)
        coef, const, err = through(net.segments[k], nb.mags[k], nu, const, err)
    lo_x, hi_x = box
    low = np.minimum(coef * lo_x, coef * hi_x).sum(axis=1)
    input_err = gamma(lo_x.size + 4) * (np.abs(coef) @ magnitude(lo_x, hi_x))
    total = const + low
    lin_c = down(const - err * ERR_SCALE)
    return down(total - (err + input_err + 2.0 * U * np.abs(total)) * ERR_SCALE), coef, lin_c


def _clamp(lo: np.ndarray, hi: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.where(split > 0, np.maximum(lo, 0.0), lo), np.where(split < 0,
                                                                  np.minimum(hi, 0.0), hi)


@dataclass(frozen=True, eq=False)
class RootProofs:
    """Proofs of intermediate bounds of one node (optimised slopes at a root).

    Attributes:
        layer, unit, sign: (Q,) which bound: +1 lower, -1 upper, of neuron ``unit``.
        nu: (Q, sum n_k) coefficients of the pre-activations of the layers before.
    """

    layer: np.ndarray
    unit: np.ndarray
    sign: np.ndarray
    nu: np.ndarray


def node_bounds(net: CheckNet, box: tuple[np.ndarray, np.ndarray],
                splits: Sequence[np.ndarray], parent: NodeBounds | None, recompute: bool,
                proofs: RootProofs | None = None) -> NodeBounds:
    """Derive a node's bounds layer by layer, as the engine does (but with its own code).

    Each ReLU layer's pre-activation interval is propagated from the previous layer's,
    intersected with the parent's (a child's region lies inside its parent's), refined when
    ``recompute`` by the CROWN bound of every neuron still unstable and free, tightened by
    the node's own proofs of intermediate bounds, and clamped by the node's splits.
    """
    nb = NodeBounds([], [], [], np.zeros(0), np.zeros(0))
    lo, hi = box
    for k, seg in enumerate(net.segments[:-1]):
        lo_k, hi_k, mags = segment_interval(seg, lo, hi)
        nb.mags.append(mags)
        if parent is not None:
            lo_k, hi_k = np.maximum(lo_k, parent.lower[k]), np.minimum(hi_k, parent.upper[k])
        if recompute:
            lo_k, hi_k = _crown_layer(net, nb, box, k, lo_k, hi_k, splits)
        if proofs is not None:
            lo_k, hi_k = _proven_layer(net, nb, box, k, lo_k, hi_k, splits, proofs)
        lo_k, hi_k = _clamp(lo_k, hi_k, splits[k])
        nb.lower.append(lo_k)
        nb.upper.append(hi_k)
        nb.infeasible |= bool(np.any(lo_k > hi_k))
        lo, hi = np.maximum(lo_k, 0.0), np.maximum(hi_k, 0.0)
    nb.out_lo, nb.out_hi, mags = segment_interval(net.segments[-1], lo, hi)
    nb.mags.append(mags)
    return nb


def _crown_layer(net: CheckNet, nb: NodeBounds, box: tuple[np.ndarray, np.ndarray], k: int,
                 lo_k: np.ndarray, hi_k: np.ndarray,
                 splits: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Intersect layer k's interval with CROWN bounds of its unstable free neurons."""
    idx = np.flatnonzero((lo_k < 0) & (hi_k > 0) & (splits[k] == 0))
    if idx.size == 0:
        return lo_k, hi_k
    eye = np.eye(lo_k.size)[idx]
    rows = np.vstack([eye, -eye])
    zero = np.zeros(rows.shape[0])
    lb, _, _ = lower_bound(net, nb, box, Target(k, rows, zero, zero), splits)
    lo_k, hi_k = lo_k.copy(), hi_k.copy()
    lo_k[idx] = np.maximum(lo_k[idx], lb[:idx.size])
    hi_k[idx] = np.minimum(hi_k[idx], -lb[idx.size:])
    return lo_k, hi_k


def _proven_layer(net: CheckNet, nb: NodeBounds, box: tuple[np.ndarray, np.ndarray], k: int,
                  lo_k: np.ndarray, hi_k: np.ndarray, splits: Sequence[np.ndarray],
                  proofs: RootProofs) -> tuple[np.ndarray, np.ndarray]:
    """Intersect layer k's interval with the bounds its stored proofs give."""
    sel = np.flatnonzero(proofs.layer == k)
    if sel.size == 0:
        return lo_k, hi_k
    rows = np.zeros((sel.size, lo_k.size))
    rows[np.arange(sel.size), proofs.unit[sel]] = proofs.sign[sel]
    zero = np.zeros(sel.size)
    nus = split_layers(proofs.nu[sel], net.relu_sizes)
    lb, _, _ = lower_bound(net, nb, box, Target(k, rows, zero, zero), splits, nus)
    lo_k, hi_k = lo_k.copy(), hi_k.copy()
    for q, j in enumerate(proofs.unit[sel]):
        if proofs.sign[sel][q] > 0:
            lo_k[j] = max(lo_k[j], lb[q])
        else:
            hi_k[j] = min(hi_k[j], -lb[q])
    return lo_k, hi_k


def split_layers(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cut (K, sum n_k) coefficients into per-layer (K, n_k) blocks."""
    edges = np.cumsum([0, *sizes])
    return [flat[:, edges[i]:edges[i + 1]] for i in range(len(sizes))]


def through(segment: Sequence[Affine], mags: Sequence[np.ndarray], coef: np.ndarray,
             const: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carry K coefficient rows back through a segment's affine layers."""
    for A, m in zip(reversed(segment), reversed(mags), strict=True):
        coef, add, e = _affine_back(A, coef, m)
        const = const + add
        err = err + e + 2.0 * U * np.abs(const)
    return coef, const, err
