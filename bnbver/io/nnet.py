"""Load ACAS Xu networks in the ``.nnet`` format (Kyle Julian, Stanford 2016).

Format: ``//`` comment lines, then comma-separated records:

1. ``numLayers, inputSize, outputSize, maxLayerSize``;
2. the ``numLayers + 1`` layer sizes;
3. a legacy "symmetric" flag (ignored);
4. input minimums; 5. input maximums (``inputSize`` values each);
6. means and 7. ranges (``inputSize + 1`` values each; the last is the output's);
8. per layer k: ``sizes[k+1]`` weight rows of ``sizes[k]`` values, then ``sizes[k+1]`` biases,
   one per line. Hidden layers are ReLU; the last layer is affine.

The weights act on *normalised* inputs ``x_n = (x - mean) / range`` and give normalised outputs
``y = y_n * range_out + mean_out``, exactly as the VNN-COMP ONNX versions do. With
``normalized_io=False`` both maps are folded into the first and last Dense layers:
``W_1' = W_1 diag(1/range)``, ``b_1' = b_1 - W_1 (mean / range)``, ``W_L' = range_out W_L``,
``b_L' = range_out b_L + mean_out``. The min/max clipping that reference implementations apply to
raw inputs is not linear and is not encoded: keep raw input boxes inside [min, max].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnbver.errors import InputError
from bnbver.network import Dense, Layer, Network, ReLU


@dataclass
class _Records:
    """The numeric records of a file, each with its line number, read front to back."""

    src: str
    rows: list[tuple[int, np.ndarray]]
    pos: int = 0

    def take(self, count: int | None, what: str) -> np.ndarray:
        """Return the next record; with ``count`` set, require exactly that many values."""
        if self.pos >= len(self.rows):
            raise InputError(self.src, f"unexpected end of file, expected {what}")
        line, values = self.rows[self.pos]
        self.pos += 1
        if count is not None and values.size != count:
            raise InputError(
                self.src, f"line {line}: expected {count} values for {what}, got {values.size}"
            )
        return values

    def take_matrix(self, n_rows: int, n_cols: int, what: str) -> np.ndarray:
        """Return ``n_rows`` records of ``n_cols`` values each as a matrix."""
        return np.stack([self.take(n_cols, what) for _ in range(n_rows)])


def load_nnet(path: str | Path, normalized_io: bool = True) -> Network:
    """Load an ``.nnet`` file.

    Args:
        path: the ``.nnet`` file.
        normalized_io: True (default) gives the network on normalised inputs and outputs, equal
            to the VNN-COMP ONNX version; False folds the normalisation in so that the network
            takes raw inputs and returns raw outputs.

    Returns:
        The network, with ``input_shape == (inputSize,)``.

    Raises:
        InputError: the file is missing or malformed (the message names the line).
    """
    src = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(src, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(src, f"cannot read: {exc}") from None
    rec = _Records(src, _parse_records(text, src))
    sizes = _read_sizes(rec)
    n_in = sizes[0]
    rec.take(None, "the symmetric flag")
    rec.take(n_in, "input minimums")
    rec.take(n_in, "input maximums")
    means = rec.take(n_in + 1, "means")
    ranges = rec.take(n_in + 1, "ranges")
    dense = _read_layers(rec, sizes)
    if rec.pos != len(rec.rows):
        raise InputError(src, f"line {rec.rows[rec.pos][0]}: unexpected data after the last layer")
    if not normalized_io:
        dense = _fold_normalisation(dense, means, ranges, src)
    return Network(_with_relus(dense), (n_in,), (sizes[-1],))


def _parse_records(text: str, src: str) -> list[tuple[int, np.ndarray]]:
    """Return (line number, values) for every non-comment, non-empty line."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        try:
            values = np.array([float(v) for v in line.split(",") if v.strip()], dtype=np.float64)
        except ValueError:
            raise InputError(src, f"line {lineno}: not a list of numbers: {line[:40]!r}") from None
        if not np.all(np.isfinite(values)):
            raise InputError(src, f"line {lineno}: NaN or infinite value")
        rows.append((lineno, values))
    return rows


def _read_sizes(rec: _Records) -> list[int]:
    """Read the header and layer-size records and check they agree."""
    header = rec.take(4, "numLayers, inputSize, outputSize, maxLayerSize")
    n_layers, n_in, n_out = (int(v) for v in header[:3])
    if n_layers < 1 or n_in < 1 or n_out < 1 or np.any(header != np.round(header)):
        raise InputError(rec.src, f"line {rec.rows[0][0]}: bad header {header.tolist()}")
    sizes = rec.take(n_layers + 1, "layer sizes")
    line = rec.rows[rec.pos - 1][0]
    if np.any(sizes < 1) or np.any(sizes != np.round(sizes)):
        raise InputError(rec.src, f"line {line}: layer sizes must be positive integers")
    if sizes[0] != n_in or sizes[-1] != n_out:
        raise InputError(rec.src, f"line {line}: layer sizes disagree with the header")
    return [int(s) for s in sizes]


def _read_layers(rec: _Records, sizes: list[int]) -> list[Dense]:
    """Read the weights and biases of every layer."""
    layers = []
    for k in range(len(sizes) - 1):
        w = rec.take_matrix(sizes[k + 1], sizes[k], f"layer {k + 1} weights")
        b = rec.take_matrix(sizes[k + 1], 1, f"layer {k + 1} biases")[:, 0]
        layers.append(Dense(w, b))
    return layers


def _fold_normalisation(
    dense: list[Dense], means: np.ndarray, ranges: np.ndarray, src: str
) -> list[Dense]:
    """Fold input normalisation into the first layer and output scaling into the last."""
    if np.any(ranges == 0):
        raise InputError(src, "a normalisation range is zero")
    n_in = means.size - 1
    first = dense[0]
    scale, shift = 1.0 / ranges[:n_in], -means[:n_in] / ranges[:n_in]
    dense = [Dense(first.weight * scale[None, :], first.weight @ shift + first.bias), *dense[1:]]
    last = dense[-1]
    out_mean, out_range = means[n_in], ranges[n_in]
    dense[-1] = Dense(out_range * last.weight, out_range * last.bias + out_mean)
    return dense


def _with_relus(dense: list[Dense]) -> tuple[Layer, ...]:
    """Interleave ReLU layers after every Dense layer but the last."""
    layers: list[Layer] = []
    for layer in dense[:-1]:
        layers += [layer, ReLU(layer.out_size)]
    layers.append(dense[-1])
    return tuple(layers)
