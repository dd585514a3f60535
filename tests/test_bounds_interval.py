"""Tests of interval bound propagation and of the prepared network (bnbver.bounds.interval)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, bound_batch, ibp, prepare
from bnbver.bounds.interval import clamp_splits
from bnbver.errors import InputError
from bnbver.network import Conv2d, Dense, Flatten, Network
from tests.bounds_cases import (
    SAMPLE_TOL,
    Node,
    conv_net,
    dense_net,
    feasible_samples,
    make_batch,
    pool_first_net,
    random_box,
    random_spec,
    splits_through,
)

IBP = BoundsOptions(method="ibp")


def _ibp_of(net_ir, C, d, node: Node):
    net = prepare(net_ir, C, d, IBP)
    batch = make_batch([node])
    return ibp(net, batch.lower, batch.upper, batch.splits)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), n_splits=st.integers(0, 6))
def test_ibp_sound_on_feasible_samples(seed: int, depth: int, n_splits: int) -> None:
    """Every sampled margin and pre-activation of a split node lies inside its IBP interval."""
    net_ir = dense_net(seed, 4, 8, depth, 3)
    C, d = random_spec(seed, 3, 2)
    lo, hi = random_box(seed, 4, 0.5)
    x0 = np.random.default_rng(seed).uniform(lo, hi)
    masks = splits_through(net_ir, x0, n_splits, seed)
    res = _ibp_of(net_ir, C, d, Node(lo, hi, masks, x0))
    assert not bool(res.infeasible[0])
    x = feasible_samples(net_ir, lo, hi, masks, x0, seed)
    y, pre = net_ir.forward_with_preactivations(x)
    m = y @ C.T - d
    assert np.all(m >= res.row_lower[0].numpy() - SAMPLE_TOL)
    assert np.all(m <= res.row_upper[0].numpy() + SAMPLE_TOL)
    for k, p in enumerate(pre):
        slot = prepare(net_ir, C, d, IBP).relu_slots[k]
        assert np.all(p >= res.lower[slot][0].numpy() - SAMPLE_TOL)
        assert np.all(p <= res.upper[slot][0].numpy() + SAMPLE_TOL)


@pytest.mark.parametrize("builder", [conv_net, pool_first_net])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ibp_sound_on_conv_and_maxpool(builder, seed: int) -> None:
    """Conv (asymmetric padding, stride) and max pool intervals contain sampled outputs."""
    net_ir = builder(seed)
    C, d = random_spec(seed, net_ir.num_outputs, 2)
    lo, hi = random_box(seed, net_ir.input_size, 0.3)
    res = _ibp_of(net_ir, C, d, Node(lo, hi, [np.zeros(n, np.int8) for n in net_ir.relu_sizes],
                                     None))
    x = feasible_samples(net_ir, lo, hi, [np.zeros(n, np.int8) for n in net_ir.relu_sizes],
                         None, seed)
    m = net_ir.forward(x) @ C.T - d
    assert np.all(m >= res.row_lower[0].numpy() - SAMPLE_TOL)
    assert np.all(m <= res.row_upper[0].numpy() + SAMPLE_TOL)


@pytest.mark.parametrize("builder", [conv_net, pool_first_net])
def test_prepared_forward_and_conv_adjoint(builder) -> None:
    """The prepared ops compute C f(x) - d, and conv backward is the adjoint of conv forward."""
    net_ir = builder(3)
    C, d = random_spec(3, net_ir.num_outputs, 2)
    net = prepare(net_ir, C, d)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, net_ir.input_size))
    np.testing.assert_allclose(net.forward(torch.tensor(x)).numpy(),
                               net_ir.forward(x) @ C.T - d, atol=1e-10)
    for op in net.ops:
        if getattr(op, "conv", None) is None:
            continue
        u = torch.tensor(rng.normal(size=(3, op.in_size)))
        a = torch.tensor(rng.normal(size=(3, 2, op.out_size)))
        lhs = (a * op.linear(u).unsqueeze(1)).sum(2)
        rhs = (op.backward(a) * u.unsqueeze(1)).sum(2)
        torch.testing.assert_close(lhs, rhs)
        np.testing.assert_allclose(op.linear(u).numpy(), op.conv.forward(u.numpy())
                                   - op.conv.flat_bias(), atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(3, 8), k=st.integers(1, 4), stride=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 2)] * 4), symmetric=st.booleans(),
       seed=st.integers(0, 1000))
def test_conv_backward_is_the_adjoint_for_every_geometry(size: int, k: int, stride: int,
                                                         pads: tuple[int, ...],
                                                         symmetric: bool, seed: int) -> None:
    """``a W`` of a convolution (torch's padded transposed convolution where its shape fits,
    the padded-then-cropped one elsewhere) is the adjoint of ``W x``."""
    if symmetric:
        pads = (pads[0], pads[1], pads[0], pads[1])
    if size + pads[0] + pads[2] < k or size + pads[1] + pads[3] < k:
        return
    rng = np.random.default_rng(seed)
    conv = Conv2d(rng.normal(size=(3, 2, k, k)), rng.normal(size=3), (stride, stride), pads,
                  (2, size, size + 1))
    net_ir = Network((conv, Flatten(conv.out_size), Dense(rng.normal(size=(2, conv.out_size)),
                                                          np.zeros(2))), (2, size, size + 1))
    op = prepare(net_ir, np.eye(2), np.zeros(2)).ops[0]
    u = torch.tensor(rng.normal(size=(3, op.in_size)))
    a = torch.tensor(rng.normal(size=(3, 2, op.out_size)))
    lhs = (a * op.linear(u).unsqueeze(1)).sum(2)
    rhs = (op.backward(a) * u.unsqueeze(1)).sum(2)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_contradictory_split_is_infeasible() -> None:
    """Splitting a stably inactive neuron active closes the node; its sibling stays open."""
    net_ir = dense_net(5, 3, 6, 2, 2)
    first = net_ir.layers[0]
    bias = first.bias.copy()
    bias[0] = -100.0
    layers = (type(first)(first.weight, bias), *net_ir.layers[1:])
    net_ir = type(net_ir)(layers, net_ir.input_shape)
    C, d = random_spec(5, 2, 2)
    lo, hi = -np.ones(3), np.ones(3)
    masks_bad = [np.zeros(n, np.int8) for n in net_ir.relu_sizes]
    masks_bad[0][0] = 1
    masks_ok = [np.zeros(n, np.int8) for n in net_ir.relu_sizes]
    masks_ok[0][0] = -1
    batch = make_batch([Node(lo, hi, masks_bad, None), Node(lo, hi, masks_ok, None)])
    for method in ("ibp", "crown", "beta"):
        res = bound_batch(prepare(net_ir, C, d), batch, BoundsOptions(method=method))
        assert res.infeasible.tolist() == [True, False]
        assert bool(torch.isinf(res.row_lower[0]).all())
        assert bool(torch.isfinite(res.row_lower[1]).all())


def test_clamp_splits_does_not_touch_inputs() -> None:
    """Clamping returns new tensors with l >= 0 for active and u <= 0 for inactive neurons."""
    lo = torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64)
    hi = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    split = torch.tensor([[1, -1, 0]], dtype=torch.int8)
    new_lo, new_hi = clamp_splits(lo, hi, split)
    assert new_lo.tolist() == [[0.0, -2.0, -3.0]]
    assert new_hi.tolist() == [[1.0, 0.0, 3.0]]
    assert lo.tolist() == [[-1.0, -2.0, -3.0]] and hi.tolist() == [[1.0, 2.0, 3.0]]


def test_validation_errors_name_the_argument() -> None:
    """Bad specs, boxes, splits and options raise InputError naming the argument."""
    net_ir = dense_net(0, 3, 4, 1, 2)
    with pytest.raises(InputError, match="C"):
        prepare(net_ir, np.ones((1, 3)), np.zeros(1))
    net = prepare(net_ir, np.ones((1, 2)), np.zeros(1))
    node = Node(np.ones(3), np.zeros(3), [np.zeros(4, np.int8)], None)
    with pytest.raises(InputError, match="lower"):
        bound_batch(net, make_batch([node]))
    node = Node(np.zeros(3), np.ones(3), [np.full(4, 2, np.int8)], None)
    with pytest.raises(InputError, match="splits"):
        bound_batch(net, make_batch([node]))
    node = Node(np.zeros(3), np.ones(3), [np.zeros(4, np.int8)], None)
    with pytest.raises(InputError, match="method"):
        bound_batch(net, make_batch([node]), BoundsOptions(method="lp"))
    with pytest.raises(InputError, match="dtype"):
        bound_batch(net, make_batch([node]), BoundsOptions(dtype=torch.float32))
