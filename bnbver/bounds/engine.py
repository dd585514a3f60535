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
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnbver.bounds.forward import forward_bounds, supports_forward
from bnbver.bounds.interval import clamp_splits, crossing, slot_input_interval, slot_split
from bnbver.bounds.linear import (
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
from bnbver.bounds.prepared import AffineOp, BoundedNetwork, PoolOp, ReluOp
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


def _outward(lo64: Tensor, hi64: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Round a float64 box to ``dtype`` outwards, so the rounded box contains the original."""
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    if dtype == torch.float64:
        return lo, hi
    lo = torch.where(lo.double() > lo64, torch.nextafter(lo, torch.full_like(lo, -torch.inf)), lo)
    hi = torch.where(hi.double() < hi64, torch.nextafter(hi, torch.full_like(hi, torch.inf)), hi)
    return lo, hi


def _validate_batch(net: BoundedNetwork, batch: NodeBatch) -> tuple[NodeBatch, Tensor, Tensor]:
    """Return the batch in the network's dtype/device and its float64 box, or raise."""
    lo64 = _as(batch.lower, torch.float64, net.device)
    hi64 = _as(batch.upper, torch.float64, net.device)
    lo, hi = _outward(lo64, hi64, net.dtype)
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
    p = net.slot_ops[slot] - 1
    return p >= 0 and isinstance(net.ops[p], AffineOp)


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
                split: Tensor | None) -> Relax:
    op = net.ops[net.slot_ops[slot]]
    if isinstance(op, ReluOp):
        return relu_relax(lo, hi, split)
    assert isinstance(op, PoolOp)
    return pool_relax(op, lo, hi)


def _refine_slot(net: BoundedNetwork, slot: int, index: Tensor, box: tuple[Tensor, Tensor],
                 relax: Sequence[Relax], options: BoundsOptions) -> tuple[Tensor, Tensor]:
    """Return CROWN (or alpha-CROWN) bounds (B, K) of the neurons ``index`` of ``slot``."""
    lo, hi = box
    if not (options.optimize_intermediate and options.method in ("alpha", "beta")):
        return crown_slot(net, slot, index, lo, hi, relax)
    start, a0, b0 = slot_start(net, slot, index)
    layers = [s for s in net.relu_slots if s < slot]
    alpha0 = initial_alpha(relax, layers, lo.shape[0], a0.shape[1])
    beta0 = (initial_beta(relax, layers, lo.shape[0], a0.shape[1], None)
             if options.method == "beta" else None)
    best = optimize(net, start, a0, b0, lo, hi, relax, alpha0, beta0, options).lower
    k = index.numel()
    return best[:, :k], -best[:, k:]


def _slot_bounds(net: BoundedNetwork, slot: int, batch: NodeBatch, lows: list[Tensor],
                 ups: list[Tensor], relax: list[Relax], refine: bool,
                 options: BoundsOptions) -> tuple[Tensor, Tensor]:
    """Return the bounds (B, n_s) of the input of ``slot`` given the slots before it."""
    lo, hi = slot_input_interval(net, slot, lows, ups, batch.lower, batch.upper)
    if batch.state is not None:
        lo = torch.maximum(lo, batch.state.lower[slot])
        hi = torch.minimum(hi, batch.state.upper[slot])
    split = slot_split(net, batch.splits, slot)
    lo, hi = clamp_splits(lo, hi, split)
    if refine and options.method != "ibp" and _produced_by_affine(net, slot):
        need = _refine_need(net, slot, lo, hi, split)
        index = need.any(dim=0).nonzero().flatten()
        if _per_node_pays(net, slot, need, index, options):
            return _refine_per_node(net, slot, need, (lo, hi), batch, relax, split)
        if index.numel():
            c_lo, c_hi = _refine_slot(net, slot, index, (batch.lower, batch.upper), relax,
                                      options)
            use = need.index_select(1, index)
            old_lo, old_hi = lo.index_select(1, index), hi.index_select(1, index)
            lo = lo.index_copy(1, index, torch.where(use, torch.maximum(old_lo, c_lo), old_lo))
            hi = hi.index_copy(1, index, torch.where(use, torch.minimum(old_hi, c_hi), old_hi))
            lo, hi = clamp_splits(lo, hi, split)
    return lo, hi


def _per_node_pays(net: BoundedNetwork, slot: int, need: Tensor, index: Tensor,
                   options: BoundsOptions) -> bool:
    """True when bounding each node's own unstable neurons beats bounding their union.

    Plain CROWN on a dense layer only, and only when the largest per-node count is well
    below the union's size (each node then pays for ``max`` rows instead of ``union``).
    """
    if need.shape[0] < 2 or not index.numel():
        return False
    if options.optimize_intermediate and options.method in ("alpha", "beta"):
        return False
    op = net.ops[net.slot_ops[slot] - 1]
    if not isinstance(op, AffineOp) or op.conv is not None:
        return False
    return int(need.sum(dim=1).max()) <= 0.75 * index.numel()


def _refine_per_node(net: BoundedNetwork, slot: int, need: Tensor, box: tuple[Tensor, Tensor],
                     batch: NodeBatch, relax: Sequence[Relax],
                     split: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return the slot's bounds with each node's needed neurons refined by its own CROWN.

    ``order`` lists every node's needed neurons first (a permutation per row, so no neuron
    repeats); entries past a node's own count are bounded too but not used.
    """
    lo, hi = box
    k = int(need.sum(dim=1).max())
    order = torch.argsort((~need).to(torch.int8), dim=1, stable=True)[:, :k]
    use = need.gather(1, order)
    c_lo, c_hi = crown_slot_per_node(net, slot, order, batch.lower, batch.upper, relax)
    old_lo, old_hi = lo.gather(1, order), hi.gather(1, order)
    lo = lo.scatter(1, order, torch.where(use, torch.maximum(old_lo, c_lo), old_lo))
    hi = hi.scatter(1, order, torch.where(use, torch.minimum(old_hi, c_hi), old_hi))
    return clamp_splits(lo, hi, split)


Intermediate = tuple[list[Tensor], list[Tensor], list[Relax], Tensor, Tensor | None]


def _intermediate(net: BoundedNetwork, batch: NodeBatch, options: BoundsOptions
                  ) -> tuple[list[Tensor], list[Tensor], list[Relax], Tensor]:
    """Return per-slot bounds, relaxations and the (B,) infeasibility flags."""
    return _intermediate_rows(net, batch, options)[:4]


def _intermediate_rows(net: BoundedNetwork, batch: NodeBatch, options: BoundsOptions
                       ) -> Intermediate:
    """Return per-slot bounds, relaxations, (B,) infeasibility flags and forward rows.

    The forward rows (B, R) are the margin bounds of the forward pass in the forward modes
    (else None).
    """
    fwd_rows = None
    if (options.intermediate in FORWARD_MODES and options.method != "ibp"
            and supports_forward(net)):
        fwd = forward_bounds(net, batch)
        if options.intermediate == "forward":
            return fwd.lower, fwd.upper, fwd.relax, fwd.infeasible, fwd.row_lower
        # "forward-crown": the forward bounds play the inherited bounds, so CROWN only
        # refines the neurons they leave unstable.
        batch = NodeBatch(batch.lower, batch.upper, batch.splits,
                          NodeState(tuple(fwd.lower), tuple(fwd.upper), net.relu_slots))
        fwd_rows = fwd.row_lower
    refine = batch.state is None or options.intermediate != "inherit"
    _, _, tol = net.margins
    lows: list[Tensor] = []
    ups: list[Tensor] = []
    relax: list[Relax] = []
    infeasible = torch.zeros(batch.batch_size, dtype=torch.bool, device=net.device)
    for slot in range(len(net.slot_ops)):
        lo, hi = _slot_bounds(net, slot, batch, lows, ups, relax, refine, options)
        infeasible |= crossing(lo, hi, tol)
        lows.append(lo)
        ups.append(hi)
        relax.append(_make_relax(net, slot, lo, hi, slot_split(net, batch.splits, slot)))
    return lows, ups, relax, infeasible, fwd_rows


def _optimized_rows(net: BoundedNetwork, batch: NodeBatch, relax: Sequence[Relax],
                    options: BoundsOptions) -> Optimized:
    """Run alpha(-beta)-CROWN on the margins, warm-started from the batch's state."""
    start, a0, b0 = final_start(net)
    b, r = batch.batch_size, net.num_rows
    state = batch.state
    if state is not None and state.alpha is not None:
        alpha0 = list(state.alpha)
    else:
        alpha0 = initial_alpha(relax, net.relu_slots, b, r)
    beta0 = None
    if options.method == "beta":
        warm = None if state is None else state.beta
        beta0 = initial_beta(relax, net.relu_slots, b, r, warm)
    return optimize(net, start, a0, b0, batch.lower, batch.upper, relax, alpha0, beta0,
                    options)


def _final_rows(net: BoundedNetwork, batch: NodeBatch, relax: Sequence[Relax],
                ibp_rows: Tensor, options: BoundsOptions
                ) -> tuple[Tensor, Tensor, Tensor, Optimized | None]:
    """Return margin lower bounds (B, R), the linear bounds' own values (B, R), their input
    coefficients (B, R, n_in) and alpha/beta.

    The coefficients are empty (shape (0,)) for ``method="ibp"``.
    """
    if options.method == "ibp":
        return ibp_rows, ibp_rows, ibp_rows.new_zeros((0,)), None
    if options.method == "crown":
        lb, a = crown_rows(net, batch.lower, batch.upper, relax)
        return torch.maximum(lb, ibp_rows), lb, a, None
    best = _optimized_rows(net, batch, relax, options)
    return torch.maximum(best.lower, ibp_rows), best.lower, best.coeffs, best


def _row_linear(lin_rows: Tensor, coeffs: Tensor, lo64: Tensor,
                hi64: Tensor) -> tuple[Tensor, Tensor] | None:
    """Return each row's linear lower bound ``(A (B, R, n_in), c (B, R))`` in float64.

    ``c`` is recovered from the concretised value: ``c = lb - min_{x in box} A x``. The box
    here is the float64 one, inside the (outward-rounded) box the bound was concretised on,
    so its minimum is no smaller and ``c`` can only come out smaller (more cautious); the
    safety margin subtracted from ``lb`` stays in ``c``.
    """
    if coeffs.numel() == 0:
        return None
    a = coeffs.double().expand(lo64.shape[0], -1, -1)
    mid = ((hi64 + lo64) / 2).unsqueeze(2)
    rad = ((hi64 - lo64) / 2).unsqueeze(2)
    low = (a @ mid - a.abs() @ rad).squeeze(2)
    return a, lin_rows.double() - low


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


def bound_batch(net: BoundedNetwork, batch: NodeBatch,
                options: BoundsOptions | None = None) -> BoundResult:
    """Bound the margins ``C y - d`` of B nodes in one batched call.

    Args:
        net: the prepared network (from :func:`~bnbver.bounds.prepared.prepare`).
        batch: the nodes: boxes, splits and (for children) the parents' states, taken per
            child with ``NodeState.take``.
        options: method, iterations, step sizes; dtype/device must match ``net``.

    Returns:
        Per node margin lower bounds, candidates, infeasibility flags and the new state.

    Raises:
        InputError: options or batch do not fit the network.
    """
    options = options or BoundsOptions()
    _validate_options(net, options)
    batch, lo64, hi64 = _validate_batch(net, batch)
    with torch.no_grad():
        lows, ups, relax, infeasible, fwd_rows = _intermediate_rows(net, batch, options)
        ibp_lo, _ = slot_input_interval(net, len(net.slot_ops), lows, ups, batch.lower,
                                        batch.upper)
        if fwd_rows is not None:
            ibp_lo = torch.maximum(ibp_lo, fwd_rows)
        rows, lin_rows, coeffs, best = _final_rows(net, batch, relax, ibp_lo, options)
        worst = _worst_coeffs(rows, coeffs)
        row_linear = _row_linear(lin_rows, coeffs, lo64, hi64) if options.row_linear else None
        if batch.state is not None and batch.state.row_lower is not None:
            rows = torch.maximum(rows, batch.state.row_lower)
        cand = _candidates(lo64, hi64, worst)
        rows = torch.where(infeasible.unsqueeze(1), torch.full_like(rows, torch.inf), rows)
        state = NodeState(tuple(lows), tuple(ups), net.relu_slots, rows,
                          None if best is None else best.alpha,
                          None if best is None else best.beta)
        relu_coeffs = (_relu_coefficients(net, relax, best, rows)
                       if options.relu_coeffs and options.method != "ibp" else None)
    return BoundResult(rows, cand, infeasible, state, worst, relu_coeffs, row_linear)


def _relu_coefficients(net: BoundedNetwork, relax: Sequence[Relax], best: Optimized | None,
                       rows: Tensor) -> tuple[Tensor, ...]:
    """Return per ReLU layer (B, n_l) coefficients of the ReLU outputs in the worst row's bound.

    One backward pass with the final alpha/beta (CROWN's slopes without them) records the
    coefficient that multiplies each ReLU layer's output.
    """
    start, a0, b0 = final_start(net)
    record: list[Tensor | None] = [None] * len(net.relu_slots)
    backward(net, start, a0, b0, relax, None if best is None else list(best.alpha),
             None if best is None or best.beta is None else list(best.beta), record)
    n = rows.shape[0]
    pick = torch.arange(n, device=rows.device), rows.argmin(dim=1)
    out = []
    for r in record:
        assert r is not None
        out.append(r.expand(n, -1, -1)[pick].detach())
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
        lows, ups, _, infeasible = _intermediate(net, batch, options)
    return NodeState(tuple(lows), tuple(ups), net.relu_slots), infeasible


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
