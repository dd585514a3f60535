"""Branching heuristics side by side: nodes first (machine-independent), then time.

Every heuristic in ``bnbver.bab.branching.REGISTRY`` joins, read at run time: bnbver's own,
those of installed packages (entry-point group ``bnbver.heuristics``) and those of the
modules or files named by ``--import`` (their ``@register(name, kind=...)`` runs on import).
ReLU heuristics and input heuristics are two separate studies, since they never run on the
same search: ReLU heuristics with ReLU splits on the MNIST candidates (mnist_fc 256x2 and
256x4), input heuristics with input splits on the ACAS Xu candidates (40 instances evenly
spaced over the suite), each on its own selection, with its own reference, table and plots.

Instance selection (``--select``, see ``harness/selection.py``): ``root-gap`` (default) drops
the instances decided before any branching (root bound > 0, or the falsifier) and keeps the
smallest root gaps; ``band:LO:HI`` keeps the instances the reference decides in LO..HI s with
at least 2 nodes; ``spread`` is no filter. ``--limit N`` then keeps N per suite. The output
and the report say which selection was used and why each instance is in it.

Outputs in ``--out-dir``: ``<tag>.csv`` (resumable, one row per instance x heuristic),
``<tag>.md`` (per split kind: the node table (headline), the time table, the per-instance
table), ``<tag>_<kind>_nodes.png`` (decided vs nodes) and ``<tag>_<kind>_cactus.png`` (decided
vs time). Disagreeing answers are printed loudly and make the exit code 1; bad input prints
one ``error:`` line and exits 2.

Usage:
    python scripts/compare_branching.py [--bench-dir DIR] [--kind relu|input|all]
        [--heuristics a,b] [--import MODULE_OR_FILE ...] [--select root-gap|band:LO:HI|spread]
        [--limit N] [--timeout S] [--reference NAME] [--out-dir DIR] [--tag T]
        [--shard I/N] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.errors import ScriptError, clean_exit
from harness.instances import InstanceRef, LoadedInstance, select, write_tiny_suite
from harness.report import cactus_plot, instance_table, node_table, summary_table
from harness.results import ResultStore, Row, latest, read_rows
from harness.selection import (
    Selected,
    SelectionSpec,
    parse_selection,
    select_band,
    select_root_gap,
    select_spread,
)
from harness.solvers import Outcome, run_bnbver
from harness.study import (
    NOT_APPLICABLE,
    Runner,
    StudyOptions,
    limit_threads,
    machine_line,
    parse_shard,
    run_study,
)

from bnbver.bab.branching import default_heuristic, import_heuristics, known_heuristics
from bnbver.bab.loop import BabOptions, choose_split_kind

REPO = Path(__file__).resolve().parents[1]
KINDS = ("relu", "input")
#: split kind -> (suite folder, patterns, cap) of its candidates.
CANDIDATES = {"relu": (("mnist_fc", ("256x2", "256x4"), None),),
              "input": (("acasxu", (), 40),)}
TITLES = {"relu": "ReLU heuristics (ReLU splits)", "input": "Input heuristics (input splits)"}


@dataclass(frozen=True)
class KindStudy:
    """One split kind's study: its heuristics, reference and selected instances."""

    kind: str
    heuristics: list[str]
    reference: str
    selected: Selected


def heuristic_runner(name: str, kind: str | None = None) -> Runner:
    """Return a runner of bnbver with heuristic ``name`` (split kind: the heuristic's)."""
    kind = kind or known_heuristics()[name].kind

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
    ap.add_argument("--kind", choices=(*KINDS, "all"), default="all",
                    help="which study: ReLU heuristics, input heuristics, or both (default)")
    ap.add_argument("--heuristics", default="", help="comma-separated (default: all)")
    ap.add_argument("--import", dest="imports", action="append", default=[],
                    metavar="MODULE_OR_FILE",
                    help="import a module or .py file that registers heuristics (repeatable)")
    ap.add_argument("--select", default="root-gap",
                    help="instance selection: root-gap (default), band:LO:HI, spread")
    ap.add_argument("--limit", type=int, default=None,
                    help="per suite, at most N instances of the selection")
    ap.add_argument("--reference", default="",
                    help="reference of its kind's ratios (default: babsr / gradient-smear)")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="default results/compare (with --smoke: a temp dir, removed)")
    ap.add_argument("--tag", default="branching", help="file name stem of the outputs")
    ap.add_argument("--fresh", action="store_true", help="discard earlier rows of this tag")
    ap.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                    help="run only every N-th selected instance, from I (0-based): N "
                    "processes share the work and the CSV; then run the command once more "
                    "without --shard (nothing left to run) to write the full report")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny instances, a few seconds; writes nothing unless --out-dir")
    ap.set_defaults(kept=True)
    return ap.parse_args(argv)


def plan(args: argparse.Namespace) -> dict[str, tuple[list[str], str]]:
    """Return {kind: (heuristics, reference)} of the studies to run.

    Raises:
        ScriptError: an unknown heuristic or reference, or a bad ``--limit``.
    """
    for target in args.imports:
        import_heuristics(target)
    registry = known_heuristics()
    names = [h.strip() for h in args.heuristics.split(",") if h.strip()] or sorted(registry)
    unknown = [h for h in names if h not in registry]
    if unknown:
        raise ScriptError(f"--heuristics: unknown {', '.join(unknown)}; registered: "
                          f"{', '.join(sorted(registry))} (--import adds more)")
    if args.reference and args.reference not in registry:
        raise ScriptError(f"--reference: unknown heuristic {args.reference!r}")
    if args.limit is not None and args.limit < 1:
        raise ScriptError(f"--limit: must be >= 1, got {args.limit}")
    out = {}
    for kind in KINDS:
        mine = [h for h in names if registry[h].kind == kind]
        if not mine or args.kind not in ("all", kind):
            continue
        ref = args.reference if args.reference and registry[args.reference].kind == kind \
            else default_heuristic(kind)
        out[kind] = ([ref, *[h for h in mine if h != ref]], ref)
    if not out:
        raise ScriptError(f"--kind {args.kind}: none of the heuristics {names} is of that kind")
    return out


def candidates(bench_dir: Path, kind: str) -> list[InstanceRef]:
    """Return the candidate instances of a split kind's study (before selection)."""
    refs: list[InstanceRef] = []
    for suite, patterns, cap in CANDIDATES[kind]:
        refs += select(bench_dir / suite, patterns, cap)
    return refs


def choose(spec: SelectionSpec, pool: list[InstanceRef], kind: str, reference: str,
           store: ResultStore, args: argparse.Namespace) -> Selected:
    """Select a kind's instances (``band`` runs the reference on the pool first)."""
    if spec.kind == "spread":
        return select_spread(pool, args.limit)
    if spec.kind == "root-gap":
        return select_root_gap(pool, kind, args.limit)
    i, n = args.shard
    print(f"band selection: running {reference} on {len(pool[i::n])} candidates",
          file=sys.stderr)
    run_study(pool[i::n], {reference: heuristic_runner(reference, kind)}, store,
              StudyOptions(args.timeout))
    on_disk = [r for r in read_rows(store.path) if r["timeout"] == f"{args.timeout:g}"]
    rows = {inst: r for (inst, s), r in latest(on_disk).items() if s == reference}
    missing = [r.name for r in pool if r.name not in rows]
    if missing:  # only with --shard: another shard has not calibrated its part yet
        raise ScriptError(f"--select {args.select}: {reference} has no row yet for "
                          f"{len(missing)} candidates (e.g. {missing[0]}): calibrate first in "
                          f"every shard (--heuristics {reference} --select spread, no "
                          "--limit), then run this command")
    return select_band(pool, rows, spec, args.limit)


def kind_rows(rows: list[Row], study: KindStudy) -> list[Row]:
    """Return the rows of a kind's heuristics on its selected instances (at this timeout)."""
    names = {r.name for r in study.selected.refs}
    return [r for r in rows if r["instance"] in names and r["solver"] in study.heuristics]


def report_section(study: KindStudy, rows: list[Row], tag: str) -> list[str]:
    """Return the markdown section of one split kind."""
    sel = study.selected
    notes = [f"| {r.name} | {sel.notes.get(r.name, '')} |" for r in sel.refs]
    return [f"## {TITLES[study.kind]}", "",
            f"Heuristics: {', '.join(study.heuristics)}; reference: {study.reference}. "
            f"Instances: {len(sel.refs)} selected of {sel.candidates} candidates.", "",
            "### Nodes (headline: machine-independent)", "", *node_table(rows, study.reference),
            "", f"![decided vs nodes]({tag}_{study.kind}_nodes.png) "
            f"![decided vs time]({tag}_{study.kind}_cactus.png)", "",
            "### Time", "", *summary_table(rows, study.reference), "",
            "### Per instance", "", *instance_table(rows, study.reference), "",
            "### Selected instances", "", "| instance | why selected |", "|---|---|", *notes, ""]


def write_outputs(args: argparse.Namespace, studies: list[KindStudy], rows: list[Row],
                  spec_text: str) -> list[Path]:
    """Write the report and the plots of every kind; return the paths written."""
    text = ["# Branching heuristics", "", f"Machine: {machine_line()}.  ",
            f"Timeout: {args.timeout:g} s per run.  ",
            f"Selection: {spec_text} (`--select {args.select}`"
            + (f", `--limit {args.limit}` per suite" if args.limit else "") + ").  ",
            "Nodes are the BaB nodes bounded (the root included; 0 when the falsifier "
            "decided); time includes the root bounds and the falsifier.", ""]
    paths = [args.out_dir / f"{args.tag}.md"]
    for study in studies:
        mine = kind_rows(rows, study)
        text += report_section(study, mine, args.tag)
        for value, suffix in (("nodes", "nodes"), ("seconds", "cactus")):
            path = args.out_dir / f"{args.tag}_{study.kind}_{suffix}.png"
            cactus_plot(mine, path, f"{TITLES[study.kind]}: decided vs {value}", value=value)
            paths.append(path)
    paths[0].write_text("\n".join(text))
    return paths


def run(args: argparse.Namespace, pools: dict[str, list[InstanceRef]] | None = None) -> int:
    """Run the studies (``pools``: candidates per kind, default the benchmarks'); write the
    CSV, report and plots; return the exit code."""
    limit_threads()
    todo = plan(args)
    spec = parse_selection(args.select)
    pools = {kind: (pools or {}).get(kind) or candidates(args.bench_dir, kind) for kind in todo}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(args.out_dir / f"{args.tag}.csv", fresh=args.fresh)
    studies, alarms = [], []
    try:
        for kind, (names, ref) in todo.items():
            pool = pools[kind]
            chosen = choose(spec, pool, kind, ref, store, args)
            print(f"{kind} study: {len(chosen.refs)} of {len(pool)} candidates selected by "
                  f"{spec.describe(ref)}", file=sys.stderr)
            runners = {h: heuristic_runner(h, kind) for h in names}
            i, n = args.shard
            alarms += run_study(chosen.refs[i::n], runners, store, StudyOptions(args.timeout))
            studies.append(KindStudy(kind, names, ref, chosen))
    finally:
        store.close()
    rows = [r for r in store.rows if r["timeout"] == f"{args.timeout:g}"]
    paths = write_outputs(args, studies, rows, spec.describe(
        "the reference" if len(studies) > 1 else studies[0].reference))
    print("\n".join(alarms) if alarms else "all heuristics agree", file=sys.stderr)
    if not args.smoke or args.kept:
        print("wrote " + ", ".join(str(p) for p in [store.path, *paths]))
    return 1 if alarms else 0


def smoke(args: argparse.Namespace) -> int:
    """Run on a tiny generated suite; outputs in a temp dir (kept only with --out-dir)."""
    args.timeout = 10.0
    with tempfile.TemporaryDirectory(prefix="bnbver-smoke-") as tmp:
        suite = select(write_tiny_suite(Path(tmp) / "suite"))
        args.kept = args.out_dir is not None
        args.out_dir = args.out_dir or Path(tmp) / "out"
        code = run(args, {"relu": suite, "input": suite})
        print((args.out_dir / f"{args.tag}.md").read_text())
        kinds = [k for k in KINDS if (args.out_dir / f"{args.tag}_{k}_nodes.png").is_file()]
        outputs = [args.out_dir / f"{args.tag}{s}" for s in (".csv", ".md")]
        outputs += [args.out_dir / f"{args.tag}_{k}_{s}.png" for k in kinds
                    for s in ("nodes", "cactus")]
        if not kinds or not all(p.is_file() and p.stat().st_size > 0 for p in outputs):
            print("smoke: an output file is missing", file=sys.stderr)
            return 1
        print(f"smoke: {len(outputs)} output files checked"
              + ("" if args.kept else " (in a temp dir, now removed)"))
        return code


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point: the benchmark candidates, or ``--smoke`` on tiny instances."""
    args = parse_args(argv)
    if args.smoke:
        return smoke(args)
    args.kept = True
    args.out_dir = args.out_dir or REPO / "results" / "compare"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
