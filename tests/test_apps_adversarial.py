"""Minimal adversarial examples: exact optimum vs brute force, MILP agreement, checked points."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from bnbver.apps.adversarial import (
    AdversarialProblem,
    distance,
    margin_slacks,
    minimal_adversarial,
)
from bnbver.apps.optimize import OptimizeOptions, OptStatus, encode_problem, pattern_encoders
from bnbver.errors import InputError
from bnbver.lp.highs import HighsOptions, solve
from bnbver.lp.model import LpStatus
from bnbver.network import Dense, Network, ReLU
from bnbver.spec import InputBox
from tests.conftest import random_relu_net

BOX = InputBox(np.full(4, -3.0), np.full(4, 3.0))
OPTS = OptimizeOptions(time_limit=20.0, tighten="interval")


def brute_force(network: Network, problem: AdversarialProblem) -> float:
    """Return the optimum as the least of one exact LP per activation pattern."""
    best = np.inf
    sizes = network.relu_sizes
    for pat in itertools.product([1, -1], repeat=sum(sizes)):
        flat = np.array(pat, dtype=np.int8)
        masks = np.split(flat, np.cumsum(sizes)[:-1])
        lp, _, empty = encode_problem(network, problem.box, None, masks, pattern_encoders([]),
                                      problem, 0.0)
        sol = solve(lp, HighsOptions(threads=1))
        if not empty and sol.status is LpStatus.OPTIMAL and sol.objective is not None:
            best = min(best, sol.objective)
    return best


def _case(seed: int) -> tuple[Network, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [4, 5, 4, 3])
    x0 = rng.uniform(-1, 1, 4)
    return net, x0, int(np.argsort(net.forward(x0))[-2])


@pytest.mark.parametrize("seed", [1, 2, 4, 5])
@pytest.mark.parametrize(("norm", "margin"), [("l1", 1.2), ("linf", 1.0), ("l1", 1.0)])
def test_optimum_equals_brute_force(seed: int, norm: str, margin: float) -> None:
    net, x0, t = _case(seed)
    res = minimal_adversarial(net, x0, t, norm=norm, margin=margin, domain=BOX, options=OPTS)
    exact = brute_force(net, AdversarialProblem(x0, t, margin, norm, BOX))
    if not np.isfinite(exact):
        assert res.status is OptStatus.INFEASIBLE
        return
    assert res.status is OptStatus.OPTIMAL
    assert res.bound <= exact + 1e-7
    assert res.distance >= exact - 1e-7
    assert res.distance - res.bound <= max(OPTS.gap_abs, OPTS.gap_rel * res.distance) + 1e-9


@pytest.mark.parametrize("seed", [1, 4])
@pytest.mark.parametrize("norm", ["l1", "linf"])
def test_point_reaches_target_with_margin_and_distance_is_as_claimed(seed: int,
                                                                      norm: str) -> None:
    net, x0, t = _case(seed)
    res = minimal_adversarial(net, x0, t, norm=norm, margin=1.2, domain=BOX, options=OPTS)
    assert res.x is not None and BOX.contains(res.x)
    y = net.forward(res.x.astype(np.float64))
    others = np.delete(y, t)
    assert np.all(y[t] >= 1.2 * others)
    assert np.all(margin_slacks(y, t, 1.2) >= 0)
    diff = np.abs(res.x - x0)
    expected = diff.sum() if norm == "l1" else diff.max()
    assert res.distance == pytest.approx(expected, abs=1e-12)
    assert distance(res.x, x0, norm) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("formulation", ["bigm", "extended", "partition:2"])
@pytest.mark.parametrize("tighten", ["none", "lp"])
def test_bab_and_full_milp_agree_within_gap(formulation: str, tighten: str) -> None:
    net, x0, t = _case(2)
    opts = OptimizeOptions(time_limit=20.0, tighten=tighten)
    bab = minimal_adversarial(net, x0, t, domain=BOX, options=opts)
    milp = minimal_adversarial(net, x0, t, domain=BOX, options=opts,
                               method=f"milp:{formulation}")
    assert bab.status is OptStatus.OPTIMAL and milp.status is OptStatus.OPTIMAL
    assert milp.bound <= bab.distance + 1e-9 and bab.bound <= milp.distance + 1e-9
    assert abs(bab.distance - milp.distance) <= bab.gap + milp.gap + 1e-6


def test_max_pool_network_matches_milp() -> None:
    from bnbver.network import MaxPool2d

    rng = np.random.default_rng(3)
    layers = (Dense(rng.normal(size=(8, 4)), rng.normal(size=8) * 0.3), ReLU(8),
              MaxPool2d((1, 2), (1, 2), (0, 0, 0, 0), (1, 2, 4)),
              Dense(rng.normal(size=(3, 4)), rng.normal(size=3) * 0.3))
    net = Network(layers, (4,))
    x0 = rng.uniform(-1, 1, 4)
    t = int(np.argsort(net.forward(x0))[-2])
    bab = minimal_adversarial(net, x0, t, margin=1.0, domain=BOX, options=OPTS)
    milp = minimal_adversarial(net, x0, t, margin=1.0, domain=BOX, options=OPTS,
                               method="milp:bigm")
    assert bab.status is milp.status
    if bab.x is not None:
        assert bab.status is OptStatus.OPTIMAL
        assert abs(bab.distance - milp.distance) <= bab.gap + milp.gap + 1e-6
        assert np.all(margin_slacks(net.forward(bab.x), t, 1.0) >= 0)


def test_unreachable_target_is_infeasible() -> None:
    net = Network((Dense(np.eye(2), np.array([0.0, -5.0])),), (2,))
    res = minimal_adversarial(net, np.array([0.5, 0.5]), 1, margin=1.0, options=OPTS)
    assert res.status is OptStatus.INFEASIBLE and res.x is None


def test_hand_solved_l1_and_linf() -> None:
    """y = (x1, x2) on [0, 1]^2, x0 = (0.8, 0.2), target 1 with y_1 >= y_0: the closest point
    moves both coordinates to 0.5 (L1 0.6, Linf 0.3)."""
    net = Network((Dense(np.eye(2), np.zeros(2)), ReLU(2), Dense(np.eye(2), np.zeros(2))),
                  (2,))
    x0 = np.array([0.8, 0.2])
    l1 = minimal_adversarial(net, x0, 1, norm="l1", margin=1.0, options=OPTS)
    linf = minimal_adversarial(net, x0, 1, norm="linf", margin=1.0, options=OPTS)
    assert l1.distance == pytest.approx(0.6, abs=1e-4) and l1.bound <= 0.6 + 1e-9
    assert linf.distance == pytest.approx(0.3, abs=1e-4) and linf.bound <= 0.3 + 1e-9


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"target": 7}, "--target"), ({"norm": "l2"}, "--norm"), ({"margin": -1.0}, "--margin"),
    ({"image": np.zeros(3)}, "image"), ({"image": np.full(4, 9.0)}, "image"),
    ({"method": "cplex"}, "--method"),
])
def test_bad_input_names_the_argument(kwargs: dict[str, object], name: str) -> None:
    net, x0, _ = _case(1)
    args: dict[str, object] = {"image": np.clip(x0, 0, 1), "target": 0}
    args.update(kwargs)
    image, target = args.pop("image"), args.pop("target")
    with pytest.raises(InputError, match=name):
        minimal_adversarial(net, image, target, options=OPTS, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 3, 7])
@pytest.mark.parametrize("tighten", ["lp", "milp"])
def test_wide_input_l1_optimum_equals_brute_force(seed: int, tighten: str) -> None:
    """Many inputs and a small L1 optimum: the incumbent's L1 ball cuts the first layer's
    bounds far inside the box's (``_Search.ball_bounds``), and the root's LP/MILP tightening
    runs over that ball (``_root_bounds``); the optimum must not move."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [16, 4, 3, 3])
    box = InputBox(np.zeros(16), np.ones(16))
    x0 = rng.uniform(0.2, 0.8, 16)
    t = int(np.argsort(net.forward(x0))[-2])
    res = minimal_adversarial(net, x0, t, norm="l1", margin=1.0, domain=box,
                              options=replace(OPTS, tighten=tighten))
    exact = brute_force(net, AdversarialProblem(x0, t, 1.0, "l1", box))
    if not np.isfinite(exact):
        assert res.status is OptStatus.INFEASIBLE
        return
    assert res.status is OptStatus.OPTIMAL
    assert res.bound <= exact + 1e-7 <= res.distance + 2e-7
    assert res.distance - res.bound <= max(OPTS.gap_abs, OPTS.gap_rel * res.distance) + 1e-9
