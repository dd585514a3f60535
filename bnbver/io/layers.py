"""IR layers that the readers share: average pooling and per-channel affine maps as convolutions.

Both are affine, so they become :class:`~bnbver.network.Conv2d` layers with fixed weights and
the bounds, LP and MILP code needs nothing new:

- average pooling over a ``kh x kw`` window with zero padding counted in the divisor is the
  convolution with weight ``W[c, c', :, :] = [c = c'] / (kh * kw)`` (a padded cell adds 0);
- a per-channel map ``v[c] -> s[c] * v[c] + t[c]`` (inference batch normalisation, input
  normalisation) is the 1 x 1 convolution ``W[c, c'] = [c = c'] s[c]`` with bias ``t``;
- a map ``v -> s * v + t`` on a flat vector is ``Dense(diag(s), t)``.

Folding such a map into the affine layer before it is exact: ``s * (W x + b) + t`` is
``Dense(diag(s) W, s * b + t)``, and per output channel for a convolution. Folding one into
the layer after it, ``W (s * v + t) + b = (W diag(s)) v + (W t + b)``, is exact for a Dense
layer, and for a convolution when no padded cell would see ``t`` (no padding, or t = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnbver.errors import InputError
from bnbver.network import Conv2d, Dense, Layer, Network


def avg_pool_conv(kernel: tuple[int, int], stride: tuple[int, int],
                  padding: tuple[int, int, int, int], in_shape: tuple[int, int, int],
                  divisor: float | None = None) -> Conv2d:
    """Return average pooling as a Conv2d (padding counted as zeros in the divisor).

    Args:
        kernel: (kh, kw).
        stride: (sh, sw).
        padding: (top, left, bottom, right) zero padding.
        in_shape: (C, H, W).
        divisor: the divisor of each window's sum (default ``kh * kw``).
    """
    c = in_shape[0]
    weight = np.zeros((c, c, kernel[0], kernel[1]))
    weight[np.arange(c), np.arange(c)] = 1.0 / (divisor or kernel[0] * kernel[1])
    return Conv2d(weight, np.zeros(c), stride, padding, in_shape)


def channel_affine(scale: np.ndarray, shift: np.ndarray,
                   shape: tuple[int, ...]) -> Dense | Conv2d:
    """Return ``v -> scale * v + shift`` (per channel) on an activation of ``shape``.

    A (C, H, W) activation gets a 1 x 1 Conv2d; a flat (n,) one a diagonal Dense layer.
    """
    if len(shape) == 3:
        c = shape[0]
        weight = np.zeros((c, c, 1, 1))
        weight[np.arange(c), np.arange(c), 0, 0] = scale
        return Conv2d(weight, shift, (1, 1), (0, 0, 0, 0), (shape[0], shape[1], shape[2]))
    return Dense(np.diag(scale), shift)


def fold_after(layer: Layer, scale: np.ndarray, shift: np.ndarray) -> Dense | Conv2d | None:
    """Return ``scale * layer(v) + shift`` as one layer (per output channel for a Conv2d), or
    None when ``layer`` is not affine."""
    if isinstance(layer, Dense):
        return Dense(scale[:, None] * layer.weight, scale * layer.bias + shift)
    if isinstance(layer, Conv2d):
        return Conv2d(layer.weight * scale[:, None, None, None], scale * layer.bias + shift,
                      layer.stride, layer.padding, layer.in_shape)
    return None


def normalize_input(network: Network, mean: Sequence[float] | float,
                    std: Sequence[float] | float) -> Network:
    """Return the network of ``x -> network((x - mean) / std)`` (inputs in the raw domain).

    ``mean`` and ``std`` are one value or one per channel of a (C, H, W) input (one per value
    of a flat input). The map is folded into the first layer when that is exact (a Dense
    layer; a Conv2d without padding, or with padding and zero mean), otherwise it becomes a
    layer of its own in front.

    Raises:
        InputError: a std that is not positive, or a count that fits no channel axis.
    """
    shape = tuple(network.input_shape)
    while len(shape) > 1 and shape[0] == 1 and len(shape) != 3:
        shape = shape[1:]
    channels = shape[0] if len(shape) == 3 else network.input_size
    m = _per_channel_values(mean, channels, "--mean")
    sd = _per_channel_values(std, channels, "--std")
    if not np.all(sd > 0):
        raise InputError("--std", f"must be > 0, got {sd.tolist()}")
    scale, shift = 1.0 / sd, -m / sd
    reps = int(np.prod(shape[1:])) if len(shape) == 3 else 1
    flat_s, flat_t = np.repeat(scale, reps), np.repeat(shift, reps)
    first = network.layers[0] if network.layers else None
    if isinstance(first, Dense):
        layer: Layer = Dense(first.weight * flat_s[None, :], first.weight @ flat_t + first.bias)
        return Network((layer, *network.layers[1:]), network.input_shape, network.output_shape)
    if isinstance(first, Conv2d) and (not any(first.padding) or not np.any(shift)):
        w = first.weight * scale[None, :, None, None]
        bias = first.bias + np.einsum("oikl,i->o", first.weight, shift)
        conv = Conv2d(w, bias, first.stride, first.padding, first.in_shape)
        return Network((conv, *network.layers[1:]), network.input_shape, network.output_shape)
    front = channel_affine(scale, shift, shape) if len(shape) == 3 else Dense(
        np.diag(flat_s), flat_t)
    return Network((front, *network.layers), network.input_shape, network.output_shape)


def _per_channel_values(v: Sequence[float] | float, channels: int, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(v, dtype=np.float64)).reshape(-1)
    if arr.size == 1:
        arr = np.full(channels, float(arr[0]))
    if arr.size != channels or not np.all(np.isfinite(arr)):
        raise InputError(name, f"expected 1 or {channels} finite values, got {arr.size}")
    return arr
