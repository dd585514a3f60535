"""Read a torch module with its own ``forward`` (a ResNet, a CNN) through ``torch.fx``.

``torch.fx.symbolic_trace`` records the forward pass as a graph of nodes in a topological
order; each node becomes part of the network through the shared
:class:`~bnbver.io.graph.GraphBuilder` (the ONNX reader uses the same one):

- ``call_module``: the modules :mod:`bnbver.io.torch_loader` reads in a Sequential
  (``Linear``, ``Conv2d``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
  ``BatchNorm1d/2d`` (an elementwise map, folded when exact), ``Flatten``, ``Identity``,
  ``Dropout``), and a nested ``Sequential`` the tracer did not inline;
- ``call_function`` / ``call_method``: ``+`` and ``-`` of two activations (a residual join),
  ``+ - * /`` with a constant (an elementwise map), ``relu``, ``flatten``/``view``/``reshape``
  keeping the batch dimension, ``torch.cat`` along the channel axis, and ``size``/``shape``
  (constants: the batch is 1);
- ``get_attr`` (parameters and buffers used directly) are constants.

Anything else is refused with an :class:`~bnbver.errors.UnsupportedOperatorError` naming the
node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from bnbver.errors import UnsupportedOperatorError
from bnbver.io.graph import GraphBuilder
from bnbver.io.layers import ElementwiseMap, batchnorm_map
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU

SOURCE = "torch module"

#: Functions and methods that only relabel the flat vector (with the arguments' shape rule).
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_SUB = {operator.sub, operator.isub, torch.sub, "sub", "sub_"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_RELU = {torch.relu, F.relu, "relu", "relu_"}
_RESHAPE = {"view", "reshape"}
_FLATTEN = {torch.flatten, "flatten"}
_CAT = {torch.cat, torch.concat}


class _Walk:
    """The traced graph being read: constants, the builder and the module's submodules."""

    def __init__(self, gm: fx.GraphModule, builder: GraphBuilder) -> None:
        self.gm = gm
        self.b = builder
        self.consts: dict[str, Any] = {}

    def value(self, arg: Any) -> Any:
        """Return a node argument: a constant's value, an activation's name, or the literal."""
        if isinstance(arg, fx.Node):
            if arg.name in self.consts:
                return self.consts[arg.name]
            return arg.name
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def is_act(self, arg: Any) -> bool:
        return isinstance(arg, fx.Node) and self.b.has(arg.name)


def from_fx(module: nn.Module, input_shape: tuple[int, ...]) -> Network:
    """Convert a module with its own ``forward`` by tracing it with ``torch.fx``.

    Raises:
        UnsupportedOperatorError: the module cannot be traced, or a node has no encoding
            (the message names the node and its operation).
    """
    module = module.eval()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:  # the tracer raises many types; any failure is unsupported
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedOperatorError(
            SOURCE, f"cannot trace the custom module '{type(module).__name__}' with torch.fx "
            f"({first}); export it to ONNX instead") from None
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UnsupportedOperatorError(SOURCE, f"the module takes {len(inputs)} inputs, not 1")
    readers = _count_readers(nodes)
    walk = _Walk(gm, GraphBuilder(SOURCE, inputs[0].name, tuple(input_shape),
                                  lambda n: readers.get(n, 0)))
    out: str | None = None
    for node in nodes:
        if node.op == "output":
            out = walk.value(node.args[0])
        elif node.op != "placeholder":
            _visit(walk, node)
    if not isinstance(out, str) or not walk.b.has(out):
        raise UnsupportedOperatorError(SOURCE, "the module's output is not one tensor that "
                                       "depends on the input")
    return walk.b.finish(out)


def _is_alias(node: fx.Node, gm: fx.GraphModule) -> bool:
    """True for nodes that only relabel the flat vector of their input."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)),
                          (nn.Identity, nn.Dropout, nn.Flatten))
    return node.target in _RESHAPE | _FLATTEN | {"contiguous"}


def _count_readers(nodes: list[fx.Node]) -> dict[str, int]:
    """Return, per activation (aliases resolved to their source), the nodes reading it."""
    gm = nodes[0].graph.owning_module
    assert isinstance(gm, fx.GraphModule)
    root: dict[str, str] = {}
    count: dict[str, int] = {}
    for node in nodes:
        acts = [a for a in node.all_input_nodes if a.name in root]
        if node.op == "placeholder":
            root[node.name] = node.name
        elif node.op == "output":
            for a in acts:
                count[root[a.name]] = count.get(root[a.name], 0) + 1
        elif acts and node.target not in ("size", getattr) and not (
                node.op == "call_method" and node.target == "dim"):
            if _is_alias(node, gm):
                root[node.name] = root[acts[0].name]
                continue
            for a in acts:
                count[root[a.name]] = count.get(root[a.name], 0) + 1
            root[node.name] = node.name
    return count


def _unsupported(node: fx.Node, what: str) -> NoReturn:
    raise UnsupportedOperatorError(SOURCE, f"node '{node.name}' ({node.op} "
                                   f"{_target_name(node)}): {what}")


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _visit(walk: _Walk, node: fx.Node) -> None:
    """Read one node: a constant, a module call, or a function / method call."""
    if node.op == "get_attr":
        walk.consts[node.name] = _attr(walk.gm, str(node.target))
        return
    acts = [a for a in node.all_input_nodes if walk.b.has(a.name)]
    if not acts:
        walk.consts[node.name] = _constant_call(walk, node)
        return
    if node.op == "call_module":
        mod = walk.gm.get_submodule(str(node.target))
        handler = _MODULES.get(type(mod))
        if handler is None:
            _unsupported(node, f"unsupported module type '{type(mod).__name__}'")
        handler(walk, node, mod)
        return
    if node.target in ("size", "dim") or node.target is getattr:
        walk.consts[node.name] = _shape_query(walk, node)
        return
    _call(walk, node)


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _constant_call(walk: _Walk, node: fx.Node) -> Any:
    """Evaluate a node that does not depend on the input."""
    args = walk.value(node.args)
    kwargs = {k: walk.value(v) for k, v in node.kwargs.items()}
    with torch.no_grad():
        if node.op == "call_function":
            return node.target(*args, **kwargs)  # type: ignore[operator]
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return walk.gm.get_submodule(str(node.target))(*args, **kwargs)


def _shape_query(walk: _Walk, node: fx.Node) -> Any:
    """``x.size()``, ``x.size(d)``, ``x.shape``, ``x.dim()`` of an activation (batch 1)."""
    src = node.args[0]
    assert isinstance(src, fx.Node)
    shape = (1, *walk.b.shape(src.name))
    if node.target == "dim":
        return len(shape)
    if node.target is getattr:
        if node.args[1] != "shape":
            _unsupported(node, f"attribute {node.args[1]!r} of an activation")
        return torch.Size(shape)
    dims: Any = walk.value(node.args[1:]) or (node.kwargs.get("dim"),)
    return torch.Size(shape) if dims[0] is None else shape[int(dims[0])]


# ---------------------------------------------------------------------------------------------
# Modules


def _module_layers(mod: nn.Module, shape: tuple[int, ...], node: fx.Node
                   ) -> tuple[list[Any], tuple[int, ...]]:
    """Return the IR layers of a supported leaf module on an input of ``shape`` and the output
    shape (through the Sequential reader's handlers)."""
    from bnbver.io.torch_loader import sequential_layers

    return sequential_layers(mod, shape, node.name)


def _leaf(walk: _Walk, node: fx.Node, mod: nn.Module) -> None:
    """A module the Sequential reader converts: its layers go through the builder."""
    name = walk.value(node.args[0])
    layers, shape = _module_layers(mod, walk.b.shape(name), node)
    for i, layer in enumerate(layers):
        out = node.name if i == len(layers) - 1 else f"{node.name}/{i}"
        _add_layer(walk, name, layer, out, shape)
        name = out


def _add_layer(walk: _Walk, name: str, layer: Any, out: str, shape: tuple[int, ...]) -> None:
    if isinstance(layer, (Dense, Conv2d)):
        walk.b.affine(name, layer, out, layer.out_shape if isinstance(layer, Conv2d)
                      else (layer.out_size,))
    elif isinstance(layer, ReLU):
        walk.b.relu(name, out)
    elif isinstance(layer, MaxPool2d):
        walk.b.maxpool(name, layer, out)
    elif isinstance(layer, Flatten):
        walk.b.alias(name, out, shape)
    else:
        raise AssertionError(f"unexpected layer {type(layer).__name__}")


def _flatten_module(walk: _Walk, node: fx.Node, mod: nn.Module) -> None:
    assert isinstance(mod, nn.Flatten)
    _flatten_to(walk, node, walk.value(node.args[0]), mod.start_dim, mod.end_dim)


def _alias_module(walk: _Walk, node: fx.Node, mod: nn.Module) -> None:
    walk.b.alias(walk.value(node.args[0]), node.name)


def _batchnorm(walk: _Walk, node: fx.Node, mod: nn.Module) -> None:
    """BatchNorm1d/2d with running statistics: an elementwise map (folded when exact)."""
    assert isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))
    name = walk.value(node.args[0])
    shape = walk.b.shape(name)
    if mod.running_mean is None or mod.running_var is None or shape[0] != mod.num_features:
        _unsupported(node, "BatchNorm without running statistics, or a shape that does not fit")
    n = mod.num_features
    gamma = _np(mod.weight) if mod.weight is not None else np.ones(n)
    beta = _np(mod.bias) if mod.bias is not None else np.zeros(n)
    m, _ = batchnorm_map(gamma, beta, _np(mod.running_mean), _np(mod.running_var),
                         float(mod.eps))
    reps = int(np.prod(shape[1:]))
    walk.b.elementwise(name, ElementwiseMap(np.repeat(m.scale, reps), np.repeat(m.shift, reps),
                                            m.scale_err, np.repeat(m.shift_err, reps)),
                       node.name)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().copy()


# ---------------------------------------------------------------------------------------------
# Functions and methods


def _call(walk: _Walk, node: fx.Node) -> None:
    """A ``call_function`` / ``call_method`` node on activations (a dispatch on the target)."""
    t = node.target
    args = node.args
    for group, fn in _FUNCTIONS:
        if t in group:
            fn(walk, node, args)
            return
    if t == "contiguous":
        walk.b.alias(walk.value(args[0]), node.name)
        return
    _unsupported(node, "no encoding")


def _arith(walk: _Walk, node: fx.Node, args: tuple[Any, ...]) -> None:
    """``a + b``, ``a - b``, ``a * c``, ``a / c``: a join, or a map by a constant."""
    t = node.target
    if len(node.kwargs) or len(args) != 2:
        _unsupported(node, "extra arguments (alpha, out, rounding_mode) are not supported")
    a, b = args
    if walk.is_act(a) and walk.is_act(b):
        if t not in _ADD | _SUB:
            _unsupported(node, "a product or quotient of two activations")
        walk.b.add([a.name, b.name], node.name, negate_last=t in _SUB)
        return
    act, const = (a, b) if walk.is_act(a) else (b, a)
    first = act is a
    c = np.asarray(torch.as_tensor(walk.value(const)).detach().cpu(), dtype=np.float64)
    shape = walk.b.shape(act.name)
    full = (1, *shape)
    if np.broadcast_shapes(c.shape, full) != full:
        _unsupported(node, f"constant {c.shape} broadcasts beyond {full}")
    flat = np.broadcast_to(c, full).reshape(-1).copy()
    one, zero = np.ones(flat.size), np.zeros(flat.size)
    if t in _DIV:
        if not first or np.any(flat == 0):
            _unsupported(node, "division by an activation or by zero")
        m = ElementwiseMap(1.0 / flat, zero, 2.0 ** -53)
    elif t in _MUL:
        m = ElementwiseMap(flat, zero)
    elif t in _SUB:
        m = ElementwiseMap(one if first else -one, -flat if first else flat)
    else:
        m = ElementwiseMap(one, flat)
    walk.b.elementwise(act.name, m, node.name)


def _relu(walk: _Walk, node: fx.Node, args: tuple[Any, ...]) -> None:
    walk.b.relu(walk.value(args[0]), node.name)


def _flatten_call(walk: _Walk, node: fx.Node, args: tuple[Any, ...]) -> None:
    start: Any = walk.value(args[1]) if len(args) > 1 else node.kwargs.get("start_dim", 0)
    end: Any = walk.value(args[2]) if len(args) > 2 else node.kwargs.get("end_dim", -1)
    _flatten_to(walk, node, walk.value(args[0]), int(start), int(end))


def _flatten_to(walk: _Walk, node: fx.Node, name: str, start: int, end: int) -> None:
    """Flatten every axis after the batch (``flatten(x, 1)``); others are refused."""
    shape = walk.b.shape(name)
    rank = len(shape) + 1
    first = start + rank if start < 0 else start
    last = end + rank if end < 0 else end
    if first != 1 or last != rank - 1:
        _unsupported(node, "only flatten(x, 1) (keeping the batch dimension) is supported")
    walk.b.alias(name, node.name, (int(np.prod(shape)),))


def _reshape(walk: _Walk, node: fx.Node, args: tuple[Any, ...]) -> None:
    """``x.view(...)`` / ``x.reshape(...)`` keeping the batch dimension (batch 1)."""
    name = walk.value(args[0])
    dims = walk.value(args[1:])
    if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
        dims = tuple(dims[0])
    dims = [int(d) for d in dims]
    size = int(np.prod(walk.b.shape(name)))
    if dims.count(-1) == 1:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = size // max(known, 1)
    if not dims or dims[0] != 1 or int(np.prod(dims)) != size:
        _unsupported(node, f"shape {dims} does not keep the batch dimension")
    walk.b.alias(name, node.name, tuple(dims[1:]))


def _cat(walk: _Walk, node: fx.Node, args: tuple[Any, ...]) -> None:
    """``torch.cat(tensors, dim)`` of activations, along an axis with only 1s before it."""
    parts = args[0]
    dim: Any = walk.value(args[1]) if len(args) > 1 else node.kwargs.get("dim", 0)
    if not all(walk.is_act(p) for p in parts):
        _unsupported(node, "concatenating constants with activations")
    names = [p.name for p in parts]
    shapes = [walk.b.shape(n) for n in names]
    rank = len(shapes[0]) + 1
    axis = int(dim) + rank if int(dim) < 0 else int(dim)
    rest = {s[:axis - 1] + s[axis:] for s in shapes}
    if axis < 1 or len(rest) != 1 or int(np.prod(shapes[0][:axis - 1])) != 1:
        _unsupported(node, f"dim {dim} of shapes {shapes} is not a flat concatenation")
    out = list(shapes[0])
    out[axis - 1] = sum(s[axis - 1] for s in shapes)
    walk.b.concat(names, node.name, tuple(out))


_Fn = Callable[[_Walk, fx.Node, tuple[Any, ...]], None]
_FUNCTIONS: list[tuple[set[Any], _Fn]] = [
    (_ADD | _SUB | _MUL | _DIV, _arith),
    (_RELU, _relu),
    (_FLATTEN, _flatten_call),
    (_RESHAPE, _reshape),
    (_CAT, _cat),
]

_MODULES: dict[type, Callable[[_Walk, fx.Node, Any], None]] = {
    nn.Linear: _leaf,
    nn.Conv2d: _leaf,
    nn.ReLU: _leaf,
    nn.MaxPool2d: _leaf,
    nn.AvgPool2d: _leaf,
    nn.AdaptiveAvgPool2d: _leaf,
    nn.Sequential: _leaf,
    nn.Flatten: _flatten_module,
    nn.Identity: _alias_module,
    nn.Dropout: _alias_module,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
}
