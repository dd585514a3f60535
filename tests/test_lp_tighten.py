"""Tests of bound tightening: hand-solved twin neurons, sampled soundness, never looser."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from scipy.optimize import linprog

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


def _ball_range(w0: np.ndarray, b0: np.ndarray, row: np.ndarray, bias: float, box: InputBox,
                centre: np.ndarray, radius: float) -> tuple[float, float]:
    """Exact range of ``row . relu(w0 x + b0) + bias`` over box and L1 ball: one scipy LP in
    (x, d) per activation pattern of the first layer (the oracle)."""
    n, m = w0.shape[1], w0.shape[0]
    ball = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), -np.eye(n)],
                     [np.zeros((1, n)), np.ones((1, n))]])
    ball_rhs = np.concatenate([centre, -centre, [radius]])
    lo, hi = np.inf, -np.inf
    for pattern in itertools.product([0.0, 1.0], repeat=m):
        on = np.array(pattern)
        sign = np.where(on > 0, -1.0, 1.0)
        a_ub = np.vstack([np.hstack([sign[:, None] * w0, np.zeros((m, n))]), ball])
        b_ub = np.concatenate([-sign * b0, ball_rhs])
        obj = np.concatenate([(row * on) @ w0, np.zeros(n)])
        const = float((row * on) @ b0 + bias)
        bounds = list(zip(box.lower, box.upper, strict=True)) + [(0, None)] * n
        for sense in (1.0, -1.0):
            res = linprog(sense * obj, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
            if res.status == 0:
                value = sense * res.fun + const
                lo, hi = min(lo, value), max(hi, value)
    return lo, hi


@pytest.mark.parametrize("seed", range(3))
def test_l1_ball_milp_tightening_is_exact_and_sound(seed: int) -> None:
    """Tightened over box and L1 ball, the second layer's MILP bounds equal the exact range
    (pattern enumeration), sampled points of the ball stay inside, and the bounds are at
    least as tight as over the box alone."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 4, 5, 2])
    box = InputBox(np.zeros(3), np.ones(3))
    centre, radius = rng.uniform(0, 1, 3), 0.4
    # stop_at_sign off: the MILPs run to optimality, so the unstable bounds are exact
    res = tighten_bounds(net, box, None, None,
                         TightenOptions("milp", l1_ball=(centre, radius), stop_at_sign=False))
    plain = tighten_bounds(net, box, None, None, TightenOptions("milp", stop_at_sign=False))
    w0, b0 = net.layers[0].weight, net.layers[0].bias
    w1, b1 = net.layers[2].weight, net.layers[2].bias
    checked = 0
    for j in range(w1.shape[0]):
        exact = _ball_range(w0, b0, w1[j], float(b1[j]), box, centre, radius)
        if res.lower[1][j] < 0 < res.upper[1][j]:  # unstable: tightened to the exact range
            checked += 1
            assert res.lower[1][j] == pytest.approx(exact[0], abs=1e-5)
            assert res.upper[1][j] == pytest.approx(exact[1], abs=1e-5)
        assert res.lower[1][j] <= exact[0] + 1e-6 and exact[1] <= res.upper[1][j] + 1e-6
    assert checked > 0
    u = rng.laplace(size=(4000, 3))
    xs = np.clip(centre + rng.uniform(0, radius, (4000, 1)) * u / np.abs(u).sum(1)[:, None],
                 box.lower, box.upper)
    _, pre = net.forward_with_preactivations(xs)
    for k, p in enumerate(pre):
        assert np.all(p >= res.lower[k] - 1e-9) and np.all(p <= res.upper[k] + 1e-9)
        assert np.all(res.lower[k] >= plain.lower[k] - 1e-9)
        assert np.all(res.upper[k] <= plain.upper[k] + 1e-9)


def test_milp_pass_in_two_processes_equals_one() -> None:
    """Sharing a layer's MILPs between two processes gives the same (solved-to-optimality)
    bounds as one process, with or without the LP pass first."""
    net = random_relu_net(np.random.default_rng(3), [3, 8, 8, 6, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    one = tighten_bounds(net, box, None, None, TightenOptions("milp", milp_time_per_neuron=5))
    two = tighten_bounds(net, box, None, None, TightenOptions("milp", milp_time_per_neuron=5,
                                                              jobs=2, lp_pass=False))
    assert two.lp_solves == 0 and two.milp_solves > 0
    for k in range(len(one.lower)):
        np.testing.assert_allclose(two.lower[k], one.lower[k], atol=1e-5)
        np.testing.assert_allclose(two.upper[k], one.upper[k], atol=1e-5)


def test_milp_tightening_stops_at_the_sign_and_stays_sound() -> None:
    """With stop_at_sign each neuron's MILP ends once its sign is settled: the bounds are
    still valid (sampled points inside), never looser than the LP's, and a neuron that the
    exact MILP makes stable is stable here too."""
    rng = np.random.default_rng(4)
    net = random_relu_net(rng, [3, 8, 8, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    fast = tighten_bounds(net, box, None, None, TightenOptions("milp"))
    exact = tighten_bounds(net, box, None, None, TightenOptions("milp", stop_at_sign=False))
    lp = tighten_bounds(net, box, None, None, TightenOptions("lp"))
    _, pre = net.forward_with_preactivations(rng.uniform(-1, 1, (4000, 3)))
    for k, p in enumerate(pre):
        assert np.all(p >= fast.lower[k] - 1e-9) and np.all(p <= fast.upper[k] + 1e-9)
        assert np.all(fast.lower[k] >= lp.lower[k] - 1e-9)
        stable = (exact.lower[k] >= 0) | (exact.upper[k] <= 0)
        assert np.all(((fast.lower[k] >= 0) | (fast.upper[k] <= 0))[stable])
