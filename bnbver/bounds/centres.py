r"""Centres of a batch's tensors: the values of a linear bound's centred form.

A linear bound in :mod:`bnbver.bounds.linear` is built on deviations from a centre rather than
on the values themselves: every tensor ``h`` of the network is written ``h = c + delta`` with
``c`` a fixed vector of the computation dtype, and the telescoping identity is taken over the
deltas. The centres are the forward pass of the box centre: ``c_0 = (lo + hi) / 2``, an
affine op's output centre ``W* c_in + b*`` computed in float64 and rounded to nearest, and the
exact ``relu(c)``, window maxima and concatenations after the others; a residual sum rounds.

Why: the rounding allowance of a bound is a sum of ``gamma |a| . m`` terms, with m a bound on
the tensor the coefficients ``a`` multiply. On plain values m is the *magnitude* of an
activation; on deviations it is their *radius*, the width of the interval the node allows,
which is much smaller deep in a network and in a branch-and-bound child, and float32 bounds
become tight enough to search with.

Each affine op and residual sum leaves a *residual* ``rho = o(c_in) - c`` (the rounding of
the centre to the dtype and of its float64 computation), charged as ``|a| . res`` with
``res >= |rho|``; an affine op's ``res`` goes into its error vector.

Shapes: ``N`` is 1 when every node of the batch has the same box (a ReLU-split search; the
centres broadcast) and B otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds import rounding
from bnbver.bounds.prepared import AddOp, AffineOp, BoundedNetwork, ConcatOp, PoolOp, ReluOp


@dataclass(frozen=True, eq=False)
class Centres:
    """The centre of the input and of every op's output, and the residual bounds.

    Attributes:
        input: (N, n_in) the box centre :func:`box_centre`.
        ops: per op (N, n_out) the centre of its output.
        resid: per op (N, n_out) a bound on its residual ``|o(c_in) - c|`` (affine ops and
            residual sums), None where the centre is exact (ReLU, pool, concatenation).
    """

    input: Tensor
    ops: tuple[Tensor, ...]
    resid: tuple[Tensor | None, ...]

    def of(self, t: int) -> Tensor:
        """Return the centre of tensor ``t`` (an op's output, -1: the input)."""
        return self.input if t < 0 else self.ops[t]


def box_centre(lo: Tensor, hi: Tensor) -> Tensor:
    """Return the centre of the boxes ``[lo, hi]`` (B, n_in), rounded (any point would do;
    radii are taken around this one, :func:`bnbver.bounds.rounding.enclosing_radius`)."""
    return (lo + hi) / 2


def centres(net: BoundedNetwork, lo: Tensor, hi: Tensor) -> Centres:
    """Return the centres of a batch with boxes ``[lo, hi]`` (B, n_in)."""
    if lo.shape[0] > 1 and bool((lo == lo[:1]).all() & (hi == hi[:1]).all()):
        lo, hi = lo[:1], hi[:1]
    c0 = box_centre(lo, hi)
    vals: list[Tensor] = []
    resid: list[Tensor | None] = []
    for op, ins in zip(net.ops, net.inputs, strict=True):
        args = [c0 if t < 0 else vals[t] for t in ins]
        res: Tensor | None = None
        if isinstance(op, AffineOp):
            c, res = op.centre(args[0])
        elif isinstance(op, ReluOp):
            c = args[0].clamp(min=0)
        elif isinstance(op, PoolOp):
            pad = args[0].new_full((args[0].shape[0], 1), -torch.inf)
            c = torch.cat([args[0], pad], 1)[:, op.windows].amax(dim=2)
        elif isinstance(op, AddOp):
            c, res = _sum_centre(args)
        else:
            assert isinstance(op, ConcatOp)
            c = torch.cat(args, 1)
        vals.append(c)
        resid.append(res)
    return Centres(c0, tuple(vals), tuple(resid))


def _sum_centre(args: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """Return the rounded sum of centres and a bound on its residual (None: exact)."""
    if len(args) == 1:
        return args[0], None
    exact = torch.stack([a.double() for a in args]).sum(0)
    size = torch.stack([a.double().abs() for a in args]).sum(0)
    c = exact.to(args[0].dtype)
    g = rounding.gamma(len(args) + 2, torch.float64)
    res = ((exact - c.double()).abs() + g * size) * (1.0 + 4.0 * g)
    return c, rounding.up_cast(res, args[0].dtype)
