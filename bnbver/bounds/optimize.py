"""alpha- and beta-CROWN: optimise the relaxation's free parameters by projected gradient ascent.

The backward pass of :mod:`bnbver.bounds.linear` gives a valid lower bound ``L(alpha, beta)``
for every ``alpha`` in [0, 1] (lower slopes of unstable ReLUs) and every ``beta >= 0``
(multipliers of the split constraints). Each (node, row) pair has its own parameters, so the
rows decouple and ascending ``sum L`` ascends every bound at once. Each step is an Adam step on
``-sum L`` followed by the projection ``alpha := clip(alpha, 0, 1)``, ``beta := max(beta, 0)``.
Any beta gives a valid bound (each neuron's term is taken at its exact minimum,
:mod:`bnbver.bounds.linear`), so the seeded start may be negative; the projection is only
the search domain: on mnist_fc 256x4 children it gave better bounds than free signs
(results/soundness.md).
Because every iterate is valid, the engine keeps, per (node, row), the best bound seen and the
parameters that gave it (the warm start of the node's children), and can stop at a deadline
with the best so far. The first iterate uses the given start (the parent's parameters, or
CROWN's slopes and ``beta = 0``), so the result is never looser than that start.

Shapes: B nodes, R rows, ``n_l`` ReLU layer sizes, ``n_in`` the input size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import cached_property

import torch
from torch import Tensor

from bnbver.bounds.adam import Adam
from bnbver.bounds.linear import (
    ErrorVectors,
    Linear,
    Relax,
    ReluRelax,
    backward,
    box_columns,
    concretize,
)
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
        const: (B, R) its constant: ``A x + const`` is below the function on the box.
    """

    lower: Tensor
    alpha: tuple[Tensor, ...]
    beta: tuple[Tensor | None, ...] | None
    coeffs: Tensor
    const: Tensor


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


def optimize(net: BoundedNetwork, start: int, lin0: Linear, lo: Tensor, hi: Tensor,
             relax: Sequence[Relax], errs: ErrorVectors, alpha0: Sequence[Tensor],
             beta0: Sequence[Tensor | None] | None, options: BoundsOptions,
             deadline: float | None = None) -> Optimized:
    """Maximise the lower bound of ``lin0`` (on the output of ``ops[start]``) over alpha, beta.

    Args:
        net: the prepared network.
        start: index of the op whose output ``lin0.a`` multiplies.
        lin0: the starting bound: (1 or B, R, n) coefficients, constant and allowance.
        lo: (B, n_in) box lower corners.
        hi: (B, n_in) box upper corners.
        relax: relaxations of the slots before ``start``.
        errs: the batch's error vectors.
        alpha0: per ReLU layer traversed, (B, R, n_l) starting slopes in [0, 1].
        beta0: per ReLU layer, (B, R, n_l) starting multipliers or None; None disables
            beta (alpha-CROWN).
        options: iterations and step sizes.
        deadline: absolute monotonic time after which no further step is taken.

    Returns:
        The best bounds and parameters.
    """
    if beta0 is not None and options.seed_beta:
        beta0 = list(beta0)
        backward(net, start, lin0, relax, errs, alpha0, beta0, seed_beta=True)
    alpha = [t.detach().clone().requires_grad_(True) for t in alpha0]
    beta = None if beta0 is None else [
        None if t is None else t.detach().clone().requires_grad_(True) for t in beta0]
    betas = [t for t in beta or [] if t is not None]
    groups: list[tuple[Sequence[Tensor], float]] = [(alpha, options.lr_alpha)]
    if betas:
        groups.append((betas, options.lr_beta))
    opt = Adam(groups, decay=options.lr_decay)
    best: _Best | None = None
    part = _Part(None, lin0, lo, hi, relax, errs)
    for it in range(options.iterations + 1):
        with torch.enable_grad():
            lin = backward(net, start, part.lin0, part.relax, part.errs, alpha, beta)
            lb, const = concretize(net, lin, part.lo, part.hi, part.columns)
        with torch.no_grad():
            best = _Best.first(lb, lin, const, alpha, beta) if best is None else best.update(
                lb, lin, const, alpha, beta, part.nodes)
        out_of_time = deadline is not None and time.monotonic() >= deadline
        if (it == options.iterations or bool((best.lower > 0).all()) or not lb.requires_grad
                or out_of_time):
            break
        _step(opt, lb, alpha, betas)
        keep = _still_open(lb)
        if keep is not None:
            part = part.take(keep)
            new = opt.take(keep)
            alpha = [new[id(t)] for t in alpha]
            beta = None if beta is None else [None if t is None else new[id(t)] for t in beta]
            betas = [t for t in beta or [] if t is not None]
    assert best is not None
    return Optimized(best.lower, tuple(best.alpha), None if beta is None else tuple(best.beta),
                     best.coeffs, best.const)


#: Share of the nodes still optimised that must be proven before they are cut out.
CUT_SHARE = 0.125


def _still_open(lb: Tensor) -> Tensor | None:
    """Return the positions of the nodes with an unproven row, when cutting out the others
    pays (at least :data:`CUT_SHARE` of them are proven, and some node is not), else None."""
    open_ = (lb.detach() <= 0).any(dim=1) | ~torch.isfinite(lb.detach()).all(dim=1)
    n_open = int(open_.sum())
    if n_open == 0 or (lb.shape[0] - n_open) < CUT_SHARE * lb.shape[0]:
        return None
    return open_.nonzero().flatten()


@dataclass(frozen=True, eq=False)
class _Part:
    """The nodes an optimisation still works on: ``nodes`` (positions in the whole batch;
    None: all of it) and their slices of everything with a node dimension."""

    nodes: Tensor | None
    lin0: Linear
    lo: Tensor
    hi: Tensor
    relax: Sequence[Relax]
    errs: ErrorVectors

    @cached_property
    def columns(self) -> Tensor:
        """:func:`~bnbver.bounds.linear.box_columns` of the part's boxes."""
        return box_columns(self.lo, self.hi)

    def take(self, keep: Tensor) -> _Part:
        """Return the part of the nodes at positions ``keep`` (of this part)."""
        b = self.lo.shape[0]

        def cut(t: Tensor) -> Tensor:
            return t[keep] if t.dim() > 0 and t.shape[0] == b else t

        return _Part(keep if self.nodes is None else self.nodes[keep],
                     Linear(cut(self.lin0.a), cut(self.lin0.bias), cut(self.lin0.err)),
                     self.lo[keep], self.hi[keep],
                     [cut_relax(rx, cut) for rx in self.relax],
                     [None if e is None else cut(e) for e in self.errs])


def cut_relax(rx: Relax, cut: Callable[[Tensor], Tensor]) -> Relax:
    """Return ``rx`` with every node-indexed tensor cut (a fresh memo)."""
    values = {f.name: getattr(rx, f.name) for f in fields(rx) if f.name != "memo"}
    return type(rx)(**{k: cut(v) if isinstance(v, Tensor) else v  # type: ignore[arg-type]
                       for k, v in values.items()})


@dataclass(frozen=True, eq=False)
class _Best:
    """The best bound per (node, row) over the iterates, and what produced it (detached)."""

    lower: Tensor
    coeffs: Tensor
    const: Tensor
    alpha: list[Tensor]
    beta: list[Tensor | None]

    @staticmethod
    def first(lb: Tensor, lin: Linear, const: Tensor, alpha: Sequence[Tensor],
              beta: Sequence[Tensor | None] | None) -> _Best:
        coeffs = lin.a.detach().expand(lb.shape[0], -1, -1).clone()
        return _Best(lb.detach().clone(), coeffs, const.detach().clone(),
                     [t.detach().clone() for t in alpha],
                     [None if t is None else t.detach().clone() for t in beta or []])

    def update(self, lb: Tensor, lin: Linear, const: Tensor, alpha: Sequence[Tensor],
               beta: Sequence[Tensor | None] | None, nodes: Tensor | None = None) -> _Best:
        """Return the best of this and an iterate of the nodes at ``nodes`` (None: all)."""
        if nodes is None:
            return self._update(lb, lin, const, alpha, beta)
        sub = _Best(self.lower[nodes], self.coeffs[nodes], self.const[nodes],
                    [t[nodes] for t in self.alpha],
                    [None if t is None else t[nodes] for t in self.beta])
        sub = sub._update(lb, lin, const, alpha, beta)

        def put(full: Tensor, part: Tensor) -> Tensor:
            return full.index_copy(0, nodes, part)

        return _Best(put(self.lower, sub.lower), put(self.coeffs, sub.coeffs),
                     put(self.const, sub.const),
                     [put(f, p) for f, p in zip(self.alpha, sub.alpha, strict=True)],
                     [None if f is None or p is None else put(f, p)
                      for f, p in zip(self.beta, sub.beta, strict=True)])

    def _update(self, lb: Tensor, lin: Linear, const: Tensor, alpha: Sequence[Tensor],
                beta: Sequence[Tensor | None] | None) -> _Best:
        better = lb.detach() > self.lower
        coeffs = lin.a.detach().expand(lb.shape[0], -1, -1)
        return _Best(
            torch.maximum(self.lower, lb.detach()),
            torch.where(better.unsqueeze(2), coeffs, self.coeffs),
            torch.where(better, const.detach(), self.const),
            [_keep_best(better, t, o) for t, o in zip(alpha, self.alpha, strict=True)],
            [None if t is None or o is None else _keep_best(better, t, o)
             for t, o in zip(beta or [], self.beta, strict=True)])


def _step(opt: Adam, lb: Tensor, alpha: Sequence[Tensor], betas: Sequence[Tensor]) -> None:
    """Take one Adam step on ``-sum lb`` and project alpha to [0, 1] and beta to >= 0."""
    with torch.enable_grad():
        torch.autograd.backward(-lb.where(torch.isfinite(lb), 0.0).sum())
    opt.step()
    with torch.no_grad():
        for t in alpha:
            t.clamp_(0.0, 1.0)
        for t in betas:
            t.clamp_(min=0.0)
