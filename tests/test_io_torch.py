"""Tests of bnbver.io.torch_loader (from_torch)."""

from __future__ import annotations

from pathlib import Path

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
        from_torch(nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), (2, 5, 5))
    with pytest.raises(UnsupportedOperatorError, match="'MaxPool2d' at index 0"):
        from_torch(nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5))
    with pytest.raises(UnsupportedOperatorError, match="'Linear' at index 0"):
        from_torch(nn.Sequential(nn.Linear(4, 2)), (5,))


def _randomize_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def bn_pool_model() -> nn.Sequential:
    """BatchNorm after an affine layer (folded) and after a ReLU (a layer of its own), every
    average pooling form, Dropout and Identity: what users hit at once."""
    torch.manual_seed(3)
    return _randomize_batchnorm(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AvgPool2d(2), nn.BatchNorm2d(4), nn.Dropout(0.3), nn.Identity(),
        nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(3, stride=1, padding=1),  # padding counts in the divisor (torch default)
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3),
    ), seed=3)


def test_issue_18_batchnorm_and_average_pooling_match_torch() -> None:
    model = bn_pool_model()
    net = from_torch(model, (2, 8, 8))
    assert not any(type(layer).__name__ == "AvgPool2d" for layer in net.layers)
    x = np.random.default_rng(3).normal(size=(20, 2 * 8 * 8))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (2, 8, 8)),
                               rtol=1e-9, atol=1e-9)
    # the BatchNorms right after Conv2d / Linear are folded: no extra layer for them
    assert sum(isinstance(layer, (Conv2d, Dense)) for layer in net.layers) == 2 + 2 + 2 + 2


def test_issue_18_batchnorm_and_pooling_settings_without_an_encoding() -> None:
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    with pytest.raises(UnsupportedOperatorError, match="'BatchNorm1d' at index 1"):
        from_torch(nn.Sequential(nn.Linear(3, 3), bn), (3,))
    with pytest.raises(UnsupportedOperatorError, match="'AvgPool2d' at index 0"):
        from_torch(nn.Sequential(nn.AvgPool2d(2, padding=1, count_include_pad=False)),
                   (1, 4, 4))
    with pytest.raises(UnsupportedOperatorError, match="'AdaptiveAvgPool2d' at index 0"):
        from_torch(nn.Sequential(nn.AdaptiveAvgPool2d(3)), (1, 4, 4))


def test_issue_19_custom_module_is_traced_and_unsupported_nodes_are_named() -> None:
    """A module with its own forward is read through torch.fx; an operation without an
    encoding is refused naming the traced node."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    net = from_torch(Net(), (3,))
    assert [type(layer) for layer in net.layers] == [Dense, ReLU]

    class Gate(Net):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(x))

    with pytest.raises(UnsupportedOperatorError, match="node 'sigmoid'"):
        from_torch(Gate(), (3,))


def test_issue_19_grouped_conv_matches_torch() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.ReLU(),
                          nn.Conv2d(6, 6, 3, stride=2, groups=6))
    net = from_torch(model, (4, 5, 5))
    x = np.random.default_rng(1).normal(size=(8, 100))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (4, 5, 5)), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_issue_19_resnet_through_torch_fx_matches_torch(seed: int) -> None:
    """Residual blocks with BatchNorm (folded into the convolutions, rounding recorded),
    identity and projection shortcuts, input normalisation and ``view``."""
    from tests.graph_cases import tiny_resnet

    model = tiny_resnet(seed)
    net = from_torch(model, (3, 8, 8))
    assert not net.is_chain
    assert sum(type(layer).__name__ == "Add" for layer in net.layers) == 2
    x = np.random.default_rng(seed).uniform(0, 1, size=(10, 192))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (3, 8, 8)), rtol=1e-10,
                               atol=1e-10)
    assert sum(isinstance(la, Conv2d) and la.weight_err > 0 for la in net.layers) == 5


def test_issue_19_fx_concat_and_functional_ops() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 3, 1)
            self.fc = nn.Linear(5 * 16, 2)
            self.bn = nn.BatchNorm2d(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.cat([torch.relu(self.a(x)), self.b(x) * 2.0 - 1.0], dim=1)
            h = torch.relu(self.bn(h))
            return self.fc(torch.flatten(h, 1))

    model = _randomize_batchnorm(Cat(), 4)
    net = from_torch(model, (1, 4, 4))
    assert any(type(layer).__name__ == "Concat" for layer in net.layers)
    x = np.random.default_rng(4).normal(size=(10, 16))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (1, 4, 4)), rtol=1e-10,
                               atol=1e-10)


def test_issue_18_load_torch_model_whole_or_state_dict(tmp_path: Path) -> None:
    from bnbver.errors import InputError
    from bnbver.io.torch_loader import load_torch_model

    model = bn_pool_model()
    torch.save(model, tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    (tmp_path / "factory.py").write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from tests.test_io_torch import bn_pool_model\n\n"
        "def build():\n    return bn_pool_model()\n")
    x = np.random.default_rng(4).normal(size=(5, 128))
    expected = torch_forward(model, x, (2, 8, 8))
    for loaded in (load_torch_model(tmp_path / "whole.pt"),
                   load_torch_model(tmp_path / "state.pt", f"{tmp_path / 'factory.py'}:build")):
        assert not loaded.training
        np.testing.assert_allclose(torch_forward(loaded, x, (2, 8, 8)), expected, rtol=1e-12)
    with pytest.raises(InputError, match="state dict: give --factory"):
        load_torch_model(tmp_path / "state.pt")
    with pytest.raises(InputError, match="--factory"):
        load_torch_model(tmp_path / "state.pt", "no_such_module_xyz:build")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a torch model file"):
        load_torch_model(tmp_path / "junk.pt")


def test_issue_19_torchvision_style_block_with_inplace_ops() -> None:
    """torchvision's BasicBlock writes ``out += identity`` and ``nn.ReLU(inplace=True)``; the
    stem is conv 7x7 / BatchNorm / ReLU / MaxPool, the head AdaptiveAvgPool2d + flatten."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            return self.relu(out)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 7, 2, 3, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            self.layer = nn.Sequential(Block(), Block())
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.layer(self.stem(x)))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(5)
    model = _randomize_batchnorm(Net(), 5)
    net = from_torch(model, (3, 16, 16))
    assert sum(type(layer).__name__ == "Add" for layer in net.layers) == 2
    x = np.random.default_rng(5).normal(size=(6, 3 * 16 * 16))
    np.testing.assert_allclose(net.forward(x), torch_forward(model, x, (3, 16, 16)),
                               rtol=1e-10, atol=1e-10)
