"""The engine's ReLU-output coefficients (for BaBSR) are those of the worst row's bound."""

from __future__ import annotations

import numpy as np
import torch

from bnbver.bounds import BoundsOptions, prepare
from bnbver.bounds.engine import bound_root
from bnbver.network import Dense, Network, ReLU


def test_one_hidden_layer_coefficients_equal_spec_times_last_weight() -> None:
    """y = W2 relu(W1 x + b1) + b2, margins C y - d: the ReLU output's coefficient is C W2."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(6, 3)), rng.normal(size=(2, 6))
    net = Network((Dense(w1, np.zeros(6)), ReLU(6), Dense(w2, np.zeros(2))), (3,))
    C = np.array([[1.0, -1.0], [-1.0, 1.0]])
    bnet = prepare(net, C, np.zeros(2), BoundsOptions())
    for method in ("crown", "alpha", "beta"):
        res = bound_root(bnet, -np.ones(3), np.ones(3),
                         BoundsOptions(method=method, relu_coeffs=True, iterations=3))
        assert res.relu_coeffs is not None and len(res.relu_coeffs) == 1
        worst = int(res.row_lower[0].argmin())
        np.testing.assert_allclose(res.relu_coeffs[0][0].numpy(), (C @ w2)[worst], atol=1e-12)


def test_coefficients_are_off_by_default() -> None:
    rng = np.random.default_rng(1)
    net = Network((Dense(rng.normal(size=(4, 2)), np.zeros(4)), ReLU(4),
                   Dense(rng.normal(size=(1, 4)), np.zeros(1))), (2,))
    res = bound_root(prepare(net, None, None), -np.ones(2), np.ones(2),
                     BoundsOptions(method="crown"))
    assert res.relu_coeffs is None
    assert torch.isfinite(res.row_lower).all()
