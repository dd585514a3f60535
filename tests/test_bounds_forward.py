"""Tests of forward symbolic intermediate bounds (bnbver.bounds.forward, intermediate="forward")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, NodeBatch, bound_batch, bound_root, ibp, prepare
from bnbver.bounds.forward import forward_bounds, supports_forward
from bnbver.network import Dense, Network, ReLU
from tests.bounds_cases import (
    Node,
    check_sound,
    conv_net,
    dense_net,
    make_batch,
    random_box,
    random_spec,
    splits_through,
)

FORWARD = BoundsOptions(method="crown", intermediate="forward")
HYBRID = BoundsOptions(method="crown", intermediate="forward-crown")
CROWN = BoundsOptions(method="crown")
HAND_TOL = 1e-9


def _nodes(net_ir: Network, seed: int, count: int, n_splits: int,
           width: float = 0.5) -> list[Node]:
    """Return ``count`` sub-boxes of one box, each split consistently with its own point."""
    lo, hi = random_box(seed, net_ir.input_size, width)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        a, b = rng.uniform(lo, hi), rng.uniform(lo, hi)
        s_lo, s_hi = np.minimum(a, b), np.maximum(a, b)
        x0 = rng.uniform(s_lo, s_hi)
        out.append(Node(s_lo, s_hi, splits_through(net_ir, x0, n_splits, seed + i), x0))
    return out


def _parent_state(net, nodes: list[Node], seed: int):  # type: ignore[no-untyped-def]
    """Return a root state over the hull of the nodes' boxes, taken once per node."""
    lo = np.min([n.lo for n in nodes], axis=0)
    hi = np.max([n.hi for n in nodes], axis=0)
    root = bound_root(net, lo, hi, CROWN)
    return root.state.take(torch.zeros(len(nodes), dtype=torch.long))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 4), n_splits=st.integers(0, 8),
       inherit=st.booleans(), hybrid=st.booleans())
def test_forward_sound_on_split_nodes(seed: int, depth: int, n_splits: int, inherit: bool,
                                      hybrid: bool) -> None:
    """Feasible samples lie within the forward intermediate bounds and final rows."""
    net_ir = dense_net(seed, 4, 10, depth, 4)
    C, d = random_spec(seed, 4, 3)
    net = prepare(net_ir, C, d)
    nodes = _nodes(net_ir, seed, 4, n_splits)
    state = _parent_state(net, nodes, seed) if inherit else None
    res = bound_batch(net, make_batch(nodes, state), HYBRID if hybrid else FORWARD)
    check_sound(net_ir, C, d, nodes, res, seed)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 6))
def test_forward_rows_alone_are_sound(seed: int, n_splits: int) -> None:
    """The forward margin bounds themselves (before the CROWN rows) hold on samples."""
    net_ir = dense_net(seed, 3, 8, 3, 3)
    C, d = random_spec(seed, 3, 2)
    net = prepare(net_ir, C, d)
    nodes = _nodes(net_ir, seed, 3, n_splits)
    batch = make_batch(nodes)
    fwd = forward_bounds(net, NodeBatch(batch.lower, batch.upper, batch.splits))
    for b, node in enumerate(nodes):
        if bool(fwd.infeasible[b]):
            continue
        x = np.concatenate([node.x0[None], np.random.default_rng(seed).uniform(
            node.lo, node.hi, (500, node.lo.shape[0]))])
        y, pre = net_ir.forward_with_preactivations(x)
        ok = np.ones(x.shape[0], dtype=bool)
        for p, m in zip(pre, node.masks, strict=True):
            ok &= ~np.any(((m > 0) & (p < 0)) | ((m < 0) & (p > 0)), axis=1)
        margins = (y @ C.T - d)[ok]
        assert np.all(margins >= fwd.row_lower[b].numpy() - 1e-7)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 6), hybrid=st.booleans())
def test_forward_never_looser_than_ibp_or_inherited(seed: int, n_splits: int,
                                                    hybrid: bool) -> None:
    """Forward bounds lie inside IBP's and inside the parent's bounds; rows too."""
    net_ir = dense_net(seed, 5, 12, 3, 4)
    net = prepare(net_ir, *random_spec(seed, 4, 3))
    nodes = _nodes(net_ir, seed, 4, n_splits)
    state = _parent_state(net, nodes, seed)
    batch = make_batch(nodes, state)
    res = bound_batch(net, batch, HYBRID if hybrid else FORWARD)
    splits = tuple(s.to(torch.int8) for s in batch.splits)
    plain = ibp(net, batch.lower, batch.upper, splits)
    feasible = ~res.infeasible
    for k in range(len(net.relu_sizes)):
        lo, hi = res.pre_lower[k][feasible], res.pre_upper[k][feasible]
        assert bool((lo >= plain.lower[k][feasible]).all())
        assert bool((hi <= plain.upper[k][feasible]).all())
        assert bool((lo >= state.lower[k][feasible]).all())
        assert bool((hi <= state.upper[k][feasible]).all())
    assert bool((res.row_lower >= plain.row_lower).all())
    assert bool((res.row_lower >= state.row_lower).all())  # type: ignore[operator]


def _hand_net() -> Network:
    """h = (x1 + x2, x1 - x2) -> ReLU -> g = y1 + y2 -> ReLU -> out = z."""
    return Network((Dense(np.array([[1.0, 1.0], [1.0, -1.0]]), np.zeros(2)), ReLU(2),
                    Dense(np.array([[1.0, 1.0]]), np.zeros(1)), ReLU(1),
                    Dense(np.array([[1.0]]), np.zeros(1))), (2,))


def test_hand_computed_two_neurons() -> None:
    """x in [-1, 1]^2; h1 = x1 + x2, h2 = x1 - x2 in [-2, 2] (exact, unstable).

    ReLU: z0 = max(l, min U) = -2, slope 2 / 4: U(y1) = (x1 + x2 + 2) / 2,
    U(y2) = (x1 - x2 + 2) / 2; lower slope 1 (u >= -l): L(y1) = x1 + x2, L(y2) = x1 - x2.
    g = y1 + y2: L(g) = 2 x1 (min -2), U(g) = x1 + 2 (max 3); IBP gives [0, 4], so g is in
    [0, 3]: stably active, and the forward margin bound is min L(g) = -2.
    """
    net = prepare(_hand_net())
    lo, hi = torch.full((1, 2), -1.0, dtype=torch.float64), torch.ones((1, 2))
    splits = (torch.zeros((1, 2), dtype=torch.int8), torch.zeros((1, 1), dtype=torch.int8))
    fwd = forward_bounds(net, NodeBatch(lo, hi.double(), splits))
    torch.testing.assert_close(fwd.lower[0], torch.tensor([[-2.0, -2.0]], dtype=torch.float64),
                               atol=HAND_TOL, rtol=0)
    torch.testing.assert_close(fwd.upper[0], torch.tensor([[2.0, 2.0]], dtype=torch.float64),
                               atol=HAND_TOL, rtol=0)
    assert abs(float(fwd.lower[1]) - 0.0) < HAND_TOL
    assert abs(float(fwd.upper[1]) - 3.0) < HAND_TOL
    assert float(fwd.upper[1]) >= 3.0
    assert abs(float(fwd.row_lower) + 2.0) < HAND_TOL
    assert float(fwd.row_lower) <= -2.0
    res = bound_batch(net, NodeBatch(lo, hi.double(), splits), FORWARD)
    assert abs(float(res.row_lower) - 0.0) < HAND_TOL  # IBP's 0 beats forward's -2


def test_hand_computed_split_states() -> None:
    """With h2 split inactive (y2 = 0): U(g) = U(y1) = (x1 + x2 + 2) / 2, max 2.

    With h1 split active (y1 = h1 exactly): L(g) = x1 + x2 + L(y2) = 2 x1, U(g) = x1 + x2 +
    U(y2) = 1.5 x1 + 0.5 x2 + 1, max 3.
    """
    net = prepare(_hand_net())
    lo, hi = torch.full((1, 2), -1.0, dtype=torch.float64), torch.ones((1, 2), dtype=torch.float64)
    inactive = (torch.tensor([[0, -1]], dtype=torch.int8), torch.zeros((1, 1), dtype=torch.int8))
    fwd = forward_bounds(net, NodeBatch(lo, hi, inactive))
    assert abs(float(fwd.upper[1]) - 2.0) < HAND_TOL
    assert float(fwd.upper[0][0, 1]) <= 0.0
    active = (torch.tensor([[1, 0]], dtype=torch.int8), torch.zeros((1, 1), dtype=torch.int8))
    fwd = forward_bounds(net, NodeBatch(lo, hi, active))
    assert float(fwd.lower[0][0, 0]) >= 0.0
    assert abs(float(fwd.upper[1]) - 3.0) < HAND_TOL


def test_float32_forward_sound_with_large_offsets() -> None:
    """float32 forward bounds hold on tiny boxes far from 0, where rounding dominates."""
    net_ir = dense_net(5, 4, 16, 4, 3)
    C, d = random_spec(5, 3, 3)
    opts = BoundsOptions(method="crown", intermediate="forward", dtype=torch.float32)
    net = prepare(net_ir, C, d, opts)
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(64, 4)) * 30
    nodes = [Node(c - 1e-4, c + 1e-4, [np.zeros(n, dtype=np.int8) for n in net.relu_sizes], c)
             for c in centers]
    res = bound_batch(net, make_batch(nodes), opts)
    assert res.row_lower.dtype == torch.float32
    check_sound(net_ir, C, d, nodes, res, 5)


def test_float32_forward_sound_on_split_nodes() -> None:
    """float32 forward bounds of split nodes hold on float64 samples and track float64."""
    net_ir = dense_net(3, 5, 16, 3, 4)
    C, d = random_spec(3, 4, 3)
    nodes = _nodes(net_ir, 3, 6, 4)
    opts32 = BoundsOptions(method="crown", intermediate="forward", dtype=torch.float32)
    res32 = bound_batch(prepare(net_ir, C, d, opts32), make_batch(nodes), opts32)
    res64 = bound_batch(prepare(net_ir, C, d), make_batch(nodes), FORWARD)
    check_sound(net_ir, C, d, nodes, res32, 3)
    torch.testing.assert_close(res32.row_lower.double(), res64.row_lower, atol=1e-2, rtol=1e-3)


def test_forward_through_conv_and_pool_fallback() -> None:
    """Convolutions go forward (sound); a max pool falls back to exactly the CROWN path."""
    plain = conv_net(0, pool=False)
    C, d = random_spec(0, plain.num_outputs, 2)
    net = prepare(plain, C, d)
    assert supports_forward(net)
    nodes = _nodes(plain, 0, 2, 2, width=0.3)
    check_sound(plain, C, d, nodes, bound_batch(net, make_batch(nodes), FORWARD), 0)
    pooled = conv_net(1)
    net_p = prepare(pooled, C, d)
    assert not supports_forward(net_p)
    nodes = _nodes(pooled, 1, 2, 2, width=0.3)
    res_f = bound_batch(net_p, make_batch(nodes), FORWARD)
    res_c = bound_batch(net_p, make_batch(nodes), BoundsOptions(method="crown",
                                                                 intermediate="crown"))
    assert torch.equal(res_f.row_lower, res_c.row_lower)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smaller_box_never_looser_with_inherited(seed: int) -> None:
    """A child box's forward bounds (inheriting the parent's) never loosen the parent's."""
    net_ir = dense_net(seed, 3, 10, 3, 2)
    net = prepare(net_ir, *random_spec(seed, 2, 2))
    lo, hi = random_box(seed, 3, 0.5)
    zeros = tuple(torch.zeros((1, n), dtype=torch.int8) for n in net.relu_sizes)
    parent = bound_batch(net, NodeBatch(torch.tensor(lo[None]), torch.tensor(hi[None]), zeros),
                         FORWARD)
    mid = (lo + hi) / 2
    child = bound_batch(net, NodeBatch(torch.tensor(lo[None]), torch.tensor(mid[None]), zeros,
                                       parent.state), FORWARD)
    for p_lo, p_hi, c_lo, c_hi in zip(parent.pre_lower, parent.pre_upper, child.pre_lower,
                                      child.pre_upper, strict=True):
        assert bool((c_lo >= p_lo).all() and (c_hi <= p_hi).all())
    assert bool((child.row_lower >= parent.row_lower).all())
