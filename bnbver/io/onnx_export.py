"""Write a :class:`~bnbver.network.Network` as a standard-operator ONNX model.

The model has one input ``input`` of shape ``[1, *network.input_shape]`` and one output
``output`` of shape ``[1, n_out]``. Layers map to ``Gemm`` (``transB = 1``), ``Conv``,
``Relu``, ``MaxPool`` and ``Flatten``; since the IR works on flat C-order vectors, a
``Reshape`` to (1, C, H, W) is inserted before a Conv or MaxPool whose input is flat, and a
``Flatten`` before a Gemm whose input is not. The model uses opset 13 and runs in onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bnbver.network import Add, Concat, Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU

OPSET = 13
IR_VERSION = 8

_DTYPES = {"float32": (np.float32, TensorProto.FLOAT), "float64": (np.float64, TensorProto.DOUBLE)}


@dataclass
class _Builder:
    """Accumulates nodes and initializers; ``current`` is the latest tensor, ``shape`` its shape.

    ``shape`` excludes the batch dimension.
    """

    np_dtype: type
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    current: str = "input"
    shape: tuple[int, ...] = ()

    def tensor(self, name: str, value: np.ndarray) -> str:
        """Add an initializer and return its name."""
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> None:
        """Append a node that consumes ``inputs`` and becomes the current tensor."""
        out = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}",
                                           **attrs))
        self.current = out


def save_onnx(network: Network, path: str | Path, dtype: str = "float32") -> None:
    """Write ``network`` to ``path`` as an ONNX model.

    Args:
        network: the network to export.
        path: the output ``.onnx`` file.
        dtype: ``"float32"`` (the usual ONNX type) or ``"float64"`` (exact weights; note that
            onnxruntime's CPU provider has no float64 ``Conv`` kernel).

    Raises:
        ValueError: ``dtype`` is neither of the two.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    np_dtype, elem = _DTYPES[dtype]
    b = _Builder(np_dtype, shape=tuple(network.input_shape))
    tensors = [(b.current, b.shape)]
    for i, (layer, ins) in enumerate(zip(network.layers, network.inputs, strict=True)):
        b.current, b.shape = tensors[ins[0] + 1]
        if isinstance(layer, (Add, Concat)):
            _emit_join(b, layer, [tensors[t + 1] for t in ins])
        else:
            _emit(b, i, layer)
        tensors.append((b.current, b.shape))
    b.current, b.shape = tensors[-1]
    _to_vector(b)
    graph = helper.make_graph(
        b.nodes, "bnbver",
        [helper.make_tensor_value_info("input", elem, [1, *network.input_shape])],
        [helper.make_tensor_value_info(b.current, elem, [1, network.num_outputs])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bnbver")
    model.ir_version = IR_VERSION
    onnx.save(model, str(path))


def _emit(b: _Builder, i: int, layer: object) -> None:
    """Append the nodes of one layer."""
    if isinstance(layer, Dense):
        _to_vector(b)
        w = b.tensor(f"W{i}", layer.weight.astype(b.np_dtype))
        bias = b.tensor(f"b{i}", layer.bias.astype(b.np_dtype))
        b.node("Gemm", [b.current, w, bias], transB=1)
        b.shape = (layer.out_size,)
    elif isinstance(layer, Conv2d):
        _to_image(b, i, layer.in_shape)
        w = b.tensor(f"W{i}", layer.weight.astype(b.np_dtype))
        bias = b.tensor(f"b{i}", layer.bias.astype(b.np_dtype))
        b.node("Conv", [b.current, w, bias], strides=list(layer.stride),
               pads=list(layer.padding), kernel_shape=list(layer.weight.shape[2:]))
        b.shape = layer.out_shape
    elif isinstance(layer, MaxPool2d):
        _to_image(b, i, layer.in_shape)
        b.node("MaxPool", [b.current], kernel_shape=list(layer.kernel),
               strides=list(layer.stride), pads=list(layer.padding))
        b.shape = layer.out_shape
    elif isinstance(layer, ReLU):
        b.node("Relu", [b.current])
    elif isinstance(layer, Flatten):
        _to_vector(b)
    else:
        raise TypeError(f"layer {i}: cannot export {type(layer).__name__}")


def _emit_join(b: _Builder, layer: Add | Concat, parts: list[tuple[str, tuple[int, ...]]]
               ) -> None:
    """Append an Add (of same-shaped tensors, else of their flattenings) or a Concat of the
    flattened inputs (the flat concatenation, as the IR defines it)."""
    names = []
    flat = isinstance(layer, Concat) or len({shape for _, shape in parts}) > 1
    for name, shape in parts:
        b.current, b.shape = name, shape
        if flat:
            _to_vector(b)
        names.append(b.current)
    if isinstance(layer, Add):
        b.node("Sum", names)
        b.shape = b.shape if not flat else (layer.size,)
    else:
        b.node("Concat", names, axis=1)
        b.shape = (layer.size,)


def _to_vector(b: _Builder) -> None:
    """Flatten the current tensor to (1, n) unless it already is 2-D."""
    if len(b.shape) != 1:
        b.node("Flatten", [b.current], axis=1)
        b.shape = (int(np.prod(b.shape)),)


def _to_image(b: _Builder, i: int, shape: tuple[int, int, int]) -> None:
    """Reshape the current tensor to (1, C, H, W) unless it already has that shape."""
    if b.shape == shape:
        return
    target = b.tensor(f"shape{i}", np.array([1, *shape], dtype=np.int64))
    b.node("Reshape", [b.current, target])
    b.shape = shape
