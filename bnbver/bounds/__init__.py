"""The bounds engine: batched IBP, CROWN, alpha-CROWN and beta-CROWN in torch.

Public API::

    net = prepare(network, C, d, options)          # BoundedNetwork; margins C y - d folded in
    root = bound_root(net, lower, upper, options)  # BoundResult with B = 1
    # children: one row per child, its parent's state taken per child
    batch = NodeBatch(lower (B, n_in), upper (B, n_in), splits (per ReLU layer (B, n_l) int8),
                      state=parent_result.state.take(parent_index))   # or NodeState.cat(...)
    res = bound_batch(net, batch, options)
    res.row_lower     # (B, R) lower bounds of C y - d; a row is proven when > 0; +inf if infeasible
    res.infeasible    # (B,) bool: the splits contradict the box (the node closes)
    res.candidates    # (B, n_in) a corner of the box to forward-check as a counterexample
    res.pre_lower, res.pre_upper  # per ReLU layer (B, n_l), split-clamped
    res.state         # NodeState for the children (.take(index), NodeState.cat(states))

``BoundsOptions(method="ibp" | "crown" | "alpha" | "beta", iterations, lr_alpha, lr_beta,
lr_decay, intermediate="inherit" | "crown" | "forward" | "forward-crown",
optimize_intermediate, device, dtype)``. Children inherit the parent's intermediate bounds
(tightened by their splits and by interval propagation; ``intermediate="crown"`` recomputes
them by CROWN, ``"forward"`` by forward symbolic bounds, the cheap choice for input splitting
on few inputs, and ``"forward-crown"`` by both), their margin bounds are re-bounded and
intersected with the parent's, and alpha/beta are warm-started from the parent's. Also:
:func:`ibp` (pure interval bounds), :func:`intermediate_bounds` (a batch
without inherited bounds) and :func:`stable_neurons` (which neurons are fixed, for branching).

The relaxation math lives in the module docstrings of :mod:`~bnbver.bounds.interval`,
:mod:`~bnbver.bounds.linear`, :mod:`~bnbver.bounds.forward` and
:mod:`~bnbver.bounds.optimize`; shapes are explained in :mod:`~bnbver.bounds.types`.
"""

from bnbver.bounds.engine import (
    bound_batch,
    bound_root,
    intermediate_bounds,
    splits_from_numpy,
    stable_neurons,
)
from bnbver.bounds.interval import IntervalBounds, ibp
from bnbver.bounds.prepared import BoundedNetwork, prepare
from bnbver.bounds.types import BoundResult, BoundsOptions, NodeBatch, NodeState

__all__ = [
    "BoundResult",
    "BoundedNetwork",
    "BoundsOptions",
    "IntervalBounds",
    "NodeBatch",
    "NodeState",
    "bound_batch",
    "bound_root",
    "ibp",
    "intermediate_bounds",
    "prepare",
    "splits_from_numpy",
    "stable_neurons",
]
