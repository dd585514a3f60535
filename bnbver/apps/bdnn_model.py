"""Binarized deep neural networks (BDNNs): the data type, the forward pass and error counts.

A BDNN with hidden widths ``n_1 .. n_L`` and ``K`` classes computes, for an input x in R^d,

    h^0 = x,    h^l = sigma(W^l h^{l-1} + b^l)   (l = 1..L),    s = W^{L+1} h^L + b^{L+1},

with a binary activation ``sigma``: ``step(z) = 1 if z >= 0 else 0`` or
``sign(z) = +1 if z >= 0 else -1`` (ties go up in both). ``predict`` is ``argmax_k s_k`` with ties
to the lowest class index (numpy's rule). A point (x, y) is classified correctly iff
``predict(x) == y``.

Robustness (Kurtz & Bah's robust variant) is certified at the first layer only: the pattern of
layer 1 is constant on the L-inf ball ``||x' - x||_inf <= eps`` iff for every neuron j either
``w_j^T x + b_j - eps ||w_j||_1 >= 0`` or ``w_j^T x + b_j + eps ||w_j||_1 < 0``. Then every deeper
value, and the class, is constant on the ball. A point counts as a *certified robust error* when
it is misclassified or its first-layer pattern is not constant on the ball; for eps = 0 this is
the plain error count.

Shapes: ``N`` points, ``d`` inputs, ``K`` classes; ``weights[l]`` is ``(n_{l+1}, n_l)``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

Activation = Literal["step", "sign"]
ACTIVATIONS: tuple[str, ...] = ("step", "sign")


def activate(z: np.ndarray, activation: str) -> np.ndarray:
    """Apply the binary activation with the ties-go-up convention (``z = 0`` maps to the top)."""
    on = (z >= 0).astype(np.float64)
    return on if activation == "step" else 2.0 * on - 1.0


def robust_mask(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """Return a mask ``(N,)``: the pattern of layer ``(weight, bias)`` is constant on each ball.

    The ball is ``||x' - x_i||_inf <= eps``; over it ``z`` ranges in ``z_i +- eps ||w||_1``.
    """
    z = np.atleast_2d(np.asarray(x, dtype=np.float64)) @ weight.T + bias
    radius = eps * np.abs(weight).sum(axis=1)
    return np.asarray(np.all((z - radius >= 0) | (z + radius < 0), axis=1))


@dataclass(frozen=True)
class WeightSpec:
    """The weight domain: integers in ``{-bound..bound}`` or reals in ``[-bound, bound]``.

    Biases share the domain of the weights.
    """

    kind: Literal["int", "cont"] = "int"
    bound: float = 1.0

    @property
    def integer(self) -> bool:
        """Whether weights are integers."""
        return self.kind == "int"

    @staticmethod
    def parse(text: str) -> WeightSpec:
        """Parse ``"int:1"`` or ``"cont:1.5"``.

        Raises:
            ValueError: the text is not ``int:B`` or ``cont:B`` with ``B > 0``.
        """
        kind, _, value = text.partition(":")
        if kind not in ("int", "cont") or not value:
            raise ValueError(f"expected int:B or cont:B, got {text!r}")
        bound = float(value)
        if not np.isfinite(bound) or bound <= 0 or (kind == "int" and bound != int(bound)):
            raise ValueError(f"the bound in {text!r} must be a positive (integer for int:) number")
        return WeightSpec("int" if kind == "int" else "cont", bound)


@dataclass(frozen=True, eq=False)
class BinarizedNetwork:
    """A BDNN (see the module docstring).

    Attributes:
        weights: one matrix ``(n_out, n_in)`` per layer, the last one the output layer.
        biases: one vector ``(n_out,)`` per layer.
        activation: ``"step"`` or ``"sign"`` for every hidden layer.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: str = "step"

    @property
    def hidden(self) -> tuple[int, ...]:
        """The hidden widths ``n_1 .. n_L``."""
        return tuple(int(w.shape[0]) for w in self.weights[:-1])

    @property
    def num_inputs(self) -> int:
        """The input dimension d."""
        return int(self.weights[0].shape[1])

    @property
    def num_classes(self) -> int:
        """The number of classes K."""
        return int(self.weights[-1].shape[0])

    def hidden_values(self, x: np.ndarray) -> list[np.ndarray]:
        """Return ``[h^1, .., h^L]`` for points x ``(N, d)``, each ``(N, n_l)``."""
        h = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = []
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = activate(h @ w.T + b, self.activation)
            out.append(h)
        return out

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return the class scores ``(N, K)`` of points x ``(N, d)``."""
        hs = self.hidden_values(x)
        h = hs[-1] if hs else np.atleast_2d(np.asarray(x, dtype=np.float64))
        return np.asarray(h @ self.weights[-1].T + self.biases[-1])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the predicted classes ``(N,)`` (argmax, ties to the lowest index)."""
        return np.asarray(np.argmax(self.forward(x), axis=1))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Return the fraction of points classified correctly."""
        y = np.asarray(y)
        return float(np.mean(self.predict(x) == y)) if y.size else 1.0

    def first_layer_robust(self, x: np.ndarray, eps: float) -> np.ndarray:
        """Return a mask ``(N,)``: the first-layer pattern is constant on the eps-ball."""
        return robust_mask(self.weights[0], self.biases[0], x, eps)

    def error_mask(self, x: np.ndarray, y: np.ndarray, robust_eps: float = 0.0) -> np.ndarray:
        """Return a mask ``(N,)`` of (certified robust, when ``robust_eps > 0``) errors."""
        wrong = self.predict(x) != np.asarray(y)
        if robust_eps > 0:
            wrong |= ~self.first_layer_robust(x, robust_eps)
        return np.asarray(wrong)

    def errors(self, x: np.ndarray, y: np.ndarray, robust_eps: float = 0.0) -> int:
        """Return the number of (certified robust) errors on (x, y)."""
        return int(np.sum(self.error_mask(x, y, robust_eps)))


def random_network(
    rng: np.random.Generator, sizes: list[int], spec: WeightSpec, activation: str = "step"
) -> BinarizedNetwork:
    """Return a random network in the weight domain (layer sizes ``[d, n_1, .., K]``)."""
    weights, biases = [], []
    for n_in, n_out in itertools.pairwise(sizes):
        if spec.integer:
            b = int(spec.bound)
            weights.append(rng.integers(-b, b + 1, size=(n_out, n_in)).astype(np.float64))
            biases.append(rng.integers(-b, b + 1, size=n_out).astype(np.float64))
        else:
            weights.append(rng.uniform(-spec.bound, spec.bound, size=(n_out, n_in)))
            biases.append(rng.uniform(-spec.bound, spec.bound, size=n_out) * 0.1)
    return BinarizedNetwork(tuple(weights), tuple(biases), activation)
