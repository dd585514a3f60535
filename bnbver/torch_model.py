"""A torch module that evaluates a :class:`~bnbver.network.Network` on flat inputs.

Used for falsification (PGD needs gradients) and as the forward pass of the bounds engine's
sample checks. The numpy forward in ``network.py`` stays the float64 reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


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


def build_torch_module(network: Network, dtype: Any = None, device: Any = "cpu") -> nn.Module:
    """Return an ``nn.Sequential`` computing ``network`` on (B, n_in) tensors.

    Args:
        network: the IR network.
        dtype: torch dtype, default float64.
        device: torch device.
    """
    dtype = dtype or torch.float64
    mods: list[nn.Module] = []
    for layer in network.layers:
        if isinstance(layer, Dense):
            mods.append(_dense(layer, dtype, device))
        elif isinstance(layer, Conv2d):
            mods.append(_ConvFlat(layer, dtype, device))
        elif isinstance(layer, MaxPool2d):
            mods.append(_PoolFlat(layer))
        elif isinstance(layer, ReLU):
            mods.append(nn.ReLU())
        elif isinstance(layer, Flatten):
            continue
    module = nn.Sequential(*mods)
    for p in module.parameters():
        p.requires_grad_(False)
    return module
