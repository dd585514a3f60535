"""Verification results with a fixed schema.

Invariant (checked in :func:`make_violated`): a VIOLATED result carries a counterexample that
:func:`validate_counterexample` accepts, i.e. an input inside the box whose exact float64
forward pass lies in the unsafe set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.check.format import ProofFile
from bnbver.errors import InputError
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

    @property
    def reached_class(self) -> int:
        """Return the class the counterexample reaches: the index of the largest output."""
        return int(np.argmax(np.atleast_1d(self.y)))


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

    A run with certificates on (``BabOptions.certify``) also carries ``proof``: the search
    trees with the dual proof of every leaf, which :meth:`save` writes and ``bnbver check``
    (:mod:`bnbver.check`) re-verifies independently.
    """

    leaves: tuple[Leaf, ...] = ()
    proof: ProofFile | None = None

    def save(self, path: str | Path) -> None:
        """Write the proof to ``path`` (an ``.npz`` file).

        Raises:
            InputError: the run kept no proof (certificates were off).
        """
        if self.proof is None:
            raise InputError(str(path), "this result has no proof: run with certificates on "
                             "(--certificate FILE, or certify='on')")
        self.proof.save(path)


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
    #: named event counts of optional parts of the search (e.g. nogoods learned / closed)
    counts: dict[str, int] = field(default_factory=dict)

    def add_time(self, phase: str, seconds: float) -> None:
        """Accumulate ``seconds`` under ``phase``."""
        self.seconds_by_phase[phase] = self.seconds_by_phase.get(phase, 0.0) + seconds


@dataclass(frozen=True, eq=False)
class Result:
    """The outcome of ``verify``: status plus evidence and statistics.

    Attributes:
        status: the answer.
        counterexample: the float64-checked counterexample of a VIOLATED result.
        certificate: the closed leaves of a HOLDS result.
        stats: counters and timings.
        wall_time: seconds of the whole run.
        message: a human note (how the answer was found, why there is none).
        open_nodes: (lower, upper, splits) of nodes left open by a search cut short on
            purpose (parallel subtrees).
        lower_bound: a proven lower bound of the smallest unsafe margin over every property's
            box (> 0 proves the property; the best global bound when the search timed out);
            None when no search bounded every property (e.g. the falsifier answered).
        disjunct_bounds: one tuple per property that the search bounded, in order: a proven
            lower bound of each disjunct's margin over that property's box (a disjunct with a
            positive bound is excluded everywhere).
    """

    status: Status
    counterexample: Counterexample | None = None
    certificate: Certificate | None = None
    stats: Stats = field(default_factory=Stats)
    wall_time: float = 0.0
    message: str = ""
    open_nodes: tuple[tuple[np.ndarray, np.ndarray, SplitSet], ...] = ()
    lower_bound: float | None = None
    disjunct_bounds: tuple[tuple[float, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values (see :func:`result_to_dict`)."""
        return result_to_dict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Result:
        """Rebuild a result from :meth:`to_dict` output (see :func:`result_from_dict`)."""
        return result_from_dict(data)


def validate_counterexample(
    network: Network, prop: Property, x: np.ndarray
) -> Counterexample | None:
    """Return a Counterexample when x is in the box and its exact output is unsafe, else None.

    The input is clipped into the box first when it lies within ``BOX_TOL`` of it, so that
    solver round-off on the faces does not lose a real counterexample. The output is the
    float64 forward pass with a rigorous error bound (``Network.forward_enclosure``): x counts
    only when every output within that bound is unsafe, or, when that is inconclusive, when
    the exact output in rational arithmetic (``Network.forward_exact``) is unsafe. Either way
    the network in real arithmetic is unsafe at x however float64 rounded.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape[0] != prop.box.size or not np.all(np.isfinite(x)):
        return None
    if not prop.box.contains(x, tol=BOX_TOL):
        return None
    x = np.clip(x, prop.box.lower, prop.box.upper)
    y, err = network.forward_enclosure(x)
    k = prop.unsafe.surely_violated_by(y, err + OUTPUT_TOL)
    if k is None and prop.unsafe.violated_by(y) is not None:
        # float64 says unsafe but the enclosure is inconclusive (a margin near 0): decide
        # in rational arithmetic when the network is small enough.
        exact = network.forward_exact(x)
        k = None if exact is None else prop.unsafe.exactly_violated_by(exact)
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


def _num(v: float) -> float | str:
    """Return a float, or "inf" / "-inf" / "nan" (JSON has no infinities)."""
    v = float(v)
    return v if math.isfinite(v) else str(v)


def _float(v: float | str) -> float:
    return float(v)


def result_to_dict(result: Result) -> dict[str, Any]:
    """Return ``result`` as a dict of JSON values (``json.dumps`` writes it as is).

    Floats stay exact (``json`` writes ``repr``); infinities become the strings "inf" and
    "-inf". The certificate is written only as its leaf count (``certificate_leaves``) and
    the open nodes of a split-off search only as their count: :func:`result_from_dict`
    restores every other field exactly.
    """
    cex = result.counterexample
    s = result.stats
    return {
        "status": result.status.value,
        "wall_time": result.wall_time,
        "message": result.message,
        "lower_bound": None if result.lower_bound is None else _num(result.lower_bound),
        "disjunct_bounds": [[_num(v) for v in row] for row in result.disjunct_bounds],
        "counterexample": None if cex is None else {
            "x": [float(v) for v in cex.x], "y": [float(v) for v in np.atleast_1d(cex.y)],
            "disjunct": cex.disjunct, "property_index": cex.property_index,
            "class": cex.reached_class},
        "certificate_leaves": (None if result.certificate is None
                               else len(result.certificate.leaves)),
        "open_nodes": len(result.open_nodes),
        "stats": {"nodes": s.nodes, "max_depth": s.max_depth, "bound_calls": s.bound_calls,
                  "lp_calls": s.lp_calls, "milp_calls": s.milp_calls,
                  "seconds_by_phase": dict(s.seconds_by_phase),
                  "lower_bound_trace": [[t, _num(v)] for t, v in s.lower_bound_trace],
                  "counts": dict(s.counts)},
    }


def result_from_dict(data: dict[str, Any]) -> Result:
    """Rebuild a :class:`Result` from :func:`result_to_dict` output.

    The certificate comes back as None (the dict holds only its leaf count) and
    ``open_nodes`` as empty.

    Raises:
        InputError: a field is missing or has the wrong type.
    """
    try:
        cex_data = data["counterexample"]
        cex = None if cex_data is None else Counterexample(
            np.asarray(cex_data["x"], dtype=np.float64),
            np.asarray(cex_data["y"], dtype=np.float64),
            int(cex_data["disjunct"]), int(cex_data["property_index"]))
        st = data["stats"]
        stats = Stats(int(st["nodes"]), int(st["max_depth"]), int(st["bound_calls"]),
                      int(st["lp_calls"]), int(st["milp_calls"]),
                      {str(k): float(v) for k, v in st["seconds_by_phase"].items()},
                      [(float(t), _float(v)) for t, v in st["lower_bound_trace"]],
                      {str(k): int(v) for k, v in st.get("counts", {}).items()})
        lb = data["lower_bound"]
        return Result(
            Status(data["status"]), cex, None, stats, float(data["wall_time"]),
            str(data["message"]), (), None if lb is None else _float(lb),
            tuple(tuple(_float(v) for v in row) for row in data["disjunct_bounds"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("result", f"not a bnbver result dict: {type(exc).__name__} "
                         f"{exc}") from None
