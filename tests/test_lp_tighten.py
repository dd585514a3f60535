"""Tests of bound tightening: hand-solved twin neurons, sampled soundness, never looser."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bnbver.errors import InputError
from bnbver.lp.intervals import interval_bounds
from bnbver.lp.tighten import TightenOptions, count_unstable, tighten_bounds
from bnbver.network import Dense, Network, ReLU
from bnbver.spec import InputBox
from tests.conftest import random_relu_net


def twin_net() -> Network:
    """z1 = z2 = x in [-1, 1]; w = relu(z1) - relu(z2) feeds a second ReLU layer.

    Intervals give w in [-1, 1]; the triangle LP gives [-1/2, 1/2] (a1 = max(0, x),
    a2 = (x + 1)/2 at x = 0); the MILP gives the exact [0, 0].
    """
    return Network((Dense(np.array([[1.0], [1.0]]), np.zeros(2)), ReLU(2),
                    Dense(np.array([[1.0, -1.0]]), np.zeros(1)), ReLU(1),
                    Dense(np.ones((1, 1)), np.zeros(1))), (1,))


@pytest.mark.parametrize(("mode", "lo", "hi"), [("interval", -1.0, 1.0), ("lp", -0.5, 0.5),
                                                ("milp", 0.0, 0.0)])
def test_twin_neurons_hand_solved(mode: str, lo: float, hi: float) -> None:
    box = InputBox(-np.ones(1), np.ones(1))
    res = tighten_bounds(twin_net(), box, None, None, TightenOptions(mode))
    assert res.lower[1][0] == pytest.approx(lo, abs=1e-5)
    assert res.upper[1][0] == pytest.approx(hi, abs=1e-5)
    assert res.lower[1][0] <= 0.0 <= res.upper[1][0]  # sound: w = 0 everywhere


@pytest.mark.parametrize("seed", range(3))
def test_tightened_bounds_sound_and_never_looser(seed: int) -> None:
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 8, 8, 6, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    ilo, ihi, _ = interval_bounds(net, box.lower, box.upper)
    xs = rng.uniform(-1, 1, size=(3000, 3))
    _, pre = net.forward_with_preactivations(xs)
    prev = (ilo, ihi)
    for mode in ("lp", "milp"):
        res = tighten_bounds(net, box, None, None, TightenOptions(mode, milp_time_per_neuron=2))
        for k, p in enumerate(pre):
            assert np.all(p >= res.lower[k] - 1e-9) and np.all(p <= res.upper[k] + 1e-9)
            assert np.all(res.lower[k] >= prev[0][k] - 1e-12)
            assert np.all(res.upper[k] <= prev[1][k] + 1e-12)
        assert count_unstable(res.lower, res.upper) <= count_unstable(*prev)
        prev = (res.lower, res.upper)
    assert res.milp_solves > 0


def test_given_bounds_are_kept_when_tighter() -> None:
    rng = np.random.default_rng(7)
    net = random_relu_net(rng, [3, 6, 6, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    given_hi = [h.copy() for h in hi]
    given_hi[1] = np.minimum(given_hi[1], 0.01)  # pretend someone proved these
    res = tighten_bounds(net, box, (lo, given_hi), None, TightenOptions("lp"))
    assert np.all(res.upper[1] <= 0.01)


def test_deadline_in_the_past_returns_interval_bounds() -> None:
    rng = np.random.default_rng(1)
    net = random_relu_net(rng, [3, 6, 6, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    lo, _hi, _ = interval_bounds(net, box.lower, box.upper)
    res = tighten_bounds(net, box, None, None, TightenOptions("lp", deadline=time.monotonic()))
    assert res.timed_out
    for a, b in zip(res.lower, lo, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_mode_is_an_input_error() -> None:
    with pytest.raises(InputError, match="tighten"):
        tighten_bounds(twin_net(), InputBox(-np.ones(1), np.ones(1)), None, None,
                       TightenOptions("magic"))
