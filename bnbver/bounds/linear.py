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
exactly, which is what makes the result independent of how the coefficients were rounded.

The identity is taken over *deviations* ``delta_i = h_i - c_i`` from the centres ``c_i`` of
:mod:`bnbver.bounds.centres` (the forward pass of the box centre): the margins are
``c_m + delta_m``, and an op's term is ``a_i^\top (o_i(c_{i-1} + delta_{i-1}) - c_i) -
a_{i-1}^\top delta_{i-1}``. The quantities a rounding multiplies are then deviations, whose
bounds are the widths the node allows rather than the activations' magnitudes:

- affine ``h = W g + b`` with ``a_{i-1} = a_i W``: the term is ``a_i^\top rho`` with the
  centre's residual ``rho = W c_{i-1} + b - c_i`` plus the rounding of ``a_i W`` times
  ``delta_{i-1}`` (and the error of the weights), all bounded by ``|a_i| . v`` with v from
  :meth:`~bnbver.bounds.prepared.AffineOp.radius_error`;
- ReLU ``z = max(h, 0)`` with split-clamped bounds ``l <= h <= u``: with ``mu`` the coefficient
  of z and ``nu`` that of h, the term is ``sum_j mu_j (max(c_j + t_j, 0) - max(c_j, 0))
  - nu_j t_j`` over ``t_j in [l_j - c_j, u_j - c_j]``: piecewise linear with one kink, so its
  exact minimum is the smallest of its values at the ends and the kink
  (:func:`relu_backward`);
- max pool ``y = max_{j in w} x_j`` (DeepPoly): ``y >= x_k`` for ``k = argmax_j l_j``, ``y = x_k``
  when ``l_k >= max_{j != k} u_j``, else ``y <= max_j u_j``; the term is the relaxation's
  constant, up to the rounding of summing the coefficients of inputs shared by windows;
- the input: ``min a_0 delta_0 = -|a_0| . r`` over ``|x - c_0| <= r`` (the box); the corner
  ``x = lo`` where ``a_0 > 0`` and ``hi`` elsewhere attains it (the *candidate*).

Over a DAG (residual networks) the identity holds with one term per op and its inputs: a sum
``h = g_1 + g_2`` hands its coefficient unchanged to both inputs (its term is ``a . rho``
with the rounding residual of its centre), a concatenation splits it, and a tensor read by
several ops takes the sum of the coefficients its readers give it. That sum is rounded: with
``s = fl(c_1 + c_2)`` the term ``(s - c_1 - c_2) delta`` is at most ``u |s| . r`` for
``|delta| <= r``, charged at ``2u`` (the engine keeps r for every shared tensor,
:data:`ErrorVectors`).

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
from bnbver.bounds.centres import Centres, box_centre
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
#: node batch (``AffineOp.radius_error`` of the deviation bound of its input), None for
#: other ops in a chain; in a DAG, for a ReLU, pool or concatenation a bound (B, n_out) on
#: the deviation of its output (what the rounding of summed coefficients is charged
#: against), and for a residual sum (B, n_out, 2) that bound beside its residual bound.
ErrorVectors = Sequence[Tensor | None]


@dataclass(frozen=True, eq=False)
class ReluRelax:
    """Relaxation of one ReLU layer for B nodes; the coefficient fields are (B, 1, n_l).

    Terms are taken on deviations from the centre ``c`` of the layer's input
    (:mod:`bnbver.bounds.centres`); ``relu(c)`` is the output's centre.

    Attributes:
        lower_fixed: lower slope of stable and split neurons (1 active, 0 otherwise).
        lower_crown: the CROWN lower slope of every neuron (the alpha default).
        unstable: 1.0 for unstable free neurons (where alpha applies), else 0.0.
        upper_slope: upper slope ``s`` (1 active, 0 inactive, ``u / (u - l)`` unstable).
        sign: split sign as a float (+1, -1, 0), or None when no neuron is split.
        lo, hi: the split-clamped pre-activation bounds.
        cols: (B, n_l, 3): the chord's intercept ``-s l`` (0 unless unstable), the centre
            shift ``G`` (see :func:`relu_backward`) and a bound ``M`` on every quantity a
            neuron's term is computed from, 0 where the term is exactly 0 (the error term).
        c_unst: (B, n_l, 1) the centre on unstable free neurons (0 elsewhere), or None when
            it is 0 everywhere.
        out_rad: (B, n_l) bound on the output's deviation ``|relu(h) - relu(c)|``.
        split_box: (B, n_l, 2): ``l - c`` and ``u - l`` of split neurons (0 elsewhere).
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
    cols: Tensor
    c_unst: Tensor | None
    out_rad: Tensor
    split_box: Tensor
    chord: Tensor
    gamma: float
    memo: dict[str, Tensor | None] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class PoolRelax:
    """Relaxation of one max pool for B nodes; the first four fields are (B, 1, n_out).

    Attributes:
        index: long flat input index of the window's largest lower bound.
        exact: 1.0 where that input dominates the window (``y = x_k``), else 0.0.
        top: ``max_j u_j - c_y``: the constant upper bound, as a deviation from the output's
            centre ``c_y``.
        shift: ``c_{x_k} - c_y``: the centre of the chosen input less the output's.
        win_mag: (B, n_out, 1) bound on the deviations of each window's inputs and on
            ``|top|`` and ``|shift|`` (error term).
        out_rad: (B, n_out) bound on the output's deviation ``|y - c_y|``.
        gamma: the relative error factor of this layer's terms.
    """

    index: Tensor
    exact: Tensor
    top: Tensor
    shift: Tensor
    win_mag: Tensor
    out_rad: Tensor
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


def relu_relax(lo: Tensor, hi: Tensor, split: Tensor | None, gamma: float, centre: Tensor,
               parent: tuple[Tensor, Tensor] | None = None) -> ReluRelax:
    """Return the relaxation of a ReLU layer from clamped bounds (B, n_l), splits (B, n_l)
    and the centre (1 or B, n_l) of its input.

    ``parent`` (the parent node's bounds of this layer, before this node's new split) gives
    the chord slope used to seed freshly split neurons.
    """
    if split is None:
        split = torch.zeros_like(lo, dtype=torch.int8)
    c = centre.expand_as(lo)
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
    relu_c = c.clamp(min=0)
    shift = torch.where(unstable, -relu_c, torch.where(active, c.clamp(max=0), -relu_c))
    c_u = torch.where(unstable, c, torch.zeros_like(c))
    is_split = split != 0
    dev = torch.maximum((lo - c).abs(), (hi - c).abs())
    live = unstable | is_split | (shift != 0)
    mag = torch.where(live, (hi - lo) + dev + shift.abs() + c_u.abs(), 0.0)
    split_box = torch.stack([torch.where(is_split, lo - c, 0.0),
                             torch.where(is_split, hi - lo, 0.0)], 2)
    out_rad = rounding.up_sum(torch.maximum(hi.clamp(min=0) - relu_c,
                                             relu_c - lo.clamp(min=0)))
    return ReluRelax(fixed.unsqueeze(1), crown.unsqueeze(1), unstable.to(lo.dtype).unsqueeze(1),
                     slope_u.unsqueeze(1), sign, lo.unsqueeze(1), hi.unsqueeze(1),
                     torch.stack([icpt, shift, mag], 2),
                     c_u.unsqueeze(2) if bool(unstable.any()) else None,
                     out_rad.clamp(min=0), split_box, chord.unsqueeze(1), gamma)


def pool_relax(op: PoolOp, lo: Tensor, hi: Tensor, gamma: float, c_in: Tensor,
               c_out: Tensor) -> PoolRelax:
    """Return the DeepPoly relaxation of a max pool from input bounds (B, n_in) and the
    centres of its input (1 or B, n_in) and output (1 or B, n_out)."""
    b = lo.shape[0]
    pad = lo.new_full((b, 1), -torch.inf)
    lo_w = torch.cat([lo, pad], 1)[:, op.windows]
    hi_w = torch.cat([hi, pad], 1)[:, op.windows]
    best_lo, arg = lo_w.max(dim=2)
    others = hi_w.scatter(2, arg.unsqueeze(2), -torch.inf).amax(dim=2)
    exact = (best_lo >= others).to(lo.dtype)
    index = op.windows[torch.arange(op.out_size, device=lo.device).unsqueeze(0), arg]
    c_in, c_out = c_in.expand(b, -1), c_out.expand(b, -1)
    shift = c_in.gather(1, index) - c_out
    top = hi_w.amax(dim=2) - c_out
    dev = torch.maximum(hi - c_in, c_in - lo)
    dev = torch.cat([dev, lo.new_zeros((b, 1))], 1)[:, op.windows].amax(dim=2)
    win_mag = dev + top.abs() + shift.abs()
    out_rad = rounding.up_sum(torch.maximum(top, c_out - best_lo)).clamp(min=0)
    return PoolRelax(index.unsqueeze(1), exact.unsqueeze(1), top.unsqueeze(1),
                     shift.unsqueeze(1), win_mag.unsqueeze(2), out_rad, gamma)


def _weighted(c: Tensor, mag: Tensor) -> Tensor:
    """Return ``|c| . mag`` per row: c (B or 1, R, n), mag (B, n, k) -> (B, R) (k = 1) or
    (B, R, k)."""
    out = torch.matmul(c.detach().abs(), mag)
    return out.squeeze(2) if mag.shape[2] == 1 else out


def _add(bias: Tensor, err: Tensor, term: Tensor, unit: float) -> tuple[Tensor, Tensor]:
    """Add ``term`` to the running constant; the addition's rounding goes into ``err``."""
    bias = bias + term
    return bias, err + 2.0 * unit * bias.detach().abs()


def affine_backward(op: AffineOp, lin: Linear, v: Tensor | None) -> Linear:
    """Move a bound from the output of an affine op to its input.

    On deviations the op is ``delta_out = W delta_in + rho`` (its bias is in the centres), so
    the term is ``a . rho`` plus the rounding of ``a W``, all in ``|a| . v`` with ``v`` the
    op's error vector, or None when the ReLU step just before (in backward order) has
    already charged it (:func:`relu_backward`).
    """
    err = lin.err
    if v is not None:
        err = err + _weighted(lin.a, v.unsqueeze(2))
    return Linear(op.backward(lin.a), lin.bias, err)


def relu_backward(lin: Linear, rx: ReluRelax, unit: float, alpha: Tensor | None = None,
                  beta: Tensor | None = None, v_prev: Tensor | None = None) -> Linear:
    """Move a lower bound from a ReLU output to its input (see the module docstring).

    On deviations ``t = h - c`` the term of neuron j is ``mu (relu(c + t) - relu(c)) - nu t``,
    which is the plain term ``mu relu(h) - nu h`` less ``mu relu(c) - nu c``. With CROWN's
    coefficients (``alpha`` in [0, 1], the chord for negative ``mu``) an unsplit unstable
    neuron's plain minimum is the relaxation's intercept ``min(mu, 0) (-s l)``, so its term's
    minimum is ``min(mu, 0) (-s l) - mu relu(c) + nu c``. A stable or split neuron has
    ``mu f - nu = beta sigma`` (f its fixed slope): its term is ``mu G + beta sigma t`` with
    the shift ``G = min(c, 0)`` (active) or ``-max(c, 0)`` (inactive), nonzero only where
    the centre lies on the other side, and ``min_t beta sigma t`` is
    ``min(bs (l - c), bs (u - c))`` whatever the sign of beta. A few roundings of each
    quantity and the sums are covered by ``gamma |mu| . M`` (and ``gamma |beta| . M``), with
    M a bound on the quantities (``|nu| <= |mu|`` on unstable neurons).

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
        The bound in terms of the pre-activation's deviation.
    """
    a = lin.a
    neg = a.clamp(max=0)
    slope = rx.lower_crown if alpha is None else rx.lower_fixed + rx.unstable * alpha
    nu = torch.addcmul(a * slope, neg, rx.upper_slope - slope)
    neg_cols, a_cols, lo_m, wid_m = _columns(rx, v_prev, alpha is None)
    p_neg = torch.matmul(neg, neg_cols)
    p_a = torch.matmul(a, a_cols)
    term = p_neg[..., 0] + p_a[..., 0]
    if rx.c_unst is not None and alpha is not None:
        term = term + torch.matmul(nu, rx.c_unst)[..., 0]
    abs_a = p_a[..., 1].detach() - 2.0 * p_neg[..., 1].detach()
    bias, err = _add(lin.bias, lin.err, term, unit)
    err = err + rx.gamma * abs_a
    if beta is not None and rx.sign is not None:
        bs = beta * rx.sign
        nu = nu - bs
        # sum_j min(bs_j (l_j - c_j), bs_j (u_j - c_j)) = bs . (l - c) + min(bs, 0) . (u - l),
        # and |bs| . M = bs . M - 2 min(bs, 0) . M, in two products.
        assert lo_m is not None and wid_m is not None
        p_all = torch.matmul(bs, lo_m)
        p_bneg = torch.matmul(bs.clamp(max=0), wid_m)
        bias, err = _add(bias, err, p_all[..., 0] + p_bneg[..., 0], unit)
        abs_bs = p_all[..., 1].detach() - 2.0 * p_bneg[..., 1].detach()
        err = err + rx.gamma * abs_bs
    return Linear(nu, bias, err)


def _columns(rx: ReluRelax, v_prev: Tensor | None, crown: bool
             ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Return the right-hand columns of :func:`relu_backward`'s products (memoised in ``rx``
    per error vector and kind of slopes), each (B, n_l, 2): for ``min(mu, 0)`` the
    intercepts, for ``mu`` the shifts, each beside one column for both error terms
    (``gamma |mu| . M + |mu| . v = gamma |mu| . (M + v / gamma)``), and, with splits, the
    split boxes' ``l - c`` and ``u - l`` beside the same column.

    With CROWN's slopes (``crown``: the same for every row) ``nu . c_u`` is folded in:
    ``nu = mu slope + min(mu, 0) (s - slope)`` puts ``slope c_u`` beside the shifts and
    ``(s - slope) c_u`` beside the intercepts (M covers both: ``dev >= |c_u|``)."""
    memo = rx.memo
    k = "crown:" if crown else "alpha:"
    if k + "neg" in memo and memo[k + "v"] is v_prev:
        return (memo[k + "neg"], memo[k + "a"], memo[k + "lo_m"],  # type: ignore[return-value]
                memo[k + "wid_m"])
    m = rx.cols[:, :, 2:]
    if v_prev is not None:
        m = m + v_prev.unsqueeze(2) / rx.gamma
    icpt, shift = rx.cols[:, :, :1], rx.cols[:, :, 1:2]
    if crown and rx.c_unst is not None:
        slope = rx.lower_crown.transpose(1, 2)
        icpt = icpt + (rx.upper_slope.transpose(1, 2) - slope) * rx.c_unst
        shift = shift + slope * rx.c_unst
    neg_cols = torch.cat([icpt, m], 2)
    a_cols = torch.cat([shift, m], 2)
    lo_m = wid_m = None
    if rx.sign is not None:
        lo_m = torch.cat([rx.split_box[:, :, :1], m], 2)
        wid_m = torch.cat([rx.split_box[:, :, 1:], m], 2)
    memo.update({k + "v": v_prev, k + "neg": neg_cols, k + "a": a_cols, k + "lo_m": lo_m,
                 k + "wid_m": wid_m})
    return neg_cols, a_cols, lo_m, wid_m


def pool_backward(op: PoolOp, lin: Linear, px: PoolRelax, unit: float) -> Linear:
    """Move a lower bound from a max pool output (B, R, n_out) to its input.

    On deviations, ``y >= x_k`` gives ``mu+ (dy - dx_k) >= mu+ (c_{x_k} - c_y)`` (equality
    where ``y = x_k``), and ``y <= max_j u_j`` gives ``mu- dy >= mu- top``.
    """
    a = lin.a
    pos = a.clamp(min=0)
    neg = a - pos
    coef = pos + neg * px.exact
    n_b = max(coef.shape[0], px.index.shape[0])
    coef = coef.expand(n_b, -1, -1)
    index = px.index.expand(n_b, coef.shape[1], -1)
    out = coef.new_zeros((n_b, coef.shape[1], op.in_size + 1))
    out = out.scatter_add(2, index, coef)[:, :, :op.in_size]
    const = (coef * px.shift + neg * (1 - px.exact) * px.top).sum(dim=2)
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
            lin = affine_backward(op, lin, None if charged else errs[i])
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
            cur = affine_backward(op, cur, None if i in charged else errs[i])
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
        elif isinstance(op, AddOp):
            charge = errs[i]
            assert charge is not None
            cur = Linear(cur.a, cur.bias, cur.err + _weighted(cur.a, charge[:, :, 1:]))
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
    sum, ``2u |s| . r`` with r the bound on the tensor's deviation (see the module
    docstring)."""
    old = coeffs.get(t)
    if old is None:
        coeffs[t] = c
        return err
    total = old + c
    coeffs[t] = total
    rad = errs[t] if t >= 0 else None
    if rad is None:
        raise AssertionError(f"no deviation bound for tensor {t}, which several ops read")
    rad = rad[:, :, :1] if rad.dim() == 3 else rad.unsqueeze(2)
    return err + 2.0 * net.unit * _weighted(total, rad)


def box_columns(lo: Tensor, hi: Tensor) -> Tensor:
    """Return the right-hand side of :func:`concretize`'s products over the boxes (B, n_in)
    as (B, n_in, 3): the radius ``r`` around the centre ``c`` (:func:`box_centre`), ``c`` and
    ``|c|``."""
    c = box_centre(lo, hi)
    return torch.stack([rounding.enclosing_radius(lo, hi, c), c, c.abs()], 2)


def concretize(net: BoundedNetwork, lin: Linear, lo: Tensor, hi: Tensor,
               columns: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return the rigorous minimum of a bound over the boxes, and its input-space constant.

    ``lin`` is a bound on the input's deviation ``x - c`` from the box centre; its minimum
    over the box is at least ``bias - |a| . r``. ``columns`` are :func:`box_columns` of the
    box when the caller keeps them (an optimisation evaluates many bounds over one box).

    Returns:
        ``(lower (B, R), const (B, R))``: ``lower`` is rounded down and holds in real
        arithmetic; ``a x + const <= f(x)`` for every x in the box (``const`` is the bound's
        constant less ``a . c`` and its rounding allowance, for input-domain clipping).
    """
    b = lo.shape[0]
    a = lin.a.expand(b, -1, -1)
    cols = box_columns(lo, hi) if columns is None else columns
    # |a| . v = 2 max(a, 0) . v - a . v for v = r and |c|; a . c for the constant.
    p_all = torch.matmul(a, cols)
    p_pos = torch.matmul(a.clamp(min=0), cols[:, :, ::2])
    abs_r = 2.0 * p_pos[..., 0] - p_all[..., 0]
    total = lin.bias - abs_r
    scale = net.err_scale
    base = lin.err.detach() * scale
    eta = rounding.ETA[net.dtype] * net.longest_product * 4
    g = net.gamma(net.input_size + 4)
    # Each product is off by at most g |a| . r: 2 max(a, 0) . r + |a| . r <= 3 |a| . r.
    err = (base + (3.0 * g * abs_r.detach() + 2.0 * net.unit * total.detach().abs()) * scale
           + eta)
    lower = rounding.down(total - err)
    with torch.no_grad():
        abs_c = 2.0 * p_pos[..., 1] - p_all[..., 2]
        shifted = lin.bias - p_all[..., 1]
        slack = base + (g * abs_c + 2.0 * net.unit * shifted.abs()) * scale + eta
        const = rounding.down(shifted - slack)
    return lower, const.expand(b, -1)


def corner(a: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Return the box corner minimising ``a x``: a (B, n_in) -> (B, n_in)."""
    return torch.where(a > 0, lo, hi)


def final_start(net: BoundedNetwork, errs: ErrorVectors, cent: Centres) -> tuple[int, Linear]:
    """Return ``(start, bound)``: the margins as a linear function of the deviation of the
    last layer's input, ``C y - d = c + W delta + rho`` with ``c`` the margins' centre."""
    op = net.ops[-1]
    v = errs[len(net.ops) - 1]
    assert isinstance(op, AffineOp) and op.conv is None and v is not None
    return net.inputs[-1][0], Linear(op.weight.unsqueeze(0), cent.ops[-1], v)


def crown_rows(net: BoundedNetwork, lo: Tensor, hi: Tensor, relax: Sequence[Relax],
               errs: ErrorVectors, cent: Centres) -> tuple[Tensor, Tensor, Tensor]:
    """Return CROWN lower bounds of the margins (B, R), their input coefficients
    (B, R, n_in) and constants (B, R)."""
    start, lin = final_start(net, errs, cent)
    lin = backward(net, start, lin, relax, errs)
    lower, const = concretize(net, lin, lo, hi)
    return lower, lin.a.expand(lo.shape[0], -1, -1), const


def slot_start(net: BoundedNetwork, slot: int, index: Tensor, errs: ErrorVectors,
               cent: Centres) -> tuple[int, Linear]:
    """Return ``(start, bound)`` with rows ``+h_k`` and ``-h_k`` (R = 2K) in terms of the
    deviation of the input of the affine op feeding ``slot``.

    ``h`` is the input of ``slot`` and ``k`` runs over ``index`` (K neurons); the lower bound
    of ``-h_k`` is minus the upper bound of ``h_k``; the constant is the centre ``+-c_k``.
    When a join (a residual sum) produces ``h``, the rows are the unit vectors ``+-e_k`` on
    its output's deviation (no error term here; the join's residual is charged at it).
    """
    p = net.producer(slot)
    op = net.ops[p]
    c = cent.ops[p].index_select(1, index)
    bias = torch.cat([c, -c], 1)
    if not isinstance(op, AffineOp):
        k = index.numel()
        eye = torch.zeros((2 * k, op_out_size(op)), dtype=net.dtype, device=net.device)
        rows = torch.arange(k, device=net.device)
        eye[rows, index] = 1.0
        eye[rows + k, index] = -1.0
        return p, Linear(eye.unsqueeze(0), bias, torch.zeros_like(bias))
    v = errs[p]
    assert v is not None
    w, _ = op.rows(index)
    e = v.index_select(1, index)
    return net.inputs[p][0], Linear(torch.cat([w, -w], 0).unsqueeze(0), bias,
                                    torch.cat([e, e], 1))


def chunk_size(net: BoundedNetwork, slot: int, batch: int) -> int:
    """Return how many neurons of ``slot`` to bound per backward pass (memory cap)."""
    widths = [net.input_size] + [op_out_size(op) for op in net.ops[:net.slot_ops[slot]]]
    return max(1, ROW_CHUNK_ELEMENTS // (2 * batch * max(widths)))


def crown_slot(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
               relax: Sequence[Relax], errs: ErrorVectors,
               cent: Centres) -> tuple[Tensor, Tensor]:
    """Return CROWN bounds (B, K) of the input neurons ``index`` of ``slot``.

    Args:
        net: the prepared network.
        slot: the nonlinear slot; its input must be the output of an affine layer.
        index: (K,) long neuron indices.
        lo: (B, n_in) box lower corners.
        hi: (B, n_in) box upper corners.
        relax: relaxations of the slots before ``slot``.
        errs: the batch's error vectors of the ops before ``slot``.
        cent: the batch's centres.

    Returns:
        ``(lower, upper)``, each (B, K).
    """
    step = chunk_size(net, slot, lo.shape[0])
    lows, ups = [], []
    for part in torch.split(index, step):
        start, lin = slot_start(net, slot, part, errs, cent)
        lb, _ = concretize(net, backward(net, start, lin, relax, errs), lo, hi)
        k = part.numel()
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)


def crown_slot_per_node(net: BoundedNetwork, slot: int, index: Tensor, lo: Tensor, hi: Tensor,
                        relax: Sequence[Relax], errs: ErrorVectors,
                        cent: Centres) -> tuple[Tensor, Tensor]:
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
        b = cent.ops[p].expand(part.shape[0], -1).gather(1, part)
        e = v.gather(1, part)
        lin = Linear(torch.cat([w, -w], 1), torch.cat([b, -b], 1), torch.cat([e, e], 1))
        lb, _ = concretize(net, backward(net, net.inputs[p][0], lin, relax, errs), lo, hi)
        k = part.shape[1]
        lows.append(lb[:, :k])
        ups.append(-lb[:, k:])
    return torch.cat(lows, 1), torch.cat(ups, 1)
