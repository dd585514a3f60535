"""Shared fixtures: paths to the bundled examples and the optional ../shared benchmarks."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from bnbver.network import Dense, Network, ReLU

# Tests run two per machine (pytest -n 2): one torch thread each avoids oversubscription,
# which slows torch's CPU kernels down by an order of magnitude.
torch.set_num_threads(1)

# Property-based tests are reproducible by default: the same examples on every run and every
# machine, so a green run is not luck. ``scripts/hypothesis_random.py`` runs them with fresh
# random examples on purpose (profile "random").
settings.register_profile("derandomized", derandomize=True, deadline=None,
                          print_blob=True, database=None)
settings.register_profile("random", derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("BNBVER_HYPOTHESIS_PROFILE", "derandomized"))

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


@pytest.fixture
def examples_dir() -> Path:
    """The bundled examples folder (always present)."""
    return EXAMPLES


@pytest.fixture
def benchmarks_dir() -> Path:
    """The full VNN-COMP benchmarks next to the repo; skip when a clone has no ../shared."""
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip("../shared/benchmarks not present: full benchmark suites are not in the repo")
    return SHARED_BENCHMARKS


def random_relu_net(rng: np.random.Generator, sizes: list[int], scale: float = 1.0) -> Network:
    """Return a fully connected ReLU network with the given layer sizes."""
    layers: list = []
    for i in range(len(sizes) - 1):
        w = rng.normal(size=(sizes[i + 1], sizes[i])) * scale / np.sqrt(sizes[i])
        layers.append(Dense(w, rng.normal(size=sizes[i + 1]) * 0.1))
        if i < len(sizes) - 2:
            layers.append(ReLU(sizes[i + 1]))
    return Network(tuple(layers), (sizes[0],))


@functools.cache
def digits_model() -> tuple[torch.nn.Sequential, np.ndarray, np.ndarray]:
    """Return a 64-20-10 ReLU classifier trained here on scikit-learn's digits (8x8 images,
    pixels scaled to [0, 1]) and 12 held-out (x (12, 64), y (12,)) samples.

    Plain full-batch gradient descent (no torch.optim, whose import costs 2 s), seeded:
    about 0.2 s and 92 % held-out accuracy.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = data.data / 16.0, data.target
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 20), torch.nn.ReLU(),
                                torch.nn.Linear(20, 10))
    xt = torch.tensor(x[:1200], dtype=torch.float32)
    yt = torch.tensor(y[:1200])
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
    return model.eval(), x[1200:1212].copy(), y[1200:1212].copy()
