"""Forward symbolic linear bounds (DeepPoly-forward / Neurify symbolic intervals), batched.

For low-dimensional inputs the bounds of every layer are kept as linear functions of the input,
propagated forwards once, instead of one backward CROWN pass per layer. The input box of each
node is written ``x = m + r * e`` with ``m = (hi + lo) / 2``, ``r = (hi - lo) / 2`` and
``e in [-1, 1]^n_in``; each neuron j of a layer carries two affine functions of ``e``

    L_j(e) = sum_i A_ij e_i + c_j  <=  h_j(x)  <=  U_j(e) = sum_i A'_ij e_i + c'_j,

stored as one tensor (B, n_in + 1, n): rows ``0..n_in-1`` the coefficients, the last row the
constant. Concretising over the box is then a sum of absolute values:

    min_e L_j = c_j - sum_i |A_ij|,     max_e U_j = c'_j + sum_i |A'_ij|.

Through an affine layer ``z = W h + b``, with the midpoint ``M = (L + U) / 2`` and radius
``R = (U - L) / 2`` of the pair (``R >= 0`` pointwise): ``W M + b - |W| R <= z <= W M + b +
|W| R`` (the same as ``W+ L + W- U <= z <= W+ U + W- L``, at half the cost).

Through a ReLU ``y = max(h, 0)`` with pre-activation bounds ``[l, u]`` (the concretised
symbolic bounds intersected with interval and inherited bounds, clamped by the splits):

- split active or ``l >= 0``: ``y = h`` (on the node's feasible set), so ``(L, U)`` pass;
- split inactive or ``u <= 0``: ``y = 0``;
- unstable: ``h <= U(e)`` and ReLU is monotone, so ``y <= max(min(U(e), u), 0)``. With
  ``lu = min_e U(e)``: if ``lu >= 0`` then ``y <= U(e)``; otherwise, with the zero point
  ``z0 = max(l, lu) < 0`` and slope ``s = u / (u - z0)``, ``y <= s (U(e) - z0)`` (the triangle
  chord; valid with ``z0 = l`` because ``y <= s (h - l)`` on ``[l, u]``, and with ``z0 = lu``
  because the chord of ``[lu, u]`` lies above ``max(min(t, u), 0)`` for every ``t >= lu``).
  Below, ``y >= max(L(e), 0) >= alpha L(e)`` for any ``alpha in [0, 1]``; with
  ``[ll, ul]`` the range of ``L``: ``alpha = 0`` if ``ul <= 0``, ``1`` if ``ll >= 0``, else
  CROWN's area rule (1 if ``ul >= -ll``, else 0).

Rounding: every neuron carries ``err`` (B, n), a bound on how far rounding (and the weights'
recorded error) can have moved its computed functions: the true value satisfies
``L_j(e) - err_j <= h_j(x) <= U_j(e) + err_j``. Through an affine layer
``err_z = |W| err_h + 4 v(size_h + err_h)``, with ``size_h`` the l1 size of the neuron's two
functions (a bound on their values) and ``v`` the op's error vector
(:meth:`~bnbver.bounds.prepared.AffineOp.error_vector`); through a ReLU the chord's slope is
rounded up and ``err_y = s err_h + 4 u s (size_h + |z0|)``. Ranges subtract ``err`` and their
own rounding and are rounded outwards (:mod:`bnbver.bounds.rounding`).

Over a DAG every op's output keeps its pair of functions: a residual sum adds its inputs'
(``L = sum_k L_k``, ``U = sum_k U_k``; every coefficient of a sum of k terms is off by at
most ``gamma_{k+1}`` of the sum of the terms' magnitudes, so
``err = sum_k err_k + 2 gamma_{k+1} sum_k size_k``, with ``size_k`` the l1 size of input
k's pair), and a concatenation concatenates them.

Cost per node and layer: ``O(n_in * n_l * n_{l-1})``, against backward CROWN's
``O(n_l * sum_{k<l} n_k n_{k-1})`` for the same layer. Max pooling is not supported (the
engine falls back to CROWN); convolutions are (through ``AffineOp.linear``).

Shapes: B nodes, ``n_in`` input size, ``n`` the width of the current layer, ``K = n_in + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds import rounding
from bnbver.bounds.interval import clamp_splits, crossing, slot_input_interval, slot_split
from bnbver.bounds.prepared import AddOp, AffineOp, BoundedNetwork, ConcatOp, PoolOp, ReluOp
from bnbver.bounds.types import NodeBatch


@dataclass(frozen=True, eq=False)
class Symbolic:
    """Linear lower/upper functions of the normalised input for B nodes.

    Attributes:
        lower: (B, K, n): rows ``0..n_in-1`` coefficients of ``e``, row ``n_in`` the constant.
        upper: (B, K, n), same layout.
        err: (B, n) rounding allowance: the true value lies in ``[lower - err, upper + err]``.
    """

    lower: Tensor
    upper: Tensor
    err: Tensor

    def size(self) -> Tensor:
        """Return (B, n) ``sum |lower| + sum |upper|``, rounded up: bounds both functions."""
        total = self.lower.abs().sum(1) + self.upper.abs().sum(1)
        k = self.lower.shape[1]
        return total * (1.0 + rounding.gamma(2 * k + 2, total.dtype))


@dataclass(frozen=True, eq=False)
class ForwardBounds:
    """Result of :func:`forward_bounds`.

    Attributes:
        lower: per slot (B, n_s) pre-activation lower bounds (intersected, split-clamped).
        upper: per slot (B, n_s) upper bounds.
        infeasible: (B,) bool, True where some clamped bounds cross.
        row_lower: (B, R) forward lower bounds of the margins.
    """

    lower: list[Tensor]
    upper: list[Tensor]
    infeasible: Tensor
    row_lower: Tensor


def supports_forward(net: BoundedNetwork) -> bool:
    """Return True when every operation has a forward relaxation (no max pool)."""
    return not any(isinstance(op, PoolOp) for op in net.ops)


def input_symbolic(lo: Tensor, hi: Tensor) -> Symbolic:
    """Return bounds ``x = m + r e`` of the input box (B, n_in) as functions of e.

    r is rounded up so that ``m + r [-1, 1]`` contains the box.
    """
    b, n = lo.shape
    mid = (hi + lo) / 2
    rad = rounding.enclosing_radius(lo, hi, mid)
    eye = torch.diag_embed(rad)
    funcs = torch.cat([eye, mid.unsqueeze(1)], 1)
    assert funcs.shape == (b, n + 1, n)
    return Symbolic(funcs, funcs, torch.zeros_like(mid))


def affine_symbolic(op: AffineOp, sym: Symbolic) -> Symbolic:
    """Map symbolic bounds through ``z = W h + b`` by the midpoint/radius form."""
    b, k, n = sym.lower.shape
    mid = op.linear(((sym.upper + sym.lower) / 2).reshape(b * k, n)).reshape(b, k, -1)
    rad = op.linear(((sym.upper - sym.lower) / 2).reshape(b * k, n),
                    absolute=True).reshape(b, k, -1)
    bias = torch.zeros_like(mid[:1])
    bias[:, -1] = op.bias
    size = sym.size()
    err = op.linear(sym.err, absolute=True) + 4.0 * op.error_vector(size + sym.err, forward=True)
    err = err * (1.0 + 8.0 * rounding.unit(err.dtype))
    return Symbolic(mid - rad + bias, mid + rad + bias, err)


def join_symbolic(op: AddOp | ConcatOp, parts: list[Symbolic]) -> Symbolic:
    """Map symbolic bounds through a residual sum or a concatenation (module docstring)."""
    if isinstance(op, ConcatOp):
        return Symbolic(torch.cat([p.lower for p in parts], 2),
                        torch.cat([p.upper for p in parts], 2),
                        torch.cat([p.err for p in parts], 1))
    if len(parts) == 1:
        return parts[0]
    k = len(parts)
    sizes = torch.stack([p.size() for p in parts]).sum(0)
    errs = torch.stack([p.err for p in parts]).sum(0)
    g = rounding.gamma(k + 1, errs.dtype)
    err = (errs + 2.0 * g * sizes) * (1.0 + 4.0 * g)
    return Symbolic(torch.stack([p.lower for p in parts]).sum(0),
                    torch.stack([p.upper for p in parts]).sum(0), err)


def func_range(funcs: Tensor, err: Tensor) -> tuple[Tensor, Tensor]:
    """Return a rigorous range ``(min_e f - err, max_e f + err)`` (B, n) of functions (B, K, n)."""
    spread = funcs[:, :-1].abs().sum(1)
    const = funcs[:, -1]
    g = rounding.gamma(funcs.shape[1] + 2, funcs.dtype)
    slack = spread + err + g * (spread + const.abs() + err)
    return rounding.down(const - slack), rounding.up(const + slack)


def relu_symbolic(sym: Symbolic, lo: Tensor, hi: Tensor, split: Tensor | None) -> Symbolic:
    """Map symbolic bounds through a ReLU whose input lies in ``[lo, hi]`` (B, n).

    ``lo``/``hi`` are the final (intersected, split-clamped) bounds; see the module docstring.
    """
    if split is None:
        split = torch.zeros_like(lo, dtype=torch.int8)
    active = (split > 0) | ((split == 0) & (lo >= 0))
    unstable = (split == 0) & (lo < 0) & (hi > 0)
    ll, ul = func_range(sym.lower, sym.err)
    lu, _ = func_range(sym.upper, torch.zeros_like(sym.err))
    z0 = torch.maximum(lo, lu)
    chord = unstable & (z0 < 0)
    z0 = torch.where(chord, z0, torch.zeros_like(z0))
    denom = rounding.down(torch.where(chord, hi - z0, torch.ones_like(hi)))
    slope = torch.where(chord, rounding.up(hi / denom), torch.ones_like(hi))
    keep_u = (active | unstable).to(lo.dtype)
    alpha = torch.where(ll >= 0, 1.0, (ul >= -ll).to(lo.dtype))
    alpha = torch.where(ul <= 0, 0.0, alpha)
    alpha = torch.where(unstable, alpha, active.to(lo.dtype))
    upper = sym.upper * (slope * keep_u).unsqueeze(1)
    upper[:, -1] -= slope * z0 * keep_u
    lower = sym.lower * alpha.unsqueeze(1)
    u = rounding.unit(lo.dtype)
    err_u = slope * sym.err + 4.0 * u * slope * (sym.size() + z0.abs())
    err = torch.where(unstable, torch.maximum(err_u, sym.err),
                      torch.where(active, sym.err, torch.zeros_like(sym.err)))
    return Symbolic(lower, upper, err * (1.0 + 4.0 * u))


def _tighten(net: BoundedNetwork, slot: int, batch: NodeBatch, sym: Symbolic,
             lows: list[Tensor], ups: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Return the bounds (B, n_s) of ``slot``: symbolic n interval n inherited, clamped."""
    lo, _ = func_range(sym.lower, sym.err)
    _, hi = func_range(sym.upper, sym.err)
    i_lo, i_hi = slot_input_interval(net, slot, lows, ups, batch.lower, batch.upper)
    lo, hi = torch.maximum(lo, i_lo), torch.minimum(hi, i_hi)
    if batch.state is not None:
        lo = torch.maximum(lo, batch.state.lower[slot])
        hi = torch.minimum(hi, batch.state.upper[slot])
    return clamp_splits(lo, hi, slot_split(net, batch.splits, slot))


def forward_bounds(net: BoundedNetwork, batch: NodeBatch) -> ForwardBounds:
    """Return forward symbolic bounds of every slot and of the margins for a batch.

    Args:
        net: the prepared network (no max pool: see :func:`supports_forward`).
        batch: nodes in ``net``'s dtype/device (validated); a parent state, when present,
            is intersected with.

    Returns:
        Per slot bounds, infeasibility flags and forward margin bounds.
    """
    _, _, tol = net.margins
    syms = [input_symbolic(batch.lower, batch.upper)]
    lows: list[Tensor] = []
    ups: list[Tensor] = []
    infeasible = torch.zeros(batch.batch_size, dtype=torch.bool, device=net.device)
    for op, ins in zip(net.ops, net.inputs, strict=True):
        sym = syms[ins[0] + 1]
        if isinstance(op, AffineOp):
            syms.append(affine_symbolic(op, sym))
            continue
        if isinstance(op, (AddOp, ConcatOp)):
            syms.append(join_symbolic(op, [syms[t + 1] for t in ins]))
            continue
        assert isinstance(op, ReluOp), "forward bounds do not support max pooling"
        lo, hi = _tighten(net, op.slot, batch, sym, lows, ups)
        infeasible |= crossing(lo, hi, tol)
        split = slot_split(net, batch.splits, op.slot)
        lows.append(lo)
        ups.append(hi)
        syms.append(relu_symbolic(sym, lo, hi, split))
    rows, _ = func_range(syms[-1].lower, syms[-1].err)
    return ForwardBounds(lows, ups, infeasible, rows)
