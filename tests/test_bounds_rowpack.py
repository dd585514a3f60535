"""Packed (node, row) optimisation (bnbver.bounds.rowpack): each node's own open rows only.

Properties: the packed path is taken when nodes have different open rows, and its bounds on
the open rows are the union path's (the rows decouple: each (node, row) has its own
parameters; a pair leaves the optimisation once proven), sound on sampled feasible points,
on dense, convolutional (max pooling) and residual networks; the rows a parent proved keep
its bound; NaN counts as open.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, NodeState, bound_batch, engine, prepare, rowpack
from bnbver.network import Network
from tests.bounds_cases import (
    SAMPLE_TOL,
    conv_net,
    dense_net,
    feasible_samples,
    make_batch,
    nodes_in_box,
)
from tests.graph_cases import conv_resnet

ALPHA = BoundsOptions(method="alpha", iterations=10)
BETA = BoundsOptions(method="beta", iterations=10)
ROWS = 4


def _net(kind: str, seed: int) -> Network:
    if kind == "dense":
        return dense_net(seed, 4, 8, 2, 3)
    if kind == "conv":
        return conv_net(seed)
    return conv_resnet(np.random.default_rng(seed), channels=2, size=4)


def _open_pattern(n_nodes: int, rows: int, seed: int) -> torch.Tensor:
    """Each node one or two open rows, different from node to node."""
    rng = np.random.default_rng(seed)
    open_ = np.zeros((n_nodes, rows), dtype=bool)
    for b in range(n_nodes):
        open_[b, b % rows] = True
        if rng.random() < 0.3:
            open_[b, rng.integers(rows)] = True
    return torch.as_tensor(open_)


def _bound(net_ir: Network, seed: int, share: float, n_nodes: int, n_splits: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    C, d = rng.normal(size=(ROWS, net_ir.num_outputs)), rng.normal(size=ROWS)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, n_nodes, n_splits, width=0.4)
    parent = bound_batch(net, make_batch(nodes), ALPHA)
    open_ = _open_pattern(n_nodes, ROWS, seed)
    # an open row keeps the parent's (valid) bound, at most 0; the others are "proven"
    rows = torch.where(open_, parent.row_lower.clamp(max=0.0), torch.ones_like(
        parent.row_lower))
    st_ = parent.state
    state = NodeState(st_.lower, st_.upper, st_.relu_slots, rows, st_.alpha, st_.beta)
    calls = []
    real_pack = engine.pack

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_pack(*args, **kwargs)

    with mock.patch.object(rowpack, "PACK_SHARE", share), mock.patch.object(engine, "pack",
                                                                            spy):
        res = bound_batch(net, make_batch(nodes, state), BETA)
    return res, open_, nodes, C, d, bool(calls)


@pytest.mark.parametrize("kind", ["dense", "conv", "residual"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 5))
def test_packed_rows_equal_the_union_and_hold(kind: str, seed: int, n_splits: int) -> None:
    net_ir = _net(kind, seed)
    n_nodes = 6
    packed, open_, nodes, C, d, took = _bound(net_ir, seed, rowpack.PACK_SHARE, n_nodes,
                                              n_splits)
    union, _, _, _, _, took_union = _bound(net_ir, seed, 0.0, n_nodes, n_splits)
    assert took and not took_union
    # a pair leaves the optimisation once proven (> 0), so only the open ones must agree
    got, want = packed.row_lower[open_], union.row_lower[open_]
    assert torch.equal(got > 0, want > 0)
    torch.testing.assert_close(got[want <= 0], want[want <= 0], rtol=1e-6, atol=1e-9)
    # the rows the parent proved keep its bound (the child's set lies inside the parent's)
    assert bool((packed.row_lower[~open_] >= 1.0).all())
    for b, node in enumerate(nodes):
        x = feasible_samples(net_ir, node.lo, node.hi, node.masks, node.x0, seed + b)
        if x.shape[0] == 0 or bool(packed.infeasible[b]):
            continue
        margins = net_ir.forward(x) @ C.T - d
        rows = packed.row_lower[b].numpy()
        ok = open_[b].numpy()
        assert np.all(margins[:, ok] >= rows[ok] - SAMPLE_TOL)


def test_open_pairs_pays_only_when_nodes_differ() -> None:
    t = torch.tensor
    diff = rowpack.open_pairs(t([[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]))
    assert diff is not None
    assert diff.node.tolist() == [0, 1, 2] and diff.row.tolist() == [0, 1, 2]
    assert rowpack.open_pairs(t([[-1.0, 1.0], [-1.0, 1.0]])) is None   # same row open: no gain
    assert rowpack.open_pairs(t([[1.0, 1.0], [2.0, 3.0]])) is None     # nothing open
    nan = rowpack.open_pairs(t([[float("nan"), 1.0, 1.0], [1.0, 1.0, 0.0],
                                [1.0, 1.0, 2.0]]))
    assert nan is not None and nan.node.tolist() == [0, 1] and nan.row.tolist() == [0, 2]
