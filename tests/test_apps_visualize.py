"""Feature visualisation: exact unit maximum vs brute force, MILP agreement, the near term."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bnbver.apps.optimize import OptimizeOptions, OptStatus, encode_problem, pattern_encoders
from bnbver.apps.visualize import UnitProblem, maximize_unit, parse_unit, unit_value
from bnbver.errors import InputError
from bnbver.lp.highs import HighsOptions, solve
from bnbver.lp.model import LpStatus
from bnbver.network import Network
from bnbver.spec import InputBox
from tests.conftest import random_relu_net

BOX = InputBox(np.zeros(4), np.ones(4))
OPTS = OptimizeOptions(time_limit=20.0, tighten="interval")


def brute_max(network: Network, problem: UnitProblem) -> float:
    """Return the maximum of the unit objective: the best exact LP over activation patterns."""
    best = -np.inf
    sizes = network.relu_sizes
    for pat in itertools.product([1, -1], repeat=sum(sizes)):
        masks = np.split(np.array(pat, dtype=np.int8), np.cumsum(sizes)[:-1])
        lp, _, empty = encode_problem(network, problem.box, None, masks, pattern_encoders([]),
                                      problem, 0.0)
        sol = solve(lp, HighsOptions(threads=1))
        if not empty and sol.status is LpStatus.OPTIMAL and sol.objective is not None:
            best = max(best, -sol.objective)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("layer", "index"), [(1, 0), (2, 1)])
@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_unit_maximum_equals_brute_force(seed: int, layer: int, index: int,
                                         weight: float) -> None:
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [4, 5, 4, 3])
    near = rng.uniform(0, 1, 4)
    res = maximize_unit(net, layer, index, near=near, weight=weight, options=OPTS)
    exact = brute_max(net, UnitProblem(layer, index, near if weight else None, weight, BOX))
    assert res.status is OptStatus.OPTIMAL and res.x is not None
    assert res.bound >= exact - 1e-7 and res.objective <= exact + 1e-7
    assert res.bound - res.objective <= max(OPTS.gap_abs, OPTS.gap_rel * abs(exact)) + 1e-9
    penalty = weight * np.abs(res.x - near).sum()
    assert res.activation == pytest.approx(unit_value(net, res.x, layer, index))
    assert res.objective == pytest.approx(res.activation - penalty, abs=1e-9)


@pytest.mark.parametrize("formulation", ["bigm", "extended"])
def test_bab_and_milp_agree(formulation: str) -> None:
    net = random_relu_net(np.random.default_rng(7), [6, 8, 6, 3])
    bab = maximize_unit(net, 1, 2, options=OPTS)
    milp = maximize_unit(net, 1, 2, options=OPTS, method=f"milp:{formulation}")
    assert bab.status is OptStatus.OPTIMAL and milp.status is OptStatus.OPTIMAL
    assert abs(bab.objective - milp.objective) <= bab.gap + milp.gap + 1e-6


def test_parse_unit() -> None:
    net = random_relu_net(np.random.default_rng(0), [4, 5, 4, 3])
    assert parse_unit("1:3", net) == (1, 3)
    assert parse_unit("out:2", net) == (2, 2)
    for bad in ("1", "5:0", "0:9", "a:b"):
        with pytest.raises(InputError, match="--unit"):
            parse_unit(bad, net)
