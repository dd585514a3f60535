"""Tests of the search's precision: float32 bounds for conv nets with a float64 root."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.loop import BabOptions
from bnbver.bounds import bound_root
from bnbver.driver import verify
from bnbver.network import Conv2d, Dense, Flatten, Network, ReLU
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.oracle import max_linear_output_milp

# The exact MILP oracle is exact up to HiGHS's tolerances; instances closer than this to the
# threshold are not asked.
ORACLE_GAP = 1e-3


def _conv_net(seed: int) -> Network:
    """A conv net small enough for the MILP oracle: 8 + 6 ReLUs."""
    rng = np.random.default_rng(seed)
    c1 = Conv2d(rng.normal(size=(2, 1, 3, 3)) * 0.6, rng.normal(size=2) * 0.1, (1, 1),
                (0, 0, 0, 0), (1, 4, 4))
    return Network((c1, ReLU(c1.out_size), Flatten(c1.out_size),
                    Dense(rng.normal(size=(6, 8)) / np.sqrt(8), rng.normal(size=6) * 0.1),
                    ReLU(6), Dense(rng.normal(size=(2, 6)), np.zeros(2))), (1, 4, 4))


def _property(net, seed: int, shift: float) -> tuple[Property, float]:  # type: ignore[no-untyped-def]
    """Return ``y_0 - y_1 <= m + shift`` over a box, with m its exact minimum."""
    rng = np.random.default_rng(seed)
    lo = rng.normal(size=net.input_size) * 0.3
    hi = lo + 0.4
    c = np.zeros(net.num_outputs)
    c[0], c[1] = 1.0, -1.0
    m = -max_linear_output_milp(net, -c, lo, hi)
    unsafe = UnsafeSet((HalfSpaces(c[None], np.array([m + shift])),))
    return Property(InputBox(lo, hi), unsafe), m


def test_conv_search_runs_float32_from_a_float64_root() -> None:
    """A conv net's search bounds in float32; its root's intermediate bounds are the float64
    ones rounded outwards (so they contain them and lose at most a rounding)."""
    net = _conv_net(1)
    prop, _ = _property(net, 1, -0.5)
    bounder = NodeBounder(net, prop, BabOptions(), "relu")
    assert bounder.dtype == torch.float32 and bounder.root_net.dtype == torch.float64
    root = bounder.bound_root(prop.box.lower, prop.box.upper)
    ref = bound_root(bounder.root_net, prop.box.lower, prop.box.upper,
                     replace(bounder.root_opts, dtype=torch.float64))
    assert bounder._root is not None
    state = bounder._root[1]
    for lo32, hi32, lo64, hi64 in zip(state.lower, state.upper, ref.state.lower,
                                      ref.state.upper, strict=True):
        assert lo32.dtype == torch.float32
        assert bool((lo32.double() <= lo64).all() & (hi32.double() >= hi64).all())
        assert float((lo64 - lo32.double()).abs().max()) < 1e-5
    assert root.lower_bound <= 0.5 + ORACLE_GAP  # the exact minimum margin is 0.5
    same = NodeBounder(net, prop, BabOptions(root_precision="same"), "relu")
    assert same.root_net is same.net


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shift", [-0.05, 0.05])
@pytest.mark.parametrize("precision", ["auto", "float64"])
def test_conv_search_answers_match_the_oracle(seed: int, shift: float, precision: str) -> None:
    """Thresholds just below and above the exact minimum give unsat and sat."""
    net = _conv_net(seed)
    prop, _ = _property(net, seed, shift)
    assert abs(shift) > ORACLE_GAP
    res = verify(net, prop, timeout=30, split="relu", precision=precision)
    assert res.status.value == ("unsat" if shift < 0 else "sat"), res.status


def test_child_iterations_default_by_network_kind() -> None:
    """0 (auto) gives conv nets 10 steps per child and dense nets ``iterations``; an explicit
    count wins everywhere, and children never get more steps than ``iterations`` by auto."""
    from bnbver.bab.bounding import CONV_CHILD_ITERATIONS, child_iterations
    from tests.bounds_cases import conv_net, dense_net

    conv, dense = conv_net(0), dense_net(0, 3, 4, 1, 2)
    assert child_iterations(0, 20, conv) == CONV_CHILD_ITERATIONS == 10
    assert child_iterations(0, 5, conv) == 5
    assert child_iterations(0, 20, dense) == 20
    assert child_iterations(7, 20, conv) == 7 and child_iterations(7, 20, dense) == 7
