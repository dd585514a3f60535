"""bnbver.bab.bound_sources: every named source is sound, nested where it must be, and the
same name gives the same numbers as the BaB's root (issue 20: export = comparison)."""

from __future__ import annotations

import numpy as np
import pytest

from bnbver.bab.bound_sources import BOUND_SOURCES, node_bounds
from bnbver.bab.bounding import NodeBounder
from bnbver.bab.loop import BabOptions
from bnbver.errors import InputError
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from bnbver.splits import Split, SplitSet
from tests.bounds_cases import feasible_samples
from tests.conftest import random_relu_net

TOL = 1e-7


def _case(n_in: int, seed: int = 0, threshold: float = 50.0) -> tuple:
    """A random net and ``y1 - y0 >= threshold`` (50: the root bounds prove it unsat)."""
    net = random_relu_net(np.random.default_rng(seed), [n_in, 8, 8, 2])
    box = InputBox(-np.ones(n_in), np.ones(n_in))
    unsafe = UnsafeSet((HalfSpaces(np.array([[1.0, -1.0]]), np.array([-threshold])),))
    return net, Property(box, unsafe)


@pytest.mark.parametrize("n_in", [3, 24])  # auto: input splits with 3 inputs, ReLU with 24
@pytest.mark.parametrize("source", BOUND_SOURCES)
def test_bounds_contain_sampled_preactivations(n_in: int, source: str) -> None:
    net, prop = _case(n_in)
    nb = node_bounds(net, prop, source)
    assert nb.source == source and not nb.infeasible
    x = feasible_samples(net, prop.box.lower, prop.box.upper,
                        [np.zeros(n, np.int8) for n in net.relu_sizes], None, 1, 500)
    _, pre = net.forward_with_preactivations(x)
    for lo, up, p in zip(nb.lower, nb.upper, pre, strict=True):
        assert np.all(p >= lo - TOL) and np.all(p <= up + TOL)


def test_tightening_and_engine_sources_are_nested() -> None:
    """lp and milp never loosen interval bounds; alpha/crown lie within intervals here."""
    net, prop = _case(24, seed=3)
    got = {s: node_bounds(net, prop, s) for s in ("interval", "lp", "milp", "crown", "alpha")}
    for s in ("lp", "milp"):
        for k in range(len(net.relu_sizes)):
            assert np.all(got[s].lower[k] >= got["interval"].lower[k] - TOL)
            assert np.all(got[s].upper[k] <= got["interval"].upper[k] + TOL)
    width = {s: sum(float(np.sum(u - lo)) for lo, u in zip(b.lower, b.upper, strict=True))
             for s, b in got.items()}
    assert width["milp"] <= width["lp"] + TOL <= width["interval"] + 2 * TOL
    assert width["alpha"] <= width["interval"] and width["crown"] <= width["interval"]


def test_alpha_is_the_relu_search_root_and_auto_the_bab_default() -> None:
    """The same name gives the numbers the BaB's own root starts from."""
    for n_in, source, options in ((24, "alpha", BabOptions(split="relu")),
                                  (24, "auto", BabOptions()), (3, "auto", BabOptions())):
        net, prop = _case(n_in, seed=5, threshold=0.0)  # the root stays open
        kind = "input" if n_in == 3 else "relu"
        root = NodeBounder(net, prop, options, kind).bound_root(prop.box.lower, prop.box.upper)
        assert root.state is not None
        state = root.state.single()
        nb = node_bounds(net, prop, source)
        for k, (lo, up) in enumerate(zip(state.pre_lower, state.pre_upper, strict=True)):
            np.testing.assert_array_equal(nb.lower[k], lo[0].numpy())
            np.testing.assert_array_equal(nb.upper[k], up[0].numpy())
        assert nb.margin_lower == root.lower_bound


def test_splits_are_respected() -> None:
    net, prop = _case(24, seed=7)
    free = node_bounds(net, prop, "crown")
    unit = int(np.argmax((free.lower[0] < 0) & (free.upper[0] > 0)))
    for source in ("interval", "crown", "alpha"):
        on = node_bounds(net, prop, source, SplitSet.of([Split(0, unit, True)]))
        off = node_bounds(net, prop, source, SplitSet.of([Split(0, unit, False)]))
        assert on.lower[0][unit] >= -TOL and off.upper[0][unit] <= TOL, source


def test_unknown_source_names_the_argument() -> None:
    net, prop = _case(3)
    with pytest.raises(InputError, match="--bounds: unknown bounds source 'beta'"):
        node_bounds(net, prop, "beta")
