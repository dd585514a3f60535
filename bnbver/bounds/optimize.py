"""alpha- and beta-CROWN: optimise the relaxation's free parameters by projected gradient ascent.

The backward pass of :mod:`bnbver.bounds.linear` gives a valid lower bound ``L(alpha, beta)``
for every ``alpha`` in [0, 1] (lower slopes of unstable ReLUs) and every ``beta >= 0``
(multipliers of the split constraints). Each (node, row) pair has its own parameters, so the
rows decouple and ascending ``sum L`` ascends every bound at once. Each step is an Adam step on
``-sum L`` followed by the projection ``alpha := clip(alpha, 0, 1)``, ``beta := max(beta, 0)``.
Because every iterate is valid, the engine keeps, per (node, row), the best bound seen and the
parameters that gave it (the warm start of the node's children). The first iterate uses the
given start (the parent's parameters, or CROWN's slopes and ``beta = 0``), so the result is
never looser than that start.

Shapes: B nodes, R rows, ``n_l`` ReLU layer sizes, ``n_in`` the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bnbver.bounds.adam import Adam
from bnbver.bounds.linear import Relax, ReluRelax, backward, concretize
from bnbver.bounds.prepared import BoundedNetwork
from bnbver.bounds.types import BoundsOptions


@dataclass(frozen=True, eq=False)
class Optimized:
    """Best bounds found and the parameters that gave them (detached).

    Attributes:
        lower: (B, R) best lower bounds.
        alpha: per ReLU layer (B, R, n_l).
        beta: per ReLU layer (B, R, n_l) or None (layer without splits), or None.
        coeffs: (B, R, n_in) the best bound's input coefficients ``A`` (its minimising
            corner is ``lo`` where ``A > 0``, ``hi`` elsewhere).
    """

    lower: Tensor
    alpha: tuple[Tensor, ...]
    beta: tuple[Tensor | None, ...] | None
    coeffs: Tensor


def initial_alpha(relax: Sequence[Relax], relu_slots: Sequence[int], batch: int,
                  rows: int) -> list[Tensor]:
    """Return CROWN's lower slopes as alpha, per ReLU layer (B, R, n_l)."""
    out = []
    for slot in relu_slots:
        rx = relax[slot]
        assert isinstance(rx, ReluRelax)
        out.append(rx.lower_crown.expand(batch, rows, -1).clone())
    return out


def initial_beta(relax: Sequence[Relax], relu_slots: Sequence[int], batch: int, rows: int,
                 start: Sequence[Tensor | None] | None) -> list[Tensor | None]:
    """Return beta per ReLU layer: the warm start, zeros where a layer has splits, else None."""
    out: list[Tensor | None] = []
    for k, slot in enumerate(relu_slots):
        rx = relax[slot]
        assert isinstance(rx, ReluRelax)
        if rx.sign is None:
            out.append(None)
        elif start is not None and start[k] is not None:
            out.append(start[k].clone())  # type: ignore[union-attr]
        else:
            out.append(rx.sign.new_zeros((batch, rows, rx.sign.shape[2])))
    return out


def _keep_best(better: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(better.unsqueeze(2), new.detach(), old)


def optimize(net: BoundedNetwork, start: int, a0: Tensor, b0: Tensor, lo: Tensor, hi: Tensor,
             relax: Sequence[Relax], alpha0: Sequence[Tensor],
             beta0: Sequence[Tensor | None] | None, options: BoundsOptions) -> Optimized:
    """Maximise the lower bound of ``a0 h + b0`` (h: output of ``ops[start]``) over alpha, beta.

    Args:
        net: the prepared network.
        start: index of the op whose output ``a0`` multiplies.
        a0: (1 or B, R, n) initial coefficients.
        b0: (1 or B, R) initial constant.
        lo: (B, n_in) box lower corners.
        hi: (B, n_in) box upper corners.
        relax: relaxations of the slots before ``start``.
        alpha0: per ReLU layer traversed, (B, R, n_l) starting slopes in [0, 1].
        beta0: per ReLU layer, (B, R, n_l) starting multipliers >= 0 or None; None disables
            beta (alpha-CROWN).
        options: iterations and step sizes.

    Returns:
        The best bounds and parameters.
    """
    if beta0 is not None and options.seed_beta:
        beta0 = list(beta0)
        backward(net, start, a0, b0, relax, alpha0, beta0, seed_beta=True)
    alpha = [t.detach().clone().requires_grad_(True) for t in alpha0]
    beta = None if beta0 is None else [
        None if t is None else t.detach().clone().requires_grad_(True) for t in beta0]
    betas = [t for t in beta or [] if t is not None]
    groups: list[tuple[Sequence[Tensor], float]] = [(alpha, options.lr_alpha)]
    if betas:
        groups.append((betas, options.lr_beta))
    opt = Adam(groups, decay=options.lr_decay)
    best: Tensor | None = None
    best_alpha: list[Tensor] = []
    best_beta: list[Tensor | None] = []
    coeffs = lo.new_zeros(0)
    for it in range(options.iterations + 1):
        with torch.enable_grad():
            a, bias = backward(net, start, a0, b0, relax, alpha, beta)
            a = a.expand(lo.shape[0], -1, -1)
            lb = concretize(net, a, bias, lo, hi)
        with torch.no_grad():
            if best is None:
                best, coeffs = lb.detach().clone(), a.detach().clone()
                best_alpha = [t.detach().clone() for t in alpha]
                best_beta = [None if t is None else t.detach().clone() for t in beta or []]
            else:
                better = lb.detach() > best
                best = torch.maximum(best, lb.detach())
                coeffs = torch.where(better.unsqueeze(2), a.detach(), coeffs)
                best_alpha = [_keep_best(better, t, o) for t, o in zip(alpha, best_alpha,
                                                                     strict=True)]
                best_beta = [None if t is None or o is None else _keep_best(better, t, o)
                             for t, o in zip(beta or [], best_beta, strict=True)]
        if it == options.iterations or bool((best > 0).all()) or not lb.requires_grad:
            break
        _step(opt, lb, alpha, betas)
    assert best is not None
    return Optimized(best, tuple(best_alpha), None if beta is None else tuple(best_beta),
                     coeffs)


def _step(opt: Adam, lb: Tensor, alpha: Sequence[Tensor], betas: Sequence[Tensor]) -> None:
    """Take one Adam step on ``-sum lb`` and project alpha to [0, 1] and beta to >= 0."""
    with torch.enable_grad():
        torch.autograd.backward(-lb.sum())
    opt.step()
    with torch.no_grad():
        for t in alpha:
            t.clamp_(0.0, 1.0)
        for t in betas:
            t.clamp_(min=0.0)
