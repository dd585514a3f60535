"""Convert a ``torch.nn.Sequential`` of supported modules into the :mod:`bnbver.network` IR.

Supported: ``Linear``, ``Conv2d`` (``groups = 1``, ``dilation = 1``, zero padding), ``ReLU``,
``MaxPool2d`` (``dilation = 1``, no ``ceil_mode``), ``Flatten`` (``start_dim = 1``,
``end_dim = -1``), and ``Identity``/``Dropout`` (dropped). Nested ``Sequential`` containers are
walked in order; errors name a module by its dotted index (``"2.1"`` is child 1 of child 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import torch
from torch import nn

from bnbver.errors import UnsupportedOperatorError
from bnbver.network import Conv2d, Dense, Flatten, Layer, MaxPool2d, Network, ReLU

SOURCE = "torch module"
"""The ``source`` of the errors this module raises."""


@dataclass
class _State:
    """The walk: the current activation shape (without batch) and the layers so far."""

    shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Return the number of values of the current activation."""
        return int(np.prod(self.shape))


_Handler = Callable[[_State, nn.Module, str], None]


def from_torch(module: nn.Module, input_shape: tuple[int, ...]) -> Network:
    """Convert a sequential torch model.

    Args:
        module: an ``nn.Sequential`` (possibly nested) or a single supported module.
        input_shape: the shape of one input without the batch dimension, e.g. ``(784,)`` or
            ``(3, 32, 32)``.

    Returns:
        The equivalent network on flat inputs, with float64 copies of the weights.

    Raises:
        UnsupportedOperatorError: a module type or setting has no encoding; the message names
            the module type and its index.
    """
    st = _State(tuple(int(d) for d in input_shape))
    for index, mod in _leaves(module, ""):
        handler = _HANDLERS.get(type(mod))
        if handler is None:
            _unsupported(mod, index, "unsupported module type")
        handler(st, mod, index)
    return Network(tuple(st.layers), tuple(input_shape), st.shape)


def _leaves(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """Yield (dotted index, module) for the non-Sequential modules in order."""
    if not isinstance(module, nn.Sequential):
        yield prefix or "0", module
        return
    for i, child in enumerate(module):
        yield from _leaves(child, f"{prefix}.{i}" if prefix else str(i))


def _unsupported(mod: nn.Module, index: str, what: str) -> NoReturn:
    """Raise the error naming the module type and its index."""
    raise UnsupportedOperatorError(SOURCE, f"{what} '{type(mod).__name__}' at index {index}")


def _array(t: torch.Tensor) -> np.ndarray:
    """Return a float64 numpy copy of a parameter."""
    return t.detach().cpu().to(torch.float64).numpy().copy()


def _linear(st: _State, mod: nn.Module, index: str) -> None:
    """Linear on a flat vector (or a tensor whose leading feature axes are all 1)."""
    assert isinstance(mod, nn.Linear)
    if st.shape[-1] != mod.in_features or st.size != mod.in_features:
        _unsupported(mod, index, f"input shape {st.shape} does not fit")
    bias = _array(mod.bias) if mod.bias is not None else np.zeros(mod.out_features)
    st.layers.append(Dense(_array(mod.weight), bias))
    st.shape = (*st.shape[:-1], mod.out_features)


def _conv(st: _State, mod: nn.Module, index: str) -> None:
    """Conv2d with zero padding, groups 1 and dilation 1."""
    assert isinstance(mod, nn.Conv2d)
    ok = mod.groups == 1 and tuple(mod.dilation) == (1, 1) and mod.padding_mode == "zeros"
    if not ok or len(st.shape) != 3 or st.shape[0] != mod.in_channels:
        _unsupported(mod, index, f"settings or input shape {st.shape} not supported in")
    pad = _padding(mod, index, mod.kernel_size, mod.stride)
    bias = _array(mod.bias) if mod.bias is not None else np.zeros(mod.out_channels)
    in_shape = (st.shape[0], st.shape[1], st.shape[2])
    layer = Conv2d(_array(mod.weight), bias, _pair(mod.stride), pad, in_shape)
    st.layers.append(layer)
    st.shape = layer.out_shape


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """Return an int or a pair as a pair."""
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _padding(
    mod: nn.Module, index: str, kernel: object, stride: object
) -> tuple[int, int, int, int]:
    """Return (top, left, bottom, right) for an int, pair, 'valid' or 'same' padding."""
    pad = mod.padding
    if pad == "valid":
        return (0, 0, 0, 0)
    if pad == "same":
        kh, kw = _pair(kernel)  # type: ignore[arg-type]
        # torch puts the extra cell of an even kernel at the end (stride must be 1 for 'same')
        return ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
    if isinstance(pad, str):
        _unsupported(mod, index, f"padding {pad!r} in")
    ph, pw = _pair(pad)  # type: ignore[arg-type]
    return (ph, pw, ph, pw)


def _relu(st: _State, mod: nn.Module, index: str) -> None:
    """Append a ReLU over the whole activation."""
    st.layers.append(ReLU(st.size))


def _maxpool(st: _State, mod: nn.Module, index: str) -> None:
    """MaxPool2d; torch pads with -inf, as the IR does."""
    assert isinstance(mod, nn.MaxPool2d)
    if mod.ceil_mode or mod.return_indices or _pair(mod.dilation) != (1, 1):
        _unsupported(mod, index, "ceil_mode, return_indices or dilation not supported in")
    if len(st.shape) != 3:
        _unsupported(mod, index, f"input shape {st.shape} is not (C, H, W) for")
    kernel = _pair(mod.kernel_size)
    stride = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
    ph, pw = _pair(mod.padding)
    layer = MaxPool2d(kernel, stride, (ph, pw, ph, pw), (st.shape[0], st.shape[1], st.shape[2]))
    st.layers.append(layer)
    st.shape = layer.out_shape


def _flatten(st: _State, mod: nn.Module, index: str) -> None:
    """Flatten(start_dim=1, end_dim=-1): the identity on flat vectors."""
    assert isinstance(mod, nn.Flatten)
    if mod.start_dim != 1 or mod.end_dim != -1:
        _unsupported(mod, index, "only Flatten(1, -1) is supported, not")
    if sum(d > 1 for d in st.shape) > 1:
        st.layers.append(Flatten(st.size))
    st.shape = (st.size,)


def _identity(st: _State, mod: nn.Module, index: str) -> None:
    """Identity and Dropout (evaluation) change nothing."""


_HANDLERS: dict[type, _Handler] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.ReLU: _relu,
    nn.MaxPool2d: _maxpool,
    nn.Flatten: _flatten,
    nn.Identity: _identity,
    nn.Dropout: _identity,
}
