"""The study loop shared by the comparison scripts: instances x solvers -> CSV rows.

A warm-up run first pays torch's one-off start-up costs, so the first instance's first
solver is not charged for them. For each instance (loaded once) and each named runner: skip
the pair when the CSV already has it (resume) or when the runner does not apply to it (answer
``n/a``); otherwise run it in this process under the timeout, re-check a sat answer's input
in float64, append and flush the row, and print a progress line. After each instance its
rows are cross-checked and any disagreement is printed at once, loudly.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bnbver.driver import verify
from bnbver.progress import Progress
from bnbver.result import validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet

from .instances import InstanceRef, LoadedInstance, load, tiny_network
from .results import ResultStore, Row, alarm_lines, check_word, fmt
from .solvers import Outcome

log = logging.getLogger(__name__)

Runner = Callable[[LoadedInstance, float], Outcome]

#: A runner answers this for an instance it does not apply to (e.g. an input-split heuristic
#: on a 784-input network): no row is written.
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class StudyOptions:
    """How a study runs: timeout per (instance, solver) and where progress goes."""

    timeout: float = 120.0
    quiet: bool = False


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (0 <= I < N) for ``--shard``."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= I < N, got {text!r}")
    return i, n


def limit_threads() -> None:
    """One torch thread: the machines are shared and timings must not fight over cores."""
    torch.set_num_threads(1)


def warm_up() -> None:
    """Run bnbver once on a tiny network (torch kernels, allocator and imports warm up)."""
    unsafe = UnsafeSet((HalfSpaces(np.array([[-1.0, 1.0]]), np.array([-10.0])),))
    prop = Property(InputBox(-np.ones(3), np.ones(3)), unsafe, "warm-up")
    verify(tiny_network(seed=1), prop, timeout=5.0)


def _cex_ok(inst: LoadedInstance, outcome: Outcome) -> bool | None:
    """Return whether a sat answer's input is a float64-checked counterexample (None: n/a)."""
    if outcome.answer != "sat":
        return None
    if outcome.x is None:
        return False
    return any(validate_counterexample(inst.network, p, outcome.x) is not None
               for p in inst.props)


def to_row(inst: LoadedInstance, solver: str, outcome: Outcome, timeout: float) -> Row:
    """Return the CSV row of one outcome (with its check word)."""
    lower = outcome.lower_bound
    row = {"instance": inst.ref.name, "solver": solver, "answer": outcome.answer,
           "seconds": f"{outcome.seconds:.3f}", "nodes": str(outcome.nodes),
           "lower_bound": fmt(lower), "gap": fmt(max(0.0, -lower)) if lower == lower else "",
           "timeout": f"{timeout:g}", "expected": inst.ref.expected,
           "check": check_word(outcome.answer, inst.ref.expected, _cex_ok(inst, outcome)),
           "message": outcome.message.replace("\n", " ")[:200]}
    for key, value in outcome.extra.items():
        row[key] = fmt(value)
    return row


def _safe_run(runner: Runner, inst: LoadedInstance, timeout: float) -> Outcome:
    """Run one solver; an exception becomes an ``error`` outcome (the study goes on)."""
    t0 = time.monotonic()
    try:
        return runner(inst, timeout)
    except Exception as exc:  # a solver bug must not stop the study; it is recorded
        log.exception("runner failed on %s", inst.ref.name)
        return Outcome("error", time.monotonic() - t0, message=f"{type(exc).__name__}: {exc}")


def run_study(refs: Sequence[InstanceRef], runners: Mapping[str, Runner], store: ResultStore,
              options: StudyOptions) -> list[str]:
    """Run every runner on every instance not yet in ``store``; return the alarm lines."""
    warm_up()
    with Progress(len(refs) * len(runners), "study", enabled=not options.quiet) as bar:
        for ref in refs:
            todo = [s for s in runners if not store.done(ref.name, s, options.timeout)]
            bar.update(len(runners) - len(todo))
            if todo:
                _run_instance(ref, todo, runners, store, options, bar)
    return alarm_lines(store.rows)


def _run_instance(ref: InstanceRef, todo: list[str], runners: Mapping[str, Runner],
                  store: ResultStore, options: StudyOptions, bar: Progress) -> None:
    """Run the solvers ``todo`` on one instance, appending rows and counting progress."""
    try:
        inst = load(ref)
    except Exception as exc:  # a broken instance file becomes error rows
        for s in todo:
            store.append({"instance": ref.name, "solver": s, "answer": "error",
                          "timeout": f"{options.timeout:g}", "expected": ref.expected,
                          "check": "ok", "message": f"load: {exc}"[:200]})
        bar.update(len(todo), info=f"{ref.name}: load error")
        return
    for solver in todo:
        outcome = _safe_run(runners[solver], inst, options.timeout)
        if outcome.answer == NOT_APPLICABLE:
            bar.update()
            continue
        row = to_row(inst, solver, outcome, options.timeout)
        store.append(row)
        bar.update(info=f"{ref.name} {solver}: {row['answer']} {row['seconds']}s "
                   f"nodes={row['nodes']}" + (f" {row['check']}" if row["check"] != "ok"
                                              else ""))
    for line in alarm_lines([r for r in store.rows if r["instance"] == ref.name]):
        print(line, file=sys.stderr, flush=True)


def machine_line() -> str:
    """Return the CPU model, core count and Python version (for result files)."""
    import os
    import platform
    import subprocess

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), model)
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__} (1 thread), HiGHS 1 thread")
