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

"Exact" holds in real arithmetic; the float64 products are rounded. :class:`ElementwiseMap`
carries error bounds of its own numbers against the exact map (a batch normalisation's
``s = g / sqrt(var + eps)`` is rounded three times), and the folds below record the error of
their results in the layers' ``weight_err`` (relative) and ``bias_err`` (absolute), which the
bounds engine charges (:mod:`bnbver.bounds.rounding`): with unit roundoff u, a product of two
numbers is off by at most u of its value and a dot product of length n by ``gamma_n`` of the
sum of its terms' magnitudes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bnbver.errors import InputError
from bnbver.network import Conv2d, Dense, Layer, Network

U64 = 2.0 ** -53
"""Unit roundoff of float64."""


def gamma64(n: int) -> float:
    """Return ``gamma_n = n u / (1 - n u)`` of float64, rounded up generously."""
    nu = max(int(n), 1) * U64
    return nu / (1.0 - nu) * (1.0 + 1e-6)


def exact_products(a: np.ndarray, b: np.ndarray) -> bool:
    """True when every product ``a * b`` (broadcast) is exact: a factor is 0 or a power of 2
    (underflow aside, which the bounds engine's absolute term covers)."""
    return bool(np.all(_pow2(a) | _pow2(b)))


def _pow2(a: np.ndarray) -> np.ndarray:
    mant, _ = np.frexp(np.asarray(a, dtype=np.float64))
    out: np.ndarray = (mant == 0) | (np.abs(mant) == 0.5)
    return out


def product_error(a: np.ndarray, b: np.ndarray, prod: np.ndarray) -> np.ndarray:
    """Return a bound on ``|fl(a b) - a b|`` elementwise (0 where exact)."""
    out: np.ndarray = np.where(_pow2(a) | _pow2(b), 0.0, U64 * np.abs(prod))
    return out


def sum_error(a: np.ndarray, b: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Return ``|fl(a + b) - (a + b)|`` exactly (Knuth's TwoSum), for ``total = fl(a + b)``."""
    bb = total - a
    out: np.ndarray = np.abs((a - (total - bb)) + (b - bb))
    return out


def _grow(rel: float, *more: float) -> float:
    """Return the relative error of a product of factors with relative errors rel, more..."""
    out = 1.0 + rel
    for m in more:
        out *= 1.0 + m
    return (out - 1.0) * (1.0 + 1e-9)


@dataclass(frozen=True, eq=False)
class ElementwiseMap:
    """The map ``v -> scale * v + shift`` on a flat tensor, with its own error bounds.

    Attributes:
        scale: (n,) float64.
        shift: (n,) float64.
        scale_err: relative error of ``scale``: ``|s* - s| <= scale_err |s|`` (0: exact).
        shift_err: (n,) absolute error of ``shift`` (zeros: exact).
    """

    scale: np.ndarray
    shift: np.ndarray
    scale_err: float = 0.0
    shift_err: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if self.shift_err.shape != self.shift.shape:
            object.__setattr__(self, "shift_err", np.zeros_like(self.shift))

    def then(self, outer: ElementwiseMap) -> ElementwiseMap:
        """Return ``outer`` after ``self``: ``s2 (s1 v + t1) + t2``, with its errors."""
        s1, t1, s2, t2 = self.scale, self.shift, outer.scale, outer.shift
        st = s2 * t1
        shift = st + t2
        err = (np.abs(s2) * self.shift_err + outer.scale_err * np.abs(st) + outer.shift_err
               + product_error(s2, t1, st) + sum_error(st, t2, shift))
        s_err = _grow(self.scale_err, outer.scale_err, 0.0 if exact_products(s1, s2) else U64)
        return ElementwiseMap(s2 * s1, shift, s_err, err * (1.0 + 1e-9))

    @property
    def exact(self) -> bool:
        """True when the map carries no error of its own."""
        return self.scale_err == 0.0 and not np.any(self.shift_err)


def batchnorm_map(gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                  eps: float) -> tuple[ElementwiseMap, np.ndarray]:
    """Return the per-channel map of an inference batch normalisation, and its scale.

    ``s = g / sqrt(var + eps)`` (three roundings and a square root: at most 3 u relative)
    and ``t = b - m s`` (``|m s|`` off by ``(3 u + u)``, the difference by u more).
    """
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    s_err = 3.5 * U64 * (1.0 + 1e-6)
    t_err = (s_err + U64) * np.abs(mean * scale) + U64 * np.abs(shift)
    return ElementwiseMap(scale, shift, s_err, t_err * (1.0 + 1e-6)), scale


def _bias_err(layer: Dense | Conv2d) -> np.ndarray:
    return np.zeros_like(layer.bias) if layer.bias_err is None else layer.bias_err


def _channels(v: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray | None:
    """Return per-channel values of a flat (C, H, W) array, or None if they vary in space."""
    img = v.reshape(shape)
    chan = img[:, 0, 0]
    return chan if np.array_equal(img, np.broadcast_to(chan[:, None, None], shape)) else None


def fold_map_after(layer: Layer, m: ElementwiseMap) -> Dense | Conv2d | None:
    """Return ``m`` after ``layer`` (``s * layer(v) + t``) as one layer, errors recorded; None
    when ``layer`` is not affine or (a Conv2d) the map is not constant per output channel."""
    s, t, t_err = m.scale, m.shift, m.shift_err
    if isinstance(layer, Conv2d):
        chans = [_channels(a, layer.out_shape) for a in (s, t, t_err)]
        if any(c is None for c in chans):
            return None
        s, t, t_err = chans  # type: ignore[assignment]
    if not isinstance(layer, (Dense, Conv2d)):
        return None
    sb = s * layer.bias
    bias = sb + t
    b_err = (np.abs(s) * _bias_err(layer) + m.scale_err * np.abs(sb) + t_err
             + product_error(s, layer.bias, sb) + sum_error(sb, t, bias))
    w_err = _grow(layer.weight_err, m.scale_err, 0.0 if exact_products(s, np.array(1.5)) else U64)
    b_err = b_err * (1.0 + 1e-9) if np.any(b_err) else None
    if isinstance(layer, Dense):
        return Dense(s[:, None] * layer.weight, bias, w_err, b_err)
    return Conv2d(layer.weight * s[:, None, None, None], bias, layer.stride, layer.padding,
                  layer.in_shape, weight_err=w_err, bias_err=b_err)


def fold_map_before(layer: Dense | Conv2d, m: ElementwiseMap) -> Dense | Conv2d | None:
    """Return ``layer(s * v + t)`` as one layer, errors recorded, or None when that is not
    exact (a Conv2d needs per-channel s and t, and t = 0 when it pads)."""
    s, t, t_err = m.scale, m.shift, m.shift_err
    w_err = _grow(layer.weight_err, m.scale_err, 0.0 if exact_products(s, np.array(1.5)) else U64)
    if isinstance(layer, Dense):
        W = layer.weight
        return Dense(W * s[None, :], W @ t + layer.bias, w_err,
                     _before_bias_err(layer, np.abs(W), t, t_err, W.shape[1],
                                      lambda a, v: a @ v))
    chans = [_channels(a, layer.in_shape) for a in (s, t, t_err)]
    if any(c is None for c in chans):
        return None
    sc, tc, ec = chans
    assert sc is not None and tc is not None and ec is not None
    if any(layer.padding) and (np.any(tc != 0) or np.any(ec != 0)):
        return None
    W = layer.weight
    return Conv2d(W * sc[None, :, None, None], layer.bias + np.einsum("oikl,i->o", W, tc),
                  layer.stride, layer.padding, layer.in_shape, weight_err=w_err,
                  bias_err=_before_bias_err(layer, np.abs(W), tc, ec,
                                            int(np.prod(W.shape[1:])),
                                            lambda a, v: np.einsum("oikl,i->o", a, v)))


def _before_bias_err(layer: Dense | Conv2d, abs_w: np.ndarray, t: np.ndarray,
                     t_err: np.ndarray, n: int,
                     prod: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray | None:
    """Return the bias error of ``W t + b`` (None when exact: t = 0 and b exact): the dot
    product's rounding ``gamma_{n+1} (|W| |t| + |b|)``, t's own error through ``|W*|``, and
    W's recorded error times ``|W| |t|``."""
    if not np.any(t) and not np.any(t_err):
        return layer.bias_err
    size = prod(abs_w, np.abs(t)) + np.abs(layer.bias)
    err = (gamma64(n + 1) * size + (1.0 + layer.weight_err) * prod(abs_w, t_err)
           + layer.weight_err * prod(abs_w, np.abs(t)) + _bias_err(layer))
    out: np.ndarray = err * (1.0 + 1e-9)
    return out


def channel_map_layer(m: ElementwiseMap, shape: tuple[int, ...]) -> Dense | Conv2d:
    """Return a per-channel map (``m`` holds one value per channel) on an activation of
    ``shape`` as a layer: a 1 x 1 Conv2d on (C, H, W), a diagonal Dense layer on (n,)."""
    layer = channel_affine(m.scale, m.shift, shape)
    err = m.shift_err if np.any(m.shift_err) else None
    if isinstance(layer, Conv2d):
        return Conv2d(layer.weight, layer.bias, layer.stride, layer.padding, layer.in_shape,
                      weight_err=m.scale_err, bias_err=err)
    return Dense(layer.weight, layer.bias, m.scale_err, err)


def map_layer(m: ElementwiseMap, shape: tuple[int, ...],
              max_diagonal: int) -> Dense | Conv2d | None:
    """Return the map as a layer of its own: a 1 x 1 Conv2d when it is constant per channel of
    a (C, H, W) tensor (any size), else a diagonal Dense layer of at most ``max_diagonal``
    values; None when neither fits."""
    if len(shape) == 3:
        shp = (shape[0], shape[1], shape[2])
        chans = [_channels(a, shp) for a in (m.scale, m.shift, m.shift_err)]
        if chans[0] is not None and chans[1] is not None and chans[2] is not None:
            return channel_map_layer(ElementwiseMap(chans[0], chans[1], m.scale_err, chans[2]),
                                     shp)
    if m.scale.size > max_diagonal:
        return None
    err = m.shift_err if np.any(m.shift_err) else None
    return Dense(np.diag(m.scale), m.shift, m.scale_err, err)


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
    div = float(divisor or kernel[0] * kernel[1])
    weight[np.arange(c), np.arange(c)] = 1.0 / div
    exact = float(np.float64(1.0 / div) * div) == 1.0 and np.log2(div).is_integer()
    return Conv2d(weight, np.zeros(c), stride, padding, in_shape,
                  weight_err=0.0 if exact else U64 * (1.0 + 1e-6))


def grouped_conv_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """Return the (C_out, C_in, kh, kw) weight of a grouped convolution as one convolution.

    Group g maps input channels ``[g C_in/G, (g+1) C_in/G)`` to output channels
    ``[g C_out/G, (g+1) C_out/G)``; every other weight is 0 (exact).
    """
    if groups == 1:
        return weight
    c_out, c_per, kh, kw = weight.shape
    out_per = c_out // groups
    full = np.zeros((c_out, c_per * groups, kh, kw))
    for g in range(groups):
        full[g * out_per:(g + 1) * out_per, g * c_per:(g + 1) * c_per] = weight[
            g * out_per:(g + 1) * out_per]
    return full


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
    # 1 / sd and -m / sd are rounded once each, unless sd is a power of 2 (exact).
    exact = _pow2(sd)
    per = ElementwiseMap(scale, shift, 0.0 if exact.all() else U64 * (1.0 + 1e-6),
                         np.where(exact, 0.0, U64 * (1.0 + 1e-6) * np.abs(shift)))
    flat = ElementwiseMap(np.repeat(scale, reps), np.repeat(shift, reps), per.scale_err,
                          np.repeat(per.shift_err, reps))
    first = network.layers[0] if network.layers else None
    folded = fold_map_before(first, flat) if isinstance(first, (Dense, Conv2d)) else None
    if folded is not None and network.is_chain:
        return Network((folded, *network.layers[1:]), network.input_shape, network.output_shape)
    front = channel_map_layer(per, shape) if len(shape) == 3 else map_layer(
        flat, shape, flat.scale.size)
    assert front is not None
    inputs = () if network.is_chain else ((-1,), *(tuple(t + 1 for t in ins)
                                                   for ins in network.inputs))
    return Network((front, *network.layers), network.input_shape, network.output_shape, inputs)


def _per_channel_values(v: Sequence[float] | float, channels: int, name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(v, dtype=np.float64)).reshape(-1)
    if arr.size == 1:
        arr = np.full(channels, float(arr[0]))
    if arr.size != channels or not np.all(np.isfinite(arr)):
        raise InputError(name, f"expected 1 or {channels} finite values, got {arr.size}")
    return arr
