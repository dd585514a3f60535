"""Branching heuristics: score -> mask -> argmax, one function per heuristic.

A heuristic is a function ``score(ctx: BranchContext) -> list[Tensor]``:
- for ReLU splits it returns one (B, n_l) score tensor per ReLU layer (higher = branch here);
  the framework masks every neuron that is split already or stable in the node and takes
  the best remaining neuron of each node;
- for input splits it returns one (B, n_in) tensor; the framework masks zero-width dimensions.

Register a function with ``@register("name", kind="relu"|"input")``; it is then available as
``--branching name`` and in every comparison script. Shapes: B nodes, n_l neurons of ReLU layer
l, n_in inputs.

Heuristics that live outside bnbver (:func:`resolve`):
- ``--branching module:function`` or ``--branching path/to/file.py:function``: the module is
  imported (its ``@register`` decorators run) and the function must be one it registered;
- an installed package lists its modules in the entry-point group ``bnbver.heuristics``
  (``[project.entry-points."bnbver.heuristics"] mine = "mypkg.heuristics"``); they are
  imported the first time a name is not found, so ``--branching name`` works with no flag;
- ``scripts/compare_branching.py --import module_or_path`` imports one for a study.
Names resolve in every process (joblib workers re-import), so plug-ins work with ``--jobs``.

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

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
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
    """A registered heuristic.

    Attributes:
        kind: "relu" or "input".
        score: the scoring function.
        relu_coeffs: it reads ``BranchContext.relu_coeffs`` (the bounds engine then computes
            them: one extra backward pass per bound call).
        lookahead: it calls ``BranchContext.evaluate`` (children bounded on request).
    """

    kind: str
    score: BranchingHeuristic
    relu_coeffs: bool = False
    lookahead: bool = False


REGISTRY: dict[str, Registered] = {}

#: Entry-point group through which an installed package registers heuristics: each entry
#: point names a module (or ``module:attr``) whose import runs ``@register``.
ENTRY_POINT_GROUP = "bnbver.heuristics"


def register(name: str, kind: str, *, relu_coeffs: bool = False, lookahead: bool = False
             ) -> Callable[[BranchingHeuristic], BranchingHeuristic]:
    """Register a scoring function under ``name`` for splits of ``kind``.

    Args:
        name: the name for ``--branching`` (no ``:``, which marks ``module:function``).
        kind: "relu" or "input".
        relu_coeffs: the function reads ``ctx.relu_coeffs`` (see :class:`Registered`).
        lookahead: the function calls ``ctx.evaluate``.

    Raises:
        ValueError: bad kind or name.
    """
    if kind not in ("relu", "input"):
        raise ValueError(f"kind must be 'relu' or 'input', got {kind!r}")
    if not name or ":" in name:
        raise ValueError(f"heuristic name must be non-empty without ':', got {name!r}")

    def wrap(fn: BranchingHeuristic) -> BranchingHeuristic:
        REGISTRY[name] = Registered(kind, fn, relu_coeffs, lookahead)
        return fn

    return wrap


def import_heuristics(target: str) -> list[str]:
    """Import a module (dotted name) or a Python file (path ending in ``.py``) so that its
    ``@register`` decorators run; return the names it registered (sorted).

    A file is imported under a module name derived from its resolved path, once per process.

    Raises:
        InputError: the module or file cannot be found or fails to import.
    """
    before = dict(REGISTRY)
    try:
        if target.endswith(".py") or "/" in target or "\\" in target:
            _import_file(Path(target))
        else:
            _import_module(target)
    except InputError:
        raise
    except Exception as exc:  # any import failure of user code is bad input here
        raise InputError(target, f"cannot import heuristics: {type(exc).__name__}: {exc}"
                         ) from None
    return sorted(n for n, r in REGISTRY.items() if before.get(n) is not r)


def _import_module(target: str) -> None:
    """Import a dotted module; a top-level module in the working directory is found too
    (the ``bnbver`` console script does not put the working directory on ``sys.path``)."""
    top = target.split(".")[0]
    cwd = str(Path.cwd())
    if importlib.util.find_spec(top) is None and cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.import_module(target)


def _import_file(path: Path) -> None:
    """Import a Python file as a module named after its resolved path (once)."""
    if not path.is_file():
        raise InputError(str(path), "no such Python file")
    resolved = path.resolve()
    name = _plugin_name(resolved)
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise InputError(str(path), "not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def load_entry_points() -> list[str]:
    """Import every module of the ``bnbver.heuristics`` entry-point group; return the names
    they registered (sorted).

    Raises:
        InputError: an entry point fails to load (naming the entry point and its package).
    """
    before = dict(REGISTRY)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in is reported, not a crash
            raise InputError(f"entry point {ep.name} = {ep.value}",
                             f"cannot load ({ENTRY_POINT_GROUP}): {type(exc).__name__}: {exc}"
                             ) from None
    return sorted(n for n, r in REGISTRY.items() if before.get(n) is not r)


def resolve(name: str) -> Registered:
    """Return the heuristic called ``name``, importing its plug-in when needed.

    ``name`` is a registered name, a name that an entry point of ``bnbver.heuristics``
    registers, or ``module:function`` / ``path/file.py:function`` naming a function that
    its module registers with ``@register``.

    Raises:
        InputError: (naming ``--branching``) nothing of that name can be found.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        return _resolve_reference(name)
    load_entry_points()
    if name in REGISTRY:
        return REGISTRY[name]
    raise InputError("--branching", f"unknown branching heuristic {name!r}; known: "
                     f"{sorted(REGISTRY)} (or module:function, path/file.py:function)")


def _resolve_reference(name: str) -> Registered:
    """Resolve ``module:function`` (or ``file.py:function``) to its registration."""
    target, _, attr = name.rpartition(":")
    if not target or not attr:
        raise InputError("--branching", f"{name!r}: expected module:function")
    import_heuristics(target)
    module = sys.modules.get(target) or _file_module(target)
    fn = getattr(module, attr, None)
    if fn is None:
        raise InputError("--branching", f"{target} has no attribute {attr!r}")
    for entry in REGISTRY.values():
        if entry.score is fn:
            return entry
    raise InputError("--branching", f"{name} is not a registered heuristic: decorate it with "
                     "@register('name', kind='relu'|'input') (bnbver.bab.branching)")


def _plugin_name(path: Path) -> str:
    """Return the module name under which a plug-in file is imported."""
    return "bnbver_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path))


def _file_module(target: str) -> Any:
    return sys.modules.get(_plugin_name(Path(target).resolve()))


def known_heuristics() -> dict[str, Registered]:
    """Return every heuristic: the registry after loading the entry-point plug-ins."""
    load_entry_points()
    return dict(REGISTRY)


def uses_relu_coeffs(name: str | None) -> bool:
    """Return whether heuristic ``name`` reads ``relu_coeffs`` (False for unknown names)."""
    try:
        return resolve(name).relu_coeffs if name else False
    except InputError:
        return False


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
    """Raise InputError unless ``name`` resolves to a heuristic for splits of ``kind``."""
    entry = resolve(name)
    if entry.kind != kind:
        raise InputError("--branching", f"heuristic {name!r} branches on "
                         f"{entry.kind}, but the search splits {kind}")


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
    entry = resolve(name)
    ctx = bounder.branch_context(parents, needs_lookahead=entry.lookahead)
    scores = entry.score(ctx)
    return pick_relu(ctx, scores) if kind == "relu" else pick_input(ctx, scores)


# ----------------------------------------------------------------------------------- ReLU


@register("widest", kind="relu")
def widest(ctx: BranchContext) -> Scores:
    """Score by the triangle relaxation's area: -l u / (u - l)."""
    return [(-lo.clamp(max=0) * up.clamp(min=0)) / (up - lo).clamp(min=1e-12)
            for lo, up in zip(ctx.pre_lower, ctx.pre_upper, strict=True)]


@register("babsr", kind="relu", relu_coeffs=True)
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


@register("fsb", kind="relu", relu_coeffs=True, lookahead=True)
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
