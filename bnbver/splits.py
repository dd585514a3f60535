"""ReLU split decisions and sets of them.

A *split* fixes one ReLU neuron to one of its two linear pieces: ``active`` means the
pre-activation is >= 0 and the neuron is the identity; inactive means it is <= 0 and the
neuron outputs 0. Neurons are addressed by ``(layer, unit)`` where ``layer`` counts ReLU layers
from 0 and ``unit`` is the flat index inside that layer.

A split state for a batch of B nodes is, per ReLU layer l, an int8 array of shape (B, n_l) with
+1 (active), -1 (inactive) or 0 (free); :func:`split_masks` builds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

ACTIVE = 1
INACTIVE = -1
FREE = 0


@dataclass(frozen=True, order=True)
class Split:
    """One ReLU fixed to one piece.

    Attributes:
        layer: index of the ReLU layer (0-based, counting ReLU layers only).
        unit: flat index of the neuron inside that layer.
        active: True for the identity piece (pre-activation >= 0), False for the zero piece.
    """

    layer: int
    unit: int
    active: bool

    def negated(self) -> Split:
        """Return the split on the same neuron with the other piece."""
        return Split(self.layer, self.unit, not self.active)


@dataclass(frozen=True)
class SplitSet:
    """A sorted, duplicate-free tuple of splits; contradictory pairs are allowed and detected."""

    splits: tuple[Split, ...] = ()

    @staticmethod
    def of(splits: Iterable[Split]) -> SplitSet:
        """Build a SplitSet from any iterable of splits."""
        return SplitSet(tuple(sorted(set(splits))))

    def with_split(self, split: Split) -> SplitSet:
        """Return a new set that also contains ``split``."""
        return SplitSet.of((*self.splits, split))

    def is_contradictory(self) -> bool:
        """Return True when some neuron is fixed both active and inactive."""
        seen = {(s.layer, s.unit): s.active for s in self.splits}
        return len(seen) < len(self.splits)

    def __len__(self) -> int:
        return len(self.splits)

    def __iter__(self) -> Iterator[Split]:
        return iter(self.splits)


def split_masks(
    split_sets: Sequence[SplitSet], relu_sizes: Sequence[int]
) -> list[np.ndarray]:
    """Return per-layer split states, each (B, n_l) int8 in {-1, 0, +1}.

    A neuron split both ways in one set (contradiction) is marked by the last split seen; use
    :meth:`SplitSet.is_contradictory` to detect such nodes.

    Raises:
        ValueError: a split names a layer or unit outside ``relu_sizes``.
    """
    masks = [np.zeros((len(split_sets), n), dtype=np.int8) for n in relu_sizes]
    for b, sset in enumerate(split_sets):
        for s in sset:
            if not (0 <= s.layer < len(relu_sizes) and 0 <= s.unit < relu_sizes[s.layer]):
                raise ValueError(f"split {s} outside ReLU layer sizes {list(relu_sizes)}")
            masks[s.layer][b, s.unit] = ACTIVE if s.active else INACTIVE
    return masks
