"""bnbver.bounds.rounding's one-ulp moves: exact values, slope 1, and the optimised bounds
on a torch build whose ``nextafter`` has no derivative (torch 2.11, as a lent GPU machine
had: every optimised bound failed there)."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import torch

from bnbver.bounds import BoundsOptions, bound_batch, prepare, rounding
from tests.bounds_cases import check_sound, dense_net, make_batch, nodes_in_box, random_spec
from tests.graph_cases import conv_resnet

_REAL = torch.nextafter


class _NoDerivative(torch.autograd.Function):
    """``torch.nextafter`` as builds without its derivative define it."""

    @staticmethod
    def forward(ctx, t, towards):  # type: ignore[no-untyped-def]
        return _REAL(t, towards)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        raise NotImplementedError("the derivative for 'nextafter' is not implemented.")


def _old_nextafter(t: torch.Tensor, towards: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and (t.requires_grad or towards.requires_grad):
        out: torch.Tensor = _NoDerivative.apply(t, towards)
        return out
    return _REAL(t, towards)


def test_up_and_down_move_one_ulp_with_slope_one() -> None:
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([1.0, -2.5, 0.0, 3e-39, math.inf, -math.inf], dtype=dtype,
                         requires_grad=True)
        up, down = rounding.up(x), rounding.down(x)
        want_up = np.nextafter(x.detach().numpy(), np.inf)
        want_down = np.nextafter(x.detach().numpy(), -np.inf)
        np.testing.assert_array_equal(up.detach().numpy(), want_up)
        np.testing.assert_array_equal(down.detach().numpy(), want_down)
        (up[:4].sum() + down[:4].sum()).backward()
        assert x.grad is not None
        np.testing.assert_array_equal(x.grad.numpy()[:4], 2.0)


def test_optimised_bounds_without_a_nextafter_derivative() -> None:
    """Alpha and beta bounds (dense and conv ResNet, float32 and float64) run and hold when
    torch's own ``nextafter`` cannot be differentiated."""
    cases = [(dense_net(3, 4, 8, 2, 3), 3), (conv_resnet(np.random.default_rng(3), 2, 4), 2)]
    with mock.patch.object(rounding.torch, "nextafter", _old_nextafter):
        for net_ir, m in cases:
            C, d = random_spec(3, m, 2)
            nodes = nodes_in_box(net_ir, 3, 3, 2, width=0.4)
            for dtype in (torch.float32, torch.float64):
                net = prepare(net_ir, C, d, BoundsOptions(dtype=dtype))
                for method in ("alpha", "beta"):
                    res = bound_batch(net, make_batch(nodes), BoundsOptions(
                        method=method, iterations=5, dtype=dtype))
                    assert check_sound(net_ir, C, d, nodes, res, 3) > 0
