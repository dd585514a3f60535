"""Tests of the MILP formulations against enumeration, forward passes and each other."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from bnbver.errors import InputError
from bnbver.lp.highs import solve, solve_file
from bnbver.lp.intervals import interval_bounds
from bnbver.lp.model import LpStatus
from bnbver.lp.relaxation import build_relaxation, lp_lower_bound, solve_fixed_node
from bnbver.milp import (
    add_anderson_cuts,
    build_milp,
    decide_milp,
    disjunct_paths,
    equal_range_groups,
    equal_size_groups,
    export_milp,
    parse_formulation,
    solve_milp,
)
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from bnbver.result import Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from bnbver.splits import Split, SplitSet
from tests.conftest import random_relu_net

FORMS = ["bigm", "extended", "partition:1", "partition:2", "partition:3:range"]
DISJ = HalfSpaces(np.array([[1.0, -1.0], [0.5, 1.0]]), np.array([0.0, 0.2]))


def _setup(seed: int, sizes=(3, 5, 4, 2)):
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, list(sizes))
    box = InputBox(-np.ones(sizes[0]), np.ones(sizes[0]))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    return rng, net, Property(box, UnsafeSet((DISJ,))), (lo, hi)


def _enumerate(net, prop, bounds) -> float:
    """Minimum margin by one exact LP per activation pattern of the unstable neurons."""
    lo, hi = bounds
    un = [(k, int(j)) for k, (a, b) in enumerate(zip(lo, hi, strict=True))
          for j in np.flatnonzero((a < 0) & (b > 0))]
    best = np.inf
    for pat in itertools.product([False, True], repeat=len(un)):
        ss = SplitSet.of([Split(k, j, s) for (k, j), s in zip(un, pat, strict=True)])
        r = solve_fixed_node(net, prop.box, bounds, ss, DISJ)
        if r.status is LpStatus.OPTIMAL:
            best = min(best, r.objective)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_every_formulation_matches_enumeration(seed: int) -> None:
    _, net, prop, bounds = _setup(seed)
    best = _enumerate(net, prop, bounds)
    for form in FORMS:
        sol = solve_milp(build_milp(net, prop, bounds, None, form, require_unsafe=False))
        assert sol.status is LpStatus.OPTIMAL, form
        assert sol.objective == pytest.approx(best, abs=1e-6), form


@pytest.mark.parametrize("seed", range(3))
def test_lp_relaxations_are_ordered(seed: int) -> None:
    """hull >= partition:2 >= partition:1 = big-M = triangle (same bounds, minimisation)."""
    _, net, prop, bounds = _setup(seed, (3, 6, 5, 2))
    val = {}
    for form in ("bigm", "partition:1", "partition:2", "extended"):
        m = build_milp(net, prop, bounds, None, form, require_unsafe=False)
        val[form] = solve(replace(m.lp, integrality=None)).objective
    tri = lp_lower_bound(build_relaxation(net, prop.box, bounds, None, DISJ)).objective
    assert val["bigm"] == pytest.approx(tri, abs=1e-7)
    assert val["partition:1"] == pytest.approx(val["bigm"], abs=1e-7)
    assert val["partition:2"] >= val["partition:1"] - 1e-7
    assert val["extended"] >= val["partition:2"] - 1e-7


@pytest.mark.parametrize("form", FORMS)
def test_fixed_input_gives_forward_pass(form: str) -> None:
    rng, net, prop, bounds = _setup(4)
    for _ in range(3):
        x0 = rng.uniform(prop.box.lower, prop.box.upper)
        m = build_milp(net, prop, bounds, None, form, require_unsafe=False)
        cl, cu = m.lp.col_lower.copy(), m.lp.col_upper.copy()
        cl[m.columns.x] = cu[m.columns.x] = x0
        sol = solve(replace(m.lp, col_lower=cl, col_upper=cu))
        np.testing.assert_allclose(sol.x[m.columns.y], net.forward(x0), atol=1e-6)
        assert sol.objective == pytest.approx(DISJ.margins(net.forward(x0))[0], abs=1e-6)


def _pool_net(rng) -> Network:
    conv = Conv2d(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.1, (1, 1),
                  (0, 0, 0, 0), (1, 4, 4))
    pool = MaxPool2d((2, 2), (1, 1), (0, 0, 0, 0), (2, 3, 3))
    return Network((conv, ReLU(18), pool, Flatten(8), Dense(rng.normal(size=(2, 8)),
                                                              np.zeros(2))), (1, 4, 4))


def test_maxpool_milp_fixed_input_gives_forward_pass() -> None:
    rng = np.random.default_rng(3)
    net = _pool_net(rng)
    box = InputBox(-np.ones(16), np.ones(16))
    prop = Property(box, UnsafeSet((DISJ,)))
    lo, hi, _ = interval_bounds(net, box.lower, box.upper)
    m = build_milp(net, prop, (lo, hi), None, "bigm", require_unsafe=False)
    assert m.lp.integrality is not None
    for _ in range(3):
        x0 = rng.uniform(-1, 1, 16)
        cl, cu = m.lp.col_lower.copy(), m.lp.col_upper.copy()
        cl[m.columns.x] = cu[m.columns.x] = x0
        sol = solve(replace(m.lp, col_lower=cl, col_upper=cu))
        np.testing.assert_allclose(sol.x[m.columns.y], net.forward(x0), atol=1e-6)
    best = solve_milp(m).objective
    xs = rng.uniform(-1, 1, size=(3000, 16))
    assert best <= DISJ.margins(net.forward(xs)).min() + 1e-7


@pytest.mark.parametrize("suffix", [".mps", ".lp"])
def test_exported_model_re_read_gives_same_optimum(tmp_path, suffix: str) -> None:
    _, net, prop, bounds = _setup(1)
    m = build_milp(net, prop, bounds, None, "partition:2", require_unsafe=False)
    path = export_milp(m, tmp_path / f"node{suffix}")
    assert solve_file(path).objective == pytest.approx(solve_milp(m).objective, abs=1e-6)


def test_feasibility_model_matches_sign_of_minimum() -> None:
    for seed in (0, 3):
        _, net, prop, bounds = _setup(seed)
        best = _enumerate(net, prop, bounds)
        sol = solve_milp(build_milp(net, prop, bounds, None, "bigm", objective=None))
        assert (sol.status is LpStatus.INFEASIBLE) == (best > 0)


def test_decide_milp_sat_and_unsat() -> None:
    _, net, prop, bounds = _setup(0)
    v = decide_milp(net, prop, bounds)
    assert v.status is Status.VIOLATED and v.counterexample is not None
    safe = Property(prop.box, UnsafeSet((HalfSpaces(DISJ.C, DISJ.d - 100.0),)))
    assert decide_milp(net, safe, bounds).status is Status.HOLDS


def test_anderson_cuts_tighten_lp_and_keep_optimum() -> None:
    _, net, prop, bounds = _setup(1, (3, 6, 5, 2))
    m = build_milp(net, prop, bounds, None, "bigm", require_unsafe=False)
    cut, trace = add_anderson_cuts(m, rounds=4)
    assert all(b >= a - 1e-7 for a, b in itertools.pairwise(trace))
    hull = build_milp(net, prop, bounds, None, "extended", require_unsafe=False)
    assert trace[-1] <= solve(replace(hull.lp, integrality=None)).objective + 1e-6
    assert cut.lp.num_rows >= m.lp.num_rows
    assert solve_milp(cut).objective == pytest.approx(solve_milp(m).objective, abs=1e-6)


def test_valid_inequalities_keep_optimum() -> None:
    _, net, prop, bounds = _setup(2, (3, 6, 5, 2))
    a = solve_milp(build_milp(net, prop, bounds, None, "bigm", require_unsafe=False))
    b = solve_milp(build_milp(net, prop, bounds, None, "bigm", require_unsafe=False,
                              valid_inequalities=True))
    assert a.objective == pytest.approx(b.objective, abs=1e-6)


def test_splits_restrict_the_node() -> None:
    _, net, prop, bounds = _setup(3)
    lo, hi = bounds
    k, j = next((k, int(np.flatnonzero((a < 0) & (b > 0))[0])) for k, (a, b)
                in enumerate(zip(lo, hi, strict=True)) if np.any((a < 0) & (b > 0)))
    full = solve_milp(build_milp(net, prop, bounds, None, "bigm", require_unsafe=False))
    kids = [solve_milp(build_milp(net, prop, bounds, SplitSet.of([Split(k, j, s)]), "bigm",
                                  require_unsafe=False)).objective for s in (True, False)]
    assert min(kids) == pytest.approx(full.objective, abs=1e-6)


def test_partition_groups_and_names() -> None:
    w = np.array([3.0, -1.0, 0.5, 2.0, -4.0])
    groups = equal_size_groups(w, 2)
    assert sorted(np.concatenate(groups).tolist()) == list(range(5))
    assert max(w[groups[0]]) <= min(w[groups[1]])
    rg = equal_range_groups(w, 2)
    assert sorted(np.concatenate(rg).tolist()) == list(range(5))
    assert parse_formulation("partition:4:range") == ("partition", 4, "range")
    with pytest.raises(InputError):
        parse_formulation("partition:0")
    assert [p.name for p in disjunct_paths("a/m.mps", 2)] == ["m.d0.mps", "m.d1.mps"]
    assert [p.name for p in disjunct_paths("m.lp", 1)] == ["m.lp"]


# ------------------------------------------------------- issue 20: one file for a disjunction
def _three_disjuncts(seed: int, shift: float) -> tuple:
    """A 3-6-5-3 net and three disjuncts of 1-2 rows each, moved by ``shift``."""
    rng, net, _, bounds = _setup(seed, (3, 6, 5, 3))
    disjuncts = tuple(HalfSpaces(rng.normal(size=(k, 3)), rng.normal(size=k) + shift)
                      for k in (1, 2, 2))
    box = InputBox(-np.ones(3), np.ones(3))
    return net, Property(box, UnsafeSet(disjuncts)), bounds


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("form", ["bigm", "partition:2"])
def test_issue_20_disjunction_optimum_is_the_best_disjunct(seed: int, form: str) -> None:
    """min t of the one-model disjunction = min over k of the per-disjunct optima."""
    from bnbver.milp import build_disjunction_milp

    net, prop, bounds = _three_disjuncts(seed, 0.0)
    per = [solve_milp(build_milp(net, prop, bounds, None, form, disjunct=k,
                                 require_unsafe=False)) for k in range(3)]
    assert all(s.status is LpStatus.OPTIMAL for s in per)
    one = build_disjunction_milp(net, prop, bounds, None, form, require_unsafe=False)
    sol = solve_milp(one.model)
    assert sol.status is LpStatus.OPTIMAL
    best = min(s.objective for s in per)
    assert sol.objective == pytest.approx(best, abs=1e-6)
    chosen = int(np.argmax(sol.x[one.selectors]))
    assert per[chosen].objective == pytest.approx(best, abs=1e-6)
    assert np.isclose(sol.x[one.selectors].sum(), 1.0)


@pytest.mark.parametrize("shift", [-3.0, -0.5, 0.0, 0.5, 3.0])
def test_issue_20_disjunction_feasible_iff_some_disjunct_is(shift: float) -> None:
    from bnbver.milp import build_disjunction_milp

    for seed in range(3):
        net, prop, bounds = _three_disjuncts(seed, shift)
        per = [solve_milp(build_milp(net, prop, bounds, disjunct=k)).status
               for k in range(3)]
        one = solve_milp(build_disjunction_milp(net, prop, bounds).model).status
        feasible = any(s is not LpStatus.INFEASIBLE for s in per)
        assert (one is not LpStatus.INFEASIBLE) == feasible, (seed, per, one)


def test_issue_20_annotated_export_reads_back(tmp_path) -> None:
    from bnbver.milp import export_annotated

    _, net, prop, bounds = _setup(1)
    model = build_milp(net, prop, bounds)
    for suffix in (".mps", ".lp"):
        path = export_annotated(model, tmp_path / f"m{suffix}", ["bounds: lp", "two\nlines"],
                                "bnbver_lp_partition:2 x")
        lines = path.read_text().splitlines()
        mark = "*" if suffix == ".mps" else "\\"
        assert lines[:3] == [f"{mark} bounds: lp", f"{mark} two", f"{mark} lines"]
        if suffix == ".mps":
            assert lines[3] == "NAME        bnbver_lp_partition:2_x"
        assert solve_file(path).objective == pytest.approx(solve_milp(model).objective)
