"""Train the small MNIST networks of the seed papers' shapes and export them to ONNX.

Fischetti & Jo (2018) used fully connected networks 784-8-8-8-10 up to 784-40-40-40-10;
Aftabi et al. (2024) similar small ReLU networks. Only the MNIST *test* set is available here
(../shared/benchmarks/data/mnist), so the networks train on its first 8,000 images and are
evaluated on the other 2,000; the experiments draw their images from those 2,000.

Networks (all inputs 784 pixels in [0, 1], flat; outputs 10 logits):
    fc8x3    784-8-8-8-10
    fc20x3   784-20-20-20-10
    fc40x3   784-40-40-40-10
    pool     784 -> (1,28,28) conv 4@4x4 stride 4 -> ReLU -> maxpool 2x2 stride 1 -> 144
             -> dense 16 -> ReLU -> dense 10    (a small max-pooling network)

Usage:
    python scripts/train_seed_nets.py [DATA_DIR] [--out examples/seed_nets] [--epochs 20]
    python scripts/train_seed_nets.py --smoke      # one tiny net, 1 epoch, to a temp dir
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402

from bnbver.apps.images import read_idx_images, read_idx_labels  # noqa: E402
from bnbver.io.onnx_export import save_onnx  # noqa: E402
from bnbver.io.torch_loader import from_torch  # noqa: E402
from bnbver.progress import Progress  # noqa: E402

N_TRAIN = 8000


def build(name: str) -> nn.Sequential:
    """Return the untrained torch model of one named architecture."""
    if name.startswith("fc"):
        width, depth = (int(v) for v in name[2:].split("x"))
        layers: list[nn.Module] = []
        n = 784
        for _ in range(depth):
            layers += [nn.Linear(n, width), nn.ReLU()]
            n = width
        return nn.Sequential(*layers, nn.Linear(n, 10))
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.ReLU(),
                         nn.MaxPool2d(2, stride=1), nn.Flatten(), nn.Linear(144, 16), nn.ReLU(),
                         nn.Linear(16, 10))


def input_shape(name: str) -> tuple[int, ...]:
    """Return the input shape of one sample: flat for fc nets, (1, 28, 28) for the conv net."""
    return (784,) if name.startswith("fc") else (1, 28, 28)


def load_split(data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (train x, train y, test x, test y): test-set images 0..7999 and 8000..9999."""
    mnist = data / "data" / "mnist"
    x = read_idx_images(mnist / "t10k-images-idx3-ubyte.gz")
    y = read_idx_labels(mnist / "t10k-labels-idx1-ubyte.gz")
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def train(model: nn.Sequential, x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
          shape: tuple[int, ...], bar: Progress | None = None) -> None:
    """Train with Adam and cross-entropy (batch 64, lr 1e-3); count epochs on ``bar``."""
    torch.manual_seed(seed)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    xt = xt.reshape(xt.shape[0], *shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(xt.shape[0])
        for i in range(0, xt.shape[0], 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if bar is not None:
            bar.update(info=f"loss {loss.item():.4f}")


def accuracy(model: nn.Sequential, x: np.ndarray, y: np.ndarray,
             shape: tuple[int, ...]) -> float:
    """Return the fraction of correct predictions."""
    with torch.no_grad():
        xt = torch.tensor(x, dtype=torch.float32).reshape(x.shape[0], *shape)
        pred = model(xt).argmax(1).numpy()
    return float((pred == y).mean())


@clean_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument("--out", default=str(REPO / "examples" / "seed_nets"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = ["fc8x3"] if args.smoke else ["fc8x3", "fc20x3", "fc40x3", "pool"]
    epochs = 1 if args.smoke else args.epochs
    xtr, ytr, xte, yte = load_split(Path(args.data))
    out = Path(tempfile.mkdtemp()) if args.smoke else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        xtr, ytr = xtr[:500], ytr[:500]
    for name in names:
        t0 = time.monotonic()
        model = build(name)
        shape = input_shape(name)
        with Progress(epochs, f"train {name}") as bar:
            train(model, xtr, ytr, epochs, 0, shape, bar)
        model.eval()
        net = from_torch(model, shape)
        path = out / f"mnist_{name}.onnx"
        save_onnx(net, path)
        print(f"{name}: train acc {accuracy(model, xtr, ytr, shape):.4f}, held-out acc "
              f"{accuracy(model, xte, yte, shape):.4f} ({time.monotonic() - t0:.1f} s) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
