"""Verification results with a fixed schema.

Invariant (checked in :func:`make_violated`): a VIOLATED result carries a counterexample that
:func:`validate_counterexample` accepts, i.e. an input inside the box whose exact float64
forward pass lies in the unsafe set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from bnbver.network import Network
from bnbver.spec import Property
from bnbver.splits import SplitSet

#: Inputs may lie this far outside the box (absolute) and still count as inside: VNN-COMP
#: checks counterexamples with a similar tolerance and parsers round decimals.
BOX_TOL = 1e-9
#: An output may miss the unsafe set by this much (absolute) in float64 and still count.
#: Zero: we only report outputs that are really unsafe in float64.
OUTPUT_TOL = 0.0


class Status(Enum):
    """The answer of a verification; values are VNN-COMP result words."""

    HOLDS = "unsat"
    VIOLATED = "sat"
    UNKNOWN = "unknown"
    TIMEOUT = "timeout"
    ERROR = "error"


@dataclass(frozen=True, eq=False)
class Counterexample:
    """An input x (flat, float64), its float64 output y, and the disjunct it satisfies."""

    x: np.ndarray
    y: np.ndarray
    disjunct: int
    property_index: int = 0


@dataclass(frozen=True, eq=False)
class Leaf:
    """A closed leaf of the search: its region, splits, proven lower bound and method."""

    lower: np.ndarray
    upper: np.ndarray
    splits: SplitSet
    bound: float
    method: str
    property_index: int = 0


@dataclass(frozen=True)
class Certificate:
    """All closed leaves; together they cover every property's box.

    With input splitting, a child's box is first clipped to where its rows' linear bounds
    still allow a counterexample (``bnbver.bounds.clip``): then the leaves cover every point
    of the property's box that those bounds did not exclude, and a leaf closed by ``clip``
    is a box that they excluded entirely.
    """

    leaves: tuple[Leaf, ...] = ()


@dataclass
class Stats:
    """Counters and timings of one run (mutable while the run is going; owned by it)."""

    nodes: int = 0
    max_depth: int = 0
    bound_calls: int = 0
    lp_calls: int = 0
    milp_calls: int = 0
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    lower_bound_trace: list[tuple[float, float]] = field(default_factory=list)

    def add_time(self, phase: str, seconds: float) -> None:
        """Accumulate ``seconds`` under ``phase``."""
        self.seconds_by_phase[phase] = self.seconds_by_phase.get(phase, 0.0) + seconds


@dataclass(frozen=True, eq=False)
class Result:
    """The outcome of ``verify``: status plus evidence and statistics."""

    status: Status
    counterexample: Counterexample | None = None
    certificate: Certificate | None = None
    stats: Stats = field(default_factory=Stats)
    wall_time: float = 0.0
    message: str = ""
    #: (lower, upper, splits) of nodes left open by a search cut short on purpose.
    open_nodes: tuple[tuple[np.ndarray, np.ndarray, SplitSet], ...] = ()


def validate_counterexample(
    network: Network, prop: Property, x: np.ndarray
) -> Counterexample | None:
    """Return a Counterexample when x is in the box and its float64 output is unsafe, else None.

    The input is clipped into the box first when it lies within ``BOX_TOL`` of it, so that
    solver round-off on the faces does not lose a real counterexample.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != prop.box.size or not np.all(np.isfinite(x)):
        return None
    if not prop.box.contains(x, tol=BOX_TOL):
        return None
    x = np.clip(x, prop.box.lower, prop.box.upper)
    y = network.forward(x)
    k = prop.unsafe.violated_by(y, tol=OUTPUT_TOL)
    if k is None:
        return None
    return Counterexample(x=x, y=y, disjunct=k)


def format_vnncomp(result: Result) -> str:
    """Return the VNN-COMP result-file text: the status word, and for sat the assignment."""
    word = "unknown" if result.status is Status.ERROR else result.status.value
    if result.status is not Status.VIOLATED or result.counterexample is None:
        return word + "\n"
    cex = result.counterexample
    xs = "\n".join(f"(X_{i} {v!r})" for i, v in enumerate(cex.x.tolist()))
    ys = "\n".join(f"(Y_{i} {v!r})" for i, v in enumerate(np.atleast_1d(cex.y).tolist()))
    return f"sat\n({xs}\n{ys})\n"
