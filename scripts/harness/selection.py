"""Which instances a heuristic study runs on (``compare_branching.py --select``).

A heuristic only matters where the search branches and can finish: an instance that the
root bounds prove, or that the falsifier breaks before any branching, costs every heuristic
the same (one node or none), and one that every heuristic times out on ranks none. Evenly
spaced picks from a suite mix all three (``--limit 2`` once picked a root-proved instance and
others that every heuristic timed out on). The selections:

- ``spread``: evenly spaced over the candidates (the old behaviour; no filter);
- ``root-gap`` (default): drop the instances decided before branching (the falsifier finds
  a counterexample, or the root bound of the margin is > 0, with the split kind's own
  root: alpha-CROWN for ReLU splits, the BaB's root for input splits), then keep the ones
  with the smallest root gap ``-lower bound`` (the most likely to be decided in time);
- ``band:LO:HI``: run the reference heuristic on every candidate (these are its rows of
  the study, so nothing is run twice) and keep the instances it decides in LO..HI seconds
  with at least 2 nodes, evenly spaced over that time range. This measures difficulty
  directly, but with the reference's eyes: an instance that only another heuristic
  decides is not in it.

``--limit N`` applies per suite after the filter. Every selection returns a note per kept
instance (its gap, or the reference's time and nodes) for the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bnbver.attack import falsify
from bnbver.bab.bound_sources import node_bounds

from .errors import ScriptError
from .instances import InstanceRef, LoadedInstance, load, spread
from .results import Row
from .solvers import DECIDED

SELECTIONS = ("spread", "root-gap", "band:LO:HI")


@dataclass(frozen=True)
class SelectionSpec:
    """A parsed ``--select`` value (``lo``/``hi``: seconds, for ``band``)."""

    kind: str
    lo: float = 0.0
    hi: float = math.inf

    def describe(self, reference: str) -> str:
        """Return one sentence saying what the selection keeps."""
        if self.kind == "spread":
            return "spread: evenly spaced over the candidates, no filter"
        if self.kind == "root-gap":
            return ("root-gap: instances not decided before branching (no counterexample from "
                    "the falsifier, root bound <= 0), smallest root gap first")
        return (f"band:{self.lo:g}:{self.hi:g}: instances that {reference} decides in "
                f"{self.lo:g}-{self.hi:g} s with at least 2 nodes, evenly spaced by its time")


@dataclass(frozen=True)
class Selected:
    """The instances kept, with a note per instance and how many candidates there were."""

    refs: list[InstanceRef]
    notes: dict[str, str] = field(default_factory=dict)
    candidates: int = 0


def parse_selection(text: str) -> SelectionSpec:
    """Parse ``spread``, ``root-gap`` or ``band:LO:HI``.

    Raises:
        ScriptError: anything else (naming ``--select``).
    """
    if text in ("spread", "root-gap"):
        return SelectionSpec(text)
    bits = text.split(":")
    if bits[0] == "band" and len(bits) == 3:
        try:
            lo, hi = float(bits[1]), float(bits[2])
        except ValueError:
            lo, hi = math.nan, math.nan
        if 0 <= lo < hi:
            return SelectionSpec("band", lo, hi)
    raise ScriptError(f"--select: {text!r} is not one of {', '.join(SELECTIONS)} "
                      "(band needs 0 <= LO < HI seconds)")


def suite_of(ref: InstanceRef) -> str:
    """Return the suite part of an instance name (``suite/net/prop``)."""
    return ref.name.split("/", 1)[0]


def per_suite(refs: Sequence[InstanceRef], limit: int | None,
              pick: Callable[[list[InstanceRef], int | None], list[InstanceRef]],
              ) -> list[InstanceRef]:
    """Apply ``pick(refs of one suite, limit)`` to every suite, keeping the suites' order."""
    out: list[InstanceRef] = []
    for suite in dict.fromkeys(suite_of(r) for r in refs):
        out += pick([r for r in refs if suite_of(r) == suite], limit)
    return out


# ------------------------------------------------------------------------------ root gap
def root_gap(inst: LoadedInstance, kind: str) -> tuple[float, str]:
    """Return (gap, "") for an instance the root leaves open, or (nan, why) when decided.

    The gap is ``max over properties of -(root lower bound of the margin)``, with the root
    of a ``kind`` search (alpha-CROWN for ReLU splits, the BaB's own for input splits).
    """
    gap = -math.inf
    for prop in inst.props:
        if falsify(inst.network, prop) is not None:
            return math.nan, "sat by the falsifier"
        nb = node_bounds(inst.network, prop, "alpha" if kind == "relu" else "auto")
        if nb.margin_lower <= 0:
            gap = max(gap, -nb.margin_lower)
    if gap == -math.inf:
        return math.nan, "unsat at the root"
    return gap, ""


def select_root_gap(pool: Sequence[InstanceRef], kind: str, limit: int | None,
                    measure: Callable[[LoadedInstance, str], tuple[float, str]] = root_gap,
                    loader: Callable[[InstanceRef], LoadedInstance] = load) -> Selected:
    """Keep the instances the root leaves open, smallest gap first (``limit`` per suite)."""
    gaps: dict[str, float] = {}
    for ref in pool:
        gap, _ = measure(loader(ref), kind)
        if not math.isnan(gap):
            gaps[ref.name] = gap

    def pick(refs: list[InstanceRef], n: int | None) -> list[InstanceRef]:
        open_ = sorted((r for r in refs if r.name in gaps), key=lambda r: gaps[r.name])
        return open_[:n] if n is not None else open_

    kept = per_suite(pool, limit, pick)
    return Selected(kept, {r.name: f"root gap {gaps[r.name]:.4g}" for r in kept}, len(pool))


# ---------------------------------------------------------------------------------- band
def select_band(pool: Sequence[InstanceRef], reference_rows: Mapping[str, Row],
                spec: SelectionSpec, limit: int | None) -> Selected:
    """Keep the instances the reference decided in ``spec.lo..spec.hi`` s with >= 2 nodes.

    Args:
        pool: the candidates.
        reference_rows: {instance: the reference's row} (the study's calibration runs).
        spec: the band.
        limit: per suite, at most this many, evenly spaced over the reference's times.
    """
    times: dict[str, float] = {}
    for ref in pool:
        row = reference_rows.get(ref.name)
        if row is None or row["answer"] not in DECIDED:
            continue
        seconds, nodes = _float(row["seconds"]), _float(row.get("nodes", ""))
        if spec.lo <= seconds <= spec.hi and nodes >= 2:
            times[ref.name] = seconds

    def pick(refs: list[InstanceRef], n: int | None) -> list[InstanceRef]:
        return spread(sorted((r for r in refs if r.name in times),
                             key=lambda r: times[r.name]), n)

    kept = per_suite(pool, limit, pick)
    notes = {r.name: f"reference {times[r.name]:.3g} s, "
             f"{reference_rows[r.name].get('nodes', '')} nodes" for r in kept}
    return Selected(kept, notes, len(pool))


def select_spread(pool: Sequence[InstanceRef], limit: int | None) -> Selected:
    """Keep ``limit`` per suite, evenly spaced (no filter)."""
    return Selected(per_suite(pool, limit, spread), {}, len(pool))


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


__all__ = ["SELECTIONS", "Selected", "SelectionSpec", "parse_selection", "root_gap",
           "select_band", "select_root_gap", "select_spread"]
