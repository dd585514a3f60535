"""Backward linear relaxation (CROWN / DeepPoly), batched over nodes and rows.

A linear lower bound of R functions of the input of some layer is a pair ``(A, c)`` with
``A`` (B, R, n) and ``c`` (B, R): ``f_r(h) >= A_r h + c_r`` for every feasible h. Walking the
network backwards turns it into a bound in terms of the network input, which a box then
concretises:

    min_{x in [lo, hi]} A x + c  =  A m + c - |A| r,   m = (hi + lo) / 2,  r = (hi - lo) / 2,

attained at the corner ``x = lo`` where ``A > 0`` and ``x = hi`` elsewhere (the *candidate*).
A safety margin ``REL * (|A| (|m| + r) + |c|) + ABS`` is subtracted from every concretised bound.

Through an affine layer ``h = W x + b``: ``A h + c = (A W) x + (A b + c)``.

Through a ReLU ``z = max(h, 0)`` with pre-activation bounds ``l <= h <= u`` (split-clamped),
each coefficient takes the relaxation that is valid for its sign, ``A+ = max(A, 0)`` the lower
one and ``A- = min(A, 0)`` the upper one:

- stable active (``l >= 0``) or split active: ``z = h``;
- stable inactive (``u <= 0``) or split inactive: ``z = 0``;
- unstable (``l < 0 < u``, not split): ``alpha h <= z <= s (h - l)`` with ``s = u / (u - l)``
  and any ``alpha`` in [0, 1] (CROWN picks ``alpha = 1`` if ``u >= -l`` else 0).

so ``A z >= (A+ alpha + A- s) h - A- s l``. beta-CROWN adds, for each split neuron with sign
``sigma`` (+1 active: ``h >= 0``; -1 inactive: ``h <= 0``) and any ``beta >= 0``, the
Lagrangian term ``- beta sigma h`` to the coefficient of ``h``: on the node's feasible set
``beta sigma h >= 0``, so the bound stays valid for every ``beta >= 0`` (Wang et al., 2021).

Through a max pool ``y = max_j x_j`` of one window with input bounds ``l_j, u_j`` (DeepPoly):
``y >= x_k`` for ``k = argmax_j l_j``; ``y <= x_k`` when ``l_k >= max_{j != k} u_j`` (then
``y = x_k`` exactly), else ``y <= max_j u_j``.

Shapes: B nodes (a leading 1 broadcasts over nodes), R rows, ``n`` the width of the layer the
bound is currently expressed in, ``n_in`` the network input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds.prepared import AffineOp, BoundedNetwork, PoolOp, ReluOp

# Largest number of elements of one batched coefficient tensor when bounding intermediate
# neurons; the neurons are processed in chunks beyond it (memory, not speed).
ROW_CHUNK_ELEMENTS = 1 << 25


@dataclass(frozen=True, eq=False)
class ReluRelax:
    """Relaxation of one ReLU layer for B nodes; every field is (B, 1, n_l).

    Attributes:
        lower_fixed: lower slope of stable and split neurons (1 active, 0 otherwise).
        lower_crown: the CROWN lower slope of every neuron (the alpha default).
        unstable: 1.0 for unstable free neurons (where alpha applies), else 0.0.
        upper_slope: upper slope ``s`` (1 active, 0 inactive, ``u / (u - l)`` unstable).
        upper_icpt: upper intercept ``-s l`` (0 unless unstable).
        sign: split sign as a float (+1, -1, 0), or None when no neuron is split.
    """

    lower_fixed: Tensor
    lower_crown: Tensor
    unstable: Tensor
    upper_slope: Tensor
    upper_icpt: Tensor
    sign: Tensor | None


@dataclass(frozen=True, eq=False)
class PoolRelax:
    """Relaxation of one max pool for B nodes; every field is (B, 1, n_out).

    Attributes:
        index: long flat input index of the window's largest lower bound.
        exact: 1.0 where that input dominates the window (``y = x_k``), else 0.0.
        const: the constant upper bound ``max_j u_j``.
    """

    index: Tensor
    exact: Tensor
    const: Tensor


Relax = ReluRelax | PoolRelax


def relu_relax(lo: Tensor, hi: Tensor, split: Tensor | None) -> ReluRelax:
    """Return the relaxation of a ReLU layer from bounds (B, n_l) and splits (B, n_l)."""
    if split is None:
        split = torch.zeros_like(lo, dtype=torch.int8)
    active = (split > 0) | ((split == 0) & (lo >= 0))
    unstable = (split == 0) & (lo < 0) & (hi > 0)
    width = torch.where(unstable, hi - lo, torch.ones_like(lo))
    slope_u = torch.where(unstable, hi / width, active.to(lo.dtype))
    icpt = torch.where(unstable, -slope_u * lo, torch.zeros_like(lo))
    fixed = active.to(lo.dtype)
    crown = torch.where(unstable, (hi >= -lo).to(lo.dtype), fixed)
    sign = split.to(lo.dtype).unsqueeze(1) if bool((split != 0).any()) else None
    return ReluRelax(fixed.unsqueeze(1), crown.unsqueeze(1), unstable.to(lo.dtype).unsqueeze(1),
                     slope_u.unsqueeze(1), icpt.unsqueeze(1), sign)


def pool_relax(op: PoolOp, lo: Tensor, hi: Tensor) -> PoolRelax:
    """Return the DeepPoly relaxation of a max pool from input bounds (B, n_in)."""
    pad = lo.new_full((lo.shape[0], 1), -torch.inf)
    lo_w = torch.cat([lo, pad], 1)[:, op.windows]
    hi_w = torch.cat([hi, pad], 1)[:, op.windows]
    best_lo, arg = lo_w.max(dim=2)
    others = hi_w.scatter(2, arg.unsqueeze(2), -torch.inf).amax(dim=2)
    exact = (best_lo >= others).to(lo.dtype)
    index = op.windows[torch.arange(op.out_size, device=lo.device).unsqueeze(0), arg]
    return PoolRelax(index.unsqueeze(1), exact.unsqueeze(1), hi_w.amax(dim=2).unsqueeze(1))


def relu_backward(a: Tensor, bias: Tensor, rx: ReluRelax, alpha: Tensor | None = None,
                  beta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Move a lower bound (A, c) from a ReLU output to its input.

    Args:
        a: (B, R, n_l) coefficients of the ReLU output.
        bias: (B, R) constant.
        rx: the layer's relaxation.
        alpha: (B, R, n_l) lower slopes in [0, 1] of unstable neurons, or None for CROWN's.
        beta: (B, R, n_l) multipliers >= 0 of the split constraints, or None.

    Returns:
        The coefficients of the pre-activation and the new constant.
    """
    # pos * slope + neg * upper == a * slope + neg * (upper - slope): two passes over the
    # (B, R, n_l) coefficients instead of five, and the intercepts by one batched matmul
    # (about 5x faster on ACAS Xu batches, which are bandwidth-bound on the CPU).
    neg = a.clamp(max=0)
    slope = rx.lower_crown if alpha is None else rx.lower_fixed + rx.unstable * alpha
    out = torch.addcmul(a * slope, neg, rx.upper_slope - slope)
    bias = bias + torch.matmul(neg, rx.upper_icpt.transpose(1, 2)).squeeze(2)
    if beta is not None and rx.sign is not None:
        out = out - beta * rx.sign
    return out, bias


def pool_backward(op: PoolOp, a: Tensor, bias: Tensor, px: PoolRelax) -> tuple[Tensor, Tensor]:
    """Move a lower bound (A (B, R, n_out), c (B, R)) from a max pool output to its input."""
    pos = a.clamp(min=0)
    neg = a - pos
    coef = pos + neg * px.exact
    n_b = max(coef.shape[0], px.index.shape[0])
    coef = coef.expand(n_b, -1, -1)
    index = px.index.expand(n_b, coef.shape[1], -1)
    out = coef.new_zeros((n_b, coef.shape[1], op.in_size + 1))
    out = out.scatter_add(2, index, coef)[:, :, :op.in_size]
    bias = bias + (neg * (1 - px.exact) * px.const).sum(dim=2)
    return out, bias


def seeded_beta(a: Tensor, rx: ReluRelax, alpha: Tensor, beta: Tensor | None) -> Tensor | None:
    """Return ``beta`` with the zero multipliers of split neurons set to reproduce the
    unsplit relaxation ``alpha h`` of that neuron (where the coefficient ``a`` of its output
    is positive; with ``a <= 0`` zero already does at least as well).

    A freshly split neuron keeps multiplier 0 from its parent, so a child's first bound
    drops the parent's term ``a alpha h`` (inactive child: ``z = 0``) or ``a (1 - alpha) h``
    too much (active child: ``z = h``) and can start below its parent's bound: on mnist_fc
    256x6 the worst row then never improved in 18 levels. With ``beta = a alpha`` (inactive,
    coefficient ``+beta h``) or ``a (1 - alpha)`` (active, ``a h - beta h``) the child's
    coefficient of ``h`` is the parent's ``a alpha``: any ``beta >= 0`` keeps the bound
    valid, so this is only a better start. It costs one backward pass per bound call, about
    1 / (iterations + 1) of beta-CROWN's work (256x4 prop_3_0.05, 78 s side by side: 5,181
    nodes seeded vs 5,201 not).
    """
    if beta is None or rx.sign is None:
        return beta
    pos = a.clamp(min=0).expand_as(beta)
    seed = pos * torch.where(rx.sign < 0, alpha, 1.0 - alpha)
    return torch.where((beta == 0) & (rx.sign != 0), seed, beta)


def backward(net: BoundedNetwork, start: int, a: Tensor, bias: Tensor,
             relax: Sequence[Relax], alpha: Sequence[Tensor] | None = None,
             beta: Sequence[Tensor | None] | None = None,
             record: list[Tensor | None] | None = None,
             seed_beta: bool = False) -> tuple[Tensor, Tensor]:
    """Propagate a lower bound (A, c) on the output of ``ops[start]`` back to the input.

    Args:
        net: the prepared network.
        start: index of the operation whose output ``a`` (B, R, n) multiplies.
        a: coefficients; bias: (B, R) constant.
        bias: (B, R) constant.
        relax: relaxation of every slot up to ``start``.
        alpha: per ReLU layer (B, R, n_l) lower slopes, or None for CROWN's.
        beta: per ReLU layer (B, R, n_l) split multipliers (None entries: zero), or None.
        record: when given (one entry per ReLU layer), receives the coefficients of each
            ReLU layer's *output* in the bound (what BaBSR scores neurons with).
        seed_beta: fill, in place in the list ``beta``, every zero multiplier of a split
            neuron by :func:`seeded_beta` on the way (see there); needs ``alpha``.

    Returns:
        ``(A_in (B, R, n_in), c (B, R))``.
    """
    for op in net.ops[start::-1] if start >= 0 else ():
        if isinstance(op, AffineOp):
            bias = bias + a @ op.bias
            a = op.backward(a)
        elif isinstance(op, ReluOp):
            rx = relax[op.slot]
            assert isinstance(rx, ReluRelax)
            if record is not None:
                record[op.layer] = a
            if seed_beta and beta is not None and alpha is not None:
                assert isinstance(beta, list)
                beta[op.layer] = seeded_beta(a, rx, alpha[op.layer], beta[op.layer])
            a, bias = relu_backward(a, bias, rx, None if alpha is None else alpha[op.layer],
                                    None if beta is None else beta[op.layer])
        else:
            px = relax[op.slot]
            assert isinstance(px, PoolRelax)
            a, bias = pool_backward(op, a, bias, px)
    return a, bias


def concretize(net: BoundedNetwork, a: Tensor, bias: Tensor, lo: Tensor,
               hi: Tensor) -> Tensor:
    """Return ``min_{x in [lo, hi]} A x + c`` minus the safety margin, (B, R)."""
    rel, eps, _ = net.margins
    center = ((hi + lo) / 2).unsqueeze(2)
    radius = ((hi - lo) / 2).unsqueeze(2)
    mid = (a @ center).squeeze(2)
    spread = a.abs() @ torch.cat([radius, center.abs()], 2)
    rad = spread[..., 0]
    mag = spread[..., 1].detach()
    return bias + mid - rad - (rel * (mag + rad.detach() + bias.detach().abs()) + eps)


def corner(a: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Return the box corner minimising ``a x``: a (B, n_in) -> (B, n_in)."""
    return torch.where(a > 0, lo, hi)


def final_start(net: BoundedNetwork) -> tuple[int, Tensor, Tensor]:
    """Return ``(start, A (1, R, n), c (1, R))``: the margins before the last layer."""
    op = net.ops[-1]
    assert isinstance(op, AffineOp) and op.conv is None
    return len(net.ops) - 2, op.weight.unsqueeze(0), op.bias.unsqueeze(0)


def crown_rows(net: BoundedNetwork, lo: Tensor, hi: Tensor,
               relax: Sequence[Relax]) -> tuple[Tensor, Tensor]:
    """Return CROWN lower bounds of the margins (B, R) and their coefficients (B, R, n_in)."""
    start, a, bias = final_start(net)
    a, bias = backward(net, start, a, bias, relax)
    a = a.expand(lo.shape[0], -1, -1)
    return concretize(net, a, bias, lo, hi), a


def slot_start(net: BoundedNetwork, slot: int,
               index: Tensor) -> tuple[int, Tensor, Tensor]:
    """Return ``(start, A (1, 2K, n), c (1, 2K))`` bounding ``+h_k`` and ``-h_k``.

    ``h`` is the input of ``slot`` and ``k`` runs over ``index`` (K neurons); the lower bound
    of ``-h_k`` is minus the upper bound of ``h_k``.
    """
    p = net.slot_ops[slot] - 1
    op = net.ops[p]
    assert isinstance(op, AffineOp)
    w, b = op.rows(index)
    return p - 1, torch.cat([w, -w], 0).unsqueeze(0), torch.cat([b, -b], 0).unsqueeze(0)


def chunk_size(net: BoundedNetwork, slot: int, batch: int) -> int:
    """Return how many neurons of ``slot`` to bound per backward pass (memory cap)."""
    widths = [net.input_size] + [op.size if isinstance(op, ReluOp) else op.out_size
                                 for op in net.ops[:net.slot_ops[slot]]]
    return max(1, ROW_CHUNK_ELEMENTS // (2 * batch * max(widths)))


def crown_slot(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
               relax: Sequence[Relax]) -> tuple[Tensor, Tensor]:
    """Return CROWN bounds (B, K) of the input neurons ``index`` of ``slot``.

    Args:
        net: the prepared network.
        slot: the nonlinear slot; its input must be the output of an affine layer.
        index: (K,) long neuron indices.
        lo: (B, n_in) box lower corners; hi: upper corners.
        hi: (B, n_in) box upper corners.
        relax: relaxations of the slots before ``slot``.

    Returns:
        ``(lower, upper)``, each (B, K).
    """
    step = chunk_size(net, slot, lo.shape[0])
    lows, ups = [], []
    for part in torch.split(index, step):
        start, a, bias = slot_start(net, slot, part)
        a, bias = backward(net, start, a, bias, relax)
        lb = concretize(net, a.expand(lo.shape[0], -1, -1), bias, lo, hi)
        k = part.numel()
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)


def crown_slot_per_node(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
                        relax: Sequence[Relax]) -> tuple[Tensor, Tensor]:
    """Return CROWN bounds (B, K) of each node's own neurons ``index`` (B, K) of ``slot``.

    Like :func:`crown_slot`, but every node bounds its own K neurons rather than all nodes
    the union of theirs: deep in an input-split search each node has a few unstable neurons
    and the union is 1.5-3x larger. Dense layers only (the rows are gathered from ``W``).
    """
    p = net.slot_ops[slot] - 1
    op = net.ops[p]
    assert isinstance(op, AffineOp) and op.conv is None
    step = chunk_size(net, slot, lo.shape[0])
    lows, ups = [], []
    for part in torch.split(index, step, dim=1):
        w = op.weight[part]  # (B, k, n_prev)
        b = op.bias[part]
        a, bias = backward(net, p - 1, torch.cat([w, -w], 1), torch.cat([b, -b], 1), relax)
        lb = concretize(net, a, bias, lo, hi)
        k = part.shape[1]
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)
