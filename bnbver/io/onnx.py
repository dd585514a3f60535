"""Load a feed-forward ReLU network (a chain or a DAG) from ONNX into the :mod:`bnbver.network` IR.

The graph is read in a topological order, keeping only the nodes the output depends on.

- **Constant folding.** A node whose inputs are all constants (initializers, ``Constant``
  nodes, earlier folded results) is evaluated in numpy (``_FOLD``: shape arithmetic such as
  ``Shape``/``Gather``/``Unsqueeze``/``Concat`` chains that ``torch.onnx.export`` writes for a
  ``view``, ``Transpose``, ``Cast``, elementwise arithmetic, ...). ``Shape`` of an activation is
  a constant too: its shape with a batch of 1 (shapes come from the reader's own tracking,
  checked against ``onnx.shape_inference``). Float arithmetic on constants is rounded, and its
  relative error is carried into the layers that use the result.
- **Operators on activations**, one handler each in ``_HANDLERS`` (a dispatch dict, OMLT
  style), building the network through :class:`~bnbver.io.graph.GraphBuilder`:

  - ``MatMul`` by a constant and ``Gemm`` (``transA = 0``, any ``transB``/``alpha``/
    ``beta``) become :class:`Dense` with ``W = alpha * B'`` and ``b = beta * C``;
  - ``Conv`` (2-D, dilations 1, any strides, pads, ``auto_pad`` and ``group``: a grouped
    convolution becomes one Conv2d with a block-diagonal weight) becomes :class:`Conv2d`;
    ``MaxPool`` (``ceil_mode = 0``) :class:`MaxPool2d`; ``Relu`` :class:`ReLU`;
  - ``Flatten``, ``Reshape``, ``Identity`` and ``Dropout`` keep the flat (C-order) vector and
    only change the tracked shape (:meth:`GraphBuilder.alias`);
  - ``AveragePool`` (zero padding only when ``count_include_pad = 1``) and
    ``GlobalAveragePool`` become a :class:`Conv2d` with fixed weights;
  - ``Add``/``Sub``/``Mul``/``Div`` with a constant, and ``BatchNormalization``, are
    elementwise affine maps, folded as :mod:`bnbver.io.graph` describes;
  - ``Add`` of two activations (and ``Sum`` of several) is a residual join (:class:`Add`),
    ``Sub`` of two activations an Add of the negated second, and ``Concat`` of activations
    along the channel axis (or any axis with only 1s before it) a :class:`Concat`.
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
from bnbver.io.graph import GraphBuilder
from bnbver.io.layers import (
    U64,
    ElementwiseMap,
    avg_pool_conv,
    batchnorm_map,
    grouped_conv_weight,
)
from bnbver.network import Conv2d, Dense, MaxPool2d, Network

MAX_DIAGONAL = 4096
"""Largest tensor whose unfoldable elementwise map becomes an explicit diagonal Dense layer."""

#: Operators that only relabel the flat vector of an activation.
_ALIASES = frozenset({"Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})


@dataclass
class _Reader:
    """The walk: the model's constants (with their relative errors), shapes and the builder.

    ``const_err[name]`` bounds the relative error of a folded float constant against the
    exact result of the arithmetic that made it (0: exact, e.g. an initializer).
    """

    src: str
    consts: dict[str, np.ndarray]
    inferred: dict[str, tuple[int, ...]]
    builder: GraphBuilder
    const_err: dict[str, float] = field(default_factory=dict)


_Handler = Callable[[_Reader, onnx.NodeProto, str], None]


def load_onnx(path: str | Path) -> Network:
    """Load an ONNX model of supported operators (a chain, or a DAG with joins).

    Args:
        path: the ``.onnx`` file.

    Returns:
        The network on flat inputs; ``input_shape`` and ``output_shape`` are the model's
        shapes without the batch dimension.

    Raises:
        InputError: the file is missing or not a valid model, the graph has not one input
            and one output, or a weight is NaN or infinite.
        UnsupportedOperatorError: a node's operator (or attribute) has no encoding.
    """
    src = str(path)
    model = _read_model(Path(path), src)
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    name, shape = _graph_input(graph, consts, src)
    outs = [o.name for o in graph.output]
    if len(outs) != 1:
        raise InputError(src, f"expected one network output, found {len(outs)}")
    nodes = _sorted_nodes(graph, outs[0], src)
    readers = _count_readers(nodes, set(consts), name, outs[0])
    builder = GraphBuilder(src, name, shape, lambda n: readers.get(n, 0))
    builder.max_diagonal = MAX_DIAGONAL
    rd = _Reader(src, consts, _inferred_shapes(model), builder)
    for i, node in enumerate(nodes):
        _visit(rd, node, node.name or f"#{i} ({node.op_type})")
    if outs[0] in consts:
        raise InputError(src, f"the output '{outs[0]}' does not depend on the input")
    return builder.finish(outs[0])


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


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Return the shapes ``onnx.shape_inference`` finds (without the batch dimension; only
    fully static ones)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only a cross-check: any failure skips it
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 1 and all(d.HasField("dim_value") for d in dims[1:]):
            out[vi.name] = tuple(int(d.dim_value) for d in dims[1:])
    return out


def _sorted_nodes(graph: onnx.GraphProto, output: str, src: str) -> list[onnx.NodeProto]:
    """Return the nodes the output depends on, in a topological order (Kahn, stable)."""
    producer = {o: n for n in graph.node for o in n.output if o}
    need: set[int] = set()
    stack = [output]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        need.add(id(node))
        stack.extend(x for x in node.input if x)
    order: list[onnx.NodeProto] = []
    done = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    pending = [n for n in graph.node if id(n) in need]
    while pending:
        ready = [n for n in pending if all(not x or x in done for x in n.input)]
        if not ready:
            raise InputError(src, "the graph has a cycle or reads an undefined tensor")
        for n in ready:
            done.update(n.output)
        order.extend(ready)
        ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ids]
    return order


def _count_readers(nodes: list[onnx.NodeProto], consts: set[str], input_name: str,
                   output: str) -> dict[str, int]:
    """Return, per activation (aliases resolved to their source), the operators reading it
    (the graph output counts as one)."""
    const = set(consts)
    root = {input_name: input_name}
    count: dict[str, int] = {}
    for node in nodes:
        acts = [x for x in node.input if x and x in root]
        if node.op_type == "Constant" or not acts or node.op_type == "Shape":
            const.update(node.output)
            continue
        if node.op_type in _ALIASES:
            root[node.output[0]] = root[acts[0]]
            continue
        for x in acts:
            count[root[x]] = count.get(root[x], 0) + 1
        root.update({o: o for o in node.output if o})
    if output in root:
        count[root[output]] = count.get(root[output], 0) + 1
    return count


def _visit(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Fold a constant node, or apply the activation handler of the node's operator."""
    if node.domain not in ("", "ai.onnx"):
        _unknown(rd, node, label)
    acts = [x for x in node.input if x and rd.builder.has(x)]
    if node.op_type == "Constant" or not acts or node.op_type == "Shape":
        _fold_constant(rd, node, label)
        return
    handler = _HANDLERS.get(node.op_type)
    if handler is None:
        _unknown(rd, node, label)
    handler(rd, node, label)
    out = node.output[0]
    want = rd.inferred.get(out)
    if want is not None and int(np.prod(want)) != rd.builder.tensors[out].size:
        raise InputError(rd.src, f"node '{label}': shape inference gives {want}, the reader "
                         f"{rd.builder.shape(out)}")


def _unknown(rd: _Reader, node: onnx.NodeProto, label: str) -> NoReturn:
    raise UnsupportedOperatorError(
        rd.src, f"unsupported operator '{node.op_type}' in node '{label}'")


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """Return the node's attributes as Python values (strings decoded)."""
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _const(rd: _Reader, name: str, label: str) -> np.ndarray:
    """Return a constant input as float64, refusing NaN and infinite values."""
    arr = np.asarray(rd.consts[name], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(rd.src, f"NaN or infinite weights in '{name}' (node '{label}')")
    return arr


def _unsupported(rd: _Reader, node: onnx.NodeProto, label: str, what: str) -> NoReturn:
    """Raise the error for an unsupported attribute or use of a supported operator."""
    raise UnsupportedOperatorError(
        rd.src, f"unsupported operator '{node.op_type}' in node '{label}': {what}"
    )


# ---------------------------------------------------------------------------------------------
# Constant folding


def _constant_value(node: onnx.NodeProto, src: str, label: str) -> np.ndarray:
    """Return the tensor of a Constant node."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            return np.asarray(onnx.helper.get_attribute_value(attr))
    raise UnsupportedOperatorError(src, f"unsupported Constant form in node '{label}'")


def _axes(node: onnx.NodeProto, args: list[np.ndarray]) -> list[int]:
    """Return the axes of Squeeze/Unsqueeze/ReduceX: an input (opset >= 13) or attribute."""
    if len(args) > 1:
        return [int(a) for a in np.asarray(args[1]).reshape(-1)]
    return [int(a) for a in _attrs(node).get("axes", [])]


def _unsqueeze(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray:
    out = np.asarray(args[0])
    rank = out.ndim + len(_axes(node, args))
    for ax in sorted(a + rank if a < 0 else a for a in _axes(node, args)):
        out = np.expand_dims(out, ax)
    return out


def _squeeze(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray:
    axes = _axes(node, args)
    return np.squeeze(args[0], axis=tuple(axes)) if axes else np.squeeze(args[0])


def _slice(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray:
    a = _attrs(node)
    starts = args[1] if len(args) > 1 else a["starts"]
    ends = args[2] if len(args) > 2 else a["ends"]
    axes = args[3] if len(args) > 3 else a.get("axes", range(len(starts)))
    steps = args[4] if len(args) > 4 else [1] * len(starts)
    idx = [slice(None)] * np.ndim(args[0])
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=False):
        idx[int(ax)] = slice(int(s), int(e), int(st))
    return np.asarray(args[0])[tuple(idx)]


def _reshape_const(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray:
    target = [int(v) for v in np.asarray(args[1]).reshape(-1)]
    dims = [args[0].shape[i] if v == 0 else v for i, v in enumerate(target)]
    return np.reshape(args[0], dims)


def _cast(node: onnx.NodeProto, args: list[np.ndarray]) -> np.ndarray:
    to = onnx.helper.tensor_dtype_to_np_dtype(int(_attrs(node)["to"]))
    return np.asarray(args[0]).astype(to)


#: op type -> (function of the node and its constant inputs, True when float rounding occurs)
_FOLD: dict[str, tuple[Callable[[onnx.NodeProto, list[np.ndarray]], np.ndarray], bool]] = {
    "Identity": (lambda n, a: a[0], False),
    "Dropout": (lambda n, a: a[0], False),
    "Reshape": (_reshape_const, False),
    "Flatten": (lambda n, a: np.reshape(a[0], (int(np.prod(a[0].shape[:int(
        _attrs(n).get("axis", 1))])), -1)), False),
    "Transpose": (lambda n, a: np.transpose(a[0], _attrs(n).get("perm")), False),
    "Unsqueeze": (_unsqueeze, False),
    "Squeeze": (_squeeze, False),
    "Concat": (lambda n, a: np.concatenate(a, axis=int(_attrs(n)["axis"])), False),
    "Gather": (lambda n, a: np.take(a[0], np.asarray(a[1]).astype(np.int64),
                                    axis=int(_attrs(n).get("axis", 0))), False),
    "Slice": (_slice, False),
    "Cast": (_cast, False),
    "Neg": (lambda n, a: -np.asarray(a[0]), False),
    "Add": (lambda n, a: np.add(a[0], a[1]), True),
    "Sub": (lambda n, a: np.subtract(a[0], a[1]), True),
    "Mul": (lambda n, a: np.multiply(a[0], a[1]), True),
    "Div": (lambda n, a: np.divide(a[0], a[1]) if np.issubdtype(np.result_type(
        a[0], a[1]), np.floating) else np.floor_divide(a[0], a[1]), True),
    "Sqrt": (lambda n, a: np.sqrt(a[0]), True),
    "Reciprocal": (lambda n, a: 1.0 / np.asarray(a[0]), True),
    "MatMul": (lambda n, a: np.matmul(a[0], a[1]), True),
    "ConstantOfShape": (lambda n, a: np.full([int(v) for v in np.asarray(a[0]).reshape(-1)],
                                             numpy_helper.to_array(_attrs(n)["value"])[0]
                                             if "value" in _attrs(n) else 0.0), False),
}


def _fold_constant(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Evaluate a node whose inputs are all constant (or the static shape of an activation)."""
    if node.op_type == "Constant":
        rd.consts[node.output[0]] = _constant_value(node, rd.src, label)
        return
    if node.op_type == "Shape":
        x = node.input[0]
        shape = (1, *rd.builder.shape(x)) if rd.builder.has(x) else np.shape(rd.consts[x])
        rd.consts[node.output[0]] = np.asarray(shape, dtype=np.int64)
        return
    fold = _FOLD.get(node.op_type)
    if fold is None:
        _unknown(rd, node, label)
    args = [np.asarray(rd.consts[x]) for x in node.input if x]
    args = [a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a for a in args]
    value = np.asarray(fold[0](node, args))
    err = max([rd.const_err.get(x, 0.0) for x in node.input if x] or [0.0])
    if fold[1] and np.issubdtype(value.dtype, np.floating):
        err = _fold_error(node, args, value, err, rd, label)
    rd.consts[node.output[0]] = value
    if err:
        rd.const_err[node.output[0]] = err


def _fold_error(node: onnx.NodeProto, args: list[np.ndarray], value: np.ndarray, err: float,
                rd: _Reader, label: str) -> float:
    """Return the relative error of a folded float result (exact sums count 0)."""
    op = node.op_type
    if op in ("Mul", "Div", "Sqrt", "Reciprocal"):
        return (1.0 + err) ** 2 * (1.0 + U64) - 1.0
    if op in ("Add", "Sub"):
        a, b = (np.asarray(x, dtype=np.float64) for x in args[:2])
        b = -b if op == "Sub" else b
        a, b = np.broadcast_arrays(a, b)
        # TwoSum: the exact rounding error of each sum; relative to the result.
        bb = value - a
        e = (a - (value - bb)) + (b - bb)
        mag = np.abs(a) + np.abs(b)
        if np.any(mag > 0) and (err or np.any(e != 0)):
            ratio = (np.abs(e) + err * mag) / np.maximum(np.abs(value), 1e-300)
            if not np.all(np.isfinite(ratio)) or np.max(ratio) > 1e-6:
                _unsupported(rd, node, label, "a cancelling sum of constants")
            return float(np.max(ratio)) * (1.0 + 1e-6)
        return err
    # MatMul of constants: relative to the result only when no cancellation occurs.
    a, b = (np.asarray(x, dtype=np.float64) for x in args[:2])
    mag = np.matmul(np.abs(a), np.abs(b))
    n = a.shape[-1] if a.ndim else 1
    ratio = mag / np.maximum(np.abs(value), 1e-300)
    if not np.all(np.isfinite(ratio)) or np.max(ratio, initial=1.0) > 1e3:
        _unsupported(rd, node, label, "a cancelling product of constants")
    return float((1.0 + err) ** 2 * (1.0 + n * U64 * 1.01 * float(np.max(ratio, initial=1.0)))
                 - 1.0)


# ---------------------------------------------------------------------------------------------
# Shape-only operators


def _act(rd: _Reader, node: onnx.NodeProto) -> str:
    """Return the (first) activation input of a node."""
    return str(next(x for x in node.input if x and rd.builder.has(x)))


def _alias(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Identity, Dropout (inference), Squeeze/Unsqueeze off the batch axis."""
    x = _act(rd, node)
    shape = rd.builder.shape(x)
    if node.op_type in ("Squeeze", "Unsqueeze"):
        args = [np.zeros((1, *shape))] + [rd.consts[i] for i in node.input[1:] if i]
        fn = _squeeze if node.op_type == "Squeeze" else _unsqueeze
        new = fn(node, args).shape
        if not new or new[0] != 1:
            _unsupported(rd, node, label, "the batch dimension must stay first")
        shape = tuple(new[1:])
    rd.builder.alias(x, node.output[0], shape)


def _flatten(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Flatten to (batch, features); an axis that mixes batch and features is refused."""
    x = _act(rd, node)
    shape = rd.builder.shape(x)
    axis = int(_attrs(node).get("axis", 1))
    rank = len(shape) + 1
    axis = axis + rank if axis < 0 else axis
    if axis < 1 or int(np.prod(shape[: axis - 1])) != 1:
        _unsupported(rd, node, label, f"axis {axis} does not keep the batch dimension apart")
    rd.builder.alias(x, node.output[0], (int(np.prod(shape)),))


def _reshape(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Reshape keeping the batch dimension: the flat C-order vector is unchanged."""
    x = node.input[0]
    if not rd.builder.has(x) or node.input[1] not in rd.consts:
        _unsupported(rd, node, label, "the shape must be a constant")
    shape = rd.builder.shape(x)
    size = int(np.prod(shape))
    target = [int(v) for v in rd.consts[node.input[1]].reshape(-1)]
    full = (1, *shape)
    dims = [full[i] if v == 0 and i < len(full) else v for i, v in enumerate(target)]
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = size // max(known, 1)
    if dims.count(-1) or dims[0] != 1 or int(np.prod(dims)) != size:
        _unsupported(rd, node, label, f"shape {target} does not keep the batch dimension")
    rd.builder.alias(x, node.output[0], tuple(dims[1:]))


# ---------------------------------------------------------------------------------------------
# Affine and nonlinear operators


def _weight_err(rd: _Reader, *names: str) -> float:
    """Return the largest recorded relative error of the constants ``names``."""
    return max([rd.const_err.get(n, 0.0) for n in names if n] or [0.0])


def _matmul(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """MatMul by a constant (in, out) matrix on the last axis: Dense(W.T, 0)."""
    x = node.input[0]
    if not rd.builder.has(x) or node.input[1] not in rd.consts:
        _unsupported(rd, node, label, "only activation @ constant is supported")
    shape = rd.builder.shape(x)
    w = _const(rd, node.input[1], label)
    if w.ndim != 2 or w.shape[0] != shape[-1] or int(np.prod(shape)) != shape[-1]:
        _unsupported(rd, node, label, f"weight {w.shape} does not fit input {shape}")
    layer = Dense(w.T, np.zeros(w.shape[1]), _weight_err(rd, node.input[1]))
    rd.builder.affine(x, layer, node.output[0], (*shape[:-1], w.shape[1]))


def _gemm(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Gemm ``alpha * A B' + beta * C`` with A the activation: Dense(alpha B', beta C)."""
    a = _attrs(node)
    x = node.input[0]
    if a.get("transA", 0) or not rd.builder.has(x) or len(rd.builder.shape(x)) != 1:
        _unsupported(rd, node, label, "the activation must be the untransposed 2-D A input")
    size = rd.builder.shape(x)[0]
    b = _const(rd, node.input[1], label)
    w = b if a.get("transB", 0) else b.T
    if w.ndim != 2 or w.shape[1] != size:
        _unsupported(rd, node, label, f"weight {b.shape} does not fit input {(size,)}")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bias = np.zeros(w.shape[0])
    b_err = None
    if len(node.input) > 2 and node.input[2]:
        c = np.broadcast_to(_const(rd, node.input[2], label), (1, w.shape[0])).reshape(-1)
        bias = c * beta
        rel = (1.0 + _weight_err(rd, node.input[2])) * (1.0 + (U64 if beta != 1 else 0)) - 1
        b_err = rel * np.abs(bias) * (1.0 + 1e-9) if rel else None
    w_err = ((1.0 + _weight_err(rd, node.input[1])) * (1.0 + (U64 if alpha != 1 else 0))
             - 1.0) * (1.0 + 1e-9)
    rd.builder.affine(x, Dense(alpha * w, bias, w_err, b_err), node.output[0], (w.shape[0],))


def _spatial(rd: _Reader, node: onnx.NodeProto, label: str, shape: tuple[int, ...],
             kernel: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Return (stride, padding) of a 2-D Conv/Pool node, refusing unsupported attributes."""
    a = _attrs(node)
    if len(shape) != 3:
        _unsupported(rd, node, label, f"input shape {shape} is not (C, H, W)")
    if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("ceil_mode", 0):
        _unsupported(rd, node, label, "dilations other than 1 or ceil_mode are not supported")
    if list(a.get("kernel_shape", kernel)) != list(kernel):
        _unsupported(rd, node, label, "kernel_shape does not match the weight")
    sh, sw = (int(s) for s in a.get("strides", [1, 1]))
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(shape[1:], kernel, (sh, sw), upper=auto == "SAME_UPPER")
    elif auto not in ("NOTSET", "VALID"):
        _unsupported(rd, node, label, f"auto_pad '{auto}'")
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


def _image(rd: _Reader, node: onnx.NodeProto, label: str) -> tuple[str, tuple[int, int, int]]:
    x = _act(rd, node)
    shape = rd.builder.shape(x)
    if len(shape) != 3:
        _unsupported(rd, node, label, f"input shape {shape} is not (C, H, W)")
    return x, (shape[0], shape[1], shape[2])


def _conv(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Conv (2-D; a grouped one as a block-diagonal weight): Conv2d on (C, H, W)."""
    x, shape = _image(rd, node, label)
    if node.input[0] != x or node.input[1] not in rd.consts:
        _unsupported(rd, node, label, "the weight must be a constant")
    w = _const(rd, node.input[1], label)
    groups = int(_attrs(node).get("group", 1))
    if w.ndim != 4 or shape[0] % groups or w.shape[1] * groups != shape[0]:
        _unsupported(rd, node, label, f"weight {w.shape} (group {groups}) does not fit input "
                     f"{shape}; only 2-D convolutions are supported")
    stride, pad = _spatial(rd, node, label, shape, (w.shape[2], w.shape[3]))
    has_bias = len(node.input) > 2 and node.input[2]
    bias = _const(rd, node.input[2], label) if has_bias else np.zeros(w.shape[0])
    b_rel = _weight_err(rd, node.input[2]) if has_bias else 0.0
    layer = Conv2d(grouped_conv_weight(w, groups), bias.reshape(-1), stride, pad, shape,
                   weight_err=_weight_err(rd, node.input[1]),
                   bias_err=b_rel * np.abs(bias.reshape(-1)) if b_rel else None)
    rd.builder.affine(x, layer, node.output[0], layer.out_shape)


def _maxpool(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """MaxPool (2-D): MaxPool2d; padded cells never win, as in ONNX."""
    x, shape = _image(rd, node, label)
    kernel = tuple(int(k) for k in _attrs(node).get("kernel_shape", []))
    if len(kernel) != 2:
        _unsupported(rd, node, label, "only 2-D pooling is supported")
    stride, pad = _spatial(rd, node, label, shape, (kernel[0], kernel[1]))
    if len(node.output) > 1 and node.output[1]:
        _unsupported(rd, node, label, "the Indices output is not supported")
    rd.builder.maxpool(x, MaxPool2d((kernel[0], kernel[1]), stride, pad, shape), node.output[0])


def _avgpool(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """AveragePool (2-D) as a Conv2d with fixed weights; padding must count in the divisor."""
    x, shape = _image(rd, node, label)
    a = _attrs(node)
    kernel = tuple(int(k) for k in a.get("kernel_shape", []))
    if len(kernel) != 2:
        _unsupported(rd, node, label, "only 2-D pooling is supported")
    stride, pad = _spatial(rd, node, label, shape, (kernel[0], kernel[1]))
    if any(pad) and not int(a.get("count_include_pad", 0)):
        _unsupported(rd, node, label, "padding left out of the divisor (count_include_pad=0)")
    layer = avg_pool_conv((kernel[0], kernel[1]), stride, pad, shape)
    rd.builder.affine(x, layer, node.output[0], layer.out_shape)


def _global_avgpool(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """GlobalAveragePool: the mean of each channel, a Conv2d with an H x W kernel."""
    x, (c, h, w) = _image(rd, node, label)
    layer = avg_pool_conv((h, w), (1, 1), (0, 0, 0, 0), (c, h, w))
    rd.builder.affine(x, layer, node.output[0], layer.out_shape)


def _relu(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Relu: a ReLU layer on the whole tensor."""
    rd.builder.relu(_act(rd, node), node.output[0])


def _concat(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Concat of activations along an axis with only 1s before it (e.g. channels)."""
    if any(x and not rd.builder.has(x) for x in node.input):
        _unsupported(rd, node, label, "concatenating constants with activations")
    names = [x for x in node.input if x]
    shapes = [rd.builder.shape(x) for x in names]
    axis = int(_attrs(node)["axis"])
    rank = len(shapes[0]) + 1
    axis = axis + rank if axis < 0 else axis
    rest = {s[:axis - 1] + s[axis:] for s in shapes}
    if axis < 1 or len(rest) != 1 or int(np.prod(shapes[0][:axis - 1])) != 1:
        _unsupported(rd, node, label, f"axis {axis} of shapes {shapes} is not a flat "
                     "concatenation (only 1s may precede the axis)")
    out = list(shapes[0])
    out[axis - 1] = sum(s[axis - 1] for s in shapes)
    rd.builder.concat(names, node.output[0], tuple(out))


# ---------------------------------------------------------------------------------------------
# Elementwise maps and joins


def _elementwise(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Add/Sub/Mul/Div: a join of two activations, or a map ``v -> s * v + t``."""
    acts = [x for x in node.input if rd.builder.has(x)]
    op = node.op_type
    if len(acts) == 2:
        if op not in ("Add", "Sub"):
            _unsupported(rd, node, label, "a product or quotient of two activations")
        rd.builder.add(list(node.input[:2]), node.output[0], negate_last=op == "Sub")
        return
    x = acts[0]
    first_is_act = node.input[0] == x
    cname = node.input[1] if first_is_act else node.input[0]
    c = _const(rd, cname, label)
    shape = rd.builder.shape(x)
    full = (1, *shape)
    if np.broadcast_shapes(c.shape, full) != full:
        _unsupported(rd, node, label, f"constant {c.shape} broadcasts beyond {full}")
    flat = np.broadcast_to(c, full).reshape(-1).astype(np.float64)
    size = flat.size
    one, zero = np.ones(size), np.zeros(size)
    err = _weight_err(rd, cname)
    if op == "Div" and (not first_is_act or np.any(flat == 0)):
        _unsupported(rd, node, label, "division by the activation or by zero")
    if op == "Div":
        m = ElementwiseMap(1.0 / flat, zero, (1.0 + err) * (1.0 + U64) - 1.0)
    elif op == "Mul":
        m = ElementwiseMap(flat, zero, err)
    else:
        shift = -flat if op == "Sub" and first_is_act else flat
        scale = -one if op == "Sub" and not first_is_act else one
        m = ElementwiseMap(scale, shift, 0.0, err * np.abs(flat))
    rd.builder.elementwise(x, m, node.output[0])


def _sum(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """Sum of two or more activations: a residual join."""
    names = [x for x in node.input if x]
    if any(not rd.builder.has(x) for x in names):
        _unsupported(rd, node, label, "summing constants with activations")
    if len(names) == 1:
        rd.builder.alias(names[0], node.output[0])
        return
    rd.builder.add(names, node.output[0])


def _batchnorm(rd: _Reader, node: onnx.NodeProto, label: str) -> None:
    """BatchNormalization (inference): per-channel ``s = g / sqrt(var + eps)``, ``t = b - m s``."""
    x = _act(rd, node)
    if node.input[0] != x or any(n not in rd.consts for n in node.input[1:5]):
        _unsupported(rd, node, label, "scale, bias, mean and variance must be constants")
    if len([o for o in node.output if o]) > 1:
        _unsupported(rd, node, label, "training mode (running statistics outputs)")
    shape = rd.builder.shape(x)
    g, b, mean, var = (_const(rd, name, label) for name in node.input[1:5])
    if _weight_err(rd, *node.input[1:5]):
        _unsupported(rd, node, label, "batch statistics computed from other constants")
    m, _ = batchnorm_map(g, b, mean, var, float(_attrs(node).get("epsilon", 1e-5)))
    per_channel = (shape[0],) + (1,) * (len(shape) - 1)

    def spread(v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(v.reshape(per_channel), shape).reshape(-1)

    rd.builder.elementwise(x, ElementwiseMap(spread(m.scale), spread(m.shift), m.scale_err,
                                             spread(m.shift_err)), node.output[0])


_HANDLERS: dict[str, _Handler] = {
    "Identity": _alias,
    "Dropout": _alias,
    "Squeeze": _alias,
    "Unsqueeze": _alias,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _maxpool,
    "AveragePool": _avgpool,
    "GlobalAveragePool": _global_avgpool,
    "Relu": _relu,
    "Concat": _concat,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Sum": _sum,
    "BatchNormalization": _batchnorm,
}
