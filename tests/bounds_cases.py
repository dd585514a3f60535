"""Shared cases for the bounds-engine tests: random networks, nodes and feasible samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bnbver.bounds import BoundResult, NodeBatch
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from tests.conftest import random_relu_net

# Sampled values may exceed a bound by this much (float64 rounding of the forward pass).
SAMPLE_TOL = 1e-7


def dense_net(seed: int, n_in: int, width: int, depth: int, n_out: int) -> Network:
    """Return a random fully connected ReLU network."""
    rng = np.random.default_rng(seed)
    return random_relu_net(rng, [n_in] + [width] * depth + [n_out])


def conv_net(seed: int, pool: bool = True) -> Network:
    """Return a small conv net: conv (stride 2 / asymmetric padding) -> ReLU -> pool -> dense."""
    rng = np.random.default_rng(seed)
    c1 = Conv2d(rng.normal(size=(3, 2, 3, 3)) * 0.5, rng.normal(size=3) * 0.1, (1, 1),
                (1, 0, 0, 1), (2, 6, 6))
    layers: list = [c1, ReLU(c1.out_size)]
    shape = c1.out_shape
    if pool:
        p = MaxPool2d((2, 2), (2, 2), (0, 0, 1, 1), shape)
        layers.append(p)
        shape = p.out_shape
    c2 = Conv2d(rng.normal(size=(4, shape[0], 2, 2)) * 0.5, rng.normal(size=4) * 0.1, (2, 1),
                (1, 1, 1, 1), shape)
    n = c2.out_size
    layers += [c2, ReLU(n), Flatten(n), Dense(rng.normal(size=(8, n)) / np.sqrt(n),
                                              rng.normal(size=8) * 0.1),
               ReLU(8), Dense(rng.normal(size=(3, 8)) / np.sqrt(8), rng.normal(size=3) * 0.1)]
    return Network(tuple(layers), (2, 6, 6))


def pool_first_net(seed: int) -> Network:
    """Return a net whose max pool reads an affine output directly (and overlaps windows)."""
    rng = np.random.default_rng(seed)
    c1 = Conv2d(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.1, (1, 1), (0, 0, 0, 0),
                (1, 5, 5))
    p = MaxPool2d((3, 3), (1, 1), (1, 1, 1, 1), c1.out_shape)
    d1 = Dense(rng.normal(size=(6, p.out_size)) / 4, rng.normal(size=6) * 0.1)
    return Network((c1, p, Flatten(p.out_size), d1, ReLU(6),
                    Dense(rng.normal(size=(2, 6)), np.zeros(2))), (1, 5, 5))


def random_spec(seed: int, m: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a random specification (C (rows, m), d (rows,))."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, m)), rng.normal(size=rows)


def random_box(seed: int, n: int, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Return a random box (lower, upper), each (n,)."""
    rng = np.random.default_rng(seed)
    center = rng.normal(size=n) * 0.5
    radius = rng.uniform(0.1, 1.0, size=n) * width
    return center - radius, center + radius


def splits_through(network: Network, x0: np.ndarray, count: int,
                   seed: int) -> list[np.ndarray]:
    """Return split states (per ReLU layer (n_l,) int8) consistent with the point x0."""
    rng = np.random.default_rng(seed)
    _, pre = network.forward_with_preactivations(x0)
    masks = [np.zeros(p.shape[0], dtype=np.int8) for p in pre]
    total = sum(m.shape[0] for m in masks)
    for flat in rng.choice(total, size=min(count, total), replace=False):
        layer = 0
        while flat >= masks[layer].shape[0]:
            flat -= masks[layer].shape[0]
            layer += 1
        masks[layer][flat] = 1 if pre[layer][flat] >= 0 else -1
    return masks


def feasible_samples(network: Network, lo: np.ndarray, hi: np.ndarray,
                     masks: list[np.ndarray], x0: np.ndarray | None, seed: int,
                     n: int = 2000) -> np.ndarray:
    """Return points of the box that satisfy the splits ``masks`` (rejection sampling)."""
    rng = np.random.default_rng(seed)
    pts = [rng.uniform(lo, hi, size=(n, lo.shape[0]))]
    corners = np.where(rng.random((n // 4, lo.shape[0])) < 0.5, lo, hi)
    pts.append(corners)
    if x0 is not None:
        noise = rng.normal(size=(n, lo.shape[0])) * (hi - lo) * rng.uniform(0, 0.2, (n, 1))
        pts += [x0[None], np.clip(x0 + noise, lo, hi)]
    x = np.concatenate(pts)
    _, pre = network.forward_with_preactivations(x)
    keep = np.ones(x.shape[0], dtype=bool)
    for p, m in zip(pre, masks, strict=True):
        keep &= ~np.any(((m > 0) & (p < 0)) | ((m < 0) & (p > 0)), axis=1)
    return x[keep]


@dataclass(frozen=True)
class Node:
    """One test node: box, split masks and a point known to be feasible."""

    lo: np.ndarray
    hi: np.ndarray
    masks: list[np.ndarray]
    x0: np.ndarray | None


def make_batch(nodes: list[Node], state=None) -> NodeBatch:
    """Return a NodeBatch of the given nodes."""
    lo = torch.tensor(np.stack([n.lo for n in nodes]))
    hi = torch.tensor(np.stack([n.hi for n in nodes]))
    splits = tuple(torch.tensor(np.stack([n.masks[k] for n in nodes]))
                   for k in range(len(nodes[0].masks)))
    return NodeBatch(lo, hi, splits, state)


def check_sound(network: Network, C: np.ndarray, d: np.ndarray, nodes: list[Node],
                res: BoundResult, seed: int) -> int:
    """Assert the bounds of every node hold on its feasible samples; return the sample count."""
    total = 0
    for b, node in enumerate(nodes):
        cand = res.candidates[b].double().cpu().numpy()
        assert np.all(cand >= node.lo) and np.all(cand <= node.hi)
        x = feasible_samples(network, node.lo, node.hi, node.masks, node.x0, seed + b)
        x = np.concatenate([x, feasible_samples(network, cand, cand, node.masks, None, 0, 1)])
        if bool(res.infeasible[b]):
            assert x.shape[0] == 0, "a node with feasible points was flagged infeasible"
            continue
        y, pre = network.forward_with_preactivations(x)
        margins = y @ C.T - d
        rows = res.row_lower[b].double().cpu().numpy()
        assert np.all(margins >= rows - SAMPLE_TOL), (margins.min(0), rows)
        for k, p in enumerate(pre):
            assert np.all(p >= res.pre_lower[k][b].double().cpu().numpy() - SAMPLE_TOL)
            assert np.all(p <= res.pre_upper[k][b].double().cpu().numpy() + SAMPLE_TOL)
        total += x.shape[0]
    return total


def nodes_in_box(net_ir: Network, seed: int, count: int, n_splits: int,
                 width: float = 0.5) -> list[Node]:
    """Return ``count`` nodes in one box, each split consistently with its own point."""
    lo, hi = random_box(seed, net_ir.input_size, width)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        x0 = rng.uniform(lo, hi)
        out.append(Node(lo, hi, splits_through(net_ir, x0, n_splits, seed + i), x0))
    return out
