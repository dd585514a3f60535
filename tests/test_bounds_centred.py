"""Tests of the centred form of the bounds (bnbver.bounds.centres and its use in .linear).

Bounds are taken on deviations from the forward pass of the box centre, so the rounding
allowance scales with interval widths, not activation magnitudes. The oracle is exact: the
minimum margin of tiny networks by enumerating activation patterns (``tests.oracle``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds import BoundsOptions, NodeBatch, bound_batch, prepare
from bnbver.bounds.centres import centres
from bnbver.network import Dense, Network, ReLU
from tests.bounds_cases import dense_net, splits_through
from tests.oracle import max_linear_output

# Largest allowed gap between the float32 and float64 bounds of the offset network below: its
# widths are about 1e-3 and its activations about 1e4, so an allowance proportional to the
# activations (float32 unit roundoff 6e-8 times 1e4 per neuron and product) exceeds 0.1,
# while one proportional to the widths stays near the rounding of the centres themselves.
OFFSET_GAP = 2e-2


def _oracle_min(net: Network, row: np.ndarray, d: float, lo: np.ndarray, hi: np.ndarray,
                masks: list[np.ndarray]) -> float:
    """Return the exact minimum of ``row . f(x) - d`` over the box and the splits."""
    fixed: dict[int, int] = {}
    pos = 0
    for m in masks:
        for j, s in enumerate(m):
            if s != 0:
                fixed[pos + j] = 1 if s > 0 else 0
        pos += m.shape[0]
    best, _ = max_linear_output(net, -row, lo, hi, fixed)
    return -best - d


def _batch(lo: np.ndarray, hi: np.ndarray, masks: list[list[np.ndarray]]) -> NodeBatch:
    b = len(masks)
    return NodeBatch(torch.tensor(np.tile(lo, (b, 1))), torch.tensor(np.tile(hi, (b, 1))),
                     tuple(torch.tensor(np.stack([m[k] for m in masks]))
                           for k in range(len(masks[0]))), None)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_splits=st.integers(0, 5),
       method=st.sampled_from(["crown", "alpha", "beta"]),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       offset=st.sampled_from([0.0, 30.0]))
def test_bounds_below_exact_minimum_with_splits(seed: int, n_splits: int, method: str,
                                                dtype: torch.dtype, offset: float) -> None:
    """Every row bound of every split node is at most the exact minimum over that node.

    The splits follow random points of the box, so the box centre (where the centres come
    from) often lies on the other side of a split; ``offset`` shifts the first layer so that
    activations are large next to their widths.
    """
    rng = np.random.default_rng(seed)
    net = dense_net(seed, 3, 3, 2, 3)
    first = net.layers[0]
    assert isinstance(first, Dense)
    shifted = Dense(first.weight, first.bias + offset)
    second = net.layers[2]
    assert isinstance(second, Dense)
    fixed = Dense(second.weight, second.bias - offset * second.weight.sum(axis=1))
    net = Network((shifted, net.layers[1], fixed, *net.layers[3:]), net.input_shape)
    lo = rng.uniform(-1.0, 0.0, 3)
    hi = lo + rng.uniform(0.05, 1.0, 3)
    masks = [splits_through(net, rng.uniform(lo, hi), n_splits, seed + k) for k in range(2)]
    C = rng.normal(size=(2, 3))
    d = rng.normal(size=2)
    opts = BoundsOptions(method=method, iterations=5, dtype=dtype)
    res = bound_batch(prepare(net, C, d, opts), _batch(lo, hi, masks), opts)
    for b, m in enumerate(masks):
        for r in range(2):
            exact = _oracle_min(net, C[r], float(d[r]), lo, hi, m)
            got = float(res.row_lower[b, r])
            assert got <= exact, (b, r, got, exact)


def _offset_net() -> tuple[Network, np.ndarray, np.ndarray]:
    """A dense net whose activations are about 1e4 and whose box is 1e-3 wide."""
    rng = np.random.default_rng(5)
    w1 = rng.normal(size=(16, 8))
    w2 = rng.normal(size=(16, 16)) * 0.25
    b2 = -w2 @ np.full(16, 1e4) + rng.normal(size=16) * 1e-3
    w3 = rng.normal(size=(3, 16))
    net = Network((Dense(w1, np.full(16, 1e4)), ReLU(16), Dense(w2, b2), ReLU(16),
                   Dense(w3, np.zeros(3))), (8,))
    lo = rng.normal(size=8) * 1e-3
    return net, lo, lo + 1e-3


def test_float32_allowance_scales_with_widths_not_magnitudes() -> None:
    """With activations of 1e4 and widths of 1e-3 the float32 bound stays within
    ``OFFSET_GAP`` of the float64 one (and below sampled margins)."""
    net, lo, hi = _offset_net()
    C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    d = np.zeros(2)
    masks = [[np.zeros(16, dtype=np.int8), np.zeros(16, dtype=np.int8)]]
    rows = {}
    for dtype in (torch.float32, torch.float64):
        opts = BoundsOptions(method="crown", dtype=dtype)
        rows[dtype] = bound_batch(prepare(net, C, d, opts), _batch(lo, hi, masks),
                                  opts).row_lower[0].double().numpy()
    gap = rows[torch.float64] - rows[torch.float32]
    assert np.all(gap >= -1e-9)
    assert np.all(gap <= OFFSET_GAP), gap
    x = np.random.default_rng(0).uniform(lo, hi, size=(4000, 8))
    assert np.all(rows[torch.float32] <= (net.forward(x) @ C.T).min(axis=0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centres_are_the_forward_pass_of_the_box_centre(dtype: torch.dtype) -> None:
    """Each op's centre is within its residual bound of the float64 forward pass at the box
    centre, and one row of centres serves a batch whose boxes agree."""
    net_ir, lo, _ = _offset_net()
    opts = BoundsOptions(dtype=dtype)
    net = prepare(net_ir, None, None, opts)
    lo_t = torch.tensor(np.tile(lo, (3, 1)), dtype=dtype)
    hi_t = lo_t + 1e-3
    cent = centres(net, lo_t, hi_t)
    assert cent.input.shape[0] == 1
    x = cent.input.double().numpy()
    h = x
    for k, layer in enumerate(net_ir.layers):
        if isinstance(layer, ReLU):
            assert np.array_equal(cent.ops[k].double().numpy(), np.maximum(
                cent.ops[k - 1].double().numpy(), 0.0))
            h = cent.ops[k].double().numpy()
        else:
            assert isinstance(layer, Dense)
            h = h @ layer.weight.T + layer.bias
            res = cent.resid[k]
            assert res is not None
            err = np.abs(cent.ops[k].double().numpy() - h)
            assert np.all(err <= res.double().numpy())
            h = cent.ops[k].double().numpy()


def test_exact_zero_radii_stay_zero() -> None:
    """A zero-width input dimension and an inactive ReLU get radius 0, not the smallest
    subnormal (products with subnormals are many times slower), while a positive rounded
    difference still moves up."""
    from bnbver.bounds import rounding
    from bnbver.bounds.linear import box_columns, relu_relax

    lo = torch.tensor([[0.5, -1.0, 0.1]], dtype=torch.float64)
    hi = torch.tensor([[0.5, 1.0, 0.1 + 2.0 ** -40]], dtype=torch.float64)
    r = box_columns(lo, hi)[0, :, 0]
    assert float(r[0]) == 0.0
    assert float(r[1]) >= 1.0 and float(r[2]) >= 2.0 ** -41
    rx = relu_relax(torch.tensor([[-2.0, -1.0]]), torch.tensor([[-1.0, 3.0]]), None, 1e-6,
                    torch.tensor([[-1.5, 1.0]]))
    assert float(rx.out_rad[0, 0]) == 0.0 and float(rx.out_rad[0, 1]) >= 2.0
    assert float(rounding.up_sum(torch.tensor([1.0]))[0]) > 1.0
