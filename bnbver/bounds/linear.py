r"""Backward linear bounds (CROWN / DeepPoly, alpha- and beta-CROWN), in their dual form.

Write the network as operations ``h_i = o_i(h_{i-1})`` with ``h_0 = x`` and a final affine
layer whose outputs are the margins. A *linear bound* of R functions is built backwards: the
coefficients ``a_i`` (B, R, n_i) of every ``h_i`` come from those of ``h_{i+1}``, and for ANY
choice of these vectors the telescoping identity

.. math::
    a_m^\top h_m = a_0^\top x + \sum_{i=1}^{m} \big(a_i^\top o_i(h_{i-1})
                   - a_{i-1}^\top h_{i-1}\big)

holds, so a lower bound of each term over the node's feasible set gives a lower bound of the
margin. The relaxations below only *choose* the coefficients; the terms are then bounded
exactly, which is what makes the result independent of how the coefficients were rounded:

- affine ``h = W g + b`` with ``a_{i-1} = a_i W``: the term is ``a_i^\top b`` plus the rounding
  of ``a_i W`` (and the error of the weights), bounded by ``|a_i| . v`` with v from
  :meth:`~bnbver.bounds.prepared.AffineOp.error_vector`;
- ReLU ``z = max(h, 0)`` with split-clamped bounds ``l <= h <= u``: with ``mu`` the coefficient
  of z and ``nu`` that of h, the term is ``sum_j mu_j max(t_j, 0) - nu_j t_j`` over
  ``t_j in [l_j, u_j]``: piecewise linear with one kink, so its exact minimum is the smallest
  of its values at l, u and (if inside) 0;
- max pool ``y = max_{j in w} x_j`` (DeepPoly): ``y >= x_k`` for ``k = argmax_j l_j``, ``y = x_k``
  when ``l_k >= max_{j != k} u_j``, else ``y <= max_j u_j``; the term is the relaxation's
  constant, up to the rounding of summing the coefficients of inputs shared by windows;
- the input: ``min_{x in [lo, hi]} a_0 x = sum_j min(a_0j lo_j, a_0j hi_j)``, attained at the
  corner ``x = lo`` where ``a_0 > 0`` and ``hi`` elsewhere (the *candidate*).

Over a DAG (residual networks) the identity holds with one term per op and its inputs: a sum
``h = g_1 + g_2`` hands its coefficient unchanged to both inputs (its term is exactly 0), a
concatenation splits it, and a tensor read by several ops takes the sum of the coefficients
its readers give it. That sum is rounded: with ``s = fl(c_1 + c_2)`` the term
``(s - c_1 - c_2) h`` is at most ``u |s| . m`` for ``|h| <= m``, charged at ``2u`` (the engine
keeps m for every shared tensor, :data:`ErrorVectors`).

The ReLU coefficients follow CROWN: each coefficient takes the relaxation valid for its sign,
``nu = mu+ alpha + mu- s`` with the lower slope ``alpha`` in [0, 1] (CROWN: 1 if ``u >= -l``
else 0; alpha-CROWN optimises it) and the chord slope ``s = u / (u - l)``; stable and split
neurons take 1 (active) or 0 (inactive), and beta-CROWN subtracts ``beta sigma`` for a split
neuron of sign ``sigma`` (+1 active, -1 inactive). With the exact minimum every coefficient is
valid, so beta needs no sign (classic beta-CROWN needs ``beta >= 0``); with CROWN's choices the
minima equal the relaxations' intercepts, so the bound equals CROWN's in exact arithmetic, and
with beta it is at least as tight. A child reusing its parent's coefficients gets a bound at
least as high as its parent's (each minimum is over a smaller interval).

Every bound carries ``err`` (B, R): an upper bound on what rounding (and the weights' recorded
error) can have changed, accumulated per term as described in :mod:`bnbver.bounds.rounding`;
:func:`concretize` subtracts it and rounds down. Bounds therefore hold in real arithmetic, in
float32 as in float64.

Shapes: B nodes (a leading 1 broadcasts over nodes), R rows, ``n`` the width of the layer the
bound is currently expressed in, ``n_in`` the network input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bnbver.bounds import rounding
from bnbver.bounds.prepared import (
    AddOp,
    AffineOp,
    BoundedNetwork,
    ConcatOp,
    PoolOp,
    ReluOp,
    op_out_size,
)

# Largest number of elements of one batched coefficient tensor when bounding intermediate
# neurons; the neurons are processed in chunks beyond it (memory, not speed).
ROW_CHUNK_ELEMENTS = 1 << 25

#: Per affine op (aligned with ``BoundedNetwork.ops``): its error vector (B, n_out) for the
#: node batch (``AffineOp.error_vector`` of the op's input magnitude), None for other ops;
#: in a DAG, for a join op and for a ReLU or pool op whose output several ops read, a bound
#: (B, n_out) on the magnitude of its output (what the rounding of summed coefficients is
#: charged against).
ErrorVectors = Sequence[Tensor | None]


@dataclass(frozen=True, eq=False)
class ReluRelax:
    """Relaxation of one ReLU layer for B nodes; the coefficient fields are (B, 1, n_l).

    Attributes:
        lower_fixed: lower slope of stable and split neurons (1 active, 0 otherwise).
        lower_crown: the CROWN lower slope of every neuron (the alpha default).
        unstable: 1.0 for unstable free neurons (where alpha applies), else 0.0.
        upper_slope: upper slope ``s`` (1 active, 0 inactive, ``u / (u - l)`` unstable).
        sign: split sign as a float (+1, -1, 0), or None when no neuron is split.
        lo, hi: the split-clamped pre-activation bounds.
        icpt_mag: (B, n_l, 2): the chord's intercept ``-s l`` (0 unless unstable) and
            ``max(|l|, |u|)`` where a neuron's term can be nonzero (unstable or split; a
            stable free neuron's term is exactly 0), for the error term.
        out_mag: (B, n_l) bound on the output ``|z|`` (``max(u, 0)``).
        split_box: (B, n_l, 2): ``l`` and ``u - l`` of split neurons (0 elsewhere).
        chord: the chord slope of the parent's (unclamped) bounds where they straddle 0, for
            seeding the multipliers of freshly split neurons.
        gamma: the relative error factor of this layer's terms.
        memo: the columns :func:`relu_backward` derives from these fields and the error
            vector it is given (the same at every step of an optimisation: built once).
    """

    lower_fixed: Tensor
    lower_crown: Tensor
    unstable: Tensor
    upper_slope: Tensor
    sign: Tensor | None
    lo: Tensor
    hi: Tensor
    icpt_mag: Tensor
    out_mag: Tensor
    split_box: Tensor
    chord: Tensor
    gamma: float
    memo: dict[str, Tensor | None] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class PoolRelax:
    """Relaxation of one max pool for B nodes; the first three fields are (B, 1, n_out).

    Attributes:
        index: long flat input index of the window's largest lower bound.
        exact: 1.0 where that input dominates the window (``y = x_k``), else 0.0.
        const: the constant upper bound ``max_j u_j``.
        win_mag: (B, n_out, 1) largest input magnitude of each window (error term).
        out_mag: (B, n_out) bound on ``|y|``.
        gamma: the relative error factor of this layer's terms.
    """

    index: Tensor
    exact: Tensor
    const: Tensor
    win_mag: Tensor
    out_mag: Tensor
    gamma: float


Relax = ReluRelax | PoolRelax


@dataclass(frozen=True, eq=False)
class Linear:
    """A rigorous linear lower bound ``f(h) >= a h + bias - err`` for every feasible h.

    Attributes:
        a: (B or 1, R, n) coefficients of h.
        bias: (B or 1, R) constant.
        err: (B or 1, R) non-negative rounding allowance (detached).
    """

    a: Tensor
    bias: Tensor
    err: Tensor


def relu_relax(lo: Tensor, hi: Tensor, split: Tensor | None, gamma: float,
               parent: tuple[Tensor, Tensor] | None = None) -> ReluRelax:
    """Return the relaxation of a ReLU layer from clamped bounds (B, n_l) and splits (B, n_l).

    ``parent`` (the parent node's bounds of this layer, before this node's new split) gives
    the chord slope used to seed freshly split neurons.
    """
    if split is None:
        split = torch.zeros_like(lo, dtype=torch.int8)
    active = (split > 0) | ((split == 0) & (lo >= 0))
    unstable = (split == 0) & (lo < 0) & (hi > 0)
    width = torch.where(unstable, hi - lo, torch.ones_like(lo))
    slope_u = torch.where(unstable, hi / width, active.to(lo.dtype))
    fixed = active.to(lo.dtype)
    crown = torch.where(unstable, (hi >= -lo).to(lo.dtype), fixed)
    sign = split.to(lo.dtype).unsqueeze(1) if bool((split != 0).any()) else None
    p_lo, p_hi = parent if parent is not None else (lo, hi)
    straddle = (p_lo < 0) & (p_hi > 0)
    chord = torch.where(straddle, p_hi / torch.where(straddle, p_hi - p_lo, 1.0),
                        (p_lo >= 0).to(lo.dtype))
    icpt = torch.where(unstable, -slope_u * lo, torch.zeros_like(lo))
    is_split = split != 0
    split_box = torch.stack([torch.where(is_split, lo, 0.0),
                             torch.where(is_split, hi - lo, 0.0)], 2)
    mag = torch.where(unstable | (split != 0), rounding.box_magnitude(lo, hi), 0.0)
    return ReluRelax(fixed.unsqueeze(1), crown.unsqueeze(1), unstable.to(lo.dtype).unsqueeze(1),
                     slope_u.unsqueeze(1), sign, lo.unsqueeze(1), hi.unsqueeze(1),
                     torch.stack([icpt, mag], 2), hi.clamp(min=0), split_box,
                     chord.unsqueeze(1), gamma)


def pool_relax(op: PoolOp, lo: Tensor, hi: Tensor, gamma: float) -> PoolRelax:
    """Return the DeepPoly relaxation of a max pool from input bounds (B, n_in)."""
    pad = lo.new_full((lo.shape[0], 1), -torch.inf)
    lo_w = torch.cat([lo, pad], 1)[:, op.windows]
    hi_w = torch.cat([hi, pad], 1)[:, op.windows]
    best_lo, arg = lo_w.max(dim=2)
    others = hi_w.scatter(2, arg.unsqueeze(2), -torch.inf).amax(dim=2)
    exact = (best_lo >= others).to(lo.dtype)
    index = op.windows[torch.arange(op.out_size, device=lo.device).unsqueeze(0), arg]
    mag = torch.cat([rounding.box_magnitude(lo, hi), lo.new_zeros((lo.shape[0], 1))], 1)
    win_mag = mag[:, op.windows].amax(dim=2)
    top = hi_w.amax(dim=2)
    out_mag = torch.maximum(best_lo.abs(), top.abs())
    return PoolRelax(index.unsqueeze(1), exact.unsqueeze(1), top.unsqueeze(1),
                     win_mag.unsqueeze(2), out_mag, gamma)


def _weighted(c: Tensor, mag: Tensor) -> Tensor:
    """Return ``|c| . mag`` per row: c (B or 1, R, n), mag (B, n, k) -> (B, R) (k = 1) or
    (B, R, k)."""
    out = torch.matmul(c.detach().abs(), mag)
    return out.squeeze(2) if mag.shape[2] == 1 else out


def _add(bias: Tensor, err: Tensor, term: Tensor, unit: float) -> tuple[Tensor, Tensor]:
    """Add ``term`` to the running constant; the addition's rounding goes into ``err``."""
    bias = bias + term
    return bias, err + 2.0 * unit * bias.detach().abs()


def affine_backward(op: AffineOp, lin: Linear, v: Tensor | None, unit: float) -> Linear:
    """Move a bound from the output of an affine op to its input.

    ``v`` is the op's error vector, or None when the ReLU step just before (in backward
    order) has already charged ``|a| . v`` (:func:`relu_backward`).
    """
    bias, err = _add(lin.bias, lin.err, lin.a @ op.bias, unit)
    if v is not None:
        err = err + _weighted(lin.a, v.unsqueeze(2))
    return Linear(op.backward(lin.a), bias, err)


def relu_backward(lin: Linear, rx: ReluRelax, unit: float, alpha: Tensor | None = None,
                  beta: Tensor | None = None, v_prev: Tensor | None = None) -> Linear:
    """Move a lower bound from a ReLU output to its input (see the module docstring).

    With CROWN's coefficients (``alpha`` in [0, 1], the chord for negative ``mu``) each
    unsplit neuron's exact minimum is the relaxation's intercept ``min(mu, 0) (-s l)`` up to
    a few roundings of ``mu`` (``gamma |mu| max(|l|, |u|)`` covers them and the sum), and a
    stable one's is exactly 0. A split neuron of sign sigma with multiplier beta has
    ``mu f - nu = beta sigma`` (f its fixed slope), so its minimum over ``[l, u]`` is
    ``min(beta sigma l, beta sigma u)``, whatever the sign of beta.

    Args:
        lin: the bound; ``lin.a`` (B, R, n_l) are the coefficients ``mu`` of the ReLU output.
        rx: the layer's relaxation.
        unit: the unit roundoff.
        alpha: (B, R, n_l) lower slopes in [0, 1] of unstable neurons, or None for CROWN's.
        beta: (B, R, n_l) split multipliers (any sign), or None.
        v_prev: (B, n_l) error vector of the affine op feeding this ReLU, or None. Given,
            its term ``|nu| . v_prev`` is charged here (as ``(|mu| + |beta|) . v_prev``,
            since ``|nu| <= |mu|`` without beta) in the same products, and the affine step
            must not charge it again.

    Returns:
        The bound in terms of the pre-activation.
    """
    a = lin.a
    neg = a.clamp(max=0)
    slope = rx.lower_crown if alpha is None else rx.lower_fixed + rx.unstable * alpha
    nu = torch.addcmul(a * slope, neg, rx.upper_slope - slope)
    cols, lo_m, wid_m = _columns(rx, v_prev)
    parts = torch.matmul(neg, cols)
    abs_a = torch.matmul(a.detach(), cols[:, :, 1:]) - 2.0 * parts[..., 1:].detach()
    bias, err = _add(lin.bias, lin.err, parts[..., 0], unit)
    err = err + rx.gamma * abs_a.squeeze(2)
    if beta is not None and rx.sign is not None:
        bs = beta * rx.sign
        nu = nu - bs
        # sum_j min(bs_j l_j, bs_j u_j) = bs . l + min(bs, 0) . (u - l), and
        # |bs| . m = bs . m - 2 min(bs, 0) . m, in two products.
        assert lo_m is not None and wid_m is not None
        p_all = torch.matmul(bs, lo_m)
        p_neg = torch.matmul(bs.clamp(max=0), wid_m)
        bias, err = _add(bias, err, p_all[..., 0] + p_neg[..., 0], unit)
        abs_bs = p_all[..., 1].detach() - 2.0 * p_neg[..., 1].detach()
        err = err + rx.gamma * abs_bs
    return Linear(nu, bias, err)


def _columns(rx: ReluRelax, v_prev: Tensor | None
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Return the right-hand columns of :func:`relu_backward`'s products (memoised in ``rx``
    per error vector): ``cols`` (B, n_l, 2), the intercepts and one column for both error
    terms (``gamma |mu| . m + |mu| . v = gamma |mu| . (m + v / gamma)``), and, with splits,
    the split boxes' ``l`` and ``u - l`` each beside the magnitudes (B, n_l, 2)."""
    memo = rx.memo
    if "cols" in memo and memo["v"] is v_prev:
        return memo["cols"], memo["lo_m"], memo["wid_m"]  # type: ignore[return-value]
    cols = rx.icpt_mag if v_prev is None else torch.stack(
        [rx.icpt_mag[:, :, 0], rx.icpt_mag[:, :, 1] + v_prev / rx.gamma], 2)
    lo_m = wid_m = None
    if rx.sign is not None:
        lo_m = torch.cat([rx.split_box[:, :, :1], cols[:, :, 1:]], 2)
        wid_m = torch.cat([rx.split_box[:, :, 1:], cols[:, :, 1:]], 2)
    memo.update(v=v_prev, cols=cols, lo_m=lo_m, wid_m=wid_m)
    return cols, lo_m, wid_m


def pool_backward(op: PoolOp, lin: Linear, px: PoolRelax, unit: float) -> Linear:
    """Move a lower bound from a max pool output (B, R, n_out) to its input."""
    a = lin.a
    pos = a.clamp(min=0)
    neg = a - pos
    coef = pos + neg * px.exact
    n_b = max(coef.shape[0], px.index.shape[0])
    coef = coef.expand(n_b, -1, -1)
    index = px.index.expand(n_b, coef.shape[1], -1)
    out = coef.new_zeros((n_b, coef.shape[1], op.in_size + 1))
    out = out.scatter_add(2, index, coef)[:, :, :op.in_size]
    const = (neg * (1 - px.exact) * px.const).sum(dim=2)
    bias, err = _add(lin.bias, lin.err, const, unit)
    return Linear(out, bias, err + px.gamma * _weighted(a, px.win_mag))


def seeded_beta(a: Tensor, rx: ReluRelax, alpha: Tensor, beta: Tensor | None) -> Tensor | None:
    """Return ``beta`` with the zero multipliers of split neurons set so that the neuron's
    coefficient is the one its unsplit relaxation gave: ``mu+ alpha + mu- s`` with ``s`` the
    parent's chord slope.

    A freshly split neuron keeps multiplier 0 from its parent, so the child's coefficient of
    ``h`` would be ``mu`` (active) or 0 (inactive) instead of the parent's. With the seed the
    child starts from the parent's coefficients, and since each of its terms is a minimum over
    a sub-interval of the parent's, its first bound is at least its parent's (row by row, when
    the other layers' bounds are the parent's). Any beta is valid; this is only a better start.
    """
    if beta is None or rx.sign is None:
        return beta
    pos = a.clamp(min=0).expand_as(beta)
    neg = a.clamp(max=0).expand_as(beta)
    active = rx.sign > 0
    seed = (pos * torch.where(active, 1.0 - alpha, alpha)
            + neg * torch.where(active, 1.0 - rx.chord, rx.chord))
    return torch.where((beta == 0) & (rx.sign != 0), seed, beta)


def backward(net: BoundedNetwork, start: int, lin: Linear, relax: Sequence[Relax],
             errs: ErrorVectors, alpha: Sequence[Tensor] | None = None,
             beta: Sequence[Tensor | None] | None = None,
             record: list[Tensor | None] | None = None,
             seed_beta: bool = False,
             record_nu: list[Tensor | None] | None = None) -> Linear:
    """Propagate a lower bound on the output of ``ops[start]`` back to the input.

    Args:
        net: the prepared network.
        start: index of the operation whose output ``lin.a`` (B, R, n) multiplies.
        lin: the bound on that output (coefficients, constant, rounding allowance so far).
        relax: relaxation of every slot up to ``start``.
        errs: the batch's error vectors (:data:`ErrorVectors`) for the ops up to ``start``.
        alpha: per ReLU layer (B, R, n_l) lower slopes, or None for CROWN's.
        beta: per ReLU layer (B, R, n_l) split multipliers (None entries: zero), or None.
        record: when given (one entry per ReLU layer), receives the coefficients of each
            ReLU layer's *output* in the bound (what BaBSR scores neurons with).
        seed_beta: fill, in place in the list ``beta``, every zero multiplier of a split
            neuron by :func:`seeded_beta` on the way (see there); needs ``alpha``.
        record_nu: when given (one entry per ReLU layer), receives the coefficients of each
            ReLU layer's *input* (the pre-activations): the bound's dual certificate.

    Returns:
        The bound in terms of the network input.
    """
    if not net.is_chain:
        return _graph_backward(net, start, lin, relax, errs, alpha, beta,
                               (record, record_nu), seed_beta)
    unit = net.unit
    charged = False
    for i in range(start, -1, -1):
        op = net.ops[i]
        if isinstance(op, AffineOp):
            lin = affine_backward(op, lin, None if charged else errs[i], unit)
            charged = False
        elif isinstance(op, ReluOp):
            v_prev = errs[i - 1] if i > 0 and isinstance(net.ops[i - 1], AffineOp) else None
            lin = _relu_step(op, lin, relax, unit, alpha, beta, record, seed_beta, v_prev)
            if record_nu is not None:
                record_nu[op.layer] = lin.a
            charged = v_prev is not None
        else:
            assert isinstance(op, PoolOp)
            px = relax[op.slot]
            assert isinstance(px, PoolRelax)
            lin = pool_backward(op, lin, px, unit)
            charged = False
    return lin


def _relu_step(op: ReluOp, lin: Linear, relax: Sequence[Relax], unit: float,
               alpha: Sequence[Tensor] | None, beta: Sequence[Tensor | None] | None,
               record: list[Tensor | None] | None, seed_beta: bool,
               v_prev: Tensor | None) -> Linear:
    """Move a bound through one ReLU op (recording and seeding on the way, see backward)."""
    rx = relax[op.slot]
    assert isinstance(rx, ReluRelax)
    if record is not None:
        record[op.layer] = lin.a
    if seed_beta and beta is not None and alpha is not None:
        assert isinstance(beta, list)
        beta[op.layer] = seeded_beta(lin.a, rx, alpha[op.layer], beta[op.layer])
    return relu_backward(lin, rx, unit, None if alpha is None else alpha[op.layer],
                         None if beta is None else beta[op.layer], v_prev)


def _graph_backward(net: BoundedNetwork, start: int, lin: Linear, relax: Sequence[Relax],
                    errs: ErrorVectors, alpha: Sequence[Tensor] | None,
                    beta: Sequence[Tensor | None] | None,
                    records: tuple[list[Tensor | None] | None, list[Tensor | None] | None],
                    seed_beta: bool) -> Linear:
    """:func:`backward` over a DAG: ops in reverse topological order, each handing its
    output's coefficient to its inputs; a tensor's coefficients from several readers are
    summed (:func:`_accumulate`) before its own op moves them on. ``records`` are
    ``backward``'s ``record`` and ``record_nu`` (a ReLU's input coefficient from that ReLU)."""
    record, record_nu = records
    unit = net.unit
    coeffs: dict[int, Tensor] = {start: lin.a}
    bias, err = lin.bias, lin.err
    charged: set[int] = set()
    for i in range(start, -1, -1):
        a = coeffs.pop(i, None)
        if a is None:
            continue
        op, ins = net.ops[i], net.inputs[i]
        cur = Linear(a, bias, err)
        if isinstance(op, AffineOp):
            cur = affine_backward(op, cur, None if i in charged else errs[i], unit)
        elif isinstance(op, ReluOp):
            j = ins[0]
            fused = j >= 0 and isinstance(net.ops[j], AffineOp) and net.readers[j + 1] == 1
            if fused:
                charged.add(j)
            cur = _relu_step(op, cur, relax, unit, alpha, beta, record, seed_beta,
                             errs[j] if fused else None)
            if record_nu is not None:
                record_nu[op.layer] = cur.a
        elif isinstance(op, PoolOp):
            px = relax[op.slot]
            assert isinstance(px, PoolRelax)
            cur = pool_backward(op, cur, px, unit)
        bias, err = cur.bias, cur.err
        for t, c in zip(ins, _input_coeffs(op, cur.a), strict=True):
            err = _accumulate(net, coeffs, t, c, err, errs)
    a_in = coeffs.pop(-1, None)
    if a_in is None:
        a_in = lin.a.new_zeros((*lin.a.shape[:2], net.input_size))
    return Linear(a_in, bias, err)


def _input_coeffs(op: object, a: Tensor) -> list[Tensor]:
    """Return the coefficient of each input of ``op`` given ``a``: the result of the op's
    backward step for a unary op, ``a`` itself for every summand, ``a``'s slices for a
    concatenation (all exact)."""
    if isinstance(op, AddOp):
        return [a] * op.arity
    if isinstance(op, ConcatOp):
        return list(torch.split(a, list(op.sizes), dim=2))
    return [a]


def _accumulate(net: BoundedNetwork, coeffs: dict[int, Tensor], t: int, c: Tensor,
                err: Tensor, errs: ErrorVectors) -> Tensor:
    """Add ``c`` to the coefficient of tensor ``t``; return ``err`` plus the rounding of the
    sum, ``2u |s| . m`` with m the tensor's magnitude bound (see the module docstring)."""
    old = coeffs.get(t)
    if old is None:
        coeffs[t] = c
        return err
    total = old + c
    coeffs[t] = total
    mag = errs[t] if t >= 0 else None
    if mag is None:
        raise AssertionError(f"no magnitude bound for tensor {t}, which several ops read")
    return err + 2.0 * net.unit * _weighted(total, mag.unsqueeze(2))


def box_columns(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Return the right-hand sides of :func:`concretize`'s two products over the box
    (B, n_in, 2) each: ``hi`` and ``lo - hi``, each beside the magnitude ``max(|lo|, |hi|)``."""
    mag = rounding.box_magnitude(lo, hi)
    return torch.stack([hi, mag], 2), torch.stack([lo - hi, mag], 2)


def concretize(net: BoundedNetwork, lin: Linear, lo: Tensor, hi: Tensor,
               columns: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Return the rigorous ``min_{x in [lo, hi]}`` of a bound, and its constant.

    ``columns`` are :func:`box_columns` of the box when the caller keeps them (an
    optimisation evaluates many bounds over one box).

    Returns:
        ``(lower (B, R), const (B, R))``: ``lower`` is rounded down and holds in real
        arithmetic; ``a x + const <= f(x)`` for every x in the box (``const`` is the bound's
        constant minus its rounding allowance, for input-domain clipping).
    """
    b = lo.shape[0]
    a = lin.a.expand(b, -1, -1)
    top, width = box_columns(lo, hi) if columns is None else columns
    # a . hi + max(a, 0) . (lo - hi) is the box minimum; |a| . m = 2 max(a, 0) . m - a . m.
    p_all = torch.matmul(a, top)
    p_pos = torch.matmul(a.clamp(min=0), width)
    total = lin.bias + p_all[..., 0] + p_pos[..., 0]
    abs_a = 2.0 * p_pos[..., 1].detach() - p_all[..., 1].detach()
    scale = net.err_scale
    base = lin.err.detach() * scale
    eta = rounding.ETA[net.dtype] * net.longest_product * 4
    err = (base + (net.gamma(net.input_size + 4) * abs_a
                   + 2.0 * net.unit * total.detach().abs()) * scale) + eta
    lower = rounding.down(total - err)
    const = rounding.down(lin.bias.detach() - base - eta)
    return lower, const.expand(b, -1)


def corner(a: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Return the box corner minimising ``a x``: a (B, n_in) -> (B, n_in)."""
    return torch.where(a > 0, lo, hi)


def final_start(net: BoundedNetwork, errs: ErrorVectors) -> tuple[int, Linear]:
    """Return ``(start, bound)``: the margins as a linear function of the last layer's input."""
    op = net.ops[-1]
    v = errs[len(net.ops) - 1]
    assert isinstance(op, AffineOp) and op.conv is None and v is not None
    return net.inputs[-1][0], Linear(op.weight.unsqueeze(0), op.bias.unsqueeze(0), v)


def crown_rows(net: BoundedNetwork, lo: Tensor, hi: Tensor, relax: Sequence[Relax],
               errs: ErrorVectors) -> tuple[Tensor, Tensor, Tensor]:
    """Return CROWN lower bounds of the margins (B, R), their input coefficients
    (B, R, n_in) and constants (B, R)."""
    start, lin = final_start(net, errs)
    lin = backward(net, start, lin, relax, errs)
    lower, const = concretize(net, lin, lo, hi)
    return lower, lin.a.expand(lo.shape[0], -1, -1), const


def slot_start(net: BoundedNetwork, slot: int, index: Tensor,
               errs: ErrorVectors) -> tuple[int, Linear]:
    """Return ``(start, bound)`` with rows ``+h_k`` and ``-h_k`` (R = 2K) in terms of the input
    of the affine op feeding ``slot``.

    ``h`` is the input of ``slot`` and ``k`` runs over ``index`` (K neurons); the lower bound
    of ``-h_k`` is minus the upper bound of ``h_k``. When a join (a residual sum) produces
    ``h``, the rows are the unit vectors ``+-e_k`` on its output (exact: no error term).
    """
    p = net.producer(slot)
    op = net.ops[p]
    if not isinstance(op, AffineOp):
        k = index.numel()
        eye = torch.zeros((2 * k, op_out_size(op)), dtype=net.dtype, device=net.device)
        rows = torch.arange(k, device=net.device)
        eye[rows, index] = 1.0
        eye[rows + k, index] = -1.0
        zero = eye.new_zeros((1, 2 * k))
        return p, Linear(eye.unsqueeze(0), zero, zero)
    v = errs[p]
    assert v is not None
    w, b = op.rows(index)
    e = v.index_select(1, index)
    return net.inputs[p][0], Linear(torch.cat([w, -w], 0).unsqueeze(0),
                                    torch.cat([b, -b], 0).unsqueeze(0), torch.cat([e, e], 1))


def chunk_size(net: BoundedNetwork, slot: int, batch: int) -> int:
    """Return how many neurons of ``slot`` to bound per backward pass (memory cap)."""
    widths = [net.input_size] + [op_out_size(op) for op in net.ops[:net.slot_ops[slot]]]
    return max(1, ROW_CHUNK_ELEMENTS // (2 * batch * max(widths)))


def crown_slot(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
               relax: Sequence[Relax], errs: ErrorVectors) -> tuple[Tensor, Tensor]:
    """Return CROWN bounds (B, K) of the input neurons ``index`` of ``slot``.

    Args:
        net: the prepared network.
        slot: the nonlinear slot; its input must be the output of an affine layer.
        index: (K,) long neuron indices.
        lo: (B, n_in) box lower corners.
        hi: (B, n_in) box upper corners.
        relax: relaxations of the slots before ``slot``.
        errs: the batch's error vectors of the ops before ``slot``.

    Returns:
        ``(lower, upper)``, each (B, K).
    """
    step = chunk_size(net, slot, lo.shape[0])
    lows, ups = [], []
    for part in torch.split(index, step):
        start, lin = slot_start(net, slot, part, errs)
        lb, _ = concretize(net, backward(net, start, lin, relax, errs), lo, hi)
        k = part.numel()
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)


def crown_slot_per_node(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
                        relax: Sequence[Relax], errs: ErrorVectors) -> tuple[Tensor, Tensor]:
    """Return CROWN bounds (B, K) of each node's own neurons ``index`` (B, K) of ``slot``.

    Like :func:`crown_slot`, but every node bounds its own K neurons rather than all nodes
    the union of theirs: deep in an input-split search each node has a few unstable neurons
    and the union is 1.5-3x larger. Dense layers only (the rows are gathered from ``W``).
    """
    p = net.producer(slot)
    op = net.ops[p]
    v = errs[p]
    assert isinstance(op, AffineOp) and op.conv is None and v is not None
    step = chunk_size(net, slot, lo.shape[0])
    lows, ups = [], []
    for part in torch.split(index, step, dim=1):
        w = op.weight[part]  # (B, k, n_prev)
        b = op.bias[part]
        e = v.gather(1, part)
        lin = Linear(torch.cat([w, -w], 1), torch.cat([b, -b], 1), torch.cat([e, e], 1))
        lb, _ = concretize(net, backward(net, net.inputs[p][0], lin, relax, errs), lo, hi)
        k = part.shape[1]
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)
