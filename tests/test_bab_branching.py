"""Branching heuristics: every registered one gives the oracle's answers; plug-ins work."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bnbver.bab.branching import REGISTRY, BranchContext, pick_input, pick_relu, register
from bnbver.bab.loop import BabOptions, run_bab
from bnbver.errors import InputError
from bnbver.result import Status
from tests.test_bab import _instance


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("offset", [0.02, -0.02])
def test_every_heuristic_matches_oracle(name: str, offset: float) -> None:
    kind = REGISTRY[name].kind
    net, prop, violated = _instance(21, 2, [4, 3], offset)
    opts = BabOptions(split=kind, branching=name, batch_size=4, iterations=5,
                      milp_max_unstable=0)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)


def test_plugin_heuristic_from_readme() -> None:
    @register("test-deepest-widest", kind="relu")
    def deepest_widest(ctx: BranchContext) -> list[torch.Tensor]:
        """Prefer later layers, then the widest triangle."""
        return [(k + 1) * (-lo.clamp(max=0) * up.clamp(min=0) / (up - lo).clamp(min=1e-12))
                for k, (lo, up) in enumerate(zip(ctx.pre_lower, ctx.pre_upper, strict=True))]

    net, prop, violated = _instance(22, 2, [3, 3], 0.02)
    result = run_bab(net, prop, BabOptions(split="relu", branching="test-deepest-widest"),
                     deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    del REGISTRY["test-deepest-widest"]


def test_unknown_or_wrong_kind_heuristic_is_rejected() -> None:
    net, prop, _ = _instance(23, 2, [3], 0.02)
    with pytest.raises(InputError, match="unknown branching heuristic"):
        run_bab(net, prop, BabOptions(split="relu", branching="nope", root_method="ibp"),
                deadline=time.monotonic() + 10)
    with pytest.raises(InputError, match="branches on input"):
        run_bab(net, prop, BabOptions(split="relu", branching="smear", root_method="ibp"),
                deadline=time.monotonic() + 10)


def test_pick_relu_masks_split_and_stable_neurons() -> None:
    lo = (torch.tensor([[-1.0, -1.0, 0.5, -2.0]]),)
    up = (torch.tensor([[1.0, 2.0, 1.0, -1.0]]),)
    splits = (torch.tensor([[0, 1, 0, 0]], dtype=torch.int8),)
    ctx = BranchContext(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(2), lo, up, splits)
    scores = [torch.tensor([[1.0, 9.0, 9.0, 9.0]])]  # only neuron 0 is free and unstable
    assert pick_relu(ctx, scores) == [(0, 0)]
    none_free = (torch.tensor([[0, 1, 0, 0]], dtype=torch.int8),)
    ctx2 = BranchContext(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(2),
                         (torch.tensor([[0.0, -1.0, 0.5, -2.0]]),), up, none_free)
    assert pick_relu(ctx2, scores) == [None]


def test_pick_input_skips_degenerate_sides() -> None:
    ctx = BranchContext(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
                        torch.ones(2))
    assert pick_input(ctx, [torch.tensor([[5.0, 1.0]])]) == [1]
    assert np.isfinite(1.0)


def test_gradient_smear_splits_the_v_shaped_dimension_that_smear_misses() -> None:
    """y = 3 |x1| + 0.5 x0 on [-1, 1]^2, unsafe y <= -0.4 (reached near x = (-1, 0)).

    Along x1 the linear bound's coefficient is a flat secant (0), so smear splits x0 (the
    coefficient 0.5); the gradient interval of x1 is [-3, 3], so gradient-smear splits x1.
    """
    from bnbver.bab.bounding import NodeBounder
    from bnbver.bab.branching import choose_branches
    from bnbver.bab.node import Node
    from bnbver.network import Dense, Network, ReLU
    from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
    from bnbver.splits import SplitSet

    net = Network((Dense([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]], [0.0, 0.0, 2.0]), ReLU(3),
                   Dense([[3.0, 3.0, 0.5]], [-1.0])), (2,))
    prop = Property(InputBox(-np.ones(2), np.ones(2)), UnsafeSet((HalfSpaces([[1.0]], [-0.4]),)))
    bounder = NodeBounder(net, prop, BabOptions(split="input", root_method="crown"), "input")
    root = bounder.bound_root(prop.box.lower, prop.box.upper, SplitSet())
    assert root.lower_bound < 0 and not root.infeasible
    node = Node(root.lower, root.upper, root.splits, root.lower_bound, 0, root.state)
    assert choose_branches(bounder, [node], "input", "smear") == [0]
    assert choose_branches(bounder, [node], "input", "gradient-smear") == [1]
