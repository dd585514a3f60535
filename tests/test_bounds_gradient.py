"""Interval bounds on a margin row's input gradient (bnbver.bounds.gradient) contain the
true gradient at every feasible point of the node, found by autograd (an independent path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, bound_batch, prepare
from bnbver.bounds.gradient import gradient_bounds, supports_gradient
from tests.bounds_cases import (
    Node,
    conv_net,
    dense_net,
    feasible_samples,
    make_batch,
    nodes_in_box,
    random_spec,
)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 4), n_splits=st.integers(0, 8))
def test_true_gradient_lies_in_the_interval(seed: int, depth: int, n_splits: int) -> None:
    net_ir = dense_net(seed, 4, 10, depth, 4)
    C, d = random_spec(seed, 4, 3)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, 3, n_splits)
    batch = make_batch(nodes)
    res = bound_batch(net, batch, BoundsOptions(method="crown"))
    rows = torch.tensor([seed % 3, (seed + 1) % 3, (seed + 2) % 3])
    g_lo, g_hi = gradient_bounds(net, rows, res.state.pre_lower, res.state.pre_upper,
                                 batch.splits)
    checked = 0
    for b, node in enumerate(nodes):
        if bool(res.infeasible[b]):
            continue
        x = feasible_samples(net_ir, node.lo, node.hi, node.masks, node.x0, seed + b, n=300)
        xt = torch.tensor(x, requires_grad=True)
        (grad,) = torch.autograd.grad(net.forward(xt)[:, int(rows[b])].sum(), xt)
        tol = 1e-9 * (1 + g_hi[b].abs().max())
        assert torch.all(grad >= g_lo[b] - tol) and torch.all(grad <= g_hi[b] + tol)
        checked += x.shape[0]
    assert checked > 0 or all(bool(f) for f in res.infeasible)


def test_v_shaped_row_has_a_wide_interval_and_a_flat_secant() -> None:
    """y = relu(x) + relu(-x) = |x| on [-1, 1]: the gradient interval is [-1, 1]."""
    from bnbver.network import Dense, Network, ReLU
    net_ir = Network((Dense([[1.0], [-1.0]], [0.0, 0.0]), ReLU(2),
                      Dense([[1.0, 1.0]], [0.0])), (1,))
    net = prepare(net_ir, np.array([[1.0]]), np.array([0.0]))
    batch = make_batch([Node(np.array([-1.0]), np.array([1.0]), [np.zeros(2, dtype=np.int8)],
                             None)])
    res = bound_batch(net, batch, BoundsOptions(method="crown"))
    g_lo, g_hi = gradient_bounds(net, torch.zeros(1, dtype=torch.long),
                                 res.state.pre_lower, res.state.pre_upper, batch.splits)
    assert g_lo.item() == pytest.approx(-1.0) and g_hi.item() == pytest.approx(1.0)
    # with the first ReLU split active and the second inactive (x >= 0), it is exactly 1
    on = (torch.tensor([[1, -1]], dtype=torch.int8),)
    g_lo, g_hi = gradient_bounds(net, torch.zeros(1, dtype=torch.long),
                                 res.state.pre_lower, res.state.pre_upper, on)
    assert g_lo.item() == pytest.approx(1.0) and g_hi.item() == pytest.approx(1.0)


def test_convolutional_networks_are_refused() -> None:
    net = prepare(conv_net(0))
    assert not supports_gradient(net)
    with pytest.raises(ValueError, match="dense"):
        gradient_bounds(net, torch.zeros(1, dtype=torch.long), [], [], [])
