"""The network IR: layers acting on flat vectors, in a chain or a DAG of named tensors.

Every layer maps a batch of flat inputs ``(B, n_in)`` to flat outputs ``(B, n_out)``; images
are flattened in (C, H, W) order, as ONNX ``Flatten`` does, and convolution / pooling layers
carry their ``in_shape`` and ``out_shape`` to reshape internally. This keeps bounds, LP and MILP
code uniform: a ReLU layer of the network is just a vector of ``n_l`` neurons.

Affine layers (:class:`Dense`, :class:`Conv2d`) expose ``forward(x)`` (exact float64),
``backward(A)`` (the product ``A @ W`` for ``A`` of shape (..., n_out), which CROWN and the LP
builder need) and ``matrix()`` (W as a dense array or a scipy sparse matrix).

Graphs: tensor ``-1`` is the network input and tensor ``i`` the output of ``layers[i]``. A
:class:`Network` is a topologically ordered list of layers, and ``Network.inputs[i]`` names the
tensors layer i reads (all earlier). A chain, the common case, reads ``(i - 1,)`` everywhere;
a residual network adds :class:`Add` layers that read two tensors (the block's input, possibly
through a projection, and the block's last layer), and :class:`Concat` layers join several.
A tensor may feed several layers; the network's output is the last layer's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from bnbver.errors import InputError


def _as_f64(a: Any) -> np.ndarray:
    out: np.ndarray = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Dense:
    """Affine layer ``y = W x + b``.

    Attributes:
        weight: (n_out, n_in) float64.
        bias: (n_out,) float64.
        weight_err: relative error of ``weight`` against the source model's exact weights
            ``W*``: ``|W* - W| <= weight_err * |W|`` elementwise (0: exact). Set by loaders
            that fold constants in float64 (see :func:`affine_tolerance`).
        bias_err: (n_out,) absolute error of ``bias`` against the source's exact bias, or None
            (exact).
    """

    weight: np.ndarray
    bias: np.ndarray
    weight_err: float = 0.0
    bias_err: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _as_f64(self.weight))
        object.__setattr__(self, "bias", _as_f64(self.bias))
        _check_tolerance(self)

    @property
    def in_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return ``x @ W.T + b`` for x of shape (B, n_in)."""
        out: np.ndarray = x @ self.weight.T + self.bias
        return out

    def backward(self, a: np.ndarray) -> np.ndarray:
        """Return ``a @ W`` for a of shape (..., n_out)."""
        out: np.ndarray = a @ self.weight
        return out

    def matrix(self) -> np.ndarray:
        """Return W as a dense (n_out, n_in) array."""
        return self.weight


@dataclass(frozen=True, eq=False)
class Conv2d:
    """2-D convolution (cross-correlation, as in torch and ONNX), on flat (C, H, W) vectors.

    Attributes:
        weight: (C_out, C_in, kh, kw) float64.
        bias: (C_out,) float64.
        stride: (sh, sw).
        padding: (top, left, bottom, right) zero padding.
        in_shape: (C_in, H, W).
        out_shape: (C_out, H_out, W_out).
        weight_err: relative error of ``weight`` against the source's exact weights (as in
            :class:`Dense`).
        bias_err: (C_out,) absolute error of ``bias``, or None (exact).
    """

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int] = field(default=(0, 0, 0))
    weight_err: float = 0.0
    bias_err: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", _as_f64(self.weight))
        object.__setattr__(self, "bias", _as_f64(self.bias))
        _check_tolerance(self)
        c_out, _, kh, kw = self.weight.shape
        _, h, w = self.in_shape
        pt, pl, pb, pr = self.padding
        h_out = (h + pt + pb - kh) // self.stride[0] + 1
        w_out = (w + pl + pr - kw) // self.stride[1] + 1
        object.__setattr__(self, "out_shape", (int(c_out), int(h_out), int(w_out)))

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape))

    @cached_property
    def _sparse(self) -> sp.csr_matrix:
        return _conv_matrix(self)

    def matrix(self) -> sp.csr_matrix:
        """Return the convolution as a sparse (n_out, n_in) matrix (without the bias)."""
        return self._sparse

    def flat_bias(self) -> np.ndarray:
        """Return the bias repeated over output positions, shape (n_out,)."""
        return np.repeat(self.bias, self.out_shape[1] * self.out_shape[2])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return the convolution of x, shape (B, n_in) -> (B, n_out), exact in float64."""
        out: np.ndarray = np.asarray((self._sparse @ x.T).T) + self.flat_bias()
        return out

    def backward(self, a: np.ndarray) -> np.ndarray:
        """Return ``a @ W`` for a of shape (..., n_out)."""
        flat = a.reshape(-1, a.shape[-1])
        out = np.asarray((self._sparse.T @ flat.T).T)
        return out.reshape(*a.shape[:-1], self.in_size)


def _check_tolerance(layer: Dense | Conv2d) -> None:
    """Validate and freeze the error fields of an affine layer."""
    if not (np.isfinite(layer.weight_err) and layer.weight_err >= 0):
        raise ValueError(f"weight_err must be a finite number >= 0, got {layer.weight_err}")
    if layer.bias_err is not None:
        err = _as_f64(layer.bias_err)
        if err.shape != layer.bias.shape or not np.all(np.isfinite(err) & (err >= 0)):
            raise ValueError("bias_err must be finite, >= 0 and shaped like the bias")
        object.__setattr__(layer, "bias_err", err)


def flat_bias_err(layer: Dense | Conv2d) -> np.ndarray:
    """Return the absolute bias error per flat output (zeros when exact)."""
    if layer.bias_err is None:
        return np.zeros(layer.out_size)
    if isinstance(layer, Conv2d):
        return np.repeat(layer.bias_err, layer.out_shape[1] * layer.out_shape[2])
    return layer.bias_err


def _conv_matrix(conv: Conv2d) -> sp.csr_matrix:
    """Build the sparse matrix of a convolution by enumerating (output, kernel tap) pairs."""
    c_out, c_in, kh, kw = conv.weight.shape
    _, h, w = conv.in_shape
    _, h_out, w_out = conv.out_shape
    pt, pl, _, _ = conv.padding
    oc, oy, ox, ic, ky, kx = np.meshgrid(
        np.arange(c_out), np.arange(h_out), np.arange(w_out),
        np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij",
    )
    iy = oy * conv.stride[0] - pt + ky
    ix = ox * conv.stride[1] - pl + kx
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    rows = ((oc * h_out + oy) * w_out + ox)[ok]
    cols = ((ic * h + iy) * w + ix)[ok]
    vals = conv.weight[oc[ok], ic[ok], ky[ok], kx[ok]]
    shape = (conv.out_size, conv.in_size)
    return sp.csr_matrix((vals, (rows, cols)), shape=shape)


@dataclass(frozen=True)
class ReLU:
    """Elementwise max(x, 0); ``size`` neurons."""

    size: int


@dataclass(frozen=True)
class Flatten:
    """Flatten (C, H, W) to a vector: the identity on flat vectors, kept to record shapes."""

    size: int


@dataclass(frozen=True)
class MaxPool2d:
    """2-D max pooling on flat (C, H, W) vectors; padded cells never win (they are -inf).

    Attributes:
        kernel: (kh, kw).
        stride: (sh, sw).
        padding: (top, left, bottom, right).
        in_shape: (C, H, W).
    """

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        c, h, w = self.in_shape
        pt, pl, pb, pr = self.padding
        h_out = (h + pt + pb - self.kernel[0]) // self.stride[0] + 1
        w_out = (w + pl + pr - self.kernel[1]) // self.stride[1] + 1
        return (c, h_out, w_out)

    @property
    def in_size(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape))

    def window_indices(self) -> np.ndarray:
        """Return (n_out, kh*kw) flat input indices of each window; -1 marks padding."""
        c, h, w = self.in_shape
        _, h_out, w_out = self.out_shape
        kh, kw = self.kernel
        pt, pl, _, _ = self.padding
        oc, oy, ox, ky, kx = np.meshgrid(
            np.arange(c), np.arange(h_out), np.arange(w_out),
            np.arange(kh), np.arange(kw), indexing="ij",
        )
        iy = oy * self.stride[0] - pt + ky
        ix = ox * self.stride[1] - pl + kx
        idx = (oc * h + iy) * w + ix
        idx = np.where((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w), idx, -1)
        return idx.reshape(c * h_out * w_out, kh * kw)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return the pooled batch, (B, n_in) -> (B, n_out)."""
        idx = self.window_indices()
        padded = np.concatenate([x, np.full((x.shape[0], 1), -np.inf)], axis=1)
        out: np.ndarray = padded[:, idx].max(axis=2)
        return out


@dataclass(frozen=True)
class Add:
    """Elementwise sum of two or more input tensors of ``size`` values each (a residual join).

    Exact in real arithmetic; evaluated in floating point, each addition is rounded, which
    the bounds engine charges (``bnbver.bounds``).
    """

    size: int


@dataclass(frozen=True)
class Concat:
    """Concatenation of the flat input vectors, in order, ``sizes[k]`` values from input k.

    On (C_k, H, W) tensors flattened in (C, H, W) order this is the concatenation along the
    channel axis (ONNX ``Concat(axis=1)``, ``torch.cat(dim=1)``).
    """

    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(sum(self.sizes))


Layer = Dense | Conv2d | ReLU | MaxPool2d | Flatten | Add | Concat
AFFINE_TYPES = (Dense, Conv2d)
JOIN_TYPES = (Add, Concat)


def layer_sizes(layer: Layer, n_in: int) -> int:
    """Return the flat output size of ``layer`` given its flat input size."""
    if isinstance(layer, (Dense, Conv2d, MaxPool2d, Add, Concat)):
        return layer.out_size if isinstance(layer, (Dense, Conv2d, MaxPool2d)) else layer.size
    return n_in


def chain_inputs(n_layers: int) -> tuple[tuple[int, ...], ...]:
    """Return the ``inputs`` of a chain of ``n_layers`` layers: layer i reads tensor i - 1."""
    return tuple((i - 1,) for i in range(n_layers))


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward network on flat inputs: a chain of layers, or a DAG of them.

    Attributes:
        layers: the layers in a topological order; the output is the last layer's output.
        input_shape: the shape of one input as the source model sees it (e.g. (1, 5) or
            (3, 32, 32)); bnbver works on its flattening of size ``input_size``.
        output_shape: the shape of one output in the source model.
        inputs: per layer the tensors it reads (``-1`` the network input, ``j`` the output
            of ``layers[j]``, ``j < i``); only :class:`Add` and :class:`Concat` read more
            than one. Empty (the default) means a chain: layer i reads tensor i - 1.
    """

    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] = ()
    inputs: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        inputs = tuple(tuple(int(t) for t in ins) for ins in self.inputs)
        object.__setattr__(self, "inputs", inputs or chain_inputs(len(self.layers)))
        _validate_graph(self.layers, self.inputs)
        _validate_layers(self.layers, self.inputs, self.input_size)
        if not self.output_shape:
            object.__setattr__(self, "output_shape", (self.num_outputs,))

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @cached_property
    def has_conv(self) -> bool:
        """True when some layer is a convolution (where the bounds' costs are convolutions:
        the defaults for float32 and for the steps per child follow it)."""
        return any(isinstance(layer, Conv2d) for layer in self.layers)

    @cached_property
    def is_chain(self) -> bool:
        """True when every layer reads the output of the layer before it."""
        return self.inputs == chain_inputs(len(self.layers))

    @property
    def sizes(self) -> list[int]:
        """Flat tensor sizes: ``sizes[0]`` is the input size and ``sizes[i + 1]`` the output
        size of layer i (in a chain, ``sizes[i]`` is also the input size of layer i)."""
        return _tensor_sizes(self.layers, self.inputs, self.input_size)

    @property
    def in_sizes(self) -> list[int]:
        """The size of the (first) input tensor of every layer."""
        sizes = self.sizes
        return [sizes[ins[0] + 1] for ins in self.inputs]

    def consumers(self) -> list[list[int]]:
        """Return per tensor (``-1`` first, then each layer's output) the layers reading it."""
        out: list[list[int]] = [[] for _ in range(len(self.layers) + 1)]
        for i, ins in enumerate(self.inputs):
            for t in ins:
                out[t + 1].append(i)
        return out

    def relu_input_prefix(self, k: int) -> Network:
        """Return the network whose output is the input of ReLU layer ``k``.

        It keeps every layer before that ReLU (so its ReLU layers are the first ``k`` of
        this network); in a DAG a final :class:`Flatten` reads the ReLU's input tensor.
        """
        pos = self.relu_positions[k]
        if self.is_chain:
            return Network(self.layers[:pos], self.input_shape)
        src = self.inputs[pos][0]
        return Network((*self.layers[:pos], Flatten(self.sizes[src + 1])), self.input_shape,
                       inputs=(*self.inputs[:pos], (src,)))

    @property
    def num_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def relu_sizes(self) -> list[int]:
        """Neuron count of each ReLU layer, in order."""
        return [layer.size for layer in self.layers if isinstance(layer, ReLU)]

    @property
    def relu_positions(self) -> list[int]:
        """Index in ``layers`` of each ReLU layer."""
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, ReLU)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return the exact float64 output for x of shape (B, n_in) or (n_in,)."""
        out, _ = self.forward_with_preactivations(x)
        return out

    def forward_with_preactivations(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Return the output and the input of every ReLU layer, each (B, n_l).

        A 1-D input gives a 1-D output and 1-D pre-activations.
        """
        single = np.ndim(x) == 1
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if h.shape[1] != self.input_size:
            raise ValueError(f"input has {h.shape[1]} values, network takes {self.input_size}")
        pre: list[np.ndarray] = []
        if not self.is_chain:
            h = self._graph_forward(h, pre)
        else:
            for layer in self.layers:
                if isinstance(layer, ReLU):
                    pre.append(h)
                    h = np.maximum(h, 0.0)
                elif not isinstance(layer, Flatten):
                    h = apply_layer(layer, [h])
        if single:
            return h[0], [p[0] for p in pre]
        return h, pre

    def _graph_forward(self, x: np.ndarray, pre: list[np.ndarray]) -> np.ndarray:
        """Evaluate the DAG on (B, n_in); append every ReLU layer's input to ``pre``."""
        vals: list[np.ndarray] = [x]
        for layer, ins in zip(self.layers, self.inputs, strict=True):
            args = [vals[t + 1] for t in ins]
            if isinstance(layer, ReLU):
                pre.append(args[0])
            vals.append(apply_layer(layer, args))
        return vals[-1]

    def forward_enclosure(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the float64 output of a single input x (n_in,) and a bound on its error.

        The exact output of the network (real arithmetic, the layers' recorded weight and
        bias errors included) lies within ``err`` of the returned ``y``, elementwise: each
        affine layer adds ``gamma_{n+2} (|W| |h| + |b|)`` for its own rounding plus its
        recorded error, and carries the input's error through ``|W|``; ReLU and max pooling
        are 1-Lipschitz elementwise (windowwise); a residual sum adds its inputs' errors and
        ``2u`` of each rounded partial sum; a concatenation concatenates them. This is what a
        ``sat`` rests on.
        """
        h = np.asarray(x, dtype=np.float64).reshape(-1)
        if h.shape[0] != self.input_size:
            raise ValueError(f"input has {h.shape[0]} values, network takes {self.input_size}")
        vals: list[tuple[np.ndarray, np.ndarray]] = [(h, np.zeros_like(h))]
        for layer, ins in zip(self.layers, self.inputs, strict=True):
            vals.append(_enclosure_step(layer, [vals[t + 1] for t in ins]))
        return vals[-1]

    def forward_exact(self, x: np.ndarray) -> np.ndarray | None:
        """Return the exact output of x in rational arithmetic (an object array of
        ``Fraction``), or None when that is not possible or not affordable.

        Every float64 is a rational number, so the IR network has an exact value at every
        float64 input. None when a layer records an error of its own numbers (the IR is then
        not the source model exactly) or when the network has more than ``EXACT_MAX_WEIGHTS``
        weights (rational arithmetic costs microseconds per product).
        """
        affine = [la for la in self.layers if isinstance(la, (Dense, Conv2d))]
        if any(la.weight_err or la.bias_err is not None for la in affine):
            return None
        if sum(int(la.weight.size) for la in affine) > EXACT_MAX_WEIGHTS:
            return None
        vals = [_rational(np.asarray(x, dtype=np.float64).reshape(-1))]
        for layer, ins in zip(self.layers, self.inputs, strict=True):
            vals.append(_exact_step(layer, [vals[t + 1] for t in ins]))
        return vals[-1]

    def to_torch(self, dtype: Any = None, device: Any = "cpu") -> Any:
        """Return an equivalent ``torch.nn.Module`` on flat inputs (B, n_in)."""
        from bnbver.torch_model import build_torch_module

        return build_torch_module(self, dtype=dtype, device=device)


_U64 = 2.0 ** -53
#: Largest network (in weights) whose output ``forward_exact`` computes in rationals.
EXACT_MAX_WEIGHTS = 2_000_000


def _rational(a: np.ndarray) -> np.ndarray:
    """Return a float64 array as an object array of exact ``Fraction`` values."""
    flat = [Fraction(float(v)) for v in np.asarray(a, dtype=np.float64).reshape(-1)]
    return np.array(flat, dtype=object).reshape(np.shape(a))


def _affine_enclosure(layer: Dense | Conv2d, h: np.ndarray,
                      err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``layer(h)`` and the error bound of the result (see ``forward_enclosure``)."""
    y = layer.forward(h[None])[0]
    absW = abs(layer.matrix()) if isinstance(layer, Conv2d) else np.abs(layer.weight)
    n = layer.in_size if isinstance(layer, Dense) else int(np.prod(layer.weight.shape[1:]))
    nu = (n + 4) * _U64
    gamma = nu / (1.0 - nu) * (1.0 + 1e-9)
    bias = layer.bias if isinstance(layer, Dense) else layer.flat_bias()
    size = np.asarray(absW @ (np.abs(h) + err)).reshape(-1) + np.abs(bias)
    new = (np.asarray(absW @ err).reshape(-1) + (gamma + layer.weight_err) * size
           + flat_bias_err(layer))
    return y, np.nextafter(new * (1.0 + 8.0 * _U64), np.inf)


def _enclosure_step(layer: Layer, args: list[tuple[np.ndarray, np.ndarray]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Return one layer's float64 output and its error bound (see ``forward_enclosure``)."""
    h, err = args[0]
    if isinstance(layer, (Dense, Conv2d)):
        return _affine_enclosure(layer, h, err)
    if isinstance(layer, ReLU):
        return np.maximum(h, 0.0), err
    if isinstance(layer, MaxPool2d):
        idx = layer.window_indices()
        return layer.forward(h[None])[0], np.concatenate([err, [0.0]])[idx].max(axis=1)
    if isinstance(layer, Add):
        for h2, e2 in args[1:]:
            h = h + h2
            err = np.nextafter((err + e2 + 2.0 * _U64 * np.abs(h)) * (1.0 + 4.0 * _U64),
                               np.inf)
        return h, err
    if isinstance(layer, Concat):
        return np.concatenate([a[0] for a in args]), np.concatenate([a[1] for a in args])
    return h, err


def _exact_step(layer: Layer, args: list[np.ndarray]) -> np.ndarray:
    """Return one layer's exact (rational) output (see ``forward_exact``)."""
    h = args[0]
    if isinstance(layer, (Dense, Conv2d)):
        W = layer.weight if isinstance(layer, Dense) else layer.matrix().toarray()
        b = layer.bias if isinstance(layer, Dense) else layer.flat_bias()
        out: np.ndarray = _rational(W).dot(h) + _rational(b)
        return out
    if isinstance(layer, ReLU):
        return np.array([v if v > 0 else Fraction(0) for v in h], dtype=object)
    if isinstance(layer, MaxPool2d):
        idx = layer.window_indices()
        return np.array([max(h[i] for i in row if i >= 0) for row in idx], dtype=object)
    if isinstance(layer, Add):
        for other in args[1:]:
            h = h + other
        return np.asarray(h, dtype=object)
    if isinstance(layer, Concat):
        return np.concatenate(args)
    return h


def apply_layer(layer: Layer, args: Sequence[np.ndarray]) -> np.ndarray:
    """Return the float64 output of one layer on its input batches (each (B, n))."""
    if isinstance(layer, ReLU):
        relu: np.ndarray = np.maximum(args[0], 0.0)
        return relu
    if isinstance(layer, Add):
        out = args[0]
        for a in args[1:]:
            out = out + a
        return out
    if isinstance(layer, Concat):
        return np.concatenate(list(args), axis=1)
    if isinstance(layer, Flatten):
        return args[0]
    return layer.forward(args[0])


def _tensor_sizes(layers: Sequence[Layer], inputs: Sequence[tuple[int, ...]],
                  n_in: int) -> list[int]:
    """Return the flat size of the input and of every layer's output."""
    out = [n_in]
    for layer, ins in zip(layers, inputs, strict=True):
        out.append(layer_sizes(layer, out[ins[0] + 1]))
    return out


def _validate_graph(layers: Sequence[Layer], inputs: Sequence[tuple[int, ...]]) -> None:
    """Check every layer reads earlier tensors, as many as it takes."""
    if len(inputs) != len(layers):
        raise InputError("inputs", f"needs one entry per layer ({len(layers)}), "
                         f"got {len(inputs)}")
    for i, (layer, ins) in enumerate(zip(layers, inputs, strict=True)):
        if not ins or any(t < -1 or t >= i for t in ins):
            raise InputError(f"layer {i}", f"reads tensors {list(ins)}; each must be in "
                             f"[-1, {i - 1}] (-1: the network input)")
        many = isinstance(layer, (Add, Concat))
        if (isinstance(layer, Add) and len(ins) < 2) or (not many and len(ins) != 1):
            raise InputError(f"layer {i}", f"{type(layer).__name__} cannot read "
                             f"{len(ins)} tensors")
        if isinstance(layer, Concat) and len(layer.sizes) != len(ins):
            raise InputError(f"layer {i}", f"Concat of {len(layer.sizes)} parts reads "
                             f"{len(ins)} tensors")


def _validate_layers(layers: Sequence[Layer], inputs: Sequence[tuple[int, ...]],
                     n_in: int) -> None:
    """Check sizes fit and weights are finite; raise InputError naming the layer otherwise."""
    sizes = [n_in]
    for i, (layer, ins) in enumerate(zip(layers, inputs, strict=True)):
        finite = not isinstance(layer, (Dense, Conv2d)) or (
            np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias)))
        if not finite:
            raise InputError(f"layer {i}", "NaN or infinite weights")
        got = [sizes[t + 1] for t in ins]
        expected = (list(layer.sizes) if isinstance(layer, Concat) else
                    [getattr(layer, "in_size", getattr(layer, "size", got[0]))] * len(got))
        if expected != got:
            shown = got[0] if len(got) == 1 else got
            want = expected[0] if len(expected) == 1 else expected
            raise InputError(f"layer {i}", f"expects {want} inputs, gets {shown}")
        sizes.append(layer_sizes(layer, got[0]))
