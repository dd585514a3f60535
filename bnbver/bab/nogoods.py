"""Inferred cuts of a ReLU-split search (nogoods; BICCOS, Zhou et al., NeurIPS 2024).

A set S of ReLU splits is *safe* when no input of the root box whose neurons take the
phases of S violates the property. A node proven by its bound has a safe split set; so may
a subset S' of it: BICCOS drops the splits whose multiplier in the proof is zero and bounds
the subset once more, from the root, with nothing but its splits. A safe S' found so is valid
in the whole tree, which gives two rules for any other node N (none of them branches):

- N's splits contain S': N is safe (closed, method ``nogood``);
- N's splits contain S' except one split j whose neuron is free in N: a counterexample in N
  must give j's neuron the other phase, so N takes that split (an *implied split*), which
  tightens its bound at no cost. Several implied splits of one node hold together.

The store is a pair of 0/1 matrices per ReLU layer (nogoods x neurons: active and inactive
literals); matching a batch of nodes is one product per layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from bnbver.splits import Split, SplitSet


class Nogoods:
    """Safe split sets of one search (see the module docstring).

    Args:
        sizes: neurons per ReLU layer.
        capacity: the most nogoods kept (later ones are dropped: matching cost grows with
            the count).
        device: torch device of the split masks it will match.
    """

    def __init__(self, sizes: Sequence[int], capacity: int = 1024,
                 device: str | torch.device = "cpu") -> None:
        self.sizes = list(sizes)
        self.capacity = capacity
        self.device = torch.device(device)
        self.sets: list[SplitSet] = []
        self._seen: set[SplitSet] = set()
        self._pos = [torch.zeros((0, n), device=self.device) for n in self.sizes]
        self._neg = [torch.zeros((0, n), device=self.device) for n in self.sizes]
        self._len = torch.zeros(0, device=self.device)

    def __len__(self) -> int:
        return len(self.sets)

    def __contains__(self, item: object) -> bool:
        return item in self._seen

    def add(self, sets: Iterable[SplitSet]) -> int:
        """Store safe split sets (non-empty, consistent, not already kept); return how many
        were new."""
        new = [s for s in dict.fromkeys(sets)
               if len(s) and not s.is_contradictory() and s not in self._seen]
        new = new[: max(self.capacity - len(self.sets), 0)]
        if not new:
            return 0
        for k, n in enumerate(self.sizes):
            pos = torch.zeros((len(new), n), device=self.device)
            neg = torch.zeros((len(new), n), device=self.device)
            for g, s in enumerate(new):
                for sp in s:
                    if sp.layer == k:
                        (pos if sp.active else neg)[g, sp.unit] = 1.0
            self._pos[k] = torch.cat([self._pos[k], pos])
            self._neg[k] = torch.cat([self._neg[k], neg])
        self._len = torch.cat([self._len, torch.tensor([float(len(s)) for s in new],
                                                       device=self.device)])
        self.sets.extend(new)
        self._seen.update(new)
        return len(new)

    def _hits(self, masks: Sequence[Tensor]) -> Tensor:
        """Return (B, G): how many literals of each nogood each node's splits satisfy."""
        b = masks[0].shape[0] if masks else 0
        hits = torch.zeros((b, len(self.sets)), device=self.device)
        for m, pos, neg in zip(masks, self._pos, self._neg, strict=True):
            m = m.to(self.device)
            hits += (m > 0).to(pos.dtype) @ pos.T + (m < 0).to(neg.dtype) @ neg.T
        return hits

    def match(self, masks: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, Split]]]:
        """Apply the store to nodes with split masks ``masks`` (per layer (B, n_l) int8).

        Returns:
            ``(safe (B,) bool, implied)``: the nodes a nogood closes (also where nogoods
            imply both phases of a neuron), and ``(node, split)`` for every implied split
            of the others.
        """
        b = masks[0].shape[0] if masks else 0
        if not self.sets or b == 0:
            return torch.zeros(b, dtype=torch.bool), []
        hits = self._hits(masks)
        safe = (hits >= self._len).any(dim=1)
        implied: dict[tuple[int, int, int], Split] = {}
        for node, g in (hits == self._len - 1).nonzero().tolist():
            for sp in self.sets[g]:
                if int(masks[sp.layer][node, sp.unit]) == 0:
                    other = implied.setdefault((node, sp.layer, sp.unit), sp.negated())
                    if other != sp.negated():  # both phases of the neuron are safe
                        safe[node] = True
                    break
        return safe.cpu(), [(node, sp) for (node, _, _), sp in implied.items()
                            if not bool(safe[node])]


def zero_multiplier_splits(splits: SplitSet, beta: Sequence[Tensor | None] | None,
                           node: int, keep: SplitSet | None = None) -> SplitSet:
    """Return ``splits`` without the splits whose multiplier is zero in every row of the
    node's bound (``beta`` per ReLU layer (B, R, n_l) or None); ``keep`` stays."""
    kept = []
    for sp in splits:
        b = None if beta is None else beta[sp.layer]
        used = b is not None and bool((b[node, :, sp.unit] != 0).any())
        if used or (keep is not None and sp in keep.splits):
            kept.append(sp)
    return SplitSet.of(kept)
