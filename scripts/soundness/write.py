"""Write an :class:`~netspec.Instance` as ONNX + VNN-LIB, and replay inputs with onnxruntime.

ONNX: opset 13, IR version 8 (the venv's onnxruntime cannot read newer IR versions), element
type float32 or float64 (``NetSpec.dtype``); one input ``X`` of shape ``(1, *input_shape)``
and one output ``Y`` of shape ``(1, m)``. Dense layers become ``Gemm`` (``transB = 1``) or
``MatMul`` + ``Add``; a residual block reads its input twice (the body's nodes and, for a
projection, a ``Gemm``) and joins the two with ``Add``; the other operators map one to one.

VNN-LIB 1.0: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``; one input box as
``(assert (<= X_i u))`` / ``(assert (>= X_i l))`` lines, several as one
``(assert (or (and ...) ...))``; the unsafe set as one assert (a disjunction of conjunctions
when it has several disjuncts). Every number is written as the exact decimal expansion of
its float64 value, so the text means exactly the float64 numbers the oracle uses, and a
correctly rounded parser reads back the same floats.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .netspec import (
    Conv,
    Dense,
    Elementwise,
    Flatten,
    Instance,
    MaxPool,
    NetSpec,
    OutRow,
    Relu,
    Residual,
)

OPSET = 13
IR_VERSION = 8


def num(v: float) -> str:
    """Return the exact decimal expansion of the float64 ``v`` (e.g. ``1E-11`` is not exact)."""
    return str(Decimal(float(v)))


def _np_dtype(net: NetSpec) -> type[np.floating]:
    return np.float32 if net.dtype == "float32" else np.float64


def to_onnx(net: NetSpec) -> onnx.ModelProto:
    """Return the ONNX model of ``net`` (checked by ``onnx.checker``)."""
    dt = _np_dtype(net)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    cur, shape = "X", tuple(net.input_shape)

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=dt), name))
        return name

    def dense(op: Dense, k: str, src: str, out: str) -> None:
        if op.matmul:
            mm = f"t{k}_mm"
            nodes.append(helper.make_node("MatMul", [src, const(f"W{k}", op.weight.T)], [mm]))
            nodes.append(helper.make_node("Add", [mm, const(f"B{k}", op.bias)], [out]))
        else:
            nodes.append(helper.make_node("Gemm", [src, const(f"W{k}", op.weight),
                                                   const(f"B{k}", op.bias)], [out], transB=1))

    for k, op in enumerate(net.ops):
        out = "Y" if k == len(net.ops) - 1 else f"t{k}"
        if isinstance(op, Residual):
            h = cur
            for j, part in enumerate(op.body):
                name = f"t{k}_{j}"
                if isinstance(part, Dense):
                    dense(part, f"{k}_{j}", h, name)
                else:
                    nodes.append(helper.make_node("Relu", [h], [name]))
                h = name
            short = cur
            if op.shortcut is not None:
                short = f"t{k}_short"
                dense(op.shortcut, f"{k}_s", cur, short)
            nodes.append(helper.make_node("Add", [h, short], [out]))
        elif isinstance(op, Dense):
            dense(op, str(k), cur, out)
            shape = (op.weight.shape[0],)
        elif isinstance(op, Conv):
            nodes.append(helper.make_node(
                "Conv", [cur, const(f"W{k}", op.weight), const(f"B{k}", op.bias)], [out],
                kernel_shape=list(op.weight.shape[2:]), strides=list(op.stride),
                pads=[op.pads[0], op.pads[1], op.pads[2], op.pads[3]]))
            shape = op.out_shape
        elif isinstance(op, MaxPool):
            nodes.append(helper.make_node(
                "MaxPool", [cur], [out], kernel_shape=list(op.kernel), strides=list(op.stride),
                pads=[op.pads[0], op.pads[1], op.pads[2], op.pads[3]]))
            shape = op.out_shape
        elif isinstance(op, Relu):
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif isinstance(op, Flatten):
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
            shape = (int(np.prod(shape)),)
        else:
            assert isinstance(op, Elementwise)
            c = const(f"C{k}", op.const.reshape(shape))
            nodes.append(helper.make_node(op.op, [cur, c], [out]))
        cur = out
    return _model(net, nodes, inits, shape)


def _model(net: NetSpec, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto],
           out_shape: tuple[int, ...]) -> onnx.ModelProto:
    elem = TensorProto.FLOAT if net.dtype == "float32" else TensorProto.DOUBLE
    graph = helper.make_graph(
        nodes, "fuzz", [helper.make_tensor_value_info("X", elem, [1, *net.input_shape])],
        [helper.make_tensor_value_info("Y", elem, [1, *out_shape])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bnbver-fuzz")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _row(r: OutRow) -> str:
    rhs = f"Y_{r.rhs_var}" if r.rhs_var is not None else num(r.rhs)
    return f"({r.op} Y_{r.lhs} {rhs})"


def to_vnnlib(inst: Instance) -> str:
    """Return the VNN-LIB text of the instance's property."""
    n, m = inst.net.input_size, inst.net.num_outputs
    lines = [f"; generated by scripts/fuzz_soundness.py ({inst.family}): {inst.note}"]
    lines += [f"(declare-const X_{i} Real)" for i in range(n)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(m)]
    if len(inst.boxes) == 1:
        lo, up = inst.boxes[0]
        for i in range(n):
            lines += [f"(assert (<= X_{i} {num(up[i])}))", f"(assert (>= X_{i} {num(lo[i])}))"]
    else:
        boxes = [" ".join(f"(>= X_{i} {num(lo[i])}) (<= X_{i} {num(up[i])})" for i in range(n))
                 for lo, up in inst.boxes]
        lines.append("(assert (or " + " ".join(f"(and {b})" for b in boxes) + "))")
    if len(inst.disjuncts) == 1:
        lines += [f"(assert {_row(r)})" for r in inst.disjuncts[0]]
    else:
        conj = [" ".join(_row(r) for r in d) for d in inst.disjuncts]
        lines.append("(assert (or " + " ".join(f"(and {c})" for c in conj) + "))")
    return "\n".join(lines) + "\n"


def write_instance(inst: Instance, folder: Path, stem: str = "instance") -> tuple[Path, Path]:
    """Write ``<stem>.onnx`` and ``<stem>.vnnlib`` into ``folder``; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path, vnnlib_path = folder / f"{stem}.onnx", folder / f"{stem}.vnnlib"
    onnx.save(to_onnx(inst.net), str(onnx_path))
    vnnlib_path.write_text(to_vnnlib(inst))
    return onnx_path, vnnlib_path


def ort_forward(path: Path | str, x: np.ndarray) -> np.ndarray:
    """Return the onnxruntime output (flat, as float64) of the model at ``path`` on flat x.

    The input is cast to the model's element type, as a VNN-COMP checker does.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dt = np.float64 if "double" in inp.type else np.float32
    shape = [int(d) for d in inp.shape]
    out = sess.run(None, {inp.name: np.asarray(x, dtype=dt).reshape(shape)})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)
