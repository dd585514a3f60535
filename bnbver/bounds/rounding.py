r"""Rigorous floating-point error terms: every bound the engine returns holds in real arithmetic.

The engine computes in float64 or float32 and rounds to nearest. A bound is made rigorous by
subtracting (from a lower bound) an upper bound on everything rounding can have changed. The
model is the standard one (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 2-3):
with unit roundoff :math:`u` (:math:`2^{-53}` in float64, :math:`2^{-24}` in float32), a dot
product of length n computed in any order satisfies

.. math::
    |\mathrm{fl}(a^\top b) - a^\top b| \le \gamma_n\,|a|^\top |b|,\qquad
    \gamma_n = \frac{n u}{1 - n u},

plus, where subnormal numbers occur, an absolute term of at most ``n * ETA`` (half the
smallest subnormal per product). A single addition or multiplication is off by at most
:math:`u` times its result. Everything below builds on these two facts:

- weights: a layer's float64 weights :math:`W^*` (the IR, plus any error the IR itself records
  for folded constants) differ from the weights used, :math:`\hat W` (rounded to float32, or a
  folded product), by at most a relative ``w_rel`` elementwise and a bias error vector;
- an affine step of a backward pass works on deviations from centres
  (:mod:`bnbver.bounds.centres`): for :math:`\delta_{out} = W \delta_{in} + \rho` with
  :math:`|\delta_{in}| \le r` it is off by at most :math:`|a|^\top v` with
  :math:`v = \kappa |\hat W| r + E r + res` (``AffineOp.radius_error``), where
  :math:`\kappa = (w_{rel} + \gamma_n)(1 + 2\gamma_n)` also covers the rounding of computing v
  itself and ``res`` bounds the centre's residual :math:`\rho`; interval and forward passes
  use the same vector with a magnitude bound m in place of r and :math:`\kappa |\hat b|`
  added (``AffineOp.error_vector``);
- the running sums of a bound get :math:`2u` times each partial sum;
- error terms are sums of non-negative computed quantities, each with a relative error below
  :math:`\gamma_N` for the longest dot product N; multiplying the total by
  ``BoundedNetwork.err_scale`` :math:`= 1 + 4\gamma_N` covers that;
- the last subtraction is rounded to nearest and then moved one ulp outwards (:func:`down`,
  :func:`up`).

Matrix products must be true floating-point dot products: :func:`strict_matmul` switches off
TF32, reduced-precision reductions and FFT/Winograd convolutions wherever bounds are computed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: Half of the smallest positive subnormal (the absolute error of a product that underflows).
ETA = {torch.float64: 2.0 ** -1075, torch.float32: 2.0 ** -150}


def unit(dtype: torch.dtype) -> float:
    """Return the unit roundoff of ``dtype`` (float64 or float32 only)."""
    if dtype == torch.float64:
        return 2.0 ** -53
    if dtype == torch.float32:
        return 2.0 ** -24
    raise ValueError(f"bounds need float64 or float32, got {dtype}")


def gamma(n: int, dtype: torch.dtype) -> float:
    r"""Return :math:`\gamma_n = n u / (1 - n u)`, rounded up, for ``dtype``."""
    nu = max(int(n), 1) * unit(dtype)
    if nu >= 0.25:
        raise ValueError(f"dot products of length {n} are too long for {dtype} error bounds")
    return math.nextafter(nu / (1.0 - nu), math.inf) * (1.0 + 1e-12)


class _NextAfter(torch.autograd.Function):
    """``torch.nextafter`` whose derivative is the identity (one ulp moves the value, not its
    slope). Older torch builds (2.11 among them) define no derivative for ``nextafter``,
    and the optimised bounds differentiate through every rounded-outward result."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, towards: Tensor) -> Tensor:
        return torch.nextafter(t, towards)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def next_after(t: Tensor, towards: float) -> Tensor:
    """Return ``t`` moved one ulp towards ``towards`` (a float, +-inf in practice),
    differentiable with slope 1 on every torch build."""
    target = t.new_full((), towards)
    if t.requires_grad:
        out: Tensor = _NextAfter.apply(t, target)  # type: ignore[no-untyped-call]
        return out
    return torch.nextafter(t, target)


def down(t: Tensor) -> Tensor:
    """Return ``t`` moved one ulp towards -inf (NaN becomes -inf): a rounded-down result."""
    out = next_after(t, -math.inf)
    return torch.nan_to_num(out, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


def up(t: Tensor) -> Tensor:
    """Return ``t`` moved one ulp towards +inf (NaN becomes +inf): a rounded-up result."""
    out = next_after(t, math.inf)
    return torch.nan_to_num(out, nan=math.inf, posinf=math.inf, neginf=-math.inf)


def up_sum(t: Tensor) -> Tensor:
    """Return :func:`up` of ``t``, a rounded sum or difference, keeping exact zeros.

    A floating-point sum is 0 only when it is exactly 0 (gradual underflow makes tiny sums
    exact), so a 0 needs no ulp; moving it up would make it the smallest subnormal, and
    products with subnormals are many times slower on CPUs.
    """
    return torch.where(t == 0, t, up(t))


def up_cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """Return a bound in ``dtype`` at least the non-negative bound ``t`` (any dtype); an
    exact 0 stays 0 (no subnormal, see :func:`up_sum`)."""
    return torch.where(t == 0, 0.0, up(t.to(dtype)))


def outward(lo64: Tensor, hi64: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Round float64 bounds to ``dtype`` outwards: the rounded interval contains the original
    (a cast rounds to nearest, which can move a bound inwards)."""
    lo, hi = lo64.to(dtype), hi64.to(dtype)
    if dtype == torch.float64:
        return lo, hi
    lo = torch.where(lo.double() > lo64, next_after(lo, -math.inf), lo)
    hi = torch.where(hi.double() < hi64, next_after(hi, math.inf), hi)
    return lo, hi


def box_magnitude(lo: Tensor, hi: Tensor) -> Tensor:
    """Return ``max(|lo|, |hi|)`` elementwise: a bound on ``|x|`` over the box (exact)."""
    return torch.maximum(lo.abs(), hi.abs())


def enclosing_radius(lo: Tensor, hi: Tensor, center: Tensor) -> Tensor:
    """Return r with ``[center - r, center + r]`` containing ``[lo, hi]`` in real arithmetic."""
    return up_sum(torch.maximum(hi - center, center - lo))


def strict_matmul(device: torch.device, dtype: torch.dtype) -> None:
    """Make torch's products true dot products for the error model above (process-wide).

    On CUDA: no TF32, no reduced-precision reductions, and no cuDNN (its FFT and Winograd
    convolutions do not obey the componentwise bound; torch's native convolution is an
    im2col product). On the CPU in float32: no NNPACK (Winograd/FFT). float64 on the CPU
    always uses direct products. Called by ``prepare``; the flags only ever move towards the
    exact algorithms, so other users of torch in the process stay correct.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cudnn.enabled = False
    elif dtype == torch.float32:
        torch.backends.nnpack.set_flags(False)  # type: ignore[no-untyped-call]
