"""Convert a torch model into the :mod:`bnbver.network` IR.

An ``nn.Sequential`` (or one supported module) is walked in order, one handler per module type.
Supported: ``Linear``, ``Conv2d`` (any ``groups``: a grouped convolution becomes one Conv2d
with a block-diagonal weight; ``dilation = 1``, zero padding), ``ReLU``, ``MaxPool2d``
(``dilation = 1``, no ``ceil_mode``), ``AvgPool2d`` (no ``ceil_mode``; with padding only when it
counts in the divisor) and ``AdaptiveAvgPool2d`` (output sizes dividing the input) as a
:class:`Conv2d` with fixed weights, ``BatchNorm1d``/``BatchNorm2d`` (inference: running
statistics) folded into the affine layer just before them, or else a per-channel layer (its
float64 rounding recorded in the layer's error fields), ``Flatten`` (``start_dim = 1``,
``end_dim = -1``), and ``Identity``/``Dropout`` (dropped). Nested ``Sequential`` containers
are walked in order; errors name a module by its dotted index (``"2.1"`` is child 1 of child
2). A model with a custom module (its own ``forward``: a ResNet block, say) anywhere is read
through ``torch.fx`` instead (:mod:`bnbver.io.torch_fx`), which supports residual sums and
concatenations too.

:func:`load_torch_model` reads a module saved whole (``torch.save(model)``) or a state dict
with a factory function that builds the module.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from bnbver.errors import InputError, UnsupportedOperatorError
from bnbver.io.layers import (
    ElementwiseMap,
    avg_pool_conv,
    batchnorm_map,
    channel_map_layer,
    fold_map_after,
    grouped_conv_weight,
)
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
    """Convert a torch model: a Sequential chain, or any module through ``torch.fx``.

    Args:
        module: an ``nn.Sequential`` (possibly nested), a single supported module, or a
            module with its own ``forward`` (a residual network, say), which is traced by
            ``torch.fx`` (:mod:`bnbver.io.torch_fx`).
        input_shape: the shape of one input without the batch dimension, e.g. ``(784,)`` or
            ``(3, 32, 32)``.

    Returns:
        The equivalent network on flat inputs, with float64 copies of the weights.

    Raises:
        UnsupportedOperatorError: a module type, setting or traced operation has no
            encoding; the message names the module type and its index (or the traced node).
    """
    leaves = list(_leaves(module, ""))
    if any(type(mod) not in _HANDLERS and any(True for _ in mod.children())
           for _, mod in leaves):
        from bnbver.io.torch_fx import from_fx

        return from_fx(module, tuple(int(d) for d in input_shape))
    st = _State(tuple(int(d) for d in input_shape))
    for index, mod in leaves:
        _apply(st, mod, index)
    return Network(tuple(st.layers), tuple(input_shape), st.shape)


def _apply(st: _State, mod: nn.Module, index: str) -> None:
    """Apply the handler of one leaf module, or raise naming it."""
    handler = _HANDLERS.get(type(mod))
    if handler is None:
        _unsupported(mod, index, "unsupported module type")
    handler(st, mod, index)


def sequential_layers(mod: nn.Module, shape: tuple[int, ...],
                      index: str) -> tuple[list[Layer], tuple[int, ...]]:
    """Return the IR layers of one supported module (or Sequential) on an input of ``shape``
    and the output shape (the torch.fx reader uses the Sequential handlers through this)."""
    st = _State(tuple(shape))
    for sub, leaf in _leaves(mod, index):
        _apply(st, leaf, sub)
    return st.layers, st.shape


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
    ok = tuple(mod.dilation) == (1, 1) and mod.padding_mode == "zeros"
    if not ok or len(st.shape) != 3 or st.shape[0] != mod.in_channels:
        _unsupported(mod, index, f"settings or input shape {st.shape} not supported in")
    pad = _padding(mod, index, mod.kernel_size, mod.stride)
    bias = _array(mod.bias) if mod.bias is not None else np.zeros(mod.out_channels)
    in_shape = (st.shape[0], st.shape[1], st.shape[2])
    weight = grouped_conv_weight(_array(mod.weight), mod.groups)
    layer = Conv2d(weight, bias, _pair(mod.stride), pad, in_shape)
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


def _batchnorm(st: _State, mod: nn.Module, index: str) -> None:
    """BatchNorm1d on (C,) / BatchNorm2d on (C, H, W), with the running statistics.

    ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s`` per channel; folded into the
    affine layer just before (exact), otherwise a diagonal layer of its own.
    """
    assert isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))
    two_d = isinstance(mod, nn.BatchNorm2d)
    if mod.running_mean is None or mod.running_var is None:
        _unsupported(mod, index, "BatchNorm without running statistics "
                     "(track_running_stats=False) in")
    if len(st.shape) != (3 if two_d else 1) or st.shape[0] != mod.num_features:
        _unsupported(mod, index, f"input shape {st.shape} does not fit")
    var, mean = _array(mod.running_var), _array(mod.running_mean)
    gamma = _array(mod.weight) if mod.weight is not None else np.ones(mod.num_features)
    beta = _array(mod.bias) if mod.bias is not None else np.zeros(mod.num_features)
    m, _ = batchnorm_map(gamma, beta, mean, var, float(mod.eps))
    reps = int(np.prod(st.shape[1:]))
    flat = ElementwiseMap(np.repeat(m.scale, reps), np.repeat(m.shift, reps), m.scale_err,
                          np.repeat(m.shift_err, reps))
    folded = fold_map_after(st.layers[-1], flat) if st.layers else None
    if folded is not None:
        st.layers[-1] = folded
    else:
        st.layers.append(channel_map_layer(m, st.shape))


def _avgpool(st: _State, mod: nn.Module, index: str) -> None:
    """AvgPool2d as a Conv2d with fixed weights (see ``bnbver.io.layers``)."""
    assert isinstance(mod, nn.AvgPool2d)
    if len(st.shape) != 3:
        _unsupported(mod, index, f"input shape {st.shape} is not (C, H, W) for")
    ph, pw = _pair(mod.padding)
    if mod.ceil_mode or ((ph or pw) and not mod.count_include_pad
                         and mod.divisor_override is None):
        _unsupported(mod, index, "ceil_mode, or padding left out of the divisor, in")
    kernel = _pair(mod.kernel_size)
    stride = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
    layer = avg_pool_conv(kernel, stride, (ph, pw, ph, pw), (st.shape[0], st.shape[1],
                          st.shape[2]), mod.divisor_override)
    st.layers.append(layer)
    st.shape = layer.out_shape


def _adaptive_avgpool(st: _State, mod: nn.Module, index: str) -> None:
    """AdaptiveAvgPool2d whose output sizes divide the input's: a plain average pooling."""
    assert isinstance(mod, nn.AdaptiveAvgPool2d)
    if len(st.shape) != 3:
        _unsupported(mod, index, f"input shape {st.shape} is not (C, H, W) for")
    size = mod.output_size if isinstance(mod.output_size, tuple) else (mod.output_size,) * 2
    out = tuple(st.shape[i + 1] if v is None else int(v) for i, v in enumerate(size))
    if any(st.shape[i + 1] % out[i] for i in (0, 1)):
        _unsupported(mod, index, f"output size {out} not dividing the input {st.shape} in")
    kernel = (st.shape[1] // out[0], st.shape[2] // out[1])
    layer = avg_pool_conv(kernel, kernel, (0, 0, 0, 0), (st.shape[0], st.shape[1],
                          st.shape[2]))
    st.layers.append(layer)
    st.shape = layer.out_shape


def check_input_shape(module: nn.Module, shape: tuple[int, ...], name: str = "x") -> None:
    """Run ``module`` once on zeros of ``(1, *shape)`` (evaluation mode, caller's mode kept).

    Raises:
        InputError: the module rejects that shape (naming ``name`` and the shape).
    """
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros((1, *shape), dtype=dtype, device=device))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(name, f"shape {shape} does not fit the torch module ({first})") from None
    finally:
        module.train(training)


def load_torch_model(path: str | Path, factory: str | None = None) -> nn.Module:
    """Load a torch model saved whole, or a state dict into the module ``factory`` builds.

    Args:
        path: a file written by ``torch.save`` (a module, or a state dict).
        factory: ``"package.module:function"`` or ``"path/to/file.py:function"``; the
            function takes no arguments and returns the (untrained) module. Needed for a
            state dict.

    Returns:
        The module in evaluation mode.

    Raises:
        InputError: the file is missing or not a torch file, a state dict without a factory,
            a factory that does not load, or keys that do not match.

    Loading a whole module unpickles it (``weights_only=False``): load only trusted files.
    """
    src = str(path)
    if not Path(path).is_file():
        raise InputError(src, "no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(src, f"not a torch model file: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, nn.Module):
        return obj.eval()
    if not isinstance(obj, dict):
        raise InputError(src, f"holds a {type(obj).__name__}, expected a module or a state dict")
    if factory is None:
        raise InputError(src, "holds a state dict: give --factory module:function that "
                         "builds the module")
    module = _call_factory(factory)
    try:
        module.load_state_dict(obj)
    except (RuntimeError, KeyError) as exc:
        raise InputError(src, f"state dict does not fit {factory}: "
                         f"{str(exc).splitlines()[0]}") from None
    return module.eval()


def _call_factory(factory: str) -> nn.Module:
    """Import ``module:function`` (or ``file.py:function``) and call it."""
    where, sep, func = factory.rpartition(":")
    if not sep or not where or not func:
        raise InputError("--factory", f"{factory!r}: expected module:function")
    try:
        if where.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(where).stem, where)
            if spec is None or spec.loader is None or not Path(where).is_file():
                raise ImportError(f"no such file {where}")
            mod: Any = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(where)
        built = getattr(mod, func)()
    except (ImportError, AttributeError, TypeError) as exc:
        raise InputError("--factory", f"{factory!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(built, nn.Module):
        raise InputError("--factory", f"{factory!r} returned a {type(built).__name__}, "
                         f"not a torch module")
    return built


_HANDLERS: dict[type, _Handler] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.ReLU: _relu,
    nn.MaxPool2d: _maxpool,
    nn.Flatten: _flatten,
    nn.Identity: _identity,
    nn.Dropout: _identity,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: _adaptive_avgpool,
}
