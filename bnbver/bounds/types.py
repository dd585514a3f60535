"""Data types of the bounds engine: options, node batches, per-node state and results.

Shapes used in this module (and throughout ``bnbver.bounds``):

- ``B``: number of BaB nodes bounded together (the batch).
- ``R``: number of specification rows (the rows of C; the margins are ``C y - d``).
- ``n_in``: flat input size; ``n_l``: size of ReLU layer l; ``n_s``: size of the input of
  nonlinear *slot* s. Slots are the ReLU and MaxPool layers of the network in order; the
  bounds of slot s are the bounds of that layer's input (for a ReLU: its pre-activation).

Every tensor is batch-first. A :class:`NodeState` is what a node passes to its children: the
bounds of every slot, its margin lower bounds and the optimised alpha/beta; ``take`` selects or
repeats nodes (``state.take(torch.tensor([0, 0, 1, 1]))`` gives two children to each of two
parents) and ``NodeState.cat`` joins the states of nodes popped from the frontier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds import rounding

METHODS = ("ibp", "crown", "alpha", "beta")
INTERMEDIATE_MODES = ("inherit", "crown", "forward", "forward-crown")
FORWARD_MODES = ("forward", "forward-crown")

# Safety margins subtracted from every computed lower bound (added to upper bounds):
# ``margin = REL * magnitude + ABS`` where ``magnitude`` is the sum of absolute values of the
# terms that made the bound. They absorb floating-point rounding so that a bound rounded the
# wrong way can turn a proof into ``unknown`` but never into a wrong ``unsat``.
MARGIN_REL_F64 = 1e-12
MARGIN_ABS_F64 = 1e-12
MARGIN_REL_F32 = 2e-5
MARGIN_ABS_F32 = 1e-6
# A node is infeasible when some pre-activation lower bound exceeds its upper bound by more
# than this (after clamping with the node's splits); the bounds are sound, so any excess is a
# proof, and the tolerance only adds caution.
INFEASIBLE_TOL_F64 = 1e-9
INFEASIBLE_TOL_F32 = 1e-5


def margins_for(dtype: torch.dtype) -> tuple[float, float, float]:
    """Return ``(rel, abs, infeasible_tol)`` safety constants for ``dtype``."""
    if dtype == torch.float64:
        return MARGIN_REL_F64, MARGIN_ABS_F64, INFEASIBLE_TOL_F64
    return MARGIN_REL_F32, MARGIN_ABS_F32, INFEASIBLE_TOL_F32


@dataclass(frozen=True)
class BoundsOptions:
    """Options of the bounds engine.

    Attributes:
        method: final-layer bound: ``"ibp"``, ``"crown"``, ``"alpha"`` (alpha-CROWN) or
            ``"beta"`` (alpha- and beta-CROWN jointly).
        iterations: gradient steps of the alpha/beta optimisation.
        lr_alpha: Adam step size of the ReLU lower slopes.
        lr_beta: Adam step size of the split multipliers.
        lr_decay: per-step multiplicative decay of both step sizes.
        intermediate: for nodes that carry a parent state, ``"inherit"`` keeps the parent's
            intermediate bounds (tightened by the splits and interval propagation) and
            ``"crown"`` also recomputes them by CROWN. Nodes without a state (the root)
            get CROWN intermediate bounds (unless method is ``"ibp"``). ``"forward"``
            computes them for every node (root included) by forward symbolic bounds
            (:mod:`bnbver.bounds.forward`; cheap for few inputs), intersected with interval
            and inherited bounds; ``"forward-crown"`` then refines by CROWN the neurons the
            forward bounds leave unstable (as tight as ``"crown"``, a little cheaper).
            Networks with max pooling fall back to ``"crown"``.
        optimize_intermediate: alpha-optimise the intermediate bounds too (the root, or any
            batch whose intermediate bounds are recomputed); costly, best for the root.
        optimize_from: with ``optimize_intermediate``, only slots from this index on are
            optimised, the earlier ones keep CROWN's bounds (a root that cannot afford
            every layer optimises the last ones, nearest the margins).
        relu_coeffs: also return, per ReLU layer, the coefficient of each ReLU output in the
            final bound of each node's worst row (one extra backward pass; for BaBSR).
        row_linear: also return each row's final linear lower bound ``(A, c)`` in terms of
            the input (input-domain clipping, ``bnbver.bounds.clip``).
        seed_beta: start beta-CROWN's zero multipliers of split neurons where the unsplit
            relaxation of the neuron puts them (``bnbver.bounds.linear.seeded_beta``), so a
            child starts at its parent's bound instead of below it.
        certify: also return the dual certificates of optimised bounds: per ReLU layer the
            pre-activation coefficients of every final row (``BoundResult.duals``) and of
            every alpha-optimised intermediate bound (``BoundResult.interm_duals``), which
            ``bnbver.check`` re-evaluates.
        device: torch device of the prepared network and every returned tensor.
        dtype: floating dtype; None means float64 on the CPU and float32 elsewhere.
    """

    method: str = "alpha"
    iterations: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    lr_decay: float = 0.98
    intermediate: str = "inherit"
    optimize_intermediate: bool = False
    optimize_from: int = 0
    relu_coeffs: bool = False
    row_linear: bool = False
    seed_beta: bool = True
    certify: bool = False
    device: str = "cpu"
    dtype: torch.dtype | None = None

    def resolved_dtype(self) -> torch.dtype:
        """Return the dtype to compute in (float64 on the CPU unless told otherwise)."""
        if self.dtype is not None:
            return self.dtype
        return torch.float64 if torch.device(self.device).type == "cpu" else torch.float32


def _take(t: Tensor | None, index: Tensor) -> Tensor | None:
    return None if t is None else t.index_select(0, index.to(t.device))


def _cat(parts: Sequence[Tensor | None], sizes: Sequence[int]) -> Tensor | None:
    """Concatenate along the batch, filling None parts (all-zero multipliers) with zeros."""
    if all(p is None for p in parts):
        return None
    ref = next(p for p in parts if p is not None)
    filled = [p if p is not None else ref.new_zeros((n, *ref.shape[1:]))
              for p, n in zip(parts, sizes, strict=True)]
    return torch.cat(filled, dim=0)


@dataclass(frozen=True, eq=False)
class NodeState:
    """What a bounded batch of nodes hands to its children (tensors detached).

    Attributes:
        lower: per slot, (B, n_s) lower bounds of the slot's input (split-clamped).
        upper: per slot, (B, n_s) upper bounds.
        relu_slots: slot index of each ReLU layer.
        row_lower: (B, R) proven lower bounds of the margins ``C y - d``, or None.
        alpha: per ReLU layer (B, R, n_l) lower slopes in [0, 1], or None.
        beta: per ReLU layer (B, R, n_l) split multipliers >= 0 (None entries: all zero), or
            None.
    """

    lower: tuple[Tensor, ...]
    upper: tuple[Tensor, ...]
    relu_slots: tuple[int, ...]
    row_lower: Tensor | None = None
    alpha: tuple[Tensor, ...] | None = None
    beta: tuple[Tensor | None, ...] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.lower[0].shape[0]) if self.lower else int(
            self.row_lower.shape[0] if self.row_lower is not None else 0)

    @property
    def pre_lower(self) -> tuple[Tensor, ...]:
        """Per ReLU layer (B, n_l) pre-activation lower bounds."""
        return tuple(self.lower[s] for s in self.relu_slots)

    @property
    def pre_upper(self) -> tuple[Tensor, ...]:
        """Per ReLU layer (B, n_l) pre-activation upper bounds."""
        return tuple(self.upper[s] for s in self.relu_slots)

    def take(self, index: Tensor) -> NodeState:
        """Return the state of nodes ``index`` (a 1-D long tensor; repeats allowed)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return NodeState(
            lower=tuple(t.index_select(0, index.to(t.device)) for t in self.lower),
            upper=tuple(t.index_select(0, index.to(t.device)) for t in self.upper),
            relu_slots=self.relu_slots,
            row_lower=_take(self.row_lower, index),
            alpha=None if self.alpha is None else tuple(
                t.index_select(0, index.to(t.device)) for t in self.alpha),
            beta=None if self.beta is None else tuple(_take(t, index) for t in self.beta),
        )

    def without_optimizer_state(self) -> NodeState:
        """Return a copy without alpha/beta (much smaller; children then start from CROWN)."""
        return NodeState(self.lower, self.upper, self.relu_slots, self.row_lower)

    def bounds_in(self, dtype: torch.dtype) -> NodeState:
        """Return the intermediate and margin bounds alone (no alpha/beta) in ``dtype``,
        rounded outwards (a float64 root's bounds handed to a float32 search)."""
        pairs = [rounding.outward(lo.double(), hi.double(), dtype)
                 for lo, hi in zip(self.lower, self.upper, strict=True)]
        lower, upper = [p[0] for p in pairs], [p[1] for p in pairs]
        rows = None
        if self.row_lower is not None:
            rows, _ = rounding.outward(self.row_lower.double(), self.row_lower.double(), dtype)
        return NodeState(tuple(lower), tuple(upper), self.relu_slots, rows)

    @staticmethod
    def cat(states: Sequence[NodeState]) -> NodeState:
        """Concatenate states along the batch; alpha/beta are dropped unless all have them."""
        if not states:
            raise ValueError("states must not be empty")
        first = states[0]
        n_slots = len(first.lower)
        rows = [s.row_lower for s in states]
        has_alpha = all(s.alpha is not None for s in states)
        has_beta = has_alpha and all(s.beta is not None for s in states)
        alpha = None
        beta = None
        if has_alpha:
            alpha = tuple(torch.cat([s.alpha[k] for s in states], 0)  # type: ignore[index]
                          for k in range(len(first.relu_slots)))
        if has_beta:
            sizes = [s.batch_size for s in states]
            beta = tuple(_cat([s.beta[k] for s in states], sizes)  # type: ignore[index]
                         for k in range(len(first.relu_slots)))
        return NodeState(
            lower=tuple(torch.cat([s.lower[i] for s in states], 0) for i in range(n_slots)),
            upper=tuple(torch.cat([s.upper[i] for s in states], 0) for i in range(n_slots)),
            relu_slots=first.relu_slots,
            row_lower=None if any(r is None for r in rows) else torch.cat(
                rows, 0),  # type: ignore[arg-type]
            alpha=alpha,
            beta=beta,
        )


@dataclass(frozen=True, eq=False)
class NodeBatch:
    """B nodes to bound in one call.

    Attributes:
        lower: (B, n_in) lower corners of the input boxes.
        upper: (B, n_in) upper corners.
        splits: per ReLU layer (B, n_l) int8: +1 active, -1 inactive, 0 free.
        state: the parents' states taken per child (``parent_state.take(parent_index)``), or
            None to compute intermediate bounds from scratch.
    """

    lower: Tensor
    upper: Tensor
    splits: tuple[Tensor, ...]
    state: NodeState | None = None

    @property
    def batch_size(self) -> int:
        return int(self.lower.shape[0])


@dataclass(frozen=True, eq=False)
class BoundResult:
    """Bounds of a batch of B nodes.

    Attributes:
        row_lower: (B, R) lower bounds of the margins ``C y - d`` (``+inf`` for infeasible
            nodes). A row is proven when its bound is > 0; a conjunctive unsafe disjunct is
            excluded when any of its rows is proven.
        candidates: (B, n_in) float64, per node the box corner minimising the final linear
            lower bound of the node's worst row (the box centre for ``method="ibp"``): a
            point to check as a counterexample.
        infeasible: (B,) bool: the node's splits contradict its box (it closes).
        state: the state to pass to the children (``result.state.take(parent_index)``).
        input_coeffs: (B, n_in) coefficients of the worst row's final linear lower bound with
            respect to the input (None for ``method="ibp"``); input-split heuristics use
            ``|coefficient| * width`` as the impact of splitting a dimension.
        relu_coeffs: per ReLU layer (B, n_l) coefficients of the ReLU outputs in the worst
            row's final bound (only with ``BoundsOptions.relu_coeffs``).
        row_linear: ``(A (B, R, n_in), c (B, R))`` float64 with ``C y - d >= A x + c`` for
            every x in the node's box (and the node's splits), one linear lower bound per
            row, safety margin included (only with ``BoundsOptions.row_linear``; None for
            ``method="ibp"``).
        own_rows: (B, R) the rows' own bounds, before the intersection with the parent's.
        duals: per ReLU layer (B, R, n_l) the pre-activation coefficients of the optimised
            final rows (``certify`` with alpha/beta only).
        interm_duals: per slot refined by alpha-CROWN, ``(slot, index (K,), lower, upper)``
            with per ReLU layer before the slot (B, K, n_l) coefficients of each neuron's
            lower and (negated) upper bound (``certify`` with ``optimize_intermediate``).
    """

    row_lower: Tensor
    candidates: Tensor
    infeasible: Tensor
    state: NodeState
    input_coeffs: Tensor | None = None
    relu_coeffs: tuple[Tensor, ...] | None = None
    row_linear: tuple[Tensor, Tensor] | None = None
    own_rows: Tensor | None = None
    duals: tuple[Tensor, ...] | None = None
    interm_duals: tuple[tuple[int, Tensor, tuple[Tensor, ...], tuple[Tensor, ...]], ...] = ()

    @property
    def pre_lower(self) -> tuple[Tensor, ...]:
        """Per ReLU layer (B, n_l) pre-activation lower bounds (split-clamped)."""
        return self.state.pre_lower

    @property
    def pre_upper(self) -> tuple[Tensor, ...]:
        """Per ReLU layer (B, n_l) pre-activation upper bounds (split-clamped)."""
        return self.state.pre_upper
