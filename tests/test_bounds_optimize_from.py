"""Alpha-optimised intermediate bounds of the last layers only (``optimize_from``; the
root's option ``root_interm_layers``).

Properties: the bounds hold on sampled feasible points whatever slot the optimisation starts
from (dense, conv and residual nets); starting past the last slot is exactly CROWN's
intermediate bounds, and the last slot alone leaves the earlier ones CROWN's; a search with
the option gives the exact oracle's answers; the option is validated.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.loop import BabOptions
from bnbver.bounds import BoundsOptions, bound_batch, prepare
from bnbver.driver import InputError, verify
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.bounds_cases import check_sound, conv_net, dense_net, make_batch, nodes_in_box
from tests.graph_cases import conv_resnet
from tests.test_bab_graph import check_around_the_maximum, conv_resnet_case

ALPHA = BoundsOptions(method="alpha", iterations=8, optimize_intermediate=True)


def _net(kind: str, seed: int):  # type: ignore[no-untyped-def]
    if kind == "dense":
        return dense_net(seed, 4, 8, 3, 3)
    if kind == "conv":
        return conv_net(seed)
    return conv_resnet(np.random.default_rng(seed), channels=2, size=4)


@pytest.mark.parametrize("kind", ["dense", "conv", "residual"])
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), first=st.integers(0, 8))
def test_bounds_from_any_slot_hold(kind: str, seed: int, first: int) -> None:
    net_ir = _net(kind, seed)
    rng = np.random.default_rng(seed)
    C, d = rng.normal(size=(3, net_ir.num_outputs)), rng.normal(size=3)
    nodes = nodes_in_box(net_ir, seed, 1, 0, width=0.5)
    net = prepare(net_ir, C, d)
    res = bound_batch(net, make_batch(nodes), replace(ALPHA, optimize_from=first))
    assert check_sound(net_ir, C, d, nodes, res, seed) > 0


def test_starting_past_the_last_slot_is_crown_intermediate() -> None:
    net_ir = conv_resnet(np.random.default_rng(4), channels=2, size=4)
    rng = np.random.default_rng(4)
    C, d = rng.normal(size=(3, net_ir.num_outputs)), rng.normal(size=3)
    nodes = nodes_in_box(net_ir, 4, 1, 0, width=0.5)
    net = prepare(net_ir, C, d)
    past = bound_batch(net, make_batch(nodes), replace(ALPHA, optimize_from=10**6))
    crown = bound_batch(net, make_batch(nodes), replace(ALPHA, optimize_intermediate=False))
    last = bound_batch(net, make_batch(nodes), replace(
        ALPHA, optimize_from=len(net.slot_ops) - 1))
    for a, b in zip(past.state.lower + past.state.upper,
                    crown.state.lower + crown.state.upper, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(past.row_lower, crown.row_lower)
    # the earlier slots keep CROWN's bounds when only the last is optimised
    for k in range(len(net.slot_ops) - 1):
        assert torch.equal(last.state.lower[k], crown.state.lower[k])
    # and the last slot's are optimised from CROWN's slopes: never looser, here tighter
    assert bool((last.state.lower[-1] >= crown.state.lower[-1]).all())
    assert bool((last.state.lower[-1] > crown.state.lower[-1]).any())


def test_root_interm_layers_must_be_at_least_minus_one() -> None:
    net = dense_net(1, 2, 4, 1, 2)
    prop = Property(InputBox(-np.ones(2), np.ones(2)),
                    UnsafeSet((HalfSpaces(np.array([[1.0, -1.0]]), np.array([0.0])),)), "p")
    with pytest.raises(InputError, match="root_interm_layers"):
        verify(net, prop, timeout=5, root_interm_layers=-2)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_search_with_the_last_layers_optimised_matches_the_oracle(layers: int) -> None:
    check_around_the_maximum(*conv_resnet_case(), root_interm_layers=layers)


def test_root_bound_of_an_explicit_suffix_holds() -> None:
    """``root_interm_layers=k`` on a bounder: the root's bound holds on samples."""
    net = conv_resnet(np.random.default_rng(8), channels=2, size=4)
    box = InputBox(-0.5 * np.ones(16), 0.5 * np.ones(16))
    c = np.random.default_rng(8).normal(size=2)
    prop = Property(box, UnsafeSet((HalfSpaces(-c[None], np.array([-10.0])),)), "p")
    bounder = NodeBounder(net, prop, BabOptions(root_interm_layers=1), "relu")
    root = bounder.bound_root(box.lower, box.upper, deadline=time.monotonic() + 30)
    x = np.random.default_rng(9).uniform(box.lower, box.upper, size=(500, 16))
    margins = -(net.forward(x) @ c) + 10.0
    assert margins.min() >= root.lower_bound - 1e-6
