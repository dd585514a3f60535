"""Packed nodes and leaves: a round trip through pickle keeps everything a search needs."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.branching import choose_branches, default_heuristic
from bnbver.bab.loop import BabOptions, Relay, choose_split_kind, run_bab
from bnbver.bab.node import Node
from bnbver.bab.transfer import deal, pack_leaves, pack_nodes, unpack_leaves, unpack_nodes
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net


def _open_nodes(split: str) -> tuple[NodeBounder, list[Node], Property, BabOptions]:
    """Return open nodes of a search with the default bounds (12 or more; 2 disjuncts)."""
    rng = np.random.default_rng(4)
    net = random_relu_net(rng, [3, 20, 20, 20, 3], scale=2.0)
    ys = net.forward(rng.uniform(-1, 1, size=(50_000, 3)))
    top = [(ys[:, k] - ys[:, 0]).max() + 0.3 for k in (1, 2)]  # y_k - y_0 >= top: unsafe
    unsafe = UnsafeSet((HalfSpaces(np.array([[1.0, -1.0, 0.0]]), np.array([-top[0]])),
                        HalfSpaces(np.array([[1.0, 0.0, -1.0]]), np.array([-top[1]]))))
    prop = Property(InputBox(-np.ones(3), np.ones(3)), unsafe)
    options = BabOptions(jobs=1, split=split, batch_size=4, stall_rounds=0, milp_max_unstable=0)
    relay = Relay(hand_back=lambda n: n >= 12)
    run_bab(net, prop, options, time.monotonic() + 60, relay=relay)
    assert len(relay.returned) >= 12, "the search ended before it had 12 open nodes"
    kind = choose_split_kind(net, options)
    return NodeBounder(net, prop, options, kind), relay.returned, prop, options


@pytest.mark.parametrize("split", ["input", "relu"])
def test_unpacked_nodes_bound_their_children_alike(split: str) -> None:
    bounder, nodes, _, options = _open_nodes(split)
    back = unpack_nodes(pickle.loads(pickle.dumps(pack_nodes(nodes))))
    for a, b in zip(nodes, back, strict=True):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
        assert a.splits == b.splits and a.lower_bound == b.lower_bound and a.depth == b.depth
    heuristic = options.branching or default_heuristic(bounder.kind)
    dec_a = choose_branches(bounder, nodes, bounder.kind, heuristic)
    dec_b = choose_branches(bounder, back, bounder.kind, heuristic)
    assert [np.asarray(d).tolist() for d in dec_a] == [np.asarray(d).tolist() for d in dec_b]
    kids_a = bounder.bound_children(nodes, dec_a)
    kids_b = bounder.bound_children(back, dec_b)
    assert [k.lower_bound for k in kids_a] == [k.lower_bound for k in kids_b]


def test_a_pack_holds_only_its_own_rows() -> None:
    """Pickling a node's payload would copy its whole batch; a pack copies its rows only."""
    _, nodes, _, _ = _open_nodes("input")
    one = len(pickle.dumps(pack_nodes(nodes[:1])))
    every = len(pickle.dumps(pack_nodes(nodes)))
    assert len(pickle.dumps(nodes[0].state)) > 2 * one
    assert every < len(nodes) * one  # no per-node copy of anything shared


def test_deal_gives_every_group_alike_bounds_and_keeps_every_node() -> None:
    _, nodes, _, _ = _open_nodes("input")
    groups = deal(nodes, 3)
    assert sorted(id(n) for g in groups for n in g) == sorted(id(n) for n in nodes)
    assert max(len(g) for g in groups) - min(len(g) for g in groups) <= 1
    worst = min(n.lower_bound for n in nodes)
    assert min(n.lower_bound for n in groups[0]) == worst
    assert deal(nodes[:2], 3) == [[nodes[0], nodes[1]][i:i + 1] for i in
                                  np.argsort([n.lower_bound for n in nodes[:2]])]


def test_leaves_round_trip() -> None:
    from bnbver.result import Leaf
    from bnbver.splits import Split, SplitSet

    leaves = [Leaf(np.zeros(2), np.ones(2), SplitSet.of([Split(0, 1, True)]), 0.5, "beta"),
              Leaf(np.ones(2), 2 * np.ones(2), SplitSet(), float("inf"), "infeasible")]
    back = unpack_leaves(pickle.loads(pickle.dumps(pack_leaves(leaves))))
    for a, b in zip(leaves, back, strict=True):
        assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
        assert (a.splits, a.bound, a.method) == (b.splits, b.bound, b.method)
    assert unpack_leaves(pack_leaves([])) == []


def test_pack_refuses_no_nodes() -> None:
    with pytest.raises(ValueError, match="empty"):
        pack_nodes([])
    assert torch.get_num_threads() >= 1
