"""Load a feed-forward ReLU network from ONNX into the :mod:`bnbver.network` IR.

The graph must be a linear chain: every node other than ``Constant`` takes the output of the
node before it (plus constants: initializers or ``Constant`` outputs). Each operator has a
handler in ``_HANDLERS`` (a dispatch dict, OMLT style):

- ``MatMul`` (+ a following ``Add``) and ``Gemm`` (``transA = 0``, any ``transB``/``alpha``/
  ``beta``) become :class:`Dense` with ``W = alpha * B'`` and ``b = beta * C``;
- ``Conv`` (2-D, ``group = 1``, ``dilations = 1``) becomes :class:`Conv2d`; ``MaxPool``
  (``ceil_mode = 0``) becomes :class:`MaxPool2d`; ``Relu`` becomes :class:`ReLU`;
- ``Flatten`` and ``Reshape`` keep the batch dimension and only re-label the flat (C-order)
  vector, so they change the tracked shape and at most add a :class:`Flatten` marker;
- ``Identity`` and ``Dropout`` (inference) are dropped; an ``Identity`` of a constant (which
  ``torch.onnx.export`` writes for weights) is a constant, like a ``Constant`` node;
- ``AveragePool`` (zero padding only when ``count_include_pad = 1``) and ``GlobalAveragePool``
  become a :class:`Conv2d` with fixed weights (``bnbver.io.layers.avg_pool_conv``);
- elementwise ``Add``/``Sub``/``Mul``/``Div`` with a constant, and ``BatchNormalization``, are
  elementwise affine maps ``v -> s * v + t`` (s, t flat arrays over the tensor). They are folded
  into the affine layer just before them (``W' = diag(s) W``, ``b' = s * b + t``) when there is
  one, otherwise into the next one (``W' = W diag(s)``, ``b' = W t + b``). Folding into a
  :class:`Conv2d` is exact only when s and t are constant per channel, and, for a Conv with
  zero padding after the map, when ``t = 0`` (a padded cell would otherwise see ``t`` where the
  original sees 0). When neither fold is exact, the map becomes a diagonal :class:`Dense` layer
  if the tensor has at most ``MAX_DIAGONAL`` values, and an UnsupportedOperatorError otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnx
from google.protobuf.message import Error as ProtobufError
from onnx import numpy_helper

from bnbver.errors import InputError, UnsupportedOperatorError
from bnbver.io.layers import avg_pool_conv
from bnbver.network import Conv2d, Dense, Flatten, Layer, MaxPool2d, Network, ReLU

MAX_DIAGONAL = 4096
"""Largest tensor whose unfoldable elementwise map becomes an explicit diagonal Dense layer."""


@dataclass
class _State:
    """The chain walk: the current activation, its shape (without batch) and the layers so far.

    ``pending`` is an elementwise map ``(s, t)`` not yet folded into an affine layer: the true
    activation is ``s * h + t`` where h is what ``layers`` compute.
    """

    src: str
    consts: dict[str, np.ndarray]
    current: str
    shape: tuple[int, ...]
    layers: list[Layer] = field(default_factory=list)
    pending: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> int:
        """Return the number of values of the current activation."""
        return int(np.prod(self.shape))


_Handler = Callable[[_State, onnx.NodeProto, str], None]


def load_onnx(path: str | Path) -> Network:
    """Load an ONNX model that is a chain of supported operators.

    Args:
        path: the ``.onnx`` file.

    Returns:
        The network on flat inputs; ``input_shape`` and ``output_shape`` are the model's
        shapes without the batch dimension.

    Raises:
        InputError: the file is missing or not a valid model, the graph is not a chain, or a
            weight is NaN or infinite.
        UnsupportedOperatorError: a node's operator (or attribute) has no encoding.
    """
    src = str(path)
    model = _read_model(Path(path), src)
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    name, shape = _graph_input(graph, consts, src)
    st = _State(src, consts, name, shape)
    for i, node in enumerate(graph.node):
        _visit(st, node, node.name or f"#{i} ({node.op_type})")
    _finish(st, graph)
    return Network(tuple(st.layers), shape, st.shape)


def _read_model(path: Path, src: str) -> onnx.ModelProto:
    """Read and decode the protobuf."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(src, "no such file") from None
    except OSError as exc:
        raise InputError(src, f"cannot read: {exc}") from None
    try:
        model = onnx.load_model_from_string(data)
    except (ProtobufError, ValueError) as exc:
        raise InputError(src, f"not a valid ONNX model: {exc}") from None
    if not model.graph.node or not model.graph.input:
        raise InputError(src, "not a valid ONNX model: the graph has no nodes or no input")
    return model


def _graph_input(
    graph: onnx.GraphProto, consts: dict[str, np.ndarray], src: str
) -> tuple[str, tuple[int, ...]]:
    """Return the name and the shape (without the batch dimension) of the one real input."""
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise InputError(src, f"expected one network input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) < 2:
        raise InputError(src, f"input '{inputs[0].name}' needs a batch dimension and features")
    shape = tuple(int(d.dim_value) for d in dims[1:])
    if any(s <= 0 for s in shape):
        raise InputError(src, f"input '{inputs[0].name}' has a dynamic non-batch dimension")
    return inputs[0].name, shape


def _visit(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Check one node sits on the chain and apply its handler."""
    if node.op_type == "Constant":
        st.consts[node.output[0]] = _constant_value(node, st.src, label)
        return
    handler = _HANDLERS.get(node.op_type)
    if handler is None or node.domain not in ("", "ai.onnx"):
        raise UnsupportedOperatorError(
            st.src, f"unsupported operator '{node.op_type}' in node '{label}'"
        )
    acts = [x for x in node.input if x and x not in st.consts]
    if node.op_type == "Identity" and not acts and node.input:
        st.consts[node.output[0]] = st.consts[node.input[0]]
        return
    if acts != [st.current]:
        raise InputError(
            st.src,
            f"graph is not a linear chain: node '{label}' takes {acts}, expected ['{st.current}']",
        )
    handler(st, node, label)
    st.current = node.output[0]


def _finish(st: _State, graph: onnx.GraphProto) -> None:
    """Flush a pending elementwise map and check the chain ends at the graph output."""
    outs = [o.name for o in graph.output]
    if outs != [st.current]:
        raise InputError(
            st.src, f"graph is not a linear chain: outputs {outs}, chain ends at '{st.current}'"
        )
    _flush_pending(st, "the output")


def _constant_value(node: onnx.NodeProto, src: str, label: str) -> np.ndarray:
    """Return the tensor of a Constant node."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(onnx.helper.get_attribute_value(attr))
    raise UnsupportedOperatorError(src, f"unsupported Constant form in node '{label}'")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Return the node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _const(st: _State, name: str, label: str) -> np.ndarray:
    """Return a constant input as float64, refusing NaN and infinite values."""
    arr = np.asarray(st.consts[name], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(st.src, f"NaN or infinite weights in '{name}' (node '{label}')")
    return arr


def _unsupported(st: _State, node: onnx.NodeProto, label: str, what: str) -> NoReturn:
    """Raise the error for an unsupported attribute or use of a supported operator."""
    raise UnsupportedOperatorError(
        st.src, f"unsupported operator '{node.op_type}' in node '{label}': {what}"
    )


# ---------------------------------------------------------------------------------------------
# Shape-only operators


def _identity(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Identity and Dropout (inference mode) leave the activation unchanged."""


def _flatten(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Flatten to (batch, features); an axis that mixes batch and features is refused."""
    axis = int(_attrs(node).get("axis", 1))
    rank = len(st.shape) + 1
    axis = axis + rank if axis < 0 else axis
    if axis < 1 or int(np.prod(st.shape[: axis - 1])) != 1:
        _unsupported(st, node, label, f"axis {axis} does not keep the batch dimension apart")
    _set_shape(st, (st.size,))


def _reshape(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Reshape keeping the batch dimension: the flat C-order vector is unchanged."""
    target = [int(v) for v in st.consts[node.input[1]].reshape(-1)]
    full = (1, *st.shape)
    dims = [full[i] if v == 0 and i < len(full) else v for i, v in enumerate(target)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = st.size // max(known, 1)
    if dims.count(-1) or dims[0] != 1 or int(np.prod(dims)) != st.size:
        _unsupported(st, node, label, f"shape {target} does not keep the batch dimension")
    _set_shape(st, tuple(dims[1:]))


def _set_shape(st: _State, shape: tuple[int, ...]) -> None:
    """Change the tracked shape; mark image -> vector with a Flatten layer."""
    if sum(d > 1 for d in st.shape) > 1 and sum(d > 1 for d in shape) <= 1:
        _flush_pending(st, "a Flatten")
        st.layers.append(Flatten(st.size))
    st.shape = shape


# ---------------------------------------------------------------------------------------------
# Affine and nonlinear operators


def _matmul(st: _State, node: onnx.NodeProto, label: str) -> None:
    """MatMul by a constant (in, out) matrix on the last axis: Dense(W.T, 0)."""
    if node.input[0] != st.current or node.input[1] not in st.consts:
        _unsupported(st, node, label, "only activation @ constant is supported")
    w = _const(st, node.input[1], label)
    if w.ndim != 2 or w.shape[0] != st.shape[-1] or st.size != st.shape[-1]:
        _unsupported(st, node, label, f"weight {w.shape} does not fit input {st.shape}")
    _emit_affine(st, Dense(w.T, np.zeros(w.shape[1])), label)
    st.shape = (*st.shape[:-1], w.shape[1])


def _gemm(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Gemm ``alpha * A B' + beta * C`` with A the activation: Dense(alpha B', beta C)."""
    a = _attrs(node)
    if a.get("transA", 0) or node.input[0] != st.current or len(st.shape) != 1:
        _unsupported(st, node, label, "the activation must be the untransposed 2-D A input")
    b = _const(st, node.input[1], label)
    w = b if a.get("transB", 0) else b.T
    if w.ndim != 2 or w.shape[1] != st.size:
        _unsupported(st, node, label, f"weight {b.shape} does not fit input {st.shape}")
    bias = np.zeros(w.shape[0])
    if len(node.input) > 2 and node.input[2]:
        c = _const(st, node.input[2], label)
        bias = np.broadcast_to(c, (1, w.shape[0])).reshape(-1) * float(a.get("beta", 1.0))
    _emit_affine(st, Dense(float(a.get("alpha", 1.0)) * w, bias), label)
    st.shape = (w.shape[0],)


def _spatial(st: _State, node: onnx.NodeProto, label: str, kernel: tuple[int, int]) -> tuple[
    tuple[int, int], tuple[int, int, int, int]
]:
    """Return (stride, padding) of a 2-D Conv/MaxPool node, refusing unsupported attributes."""
    a = _attrs(node)
    if len(st.shape) != 3:
        _unsupported(st, node, label, f"input shape {st.shape} is not (C, H, W)")
    if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("ceil_mode", 0):
        _unsupported(st, node, label, "dilations other than 1 or ceil_mode are not supported")
    if list(a.get("kernel_shape", kernel)) != list(kernel):
        _unsupported(st, node, label, "kernel_shape does not match the weight")
    sh, sw = (int(s) for s in a.get("strides", [1, 1]))
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(st.shape[1:], kernel, (sh, sw), upper=auto == "SAME_UPPER")
    elif auto not in ("NOTSET", "VALID"):
        _unsupported(st, node, label, f"auto_pad '{auto}'")
    return (sh, sw), (pads[0], pads[1], pads[2], pads[3])


def _same_pads(
    hw: tuple[int, ...], kernel: tuple[int, int], stride: tuple[int, int], upper: bool
) -> list[int]:
    """Return ONNX [top, left, bottom, right] pads for auto_pad SAME_UPPER / SAME_LOWER."""
    dims = zip(hw, kernel, stride, strict=True)
    total = [max((-(-n // s) - 1) * s + k - n, 0) for n, k, s in dims]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return [*small, *big] if upper else [*big, *small]


def _conv(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Conv (2-D, group 1): Conv2d on the (C, H, W) activation."""
    w = _const(st, node.input[1], label)
    if w.ndim != 4 or int(_attrs(node).get("group", 1)) != 1:
        _unsupported(st, node, label, "only 2-D convolutions with group=1 are supported")
    stride, pad = _spatial(st, node, label, (w.shape[2], w.shape[3]))
    if w.shape[1] != st.shape[0]:
        _unsupported(st, node, label, f"weight {w.shape} does not fit input {st.shape}")
    has_bias = len(node.input) > 2 and node.input[2]
    bias = _const(st, node.input[2], label) if has_bias else np.zeros(w.shape[0])
    in_shape = (st.shape[0], st.shape[1], st.shape[2])
    layer = Conv2d(w, bias.reshape(-1), stride, pad, in_shape)
    _emit_affine(st, layer, label)
    st.shape = layer.out_shape


def _maxpool(st: _State, node: onnx.NodeProto, label: str) -> None:
    """MaxPool (2-D): MaxPool2d; padded cells never win, as in ONNX."""
    kernel = tuple(int(k) for k in _attrs(node).get("kernel_shape", []))
    if len(kernel) != 2:
        _unsupported(st, node, label, "only 2-D pooling is supported")
    stride, pad = _spatial(st, node, label, (kernel[0], kernel[1]))
    _flush_pending(st, f"node '{label}'")
    in_shape = (st.shape[0], st.shape[1], st.shape[2])
    layer = MaxPool2d((kernel[0], kernel[1]), stride, pad, in_shape)
    st.layers.append(layer)
    st.shape = layer.out_shape


def _avgpool(st: _State, node: onnx.NodeProto, label: str) -> None:
    """AveragePool (2-D) as a Conv2d with fixed weights; padding must count in the divisor."""
    a = _attrs(node)
    kernel = tuple(int(k) for k in a.get("kernel_shape", []))
    if len(kernel) != 2:
        _unsupported(st, node, label, "only 2-D pooling is supported")
    stride, pad = _spatial(st, node, label, (kernel[0], kernel[1]))
    if any(pad) and not int(a.get("count_include_pad", 0)):
        _unsupported(st, node, label, "padding left out of the divisor (count_include_pad=0)")
    layer = avg_pool_conv((kernel[0], kernel[1]), stride, pad,
                          (st.shape[0], st.shape[1], st.shape[2]))
    _emit_affine(st, layer, label)
    st.shape = layer.out_shape


def _global_avgpool(st: _State, node: onnx.NodeProto, label: str) -> None:
    """GlobalAveragePool: the mean of each channel, a Conv2d with an H x W kernel."""
    if len(st.shape) != 3:
        _unsupported(st, node, label, f"input shape {st.shape} is not (C, H, W)")
    c, h, w = st.shape
    layer = avg_pool_conv((h, w), (1, 1), (0, 0, 0, 0), (c, h, w))
    _emit_affine(st, layer, label)
    st.shape = layer.out_shape


def _relu(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Relu: a ReLU layer on the whole tensor."""
    _flush_pending(st, f"node '{label}'")
    st.layers.append(ReLU(st.size))


# ---------------------------------------------------------------------------------------------
# Elementwise affine maps and their folding


def _elementwise(st: _State, node: onnx.NodeProto, label: str) -> None:
    """Add/Sub/Mul/Div of the activation and a constant, as ``v -> s * v + t``."""
    first_is_act = node.input[0] == st.current
    c = _const(st, node.input[1] if first_is_act else node.input[0], label)
    full = (1, *st.shape)
    if np.broadcast_shapes(c.shape, full) != full:
        _unsupported(st, node, label, f"constant {c.shape} broadcasts beyond {full}")
    flat = np.broadcast_to(c, full).reshape(-1).astype(np.float64)
    one, zero = np.ones(st.size), np.zeros(st.size)
    op = node.op_type
    if op == "Div" and (not first_is_act or np.any(flat == 0)):
        _unsupported(st, node, label, "division by the activation or by zero")
    if op == "Div":
        _apply_elementwise(st, 1.0 / flat, zero)
        return
    maps = {"Add": (one, flat), "Mul": (flat, zero),
            "Sub": (one, -flat) if first_is_act else (-one, flat)}
    _apply_elementwise(st, *maps[op])


def _batchnorm(st: _State, node: onnx.NodeProto, label: str) -> None:
    """BatchNormalization (inference): per-channel ``s = g / sqrt(var + eps)``, ``t = b - m s``."""
    g, b, mean, var = (_const(st, name, label) for name in node.input[1:5])
    eps = float(_attrs(node).get("epsilon", 1e-5))
    s = g / np.sqrt(var + eps)
    t = b - mean * s
    per_channel = (st.shape[0],) + (1,) * (len(st.shape) - 1)
    flat_s = np.broadcast_to(s.reshape(per_channel), st.shape).reshape(-1)
    flat_t = np.broadcast_to(t.reshape(per_channel), st.shape).reshape(-1)
    _apply_elementwise(st, flat_s, flat_t)


def _apply_elementwise(st: _State, s: np.ndarray, t: np.ndarray) -> None:
    """Fold ``v -> s * v + t`` into the last affine layer, or keep it pending."""
    if st.pending is not None:
        s0, t0 = st.pending
        st.pending = (s * s0, s * t0 + t)
        return
    last = st.layers[-1] if st.layers else None
    if isinstance(last, Dense):
        st.layers[-1] = Dense(s[:, None] * last.weight, s * last.bias + t)
    elif isinstance(last, Conv2d) and _per_channel(s, last.out_shape) is not None and (
        _per_channel(t, last.out_shape) is not None
    ):
        sc, tc = _per_channel(s, last.out_shape), _per_channel(t, last.out_shape)
        assert sc is not None and tc is not None
        w = last.weight * sc[:, None, None, None]
        st.layers[-1] = Conv2d(w, last.bias * sc + tc, last.stride, last.padding, last.in_shape)
    else:
        st.pending = (s, t)


def _per_channel(v: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray | None:
    """Return the per-channel values of a flat (C, H, W) array, or None if they vary in space."""
    img = v.reshape(shape)
    chan = img[:, 0, 0]
    return chan if np.array_equal(img, np.broadcast_to(chan[:, None, None], shape)) else None


def _emit_affine(st: _State, layer: Dense | Conv2d, label: str) -> None:
    """Append an affine layer, folding a pending elementwise map into its input side."""
    if st.pending is not None:
        s, t = st.pending
        folded = _fold_before(layer, s, t)
        if folded is None:
            _flush_pending(st, f"node '{label}'")
        else:
            layer = folded
            st.pending = None
    st.layers.append(layer)


def _fold_before(layer: Dense | Conv2d, s: np.ndarray, t: np.ndarray) -> Dense | Conv2d | None:
    """Return ``layer(s * v + t)`` as one layer, or None when that is not exact."""
    if isinstance(layer, Dense):
        return Dense(layer.weight * s[None, :], layer.weight @ t + layer.bias)
    sc, tc = _per_channel(s, layer.in_shape), _per_channel(t, layer.in_shape)
    if sc is None or tc is None or (any(layer.padding) and np.any(tc != 0)):
        return None
    w = layer.weight * sc[None, :, None, None]
    bias = layer.bias + np.einsum("oikl,i->o", layer.weight, tc)
    return Conv2d(w, bias, layer.stride, layer.padding, layer.in_shape)


def _flush_pending(st: _State, where: str) -> None:
    """Materialise a pending elementwise map as a diagonal Dense layer, if small enough."""
    if st.pending is None:
        return
    s, t = st.pending
    if s.size > MAX_DIAGONAL:
        raise UnsupportedOperatorError(
            st.src,
            f"cannot fold the elementwise operations before {where} into an affine layer "
            f"exactly, and {s.size} values exceed MAX_DIAGONAL={MAX_DIAGONAL}",
        )
    st.layers.append(Dense(np.diag(s), t))
    st.pending = None


_HANDLERS: dict[str, _Handler] = {
    "Identity": _identity,
    "Dropout": _identity,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _global_avgpool,
    "Relu": _relu,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "BatchNormalization": _batchnorm,
}
