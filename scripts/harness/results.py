"""The resumable results CSV, cross-checks, the ratio table and the cactus plot.

Rows are appended and flushed one per (instance, solver) as runs finish, so a long study can
be stopped and resumed: a (instance, solver, timeout) row already in the file is not re-run.
Checks over all rows of an instance:

- *disagreement*: two solvers decided it differently (one sat, one unsat). One of them is
  wrong; it is a bug to chase, so the scripts print it loudly and exit non-zero;
- ``check`` per row: ``WRONG`` when a decided answer contradicts expected.csv, ``BADCEX`` when
  a sat answer's input fails the harness's own float64 re-check, ``ok`` otherwise.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from .solvers import DECIDED

FIELDS = ["instance", "solver", "answer", "seconds", "nodes", "lower_bound", "gap", "timeout",
          "expected", "check", "bounds_s", "build_s", "solve_s", "max_depth", "message"]

Row = dict[str, str]


class ResultStore:
    """The results CSV of one study (a stateful resource: an open file)."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and path.exists():
            path.unlink()
        _create_with_header(path)
        self.rows: list[Row] = read_rows(path)
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS, extrasaction="ignore")

    def done(self, instance: str, solver: str, timeout: float) -> bool:
        """Return True when this (instance, solver, timeout) already has a row."""
        return any(r["instance"] == instance and r["solver"] == solver
                   and _float(r["timeout"]) == timeout for r in self.rows)

    def append(self, row: Row) -> None:
        """Write one row and flush it to disk."""
        full = {k: row.get(k, "") for k in FIELDS}
        self._writer.writerow(full)
        self._file.flush()
        self.rows.append(full)

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _create_with_header(path: Path) -> None:
    """Create the CSV with its header unless it exists: one atomic create, so shards that
    start together (``--shard``) write the header once."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", newline="") as f:
        csv.DictWriter(f, fieldnames=FIELDS).writeheader()


def read_rows(path: Path) -> list[Row]:
    """Return the rows of a results CSV (missing columns read as ""; a repeated header line,
    left by an older race between shards, is skipped)."""
    with path.open(newline="") as f:
        rows = [{k: r.get(k) or "" for k in FIELDS} for r in csv.DictReader(f)]
    return [r for r in rows if r["instance"] != "instance"]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def fmt(value: float, digits: int = 4) -> str:
    """Format a number for the CSV ("" for nan)."""
    return "" if math.isnan(value) else f"{value:.{digits}g}"


def check_word(answer: str, expected: str, cex_ok: bool | None) -> str:
    """Return the row's check: WRONG (vs expected), BADCEX (sat without valid input), ok."""
    if answer == "sat" and cex_ok is False:
        return "BADCEX"
    if answer in DECIDED and expected in DECIDED and answer != expected:
        return "WRONG"
    return "ok"


def latest(rows: Iterable[Row]) -> dict[tuple[str, str], Row]:
    """Return the last row of every (instance, solver) pair."""
    return {(r["instance"], r["solver"]): r for r in rows}


def disagreements(rows: Iterable[Row]) -> dict[str, dict[str, str]]:
    """Return {instance: {solver: answer}} for instances decided both sat and unsat."""
    by_inst: dict[str, dict[str, str]] = {}
    for (inst, solver), r in latest(rows).items():
        if r["answer"] in DECIDED:
            by_inst.setdefault(inst, {})[solver] = r["answer"]
    return {i: a for i, a in by_inst.items() if len(set(a.values())) > 1}


def flagged(rows: Iterable[Row]) -> list[Row]:
    """Return the rows whose check is WRONG or BADCEX."""
    return [r for r in latest(rows).values() if r["check"] in ("WRONG", "BADCEX")]


def alarm_lines(rows: Sequence[Row]) -> list[str]:
    """Return loud lines for every disagreement and flagged row (empty when all agree)."""
    out = []
    for inst, answers in sorted(disagreements(rows).items()):
        pairs = ", ".join(f"{s}={a}" for s, a in sorted(answers.items()))
        out.append(f"!!! DISAGREEMENT on {inst}: {pairs} -- a solver is wrong; chase this bug")
    for r in flagged(rows):
        out.append(f"!!! {r['check']}: {r['solver']} on {r['instance']} answered {r['answer']}"
                   f" (expected {r['expected'] or '?'})")
    return out


def solvers_in(rows: Iterable[Row]) -> list[str]:
    """Return the solver names in order of first appearance."""
    return list(dict.fromkeys(r["solver"] for r in rows))


def ratios(rows: Sequence[Row], reference: str, other: str) -> dict[str, float]:
    """Return {instance: time(reference) / time(other)} over instances both decided."""
    last = latest(rows)
    out = {}
    for (inst, solver), r in last.items():
        ref = last.get((inst, reference))
        if solver != other or ref is None:
            continue
        if r["answer"] in DECIDED and ref["answer"] in DECIDED:
            out[inst] = _float(ref["seconds"]) / max(_float(r["seconds"]), 1e-9)
    return out


def median(values: Iterable[float]) -> float:
    """Return the median (nan when empty)."""
    vals = [v for v in values if not math.isnan(v)]
    return statistics.median(vals) if vals else math.nan
