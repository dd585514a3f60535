"""Which margin rows an optimisation carries (bnbver.bounds.rowpack): each node's own.

Properties: packed pairs are chosen when nodes have different open rows, the union's
columns when they share them, and both give the open rows the bounds of optimising every
row of every node (the rows decouple: each (node, row) has its own parameters; a pair
leaves the optimisation once proven); the bounds hold on sampled feasible points, on dense,
convolutional (max pooling) and residual networks; the rows a parent proved keep its bound;
NaN counts as open.
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


def _open_pattern(n_nodes: int, rows: int, seed: int, shared: bool) -> torch.Tensor:
    """Each node one or two open rows, different from node to node; ``shared``: rows 0 and 1
    open in every node (the union's columns are then the cheaper selection)."""
    rng = np.random.default_rng(seed)
    open_ = np.zeros((n_nodes, rows), dtype=bool)
    if shared:
        open_[:, :2] = True
        return torch.as_tensor(open_)
    for b in range(n_nodes):
        open_[b, b % rows] = True
        if rng.random() < 0.3:
            open_[b, rng.integers(rows)] = True
    return torch.as_tensor(open_)


def _bound(net_ir: Network, seed: int, select: bool, shared: bool, n_nodes: int,  # type: ignore[no-untyped-def]
           n_splits: int):
    """Bound children whose parents proved some rows; ``select``: as the engine chooses,
    else every row of every node. Returns the result, the open pattern, the nodes, the
    specification and the selection class that packed the problem (None: none)."""
    rng = np.random.default_rng(seed)
    C, d = rng.normal(size=(ROWS, net_ir.num_outputs)), rng.normal(size=ROWS)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, n_nodes, n_splits, width=0.4)
    parent = bound_batch(net, make_batch(nodes), ALPHA)
    open_ = _open_pattern(n_nodes, ROWS, seed, shared)
    # an open row keeps the parent's (valid) bound, at most 0; the others are "proven"
    rows = torch.where(open_, parent.row_lower.clamp(max=0.0), torch.ones_like(
        parent.row_lower))
    st_ = parent.state
    state = NodeState(st_.lower, st_.upper, st_.relu_slots, rows, st_.alpha, st_.beta)
    used: list[type] = []
    real = rowpack.open_rows

    def spy(parent_rows):  # type: ignore[no-untyped-def]
        sel = real(parent_rows) if select else None
        used.append(type(sel))
        return sel

    with mock.patch.object(engine, "open_rows", spy):
        res = bound_batch(net, make_batch(nodes, state), BETA)
    return res, open_, nodes, C, d, used[0]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("kind", ["dense", "conv", "residual"])
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 5))
def test_selected_rows_equal_all_rows_and_hold(kind: str, shared: bool, seed: int,
                                               n_splits: int) -> None:
    """Packed pairs (rows differ by node) and the union's columns (rows shared) give the
    open rows the bounds of optimising every row of every node."""
    net_ir = _net(kind, seed)
    n_nodes = 6
    packed, open_, nodes, C, d, used = _bound(net_ir, seed, True, shared, n_nodes, n_splits)
    full, _, _, _, _, _ = _bound(net_ir, seed, False, shared, n_nodes, n_splits)
    assert used is (rowpack.Columns if shared else rowpack.Pairs)
    # a pair leaves the optimisation once proven (> 0), so only the open ones must agree
    got, want = packed.row_lower[open_], full.row_lower[open_]
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


def test_open_rows_packs_pairs_only_when_nodes_differ() -> None:
    t = torch.tensor
    diff = rowpack.open_rows(t([[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]))
    assert isinstance(diff, rowpack.Pairs)
    assert diff.node.tolist() == [0, 1, 2] and diff.row.tolist() == [0, 1, 2]
    same = rowpack.open_rows(t([[-1.0, 1.0], [-1.0, 1.0]]))   # same row open: no gain
    assert isinstance(same, rowpack.Columns) and same.rows.tolist() == [0]
    assert rowpack.open_rows(t([[-1.0, -1.0], [-1.0, -1.0]])) is None  # all open: all rows
    assert rowpack.open_rows(t([[1.0, 1.0], [2.0, 3.0]])) is None      # nothing open
    nan = rowpack.open_rows(t([[float("nan"), 1.0, 1.0], [1.0, 1.0, 0.0],
                               [1.0, 1.0, 2.0]]))
    assert isinstance(nan, rowpack.Pairs)
    assert nan.node.tolist() == [0, 1] and nan.row.tolist() == [0, 2]
