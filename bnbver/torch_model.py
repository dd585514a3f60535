"""A torch module that evaluates a :class:`~bnbver.network.Network` on flat inputs.

Used for falsification (PGD needs gradients) and as the forward pass of the bounds engine's
sample checks. The numpy forward in ``network.py`` stays the float64 reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnbver.network import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


class _Unflatten(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class _ConvFlat(nn.Module):
    """Conv2d on flat inputs with asymmetric padding."""

    def __init__(self, layer: Conv2d, dtype: torch.dtype, device: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(layer.weight, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.tensor(layer.bias, dtype=dtype, device=device))
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, pl, pb, pr = self.layer.padding
        h = x.reshape(x.shape[0], *self.layer.in_shape)
        h = F.pad(h, (pl, pr, pt, pb))
        h = F.conv2d(h, self.weight, self.bias, stride=self.layer.stride)
        return h.reshape(x.shape[0], -1)


class _PoolFlat(nn.Module):
    """MaxPool2d on flat inputs; padding is -inf so it never wins."""

    def __init__(self, layer: MaxPool2d) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, pl, pb, pr = self.layer.padding
        h = x.reshape(x.shape[0], *self.layer.in_shape)
        h = F.pad(h, (pl, pr, pt, pb), value=float("-inf"))
        h = F.max_pool2d(h, self.layer.kernel, self.layer.stride)
        return h.reshape(x.shape[0], -1)


def _dense(layer: Dense, dtype: torch.dtype, device: Any) -> nn.Linear:
    lin = nn.Linear(layer.in_size, layer.out_size).to(dtype=dtype, device=device)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(layer.weight, dtype=dtype))
        lin.bias.copy_(torch.tensor(layer.bias, dtype=dtype))
    return lin


class _Sum(nn.Module):
    """The sum of the inputs (a residual join)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class _Cat(nn.Module):
    """The concatenation of flat inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class GraphModule(nn.Module):
    """A DAG of modules on flat tensors: module i reads the tensors ``inputs[i]`` (``-1`` is
    the input, ``j`` the output of module j) and the last module's output is returned."""

    def __init__(self, mods: list[nn.Module], inputs: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        self.mods = nn.ModuleList(mods)
        self.inputs = inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = [x]
        for mod, ins in zip(self.mods, self.inputs, strict=True):
            vals.append(mod(*(vals[t + 1] for t in ins)))
        return vals[-1]


def _module(layer: Any, dtype: torch.dtype, device: Any) -> nn.Module:
    """Return the module of one layer (a dispatch over layer types)."""
    makers: dict[type, Any] = {
        Dense: lambda: _dense(layer, dtype, device),
        Conv2d: lambda: _ConvFlat(layer, dtype, device),
        MaxPool2d: lambda: _PoolFlat(layer),
        ReLU: nn.ReLU,
        Flatten: nn.Identity,
        Add: _Sum,
        Concat: _Cat,
    }
    return makers[type(layer)]()  # type: ignore[no-any-return]


def build_torch_module(network: Network, dtype: Any = None, device: Any = "cpu") -> nn.Module:
    """Return a module computing ``network`` on (B, n_in) tensors: an ``nn.Sequential`` for a
    chain, a :class:`GraphModule` for a DAG.

    Args:
        network: the IR network.
        dtype: torch dtype, default float64.
        device: torch device.
    """
    dtype = dtype or torch.float64
    module: nn.Module
    if network.is_chain:
        mods = [_module(layer, dtype, device) for layer in network.layers
                if not isinstance(layer, Flatten)]
        module = nn.Sequential(*mods)
    else:
        module = GraphModule([_module(layer, dtype, device) for layer in network.layers],
                             network.inputs)
    for p in module.parameters():
        p.requires_grad_(False)
    return module
