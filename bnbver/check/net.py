"""The network as the checker sees it: affine segments between ReLU layers.

Segment k maps the output of ReLU layer k-1 (the input x for k = 0) to the pre-activation of
ReLU layer k; the last segment maps the last ReLU's output to the network output. A segment is
one or more affine layers (``Dense`` or ``Conv2d`` as dense matrices), each with the error of
its float64 numbers that the IR records (``weight_err``: relative, ``bias_err``: absolute).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnbver.network import Conv2d, Dense, Flatten, Network, ReLU, flat_bias_err


@dataclass(frozen=True, eq=False)
class Affine:
    """One affine layer ``W h + b``, ``|W|``, and the recorded error of its numbers."""

    W: np.ndarray
    b: np.ndarray
    werr: float
    berr: np.ndarray
    abs_w: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "abs_w", np.abs(self.W))


@dataclass(frozen=True, eq=False)
class CheckNet:
    """Segments of affine layers around the ReLU layers.

    Attributes:
        segments: ``len(relu_sizes) + 1`` tuples of affine layers (see the module docstring).
        relu_sizes: neurons per ReLU layer.
        input_size: n_in.
    """

    segments: tuple[tuple[Affine, ...], ...]
    relu_sizes: tuple[int, ...]
    input_size: int


def check_net(network: Network) -> CheckNet:
    """Return the segments of ``network``.

    Raises:
        ValueError: the network has a layer the checker does not handle (max pooling).
    """
    segments: list[tuple[Affine, ...]] = []
    current: list[Affine] = []
    sizes: list[int] = []
    for layer in network.layers:
        if isinstance(layer, (Dense, Conv2d)):
            W = layer.weight if isinstance(layer, Dense) else layer.matrix().toarray()
            b = layer.bias if isinstance(layer, Dense) else layer.flat_bias()
            current.append(Affine(np.asarray(W, float), np.asarray(b, float),
                                  float(layer.weight_err), flat_bias_err(layer)))
        elif isinstance(layer, ReLU):
            if not current:
                raise ValueError("a ReLU layer without an affine layer before it")
            segments.append(tuple(current))
            current = []
            sizes.append(layer.size)
        elif not isinstance(layer, Flatten):
            raise ValueError(f"the checker does not handle {type(layer).__name__} layers")
    if not current:
        raise ValueError("the network must end with an affine layer")
    segments.append(tuple(current))
    return CheckNet(tuple(segments), tuple(sizes), network.input_size)
