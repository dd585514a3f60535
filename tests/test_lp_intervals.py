"""Interval bounds over an L1 ball cut from a box, against scipy's LP solver."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from bnbver.lp.intervals import first_affine, l1_ball_interval, sort_rows
from bnbver.network import Dense, Flatten, Network, ReLU
from tests.bounds_cases import pool_first_net


def _lp_extreme(w: np.ndarray, b: float, lo: np.ndarray, hi: np.ndarray, c: np.ndarray,
                budget: float, sense: int) -> float:
    """min (sense=1) or max (sense=-1) of w.x + b over the box and ||x - c||_1 <= budget,
    with x = c + p - q, p, q >= 0."""
    n = w.size
    bounds = [(0, hi[j] - c[j]) for j in range(n)] + [(0, c[j] - lo[j]) for j in range(n)]
    res = linprog(sense * np.concatenate([w, -w]), A_ub=np.ones((1, 2 * n)), b_ub=[budget],
                  bounds=bounds)
    assert res.status == 0
    return float(sense * res.fun + w @ c + b)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 8), m=st.integers(1, 4),
       budget=st.floats(0.0, 5.0))
def test_l1_ball_interval_is_the_lp_range(seed: int, n: int, m: int, budget: float) -> None:
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(m, n)) * (rng.uniform(size=(m, n)) < 0.8)
    b = rng.normal(size=m)
    lo = rng.uniform(-1, 0, n)
    hi = lo + rng.uniform(0, 2, n)
    c = rng.uniform(lo, hi)
    low, up = l1_ball_interval(sort_rows(W, b), lo, hi, c, budget)
    for i in range(m):
        assert low[i] <= _lp_extreme(W[i], b[i], lo, hi, c, budget, 1) + 1e-9
        assert low[i] >= _lp_extreme(W[i], b[i], lo, hi, c, budget, 1) - 1e-7
        assert up[i] >= _lp_extreme(W[i], b[i], lo, hi, c, budget, -1) - 1e-9
        assert up[i] <= _lp_extreme(W[i], b[i], lo, hi, c, budget, -1) + 1e-7


def test_first_affine_only_for_one_affine_layer() -> None:
    dense = Dense(np.ones((2, 4)), np.zeros(2))
    net = Network((Flatten(4), dense, ReLU(2), Dense(np.ones((1, 2)), np.zeros(1))), (4,))
    got = first_affine(net)
    assert got is not None and np.allclose(got[0].toarray(), 1.0)
    two = Network((Dense(np.eye(4), np.zeros(4)), dense, ReLU(2)), (4,))
    assert first_affine(two) is None
    assert first_affine(Network((dense,), (4,))) is None
    assert first_affine(pool_first_net(0)) is None  # a max pool before the first ReLU
