"""Tests of alpha- and beta-CROWN (bnbver.bounds.optimize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, NodeState, bound_batch, bound_root, prepare
from bnbver.bounds.engine import _intermediate_rows, _validate_batch
from bnbver.bounds.linear import backward, concretize, final_start
from bnbver.network import Dense, Network, ReLU
from tests.bounds_cases import (
    SAMPLE_TOL,
    Node,
    check_sound,
    dense_net,
    feasible_samples,
    make_batch,
    nodes_in_box,
    random_box,
    random_spec,
    splits_through,
)

CROWN = BoundsOptions(method="crown")
ALPHA = BoundsOptions(method="alpha", iterations=15)
BETA = BoundsOptions(method="beta", iterations=15)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), n_splits=st.integers(0, 6))
def test_alpha_and_beta_sound_and_never_looser(seed: int, depth: int, n_splits: int) -> None:
    """alpha >= CROWN, beta warm-started from alpha >= alpha, and both are sound."""
    net_ir = dense_net(seed, 4, 10, depth, 3)
    C, d = random_spec(seed, 3, 2)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, 2, n_splits, width=0.6)
    crown = bound_batch(net, make_batch(nodes), CROWN)
    alpha = bound_batch(net, make_batch(nodes), ALPHA)
    assert bool((alpha.row_lower >= crown.row_lower).all())
    check_sound(net_ir, C, d, nodes, alpha, seed)
    warm = NodeState(alpha.state.lower, alpha.state.upper, alpha.state.relu_slots, None,
                     alpha.state.alpha, None)
    beta = bound_batch(net, make_batch(nodes, warm), BETA)
    # beta's first iterate is alpha's bound; its split terms add a rounding allowance of a
    # few ulps (the exact minimum of each split neuron's term is charged even at beta = 0).
    slack = 1e-12 * (1.0 + alpha.row_lower.abs())
    assert bool((beta.row_lower >= alpha.row_lower - slack).all())
    check_sound(net_ir, C, d, nodes, beta, seed)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), n_splits=st.integers(1, 8),
       scale=st.floats(0.01, 3.0))
def test_random_alpha_beta_give_sound_bounds(seed: int, depth: int, n_splits: int,
                                             scale: float) -> None:
    """The raw backward bound is valid for ANY alpha in [0, 1] and any beta (of either sign:
    each neuron's term is taken at its exact minimum)."""
    net_ir = dense_net(seed, 4, 10, depth, 3)
    C, d = random_spec(seed, 3, 4)
    net = prepare(net_ir, C, d)
    node = nodes_in_box(net_ir, seed, 1, n_splits, width=0.6)[0]
    batch, _, _ = _validate_batch(net, make_batch([node]))
    inter = _intermediate_rows(net, batch, CROWN)
    gen = torch.Generator().manual_seed(seed)
    alpha = [torch.rand((1, 4, n), generator=gen, dtype=torch.float64)
             for n in net_ir.relu_sizes]
    beta = [(torch.rand((1, 4, n), generator=gen, dtype=torch.float64) - 0.3) * scale
            for n in net_ir.relu_sizes]
    start, lin0 = final_start(net, inter.errs, inter.cent)
    lin = backward(net, start, lin0, inter.relax, inter.errs, alpha, beta)
    lb = concretize(net, lin, batch.lower, batch.upper)[0][0].numpy()
    x = feasible_samples(net_ir, node.lo, node.hi, node.masks, node.x0, seed)
    assert x.shape[0] > 0
    assert np.all(net_ir.forward(x) @ C.T - d >= lb - SAMPLE_TOL)


def _beta_net() -> Network:
    w1 = np.array([[1.0, 1.0], [1.0, -1.0]])
    return Network((Dense(w1, np.array([-1.0, 0.0])), ReLU(2),
                    Dense(np.array([[0.0, -1.0]]), np.zeros(1))), (2,))


def test_hand_computed_beta() -> None:
    """y = -relu(x1 - x2) on [-1, 1]^2 with the split h1 = x1 + x2 - 1 >= 0 (active).

    Feasible set: x1 + x2 >= 1, where max (x1 - x2) = 1, so the true minimum is -1.
    Without beta the split does not help: h2 in [-2, 2], z2 <= (h2 + 2) / 2, so
    y >= -(x1 - x2) / 2 - 1 >= -2 (CROWN). With the multiplier beta >= 0 of h1 >= 0:
    y >= -(x1 - x2) / 2 - 1 - beta (x1 + x2 - 1)
      = -(1/2 + beta) x1 + (1/2 - beta) x2 - 1 + beta,
    whose box minimum is -2 + beta for beta in [0, 1/2] and -1 - beta above: the best
    multiplier is beta = 1/2, giving -1.5 (beta = 1/4 gives -1.75).
    """
    net_ir = _beta_net()
    net = prepare(net_ir, np.eye(1), np.zeros(1))
    node = Node(-np.ones(2), np.ones(2), [np.array([1, 0], np.int8)], None)
    crown = bound_batch(net, make_batch([node]), CROWN)
    assert abs(float(crown.row_lower[0, 0]) + 2.0) < 1e-9
    batch, _, _ = _validate_batch(net, make_batch([node]))
    inter = _intermediate_rows(net, batch, CROWN)
    start, lin0 = final_start(net, inter.errs, inter.cent)
    for value, expected in ((0.5, -1.5), (0.25, -1.75), (1.0, -2.0)):
        beta = [torch.tensor([[[value, 0.0]]], dtype=torch.float64)]
        lin = backward(net, start, lin0, inter.relax, inter.errs, None, beta)
        got = float(concretize(net, lin, batch.lower, batch.upper)[0])
        assert abs(got - expected) < 1e-9
    res = bound_batch(net, make_batch([node]), BoundsOptions(method="beta", iterations=40))
    assert -1.5 - 0.02 <= float(res.row_lower[0, 0]) <= -1.5 + 1e-9
    assert res.state.beta is not None and res.state.beta[0] is not None
    assert abs(float(res.state.beta[0][0, 0, 0]) - 0.5) < 0.05


def test_alpha_improves_on_crown_somewhere() -> None:
    """The optimiser works: on random nets alpha strictly beats CROWN on some rows."""
    gains = []
    for seed in range(4):
        net_ir = dense_net(seed, 4, 16, 3, 3)
        C, d = random_spec(seed, 3, 2)
        net = prepare(net_ir, C, d)
        lo, hi = random_box(seed, 4, 0.8)
        crown = bound_root(net, lo, hi, CROWN)
        alpha = bound_root(net, lo, hi, ALPHA)
        gains.append(float((alpha.row_lower - crown.row_lower).max()))
    assert max(gains) > 1e-3


def test_children_warm_start_from_parent_state() -> None:
    """Children of an alpha-bounded root inherit alphas, stay sound and never loosen."""
    net_ir = dense_net(21, 5, 12, 3, 3)
    C, d = random_spec(21, 3, 2)
    net = prepare(net_ir, C, d)
    lo, hi = random_box(21, 5, 0.6)
    root = bound_root(net, lo, hi, ALPHA)
    assert root.state.alpha is not None
    assert tuple(root.state.alpha[0].shape) == (1, 2, 12)
    x0 = np.random.default_rng(0).uniform(lo, hi)
    masks = splits_through(net_ir, x0, 3, 0)
    flipped = [np.where(m != 0, -m, 0).astype(np.int8) for m in masks]
    nodes = [Node(lo, hi, masks, x0), Node(lo, hi, flipped, None)]
    state = root.state.take(torch.tensor([0, 0]))
    kids = bound_batch(net, make_batch(nodes, state), BETA)
    assert bool((kids.row_lower >= root.row_lower).all())
    check_sound(net_ir, C, d, nodes, kids, 21)
    grandkids = bound_batch(net, make_batch(nodes, kids.state), BETA)
    assert bool((grandkids.row_lower >= kids.row_lower).all())


def test_optimized_intermediate_bounds_are_tighter_and_sound() -> None:
    """alpha-optimised intermediate bounds lie inside CROWN's and contain the samples."""
    net_ir = dense_net(8, 4, 12, 3, 3)
    C, d = random_spec(8, 3, 2)
    net = prepare(net_ir, C, d)
    lo, hi = random_box(8, 4, 0.8)
    crown = bound_root(net, lo, hi, CROWN)
    opt = bound_root(net, lo, hi, BoundsOptions(method="alpha", iterations=10,
                                                optimize_intermediate=True))
    for cl, ol, cu, ou in zip(crown.pre_lower, opt.pre_lower, crown.pre_upper, opt.pre_upper,
                              strict=True):
        assert bool((ol >= cl - 1e-12).all()) and bool((ou <= cu + 1e-12).all())
    node = Node(lo, hi, [np.zeros(n, np.int8) for n in net_ir.relu_sizes], None)
    check_sound(net_ir, C, d, [node], opt, 8)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 3), side=st.sampled_from([-1, 1]))
def test_seeded_beta_starts_a_child_at_its_parents_bound(seed: int, depth: int,
                                                         side: int) -> None:
    """Splitting a neuron of the last ReLU layer changes no other relaxation, so with the
    seeded multipliers the child's first iterate (no optimisation) reproduces the parent's
    alpha bound, row by row; the seeded start is also sound."""
    net_ir = dense_net(seed, 4, 10, depth, 3)
    C, d = random_spec(seed, 3, 3)
    net = prepare(net_ir, C, d)
    parent = nodes_in_box(net_ir, seed, 1, 0, width=0.8)[0]
    res = bound_batch(net, make_batch([parent]), ALPHA)
    last = len(net_ir.relu_sizes) - 1
    lo, hi = res.pre_lower[last][0], res.pre_upper[last][0]
    unstable = ((lo < 0) & (hi > 0)).nonzero().flatten()
    if not unstable.numel():
        return
    masks = [m.copy() for m in parent.masks]
    masks[last][int(unstable[0])] = side
    child = Node(parent.lo, parent.hi, masks, None)
    s = res.state
    warm = NodeState(s.lower, s.upper, s.relu_slots, None, s.alpha, None)
    first = bound_batch(net, make_batch([child], warm),
                        BoundsOptions(method="beta", iterations=0))
    assert bool((first.row_lower >= res.row_lower - 1e-9).all())
    check_sound(net_ir, C, d, [child], first, seed)


@pytest.mark.parametrize("seed", [0, 10])
def test_proven_nodes_leave_the_optimisation(seed: int, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Nodes proven during the optimisation are cut out of it: the others' bounds are those
    of the uncut run, the proven ones stay proven, all are sound (nodes of growing boxes around
    a safe centre, so some are proven early and some never)."""
    from bnbver.bounds import optimize as opt_mod

    net_ir = dense_net(seed, 4, 10, 2, 3)
    C, d = random_spec(seed, 3, 2)
    c = np.random.default_rng(seed).normal(size=4) * 0.5
    d = d + np.minimum(net_ir.forward(c[None])[0] @ C.T - d, 0) - 0.5
    net = prepare(net_ir, C, d)
    nodes = [Node(c - 0.02 * 1.25 ** i, c + 0.02 * 1.25 ** i,
                  splits_through(net_ir, c, 2, seed + i), c) for i in range(24)]
    cuts: list[int] = []
    take = opt_mod._Part.take

    def spy(part: opt_mod._Part, keep: torch.Tensor) -> opt_mod._Part:
        cuts.append(part.lo.shape[0] - keep.numel())
        return take(part, keep)

    monkeypatch.setattr(opt_mod._Part, "take", spy)
    cut = bound_batch(net, make_batch(nodes), BETA)
    assert cuts and sum(cuts) > 0
    monkeypatch.setattr(opt_mod, "CUT_SHARE", 2.0)  # never cut
    n_cuts = len(cuts)
    whole = bound_batch(net, make_batch(nodes), BETA)
    assert len(cuts) == n_cuts
    open_ = (whole.row_lower <= 0).any(dim=1)
    assert 0 < int(open_.sum()) < len(nodes)
    assert torch.equal((cut.row_lower > 0).all(dim=1), ~open_)
    assert torch.allclose(cut.row_lower[open_], whole.row_lower[open_], rtol=1e-12, atol=0)
    check_sound(net_ir, C, d, nodes, cut, seed)
