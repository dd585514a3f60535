"""Entry points: bound the root, bound a batch of BaB nodes, intermediate bounds, stability.

One call bounds B nodes, each with its own input box and split state, in four steps:

1. intermediate bounds, slot by slot: interval propagation from the previous slot's bounds,
   intersected with the bounds inherited from the parent, clamped by the splits and, for nodes
   without a parent state (or with ``intermediate="crown"``), refined by CROWN on the neurons
   that are still unstable in some node (optionally alpha-optimised); with
   ``intermediate="forward"`` all slots come instead from one forward symbolic pass
   (:mod:`bnbver.bounds.forward`), intersected the same way, and ``"forward-crown"`` then
   refines by CROWN the neurons that the forward pass leaves unstable;
2. infeasibility: a node whose clamped bounds cross is flagged and gets ``+inf`` bounds;
3. the margins ``C y - d``: IBP, CROWN (intersected with IBP and, in forward mode, with the
   forward margin bounds), or alpha/beta-optimised CROWN warm-started from the parent's
   parameters;
4. intersection with the parent's margin bounds (a child's feasible set is a subset of its
   parent's, so nothing ever gets looser), and the candidate counterexamples.

Every entry point runs under ``torch.no_grad()`` (gradients are enabled only inside the
alpha/beta optimisation) and never modifies its arguments.

Shapes: B nodes, R specification rows, ``n_in`` input size, ``n_l`` ReLU layer sizes, ``n_s``
slot input sizes (see :mod:`bnbver.bounds.types`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnbver.bounds import rounding
from bnbver.bounds.centres import Centres, centres
from bnbver.bounds.forward import forward_bounds, supports_forward
from bnbver.bounds.interval import clamp_splits, crossing, slot_input_interval, slot_split
from bnbver.bounds.linear import (
    ErrorVectors,
    Linear,
    Relax,
    backward,
    crown_rows,
    crown_slot,
    crown_slot_per_node,
    final_start,
    pool_relax,
    relu_relax,
    slot_start,
)
from bnbver.bounds.optimize import Optimized, initial_alpha, initial_beta, optimize
from bnbver.bounds.prepared import AddOp, AffineOp, BoundedNetwork, PoolOp, ReluOp
from bnbver.bounds.rowpack import Problem, open_rows, unpack
from bnbver.bounds.types import (
    FORWARD_MODES,
    INTERMEDIATE_MODES,
    METHODS,
    BoundResult,
    BoundsOptions,
    NodeBatch,
    NodeState,
)
from bnbver.errors import InputError


def _validate_options(net: BoundedNetwork, options: BoundsOptions) -> None:
    if options.method not in METHODS:
        raise InputError("options.method", f"must be one of {METHODS}, got {options.method!r}")
    if options.intermediate not in INTERMEDIATE_MODES:
        raise InputError("options.intermediate",
                         f"must be one of {INTERMEDIATE_MODES}, got {options.intermediate!r}")
    if options.iterations < 0:
        raise InputError("options.iterations", f"must be >= 0, got {options.iterations}")
    if options.resolved_dtype() != net.dtype:
        raise InputError("options.dtype", f"{options.resolved_dtype()} differs from the "
                         f"prepared network's {net.dtype}")


def _as(t: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(np.array(t))
    return torch.as_tensor(t).to(dtype=dtype, device=device)


def _validate_batch(net: BoundedNetwork, batch: NodeBatch) -> tuple[NodeBatch, Tensor, Tensor]:
    """Return the batch in the network's dtype/device and its float64 box, or raise."""
    lo64 = _as(batch.lower, torch.float64, net.device)
    hi64 = _as(batch.upper, torch.float64, net.device)
    lo, hi = rounding.outward(lo64, hi64, net.dtype)
    if lo.ndim != 2 or lo.shape != hi.shape or lo.shape[1] != net.input_size:
        raise InputError("batch.lower/upper",
                         f"must both be (B, {net.input_size}), got {tuple(lo.shape)} and "
                         f"{tuple(hi.shape)}")
    if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all() & (lo <= hi).all()):
        raise InputError("batch.lower/upper", "must be finite with lower <= upper")
    sizes = net.relu_sizes
    if len(batch.splits) != len(sizes):
        raise InputError("batch.splits", f"needs {len(sizes)} layers, got {len(batch.splits)}")
    splits = tuple(_as(s, torch.int8, net.device) for s in batch.splits)
    for k, (s, n) in enumerate(zip(splits, sizes, strict=True)):
        if s.shape != (lo.shape[0], n) or bool((s.abs() > 1).any()):
            raise InputError(f"batch.splits[{k}]", f"must be ({lo.shape[0]}, {n}) in -1/0/+1")
    state = batch.state
    if state is not None and state.batch_size != lo.shape[0]:
        raise InputError("batch.state", f"has {state.batch_size} nodes, batch has {lo.shape[0]}")
    return NodeBatch(lo, hi, splits, state), lo64, hi64


def _produced_by_affine(net: BoundedNetwork, slot: int) -> bool:
    """True when an affine op or a join (a residual sum, a concatenation) produces the
    slot's input: CROWN can then be tighter than interval propagation."""
    p = net.producer(slot)
    return p >= 0 and not isinstance(net.ops[p], (ReluOp, PoolOp))


def _refine_need(net: BoundedNetwork, slot: int, lo: Tensor, hi: Tensor,
                 split: Tensor | None) -> Tensor:
    """Return (B, n_s) True where a neuron is worth a CROWN bound (unstable and free).

    Only these get the CROWN bound, even when another node of the batch makes the backward
    pass compute more, so a node's result never depends on the rest of its batch.
    """
    if isinstance(net.ops[net.slot_ops[slot]], PoolOp):
        return torch.ones_like(lo, dtype=torch.bool)
    need = (lo < 0) & (hi > 0)
    if split is not None:
        need &= split == 0
    return need


def _make_relax(net: BoundedNetwork, slot: int, lo: Tensor, hi: Tensor,
                split: Tensor | None, cent: Centres, state: NodeState | None = None) -> Relax:
    op_index = net.slot_ops[slot]
    op = net.ops[op_index]
    c_in = cent.of(net.producer(slot))
    if isinstance(op, ReluOp):
        parent = None if state is None else (state.lower[slot], state.upper[slot])
        return relu_relax(lo, hi, split, net.gamma(op.size + 24), c_in, parent)
    assert isinstance(op, PoolOp)
    return pool_relax(op, lo, hi, net.gamma(op.out_size + op.windows.shape[1] + 8), c_in,
                      cent.ops[op_index])


def extend_errors(net: BoundedNetwork, errs: list[Tensor | None], relax: Sequence[Relax],
                  lo: Tensor, hi: Tensor, end: int, cent: Centres) -> None:
    """Append the error vectors of ``ops[len(errs):end]`` for the batch (in place).

    Each affine op's vector needs a bound on its input's deviation from its centre: the
    box's radius for the first op, the output bound of the slot before it, or, after another
    affine op, that op's ``|W| r`` plus its own error vector (a run of affine ops is always
    recomputed from its start, so that bound is at hand). In a DAG every entry is
    recomputed (:func:`_graph_errors`).
    """
    if not net.is_chain:
        errs[:] = _graph_errors(net, relax, lo, hi, end, cent)
        return
    begin = len(errs)
    while 0 < begin < end and isinstance(net.ops[begin - 1], AffineOp):
        begin -= 1
    del errs[begin:]
    carry: Tensor | None = None
    for i in range(begin, end):
        op = net.ops[i]
        if not isinstance(op, AffineOp):
            errs.append(None)
            carry = None
            continue
        prev = net.ops[i - 1] if i > 0 else None
        if prev is None:
            r = _box_radius(lo, hi, cent)
        elif isinstance(prev, AffineOp):
            assert carry is not None
            r = carry
        else:
            assert isinstance(prev, (ReluOp, PoolOp))
            r = relax[prev.slot].out_rad
        v, carry = _affine_errors(net, op, r, cent.resid[i])
        errs.append(v)


def _box_radius(lo: Tensor, hi: Tensor, cent: Centres) -> Tensor:
    return rounding.enclosing_radius(lo, hi, cent.input)


def _affine_errors(net: BoundedNetwork, op: AffineOp, r: Tensor,
                   resid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return an affine op's error vector for input deviations ``r`` and a bound on its
    output's deviation, ``|W| r + v`` (rounded up)."""
    assert resid is not None
    wr = op.linear(r, absolute=True)
    v = op.radius_error(r, wr, resid)
    g = 2.0 * net.gamma(op.inner[0] + 2)
    return v, torch.addcmul(v, wr, wr.new_tensor(1.0 + g))


def _graph_errors(net: BoundedNetwork, relax: Sequence[Relax], lo: Tensor, hi: Tensor,
                  end: int, cent: Centres) -> list[Tensor | None]:
    """Return the entries of :data:`~bnbver.bounds.linear.ErrorVectors` for ``ops[:end]`` of
    a DAG: each op's output deviation bound follows from its inputs' (the box's radius for
    the input, ``out_rad`` of a relaxation, ``|W| r`` plus the error vector after an affine
    op, the sum plus the residual rounded up after a residual sum)."""
    box = _box_radius(lo, hi, cent)
    rads: list[Tensor] = []
    errs: list[Tensor | None] = []
    for i in range(end):
        op = net.ops[i]
        ins = [box if t < 0 else rads[t] for t in net.inputs[i]]
        if isinstance(op, AffineOp):
            v, r = _affine_errors(net, op, ins[0], cent.resid[i])
            errs.append(v)
            rads.append(r)
            continue
        if isinstance(op, (ReluOp, PoolOp)):
            r = relax[op.slot].out_rad
            errs.append(r)
        elif isinstance(op, AddOp):
            resid = cent.resid[i]
            r = ins[0] if resid is None else rounding.up_sum(ins[0] + resid)
            for other in ins[1:]:
                r = rounding.up_sum(r + other)
            resid = torch.zeros_like(r) if resid is None else resid.expand_as(r)
            errs.append(torch.stack([r, resid], 2))
        else:
            r = torch.cat(ins, 1)
            errs.append(r)
        rads.append(r)
    return errs


InterimProof = tuple[int, Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]


def _optimizes(options: BoundsOptions, slot: int) -> bool:
    """True when ``slot``'s intermediate bounds are alpha-optimised (not plain CROWN)."""
    return (options.optimize_intermediate and options.method in ("alpha", "beta")
            and slot >= options.optimize_from)


def _refine_slot(net: BoundedNetwork, slot: int, index: Tensor, box: tuple[Tensor, Tensor],
                 relax: Sequence[Relax], errs: ErrorVectors, cent: Centres,
                 options: BoundsOptions,
                 deadline: float | None = None,
                 proofs: list[InterimProof] | None = None) -> tuple[Tensor, Tensor]:
    """Return CROWN (or alpha-CROWN) bounds (B, K) of the neurons ``index`` of ``slot``.

    With ``proofs`` (certificates), the alpha-optimised bounds' dual coefficients are
    appended to it as ``(slot, index, lower, upper)``.
    """
    lo, hi = box
    if not _optimizes(options, slot):
        return crown_slot(net, slot, index, lo, hi, relax, errs, cent)
    start, lin0 = slot_start(net, slot, index, errs, cent)
    layers = [s for s in net.relu_slots if s < slot]
    rows = lin0.a.shape[1]
    alpha0 = initial_alpha(relax, layers, lo.shape[0], rows)
    beta0 = (initial_beta(relax, layers, lo.shape[0], rows, None)
             if options.method == "beta" else None)
    opt = optimize(net, start, lin0, lo, hi, relax, errs, alpha0, beta0, options, deadline)
    k = index.numel()
    if proofs is not None:
        nus = _record_nu(net, start, lin0, relax, errs, opt, len(layers))
        proofs.append((slot, index, tuple(t[:, :k] for t in nus),
                       tuple(t[:, k:] for t in nus)))
    return opt.lower[:, :k], -opt.lower[:, k:]


def _record_nu(net: BoundedNetwork, start: int, lin0: Linear, relax: Sequence[Relax],
               errs: ErrorVectors, opt: Optimized, n_layers: int) -> tuple[Tensor, ...]:
    """Return per ReLU layer the pre-activation coefficients of the best bound (B, R, n_l).

    One backward pass with the best alpha/beta recomputes what ``optimize`` kept only as
    slopes: the dual certificate of each row (:mod:`bnbver.check`).
    """
    rec: list[Tensor | None] = [None] * n_layers
    beta = None if opt.beta is None else list(opt.beta)
    backward(net, start, lin0, relax, errs, list(opt.alpha), beta, record_nu=rec)
    b = opt.lower.shape[0]
    return tuple(t.detach().expand(b, -1, -1) for t in rec if t is not None)


def _slot_bounds(net: BoundedNetwork, slot: int, batch: NodeBatch, lows: list[Tensor],
                 ups: list[Tensor], relax: list[Relax], errs: list[Tensor | None],
                 cent: Centres, refine: bool, options: BoundsOptions, deadline: float | None = None,
                 proofs: list[InterimProof] | None = None) -> tuple[Tensor, Tensor]:
    """Return the bounds (B, n_s) of the input of ``slot`` given the slots before it."""
    lo, hi = slot_input_interval(net, slot, lows, ups, batch.lower, batch.upper)
    if batch.state is not None:
        lo = torch.maximum(lo, batch.state.lower[slot])
        hi = torch.minimum(hi, batch.state.upper[slot])
    split = slot_split(net, batch.splits, slot)
    lo, hi = clamp_splits(lo, hi, split)
    if (refine and options.method != "ibp" and _produced_by_affine(net, slot)
            and _split_before(net, batch, slot, options)):
        extend_errors(net, errs, relax, batch.lower, batch.upper, net.slot_ops[slot], cent)
        need = _refine_need(net, slot, lo, hi, split)
        index = need.any(dim=0).nonzero().flatten()
        if _per_node_pays(net, slot, need, index, options):
            return _refine_per_node(net, slot, need, (lo, hi), batch, relax, errs, cent, split)
        if index.numel():
            c_lo, c_hi = _refine_slot(net, slot, index, (batch.lower, batch.upper), relax,
                                      errs, cent, options, deadline, proofs)
            use = need.index_select(1, index)
            old_lo, old_hi = lo.index_select(1, index), hi.index_select(1, index)
            lo = lo.index_copy(1, index, torch.where(use, torch.maximum(old_lo, c_lo), old_lo))
            hi = hi.index_copy(1, index, torch.where(use, torch.minimum(old_hi, c_hi), old_hi))
            lo, hi = clamp_splits(lo, hi, split)
    return lo, hi


def _split_before(net: BoundedNetwork, batch: NodeBatch, slot: int,
                  options: BoundsOptions) -> bool:
    """False when re-optimising ``slot``'s bounds of ReLU-split children cannot gain over the
    inherited ones: no node of the batch is split in a ReLU layer before the slot (a split
    changes only the bounds of the layers after it). Only for optimised intermediate bounds
    of children (input-split children change their box and always recompute)."""
    if batch.state is None or not options.optimize_intermediate:
        return True
    return any(s < slot and bool((batch.splits[k] != 0).any())
               for k, s in enumerate(net.relu_slots))


def _per_node_pays(net: BoundedNetwork, slot: int, need: Tensor, index: Tensor,
                   options: BoundsOptions) -> bool:
    """True when bounding each node's own unstable neurons beats bounding their union.

    Plain CROWN on a dense layer only, and only when the largest per-node count is well
    below the union's size (each node then pays for ``max`` rows instead of ``union``).
    """
    if need.shape[0] < 2 or not index.numel():
        return False
    if _optimizes(options, slot):
        return False
    op = net.ops[net.producer(slot)]
    if not isinstance(op, AffineOp) or op.conv is not None:
        return False
    return int(need.sum(dim=1).max()) <= 0.75 * index.numel()


def _refine_per_node(net: BoundedNetwork, slot: int, need: Tensor, box: tuple[Tensor, Tensor],
                     batch: NodeBatch, relax: Sequence[Relax], errs: ErrorVectors,
                     cent: Centres, split: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return the slot's bounds with each node's needed neurons refined by its own CROWN.

    ``order`` lists every node's needed neurons first (a permutation per row, so no neuron
    repeats); entries past a node's own count are bounded too but not used.
    """
    lo, hi = box
    k = int(need.sum(dim=1).max())
    order = torch.argsort((~need).to(torch.int8), dim=1, stable=True)[:, :k]
    use = need.gather(1, order)
    c_lo, c_hi = crown_slot_per_node(net, slot, order, batch.lower, batch.upper, relax, errs,
                                     cent)
    old_lo, old_hi = lo.gather(1, order), hi.gather(1, order)
    lo = lo.scatter(1, order, torch.where(use, torch.maximum(old_lo, c_lo), old_lo))
    hi = hi.scatter(1, order, torch.where(use, torch.minimum(old_hi, c_hi), old_hi))
    return clamp_splits(lo, hi, split)


@dataclass(frozen=True, eq=False)
class Intermediate:
    """Intermediate bounds of a batch and what the final rows need.

    Attributes:
        lows, ups: per slot (B, n_s) bounds of the slot's input.
        relax: per slot relaxation.
        errs: per op the error vectors (complete: every op of the network).
        cent: the centres the bounds are taken around.
        infeasible: (B,) bool.
        fwd_rows: (B, R) margin bounds of the forward pass in the forward modes, else None.
    """

    lows: list[Tensor]
    ups: list[Tensor]
    relax: list[Relax]
    errs: list[Tensor | None]
    cent: Centres
    infeasible: Tensor
    fwd_rows: Tensor | None
    proofs: tuple[InterimProof, ...] = ()


def _intermediate_rows(net: BoundedNetwork, batch: NodeBatch, options: BoundsOptions,
                       deadline: float | None = None) -> Intermediate:
    """Return per-slot bounds, relaxations, error vectors, infeasibility and forward rows."""
    errs: list[Tensor | None] = []
    cent = centres(net, batch.lower, batch.upper)
    if (options.intermediate in FORWARD_MODES and options.method != "ibp"
            and supports_forward(net)):
        fwd = forward_bounds(net, batch)
        if options.intermediate == "forward":
            relax = [_make_relax(net, s, lo, hi, slot_split(net, batch.splits, s), cent,
                                 batch.state)
                     for s, (lo, hi) in enumerate(zip(fwd.lower, fwd.upper, strict=True))]
            extend_errors(net, errs, relax, batch.lower, batch.upper, len(net.ops), cent)
            return Intermediate(fwd.lower, fwd.upper, relax, errs, cent, fwd.infeasible,
                                fwd.row_lower)
        # "forward-crown": the forward bounds play the inherited bounds, so CROWN only
        # refines the neurons they leave unstable.
        fwd_state = NodeState(tuple(fwd.lower), tuple(fwd.upper), net.relu_slots)
        inter = _slot_loop(net, NodeBatch(batch.lower, batch.upper, batch.splits, fwd_state),
                           cent, True, options, batch.state, deadline)
        return replace(inter, fwd_rows=fwd.row_lower)
    refine = batch.state is None or options.intermediate != "inherit"
    return _slot_loop(net, batch, cent, refine, options, batch.state, deadline)


def _slot_loop(net: BoundedNetwork, batch: NodeBatch, cent: Centres, refine: bool,
               options: BoundsOptions, parent: NodeState | None,
               deadline: float | None = None) -> Intermediate:
    """Bound every slot in order (interval, inherited, split-clamped, CROWN-refined)."""
    _, _, tol = net.margins
    lows: list[Tensor] = []
    ups: list[Tensor] = []
    relax: list[Relax] = []
    errs: list[Tensor | None] = []
    proofs: list[InterimProof] | None = [] if options.certify else None
    infeasible = torch.zeros(batch.batch_size, dtype=torch.bool, device=net.device)
    for slot in range(len(net.slot_ops)):
        lo, hi = _slot_bounds(net, slot, batch, lows, ups, relax, errs, cent, refine,
                              options, deadline, proofs)
        infeasible |= crossing(lo, hi, tol)
        lows.append(lo)
        ups.append(hi)
        relax.append(_make_relax(net, slot, lo, hi, slot_split(net, batch.splits, slot),
                                 cent, parent))
    extend_errors(net, errs, relax, batch.lower, batch.upper, len(net.ops), cent)
    return Intermediate(lows, ups, relax, errs, cent, infeasible, None, tuple(proofs or ()))


def _optimized_rows(net: BoundedNetwork, batch: NodeBatch, inter: Intermediate,
                    options: BoundsOptions, deadline: float | None) -> Optimized:
    """Run alpha(-beta)-CROWN on the margins, warm-started from the batch's state.

    Rows a node's parent has already proven (bound > 0: the child inherits it) are left out
    of the optimisation: deep in a search most disjuncts are settled and only one or two rows
    still need work. Each node's own open rows are optimised as packed (node, row) pairs when
    that pays, else the rows some parent has open (:mod:`bnbver.bounds.rowpack`). The rows
    left out keep the parent's bounds and parameters.
    """
    start, lin0 = final_start(net, inter.errs, inter.cent)
    b, r = batch.batch_size, net.num_rows
    state = batch.state
    relax = inter.relax
    if state is not None and state.alpha is not None:
        alpha0 = list(state.alpha)
    else:
        alpha0 = initial_alpha(relax, net.relu_slots, b, r)
    beta0 = None
    if options.method == "beta":
        warm = None if state is None else state.beta
        beta0 = initial_beta(relax, net.relu_slots, b, r, warm)
    problem = Problem(lin0, batch.lower, batch.upper, relax, inter.errs, alpha0, beta0)
    parent_rows = None if state is None else state.row_lower
    sel = None if parent_rows is None else open_rows(parent_rows)
    if sel is None:
        return _optimize(net, start, problem, options, deadline)
    assert parent_rows is not None
    part = _optimize(net, start, sel.pack(problem), options, deadline)
    return unpack(sel, part, parent_rows, alpha0, beta0, batch.lower.shape[1])


def _optimize(net: BoundedNetwork, start: int, p: Problem, options: BoundsOptions,
              deadline: float | None) -> Optimized:
    return optimize(net, start, p.lin0, p.lo, p.hi, p.relax, p.errs, p.alpha0, p.beta0,
                    options, deadline)


@dataclass(frozen=True, eq=False)
class _Rows:
    """Final margin bounds: ``lower`` (B, R); the linear bound's input coefficients
    ``coeffs`` (B, R, n_in) and constants ``const`` (B, R) (empty for IBP); alpha/beta."""

    lower: Tensor
    coeffs: Tensor
    const: Tensor
    best: Optimized | None


def _final_rows(net: BoundedNetwork, batch: NodeBatch, inter: Intermediate, ibp_rows: Tensor,
                options: BoundsOptions, deadline: float | None) -> _Rows:
    """Return the margin bounds by the batch's method, intersected with ``ibp_rows``."""
    empty = ibp_rows.new_zeros((0,))
    if options.method == "ibp":
        return _Rows(ibp_rows, empty, empty, None)
    if options.method == "crown":
        lb, a, const = crown_rows(net, batch.lower, batch.upper, inter.relax, inter.errs,
                                  inter.cent)
        return _Rows(torch.maximum(lb, ibp_rows), a, const, None)
    best = _optimized_rows(net, batch, inter, options, deadline)
    return _Rows(torch.maximum(best.lower, ibp_rows), best.coeffs, best.const, best)


def _row_linear(rows: _Rows, lo64: Tensor) -> tuple[Tensor, Tensor] | None:
    """Return each row's linear lower bound ``(A (B, R, n_in), c (B, R))`` in float64.

    ``A x + c`` is below the margin for every x in the node's box (in real arithmetic: the
    constant already carries the bound's rounding allowance), whatever dtype it came from.
    """
    if rows.coeffs.numel() == 0:
        return None
    a = rows.coeffs.double().expand(lo64.shape[0], -1, -1)
    return a, rows.const.double()


def _worst_coeffs(rows: Tensor, coeffs: Tensor) -> Tensor | None:
    """Return (B, n_in) input coefficients of each node's worst row (None without them)."""
    if coeffs.numel() == 0:
        return None
    worst = rows.argmin(dim=1)
    return coeffs[torch.arange(rows.shape[0], device=rows.device), worst]


def _candidates(lo: Tensor, hi: Tensor, worst: Tensor | None) -> Tensor:
    """Return per node the minimising corner of its worst row (the centre without one)."""
    if worst is None:
        return (lo + hi) / 2
    return torch.where(worst.to(lo.device) > 0, lo, hi)


def bound_batch(net: BoundedNetwork, batch: NodeBatch, options: BoundsOptions | None = None,
                deadline: float | None = None) -> BoundResult:
    """Bound the margins ``C y - d`` of B nodes in one batched call.

    Args:
        net: the prepared network (from :func:`~bnbver.bounds.prepared.prepare`).
        batch: the nodes: boxes, splits and (for children) the parents' states, taken per
            child with ``NodeState.take``.
        options: method, iterations, step sizes; dtype/device must match ``net``.
        deadline: absolute ``time.monotonic()`` after which the alpha/beta optimisation
            stops at its best iterate (every iterate is a valid bound); None: no limit.

    Returns:
        Per node margin lower bounds, candidates, infeasibility flags and the new state.

    Raises:
        InputError: options or batch do not fit the network.
    """
    options = options or BoundsOptions()
    _validate_options(net, options)
    batch, lo64, hi64 = _validate_batch(net, batch)
    with torch.no_grad():
        inter = _intermediate_rows(net, batch, options, deadline)
        ibp_lo, _ = slot_input_interval(net, len(net.slot_ops), inter.lows, inter.ups,
                                        batch.lower, batch.upper)
        if inter.fwd_rows is not None:
            ibp_lo = torch.maximum(ibp_lo, inter.fwd_rows)
        final = _final_rows(net, batch, inter, ibp_lo, options, deadline)
        rows = final.lower
        worst = _worst_coeffs(rows, final.coeffs)
        row_linear = _row_linear(final, lo64) if options.row_linear else None
        if batch.state is not None and batch.state.row_lower is not None:
            rows = torch.maximum(rows, batch.state.row_lower)
        cand = _candidates(lo64, hi64, worst)
        rows = torch.where(inter.infeasible.unsqueeze(1), torch.full_like(rows, torch.inf),
                           rows)
        best = final.best
        state = NodeState(tuple(inter.lows), tuple(inter.ups), net.relu_slots, rows,
                          None if best is None else best.alpha,
                          None if best is None else best.beta)
        relu_coeffs = (_relu_coefficients(net, inter, best, rows)
                       if options.relu_coeffs and options.method != "ibp" else None)
        duals = None
        if options.certify and best is not None:
            start, lin0 = final_start(net, inter.errs, inter.cent)
            duals = _record_nu(net, start, lin0, inter.relax, inter.errs, best,
                               len(net.relu_slots))
    own = None
    if options.certify:
        own = final.lower if best is None else best.lower
    return BoundResult(rows, cand, inter.infeasible, state, worst, relu_coeffs, row_linear,
                       own, duals, inter.proofs)


def _relu_coefficients(net: BoundedNetwork, inter: Intermediate, best: Optimized | None,
                       rows: Tensor) -> tuple[Tensor, ...]:
    """Return per ReLU layer (B, n_l) coefficients of the ReLU outputs in the worst row's bound.

    One backward pass of each node's worst row alone, with its final alpha/beta (CROWN's
    slopes without them), records the coefficient that multiplies each ReLU layer's output.
    """
    start, lin0 = final_start(net, inter.errs, inter.cent)
    n = rows.shape[0]
    pick = torch.arange(n, device=rows.device), rows.argmin(dim=1)

    def worst(t: Tensor) -> Tensor:
        return t.expand(n, *t.shape[1:])[pick].unsqueeze(1)

    lin = Linear(worst(lin0.a), worst(lin0.bias), worst(lin0.err))
    record: list[Tensor | None] = [None] * len(net.relu_slots)
    backward(net, start, lin, inter.relax, inter.errs,
             None if best is None else [worst(t) for t in best.alpha],
             None if best is None or best.beta is None
             else [None if t is None else worst(t) for t in best.beta], record)
    out = []
    for r in record:
        assert r is not None
        out.append(r.expand(n, -1, -1)[:, 0].detach())
    return tuple(out)


def bound_root(net: BoundedNetwork, lower: Any, upper: Any,
               options: BoundsOptions | None = None) -> BoundResult:
    """Bound the root node: the box ``[lower, upper]`` ((n_in,) each) without splits.

    Intermediate bounds are computed by CROWN (alpha-optimised with
    ``options.optimize_intermediate``). The result has B = 1.
    """
    lo = _as(lower, net.dtype, net.device).reshape(1, -1)
    hi = _as(upper, net.dtype, net.device).reshape(1, -1)
    splits = tuple(torch.zeros((1, n), dtype=torch.int8, device=net.device)
                   for n in net.relu_sizes)
    return bound_batch(net, NodeBatch(lo, hi, splits, None), options)


def intermediate_bounds(net: BoundedNetwork, batch: NodeBatch,
                        options: BoundsOptions | None = None) -> tuple[NodeState, Tensor]:
    """Return intermediate bounds of a batch (no margins) and its (B,) infeasibility flags.

    Without a state in ``batch`` they are computed from scratch by CROWN (as at the root).
    """
    options = options or BoundsOptions()
    _validate_options(net, options)
    batch, _, _ = _validate_batch(net, batch)
    with torch.no_grad():
        inter = _intermediate_rows(net, batch, options)
    return NodeState(tuple(inter.lows), tuple(inter.ups), net.relu_slots), inter.infeasible


def stable_neurons(state: NodeState) -> tuple[Tensor, ...]:
    """Return per ReLU layer (B, n_l) int8: +1 stably active, -1 stably inactive, 0 unstable.

    Split neurons are stable by their split (their bounds are clamped); branch only on 0s.
    """
    out = []
    for lo, hi in zip(state.pre_lower, state.pre_upper, strict=True):
        s = torch.zeros(lo.shape, dtype=torch.int8, device=lo.device)
        s = torch.where(hi <= 0, torch.full_like(s, -1), s)
        out.append(torch.where(lo >= 0, torch.ones_like(s), s))
    return tuple(out)


def splits_from_numpy(masks: Sequence[np.ndarray], net: BoundedNetwork) -> tuple[Tensor, ...]:
    """Return split states from :func:`bnbver.splits.split_masks` as int8 tensors."""
    return tuple(torch.from_numpy(np.asarray(m, dtype=np.int8)).to(net.device) for m in masks)
