"""Tests of the triangle LP relaxation, sound LP bounds and the warm-started node LP."""

from __future__ import annotations

import numpy as np
import pytest

from bnbver.lp.intervals import interval_bounds
from bnbver.lp.model import LpStatus, lagrangian_bound
from bnbver.lp.relaxation import (
    NodeLp,
    build_relaxation,
    lp_lower_bound,
    solve_fixed_node,
)
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from bnbver.spec import HalfSpaces, InputBox
from bnbver.splits import Split, SplitSet, split_masks
from tests.conftest import random_relu_net

DISJ = HalfSpaces(np.array([[1.0, -1.0], [0.5, 1.0]]), np.array([0.0, 0.2]))


def _setup(seed: int, sizes=(3, 6, 5, 2)):
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, list(sizes))
    box = InputBox(-np.ones(sizes[0]), np.ones(sizes[0]))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    return rng, net, box, lo, hi


def _unstable(lo, hi):
    return [(k, int(j)) for k, (a, b) in enumerate(zip(lo, hi, strict=True))
            for j in np.flatnonzero((a < 0) & (b > 0))]


def test_twin_neurons_hand_solved() -> None:
    """z1 = z2 = x in [-1, 1], y = relu(z1) - relu(z2). The triangle allows a1 = max(0, x)
    and a2 = (x + 1) / 2, so min y = min_x max(0, x) - (x+1)/2 = -1/2 (at x = 0); the true
    minimum is 0."""
    net = Network((Dense(np.array([[1.0], [1.0]]), np.zeros(2)), ReLU(2),
                   Dense(np.array([[1.0, -1.0]]), np.zeros(1))), (1,))
    box = InputBox(-np.ones(1), np.ones(1))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    r = lp_lower_bound(build_relaxation(net, box, (lo, hi), None, (np.ones(1), 0.0)))
    assert r.objective == pytest.approx(-0.5, abs=1e-9)
    assert r.lower <= -0.5 + 1e-9
    assert not r.closes


@pytest.mark.parametrize("seed", range(4))
def test_lp_bound_is_sound_by_sampling(seed: int) -> None:
    rng, net, box, lo, hi = _setup(seed)
    r = lp_lower_bound(build_relaxation(net, box, (lo, hi), None, DISJ))
    xs = rng.uniform(box.lower, box.upper, size=(2000, 3))
    margins = DISJ.margins(net.forward(xs))
    assert r.status is LpStatus.OPTIMAL
    assert r.lower <= margins.min() + 1e-9
    assert r.objective <= margins.min() + 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_dual_bound_below_optimum_and_tight(seed: int) -> None:
    _, net, box, lo, hi = _setup(seed)
    relax = build_relaxation(net, box, (lo, hi), None, DISJ)
    r = lp_lower_bound(relax)
    assert r.dual_bound <= r.objective + 1e-12
    assert r.dual_bound >= r.objective - 1e-6
    # any dual vector gives a valid bound, e.g. a perturbed one
    rng = np.random.default_rng(seed)
    from bnbver.lp.highs import solve
    sol = solve(relax.lp)
    noisy = sol.row_duals + rng.normal(size=sol.row_duals.size) * 0.1
    assert lagrangian_bound(relax.lp, noisy) <= r.objective + 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_warm_child_equals_cold_child(seed: int) -> None:
    rng, net, box, lo, hi = _setup(seed)
    node = NodeLp(build_relaxation(net, box, (lo, hi), None, DISJ, reserve=True))
    assert node.bound().lower == pytest.approx(
        lp_lower_bound(build_relaxation(net, box, (lo, hi), None, DISJ)).lower, abs=1e-7)
    un = _unstable(lo, hi)
    for _ in range(6):
        ss = SplitSet.of([Split(k, j, bool(rng.integers(2))) for k, j in un
                          if rng.random() < 0.4])
        masks = [m[0] for m in split_masks([ss], net.relu_sizes)]
        l2, h2, _ = interval_bounds(net, box.lower, box.upper, (lo, hi), masks)
        warm = node.bound(ss, l2, h2)
        cold = lp_lower_bound(build_relaxation(net, box, (l2, h2), ss, DISJ))
        if np.isinf(cold.lower) or np.isinf(warm.lower):
            assert warm.lower == cold.lower
        else:
            assert warm.lower == pytest.approx(cold.lower, abs=1e-7)
    assert node.warm.solves >= 2


def test_splitting_never_loosens() -> None:
    _rng, net, box, lo, hi = _setup(5)
    root = lp_lower_bound(build_relaxation(net, box, (lo, hi), None, DISJ)).lower
    k, j = _unstable(lo, hi)[0]
    for active in (True, False):
        child = lp_lower_bound(build_relaxation(
            net, box, (lo, hi), SplitSet.of([Split(k, j, active)]), DISJ)).lower
        assert child >= root - 1e-9


def test_contradicting_split_closes_node() -> None:
    _, net, box, lo, hi = _setup(0)
    k = 0
    j = int(np.flatnonzero(hi[0] <= 0)[0]) if np.any(hi[0] <= 0) else None
    if j is None:
        lo = [a.copy() for a in lo]
        hi = [b.copy() for b in hi]
        j = 0
        hi[0][0] = -0.1
        lo[0][0] = min(lo[0][0], -0.2)
    relax = build_relaxation(net, box, (lo, hi), SplitSet.of([Split(k, j, True)]), DISJ)
    if hi[k][j] < 0:
        r = lp_lower_bound(relax)
        assert r.closes and r.status is LpStatus.INFEASIBLE
    node = NodeLp(build_relaxation(net, box, (lo, hi), None, DISJ, reserve=True))
    un = _unstable(lo, hi)[0]
    both = SplitSet.of([Split(*un, True)])
    r = node.bound(both, [a for a in lo], [np.where(np.arange(b.size) == un[1], -1e-3, b)
                                           if i == un[0] else b for i, b in enumerate(hi)])
    assert r.closes


def test_fixed_node_lp_is_exact() -> None:
    """With every ReLU split to the pattern of x0, the LP minimum is <= margin(x0) and its
    candidate input has that pattern's exact margin."""
    rng, net, box, lo, hi = _setup(2)
    x0 = rng.uniform(box.lower, box.upper)
    _, pre = net.forward_with_preactivations(x0)
    ss = SplitSet.of([Split(k, j, bool(p[j] >= 0)) for k, p in enumerate(pre)
                      for j in range(p.size)])
    r = solve_fixed_node(net, box, (lo, hi), ss, DISJ)
    assert r.lower <= DISJ.margins(net.forward(x0))[0] + 1e-9
    assert DISJ.margins(net.forward(r.candidate))[0] == pytest.approx(r.objective, abs=1e-6)
    with pytest.raises(ValueError):
        solve_fixed_node(net, box, (lo, hi), None, DISJ)


def _conv_pool_net(rng):
    conv = Conv2d(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.1, (1, 1),
                  (0, 0, 0, 0), (1, 4, 4))
    pool = MaxPool2d((2, 2), (1, 1), (0, 0, 0, 0), (2, 3, 3))
    return Network((conv, ReLU(18), pool, Flatten(8), Dense(rng.normal(size=(2, 8)),
                                                              np.zeros(2))), (1, 4, 4))


def test_conv_maxpool_relaxation_is_sound() -> None:
    rng = np.random.default_rng(3)
    net = _conv_pool_net(rng)
    box = InputBox(-np.ones(16), np.ones(16))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    r = lp_lower_bound(build_relaxation(net, box, (lo, hi), None, DISJ))
    xs = rng.uniform(-1, 1, size=(3000, 16))
    assert r.status is LpStatus.OPTIMAL
    assert r.lower <= DISJ.margins(net.forward(xs)).min() + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_issue_4_fixed_neuron_drops_stale_triangle(seed: int) -> None:
    """A node that fixes a neuron must not inherit the triangle row of an earlier node.

    Node 1 splits every first-layer neuron, which tightens the second layer's bounds; node 2
    then fixes one second-layer neuron only. Its warm bound must equal a cold solve (a stale
    row ``a <= s (z - l_1)`` with ``a = 0`` would impose ``z >= l_1`` from node 1).
    """
    rng, net, box, lo, hi = _setup(seed)
    node = NodeLp(build_relaxation(net, box, (lo, hi), None, DISJ, reserve=True))
    first = [(0, j) for j in range(net.relu_sizes[0])]
    second = [(k, j) for k, j in _unstable(lo, hi) if k == 1]
    for k, j in second:
        for active in (False, True):
            ss1 = SplitSet.of([Split(a, b, bool(rng.integers(2))) for a, b in first])
            m1 = [m[0] for m in split_masks([ss1], net.relu_sizes)]
            l1, h1, _ = interval_bounds(net, box.lower, box.upper, (lo, hi), m1)
            node.bound(ss1, l1, h1)
            ss2 = SplitSet.of([Split(k, j, active)])
            m2 = [m[0] for m in split_masks([ss2], net.relu_sizes)]
            l2, h2, _ = interval_bounds(net, box.lower, box.upper, (lo, hi), m2)
            warm = node.bound(ss2, l2, h2)
            cold = lp_lower_bound(build_relaxation(net, box, (l2, h2), ss2, DISJ))
            if np.isinf(cold.lower) or np.isinf(warm.lower):
                assert warm.lower == cold.lower
            else:
                assert warm.lower == pytest.approx(cold.lower, abs=1e-7)
