"""Every registered branching heuristic on a fixed subset: nodes, time, decided.

The heuristics are read from ``bnbver.bab.branching.REGISTRY`` at run time, so registering a
new one (``@register("name", kind=...)``) adds it to this study with no other change. A ReLU
heuristic runs with ReLU splitting on every instance; an input heuristic runs with input
splitting on the instances where bnbver's ``split="auto"`` would split inputs (at most
``BabOptions.input_split_max_dim`` inputs, no convolutions), i.e. ACAS Xu, not MNIST.

Fixed subset (default): mnist_fc 256x2 and 256x4 (all), and 40 ACAS Xu instances evenly
spaced over the suite. Outputs in ``--out-dir``: ``<tag>.csv`` (resumable, one row per
instance x heuristic), ``<tag>.md`` (summary with the median time ratio against the default
heuristic, nodes on the instances every heuristic decided, per-instance table),
``<tag>_cactus.png`` (decided vs time) and ``<tag>_nodes.png`` (decided vs nodes).
Disagreeing answers are printed loudly and make the exit code 1.

Usage:
    python scripts/compare_branching.py [--bench-dir DIR] [--timeout S] [--heuristics a,b]
        [--limit N] [--out-dir DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.instances import InstanceRef, LoadedInstance, select, smoke_dir
from harness.report import cactus_plot, write_report
from harness.results import ResultStore, Row, latest, median
from harness.solvers import DECIDED, Outcome, run_bnbver
from harness.study import (
    NOT_APPLICABLE,
    Runner,
    StudyOptions,
    limit_threads,
    machine_line,
    run_study,
)

from bnbver.bab.branching import REGISTRY
from bnbver.bab.loop import BabOptions, choose_split_kind

REPO = Path(__file__).resolve().parents[1]
#: (suite folder, patterns, limit): the fixed subset of the study.
FIXED_SUBSET = (("mnist_fc", ("256x2", "256x4"), None), ("acasxu", (), 40))


def heuristic_runner(name: str) -> Runner:
    """Return a runner of bnbver with heuristic ``name`` and the split kind it is for."""
    kind = REGISTRY[name].kind

    def run(inst: LoadedInstance, timeout: float) -> Outcome:
        if kind == "input" and choose_split_kind(inst.network, BabOptions()) != "input":
            return Outcome(NOT_APPLICABLE, 0.0)
        return run_bnbver(inst, timeout, branching=name, split=kind)

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-dir", type=Path, default=REPO.parent / "shared" / "benchmarks")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    ap.add_argument("--heuristics", default="", help="comma-separated (default: all)")
    ap.add_argument("--limit", type=int, default=None,
                    help="per suite, at most N instances (evenly spaced) of the fixed subset")
    ap.add_argument("--reference", default="babsr", help="numerator of the time ratios")
    ap.add_argument("--out-dir", type=Path, default=REPO / "results" / "compare")
    ap.add_argument("--tag", default="branching", help="file name stem of the outputs")
    ap.add_argument("--fresh", action="store_true", help="discard earlier rows of this tag")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny instances in a temp dir, a few seconds; writes nothing here")
    return ap.parse_args(argv)


def fixed_subset(bench_dir: Path, limit: int | None) -> list[InstanceRef]:
    """Return the study's instances (``limit`` caps every suite's share)."""
    refs: list[InstanceRef] = []
    for suite, patterns, cap in FIXED_SUBSET:
        n = cap if limit is None else min(limit, cap or limit)
        refs += select(bench_dir / suite, patterns, n)
    return refs


def node_lines(rows: list[Row]) -> list[str]:
    """Return a markdown table of nodes, per split kind on the instances all its heuristics
    decided (so heuristics are compared on the same instances)."""
    last = list(latest(rows).values())
    lines = ["| heuristic | kind | common instances | total nodes | median nodes |",
             "|---|---|---|---|---|"]
    for kind in ("relu", "input"):
        names = [h for h in dict.fromkeys(r["solver"] for r in last)
                 if h in REGISTRY and REGISTRY[h].kind == kind]
        decided = {h: {r["instance"] for r in last if r["solver"] == h
                       and r["answer"] in DECIDED} for h in names}
        common = set.intersection(*decided.values()) if decided else set()
        for h in names:
            nodes = [float(r["nodes"]) for r in last
                     if r["solver"] == h and r["instance"] in common]
            med = median(nodes)
            lines.append(f"| {h} | {kind} | {len(common)} | {sum(nodes):.0f} | "
                         f"{'' if math.isnan(med) else f'{med:.0f}'} |")
    return ["Nodes on the instances that every heuristic of the same split kind decided:",
            "", *lines]


def run(args: argparse.Namespace, refs: list[InstanceRef]) -> int:
    """Run the study on ``refs``; write CSV, table and plots; return the exit code."""
    limit_threads()
    names = [h.strip() for h in args.heuristics.split(",") if h.strip()] or sorted(REGISTRY)
    unknown = [h for h in names if h not in REGISTRY]
    if unknown:
        print(f"error: unknown heuristic(s) {unknown}; registered: {sorted(REGISTRY)}",
              file=sys.stderr)
        return 2
    runners = {h: heuristic_runner(h) for h in names}
    store = ResultStore(args.out_dir / f"{args.tag}.csv", fresh=args.fresh)
    try:
        alarms = run_study(refs, runners, store, StudyOptions(args.timeout))
    finally:
        store.close()
    kinds = ", ".join(f"{h} ({REGISTRY[h].kind})" for h in names)
    preamble = [f"Machine: {machine_line()}.  ", f"Timeout: {args.timeout:g} s per run. "
                f"Heuristics (split kind): {kinds}.  ",
                f"Ratio: {args.reference} time / heuristic time on instances both decided.",
                "", *node_lines(store.rows)]
    write_report(args.out_dir / f"{args.tag}.md", "Branching heuristics", store.rows,
                 args.reference, preamble)
    cactus_plot(store.rows, args.out_dir / f"{args.tag}_cactus.png", "decided vs time")
    cactus_plot(store.rows, args.out_dir / f"{args.tag}_nodes.png", "decided vs nodes",
                value="nodes")
    print("\n".join(alarms) if alarms else "all heuristics agree", file=sys.stderr)
    print(f"wrote {store.path}, {args.tag}.md and plots in {args.out_dir}")
    return 1 if alarms else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: the fixed subset, or ``--smoke`` on tiny instances in a temp dir."""
    args = parse_args(argv)
    if not args.smoke:
        return run(args, fixed_subset(args.bench_dir, args.limit))
    with smoke_dir() as tmp:
        args.out_dir, args.timeout = tmp / "out", 10.0
        code = run(args, select(tmp / "suite"))
        print((args.out_dir / f"{args.tag}.md").read_text())
        outputs = [args.out_dir / f"{args.tag}{s}"
                   for s in (".csv", ".md", "_cactus.png", "_nodes.png")]
        if not all(p.is_file() and p.stat().st_size > 0 for p in outputs):
            print("smoke: an output file is missing", file=sys.stderr)
            return 1
        return code


if __name__ == "__main__":
    sys.exit(main())
