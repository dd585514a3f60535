"""Branching heuristics: score -> mask -> argmax, one function per heuristic.

A heuristic is a function ``score(ctx: BranchContext) -> list[Tensor]``:
- for ReLU splits it returns one (B, n_l) score tensor per ReLU layer (higher = branch here);
  the framework masks every neuron that is split already or stable in the node and takes
  the best remaining neuron of each node;
- for input splits it returns one (B, n_in) tensor; the framework masks zero-width dimensions.

Register a function with ``@register("name", kind="relu"|"input")``; it is then available as
``--branching name`` and in every comparison script. Shapes: B nodes, n_l neurons of ReLU layer
l, n_in inputs.

Scores (Bunel et al. 2020 for BaBSR; De Palma et al. 2021 for FSB):
- widest: the area of the triangle relaxation, ``-l u / (u - l)``: the bigger, the looser.
- babsr: ``|min(lambda, 0) * l u/(u-l) + bias term|`` with lambda the coefficient of the
  ReLU's output in the node's linear lower bound: an estimate of how much fixing the neuron
  improves the bound.
- fsb: the top-k BaBSR candidates of each node, each scored by actually bounding its two
  children with cheap CROWN bounds; the candidate whose worse child is best wins.
- random: uniform scores (a baseline).
- input "widest": the widest box side relative to the root box; input "smear": the width
  times the magnitude of the input's coefficient in the worst row's linear bound; input
  "gradient-smear" (the default; ReluVal's smear, Wang et al. 2018): the width times the
  largest magnitude of the worst row's gradient over the box (interval bounds,
  ``bnbver.bounds.gradient``). The coefficient of a linear relaxation is a secant: along a
  dimension where the row is V-shaped it is near 0, and "smear" never splits there, while
  one split there can close both children (ACAS Xu 2_4 prop 1: 11,511 nodes with smear,
  101 with gradient-smear; results/README.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bnbver.errors import InputError

Scores = list[torch.Tensor]


@dataclass(frozen=True, eq=False)
class BranchContext:
    """What a heuristic may look at, for a batch of B parent nodes (tensors batch-first).

    Attributes:
        lower, upper: (B, n_in) node boxes; root_width: (n_in,) root box widths.
        pre_lower, pre_upper: per ReLU layer (B, n_l) pre-activation bounds.
        splits: per ReLU layer (B, n_l) int8 split state (+1, -1, 0 = free).
        relu_coeffs: per ReLU layer (B, n_l) coefficient of the ReLU output in the node's
            linear lower bound of the worst row (None when the engine does not provide it).
        pre_bias: per ReLU layer (n_l,) bias of the affine layer feeding it.
        input_coeffs: (B, n_in) coefficients of the worst row's linear lower bound w.r.t. x.
        evaluate: for look-ahead heuristics: given (node index, layer, unit) candidates,
            return (lb_inactive, lb_active) tensors of shape (n_candidates,).
        generator: torch random generator for stochastic heuristics.
        gradient: returns ``(g_lo, g_hi)`` (B, n_in), interval bounds on the worst row's
            gradient w.r.t. x over each box (``bnbver.bounds.gradient``), computed on call;
            None when the network is not a dense ReLU network.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    root_width: torch.Tensor
    pre_lower: tuple[torch.Tensor, ...] = ()
    pre_upper: tuple[torch.Tensor, ...] = ()
    splits: tuple[torch.Tensor, ...] = ()
    relu_coeffs: tuple[torch.Tensor, ...] | None = None
    pre_bias: tuple[torch.Tensor, ...] = ()
    input_coeffs: torch.Tensor | None = None
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    generator: torch.Generator | None = None
    gradient: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None


class BranchingHeuristic(Protocol):
    """A scoring function; see the module docstring."""

    def __call__(self, ctx: BranchContext) -> Scores: ...


@dataclass(frozen=True)
class Registered:
    """A registered heuristic: its kind ("relu" or "input") and scoring function."""

    kind: str
    score: BranchingHeuristic


REGISTRY: dict[str, Registered] = {}


def register(name: str, kind: str) -> Callable[[BranchingHeuristic], BranchingHeuristic]:
    """Register a scoring function under ``name`` for splits of ``kind``."""
    if kind not in ("relu", "input"):
        raise ValueError(f"kind must be 'relu' or 'input', got {kind!r}")

    def wrap(fn: BranchingHeuristic) -> BranchingHeuristic:
        REGISTRY[name] = Registered(kind, fn)
        return fn

    return wrap


def default_heuristic(kind: str) -> str:
    """Return the default heuristic name for a split kind."""
    return "gradient-smear" if kind == "input" else "babsr"


def unstable_masks(ctx: BranchContext) -> list[torch.Tensor]:
    """Return per layer (B, n_l) bool: free neurons whose bounds straddle zero."""
    return [(s == 0) & (lo < 0) & (up > 0)
            for s, lo, up in zip(ctx.splits, ctx.pre_lower, ctx.pre_upper, strict=True)]


def pick_relu(ctx: BranchContext, scores: Scores) -> list[tuple[int, int] | None]:
    """Return, per node, the (layer, unit) with the best masked score (None if none is free)."""
    masks = unstable_masks(ctx)
    flat = torch.cat([torch.where(m, s.to(torch.float64), torch.tensor(-torch.inf,
                      dtype=torch.float64)) for s, m in zip(scores, masks, strict=True)], dim=1)
    any_free = torch.cat(masks, dim=1).any(dim=1)
    best = flat.argmax(dim=1)
    offsets = torch.tensor([0, *[m.shape[1] for m in masks]]).cumsum(0)
    out: list[tuple[int, int] | None] = []
    for b, idx in enumerate(best.tolist()):
        if not bool(any_free[b]):
            out.append(None)
            continue
        layer = int(torch.searchsorted(offsets, torch.tensor(idx), right=True)) - 1
        out.append((layer, idx - int(offsets[layer])))
    return out


def pick_input(ctx: BranchContext, scores: Scores) -> list[int]:
    """Return, per node, the input dimension with the best score among non-degenerate ones."""
    width = ctx.upper - ctx.lower
    s = torch.where(width > 0, scores[0].to(width.dtype), torch.tensor(-torch.inf,
                    dtype=width.dtype))
    return s.argmax(dim=1).tolist()


def validate_heuristic(name: str, kind: str) -> None:
    """Raise InputError unless ``name`` is a registered heuristic for splits of ``kind``."""
    if name not in REGISTRY:
        raise InputError("--branching",
                         f"unknown branching heuristic {name!r}; known: {sorted(REGISTRY)}")
    if REGISTRY[name].kind != kind:
        raise InputError("--branching", f"heuristic {name!r} branches on "
                         f"{REGISTRY[name].kind}, but the search splits {kind}")


def choose_branches(bounder: Any, parents: list[Any], kind: str,
                    name: str) -> list[Any]:
    """Score the parents with heuristic ``name`` and return one decision per parent.

    Args:
        bounder: provides ``branch_context(parents) -> BranchContext``.
        parents: the nodes to branch.
        kind: "relu" or "input".
        name: registry name.

    Raises:
        InputError: unknown heuristic, or one of the other kind.
    """
    validate_heuristic(name, kind)
    entry = REGISTRY[name]
    ctx = bounder.branch_context(parents, needs_lookahead=(name == "fsb"))
    scores = entry.score(ctx)
    return pick_relu(ctx, scores) if kind == "relu" else pick_input(ctx, scores)


# ----------------------------------------------------------------------------------- ReLU


@register("widest", kind="relu")
def widest(ctx: BranchContext) -> Scores:
    """Score by the triangle relaxation's area: -l u / (u - l)."""
    return [(-lo.clamp(max=0) * up.clamp(min=0)) / (up - lo).clamp(min=1e-12)
            for lo, up in zip(ctx.pre_lower, ctx.pre_upper, strict=True)]


@register("babsr", kind="relu")
def babsr(ctx: BranchContext) -> Scores:
    """BaBSR: the bound improvement estimated from the ReLU's coefficient (Bunel et al.)."""
    if ctx.relu_coeffs is None:
        return widest(ctx)
    out = []
    for lo, up, lam, bias in zip(ctx.pre_lower, ctx.pre_upper, ctx.relu_coeffs, ctx.pre_bias,
                                 strict=True):
        lo_, up_ = lo.clamp(max=0), up.clamp(min=0)
        slope = up_ / (up_ - lo_).clamp(min=1e-12)
        intercept = lam.clamp(max=0) * (-slope * lo_)
        b = bias.unsqueeze(0) * lam
        out.append((torch.minimum(b * (slope - 1), b * slope) + intercept).abs()
                   + 1e-6 * widest(BranchContext(ctx.lower, ctx.upper, ctx.root_width,
                                                 (lo,), (up,)))[0])
    return out


@register("fsb", kind="relu")
def fsb(ctx: BranchContext, top_k: int = 3) -> Scores:
    """Filtered smart branching: look ahead at the top-k BaBSR candidates of each node."""
    base = babsr(ctx)
    if ctx.evaluate is None:
        return base
    masks = unstable_masks(ctx)
    flat = torch.cat([torch.where(m, s, torch.tensor(-torch.inf, dtype=s.dtype))
                      for s, m in zip(base, masks, strict=True)], dim=1)
    k = min(top_k, flat.shape[1])
    vals, idx = flat.topk(k, dim=1)
    node = torch.arange(flat.shape[0]).unsqueeze(1).expand(-1, k)
    ok = torch.isfinite(vals)
    cand = torch.stack([node[ok], idx[ok]], dim=1)
    lb_off, lb_on = ctx.evaluate(cand)
    look = torch.full_like(flat, -torch.inf)
    look[cand[:, 0], cand[:, 1]] = torch.minimum(lb_off, lb_on).to(look.dtype)
    sizes = [m.shape[1] for m in masks]
    return list(torch.split(look, sizes, dim=1))


@register("random", kind="relu")
def random_relu(ctx: BranchContext) -> Scores:
    """Uniform random scores (a baseline for heuristic studies)."""
    return [torch.rand(lo.shape, generator=ctx.generator, dtype=torch.float64)
            for lo in ctx.pre_lower]


# ---------------------------------------------------------------------------------- input


@register("widest-input", kind="input")
def widest_input(ctx: BranchContext) -> Scores:
    """Score each input side by its width relative to the root box."""
    return [(ctx.upper - ctx.lower) / ctx.root_width.clamp(min=1e-12)]


#: smear only considers sides at least this fraction of the node's widest (relative) side:
#: the coefficient of a side can stay large after the side is tiny, and without this cap the
#: search keeps bisecting it while the looseness comes from the other sides.
SMEAR_ASPECT = 1.0 / 16


@register("smear", kind="input")
def smear(ctx: BranchContext) -> Scores:
    """Score each input by width times |coefficient| in the worst row's linear bound."""
    if ctx.input_coeffs is None:
        return widest_input(ctx)
    width = ctx.upper - ctx.lower
    rel = width / ctx.root_width.clamp(min=1e-12)
    eligible = rel >= SMEAR_ASPECT * rel.max(dim=1, keepdim=True).values
    score = ctx.input_coeffs.abs() * width + 1e-9 * rel
    return [torch.where(eligible, score, torch.zeros_like(score))]


@register("gradient-smear", kind="input")
def gradient_smear(ctx: BranchContext) -> Scores:
    """ReluVal's smear: width times the largest |d row / dx_j| over the box.

    The gradient interval sees dimensions along which the worst row is steep but not
    monotone, where the relaxation's coefficient (``smear``) is near 0.
    """
    if ctx.gradient is None:
        return smear(ctx)
    g_lo, g_hi = ctx.gradient()
    width = ctx.upper - ctx.lower
    rel = width / ctx.root_width.clamp(min=1e-12)
    return [torch.maximum(g_lo.abs(), g_hi.abs()) * width + 1e-9 * rel]
