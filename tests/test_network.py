"""The IR: exact forward passes, torch agreement, conv/pool layers against torch, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnbver.errors import InputError
from bnbver.network import Add, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from tests.conftest import random_relu_net


def test_dense_forward_hand_computed() -> None:
    """y = relu([[1,-1],[2,0]] x + [0,-1]); x = (1, 2) -> pre (-1, 1) -> (0, 1) -> 0 + 1 = 1."""
    net = Network((Dense([[1.0, -1.0], [2.0, 0.0]], [0.0, -1.0]), ReLU(2),
                   Dense([[1.0, 1.0]], [0.0])), (2,))
    y, pre = net.forward_with_preactivations(np.array([1.0, 2.0]))
    assert y.tolist() == [1.0]
    assert pre[0].tolist() == [-1.0, 1.0]
    assert net.relu_sizes == [2]


def test_conv_and_pool_match_torch() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3))
    conv = Conv2d(w, rng.normal(size=4), (2, 1), (1, 0, 1, 2), (3, 7, 6))
    pool = MaxPool2d((2, 2), (2, 2), (0, 0, 0, 0), conv.out_shape)
    net = Network((conv, ReLU(conv.out_size), pool, Flatten(pool.out_size),
                   Dense(rng.normal(size=(3, pool.out_size)), np.zeros(3))), (3, 7, 6))
    x = rng.normal(size=(5, 3 * 7 * 6))
    xt = torch.as_tensor(x).reshape(5, 3, 7, 6)
    ref = F.conv2d(F.pad(xt, (0, 2, 1, 1)), torch.as_tensor(w), torch.tensor(conv.bias),
                   stride=(2, 1))
    ref = F.max_pool2d(F.relu(ref), 2, 2).reshape(5, -1) @ torch.tensor(
        net.layers[-1].weight).T
    np.testing.assert_allclose(net.forward(x), ref.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.to_torch()(torch.as_tensor(x)).numpy(), ref.numpy(),
                               rtol=1e-12, atol=1e-12)


def test_conv_backward_is_transpose() -> None:
    rng = np.random.default_rng(1)
    conv = Conv2d(rng.normal(size=(2, 1, 2, 2)), np.zeros(2), (1, 1), (0, 0, 0, 0), (1, 3, 3))
    a = rng.normal(size=(4, conv.out_size))
    x = rng.normal(size=(conv.in_size,))
    # <a, W x> == <a W, x>
    np.testing.assert_allclose(a @ (conv.forward(x[None])[0] - conv.flat_bias()),
                               conv.backward(a) @ x, rtol=1e-12)


def test_torch_matches_numpy_on_random_nets() -> None:
    rng = np.random.default_rng(2)
    net = random_relu_net(rng, [5, 20, 20, 3])
    x = rng.normal(size=(50, 5))
    np.testing.assert_allclose(net.to_torch()(torch.as_tensor(x)).numpy(), net.forward(x),
                               rtol=1e-12, atol=1e-12)


def test_nan_weights_rejected() -> None:
    with pytest.raises(InputError, match="NaN"):
        Network((Dense([[np.nan]], [0.0]),), (1,))


def test_size_mismatch_rejected() -> None:
    with pytest.raises(InputError, match="expects 3 inputs"):
        Network((Dense(np.ones((2, 3)), np.zeros(2)),), (4,))


# ---------------------------------------------------------------------------------------------
# DAGs (issue 19)


def _dag() -> Network:
    from tests.graph_cases import residual_net

    return residual_net(np.random.default_rng(0), n_in=3, width=4, blocks=2,
                        shortcut="projection")


def test_issue_19_dag_forward_torch_and_enclosures_agree() -> None:
    import torch

    net = _dag()
    assert not net.is_chain and net.relu_sizes == [4, 4, 4, 4, 4]
    x = np.random.default_rng(1).normal(size=(20, 3))
    y, pre = net.forward_with_preactivations(x)
    assert len(pre) == 5
    with torch.no_grad():
        np.testing.assert_allclose(net.to_torch()(torch.tensor(x)).numpy(), y, atol=1e-12)
    for xi, yi in zip(x[:3], y[:3], strict=True):
        exact = net.forward_exact(xi)
        assert exact is not None
        centre, err = net.forward_enclosure(xi)
        np.testing.assert_allclose(centre, yi, rtol=1e-12)
        assert np.all(np.abs(np.array([float(v) for v in exact]) - centre) <= err + 1e-300)


def test_issue_19_dag_validation_names_the_layer() -> None:
    d = Dense(np.ones((2, 2)), np.zeros(2))
    with pytest.raises(InputError, match="layer 1.*reads tensors \\[1\\]"):
        Network((d, ReLU(2)), (2,), inputs=((-1,), (1,)))
    with pytest.raises(InputError, match="layer 1.*Add cannot read 1 tensors"):
        Network((d, Add(2)), (2,), inputs=((-1,), (0,)))
    with pytest.raises(InputError, match="layer 2.*expects \\[2, 2\\] inputs, gets \\[2, 3\\]"):
        Network((d, Dense(np.ones((3, 2)), np.zeros(3)), Add(2)), (2,),
                inputs=((-1,), (-1,), (0, 1)))
    with pytest.raises(InputError, match="needs one entry per layer"):
        Network((d,), (2,), inputs=((-1,), (0,)))


def test_issue_19_relu_input_prefix_and_consumers() -> None:
    net = _dag()
    readers = net.consumers()
    assert readers[1 + 1] == [2, 5]  # the first ReLU's output: the block and its projection
    for k in range(len(net.relu_sizes)):
        prefix = net.relu_input_prefix(k)
        assert prefix.relu_sizes == net.relu_sizes[:k]
        x = np.random.default_rng(k).normal(size=(5, 3))
        _, pre = net.forward_with_preactivations(x)
        np.testing.assert_allclose(prefix.forward(x), pre[k], atol=1e-12)
