"""bnbver's branch and bound side by side with generic MILP solvers on the same bounds.

For each instance, in one run: bnbver (``verify``: falsifier + BaB) and MILP solvers on the
full model of every (input box, unsafe disjunct), exported from ``bnbver.milp.build_milp``
with the root pre-activation bounds that bnbver's BaB starts from. Solvers are named
``bnbver`` or ``BACKEND-FORMULATION``: backends ``highs`` (always), ``scip`` (``pyscipopt``,
``pip install '.[solvers]'``) and ``gurobi`` (``gurobipy``; its pip licence is size-limited and
larger models answer ``too large``); formulations ``bigm``, ``extended``, ``partition:N``.
Solvers whose package is missing are skipped with a note.

The MILPs' pre-activation bounds come from ``--milp-bounds`` (``auto``: the BaB's own root
bounds; ``interval``, ``lp``, ``milp``, ``crown``, ``alpha``: ``bnbver.bab.bound_sources``), the
same function as ``bnbver export-milp --bounds``: ``bnbver export-milp NET PROP --bounds X
--unsafe-slack 1e-6 --formulation F --out m.mps`` writes the models that ``highs-F`` solved
here (``milp`` tightening depends on its time limit, so only it may differ).

Outputs in ``--out-dir``: ``<tag>.csv`` (one row per instance x solver, appended as runs
finish; re-running the same command resumes), ``<tag>.md`` (per-solver summary: instances
decided by each, median time ratios bnbver/solver on instances both decide; nodes: bnbver's
BaB nodes beside the MILP solvers' reported B&B nodes; the per-instance table) and
``<tag>_cactus.png`` (instances decided vs time, one line per solver). Two solvers deciding
an instance differently, an answer contradicting expected.csv, or a sat whose input fails the
float64 re-check is printed loudly and makes the exit code 1; bad input prints one
``error:`` line and exits 2.

Usage:
    python scripts/compare_solvers.py SUITE_DIR [SUITE_DIR ...] [--subset PATTERN ...]
        [--limit N] [--timeout S] [--solvers bnbver,highs-bigm,...] [--out-dir DIR]
        [--milp-bounds auto|interval|lp|milp|crown|alpha] [--shard I/N] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.errors import ScriptError, clean_exit
from harness.instances import InstanceRef, LoadedInstance, select, write_tiny_suite
from harness.report import cactus_plot, write_report
from harness.results import ResultStore
from harness.solvers import (
    SOURCE_ALIASES,
    BoundsCache,
    Outcome,
    Runner,
    make_runner,
    missing_package,
    run_bnbver,
)
from harness.study import StudyOptions, limit_threads, machine_line, parse_shard, run_study

from bnbver.bab.bound_sources import BOUND_SOURCES
from bnbver.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOLVERS = ("bnbver,highs-bigm,highs-extended,highs-partition:2,scip-bigm,"
                   "gurobi-bigm")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", type=Path, help="folders with instances.csv")
    ap.add_argument("--subset", action="append", default=[],
                    help="keep instances whose 'onnx,vnnlib' contains this (repeatable)")
    ap.add_argument("--limit", type=int, default=None,
                    help="per suite, at most N instances evenly spaced over the matches")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per solver run")
    ap.add_argument("--solvers", default=DEFAULT_SOLVERS, help="comma-separated names")
    ap.add_argument("--reference", default="bnbver", help="numerator of the time ratios")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="default results/compare (with --smoke: a temp dir, removed)")
    ap.add_argument("--tag", default="solvers", help="file name stem of the outputs")
    ap.add_argument("--fresh", action="store_true", help="discard earlier rows of this tag")
    ap.add_argument("--milp-bounds", choices=(*BOUND_SOURCES, *SOURCE_ALIASES),
                    default="auto",
                    help="pre-activation bounds of the MILPs: auto (the BaB's own root), "
                    "interval, lp, milp, crown, alpha (relu: old name of alpha); the same "
                    "as export-milp --bounds (not part of the CSV key: use another --tag)")
    ap.add_argument("--record-dir", type=Path, default=None,
                    help="write bnbver's search tree of each instance to DIR/<name>.jsonl")
    ap.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                    help="run only every N-th selected instance, starting at I (0-based): "
                    "N processes with I = 0..N-1 share the work and the CSV")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny instances, a few seconds; writes nothing unless --out-dir")
    ap.set_defaults(kept=True)
    return ap.parse_args(argv)


def recording_bnbver(record_dir: Path) -> Runner:
    """Return a bnbver runner that records each instance's tree (see plot_tree.py)."""

    def run(inst: LoadedInstance, timeout: float) -> Outcome:
        path = record_dir / (inst.ref.name.replace("/", "__") + ".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        return run_bnbver(inst, timeout, record=str(path))

    return run


def build_runners(names: list[str], record_dir: Path | None = None,
                  milp_bounds: str = "auto") -> dict[str, Runner]:
    """Return {name: runner}; solvers whose package is missing are skipped with a note."""
    cache = BoundsCache(milp_bounds)
    runners = {}
    for name in names:
        missing = missing_package(name)
        if missing is not None:
            hint = "'.[solvers]'" if missing == "pyscipopt" else missing
            print(f"note: {name} skipped ({missing} is not installed; pip install {hint})",
                  file=sys.stderr)
            continue
        runners[name] = make_runner(name, cache)
    if record_dir is not None and "bnbver" in runners:
        runners["bnbver"] = recording_bnbver(record_dir)
    return runners


def instances(args: argparse.Namespace) -> list[InstanceRef]:
    """Return the selected instances of every suite."""
    refs: list[InstanceRef] = []
    for suite in args.suites:
        refs += select(suite, args.subset, args.limit)
    i, n = args.shard
    return refs[i::n]


def run(args: argparse.Namespace) -> int:
    """Run the study, write CSV, table and cactus plot; return the exit code."""
    limit_threads()
    names = [s.strip() for s in args.solvers.split(",") if s.strip()]
    try:
        runners = build_runners(names, args.record_dir, args.milp_bounds)
    except (ValueError, InputError) as exc:
        raise ScriptError(f"--solvers: {exc}") from None
    refs = instances(args)
    store = ResultStore(args.out_dir / f"{args.tag}.csv", fresh=args.fresh)
    try:
        alarms = run_study(refs, runners, store, StudyOptions(args.timeout))
    finally:
        store.close()
    rows = store.rows
    preamble = [f"Machine: {machine_line()}.  ", f"Timeout: {args.timeout:g} s per solver "
                "run. Times include root bounds and model building for the MILP solvers.  ",
                f"MILP bounds: {args.milp_bounds} (auto = the BaB's own root bounds; "
                "`bnbver export-milp --bounds` writes the same models).  ",
                f"Ratio: {args.reference} time / solver time on instances both decided "
                "(below 1: bnbver is faster)."]
    write_report(args.out_dir / f"{args.tag}.md", "bnbver vs MILP solvers", rows,
                 args.reference, preamble)
    cactus_plot(rows, args.out_dir / f"{args.tag}_cactus.png", "instances decided vs time")
    print("\n".join(alarms) if alarms else "all solvers agree", file=sys.stderr)
    if args.kept:
        print(f"wrote {store.path}, {args.tag}.md, {args.tag}_cactus.png in {args.out_dir}")
    return 1 if alarms else 0


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point: the full study, or ``--smoke`` on tiny instances."""
    args = parse_args(argv)
    if not args.smoke:
        if not args.suites:
            raise ScriptError("give at least one SUITE_DIR (or --smoke)")
        args.out_dir = args.out_dir or REPO / "results" / "compare"
        return run(args)
    return smoke(args)


def smoke(args: argparse.Namespace) -> int:
    """Run on a tiny generated suite; outputs in a temp dir (kept only with --out-dir)."""
    with tempfile.TemporaryDirectory(prefix="bnbver-smoke-") as tmp:
        args.suites, args.timeout = [write_tiny_suite(Path(tmp) / "suite")], 10.0
        args.kept = args.out_dir is not None
        args.out_dir = args.out_dir or Path(tmp) / "out"
        args.record_dir = args.record_dir or Path(tmp) / "trees"
        code = run(args)
        print((args.out_dir / f"{args.tag}.md").read_text())
        expected = [args.out_dir / f"{args.tag}{s}" for s in (".csv", ".md", "_cactus.png")]
        expected.append(args.record_dir / "suite__tiny__prop_1.jsonl")
        if not all(p.is_file() and p.stat().st_size > 0 for p in expected):
            print("smoke: an output file is missing", file=sys.stderr)
            return 1
        print(f"smoke: {len(expected)} output files checked"
              + ("" if args.kept else " (in a temp dir, now removed)"))
        return code


if __name__ == "__main__":
    sys.exit(main())
