"""Tests of bnbver.io.torch_loader (from_torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bnbver.errors import UnsupportedOperatorError
from bnbver.io.torch_loader import from_torch
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, ReLU


def torch_forward(module: nn.Module, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Evaluate module in float64 on flat inputs reshaped to (B, *shape)."""
    module = module.to(torch.float64).eval()
    with torch.no_grad():
        out = module(torch.tensor(x, dtype=torch.float64).reshape(len(x), *shape))
    return out.reshape(len(x), -1).numpy()


def test_conv_pool_dense_nested() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, padding=1),
        nn.Sequential(nn.Conv2d(4, 3, (2, 3), padding="valid"), nn.ReLU()),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(3 * 3 * 1, 7),
        nn.ReLU(),
        nn.Sequential(nn.Identity(), nn.Linear(7, 3)),
    )
    net = from_torch(model, (2, 11, 9))
    kinds = [type(layer) for layer in net.layers]
    assert kinds == [Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, Flatten, Dense, ReLU, Dense]
    x = np.random.default_rng(0).normal(size=(16, 2 * 11 * 9))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (2, 11, 9)),
                               rtol=1e-10, atol=1e-10)
    assert net.output_shape == (3,)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_and_bias_free_layers() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 2, 4, padding="same", bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2 * 5 * 6, 2, bias=False))
    net = from_torch(model, (1, 5, 6))
    x = np.random.default_rng(1).normal(size=(8, 30))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (1, 5, 6)),
                               rtol=1e-10, atol=1e-10)


def test_dense_only() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4))
    net = from_torch(model, (5,))
    assert net.relu_sizes == [8]
    x = np.random.default_rng(2).normal(size=(10, 5))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (5,)), rtol=1e-12)


def test_unsupported_module_names_type_and_index() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    with pytest.raises(UnsupportedOperatorError, match="'Tanh' at index 1"):
        from_torch(model, (3,))
    nested = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Sequential(nn.Sigmoid()))
    with pytest.raises(UnsupportedOperatorError, match="'Sigmoid' at index 2.0"):
        from_torch(nested, (3,))


def test_unsupported_settings_are_refused() -> None:
    with pytest.raises(UnsupportedOperatorError, match="'Conv2d' at index 0"):
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5))
    with pytest.raises(UnsupportedOperatorError, match="'MaxPool2d' at index 0"):
        from_torch(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5))
    with pytest.raises(UnsupportedOperatorError, match="'Linear' at index 0"):
        from_torch(nn.Sequential(nn.Linear(4, 2)), (5,))
