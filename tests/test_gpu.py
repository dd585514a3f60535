"""The CUDA path: bounds on the GPU equal the CPU's, float32 GPU bounds are sound, and the
verifier gives the oracle's answers with ``device="cuda"``.

CI has no GPU, so these tests skip there (the reason says so); they run on a machine with
one (results/README.md says when they last did, and where).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbver.bab.loop import BabOptions, run_bab
from bnbver.bounds import BoundsOptions, NodeState, bound_batch, prepare
from bnbver.io.loaders import load_network, load_properties
from bnbver.result import Status, validate_counterexample
from tests.bounds_cases import (
    SAMPLE_TOL,
    check_sound,
    dense_net,
    feasible_samples,
    make_batch,
    nodes_in_box,
    random_spec,
)
from tests.graph_cases import conv_resnet
from tests.test_bab import _instance
from tests.test_bab_graph import check_around_the_maximum, conv_resnet_case

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU path is tested where one is")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _bounds(net_ir, C, d, nodes, device: str, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """Return CROWN, alpha and warm-started beta results on ``device`` in ``dtype``."""
    out = []
    net = prepare(net_ir, C, d, BoundsOptions(device=device, dtype=dtype))
    for method in ("crown", "alpha"):
        out.append(bound_batch(net, make_batch(nodes), BoundsOptions(
            method=method, iterations=10, device=device, dtype=dtype)))
    s = out[1].state
    warm = NodeState(s.lower, s.upper, s.relu_slots, None, s.alpha, None)
    out.append(bound_batch(net, make_batch(nodes, warm), BoundsOptions(
        method="beta", iterations=10, device=device, dtype=dtype)))
    return out


def _case(seed: int, depth: int, n_splits: int):  # type: ignore[no-untyped-def]
    """Return a random dense net, a 2-row spec and 3 split nodes in one box."""
    net_ir = dense_net(seed, 4, 12, depth, 3)
    C, d = random_spec(seed, 3, 2)
    return net_ir, C, d, nodes_in_box(net_ir, seed, 3, n_splits, width=0.6)


CASES = {"seed": st.integers(0, 10_000), "depth": st.integers(1, 3),
         "n_splits": st.integers(0, 6)}


@settings(max_examples=10, deadline=None)
@given(**CASES)
def test_float64_gpu_bounds_equal_cpu(seed: int, depth: int, n_splits: int) -> None:
    """Same arithmetic on another device: CROWN, alpha and beta agree to rounding."""
    net_ir, C, d, nodes = _case(seed, depth, n_splits)
    cpu = _bounds(net_ir, C, d, nodes, "cpu", torch.float64)
    gpu = _bounds(net_ir, C, d, nodes, "cuda", torch.float64)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.row_lower.device.type == "cuda"
        np.testing.assert_allclose(b.row_lower.cpu().numpy(), a.row_lower.numpy(),
                                   rtol=1e-6, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(**CASES)
def test_float32_gpu_bounds_sound(seed: int, depth: int, n_splits: int) -> None:
    """float32 on the GPU (the device default) still bounds every sampled point."""
    net_ir, C, d, nodes = _case(seed, depth, n_splits)
    for res in _bounds(net_ir, C, d, nodes, "cuda", torch.float32):
        assert res.row_lower.dtype == torch.float32
        assert check_sound(net_ir, C, d, nodes, res, seed) > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_in=st.integers(1, 3),
       hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
       offset=st.sampled_from([-0.05, 0.05, 0.2]), split=st.sampled_from(["relu", "input"]),
       precision=st.sampled_from(["auto", "float64"]))
def test_bab_on_gpu_matches_oracle(seed: int, n_in: int, hidden: list[int], offset: float,
                                   split: str, precision: str) -> None:
    net, prop, violated = _instance(seed, n_in, hidden, offset)
    opts = BabOptions(split=split, batch_size=8, iterations=5, device="cuda",
                      precision=precision)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    if violated:
        assert result.counterexample is not None
        assert validate_counterexample(net, prop, result.counterexample.x) is not None


@pytest.mark.parametrize(("net", "prop", "expected"), [
    ("mnist_fc/mnist-net_256x2.onnx", "mnist_fc/prop_0_0.03.vnnlib", Status.HOLDS),
    ("mnist_fc/mnist-net_256x2.onnx", "mnist_fc/prop_0_0.05.vnnlib", Status.VIOLATED),
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_1.vnnlib", Status.HOLDS),
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_2.vnnlib", Status.HOLDS),
])
def test_bundled_instances_on_gpu(net: str, prop: str, expected: Status) -> None:
    import bnbver

    network = load_network(EXAMPLES / net)
    props = load_properties(EXAMPLES / prop, network)
    result = bnbver.verify(network, props, timeout=120, device="cuda",
                           source_path=EXAMPLES / net)
    assert result.status is expected, result.message


def _resnet_case(seed: int, n_splits: int):  # type: ignore[no-untyped-def]
    """Return a tiny conv ResNet (identity and projection shortcuts), a 4-row spec, 4 split
    nodes in one box, and a parent state whose rows differ by node (packed rows)."""
    net_ir = conv_resnet(np.random.default_rng(seed), channels=2, size=4)
    C, d = random_spec(seed, net_ir.num_outputs, 4)
    nodes = nodes_in_box(net_ir, seed, 4, n_splits, width=0.4)
    return net_ir, C, d, nodes


def _resnet_bounds(net_ir, C, d, nodes, device: str, dtype: torch.dtype):  # type: ignore[no-untyped-def]
    """Alpha at the parent, then beta on children whose parents proved all but one row each
    (so the rows are packed as (node, row) pairs), on ``device`` in ``dtype``."""
    net = prepare(net_ir, C, d, BoundsOptions(device=device, dtype=dtype))
    parent = bound_batch(net, make_batch(nodes), BoundsOptions(
        method="alpha", iterations=10, device=device, dtype=dtype))
    s = parent.state
    open_ = torch.zeros_like(parent.row_lower, dtype=torch.bool)
    open_[torch.arange(len(nodes)), torch.arange(len(nodes)) % open_.shape[1]] = True
    rows = torch.where(open_, parent.row_lower.clamp(max=0.0),
                       torch.ones_like(parent.row_lower))
    warm = NodeState(s.lower, s.upper, s.relu_slots, rows, s.alpha, s.beta)
    child = bound_batch(net, make_batch(nodes, warm), BoundsOptions(
        method="beta", iterations=10, device=device, dtype=dtype))
    return parent, child, open_.cpu()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 5))
def test_resnet_float64_gpu_bounds_equal_cpu(seed: int, n_splits: int) -> None:
    """The DAG path (residual joins, transposed convolutions, packed rows) computes the same
    float64 bounds on the GPU as on the CPU."""
    net_ir, C, d, nodes = _resnet_case(seed, n_splits)
    cpu = _resnet_bounds(net_ir, C, d, nodes, "cpu", torch.float64)
    gpu = _resnet_bounds(net_ir, C, d, nodes, "cuda", torch.float64)
    np.testing.assert_allclose(gpu[0].row_lower.cpu().numpy(), cpu[0].row_lower.numpy(),
                               rtol=1e-6, atol=1e-6)
    open_ = cpu[2]
    np.testing.assert_allclose(gpu[1].row_lower.cpu()[open_].numpy(),
                               cpu[1].row_lower[open_].numpy(), rtol=1e-6, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 5))
def test_resnet_float32_gpu_bounds_sound(seed: int, n_splits: int) -> None:
    """float32 bounds of a conv ResNet on the GPU hold on every sampled feasible point."""
    net_ir, C, d, nodes = _resnet_case(seed, n_splits)
    parent, child, open_ = _resnet_bounds(net_ir, C, d, nodes, "cuda", torch.float32)
    for b, node in enumerate(nodes):
        x = feasible_samples(net_ir, node.lo, node.hi, node.masks, node.x0, seed + b)
        if x.shape[0] == 0:
            continue
        margins = net_ir.forward(x) @ C.T - d
        if not bool(parent.infeasible[b]):
            assert np.all(margins >= parent.row_lower[b].cpu().numpy() - SAMPLE_TOL)
        if not bool(child.infeasible[b]):
            ok = open_[b].numpy()
            assert np.all(margins[:, ok] >= child.row_lower[b].cpu().numpy()[ok] - SAMPLE_TOL)


@pytest.mark.parametrize("precision", ["auto", "float64"])
def test_conv_resnet_bab_on_gpu_matches_oracle(precision: str) -> None:
    """A conv ResNet (35 ReLUs): sat and unsat around the MILP oracle's maximum, on the GPU."""
    check_around_the_maximum(*conv_resnet_case(), device="cuda", precision=precision)
