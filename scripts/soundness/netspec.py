"""The generator's own description of a verification instance (no bnbver imports).

A network is a chain of operators on a tensor of shape ``input_shape`` (batch dimension
excluded), flattened in C order wherever a flat vector is needed. Every weight array holds
float64 numbers that are *exactly* the values written to the ONNX file: for a float32 model
they were rounded to float32 first (:func:`as_dtype`). The oracle reads these arrays, never
the ONNX file, so the two pieces of evidence are independent.

A property is a list of input boxes (a point is in the region when it is in any box) and
an unsafe set: a disjunction of conjunctions of :class:`OutRow` (VNN-LIB meaning: the
property is violated, ``sat``, when some input of some box has an output satisfying some
conjunction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Dense:
    """``y = W x + b``; W is (out, in). ``matmul`` writes MatMul + Add instead of Gemm."""

    weight: np.ndarray
    bias: np.ndarray
    matmul: bool = False


@dataclass(frozen=True, eq=False)
class Conv:
    """2-D convolution, group 1, zero padding ``pads = (top, left, bottom, right)``.

    ``weight`` is (C_out, C_in, kh, kw); ``in_shape`` is (C_in, H, W).
    """

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Return (C_out, H_out, W_out)."""
        co, _, kh, kw = self.weight.shape
        return (co, *_spatial_out(self.in_shape, (kh, kw), self.stride, self.pads))


@dataclass(frozen=True)
class MaxPool:
    """2-D max pooling; padded cells never win (ONNX semantics)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """Return (C, H_out, W_out)."""
        return (self.in_shape[0],
                *_spatial_out(self.in_shape, self.kernel, self.stride, self.pads))


@dataclass(frozen=True)
class Relu:
    """Elementwise ``max(v, 0)``."""


@dataclass(frozen=True)
class Flatten:
    """ONNX Flatten (axis 1): only the shape changes."""


@dataclass(frozen=True, eq=False)
class Elementwise:
    """``v -> v + c`` (Add), ``v - c`` (Sub) or ``v * c`` (Mul); c is flat, one per value."""

    op: str
    const: np.ndarray


@dataclass(frozen=True, eq=False)
class Residual:
    """A residual block on a flat vector: ``body(h) + shortcut(h)`` (``h`` itself when
    ``shortcut`` is None); the body is a chain of Dense and Relu ops ending in a Dense of the
    input's size (the issue 19 graphs: the ONNX file reads h twice and joins with Add)."""

    body: tuple[Dense | Relu, ...]
    shortcut: Dense | None = None


Op = Dense | Conv | MaxPool | Relu | Flatten | Elementwise | Residual


@dataclass(frozen=True, eq=False)
class NetSpec:
    """A chain of operators; ``dtype`` is the ONNX element type ("float32" or "float64")."""

    ops: tuple[Op, ...]
    input_shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def input_size(self) -> int:
        """Return the number of input values."""
        return int(np.prod(self.input_shape))

    @property
    def num_outputs(self) -> int:
        """Return the number of output values."""
        size = self.input_size
        for op in self.ops:
            size = op_output_size(op, size)
        return size

    @property
    def num_units(self) -> int:
        """Return the number of ReLU neurons plus max-pool outputs (the oracle's branch points)."""
        return _units(self.ops, self.input_size)


@dataclass(frozen=True)
class OutRow:
    """One output constraint ``Y_lhs <op> rhs``: rhs is ``Y_rhs_var`` or the float ``rhs``.

    ``op`` is "<=" or ">="; ``rhs`` is a float64 written as its exact decimal expansion.
    """

    lhs: int
    op: str
    rhs_var: int | None = None
    rhs: float = 0.0


@dataclass(frozen=True, eq=False)
class Instance:
    """One fuzzing instance: network, input boxes, unsafe disjuncts, and what was planted.

    Attributes:
        family: the generator family that produced it.
        boxes: (lower, upper) float64 arrays, one pair per input box.
        disjuncts: the unsafe set, a disjunction of conjunctions of rows.
        planted: (x, box index) of a counterexample that holds in exact arithmetic, or None.
        note: a one-line description for reports.
    """

    family: str
    net: NetSpec
    boxes: tuple[tuple[np.ndarray, np.ndarray], ...]
    disjuncts: tuple[tuple[OutRow, ...], ...]
    planted: tuple[np.ndarray, int] | None = None
    note: str = ""
    tags: tuple[str, ...] = field(default=())


def as_dtype(a: np.ndarray | float, dtype: str) -> np.ndarray:
    """Return ``a`` rounded to ``dtype`` (nearest) and held as float64, exactly representable."""
    arr = np.asarray(a, dtype=np.float64)
    if dtype == "float32":
        return np.asarray(arr.astype(np.float32), dtype=np.float64)
    return arr.copy()


def _units(ops: tuple[Op, ...], size: int) -> int:
    """Return the ReLU neurons plus max-pool outputs of a chain (residual bodies included)."""
    units = 0
    for op in ops:
        if isinstance(op, Residual):
            units += _units(op.body, size)
        size = op_output_size(op, size)
        units += size if isinstance(op, (Relu, MaxPool)) else 0
    return units


def op_output_size(op: Op, size: int) -> int:
    """Return the flat output size of ``op`` on a flat input of ``size`` values."""
    if isinstance(op, Residual):
        return size
    if isinstance(op, Dense):
        return int(op.weight.shape[0])
    if isinstance(op, (Conv, MaxPool)):
        return int(np.prod(op.out_shape))
    return size


def _spatial_out(in_shape: tuple[int, int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], pads: tuple[int, int, int, int]) -> tuple[int, int]:
    """Return (H_out, W_out) of a 2-D window operator (floor mode)."""
    h = (in_shape[1] + pads[0] + pads[2] - kernel[0]) // stride[0] + 1
    w = (in_shape[2] + pads[1] + pads[3] - kernel[1]) // stride[1] + 1
    return h, w
