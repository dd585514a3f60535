"""Build a :class:`~bnbver.network.Network` (chain or DAG) from a graph of named tensors.

The readers (ONNX in :mod:`bnbver.io.onnx`, torch.fx in :mod:`bnbver.io.torch_loader`) walk
their graph in a topological order and call one method of a :class:`GraphBuilder` per
operator; the builder owns what the readers share:

- tensor names to IR tensors (``-1`` the input, ``i`` the output of layer i) and shapes;
- shape-only operators (Identity, Dropout, Reshape, Flatten) are aliases: the flat (C, H, W)
  vector does not change, and an image becoming a vector gets a :class:`Flatten` marker;
- elementwise affine maps (``Add``/``Sub``/``Mul``/``Div`` with a constant, inference batch
  normalisation) are kept *pending* on a tensor, ``value = s * h + t`` with h an IR tensor,
  and folded into the affine layer before them when that layer's output has no other reader
  (``s * (W x + b) + t``; per output channel for a convolution), else into each affine layer
  that reads them (``W (s v + t) + b``, exact for Dense, and for a Conv2d when s and t are
  constant per channel and t = 0 under padding), else made a layer of their own (a 1 x 1
  convolution per channel, or a diagonal Dense layer) before any other reader;
- a sum of two tensors is an :class:`Add` layer (a residual join), a difference an Add of
  the first and the negated second, a channel concatenation a :class:`Concat` layer.

Folds record their float64 rounding in the layers' error fields
(:mod:`bnbver.io.layers`). Every benchmark chain model (ACAS Xu, mnist_fc, oval21) gives the
same layers, bit for bit, as the chain-only reader before issue 19; a pending map now also
survives a Flatten (it folds into the Dense layer after it instead of becoming a diagonal
layer) and a per-channel one becomes a 1 x 1 convolution of any size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bnbver.errors import UnsupportedOperatorError
from bnbver.io.layers import ElementwiseMap, fold_map_after, fold_map_before, map_layer
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
    chain_inputs,
)

MAX_DIAGONAL = 4096
"""Largest tensor whose unfoldable elementwise map becomes an explicit diagonal Dense layer
(larger per-channel maps of images become a 1 x 1 convolution)."""


@dataclass(frozen=True, eq=False)
class Tensor:
    """A named tensor of the source graph: ``pending(value of IR tensor ref)``.

    Attributes:
        ref: the IR tensor (-1: the network input, i: the output of layer i).
        shape: the shape without the batch dimension.
        pending: an elementwise map not yet folded into a layer, or None.
        root: the name whose readers count for this value (aliases share their source's).
    """

    ref: int
    shape: tuple[int, ...]
    pending: ElementwiseMap | None
    root: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


class GraphBuilder:
    """Accumulates the layers of a network read operator by operator (a reader's workspace).

    Args:
        src: the source named in errors (a file path or "torch module").
        input_name: the name of the network input.
        input_shape: its shape without the batch dimension.
        readers: per tensor name, how many operators read its value (aliases resolved to
            their source by the reader; the graph output counts as a reader).
    """

    def __init__(self, src: str, input_name: str, input_shape: tuple[int, ...],
                 readers: Callable[[str], int]) -> None:
        self.src = src
        self.layers: list[Layer] = []
        self.inputs: list[tuple[int, ...]] = []
        self.tensors: dict[str, Tensor] = {
            input_name: Tensor(-1, tuple(input_shape), None, input_name)}
        self.readers = readers
        self.input_shape = tuple(input_shape)
        self.max_diagonal = MAX_DIAGONAL

    # ------------------------------------------------------------------ tensors and layers
    def shape(self, name: str) -> tuple[int, ...]:
        """Return the shape of a tensor (without the batch dimension)."""
        return self.tensors[name].shape

    def has(self, name: str) -> bool:
        """True when ``name`` is a tensor that depends on the input."""
        return name in self.tensors

    def _emit(self, layer: Layer, inputs: tuple[int, ...]) -> int:
        self.layers.append(layer)
        self.inputs.append(inputs)
        return len(self.layers) - 1

    def _set(self, name: str, ref: int, shape: tuple[int, ...],
             pending: ElementwiseMap | None = None, root: str | None = None) -> None:
        self.tensors[name] = Tensor(ref, tuple(shape), pending, root or name)

    def materialize(self, name: str, where: str) -> int:
        """Return the IR tensor of ``name`` with any pending map made a layer of its own."""
        t = self.tensors[name]
        if t.pending is None:
            return t.ref
        layer = map_layer(t.pending, t.shape, self.max_diagonal)
        if layer is None:
            raise UnsupportedOperatorError(
                self.src,
                f"cannot fold the elementwise operations before {where} into an affine layer "
                f"exactly, and {t.size} values exceed MAX_DIAGONAL={self.max_diagonal}")
        ref = self._emit(layer, (t.ref,))
        self.tensors[name] = Tensor(ref, t.shape, None, t.root)
        return ref

    # ------------------------------------------------------------------ operators
    def alias(self, name: str, out: str, shape: tuple[int, ...] | None = None) -> None:
        """``out`` is ``name`` (Identity, Dropout) or its reshaping to ``shape``."""
        t = self.tensors[name]
        new = tuple(shape) if shape is not None else t.shape
        if int(np.prod(new)) != t.size:
            raise ValueError(f"reshape of {t.shape} to {new}")
        ref = t.ref
        if sum(d > 1 for d in t.shape) > 1 and sum(d > 1 for d in new) <= 1:
            ref = self._emit(Flatten(t.size), (t.ref,))
        self._set(out, ref, new, t.pending, t.root)

    def affine(self, name: str, layer: Dense | Conv2d, out: str,
               shape: tuple[int, ...]) -> None:
        """``out = layer(name)``, folding a pending map into the layer when exact."""
        t = self.tensors[name]
        ref = t.ref
        if t.pending is not None:
            folded = fold_map_before(layer, t.pending)
            if folded is None:
                ref = self.materialize(name, f"'{out}'")
            else:
                layer = folded
        self._set(out, self._emit(layer, (ref,)), shape)

    def elementwise(self, name: str, m: ElementwiseMap, out: str) -> None:
        """``out = s * name + t``: folded into the affine layer before when it has no other
        reader, else kept pending."""
        t = self.tensors[name]
        if t.pending is not None:
            self._set(out, t.ref, t.shape, t.pending.then(m))
            return
        if t.ref >= 0 and self.readers(t.root) == 1 and self._owns(t):
            folded = fold_map_after(self.layers[t.ref], m)
            if folded is not None:
                self.layers[t.ref] = folded
                self._set(out, t.ref, t.shape)
                return
        self._set(out, t.ref, t.shape, m)

    def _owns(self, t: Tensor) -> bool:
        """True when ``t`` is the plain output of an affine layer (not through a Flatten)."""
        return isinstance(self.layers[t.ref], (Dense, Conv2d))

    def relu(self, name: str, out: str) -> None:
        """``out = max(name, 0)``."""
        ref = self.materialize(name, f"'{out}'")
        t = self.tensors[name]
        self._set(out, self._emit(ReLU(t.size), (ref,)), t.shape)

    def maxpool(self, name: str, layer: MaxPool2d, out: str) -> None:
        """``out = maxpool(name)``."""
        ref = self.materialize(name, f"'{out}'")
        self._set(out, self._emit(layer, (ref,)), layer.out_shape)

    def add(self, names: list[str], out: str, negate_last: bool = False) -> None:
        """``out`` = the sum of the tensors ``names`` (or the first minus the second)."""
        shapes = {self.tensors[n].shape for n in names}
        if len(shapes) != 1:
            raise UnsupportedOperatorError(
                self.src, f"'{out}' adds tensors of shapes {sorted(shapes)} (broadcasting "
                "between activations is not supported)")
        if negate_last:
            t = self.tensors[names[-1]]
            neg = ElementwiseMap(-np.ones(t.size), np.zeros(t.size))
            self.elementwise(names[-1], neg, f"{out}/neg")
            names = [*names[:-1], f"{out}/neg"]
        refs = tuple(self.materialize(n, f"'{out}'") for n in names)
        shape = self.tensors[names[0]].shape
        self._set(out, self._emit(Add(int(np.prod(shape))), refs), shape)

    def concat(self, names: list[str], out: str, shape: tuple[int, ...]) -> None:
        """``out`` = the flat concatenation of ``names`` (a channel concatenation)."""
        refs = tuple(self.materialize(n, f"'{out}'") for n in names)
        sizes = tuple(self.tensors[n].size for n in names)
        self._set(out, self._emit(Concat(sizes), refs), shape)

    # ------------------------------------------------------------------ the result
    def finish(self, output: str) -> Network:
        """Return the network whose output is tensor ``output``."""
        ref = self.materialize(output, "the output")
        t = self.tensors[output]
        if ref != len(self.layers) - 1:
            ref = self._emit(Flatten(t.size), (ref,))
        inputs = tuple(self.inputs)
        if inputs == chain_inputs(len(self.layers)):
            inputs = ()
        return Network(tuple(self.layers), self.input_shape, t.shape, inputs)
