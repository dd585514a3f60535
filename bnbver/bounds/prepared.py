"""The network prepared for bounding: torch weights per operation, the spec folded in.

:func:`prepare` turns a :class:`~bnbver.network.Network` and a specification ``(C, d)`` into a
:class:`BoundedNetwork`, a tuple of operations on flat batches:

- :class:`AffineOp` ``y = W x + b`` (a dense matrix, or a convolution run by ``conv2d`` and its
  transpose ``conv_transpose2d``, which on the CPU is faster and far smaller than the sparse
  matrix for 3x32x32 inputs);
- :class:`ReluOp` and :class:`PoolOp` (max pooling), the nonlinear *slots*: slot s is the s-th
  nonlinear operation and the engine keeps bounds of its input, (B, n_s).

``Flatten`` is the identity on flat vectors and disappears. The specification is folded into the
last affine layer: if the network ends with ``y = W h + b`` the prepared network ends with
``C W h + (C b - d)``, so bounding its output bounds the margins ``C y - d`` directly (a network
that does not end with a dense layer gets an extra ``Dense(C, -d)``).

Shapes: ``N`` is any leading batch size, ``R`` the number of rows of a linear bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bnbver.bounds.types import BoundsOptions, margins_for
from bnbver.errors import InputError
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU


@dataclass(frozen=True, eq=False)
class AffineOp:
    """``y = W x + b`` on flat vectors; ``conv`` holds the geometry of a convolution.

    Attributes:
        weight: (n_out, n_in) for a dense layer, (C_out, C_in, kh, kw) for a convolution.
        abs_weight: ``|weight|`` (used by interval propagation).
        bias: (n_out,) flat bias.
        conv: the source Conv2d layer (geometry only), or None for a dense layer.
        in_size: n_in.
        out_size: n_out.
    """

    weight: Tensor
    abs_weight: Tensor
    bias: Tensor
    conv: Conv2d | None
    in_size: int
    out_size: int

    @cached_property
    def abs_rowsum(self) -> Tensor:
        """(n_out,) row sums of ``|W|`` (an upper bound of ``|W| |x|`` per unit of max|x|)."""
        ones = self.weight.new_ones((1, self.in_size))
        return self.linear(ones, absolute=True)[0]

    def _conv(self, x: Tensor, weight: Tensor) -> Tensor:
        assert self.conv is not None
        pt, pl, pb, pr = self.conv.padding
        h = x.reshape(x.shape[0], *self.conv.in_shape)
        if pt == pb and pl == pr:
            out = F.conv2d(h, weight, stride=self.conv.stride, padding=(pt, pl))
        else:
            out = F.conv2d(F.pad(h, (pl, pr, pt, pb)), weight, stride=self.conv.stride)
        return out.reshape(x.shape[0], self.out_size)

    def linear(self, x: Tensor, absolute: bool = False) -> Tensor:
        """Return ``W x`` (or ``|W| x``) without the bias, (N, n_in) -> (N, n_out)."""
        weight = self.abs_weight if absolute else self.weight
        if self.conv is None:
            return x @ weight.T
        return self._conv(x, weight)

    def backward(self, a: Tensor) -> Tensor:
        """Return ``a W``, (N, R, n_out) -> (N, R, n_in)."""
        if self.conv is None:
            return a @ self.weight
        n, r = a.shape[0], a.shape[1]
        c_out, h_out, w_out = self.conv.out_shape
        c_in, h, w = self.conv.in_shape
        pt, pl, pb, pr = self.conv.padding
        g = a.reshape(n * r, c_out, h_out, w_out)
        # Transposed convolution in padded coordinates, then drop the padding; torch's own
        # ``padding`` argument would also crop input rows that the last window still reads
        # when the stride does not divide the padded size.
        full = F.conv_transpose2d(g, self.weight, stride=self.conv.stride)
        full = F.pad(full, (0, w + pl + pr - full.shape[3], 0, h + pt + pb - full.shape[2]))
        full = full[:, :, pt:pt + h, pl:pl + w]
        return full.reshape(n, r, c_in * h * w)

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Return the rows ``W[index]`` (K, n_in) and ``b[index]`` (K,)."""
        if self.conv is None:
            return self.weight.index_select(0, index), self.bias.index_select(0, index)
        onehot = torch.zeros((1, index.numel(), self.out_size),
                             dtype=self.weight.dtype, device=self.weight.device)
        onehot[0, torch.arange(index.numel(), device=index.device), index] = 1.0
        return self.backward(onehot)[0], self.bias.index_select(0, index)


@dataclass(frozen=True, eq=False)
class ReluOp:
    """Elementwise ReLU; ``layer`` counts ReLU layers, ``slot`` nonlinear operations."""

    size: int
    layer: int
    slot: int


@dataclass(frozen=True, eq=False)
class PoolOp:
    """Max pooling on flat vectors.

    Attributes:
        windows: (n_out, k) long input indices of each window; padding cells point at index
            ``in_size``, a sentinel column the engine fills with -inf.
        in_size: n_in.
        out_size: n_out.
        slot: nonlinear slot index.
    """

    windows: Tensor
    in_size: int
    out_size: int
    slot: int


Op = AffineOp | ReluOp | PoolOp


@dataclass(frozen=True, eq=False)
class BoundedNetwork:
    """A network with the specification folded in, ready for batched bounding.

    Attributes:
        ops: the operations in order; the last one is the folded affine layer (R outputs).
        input_size: n_in.
        num_rows: R, the number of specification rows.
        slot_ops: op index of each nonlinear slot.
        relu_slots: slot index of each ReLU layer.
        slot_sizes: n_s of each slot.
        dtype: computation dtype.
        device: computation device.
    """

    ops: tuple[Op, ...]
    input_size: int
    num_rows: int
    slot_ops: tuple[int, ...]
    relu_slots: tuple[int, ...]
    slot_sizes: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @property
    def relu_sizes(self) -> list[int]:
        """Neuron count of each ReLU layer."""
        return [self.slot_sizes[s] for s in self.relu_slots]

    @property
    def margins(self) -> tuple[float, float, float]:
        """``(rel, abs, infeasible_tol)`` safety constants of this dtype."""
        return margins_for(self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Return the margins ``C f(x) - d`` for x (N, n_in) (a reference, not sound)."""
        h = x.to(dtype=self.dtype, device=self.device)
        for op in self.ops:
            if isinstance(op, AffineOp):
                h = op.linear(h) + op.bias
            elif isinstance(op, ReluOp):
                h = h.clamp(min=0)
            else:
                padded = torch.cat([h, h.new_full((h.shape[0], 1), -torch.inf)], 1)
                h = padded[:, op.windows].amax(dim=2)
        return h


def _tensor(a: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64)).to(dtype=dtype, device=device)


def _affine(layer: Dense | Conv2d, dtype: torch.dtype, device: torch.device) -> AffineOp:
    weight = _tensor(layer.weight, dtype, device)
    if isinstance(layer, Dense):
        bias = _tensor(layer.bias, dtype, device)
        return AffineOp(weight, weight.abs(), bias, None, layer.in_size, layer.out_size)
    bias = _tensor(layer.flat_bias(), dtype, device)
    return AffineOp(weight, weight.abs(), bias, layer, layer.in_size, layer.out_size)


def _fold_spec(ops: list[Op], n_out: int, C: np.ndarray, d: np.ndarray,
               dtype: torch.dtype, device: torch.device) -> None:
    """Replace the last dense layer ``(W, b)`` by ``(C W, C b - d)`` (or append one)."""
    last = ops[-1] if ops else None
    if isinstance(last, AffineOp) and last.conv is None:
        w = _tensor(C, torch.float64, device) @ last.weight.to(torch.float64)
        b = _tensor(C, torch.float64, device) @ last.bias.to(torch.float64) - _tensor(
            d, torch.float64, device)
        w, b = w.to(dtype), b.to(dtype)
        ops[-1] = AffineOp(w, w.abs(), b, None, last.in_size, w.shape[0])
        return
    w = _tensor(C, dtype, device)
    ops.append(AffineOp(w, w.abs(), _tensor(-d, dtype, device), None, n_out, w.shape[0]))


def _validate_spec(network: Network, C: Any, d: Any) -> tuple[np.ndarray, np.ndarray]:
    m = network.num_outputs
    if C is None:
        C = np.eye(m)
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    d = np.zeros(C.shape[0]) if d is None else np.atleast_1d(np.asarray(d, dtype=np.float64))
    if C.shape[1] != m:
        raise InputError("C", f"must have {m} columns (network outputs), has {C.shape[1]}")
    if d.shape != (C.shape[0],):
        raise InputError("d", f"must have shape ({C.shape[0]},), has {d.shape}")
    if not (np.all(np.isfinite(C)) and np.all(np.isfinite(d))):
        raise InputError("C, d", "must be finite")
    return C, d


def prepare(network: Network, C: Any = None, d: Any = None,
            options: BoundsOptions | None = None) -> BoundedNetwork:
    """Build the :class:`BoundedNetwork` of ``network`` with the margins ``C y - d``.

    Args:
        network: the network IR.
        C: (R, m) specification matrix; None means the identity (bound the outputs).
        d: (R,) offsets; None means zeros.
        options: gives ``device`` and ``dtype``.

    Returns:
        The prepared network (weights on ``options.device`` in ``options`` dtype).

    Raises:
        InputError: C or d do not fit the network.
    """
    options = options or BoundsOptions()
    dtype, device = options.resolved_dtype(), torch.device(options.device)
    C, d = _validate_spec(network, C, d)
    ops: list[Op] = []
    slot_ops: list[int] = []
    relu_slots: list[int] = []
    slot_sizes: list[int] = []
    for layer, n_in in zip(network.layers, network.sizes, strict=False):
        if isinstance(layer, (Dense, Conv2d)):
            ops.append(_affine(layer, dtype, device))
        elif isinstance(layer, ReLU):
            relu_slots.append(len(slot_ops))
            ops.append(ReluOp(layer.size, len(relu_slots) - 1, len(slot_ops)))
        elif isinstance(layer, MaxPool2d):
            win = layer.window_indices()
            win = np.where(win < 0, layer.in_size, win)
            ops.append(PoolOp(torch.as_tensor(win, dtype=torch.long, device=device),
                              layer.in_size, layer.out_size, len(slot_ops)))
        elif not isinstance(layer, Flatten):
            raise InputError("network", f"unsupported layer {type(layer).__name__}")
        if isinstance(layer, (ReLU, MaxPool2d)):
            slot_ops.append(len(ops) - 1)
            slot_sizes.append(n_in)
    _fold_spec(ops, network.num_outputs, C, d, dtype, device)
    return BoundedNetwork(tuple(ops), network.input_size, int(C.shape[0]), tuple(slot_ops),
                          tuple(relu_slots), tuple(slot_sizes), dtype, device)
