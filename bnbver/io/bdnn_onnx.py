"""Export a binarized network (:mod:`bnbver.apps.bdnn_model`) to ONNX with standard operators.

Each layer is a ``Gemm`` (``z = h W^T + b``) in double precision. A hidden activation is
``GreaterOrEqual(z, 0)`` cast to double, which is ``step`` with the ties-go-up rule
``step(0) = 1``; ``sign`` is then ``2 step - 1``. The graph input ``x`` is ``(N, d)`` with a
dynamic batch N, the output ``scores`` is ``(N, K)``: the class scores of the last layer.

This module takes plain arrays (not the app's dataclass) so the io layer never imports apps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: opset with GreaterOrEqual (12) and double Gemm
OPSET = 13
#: Pinned, like ``onnx_export.IR_VERSION``: the installed onnx's default IR version can be
#: newer than the onnxruntime beside it reads (onnx 1.23 writes 14; onnxruntime 1.30 reads 13).
IR_VERSION = 8


def _activation_nodes(z: str, out: str, activation: str, tag: str) -> list[onnx.NodeProto]:
    """Return the nodes computing ``out = step(z)`` or ``sign(z)`` (ties go up)."""
    nodes = [helper.make_node("GreaterOrEqual", [z, "zero"], [f"ge{tag}"]),
             helper.make_node("Cast", [f"ge{tag}"], [out if activation == "step" else f"st{tag}"],
                              to=TensorProto.DOUBLE)]
    if activation == "sign":
        nodes += [helper.make_node("Mul", [f"st{tag}", "two"], [f"tw{tag}"]),
                  helper.make_node("Sub", [f"tw{tag}", "one"], [out])]
    return nodes


def bdnn_to_onnx(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                 activation: str) -> onnx.ModelProto:
    """Return the ONNX model of a binarized network.

    Args:
        weights: one ``(n_out, n_in)`` matrix per layer, the last the output layer.
        biases: one ``(n_out,)`` vector per layer.
        activation: ``"step"`` or ``"sign"`` for the hidden layers.

    Raises:
        ValueError: unknown activation or inconsistent shapes.
    """
    if activation not in ("step", "sign"):
        raise ValueError(f"activation: expected 'step' or 'sign', got {activation!r}")
    if len(weights) != len(biases) or not weights:
        raise ValueError("weights, biases: expected equally many (>= 1) layers")
    scalars = (("zero", 0.0), ("one", 1.0), ("two", 2.0))
    used = (3 if activation == "sign" else 1) if len(weights) > 1 else 0
    consts = [numpy_helper.from_array(np.array(v, dtype=np.float64), name)
              for name, v in scalars[:used]]
    nodes: list[onnx.NodeProto] = []
    h = "x"
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        w = np.asarray(w, dtype=np.float64)
        n_prev = np.asarray(weights[i - 1]).shape[0] if i else w.shape[1]
        if w.shape[1] != n_prev:
            raise ValueError(f"weights[{i}]: expected {n_prev} columns, got {w.shape[1]}")
        consts += [numpy_helper.from_array(w, f"W{i}"),
                   numpy_helper.from_array(np.asarray(b, dtype=np.float64).reshape(-1), f"B{i}")]
        last = i == len(weights) - 1
        z = "scores" if last else f"z{i}"
        nodes.append(helper.make_node("Gemm", [h, f"W{i}", f"B{i}"], [z], transB=1))
        if not last:
            nodes += _activation_nodes(z, f"h{i}", activation, str(i))
            h = f"h{i}"
    d, k = np.asarray(weights[0]).shape[1], np.asarray(weights[-1]).shape[0]
    graph = helper.make_graph(
        nodes, "bdnn",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", d])],
        [helper.make_tensor_value_info("scores", TensorProto.DOUBLE, ["N", k])],
        initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bnbver-bdnn")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save_bdnn_onnx(path: str | Path, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray],
                   activation: str) -> None:
    """Write the ONNX model of a binarized network to ``path`` (see :func:`bdnn_to_onnx`)."""
    onnx.save(bdnn_to_onnx(weights, biases, activation), str(path))
