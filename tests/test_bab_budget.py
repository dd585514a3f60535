"""How many parents a round pops: the time left and the estimated memory of its bounding."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.budget import (
    AUTO_MEMORY_SHARE,
    child_row_bytes,
    device_memory,
    memory_budget,
    parents_that_fit,
)
from bnbver.bab.loop import BabOptions, run_bab
from bnbver.bab.node import Node
from bnbver.bounds import BoundsOptions, prepare
from bnbver.driver import verify
from bnbver.errors import InputError
from bnbver.result import Stats, Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output


def test_last_rounds_pop_only_the_parents_that_fit() -> None:
    """A round that would overrun the time left takes fewer parents instead of none (a
    ResNet round can be a third of a time limit); when not even one fits, the search stops."""
    assert parents_that_fit(256, 100.0, 30.0, 0.1) == 256        # the last round fits
    assert parents_that_fit(256, 20.0, 30.0, 0.1) == 140         # 0.7 * 20 / 0.1
    assert parents_that_fit(256, 0.05, 30.0, 0.1) == 0           # not one parent: stop
    assert parents_that_fit(256, -1.0, 0.0, 0.0) == 0
    assert parents_that_fit(8, 20.0, 30.0, 0.1) == 8
    assert parents_that_fit(256, float("inf"), 30.0, 0.1) == 256   # no time limit


def test_a_round_takes_at_most_its_share_of_the_time_limit() -> None:
    """Rounds are cut to ``round_limit`` seconds at the last rounds' time per parent (at
    least one parent); the time-left rule still applies on top."""
    assert parents_that_fit(256, 100.0, 1.0, 0.1, round_limit=3.75) == 37
    assert parents_that_fit(256, 100.0, 1.0, 0.1, round_limit=100.0) == 256
    assert parents_that_fit(256, 100.0, 1.0, 10.0, round_limit=3.75) == 1
    assert parents_that_fit(256, 2.5, 3.0, 0.1, round_limit=3.75) == 17   # 0.7 * 2.5 / 0.1
    assert parents_that_fit(256, 100.0, 0.0, 0.0, round_limit=3.75) == 256   # no estimate yet


def test_memory_budget_explicit_auto_and_invalid() -> None:
    assert memory_budget(1.5, "cpu") == 1.5 * 2**30
    machine = device_memory("cpu")
    assert machine > 2**28   # any machine that runs the tests has more than 256 MiB
    assert memory_budget(0.0, "cpu") == pytest.approx(AUTO_MEMORY_SHARE * machine)
    with pytest.raises(ValueError, match="round_memory"):
        memory_budget(-1.0, "cpu")


def test_child_row_bytes_counts_every_value_a_row_carries_at_the_dtype_size() -> None:
    """The estimate is linear in the values a row's backward pass carries (the input and
    every op's output) and in the dtype's size."""
    rng = np.random.default_rng(0)
    small, large = (random_relu_net(rng, sizes) for sizes in ([4, 8, 2], [4, 8, 8, 8, 2]))
    b64 = [child_row_bytes(prepare(n, options=BoundsOptions(dtype=torch.float64)))
           for n in (small, large)]
    b32 = child_row_bytes(prepare(small, options=BoundsOptions(dtype=torch.float32)))
    assert b32 * 2 == b64[0]
    # small: input 4 + affine 8 + relu 8 + affine 2; large: 4 + 3 * (8 + 8) + 2
    assert b64[1] / b64[0] == pytest.approx((4 + 48 + 2) / (4 + 16 + 2))


def _two_disjunct_instance(seed: int):
    """A net with two one-row disjuncts: one far beyond the exact maximum (proven at the
    root), one below it (reachable, so open)."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 6, 6, 2], scale=1.5)
    box = InputBox(-np.ones(3), np.ones(3))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    far, near = HalfSpaces([-c], [-(best + 100.0)]), HalfSpaces([-c], [-(best - 0.5)])
    return net, Property(box, UnsafeSet((far, near)))


def test_parent_cost_counts_the_rows_the_parent_left_open() -> None:
    """The root proves the far disjunct's row: its children will bound one row each."""
    net, prop = _two_disjunct_instance(1)
    bounder = NodeBounder(net, prop, BabOptions(split="relu"), "relu")
    root = bounder.bound_root(prop.box.lower, prop.box.upper)
    bounds = root.disjunct_bounds
    assert bounds is not None and bounds[0] > 0 >= bounds[1]
    node = Node(root.lower, root.upper, root.splits, root.lower_bound, 0, root.state)
    assert bounder.parent_bytes(node) == 2 * 1 * bounder.row_bytes
    bare = Node(root.lower, root.upper, root.splits, root.lower_bound, 0, None)
    assert bounder.parent_bytes(bare) == 2 * 2 * bounder.row_bytes   # unknown: every row
    assert bounder.parent_bytes() == 2 * 2 * bounder.row_bytes       # the most a parent costs


@pytest.mark.parametrize("offset", [-0.05, 0.05])
def test_a_budget_below_one_parent_bounds_one_parent_per_round(offset: float) -> None:
    """With a budget below any parent's cost every round bounds one parent (two children),
    and the answer still matches the exact oracle."""
    rng = np.random.default_rng(7)
    net = random_relu_net(rng, [3, 6, 6, 2], scale=1.5)
    box = InputBox(-np.ones(3), np.ones(3))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-(best + offset)]),)))
    opts = BabOptions(split="relu", batch_size=64, round_memory=1e-12, milp_max_unstable=0,
                      stall_rounds=0, attack_nodes=0)
    stats = Stats()
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60, stats=stats)
    assert result.status is (Status.VIOLATED if offset < 0 else Status.HOLDS)
    assert stats.bound_calls >= 2   # the root did not decide it: rounds ran
    assert stats.nodes == 1 + 2 * (stats.bound_calls - 1)


@pytest.mark.parametrize(("field", "value"), [("round_memory", -1.0), ("batch_size", 0),
                                              ("round_share", 0.0), ("round_share", 1.5)])
def test_round_options_are_validated(field: str, value: float) -> None:
    net, prop = _two_disjunct_instance(2)
    with pytest.raises(InputError, match=field):
        verify(net, prop, timeout=5, **{field: value})
