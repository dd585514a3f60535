"""How the frontier keeps a batch's engine state: alpha and beta of each node's open rows only.

A node's children optimise only the margin rows it left open (``bounds.rowpack``): a row it
proved keeps its proven bound, whatever slopes and multipliers the child starts from. Yet the
engine's state holds alpha and beta for every row of every ReLU layer, and these are most of
a node's memory (on oval21's base net, 9 rows by 3,172 neurons twice: 228 KB of a node's
about 570 KB). ``StoredState`` keeps the pairs (node, open row) alone and gives back full
states on ``take``, the proven rows' alpha and beta set to 0 (a valid lower slope and a
valid multiplier: any value there is sound, and none is read for a bound that counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds import NodeState
from bnbver.bounds.rowpack import open_mask


@dataclass(frozen=True, eq=False)
class StoredState:
    """A batch's state with alpha and beta packed to its open (node, row) pairs.

    Attributes:
        bounds: the intermediate and margin bounds of the B nodes (alpha, beta None).
        pair: (B, R) long, each open (node, row)'s position among the packed pairs, -1 for
            a proven row.
        alpha: per ReLU layer (P, n_l) the open pairs' lower slopes.
        beta: per ReLU layer (P, n_l) their split multipliers (None: all zero), or None.
    """

    bounds: NodeState
    pair: Tensor
    alpha: tuple[Tensor, ...]
    beta: tuple[Tensor | None, ...] | None

    @staticmethod
    def pack(state: NodeState) -> NodeState | StoredState:
        """Return ``state`` with alpha and beta of its proven rows dropped, or ``state``
        itself where that saves nothing (no alpha, no margin bounds, or every row open)."""
        rows = state.row_lower
        if state.alpha is None or rows is None:
            return state
        open_ = open_mask(rows)
        if bool(open_.all()):
            return state
        pair = torch.full(open_.shape, -1, dtype=torch.long, device=open_.device)
        pair[open_] = torch.arange(int(open_.sum()), device=open_.device)
        alpha = tuple(a[open_] for a in state.alpha)
        beta = None if state.beta is None else tuple(
            None if b is None else b[open_] for b in state.beta)
        return StoredState(state.without_optimizer_state(), pair, alpha, beta)

    @property
    def batch_size(self) -> int:
        return self.bounds.batch_size

    def take(self, index: Tensor) -> NodeState:
        """Return the full state of nodes ``index`` (1-D long; repeats allowed)."""
        index = torch.as_tensor(index, dtype=torch.long)
        sub = self.bounds.take(index)
        pair = self.pair.index_select(0, index.to(self.pair.device))
        open_ = pair >= 0
        where = pair[open_]
        alpha = tuple(_unpack(a, open_, where) for a in self.alpha)
        beta = None if self.beta is None else tuple(
            None if b is None else _unpack(b, open_, where) for b in self.beta)
        return NodeState(sub.lower, sub.upper, sub.relu_slots, sub.row_lower, alpha, beta)


def _unpack(packed: Tensor, open_: Tensor, where: Tensor) -> Tensor:
    """Return (k, R, n) with the packed pairs ``where`` at ``open_`` and 0 elsewhere."""
    out = packed.new_zeros((*open_.shape, packed.shape[-1]))
    out[open_] = packed.index_select(0, where)
    return out
