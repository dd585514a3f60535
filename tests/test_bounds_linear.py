"""Tests of CROWN bounds and of the batched entry points (bnbver.bounds.linear, .engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import (
    BoundsOptions,
    NodeBatch,
    NodeState,
    bound_batch,
    bound_root,
    intermediate_bounds,
    prepare,
    stable_neurons,
)
from bnbver.network import Dense, Flatten, MaxPool2d, Network, ReLU
from tests.bounds_cases import (
    Node,
    check_sound,
    conv_net,
    dense_net,
    make_batch,
    nodes_in_box,
    pool_first_net,
    random_box,
    random_spec,
)

CROWN = BoundsOptions(method="crown")
IBP = BoundsOptions(method="ibp")
HAND_TOL = 1e-9
ROUNDING = 1e-12




@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(1, 4), n_splits=st.integers(0, 8),
       inherit=st.booleans())
def test_crown_sound_on_split_nodes(seed: int, depth: int, n_splits: int,
                                    inherit: bool) -> None:
    """Margins and pre-activations of feasible samples lie within CROWN bounds of each node."""
    net_ir = dense_net(seed, 5, 10, depth, 4)
    C, d = random_spec(seed, 4, 3)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, 3, n_splits)
    state = None
    if inherit:
        root = bound_root(net, nodes[0].lo, nodes[0].hi, CROWN)
        state = root.state.take(torch.zeros(3, dtype=torch.long))
    res = bound_batch(net, make_batch(nodes, state), CROWN)
    assert check_sound(net_ir, C, d, nodes, res, seed) > 0


@pytest.mark.parametrize("builder", [conv_net, pool_first_net])
@pytest.mark.parametrize("seed", [0, 1])
def test_crown_sound_on_conv_and_maxpool(builder, seed: int) -> None:
    """CROWN through Conv2d and the DeepPoly max-pool relaxation is sound, and beats IBP."""
    net_ir = builder(seed)
    C, d = random_spec(seed, net_ir.num_outputs, 2)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, seed, 2, 3, width=0.3)
    res = bound_batch(net, make_batch(nodes), CROWN)
    check_sound(net_ir, C, d, nodes, res, seed)
    res_ibp = bound_batch(net, make_batch(nodes), IBP)
    assert bool((res.row_lower >= res_ibp.row_lower).all())


def _hand_net(second_row: tuple[float, float]) -> Network:
    w1 = np.array([[1.0, 1.0], [1.0, -1.0]])
    return Network((Dense(w1, np.array([-1.0, 0.0])), ReLU(2),
                    Dense(np.array([second_row]), np.zeros(1))), (2,))


def test_hand_computed_two_neurons() -> None:
    """y = -relu(x1 + x2 - 1) - relu(x1 - x2) on [-1, 1]^2; true minimum -2.

    Pre-activations: h1 in [-3, 1], h2 in [-2, 2] (exact: the first layer is linear). IBP:
    y >= -1 - 2 = -3. CROWN: both coefficients are negative, so both neurons take the upper
    relaxation z <= u (h - l) / (u - l): z1 <= (h1 + 3) / 4, z2 <= (h2 + 2) / 2, hence
    y >= -(x1 + x2 + 2) / 4 - (x1 - x2 + 2) / 2 = -0.75 x1 + 0.25 x2 - 1.5, minimised at the
    corner x = (1, -1): -2.5. That corner is the candidate. The true minimum is -2 (at (1, -1)).
    """
    net = prepare(_hand_net((-1.0, -1.0)), np.eye(1), np.zeros(1))
    lo, hi = -np.ones(2), np.ones(2)
    ibp_res = bound_root(net, lo, hi, IBP)
    crown = bound_root(net, lo, hi, CROWN)
    assert abs(float(ibp_res.row_lower[0, 0]) + 3.0) < HAND_TOL
    assert abs(float(crown.row_lower[0, 0]) + 2.5) < HAND_TOL
    assert crown.candidates[0].tolist() == [1.0, -1.0]
    np.testing.assert_allclose(crown.pre_lower[0][0].numpy(), [-3.0, -2.0], atol=HAND_TOL)
    np.testing.assert_allclose(crown.pre_upper[0][0].numpy(), [1.0, 2.0], atol=HAND_TOL)
    assert stable_neurons(crown.state)[0].tolist() == [[0, 0]]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.integers(2, 4))
def test_tightness_crown_ibp_and_children(seed: int, depth: int) -> None:
    """CROWN >= IBP; CROWN intermediate bounds lie inside IBP's; a child is never looser."""
    net_ir = dense_net(seed, 4, 12, depth, 3)
    C, d = random_spec(seed, 3, 2)
    net = prepare(net_ir, C, d)
    lo, hi = random_box(seed, 4, 0.6)
    crown = bound_root(net, lo, hi, CROWN)
    ibp_res = bound_root(net, lo, hi, IBP)
    assert bool((crown.row_lower >= ibp_res.row_lower).all())
    for cl, il, cu, iu in zip(crown.pre_lower, ibp_res.pre_lower, crown.pre_upper,
                              ibp_res.pre_upper, strict=True):
        # Equal bounds may differ by rounding (tighter inputs take another float path).
        assert bool((cl >= il - ROUNDING).all()) and bool((cu <= iu + ROUNDING).all())
    unstable = [(k, j) for k, s in enumerate(stable_neurons(crown.state))
                for j in (s[0] == 0).nonzero().flatten().tolist()]
    if not unstable:
        return
    k, j = unstable[0]
    nodes = []
    for sign in (1, -1):
        masks = [np.zeros(n, np.int8) for n in net_ir.relu_sizes]
        masks[k][j] = sign
        nodes.append(Node(lo, hi, masks, None))
    kids = bound_batch(net, make_batch(nodes, crown.state.take(torch.zeros(2, dtype=torch.long))),
                       CROWN)
    assert bool((kids.row_lower >= crown.row_lower).all())
    for p_lo, p_hi, c_lo, c_hi in zip(crown.pre_lower, crown.pre_upper, kids.pre_lower,
                                      kids.pre_upper, strict=True):
        assert bool((c_lo >= p_lo).all()) and bool((c_hi <= p_hi).all())
    assert float(kids.pre_lower[k][0, j]) >= 0 and float(kids.pre_upper[k][1, j]) <= 0


@pytest.mark.parametrize("method", ["crown", "alpha", "beta"])
def test_batch_equals_single_calls(method: str) -> None:
    """B different nodes bounded together give the per-node results of B single calls."""
    net_ir = dense_net(11, 5, 10, 3, 4)
    C, d = random_spec(11, 4, 3)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, 11, 4, 5)
    nodes[1] = Node(nodes[1].lo * 0.5, nodes[1].hi * 0.5, nodes[1].masks, None)
    opts = BoundsOptions(method=method, iterations=5)
    together = bound_batch(net, make_batch(nodes), opts)
    for b, node in enumerate(nodes):
        alone = bound_batch(net, make_batch([node]), opts)
        torch.testing.assert_close(together.row_lower[b], alone.row_lower[0])
        torch.testing.assert_close(together.candidates[b], alone.candidates[0])
        for k in range(len(net_ir.relu_sizes)):
            torch.testing.assert_close(together.pre_lower[k][b], alone.pre_lower[k][0])


def test_intermediate_bounds_and_recompute_mode() -> None:
    """intermediate_bounds matches the root's; ``intermediate="crown"`` children stay sound."""
    net_ir = dense_net(7, 4, 10, 3, 3)
    C, d = random_spec(7, 3, 2)
    net = prepare(net_ir, C, d)
    nodes = nodes_in_box(net_ir, 7, 3, 4)
    state, infeasible = intermediate_bounds(net, make_batch(nodes[:1]), CROWN)
    root = bound_batch(net, make_batch(nodes[:1]), CROWN)
    assert not bool(infeasible.any())
    for a, b in zip(state.pre_lower, root.pre_lower, strict=True):
        torch.testing.assert_close(a, b)
    parent = bound_root(net, nodes[0].lo, nodes[0].hi, CROWN).state
    opts = BoundsOptions(method="crown", intermediate="crown")
    res = bound_batch(net, make_batch(nodes, parent.take(torch.zeros(3, dtype=torch.long))), opts)
    check_sound(net_ir, C, d, nodes, res, 7)


def test_float32_bounds_are_sound_and_close() -> None:
    """float32 bounds (with the safety margin) stay below float64 sampled margins."""
    net_ir = dense_net(3, 6, 16, 3, 4)
    C, d = random_spec(3, 4, 3)
    nodes = nodes_in_box(net_ir, 3, 2, 4)
    opts32 = BoundsOptions(method="crown", dtype=torch.float32)
    res32 = bound_batch(prepare(net_ir, C, d, opts32), make_batch(nodes), opts32)
    res64 = bound_batch(prepare(net_ir, C, d), make_batch(nodes), CROWN)
    assert res32.row_lower.dtype == torch.float32
    check_sound(net_ir, C, d, nodes, res32, 3)
    torch.testing.assert_close(res32.row_lower.double(), res64.row_lower, atol=1e-2, rtol=1e-3)


def test_inputs_not_modified_and_state_round_trip() -> None:
    """Caller tensors are unchanged; NodeState.cat of takes equals the original state."""
    net_ir = dense_net(2, 4, 8, 2, 3)
    net = prepare(net_ir, *random_spec(2, 3, 2))
    nodes = nodes_in_box(net_ir, 2, 3, 3)
    batch = make_batch(nodes)
    copies = [batch.lower.clone(), batch.upper.clone(), *[s.clone() for s in batch.splits]]
    res = bound_batch(net, batch, BoundsOptions(method="beta", iterations=3))
    for orig, copy in zip([batch.lower, batch.upper, *batch.splits], copies, strict=True):
        assert torch.equal(orig, copy)
    parts = [res.state.take(torch.tensor([i])) for i in range(3)]
    joined = NodeState.cat(parts)
    for a, b in zip(joined.lower + joined.alpha, res.state.lower + res.state.alpha,  # type: ignore[operator]
                    strict=True):
        assert torch.equal(a, b)
    assert torch.equal(joined.row_lower, res.state.row_lower)  # type: ignore[arg-type]


def test_hand_computed_maxpool() -> None:
    """y = x1 - max(x1, x2), with x1 in [0, 1] and x2 in [-0.2, 0.2] or [-0.5, -0.1].

    The dense layer copies (x1, x2, x1) into a 1x1x3 image; a (1, 2) pool with stride 2 and
    one padded column gives (max(x1, x2), x1). DeepPoly bounds max(x1, x2) from above by
    ``max(u1, u2) = 1`` unless x1 dominates (``l1 >= u2``), where max(x1, x2) = x1 exactly:
    so CROWN gives x1 - 1 >= -1 for x2 in [-0.2, 0.2] (true minimum -0.2 at (0, 0.2)) and
    x1 - x1 = 0 for x2 in [-0.5, -0.1] (exact; IBP only gives -1).
    """
    copy = Dense(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), np.zeros(3))
    pool = MaxPool2d((1, 2), (1, 2), (0, 0, 0, 1), (1, 1, 3))
    net_ir = Network((copy, pool, Flatten(2), Dense(np.array([[-1.0, 1.0]]), np.zeros(1))),
                     (2,))
    net = prepare(net_ir, np.eye(1), np.zeros(1))
    for x2_lo, x2_hi, expected in ((-0.2, 0.2, -1.0), (-0.5, -0.1, 0.0)):
        lo, hi = np.array([0.0, x2_lo]), np.array([1.0, x2_hi])
        res = bound_root(net, lo, hi, CROWN)
        assert abs(float(res.row_lower[0, 0]) - expected) < HAND_TOL
        assert abs(float(bound_root(net, lo, hi, IBP).row_lower[0, 0]) + 1.0) < HAND_TOL
        check_sound(net_ir, np.eye(1), np.zeros(1), [Node(lo, hi, [], None)], res, 0)


def test_per_node_refinement_equals_union_refinement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounding each node's own unstable neurons gives the bounds that bounding the union
    of all nodes' neurons gives (a neuron's CROWN bound does not depend on other rows), and
    the per-node path is really taken on a batch of small, scattered boxes."""
    import bnbver.bounds.engine as engine

    net_ir = dense_net(5, 3, 16, 4, 3)
    C, d = random_spec(5, 3, 2)
    net = prepare(net_ir, C, d)
    rng = np.random.default_rng(5)
    centres = rng.uniform(-1, 1, size=(40, 3))
    lo, hi = centres - 0.05, centres + 0.05
    splits = tuple(torch.zeros((40, n), dtype=torch.int8) for n in net_ir.relu_sizes)
    batch = NodeBatch(torch.tensor(lo), torch.tensor(hi), splits, None)
    taken = []
    real = engine._refine_per_node

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        taken.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_refine_per_node", spy)
    per_node = bound_batch(net, batch, CROWN)
    assert taken, "the per-node refinement was not used"
    monkeypatch.setattr(engine, "_per_node_pays", lambda *a: False)
    union = bound_batch(net, batch, CROWN)
    torch.testing.assert_close(per_node.row_lower, union.row_lower, rtol=1e-9, atol=1e-9)
    for k in range(len(net_ir.relu_sizes)):
        torch.testing.assert_close(per_node.pre_lower[k], union.pre_lower[k], rtol=1e-9,
                                   atol=1e-9)
        torch.testing.assert_close(per_node.pre_upper[k], union.pre_upper[k], rtol=1e-9,
                                   atol=1e-9)
