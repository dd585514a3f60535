"""Compact node data for other processes: open nodes and closed leaves as stacked arrays.

A search that shares its frontier (``bab.parallel``) sends open nodes to other processes and
gets open nodes and closed leaves back. Pickling the nodes one by one would be slow (tens of
thousands of small arrays) and wrong in size: a node's engine state is a row of the whole
batch it was bounded in (``bounding.Payload``), and pickling it would copy that batch. So a
:class:`NodePack` holds one array or tensor per field with a row per node, and the engine
state of exactly those rows; unpacking gives nodes that warm-start their children as they
would have in the process that bounded them (no bound is computed again).

Shapes: B nodes (or L leaves), ``n_in`` inputs, ``n_l`` neurons of ReLU layer l.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bnbver.bab.bounding import Payload, gather_masks, gather_states
from bnbver.bab.node import Node
from bnbver.bounds import NodeState
from bnbver.result import Leaf
from bnbver.splits import SplitSet


@dataclass(frozen=True, eq=False)
class NodePack:
    """B open, bounded nodes with their engine state (see the module docstring).

    Attributes:
        lower: (B, n_in) lower corners of the boxes.
        upper: (B, n_in) upper corners.
        splits: the nodes' split sets.
        bounds: (B,) proven lower bounds.
        depth: (B,) depths in the whole search tree.
        masks: per ReLU layer (B, n_l) int8 split states.
        state: the engine state of the B nodes.
        input_coeffs: (B, n_in) worst-row input coefficients, or None.
        relu_coeffs: per ReLU layer (B, n_l) ReLU coefficients, or None.
    """

    lower: np.ndarray
    upper: np.ndarray
    splits: tuple[SplitSet, ...]
    bounds: np.ndarray
    depth: np.ndarray
    masks: tuple[torch.Tensor, ...]
    state: NodeState
    input_coeffs: torch.Tensor | None
    relu_coeffs: tuple[torch.Tensor, ...] | None

    def __len__(self) -> int:
        return len(self.splits)


@dataclass(frozen=True, eq=False)
class LeafPack:
    """L closed leaves as arrays (``Leaf`` fields stacked)."""

    lower: np.ndarray
    upper: np.ndarray
    splits: tuple[SplitSet, ...]
    bounds: np.ndarray
    methods: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.splits)


def pack_nodes(nodes: Sequence[Node]) -> NodePack:
    """Pack open nodes (each with a ``Payload`` state) into contiguous arrays.

    Raises:
        ValueError: ``nodes`` is empty.
    """
    if not nodes:
        raise ValueError("nodes must not be empty")
    payloads: list[Payload] = [n.state for n in nodes]
    coeffs = [p.input_coeffs for p in payloads]
    lams = [p.relu_coeffs for p in payloads]
    relu = None
    if all(c is not None for c in lams):
        relu = tuple(torch.cat([c[k] for c in lams], 0)  # type: ignore[index]
                     for k in range(len(payloads[0].batch_masks)))
    return NodePack(
        np.stack([n.lower for n in nodes]), np.stack([n.upper for n in nodes]),
        tuple(n.splits for n in nodes), np.array([n.lower_bound for n in nodes]),
        np.array([n.depth for n in nodes], dtype=np.int64), gather_masks(payloads),
        gather_states(payloads),
        None if any(c is None for c in coeffs) else torch.cat(coeffs, 0),  # type: ignore[arg-type]
        relu)


def unpack_nodes(pack: NodePack) -> list[Node]:
    """Return the packed nodes (ids 0..B-1, no parents) ready to push on a frontier."""
    out = []
    for b in range(len(pack)):
        coeffs = None if pack.input_coeffs is None else pack.input_coeffs[b:b + 1]
        relu = None if pack.relu_coeffs is None else tuple(r[b:b + 1] for r in pack.relu_coeffs)
        payload = Payload(pack.masks, pack.state, b, coeffs, relu)
        out.append(Node(pack.lower[b], pack.upper[b], pack.splits[b], float(pack.bounds[b]),
                        int(pack.depth[b]), payload, node_id=b))
    return out


def deal(nodes: Sequence[Node], k: int) -> list[list[Node]]:
    """Split ``nodes`` into at most ``k`` non-empty groups of alike bounds.

    The nodes are dealt round-robin in order of their bound, so every group gets a share of
    the hardest (lowest bound) nodes and of the easy ones.
    """
    ordered = sorted(nodes, key=lambda n: n.lower_bound)
    return [g for g in (ordered[i::k] for i in range(k)) if g]


def pack_leaves(leaves: Sequence[Leaf]) -> LeafPack:
    """Pack closed leaves (of one property: ``property_index`` is not kept)."""
    n = leaves[0].lower.size if leaves else 0
    return LeafPack(
        np.stack([f.lower for f in leaves]) if leaves else np.zeros((0, n)),
        np.stack([f.upper for f in leaves]) if leaves else np.zeros((0, n)),
        tuple(f.splits for f in leaves), np.array([f.bound for f in leaves], dtype=float),
        tuple(f.method for f in leaves))


def unpack_leaves(pack: LeafPack) -> list[Leaf]:
    """Return the packed leaves."""
    return [Leaf(pack.lower[i], pack.upper[i], pack.splits[i], float(pack.bounds[i]),
                 pack.methods[i]) for i in range(len(pack))]
