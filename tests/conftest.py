"""Shared fixtures: paths to the bundled examples and the optional ../shared benchmarks."""

from __future__ import annotations

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
