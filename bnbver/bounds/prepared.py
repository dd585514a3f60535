"""The network prepared for bounding: torch weights per operation, the spec folded in.

:func:`prepare` turns a :class:`~bnbver.network.Network` and a specification ``(C, d)`` into a
:class:`BoundedNetwork`, a tuple of operations on flat batches:

- :class:`AffineOp` ``y = W x + b`` (a dense matrix, or a convolution run by ``conv2d`` and its
  transpose ``conv_transpose2d``, which on the CPU is faster and far smaller than the sparse
  matrix for 3x32x32 inputs);
- :class:`ReluOp` and :class:`PoolOp` (max pooling), the nonlinear *slots*: slot s is the s-th
  nonlinear operation and the engine keeps bounds of its input, (B, n_s);
- :class:`AddOp` and :class:`ConcatOp`, the joins of a DAG (residual sums, concatenations).

Ops are in a topological order and ``BoundedNetwork.inputs[i]`` names the ops whose outputs
op i reads (``-1``: the network input); in a chain op i reads op i - 1. A tensor read by
several ops is always the output of a ReLU, pool or join op (``prepare`` puts a one-input
:class:`AddOp`, the identity, after a shared affine op or a shared input): the backward pass
sums the coefficients its readers give it, and the rounding of that sum is charged against a
bound on the tensor's magnitude, which the engine keeps for those ops (``ErrorVectors``).

``Flatten`` is the identity on flat vectors and disappears. The specification is folded into the
last affine layer: if the network ends with ``y = W h + b`` the prepared network ends with
``C W h + (C b - d)``, so bounding its output bounds the margins ``C y - d`` directly (a network
that does not end with a dense layer gets an extra ``Dense(C, -d)``).

Every op also carries what :mod:`bnbver.bounds.rounding` needs to make its bounds rigorous:
the relative error ``w_rel`` of the weights used against the IR's float64 weights (0 when they
are exact in the computation dtype), an absolute bias error vector, the error matrix of a folded
specification, and the length of its dot products.

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

from bnbver.bounds import rounding
from bnbver.bounds.types import BoundsOptions, margins_for
from bnbver.errors import InputError
from bnbver.network import (
    Add,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Layer,
    MaxPool2d,
    Network,
    ReLU,
    flat_bias_err,
)


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
        kappa: the relative error factor of one transposed product ``a W`` with this layer
            (the weights' own error plus the rounding of a dot product of length
            ``inner[1]``; see ``rounding``).
        kappa_fwd: the same for the forward product ``W x`` (length ``inner[0]``).
        bias_err: (n_out,) absolute error of ``bias`` against the exact bias.
        fold_err: (n_out, n_in) absolute error of a folded specification's weights, or None.
        inner: the dot-product lengths of the forward and the transposed product.
        exact: the IR's float64 weights, bias, relative weight error and bias error vector
            ``(W*, b*, w_err, e_b*)``, from which :meth:`centre` computes the centre values
            of a linear bound's centred form (:mod:`bnbver.bounds.centres`).
    """

    weight: Tensor
    abs_weight: Tensor
    bias: Tensor
    conv: Conv2d | None
    in_size: int
    out_size: int
    kappa: float = 0.0
    kappa_fwd: float = 0.0
    bias_err: Tensor | None = None
    fold_err: Tensor | None = None
    inner: tuple[int, int] = (1, 1)
    exact: tuple[Tensor, Tensor, float, Tensor] | None = None

    @cached_property
    def abs_bias(self) -> Tensor:
        """(n_out,) ``|bias|``."""
        return self.bias.abs()

    def error_vector(self, m: Tensor, forward: bool = False) -> Tensor:
        """Return ``v`` (N, n_out): ``|a| . v`` bounds the rounding and weight error of the
        product of any coefficients ``a`` with this layer, for inputs ``|g| <= m`` (N, n_in).

        ``v = kappa (|W| m + |b|) + E m + e_b`` (see :mod:`bnbver.bounds.rounding`), with the
        factor of the transposed product (backward passes) or, with ``forward``, of ``W x``
        (interval and forward symbolic bounds).
        """
        kappa = self.kappa_fwd if forward else self.kappa
        return kappa * (self.linear(m, absolute=True) + self.abs_bias) + self.const_error(m)

    def radius_error(self, r: Tensor, abs_wr: Tensor, resid: Tensor) -> Tensor:
        """Return ``v`` (N, n_out) of the centred form: ``|a| . v`` bounds the rounding and
        weight error of ``a W`` times a deviation ``|g - c| <= r`` (N, n_in) from the input's
        centre, plus the residual ``resid`` of the output's centre (:meth:`centre`):
        ``v = kappa |W| r + E r + resid``, given ``abs_wr = |W| r`` (the caller needs it
        too)."""
        out = torch.addcmul(resid, abs_wr, abs_wr.new_tensor(self.kappa))
        if self.fold_err is not None:
            out = out + r @ self.fold_err.T
        return out

    def centre(self, c_in: Tensor) -> tuple[Tensor, Tensor]:
        """Return the output centre ``c`` (N, n_out) for an input centre ``c_in`` (N, n_in),
        and ``res`` (N or 1, n_out) with ``|W_true c_in + b_true - c| <= res``.

        ``c`` is ``W* c_in + b*`` computed in float64 and rounded to nearest in the op's
        dtype; ``res`` covers that rounding, the float64 product's own error
        ``gamma_{n+2} (|W*| |c_in| + |b*|)`` and the IR's recorded errors
        (:attr:`centre_error`), rounded up.
        """
        assert self.exact is not None
        w64, b64 = self.exact[0], self.exact[1]
        x = c_in.double()
        f = torch.addmm(b64, x, w64.T) if self.conv is None else self._conv(x, w64) + b64
        scale, base = self.centre_error
        # One max|c_in| for the batch: the term is of float64's rounding size.
        res = torch.addcmul(base, torch.maximum(x.max(), -x.min()), scale).unsqueeze(0)
        if self.fold_err is not None:
            res = rounding.up(res + x.abs() @ self.fold_err.double().T)
        dtype = self.bias.dtype
        if dtype == torch.float64:
            return f, res
        c = f.to(dtype)
        return c, rounding.up_cast(res + (f - c.double()).abs(), dtype)

    @cached_property
    def centre_error(self) -> tuple[Tensor, Tensor]:
        """``(scale, base)`` (n_out,) float64 with ``res >= scale max|c_in| + base`` bounding
        the float64 product's rounding and the IR's errors: with ``g = gamma_{n+2}``,
        ``|W*| |x| <= max|x| rowsum(|W*|)``, so ``scale = (g + w_err) rowsum(|W*|)`` and
        ``base = (g + w_err) |b*| + e_b*``, both enlarged by ``1 + 8g`` (``g`` is at least
        ``2u``) for their own rounding and the two of ``base + max|c_in| scale``."""
        assert self.exact is not None
        w64, b64, w_err, b_err = self.exact
        g = rounding.gamma(self.inner[0] + 2, torch.float64)
        rowsum = self._product(w64.new_ones((1, self.in_size)), w64.abs())[0]
        grow = (g + w_err) * (1.0 + 8.0 * g)
        return grow * rowsum, grow * b64.abs() + b_err * (1.0 + 8.0 * g)

    def _product(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.conv is None:
            return x @ weight.T
        return self._conv(x, weight)

    def const_error(self, m: Tensor) -> Tensor:
        """Return ``E m + e_b`` (N, n_out): the folded weights' and the bias's own error."""
        out = self.bias_err if self.bias_err is not None else self.bias.new_zeros(())
        if self.fold_err is not None:
            out = out + m @ self.fold_err.T
        return out.expand(m.shape[0], self.out_size)

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
        return self._product(x, self.abs_weight if absolute else self.weight)

    def backward(self, a: Tensor) -> Tensor:
        """Return ``a W``, (N, R, n_out) -> (N, R, n_in)."""
        if self.conv is None:
            return a @ self.weight
        n, r = a.shape[0], a.shape[1]
        c_out, h_out, w_out = self.conv.out_shape
        c_in, h, w = self.conv.in_shape
        pt, pl, pb, pr = self.conv.padding
        g = a.reshape(n * r, c_out, h_out, w_out)
        crop = self._transposed_crop
        if crop is not None:
            out = F.conv_transpose2d(g, self.weight, stride=self.conv.stride,
                                     padding=(pt, pl), output_padding=crop)
            return out.reshape(n, r, c_in * h * w)
        # Transposed convolution in padded coordinates, then drop the padding.
        full = F.conv_transpose2d(g, self.weight, stride=self.conv.stride)
        full = F.pad(full, (0, w + pl + pr - full.shape[3], 0, h + pt + pb - full.shape[2]))
        full = full[:, :, pt:pt + h, pl:pl + w]
        return full.reshape(n, r, c_in * h * w)

    @cached_property
    def _transposed_crop(self) -> tuple[int, int] | None:
        """The ``output_padding`` that makes torch's padded transposed convolution return
        exactly the input's shape, or None where it cannot (asymmetric padding, or input
        rows past the last window's reach beyond what ``output_padding < stride`` adds):
        torch's ``padding`` alone would drop the input rows that the last window still
        reads when the stride does not divide the padded size."""
        assert self.conv is not None
        pt, pl, pb, pr = self.conv.padding
        if pt != pb or pl != pr:
            return None
        _, h_out, w_out = self.conv.out_shape
        _, h, w = self.conv.in_shape
        (sh, sw), (kh, kw) = self.conv.stride, self.weight.shape[2:]
        extra = (h - ((h_out - 1) * sh - 2 * pt + kh), w - ((w_out - 1) * sw - 2 * pl + kw))
        if not (0 <= extra[0] < sh and 0 <= extra[1] < sw):
            return None
        return extra

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


@dataclass(frozen=True, eq=False)
class AddOp:
    """Elementwise sum of ``arity`` tensors of ``out_size`` values (one input: the identity).

    Exact in real arithmetic, so a backward pass hands its output's coefficient unchanged to
    every input; forward evaluations round each addition (``bounds.interval`` rounds
    outwards).
    """

    out_size: int
    arity: int


@dataclass(frozen=True, eq=False)
class ConcatOp:
    """Concatenation of flat inputs of ``sizes`` values (exact; backward splits the
    coefficient)."""

    sizes: tuple[int, ...]

    @property
    def out_size(self) -> int:
        return int(sum(self.sizes))


Op = AffineOp | ReluOp | PoolOp | AddOp | ConcatOp
JoinOp = AddOp | ConcatOp


def op_out_size(op: Op) -> int:
    """Return the flat output size of an op."""
    return op.size if isinstance(op, ReluOp) else op.out_size


@dataclass(frozen=True, eq=False)
class BoundedNetwork:
    """A network with the specification folded in, ready for batched bounding.

    Attributes:
        ops: the operations in a topological order; the last one is the folded affine layer
            (R outputs).
        input_size: n_in.
        num_rows: R, the number of specification rows.
        slot_ops: op index of each nonlinear slot.
        relu_slots: slot index of each ReLU layer.
        slot_sizes: n_s of each slot.
        dtype: computation dtype.
        device: computation device.
        inputs: per op the ops it reads (``-1``: the network input); empty means a chain
            (op i reads op i - 1).
    """

    ops: tuple[Op, ...]
    input_size: int
    num_rows: int
    slot_ops: tuple[int, ...]
    relu_slots: tuple[int, ...]
    slot_sizes: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    inputs: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", tuple((i - 1,) for i in range(len(self.ops))))

    @cached_property
    def is_chain(self) -> bool:
        """True when op i reads op i - 1 for every i (no joins)."""
        return all(ins == (i - 1,) for i, ins in enumerate(self.inputs))

    @cached_property
    def readers(self) -> tuple[int, ...]:
        """Per tensor (index ``t + 1`` for op t, 0 for the input) the number of ops reading it."""
        out = [0] * (len(self.ops) + 1)
        for ins in self.inputs:
            for t in ins:
                out[t + 1] += 1
        return tuple(out)

    def producer(self, slot: int) -> int:
        """Return the op whose output is the input of ``slot`` (-1: the network input)."""
        return self.inputs[self.slot_ops[slot]][0]

    def pre_bias(self, slot: int) -> Tensor:
        """Return (n_s,) the constant term of the input of ``slot``: the bias of the affine op
        producing it, summed over the branches of a residual join (0 past a nonlinearity)."""
        return self._constant(self.producer(slot))

    def _constant(self, t: int) -> Tensor:
        if t < 0:
            return torch.zeros(self.input_size, dtype=self.dtype, device=self.device)
        op = self.ops[t]
        if isinstance(op, AffineOp):
            return op.bias
        parts = [self._constant(s) for s in self.inputs[t]] if isinstance(op, JoinOp) else []
        if isinstance(op, AddOp):
            return torch.stack(parts).sum(0)
        if isinstance(op, ConcatOp):
            return torch.cat(parts)
        return torch.zeros(op_out_size(op), dtype=self.dtype, device=self.device)

    @property
    def relu_sizes(self) -> list[int]:
        """Neuron count of each ReLU layer."""
        return [self.slot_sizes[s] for s in self.relu_slots]

    @property
    def margins(self) -> tuple[float, float, float]:
        """``(rel, abs, infeasible_tol)`` safety constants of this dtype."""
        return margins_for(self.dtype)

    @cached_property
    def unit(self) -> float:
        """Unit roundoff of the computation dtype."""
        return rounding.unit(self.dtype)

    @cached_property
    def longest_product(self) -> int:
        """The longest dot product any bound of this network takes (error-model size)."""
        widths = [self.input_size,
                  *(max(op.inner) for op in self.ops if isinstance(op, AffineOp)),
                  *(op.out_size for op in self.ops if isinstance(op, (AddOp, ConcatOp))),
                  *self.slot_sizes, self.num_rows]
        return int(max(widths)) + 4 * len(self.ops) + 8

    @cached_property
    def err_scale(self) -> float:
        """Factor applied to every accumulated error term: covers its own rounding."""
        return 1.0 + 4.0 * rounding.gamma(self.longest_product, self.dtype)

    def gamma(self, n: int) -> float:
        """Return gamma_n of the computation dtype."""
        return rounding.gamma(n, self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Return the margins ``C f(x) - d`` for x (N, n_in) (a reference, not sound)."""
        vals = [x.to(dtype=self.dtype, device=self.device)]
        for op, ins in zip(self.ops, self.inputs, strict=True):
            args = [vals[t + 1] for t in ins]
            h = args[0]
            if isinstance(op, AffineOp):
                h = op.linear(h) + op.bias
            elif isinstance(op, ReluOp):
                h = h.clamp(min=0)
            elif isinstance(op, AddOp):
                h = torch.stack(args).sum(0)
            elif isinstance(op, ConcatOp):
                h = torch.cat(args, 1)
            else:
                padded = torch.cat([h, h.new_full((h.shape[0], 1), -torch.inf)], 1)
                h = padded[:, op.windows].amax(dim=2)
            vals.append(h)
        return vals[-1]


def _tensor(a: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64)).to(dtype=dtype, device=device)


def _inner(layer: Dense | Conv2d) -> tuple[int, int]:
    """Return the dot-product lengths of the layer's forward and transposed products."""
    if isinstance(layer, Dense):
        return int(layer.in_size), int(layer.out_size)
    c_out, c_in, kh, kw = layer.weight.shape
    return int(c_in * kh * kw), int(c_out * kh * kw)


def _make_op(w64: np.ndarray, b64: np.ndarray, w_err: float, b_err: np.ndarray,
             fold_err: np.ndarray | None, conv: Conv2d | None, inner: tuple[int, int],
             dtype: torch.dtype, device: torch.device) -> AffineOp:
    """Build an AffineOp in ``dtype`` with the error terms of rounding ``w64``/``b64`` to it.

    ``w_err`` (relative) and ``b_err``/``fold_err`` (absolute) are the errors of ``w64`` and
    ``b64`` themselves against the exact layer.
    """
    weight = _tensor(w64, dtype, device)
    bias = _tensor(b64, dtype, device)
    u = rounding.unit(dtype)
    rounded = not np.array_equal(weight.double().cpu().numpy(), w64)
    w_rel = (1.0 + w_err) * (1.0 + (2.0 * u if rounded else 0.0)) - 1.0
    kappa_fwd, kappa = ((w_rel + g) * (1.0 + 2.0 * g) * (1.0 + 1e-9)
                        for g in (rounding.gamma(n + 2, dtype) for n in inner))
    b_total = b_err + np.abs(b64 - bias.double().cpu().numpy())
    b_total = np.nextafter(b_total * (1.0 + 4.0 * 2.0 ** -53), np.inf)
    fold = None if fold_err is None else rounding.up(_tensor(fold_err, dtype, device))
    n_in = int(np.prod(conv.in_shape)) if conv is not None else w64.shape[1]
    n_out = int(bias.shape[0])
    same = dtype == torch.float64
    b_err64 = np.nextafter(np.asarray(b_err, dtype=np.float64), np.inf)
    exact = (weight if same else _tensor(w64, torch.float64, device),
             bias if same else _tensor(b64, torch.float64, device), float(w_err),
             _tensor(np.broadcast_to(b_err64, b64.shape), torch.float64, device))
    return AffineOp(weight, weight.abs(), bias, conv, n_in, n_out, kappa, kappa_fwd,
                    rounding.up(_tensor(b_total, dtype, device)), fold, inner, exact)


def _affine(layer: Dense | Conv2d, dtype: torch.dtype, device: torch.device) -> AffineOp:
    bias = layer.bias if isinstance(layer, Dense) else layer.flat_bias()
    conv = layer if isinstance(layer, Conv2d) else None
    return _make_op(layer.weight, bias, layer.weight_err, flat_bias_err(layer), None, conv,
                    _inner(layer), dtype, device)


def _fold_spec(ops: list[Op], last_layer: Dense | None, n_out: int, C: np.ndarray,
               d: np.ndarray, dtype: torch.dtype, device: torch.device) -> None:
    """Replace the last dense layer ``(W, b)`` by ``(C W, C b - d)`` (or append ``(C, -d)``,
    reading the last op).

    The float64 products ``C W`` and ``C b - d`` are rounded; their error bounds
    (``gamma_k (|C| |W|)`` with k the nonzeros per row of C, plus the layer's own recorded
    error carried through ``|C|``) become the op's ``fold_err`` and bias error.
    """
    last = ops[-1] if ops else None
    if isinstance(last, AffineOp) and last.conv is None and last_layer is not None:
        W, b = last_layer.weight, last_layer.bias
        k = int(max((C != 0).sum(axis=1).max(), 1))
        g = rounding.gamma(k + 1, torch.float64)
        absC = np.abs(C)
        fold = g * (absC @ np.abs(W)) + last_layer.weight_err * (absC @ np.abs(W))
        b_err = g * (absC @ np.abs(b) + np.abs(d)) + absC @ flat_bias_err(last_layer)
        ops[-1] = _make_op(C @ W, C @ b - d, 0.0, b_err * (1 + 1e-9), fold * (1 + 1e-9),
                           None, (W.shape[1], max(last.inner[1], C.shape[0])), dtype, device)
        return
    ops.append(_make_op(C, -d, 0.0, np.zeros(C.shape[0]), None, None,
                        (C.shape[1], C.shape[0]), dtype, device))


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
    g = _OpGraph(network, dtype, device)
    for i, (layer, ins, n_in) in enumerate(zip(network.layers, network.inputs,
                                               network.in_sizes, strict=True)):
        g.add(i, layer, ins, n_in)
    if g.out(len(network.layers) - 1) != len(g.ops) - 1:
        g.append(AddOp(network.num_outputs, 1), (g.out(len(network.layers) - 1),), None)
    last = g.layer_of[-1] if g.ops else None
    n_ops = len(g.ops)
    _fold_spec(g.ops, last if isinstance(last, Dense) else None, network.num_outputs, C, d,
               dtype, device)
    if len(g.ops) > n_ops:
        g.inputs.append((n_ops - 1,))
    rounding.strict_matmul(device, dtype)
    return BoundedNetwork(tuple(g.ops), network.input_size, int(C.shape[0]),
                          tuple(g.slot_ops), tuple(g.relu_slots), tuple(g.slot_sizes), dtype,
                          device, tuple(g.inputs))


class _OpGraph:
    """The ops being built by :func:`prepare` (a private workspace): IR tensor -> op index.

    A tensor that several layers read gets an identity :class:`AddOp` after it unless a
    ReLU, pool or join op produced it (see the module docstring).
    """

    def __init__(self, network: Network, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.ops: list[Op] = []
        self.inputs: list[tuple[int, ...]] = []
        self.layer_of: list[Layer | None] = []
        self.slot_ops: list[int] = []
        self.relu_slots: list[int] = []
        self.slot_sizes: list[int] = []
        self.tensor_op: dict[int, int] = {-1: -1}
        self.shared = _shared_tensors(network)
        if -1 in self.shared:
            self.append(AddOp(network.input_size, 1), (-1,), None)
            self.tensor_op[-1] = 0

    def out(self, tensor: int) -> int:
        """Return the op whose output is IR tensor ``tensor``."""
        return self.tensor_op[tensor]

    def append(self, op: Op, inputs: tuple[int, ...], layer: Layer | None) -> int:
        self.ops.append(op)
        self.inputs.append(inputs)
        self.layer_of.append(layer)
        return len(self.ops) - 1

    def add(self, i: int, layer: Layer, ins: tuple[int, ...], n_in: int) -> None:
        """Add the op of IR layer i (reading IR tensors ``ins``)."""
        srcs = tuple(self.tensor_op[t] for t in ins)
        if isinstance(layer, Flatten):
            self.tensor_op[i] = srcs[0]
            return
        slot = len(self.slot_ops)
        op: Op
        if isinstance(layer, (Dense, Conv2d)):
            op = _affine(layer, self.dtype, self.device)
        elif isinstance(layer, ReLU):
            self.relu_slots.append(slot)
            op = ReluOp(layer.size, len(self.relu_slots) - 1, slot)
        elif isinstance(layer, MaxPool2d):
            win = layer.window_indices()
            win = np.where(win < 0, layer.in_size, win)
            op = PoolOp(torch.as_tensor(win, dtype=torch.long, device=self.device),
                        layer.in_size, layer.out_size, slot)
        elif isinstance(layer, Add):
            op = AddOp(layer.size, len(srcs))
        elif isinstance(layer, Concat):
            op = ConcatOp(tuple(int(n) for n in layer.sizes))
        else:
            raise InputError("network", f"unsupported layer {type(layer).__name__}")
        k = self.append(op, srcs, layer)
        if isinstance(op, (ReluOp, PoolOp)):
            self.slot_ops.append(k)
            self.slot_sizes.append(n_in)
        if isinstance(op, AffineOp) and i in self.shared:
            k = self.append(AddOp(op.out_size, 1), (k,), None)
        self.tensor_op[i] = k


def _shared_tensors(network: Network) -> set[int]:
    """Return the IR tensors (-1: the input) that several non-Flatten layers read, directly
    or through Flatten layers (which disappear)."""
    root = {-1: -1}
    count: dict[int, int] = {}
    for i, (layer, ins) in enumerate(zip(network.layers, network.inputs, strict=True)):
        if isinstance(layer, Flatten):
            root[i] = root[ins[0]]
            continue
        root[i] = i
        for t in ins:
            count[root[t]] = count.get(root[t], 0) + 1
    out = root[len(network.layers) - 1]
    if out != len(network.layers) - 1:  # the specification then reads it too
        count[out] = count.get(out, 0) + 1
    return {t for t, c in count.items() if c > 1}
