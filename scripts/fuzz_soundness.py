"""Soundness fuzzer (issue 15): random instances, many bnbver configurations, an exact oracle.

Usage::

    python scripts/fuzz_soundness.py --smoke                        # seconds (CI)
    python scripts/fuzz_soundness.py --n 500 --seed 1 --out fuzz.jsonl [--resume]
    python scripts/fuzz_soundness.py --seed 1 --case 17 --config relu-babsr-f32 --keep kept/
    python scripts/fuzz_soundness.py --list-configs

    # the 10,000-case measurement (about 4-5 hours on one core; resumable)
    python scripts/fuzz_soundness.py --n 10000 --seed 2025 --per-case 4 --timeout 10 --quiet \
        --out results/soundness.jsonl --resume --keep results/soundness_failures \
        --md results/soundness.md

Each case ``K`` of seed ``S`` is a random instance (``soundness.generate``: dense and conv /
max-pool nets, planted counterexamples, extreme scales, the adversarial families of the
issue) written as ONNX + VNN-LIB. The independent exact oracle (``soundness.oracle``, which
never imports bnbver) decides it; bnbver then runs on the files through its public API in
``--per-case`` of the named configurations (all of them with ``--per-case 0``, or the ones
given by ``--config``), rotating so that every configuration gets its share of the cases.
Every ``sat`` witness is replayed exactly and in onnxruntime.

Output: one JSON line per run in ``--out`` (``--resume`` skips the (seed, case, config)
runs already there), a line per failure with its reproduction command, a summary table
(runs per configuration and outcome class), and with ``--md`` the same as Markdown with up to
ten reproduction commands per failure class. ``--keep DIR`` copies each failing instance's
ONNX and VNN-LIB files and its JSON record into DIR.

Exit status: 1 when a run is a wrong unsat, a refuted witness (exactly or by onnxruntime), a
crash or a fuzzer bug; 0 otherwise; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from soundness.configs import CONFIGS  # noqa: E402
from soundness.generate import FAMILIES, generate  # noqa: E402
from soundness.netspec import Instance  # noqa: E402
from soundness.oracle import OracleLimits, OracleResult, decide  # noqa: E402
from soundness.run import (  # noqa: E402
    FAILURES,
    OUTCOMES,
    InProcess,
    Isolated,
    classify,
    oracle_witness_replays,
)
from soundness.write import write_instance  # noqa: E402

SMOKE_CASES = (0, 1, 2)
SMOKE_SEED = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100, help="cases 0..n-1 (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", type=int, action="append", help="run only these cases")
    p.add_argument("--config", action="append", help="run only these configurations")
    p.add_argument("--family", choices=sorted(FAMILIES), help="force the generator family")
    p.add_argument("--per-case", type=int, default=4,
                   help="configurations per case, rotating (0 = all; default 4)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--oracle-time", type=float, default=30.0, help="oracle seconds per case")
    p.add_argument("--out", type=Path, help="JSON-lines results file")
    p.add_argument("--resume", action="store_true", help="skip runs already in --out")
    p.add_argument("--keep", type=Path, help="copy failing instances' files into this folder")
    p.add_argument("--md", type=Path, help="also write the summary and failures as Markdown")
    p.add_argument("--no-isolate", action="store_true",
                   help="run bnbver in this process (no protection against hangs)")
    p.add_argument("--smoke", action="store_true", help="a few cases in seconds (CI)")
    p.add_argument("--list-configs", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    return p.parse_args(argv)


def select_configs(names: list[str] | None, seed: int, case: int, per_case: int) -> list[str]:
    """Return the configurations of one case: the named ones, all, or a rotating share."""
    if names:
        return list(names)
    allc = list(CONFIGS)
    if per_case <= 0 or per_case >= len(allc):
        return allc
    order = [allc[i] for i in np.random.default_rng([seed, 2]).permutation(len(allc))]
    return [order[(case * per_case + j) % len(order)] for j in range(per_case)]


def repro(seed: int, case: int, config: str, family: str | None) -> str:
    """Return the one-line command that reruns one run."""
    fam = f" --family {family}" if family else ""
    return (f"python scripts/fuzz_soundness.py --seed {seed} --case {case}{fam} "
            f"--config {config} --keep kept/")


def read_records(path: Path | None) -> list[dict[str, Any]]:
    """Return the JSON records of ``path`` (none when it does not exist)."""
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _record(inst: Instance, oracle: OracleResult, seed: int, case: int, config: str,
            run: dict[str, Any], outcome: str, detail: str, family: str | None,
            timeout: float, replays: dict[str, Any]) -> dict[str, Any]:
    wit = None if oracle.witness is None else [float(v) for v in oracle.witness]
    return {**replays, "seed": seed, "case": case, "config": config, "family": inst.family,
            "dtype": inst.net.dtype, "note": inst.note, "planted": inst.planted is not None,
            "oracle": oracle.answer, "oracle_reason": oracle.reason, "oracle_lps": oracle.lps,
            "oracle_seconds": round(oracle.seconds, 4), "oracle_witness": wit,
            "status": run["status"], "outcome": outcome, "detail": detail[:2000],
            "wall": round(float(run["wall"]), 3), "timeout": timeout, "x": run["x"],
            "message": run["message"][:500], "repro": repro(seed, case, config, family)}


def run_case(args: argparse.Namespace, case: int, configs: list[str], runner: Any,
             work: Path) -> list[dict[str, Any]]:
    """Generate, decide and run one case in the given configurations.

    An exception in the fuzzer's own parts (generator, oracle, writers) becomes one
    ``fuzzer-bug`` record per configuration instead of ending the batch.
    """
    try:
        inst = generate(args.seed, case, args.family)
        oracle = decide(inst, OracleLimits(time_limit=args.oracle_time))
        onnx_path, vnnlib_path = write_instance(inst, work, f"s{args.seed}_c{case}")
        replays = oracle_witness_replays(inst, oracle, onnx_path)
    except Exception as exc:  # a bug of the fuzzer: record it and go on
        detail = f"{type(exc).__name__}: {exc} [{traceback.format_exc(limit=-3)}]"
        out = [_fuzzer_bug(args, case, name, detail) for name in configs]
        for rec in out:
            _report(rec, args.quiet)
        return out
    out = []
    for name in configs:
        res = runner.run(str(onnx_path), str(vnnlib_path), CONFIGS[name], args.timeout,
                         args.seed)
        outcome, detail = classify(inst, oracle, res, onnx_path)
        rec = _record(inst, oracle, args.seed, case, name, res, outcome, detail, args.family,
                      args.timeout, replays)
        out.append(rec)
        _report(rec, args.quiet)
        if outcome in FAILURES and args.keep is not None:
            _keep(args.keep, onnx_path, vnnlib_path, rec)
    return out


def _fuzzer_bug(args: argparse.Namespace, case: int, config: str, detail: str
                ) -> dict[str, Any]:
    return {"seed": args.seed, "case": case, "config": config, "family": args.family or "?",
            "dtype": "?", "note": "", "planted": False, "oracle": "unknown",
            "oracle_reason": "", "oracle_lps": 0, "oracle_seconds": 0.0, "oracle_witness": None,
            "witness_f64": None, "witness_ort": None, "status": "not run",
            "outcome": "fuzzer-bug", "detail": detail[:2000], "wall": 0.0,
            "timeout": args.timeout, "x": None, "message": "",
            "repro": repro(args.seed, case, config, args.family)}


def _report(rec: dict[str, Any], quiet: bool) -> None:
    """Print one run: failures always, with the reproduction command."""
    head = (f"case {rec['case']:5d} {rec['family']:9s} {rec['config']:28s} "
            f"oracle={rec['oracle']:7s} bnbver={rec['status']:9s} -> {rec['outcome']}")
    if rec["outcome"] in FAILURES:
        print(f"FAIL {head}: {rec['detail'][:200]}\n     {rec['note']}\n     {rec['repro']}",
              flush=True)
    elif not quiet:
        print(f"     {head} ({rec['wall']:.1f} s)", flush=True)


def _keep(folder: Path, onnx_path: Path, vnnlib_path: Path, rec: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for src in (onnx_path, vnnlib_path):
        shutil.copy(src, folder / src.name)
    stem = onnx_path.stem
    (folder / f"{stem}_{rec['config']}.json").write_text(json.dumps(rec, indent=1) + "\n")


def summary(records: Iterable[dict[str, Any]]) -> str:
    """Return the table: runs per configuration (rows) and outcome class (columns)."""
    recs = list(records)
    counts = Counter((r["config"], r["outcome"]) for r in recs)
    names = sorted({r["config"] for r in recs})
    cols = [o for o in OUTCOMES if any(counts[(n, o)] for n in names)] or ["ok"]
    lines = ["| config | runs | " + " | ".join(cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for n in [*names, "all"]:
        row = [sum(counts[(m, o)] for m in (names if n == "all" else [n])) for o in cols]
        lines.append(f"| {n} | {sum(row)} | " + " | ".join(map(str, row)) + " |")
    cases = {(r["seed"], r["case"]) for r in recs}
    oracle = Counter(r["oracle"] for r in {(r["seed"], r["case"]): r for r in recs}.values())
    lines.append(f"\n{len(cases)} cases; oracle: " + ", ".join(f"{k} {v}" for k, v in
                                                              sorted(oracle.items())))
    return "\n".join(lines)


def markdown(records: list[dict[str, Any]], command: str, per_class: int = 10) -> str:
    """Return a Markdown report: the command, the summary, and failures by class and family."""
    fails = [r for r in records if r["outcome"] in FAILURES]
    out = ["# Soundness fuzzing (issue 15)", "", f"Command: `{command}`", "",
           summary(records), ""]
    for cls in FAILURES:
        rows = [r for r in fails if r["outcome"] == cls]
        if not rows:
            continue
        fams = Counter(r["family"] for r in rows)
        out += [f"## {cls}: {len(rows)} runs", "",
                "By family: " + ", ".join(f"{k} {v}" for k, v in fams.most_common()), ""]
        seen: set[tuple[int, int]] = set()
        for r in rows:
            if (r["seed"], r["case"]) in seen or len(seen) >= per_class:
                continue
            seen.add((r["seed"], r["case"]))
            out.append(f"- `{r['repro']}`: {r['note']} ({r['dtype']}); {r['detail'][:160]}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer; return the exit status."""
    args = parse_args(argv)
    args.command = "python scripts/fuzz_soundness.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.list_configs:
        for name, opts in CONFIGS.items():
            print(f"{name:30s} {opts}")
        return 0
    if args.smoke:
        args.seed, args.case = SMOKE_SEED, list(SMOKE_CASES)
        args.per_case, args.timeout, args.family = 2, min(args.timeout, 5.0), "dense"
    unknown = [c for c in args.config or [] if c not in CONFIGS]
    if unknown:
        print(f"error: --config: unknown configuration(s) {unknown}; see --list-configs",
              file=sys.stderr)
        return 2
    for name in ("out", "md"):
        path = getattr(args, name)
        if path is not None and not Path(path).resolve().parent.is_dir():
            print(f"error: --{name}: {path}: its folder does not exist", file=sys.stderr)
            return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run the selected cases and configurations; print the summary; return the exit status."""
    previous = [r for r in read_records(args.out) if r["seed"] == args.seed] if args.resume \
        else []
    done = {(r["case"], r["config"]) for r in previous}
    runner = InProcess() if args.no_isolate else Isolated()
    records: list[dict[str, Any]] = []
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz_soundness_") as tmp:
            for case in args.case or range(args.n):
                todo = [c for c in select_configs(args.config, args.seed, case, args.per_case)
                        if (case, c) not in done]
                if todo:
                    new = run_case(args, case, todo, runner, Path(tmp))
                    records += new
                    _append(args.out, new)
    finally:
        runner.close()
    allrecs = previous + records
    print(f"\n{len(records)} runs in {time.monotonic() - start:.0f} s "
          f"(+{len(previous)} resumed)\n" + summary(allrecs))
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(allrecs, args.command))
    return 1 if any(r["outcome"] in FAILURES for r in allrecs) else 0


def _append(path: Path | None, records: list[dict[str, Any]]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
