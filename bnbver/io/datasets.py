"""Labelled data sets for certification: ``.npz``, CSV and MNIST idx files.

- ``.npz`` with arrays ``x`` (N, ...) and ``y`` (N,): samples keep their shape (it must then
  fit the model's input, see ``bnbver.driver.fit_input``);
- CSV (``.csv``/``.txt``), one sample per row: the label is the column named ``label`` when
  the first row is a header, otherwise the first column (ERAN's ``mnist_test.csv``);
- MNIST idx: an ``*images-idx3-ubyte[.gz]`` file (its labels are the ``*labels-idx1-ubyte``
  file next to it), or a folder holding one such pair.

CSV rows and idx images are flat (N, n): they carry no layout, so they fit any model input
with n values. Pixel values are scaled into [0, 1]: idx files always (uint8 / 255); CSV
values by ``scale``, which by default is 255 when every value is an integer in 0..255 and
some exceed 1 (ERAN's CSV), else 1.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnbver.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples and labels.

    Attributes:
        x: (N, ...) float64 samples.
        y: (N,) int64 labels.
        indices: (N,) the samples' indices in the file (what ``--indices`` selects).
        source: the file name, for messages.
    """

    x: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    source: str


def load_dataset(path: str | Path, indices: Sequence[int] | None = None,
                 limit: int | None = None, scale: float | None = None) -> Dataset:
    """Read a data set and keep the samples ``indices`` (all by default), at most ``limit``.

    Args:
        path: an ``.npz``, CSV or idx file (or a folder with an idx pair).
        indices: sample numbers to keep, in this order.
        limit: keep at most this many (after ``indices``).
        scale: divide CSV values by this (None: 255 for 0..255 integer pixels, else 1).

    Raises:
        InputError: a missing or malformed file, non-integer labels, an index out of range,
            or a limit below 1.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), "no such file")
    if limit is not None and limit < 1:
        raise InputError("--limit", f"must be >= 1, got {limit}")
    if p.is_dir() or "idx3" in p.name:
        x, y = _read_idx(p)
    elif p.suffix.lower() == ".npz":
        x, y = _read_npz(p)
    elif p.suffix.lower() in (".csv", ".txt"):
        x, y = _read_csv(p, scale)
    else:
        raise InputError(str(path), f"unknown data format '{p.suffix}' (expected .npz, .csv "
                         f"or an MNIST idx3 file)")
    keep = _select(len(y), indices, limit)
    return Dataset(x[keep], y[keep], keep, str(path))


def _select(n: int, indices: Sequence[int] | None, limit: int | None) -> np.ndarray:
    chosen = np.arange(n) if indices is None else np.asarray(list(indices), dtype=np.int64)
    bad = [int(i) for i in chosen if not 0 <= i < n]
    if bad:
        raise InputError("--indices", f"{bad[:5]} outside 0..{n - 1}")
    return chosen[:limit] if limit is not None else chosen


def labels_as_int(values: np.ndarray, source: str) -> np.ndarray:
    """Return integer-valued labels as int64.

    Raises:
        InputError: a label that is not an integer (naming the first one and its index).
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(source, f"labels must be one per sample (N,), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(source, f"labels must be integer classes, got {arr.dtype}") from None
    bad = np.flatnonzero(~np.isfinite(as_float) | (as_float != np.round(as_float)))
    if bad.size:
        i = int(bad[0])
        raise InputError(source, f"labels must be integer classes, got {arr[i].item()!r} at "
                         f"index {i}")
    return as_float.astype(np.int64)


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise InputError(str(p), f"needs arrays x and y, found {sorted(data.files)}")
            x, y = data["x"], data["y"]
    except (OSError, ValueError) as exc:
        raise InputError(str(p), f"not a readable .npz file: {exc}") from None
    if x.ndim < 2 or x.shape[0] != np.asarray(y).shape[0]:
        raise InputError(str(p), f"x must be (N, ...) and y (N,), got {x.shape} and "
                         f"{np.asarray(y).shape}")
    try:
        xf = x.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(str(p), f"x must be numeric, got {x.dtype}") from None
    return xf, labels_as_int(y, f"{p}: y")


def _read_csv(p: Path, scale: float | None) -> tuple[np.ndarray, np.ndarray]:
    with p.open(newline="") as fh:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(fh), start=1)
                if any(c.strip() for c in row)]
    if not rows:
        raise InputError(str(p), "no data rows")
    label_col = 0
    if not all(_is_number(c) for c in rows[0][1]):
        header = [c.lower() for c in rows[0][1]]
        if "label" not in header:
            raise InputError(str(p), f"line 1: a header without a 'label' column ({header[:5]})")
        label_col = header.index("label")
        rows = rows[1:]
    width = len(rows[0][1]) if rows else 0
    if width < 2:
        raise InputError(str(p), "expected a label and at least one value per row")
    values = np.empty((len(rows), width))
    for r, (line, cells) in enumerate(rows):
        if len(cells) != width or not all(_is_number(c) for c in cells):
            raise InputError(str(p), f"line {line}: expected {width} numbers")
        values[r] = [float(c) for c in cells]
    labels = labels_as_int(values[:, label_col], f"{p}: label")
    x = np.delete(values, label_col, axis=1)
    return x / _csv_scale(x, scale, p), labels


def _csv_scale(x: np.ndarray, scale: float | None, p: Path) -> float:
    if scale is not None:
        if not (math.isfinite(scale) and scale > 0):
            raise InputError("--scale", f"must be > 0, got {scale}")
        return scale
    pixels = bool(x.size and x.min() >= 0 and x.max() <= 255 and np.all(x == np.round(x)))
    if pixels and x.max() > 1:
        log.info("%s: integer pixels 0..255, divided by 255 (give --scale 1 to keep them)", p)
        return 255.0
    return 1.0


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_idx_images(path: str | Path, count: int | None = None) -> np.ndarray:
    """Read an MNIST idx3 image file (optionally gzipped) as (N, 784) floats in [0, 1].

    Raises:
        InputError: the file is missing or not an idx3 file.
    """
    raw = _read_bytes(path)
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 2051:
        raise InputError(str(path), "not an idx3 image file")
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    n = n if count is None else min(n, count)
    data = np.frombuffer(raw, dtype=np.uint8, count=n * h * w, offset=16)
    return data.reshape(n, h * w).astype(np.float64) / 255.0


def read_idx_labels(path: str | Path, count: int | None = None) -> np.ndarray:
    """Read an MNIST idx1 label file (optionally gzipped) as (N,) int64.

    Raises:
        InputError: the file is missing or not an idx1 file.
    """
    raw = _read_bytes(path)
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != 2049:
        raise InputError(str(path), "not an idx1 label file")
    n = int.from_bytes(raw[4:8], "big")
    n = n if count is None else min(n, count)
    return np.frombuffer(raw, dtype=np.uint8, count=n, offset=8).astype(np.int64)


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(str(path), "no such file")
    return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()


def _read_idx(p: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _idx_images_path(p)
    labels = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
    if not labels.is_file():
        raise InputError(str(images), f"no label file {labels.name} next to it")
    return read_idx_images(images), read_idx_labels(labels)


def _idx_images_path(p: Path) -> Path:
    if not p.is_dir():
        return p
    found = sorted(p.glob("*images-idx3-ubyte*"))
    if len(found) != 1:
        raise InputError(str(p), f"expected one *images-idx3-ubyte file in the folder, found "
                         f"{[f.name for f in found]}")
    return found[0]
