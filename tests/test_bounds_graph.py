"""Bounds over DAG networks (issue 19): residual sums, projections, concatenations.

Properties: sampled soundness of every method (the bounds contain ``forward(x)``), with and
without splits; the DAG's bounds are never looser than the same function written as a chain;
a chain keeps its chain code path (bit-identical bounds); the LP relaxation and the MILP over
a DAG agree with the exact oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnbver.bounds import BoundsOptions, NodeBatch, bound_batch, bound_root, prepare
from bnbver.bounds.interval import ibp
from bnbver.bounds.prepared import AddOp, ConcatOp
from bnbver.lp.intervals import interval_bounds
from bnbver.lp.relaxation import build_relaxation, lp_lower_bound
from bnbver.milp import build_milp, solve_milp
from bnbver.network import Network, chain_inputs
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.graph_cases import as_chain, conv_resnet, residual_net
from tests.oracle import max_linear_output_graph, max_linear_output_milp

METHODS = ["ibp", "crown", "alpha", "beta"]
SHORTCUTS = ["identity", "projection", "concat"]


def _box(net: Network, rng: np.random.Generator, width: float = 1.0
         ) -> tuple[np.ndarray, np.ndarray]:
    centre = rng.normal(size=net.input_size) * 0.3
    return centre - width, centre + width


def _samples(net: Network, lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator,
             n: int = 4000) -> np.ndarray:
    x = rng.uniform(lo, hi, size=(n, lo.size))
    corners = np.where(rng.random((200, lo.size)) < 0.5, lo, hi)
    return np.vstack([x, corners])


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("method", METHODS)
def test_issue_19_bounds_contain_samples(shortcut: str, method: str) -> None:
    rng = np.random.default_rng(hash((shortcut, method)) % 2**32)
    net = residual_net(rng, n_in=4, width=5, blocks=2, shortcut=shortcut)
    C = rng.normal(size=(3, 2))
    lo, hi = _box(net, rng)
    res = bound_root(prepare(net, C), lo, hi, BoundsOptions(method=method))
    x = _samples(net, lo, hi, rng)
    y, pre = net.forward_with_preactivations(x)
    assert np.all((y @ C.T).min(axis=0) >= res.row_lower[0].numpy())
    for k, p in enumerate(pre):
        assert np.all(p.min(axis=0) >= res.pre_lower[k][0].numpy())
        assert np.all(p.max(axis=0) <= res.pre_upper[k][0].numpy())


@pytest.mark.parametrize("method", ["crown", "beta"])
def test_issue_19_split_children_contain_their_samples(method: str) -> None:
    """Children with random splits: every sample satisfying the splits is inside the bounds."""
    rng = np.random.default_rng(3)
    net = residual_net(rng, n_in=3, width=4, blocks=2, shortcut="projection")
    bn = prepare(net, np.eye(2))
    lo, hi = _box(net, rng)
    root = bound_root(bn, lo, hi, BoundsOptions(method="alpha"))
    x = _samples(net, lo, hi, rng, 20000)
    y, pre = net.forward_with_preactivations(x)
    for trial in range(6):
        splits = [np.zeros((1, n), np.int8) for n in net.relu_sizes]
        k = trial % len(splits)
        j = int(rng.integers(net.relu_sizes[k]))
        splits[k][0, j] = 1 if trial % 2 else -1
        batch = NodeBatch(torch.tensor(lo[None]), torch.tensor(hi[None]),
                          tuple(torch.tensor(s) for s in splits), root.state)
        res = bound_batch(bn, batch, BoundsOptions(method=method))
        keep = (pre[k][:, j] >= 0) if splits[k][0, j] > 0 else (pre[k][:, j] <= 0)
        if keep.any() and not bool(res.infeasible[0]):
            assert np.all(y[keep].min(axis=0) >= res.row_lower[0].numpy())


def test_issue_19_conv_resnet_bounds_contain_samples() -> None:
    rng = np.random.default_rng(5)
    net = conv_resnet(rng, channels=2, size=4)
    lo, hi = _box(net, rng, 0.5)
    x = _samples(net, lo, hi, rng)
    y = net.forward(x)
    for method in METHODS:
        res = bound_root(prepare(net), lo, hi, BoundsOptions(method=method))
        assert np.all(y.min(axis=0) >= res.row_lower[0].numpy()), method


@pytest.mark.parametrize("shortcut", ["identity", "projection"])
@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_issue_19_dag_never_looser_than_its_chain(shortcut: str, method: str) -> None:
    """The chain carries each shortcut as relu(s) - relu(-s) through extra ReLUs; the DAG
    carries it exactly, so its bounds are at least as tight (up to the rounding terms).

    Not a theorem for alpha-CROWN: the chain's extra (barely) unstable ReLUs give its
    optimiser other parameters, and a local search can end anywhere; there the DAG's optimised
    bound is checked against the chain's CROWN bound."""
    rng = np.random.default_rng(11 if shortcut == "identity" else 12)
    for _ in range(5):
        net = residual_net(rng, n_in=3, width=4, blocks=2, shortcut=shortcut)
        chain = as_chain(net)
        lo, hi = _box(net, rng)
        x = rng.uniform(lo, hi, size=(100, 3))
        np.testing.assert_allclose(chain.forward(x), net.forward(x), atol=1e-12)
        C = rng.normal(size=(2, 2))
        opts = BoundsOptions(method=method)
        dag = bound_root(prepare(net, C), lo, hi, opts).row_lower[0].numpy()
        seq = bound_root(prepare(chain, C), lo, hi, opts).row_lower[0].numpy()
        assert np.all(dag >= seq - 1e-9 * (1 + np.abs(seq)))
        if method == "crown":
            best = bound_root(prepare(net, C), lo, hi, BoundsOptions(method="alpha"))
            assert np.all(best.row_lower[0].numpy() >= seq - 1e-9 * (1 + np.abs(seq)))


def test_issue_19_chain_with_explicit_inputs_takes_the_chain_path() -> None:
    """A chain given explicit inputs is a chain: same prepared network, identical bounds."""
    rng = np.random.default_rng(4)
    net = as_chain(residual_net(rng, n_in=3, width=4, blocks=1))
    explicit = Network(net.layers, net.input_shape, inputs=chain_inputs(len(net.layers)))
    assert explicit.is_chain and prepare(explicit).is_chain
    lo, hi = _box(net, rng)
    a = bound_root(prepare(net), lo, hi, BoundsOptions(method="alpha"))
    b = bound_root(prepare(explicit), lo, hi, BoundsOptions(method="alpha"))
    assert torch.equal(a.row_lower, b.row_lower)


def test_issue_19_shared_tensors_are_join_outputs() -> None:
    """prepare puts an identity join after an affine op or input read twice, so the engine
    has a magnitude bound for every tensor whose coefficients it sums."""
    rng = np.random.default_rng(6)
    net = residual_net(rng, shortcut="projection")
    # read the input twice: the projection of block 1 reads x directly
    layers = net.layers
    inputs = list(net.inputs)
    inputs[5] = (-1,)  # the projection Dense (3 -> 3) now reads the input
    dag = Network(layers, net.input_shape, inputs=tuple(inputs))
    bn = prepare(dag)
    assert isinstance(bn.ops[0], AddOp) and bn.inputs[0] == (-1,)
    for t, count in enumerate(bn.readers[1:]):
        if count > 1:
            assert not hasattr(bn.ops[t], "weight")
    lo, hi = -np.ones(3), np.ones(3)
    res = bound_root(bn, lo, hi, BoundsOptions(method="alpha"))
    y = dag.forward(_samples(dag, lo, hi, rng))
    assert np.all(y.min(axis=0) >= res.row_lower[0].numpy())


def test_issue_19_concat_op_and_interval_bounds_agree() -> None:
    """IBP of the torch engine and of the LP layer's numpy intervals both contain samples."""
    rng = np.random.default_rng(7)
    net = residual_net(rng, n_in=3, width=4, blocks=2, shortcut="concat")
    bn = prepare(net)
    assert any(isinstance(op, ConcatOp) for op in bn.ops)
    lo, hi = _box(net, rng)
    t = ibp(bn, torch.tensor(lo[None]), torch.tensor(hi[None]))
    lows, ups, (out_lo, out_hi) = interval_bounds(net, lo, hi)
    x = _samples(net, lo, hi, rng)
    y, pre = net.forward_with_preactivations(x)
    assert np.all(y >= out_lo) and np.all(y <= out_hi)
    assert np.all(y >= t.row_lower[0].numpy()) and np.all(y <= t.row_upper[0].numpy())
    for k, p in enumerate(pre):
        assert np.all(p >= lows[k]) and np.all(p <= ups[k])


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_issue_19_lp_and_milp_match_the_oracle(shortcut: str) -> None:
    """LP relaxation bound <= exact minimum (the oracle) <= samples; the MILP is exact."""
    rng = np.random.default_rng(21)
    net = residual_net(rng, n_in=3, width=3, blocks=1, shortcut=shortcut)
    lo, hi = _box(net, rng)
    c = rng.normal(size=2)
    best, _ = max_linear_output_graph(net, -c, lo, hi)   # min c.y = -max(-c).y
    exact_min = -best
    res = bound_root(prepare(net), lo, hi, BoundsOptions(method="crown"))
    pre = ([p[0].numpy() for p in res.pre_lower], [p[0].numpy() for p in res.pre_upper])
    box = InputBox(lo, hi)
    disjunct = HalfSpaces(c[None], np.zeros(1))  # margin t >= c.y
    lp = lp_lower_bound(build_relaxation(net, box, pre, objective=disjunct))
    assert lp.lower <= exact_min + 1e-7
    prop = Property(box, UnsafeSet((disjunct,)), "p")
    model = build_milp(net, prop, pre, None, "bigm", require_unsafe=False)
    sol = solve_milp(model, time_limit=30)
    assert sol.objective is not None
    assert abs(sol.objective - exact_min) <= 1e-5 * (1 + abs(exact_min))


def test_issue_19_milp_oracle_matches_enumeration_on_conv_resnet() -> None:
    """The conv ResNet's exact maximum by the two independent oracles' MILP and sampling."""
    rng = np.random.default_rng(8)
    net = conv_resnet(rng, channels=1, size=3)
    lo, hi = -np.ones(9) * 0.5, np.ones(9) * 0.5
    c = rng.normal(size=2)
    top = max_linear_output_milp(net, c, lo, hi)
    x = _samples(net, lo, hi, rng, 20000)
    assert (net.forward(x) @ c).max() <= top + 1e-6
    res = bound_root(prepare(net, -c[None]), lo, hi, BoundsOptions(method="alpha"))
    assert float(res.row_lower[0, 0]) <= -top + 1e-6


@pytest.mark.parametrize("mode", ["lp", "milp"])
def test_issue_19_lp_and_milp_tightening_over_a_dag(mode: str) -> None:
    """Bound tightening encodes the layers before each ReLU (the DAG's prefix up to the
    ReLU's input): the tightened bounds contain every sample, are no looser than CROWN's and
    tighten some bound after a join."""
    from bnbver.lp.tighten import TightenOptions, tighten_bounds

    rng = np.random.default_rng(41)
    net = residual_net(rng, n_in=3, width=4, blocks=2, shortcut="projection")
    lo, hi = _box(net, rng)
    res = bound_root(prepare(net), lo, hi, BoundsOptions(method="crown"))
    pre = ([p[0].numpy() for p in res.pre_lower], [p[0].numpy() for p in res.pre_upper])
    out = tighten_bounds(net, InputBox(lo, hi), pre, options=TightenOptions(mode=mode))
    _, samples = net.forward_with_preactivations(_samples(net, lo, hi, rng, 20000))
    for k, s in enumerate(samples):
        assert np.all(s.min(axis=0) >= out.lower[k]) and np.all(s.max(axis=0) <= out.upper[k])
        assert np.all(out.lower[k] >= pre[0][k]) and np.all(out.upper[k] <= pre[1][k])
    assert any(np.any(out.lower[k] > pre[0][k]) or np.any(out.upper[k] < pre[1][k])
               for k in range(1, len(samples)))  # it tightened something after a join


@pytest.mark.parametrize("mode", ["forward", "forward-crown"])
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_issue_19_forward_symbolic_bounds_over_a_dag(mode: str, shortcut: str) -> None:
    """The forward symbolic pass over residual sums and concatenations contains samples, in
    float64 and in float32."""
    rng = np.random.default_rng(51)
    net = residual_net(rng, n_in=3, width=4, blocks=2, shortcut=shortcut)
    lo, hi = _box(net, rng)
    x = _samples(net, lo, hi, rng)
    y, pre = net.forward_with_preactivations(x)
    for dtype in (torch.float64, torch.float32):
        opts = BoundsOptions(method="crown", intermediate=mode, dtype=dtype)
        bn = prepare(net, None, None, opts)
        splits = tuple(torch.zeros((1, n), dtype=torch.int8) for n in net.relu_sizes)
        res = bound_batch(bn, NodeBatch(torch.tensor(lo[None]), torch.tensor(hi[None]),
                                        splits), opts)
        assert np.all(y.min(axis=0) >= res.row_lower[0].double().numpy())
        for k, p in enumerate(pre):
            assert np.all(p.min(axis=0) >= res.pre_lower[k][0].double().numpy())
            assert np.all(p.max(axis=0) <= res.pre_upper[k][0].double().numpy())


def test_issue_19_max_pool_inside_a_branch() -> None:
    """A max pool on one branch of a join: every method contains the samples, and the LP
    relaxation's bound lies below them."""
    from bnbver.network import Add, Conv2d, Dense, MaxPool2d, ReLU

    rng = np.random.default_rng(61)
    a = Conv2d(rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2) * 0.3, (1, 1), (1, 1, 1, 1),
               (1, 4, 4))
    pool = MaxPool2d((2, 2), (2, 2), (0, 0, 0, 0), a.out_shape)
    b = Conv2d(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.3, (2, 2), (0, 0, 0, 0),
               (1, 4, 4))
    head = Dense(rng.normal(size=(2, 8)), rng.normal(size=2))
    net = Network((a, ReLU(32), pool, b, Add(8), ReLU(8), head), (1, 4, 4),
                  inputs=((-1,), (0,), (1,), (-1,), (2, 3), (4,), (5,)))
    lo, hi = _box(net, rng, 0.5)
    y = net.forward(_samples(net, lo, hi, rng))
    for method in METHODS:
        res = bound_root(prepare(net), lo, hi, BoundsOptions(method=method))
        assert np.all(y.min(axis=0) >= res.row_lower[0].numpy()), method
    res = bound_root(prepare(net), lo, hi, BoundsOptions(method="crown"))
    pre = ([p[0].numpy() for p in res.pre_lower], [p[0].numpy() for p in res.pre_upper])
    lp = lp_lower_bound(build_relaxation(net, InputBox(lo, hi), pre,
                                         objective=HalfSpaces(np.eye(2)[:1], np.zeros(1))))
    assert lp.lower <= y[:, 0].min() + 1e-9
