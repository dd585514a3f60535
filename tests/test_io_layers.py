"""Shared IR layers: average pooling as a convolution, per-channel maps, input normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnbver.errors import InputError
from bnbver.io.layers import avg_pool_conv, channel_affine, normalize_input
from bnbver.network import Conv2d, Dense, Network, ReLU


@pytest.mark.parametrize(("kernel", "stride", "pad"), [((2, 2), (2, 2), 0), ((3, 2), (1, 2), 1)])
def test_avg_pool_conv_matches_torch(kernel: tuple[int, int], stride: tuple[int, int],
                                     pad: int) -> None:
    x = np.random.default_rng(0).normal(size=(6, 3, 7, 6))
    conv = avg_pool_conv(kernel, stride, (pad, pad, pad, pad), (3, 7, 6))
    expected = F.avg_pool2d(torch.tensor(x), kernel, stride, pad, count_include_pad=True)
    np.testing.assert_allclose(conv.forward(x.reshape(6, -1)), expected.reshape(6, -1).numpy(),
                               rtol=1e-12, atol=1e-12)


def test_channel_affine_on_images_and_vectors() -> None:
    scale, shift = np.array([2.0, -1.0]), np.array([0.5, 3.0])
    x = np.random.default_rng(1).normal(size=(4, 2, 3, 3))
    conv = channel_affine(scale, shift, (2, 3, 3))
    assert isinstance(conv, Conv2d)
    expected = x * scale[None, :, None, None] + shift[None, :, None, None]
    np.testing.assert_allclose(conv.forward(x.reshape(4, -1)), expected.reshape(4, -1))
    dense = channel_affine(scale, shift, (2,))
    np.testing.assert_allclose(dense.forward(x[:, :, 0, 0]), x[:, :, 0, 0] * scale + shift)


def _conv_net(padding: int) -> Network:
    rng = np.random.default_rng(2)
    conv = Conv2d(rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2), (1, 1),
                  (padding,) * 4, (3, 5, 5))
    side = 5 + 2 * padding - 2
    return Network((conv, ReLU(2 * side * side),
                    Dense(rng.normal(size=(4, 2 * side * side)), rng.normal(size=4))), (3, 5, 5))


def _dag() -> Network:
    from tests.graph_cases import residual_net

    return residual_net(np.random.default_rng(0), shortcut="projection")


@pytest.mark.parametrize(("net", "front"), [
    (_conv_net(0), False), (_conv_net(1), True),
    (Network((Dense(np.arange(6.0).reshape(2, 3), np.ones(2)),), (3,)), False),
    (_dag(), True),  # a DAG gets a layer of its own in front (every reader of x sees it)
])
def test_normalize_input_is_exact(net: Network, front: bool) -> None:
    """``normalize_input(net, m, s)(x) == net((x - m) / s)``; folded into the first layer
    unless that is a padded convolution (the padding would see the shift)."""
    channels = net.input_shape[0] if len(net.input_shape) == 3 else net.input_size
    mean = np.linspace(0.1, 0.5, channels)
    std = np.linspace(0.2, 0.9, channels)
    norm = normalize_input(net, mean, std)
    assert len(norm.layers) == len(net.layers) + int(front)
    x = np.random.default_rng(3).uniform(0, 1, size=(8, net.input_size))
    per_value = np.repeat(mean, net.input_size // channels), np.repeat(std, net.input_size //
                                                                         channels)
    np.testing.assert_allclose(norm.forward(x), net.forward((x - per_value[0]) / per_value[1]),
                               rtol=1e-10, atol=1e-10)
    changed = next(la for la in norm.layers if isinstance(la, (Dense, Conv2d)))
    assert changed.weight_err > 0 and changed.bias_err is not None  # 1 / std is rounded


def test_normalize_input_rejects_bad_values() -> None:
    net = _conv_net(0)
    with pytest.raises(InputError, match="--std"):
        normalize_input(net, 0.0, [1.0, 0.0, 1.0])
    with pytest.raises(InputError, match="--mean"):
        normalize_input(net, [0.1, 0.2], 1.0)
