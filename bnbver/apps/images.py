"""Images in and out for the applications: read inputs (npy, csv, png, MNIST idx) and write PNGs.

Inputs are returned as flat float64 vectors (C, H, W order, as bnbver's networks take them).
A pixel file whose largest value exceeds 1 is taken to hold 0..255 values and is divided by 255.
PNGs are drawn with matplotlib (Agg backend), imported only when a PNG is written or read;
matplotlib is optional (``has_matplotlib``): without it the commands skip their PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.errors import InputError
from bnbver.io.datasets import read_idx_images, read_idx_labels
from bnbver.network import Network


def has_matplotlib() -> bool:
    """Return whether matplotlib can be imported (it is an optional dependency)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def image_shape(network: Network) -> tuple[int, int, int]:
    """Return the (C, H, W) to draw the network's input as (square guess for flat inputs)."""
    dims = [int(s) for s in network.input_shape]
    if len(dims) >= 3 and dims[-3] in (1, 3) and dims[-2] > 1 and dims[-1] > 1:
        return dims[-3], dims[-2], dims[-1]
    n = network.input_size
    side = math.isqrt(n)
    if side * side == n:
        return 1, side, side
    return 1, 1, n


def _scale(values: np.ndarray) -> np.ndarray:
    return values / 255.0 if values.size and float(values.max()) > 1.0 else values


def read_dataset_row(path: str | Path, index: int) -> tuple[np.ndarray, int | None]:
    """Return image ``index`` (flat, [0, 1]) and its label from an idx3 file or a csv.

    A csv row is ``label,p0,...`` (as ``mnist_test.csv``); for an idx3 file the label comes
    from the matching ``labels-idx1`` file next to it when present.

    Raises:
        InputError: the file is missing or malformed, or the index is out of range.
    """
    p = Path(path)
    if "idx3" in p.name:
        images = read_idx_images(p, index + 1)
        if index < 0 or index >= images.shape[0]:
            raise InputError("--index", f"{index} outside 0..{images.shape[0] - 1}")
        lab = p.with_name(p.name.replace("images-idx3", "labels-idx1"))
        label = int(read_idx_labels(lab, index + 1)[index]) if lab.is_file() else None
        return images[index], label
    rows = _read_text_rows(p)
    if not 0 <= index < len(rows):
        raise InputError("--index", f"{index} outside 0..{len(rows) - 1}")
    row = rows[index]
    return _scale(row[1:]), int(row[0])


def _read_text_rows(p: Path) -> list[np.ndarray]:
    if not p.is_file():
        raise InputError(str(p), "no such file")
    rows = []
    for line in p.read_text().splitlines():
        if line.strip():
            try:
                rows.append(np.array([float(v) for v in line.replace(",", " ").split()]))
            except ValueError as exc:
                raise InputError(str(p), f"not numeric: {exc}") from None
    return rows


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read one input of ``size`` values from .npy, .png/.pgm (grayscale) or text (csv/txt).

    A text file holding ``size + 1`` numbers is taken as ``label,pixels`` (mnist_test.csv).

    Raises:
        InputError: the file is missing, unreadable, or has the wrong number of values.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(str(path), "no such file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        values = np.load(p).astype(np.float64).reshape(-1)
    elif suffix in (".png", ".pgm", ".jpg", ".jpeg"):
        values = _read_picture(p)
    else:
        rows = _read_text_rows(p)
        values = np.concatenate(rows) if rows else np.zeros(0)
        if values.size == size + 1:
            values = values[1:]
    values = _scale(values)
    if values.size != size or not np.all(np.isfinite(values)):
        raise InputError(str(path), f"has {values.size} values, the network takes {size}")
    return values


def _read_picture(p: Path) -> np.ndarray:
    if not has_matplotlib():
        raise InputError(str(p), "reading a picture needs matplotlib (pip install matplotlib); "
                         "give the input as .npy or csv instead")
    import matplotlib.image as mpimg

    try:
        img = np.asarray(mpimg.imread(p), dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(str(p), f"cannot read image: {exc}") from None
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    return img.reshape(-1)


def _to_display(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    img = np.asarray(x, dtype=np.float64).reshape(c, h, w)
    return img[0] if c == 1 else np.transpose(img[:3], (1, 2, 0))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid_png(
    path: str | Path, images: Sequence[np.ndarray], titles: Sequence[str],
    shape: tuple[int, int, int], ncols: int | None = None,
    signed: Sequence[bool] | None = None, suptitle: str = "",
) -> Path:
    """Write flat images as a grid PNG; ``signed`` panels use a diverging colour map.

    Returns:
        The path written.
    """
    plt = _pyplot()
    n = len(images)
    ncols = ncols or n
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        img = _to_display(images[k], shape)
        if signed is not None and signed[k]:
            lim = max(float(np.abs(img).max()), 1e-12)
            ax.imshow(img, cmap="seismic", vmin=-lim, vmax=lim)
        else:
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=max(1.0, float(img.max())))
        ax.set_title(titles[k], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def save_adversarial_png(path: str | Path, x0: np.ndarray, x: np.ndarray,
                         shape: tuple[int, int, int], title: str = "") -> Path:
    """Write original / adversarial / difference (red +, blue -) side by side."""
    return save_grid_png(path, [x0, x, np.asarray(x) - np.asarray(x0)],
                         ["original", "adversarial", "difference"], shape,
                         signed=[False, False, True], suptitle=title)
