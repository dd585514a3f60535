"""Markdown tables and matplotlib plots of a study's results CSV.

- :func:`node_table`: per solver, nodes on the instances that every solver decided, the
  median node ratio ``solver / reference`` on the instances both decided, and the time per
  node. Nodes do not depend on the machine (or on what else runs on it), so this is the
  headline of a heuristic study; for a MILP solver they are its B&B nodes (summed over the
  models of an instance), a different unit from bnbver's BaB nodes.
- :func:`summary_table`: per solver, instances decided (sat / unsat), median time on decided
  instances, and against a reference solver: instances both decided and the median of the
  per-instance time ratios ``reference / solver`` (below 1: the reference is faster).
- :func:`instance_table`: per instance, every solver's answer and time, and the ratios.
- :func:`cactus_plot`: instances decided (y) within a time (x), one line per solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .results import Row, latest, median, ratios, solvers_in
from .solvers import DECIDED


def _seconds(r: Row) -> float:
    try:
        return float(r["seconds"])
    except ValueError:
        return math.nan


def _nodes(r: Row) -> float:
    try:
        return float(r.get("nodes", "") or "nan")
    except ValueError:
        return math.nan


def _gap(r: Row) -> float:
    try:
        return float(r.get("gap", "") or "nan")
    except ValueError:
        return math.nan


def node_table(rows: Sequence[Row], reference: str | None = None) -> list[str]:
    """Return markdown lines: per solver, nodes where all decided, node ratios, ms per node.

    Columns: instances decided; nodes (total and median) on the instances that *every*
    solver in ``rows`` decided; against ``reference``: instances both decided and the median
    of ``nodes(solver) / nodes(reference)`` there (instances where either used 0 nodes, i.e.
    the falsifier decided, are left out of the ratio); milliseconds per node over every run
    of the solver that used at least 2 nodes, decided or not (its throughput); and, on the
    instances that no solver decided, the median gap left (``-lower bound`` of the margin
    at the timeout: how far each got towards a proof where nobody finished).
    """
    last = list(latest(rows).values())
    solvers = solvers_in(rows)
    decided = {s: {r["instance"] for r in last if r["solver"] == s and r["answer"] in DECIDED}
               for s in solvers}
    common = set.intersection(*decided.values()) if decided else set()
    ran = [{r["instance"] for r in last if r["solver"] == s} for s in solvers]
    nobody = (set.intersection(*ran) - set.union(*decided.values())) if ran else set()
    head = (f"| solver | decided | nodes on the {len(common)} all decided | median nodes there "
            f"| both decided with {reference} | median node ratio solver/{reference} "
            f"| ms per node (runs with >= 2 nodes) | median gap left on the {len(nobody)} "
            "none decided |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    by = {(r["instance"], r["solver"]): r for r in last}
    for s in solvers:
        there = [_nodes(by[(i, s)]) for i in sorted(common)]
        both, ratio = "", ""
        if reference and s != reference and reference in decided:
            pairs = [(_nodes(by[(i, s)]), _nodes(by[(i, reference)]))
                     for i in decided[s] & decided[reference]]
            both = str(len(pairs))
            ratio = _num(median(a / b for a, b in pairs if a > 0 and b > 0))
        runs = [r for r in last if r["solver"] == s and _nodes(r) >= 2]
        per = sum(_seconds(r) for r in runs) / max(sum(_nodes(r) for r in runs), 1.0)
        gap = median(_gap(by[(i, s)]) for i in nobody)
        lines.append(f"| {s} | {len(decided[s])} | {sum(there):.0f} | {_num(median(there))} "
                     f"| {both} | {ratio} | {_num(1e3 * per) if runs else ''} | {_num(gap)} |")
    return lines


def summary_table(rows: Sequence[Row], reference: str | None = None) -> list[str]:
    """Return markdown lines: one row per solver with counts, median time and ratios."""
    head = ("| solver | instances | decided | sat | unsat | other | median s (decided) "
            f"| both decided with {reference} | median ratio {reference}/solver "
            "| of these, not proved by the root bounds | median ratio there |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    last = list(latest(rows).values())
    searched = _searched(rows, reference)
    for solver in solvers_in(rows):
        mine = [r for r in last if r["solver"] == solver]
        dec = [r for r in mine if r["answer"] in DECIDED]
        n_sat = sum(r["answer"] == "sat" for r in dec)
        med = median(_seconds(r) for r in dec)
        both, ratio, n_se, ratio_se = "", "", "", ""
        if reference and solver != reference:
            rs = ratios(rows, reference, solver)
            both, ratio = str(len(rs)), _num(median(rs.values()))
            se = [v for inst, v in rs.items() if inst in searched]
            n_se, ratio_se = str(len(se)), _num(median(se))
        lines.append(f"| {solver} | {len(mine)} | {len(dec)} | {n_sat} | {len(dec) - n_sat} "
                     f"| {len(mine) - len(dec)} | {_num(med)} | {both} | {ratio} | {n_se} "
                     f"| {ratio_se} |")
    return lines


def _searched(rows: Sequence[Row], reference: str | None) -> set[str]:
    """Return the instances that ``reference`` did not prove unsat by its root bounds alone.

    Where the root bounds prove unsat (one node), every solver's time is mostly the same
    shared root-bound computation, so a ratio near 1 there says nothing about the search;
    falsified (sat) and branched instances stay.
    """
    out = set()
    for (inst, solver), r in latest(rows).items():
        try:
            nodes = int(r.get("nodes", "") or 0)
        except ValueError:
            continue
        if solver == reference and not (r["answer"] == "unsat" and nodes <= 1):
            out.add(inst)
    return out


def _num(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3g}"


def instance_table(rows: Sequence[Row], reference: str | None = None) -> list[str]:
    """Return markdown lines: per instance, each solver's answer, time, nodes (gap), ratios."""
    solvers = solvers_in(rows)
    others = [s for s in solvers if reference and s != reference]
    head = ["instance", "expected", *solvers, *[f"{reference}/{s}" for s in others]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = latest(rows)
    per_ratio = {s: ratios(rows, reference, s) for s in others} if reference else {}
    for inst in dict.fromkeys(r["instance"] for r in rows):
        cells = [inst, next((r["expected"] for r in rows if r["instance"] == inst), "")]
        for s in solvers:
            r = last.get((inst, s))
            cells.append("" if r is None else _cell(r))
        cells += [_num(per_ratio[s].get(inst, math.nan)) for s in others]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cell(r: Row) -> str:
    """Return ``answer 1.2s 40n`` (+ ``gap g`` when undecided, + a check word when flagged)."""
    text = f"{r['answer']} {_num(_seconds(r))}s {r.get('nodes') or 0}n"
    if r["answer"] not in DECIDED and r.get("gap"):
        text += f" gap {r['gap']}"
    return text + (f" {r['check']}" if r.get("check") not in ("ok", "", None) else "")


def cactus_plot(rows: Sequence[Row], path: Path, title: str = "",
                value: str = "seconds") -> int:
    """Draw instances decided vs time (or ``value``), one line per solver; return line count.

    Every solver gets a line, even one that decided nothing (a flat line at 0), so the legend
    always names the whole study. With ``value="nodes"`` the x axis starts at 1 node (an
    instance the falsifier decided with 0 nodes counts at 1).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    last = list(latest(rows).values())
    floor = 1.0 if value == "nodes" else 1e-3
    series = {}
    for solver in solvers_in(rows):
        mine = [r for r in last if r["solver"] == solver]
        vals = sorted(max(float(r[value]), floor) for r in mine
                      if r["answer"] in DECIDED and r[value] != "")
        series[solver] = (vals, len(mine))
    top = max([1.0, *(float(r[value]) for r in last if r[value] not in ("", "nan"))])
    for solver, (vals, n_run) in series.items():
        # flat until the first decision, a step per decision, flat to the right edge
        xs, ys = [floor, *vals, top * 1.5], [0, *range(1, len(vals) + 1), len(vals)]
        ax.step(xs, ys, where="post", label=f"{solver} ({len(vals)}/{n_run})")
    ax.set_xscale("log")
    ax.set_xlim(0.8 if value == "nodes" else 1e-2, top * 1.5)
    ax.set_xlabel("time (s)" if value == "seconds" else value)
    ax.set_ylabel("instances decided")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    n_lines = len(ax.get_lines())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return n_lines


def write_report(path: Path, title: str, rows: Sequence[Row], reference: str | None,
                 preamble: Sequence[str] = ()) -> None:
    """Write a markdown report: preamble, summary table, node table, per-instance table."""
    text = [f"# {title}", "", *preamble, "", "## Summary", "",
            *summary_table(rows, reference), "", "## Nodes", "",
            *node_table(rows, reference), "", "## Per instance", "",
            *instance_table(rows, reference), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
