"""``bnbver run-suite instances.csv``: run a whole benchmark, one CSV row per instance.

Rows are flushed as instances finish (``instance`` = onnx and vnnlib paths, ``result``,
``seconds``, ``nodes``, plus ``expected`` and ``correct`` when an expected.csv sits next to the
instances file, and the ``commit`` that produced the row). One bad instance (a file that does
not load, an internal error) becomes an ``error`` row; the suite never stops on it.
``--resume`` keeps the rows already in ``--out`` and runs only the instances that have none
(a long run cut short goes on where it stopped).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnbver.commands.common import (
    check_positive,
    check_writable,
    code_version,
    quiet,
    read_rows,
)
from bnbver.errors import InputError
from bnbver.progress import Progress

FIELDS = ["onnx", "vnnlib", "result", "seconds", "nodes", "expected", "correct", "commit",
          "message"]


@dataclass(frozen=True)
class Instance:
    """One benchmark row: files (absolute) and the timeout in seconds."""

    onnx: Path
    vnnlib: Path
    timeout: float
    name_onnx: str
    name_vnnlib: str


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``run-suite``."""
    parser.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout; paths relative)")
    parser.add_argument("--out", required=True, help="CSV file to write, one row per instance")
    parser.add_argument("--jobs", type=int, default=1, help="instances run in parallel")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every instance's timeout (e.g. 0.1 for a quick pass)")
    parser.add_argument("--max-timeout", type=float, default=None, help="cap every timeout")
    parser.add_argument("--filter", default="", help="only instances whose paths contain this")
    parser.add_argument("--limit", type=int, default=None, help="run at most this many")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out; run only instances without one")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any BabOptions/AttackOptions field for every instance, e.g. "
                             "input_intermediate=crown (repeatable)")


def read_instances(path: Path) -> list[Instance]:
    """Parse instances.csv; raise InputError naming the line on a malformed row."""
    if not path.is_file():
        raise InputError(str(path), "no such file")
    out = []
    for lineno, row in enumerate(csv.reader(path.read_text().splitlines()), start=1):
        if not row or row[0].startswith("#"):
            continue
        if len(row) != 3:
            raise InputError(str(path), f"line {lineno}: expected onnx,vnnlib,timeout")
        try:
            timeout = float(row[2])
        except ValueError:
            raise InputError(str(path), f"line {lineno}: bad timeout {row[2]!r}") from None
        out.append(Instance(path.parent / row[0].strip(), path.parent / row[1].strip(),
                            timeout, row[0].strip(), row[1].strip()))
    return out


def read_expected(path: Path) -> dict[tuple[str, str], str]:
    """Return {(onnx, vnnlib): expected} from an expected.csv next to instances.csv."""
    if not path.is_file():
        return {}
    with path.open() as f:
        return {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}


def run_instance(inst: Instance, timeout: float,
                 options: dict[str, Any] | None = None) -> dict[str, str]:
    """Verify one instance in this process (``options``: extra verify keywords); never
    raises."""
    from bnbver.driver import verify
    from bnbver.io.loaders import load_network, load_properties

    start = time.monotonic()
    try:
        network = load_network(inst.onnx)
        props = load_properties(inst.vnnlib, network)
        left = max(timeout - (time.monotonic() - start), 0.1)
        result = verify(network, props, source_path=inst.onnx, timeout=left,
                        **(options or {}))
        word, nodes, msg = result.status.value, result.stats.nodes, result.message
    except Exception as exc:
        word, nodes, msg = "error", 0, f"{type(exc).__name__}: {exc}"
    return {"onnx": inst.name_onnx, "vnnlib": inst.name_vnnlib, "result": word,
            "seconds": f"{time.monotonic() - start:.3f}", "nodes": str(nodes),
            "message": msg.replace("\n", " ")[:300]}


def _run_all(instances: list[Instance], args: argparse.Namespace) -> Iterator[dict[str, str]]:
    def budget(inst: Instance) -> float:
        t = float(inst.timeout * args.timeout_scale)
        return min(t, float(args.max_timeout)) if args.max_timeout else t

    from bnbver.driver import parse_options

    options = parse_options(args.option)
    if args.jobs <= 1:
        for inst in instances:
            yield run_instance(inst, budget(inst), options)
        return
    from joblib import Parallel, delayed

    tasks = (delayed(_run_in_worker)(inst, budget(inst), options) for inst in instances)
    yield from Parallel(n_jobs=args.jobs, return_as="generator_unordered")(tasks)


def _run_in_worker(inst: Instance, timeout: float, options: dict[str, Any]) -> dict[str, str]:
    import torch

    torch.set_num_threads(1)
    return run_instance(inst, timeout, options)


def run(args: argparse.Namespace) -> int:
    """Run the suite, streaming rows to ``--out`` and progress to stderr."""
    from bnbver.driver import parse_options

    parse_options(args.option)  # bad options fail here, before any instance runs
    check_positive(args.jobs, "--jobs", integer=True)
    check_positive(args.limit, "--limit", integer=True)
    check_positive(args.timeout_scale, "--timeout-scale")
    check_positive(args.max_timeout, "--max-timeout")
    path = Path(args.instances)
    instances = [i for i in read_instances(path) if args.filter in f"{i.name_onnx},{i.name_vnnlib}"]
    instances = instances[: args.limit] if args.limit else instances
    expected = read_expected(path.parent / "expected.csv")
    out = Path(args.out)
    check_writable(out)
    kept = _kept_rows(out) if args.resume else []
    done_keys = {(r["onnx"], r["vnnlib"]) for r in kept}
    todo = [i for i in instances if (i.name_onnx, i.name_vnnlib) not in done_keys]
    counts: dict[str, int] = {}
    for row in kept:
        _count(counts, row)
    if kept and not quiet(args):
        print(f"resuming: {len(kept)} rows kept in {out}, {len(todo)} instances to run",
              file=sys.stderr)
    with out.open("a" if kept else "w", newline="") as f, Progress(
            len(todo), "run-suite", enabled=not quiet(args)) as bar:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if not kept:
            writer.writeheader()
        commit = code_version()
        for row in _run_all(todo, args):
            row["commit"] = commit
            row["expected"] = expected.get((row["onnx"], row["vnnlib"]), "")
            wrong = _count(counts, row)
            writer.writerow(row)
            f.flush()
            bar.update(info=f"{row['onnx']} {row['vnnlib']}: {row['result']} "
                       f"{row['seconds']}s{'  WRONG' if wrong else ''}")
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 1 if counts.get("WRONG") else 0


def _kept_rows(out: Path) -> list[dict[str, str]]:
    """Return the rows already in ``out`` (a run-suite CSV) for ``--resume``."""
    return read_rows(out, FIELDS)


def _count(counts: dict[str, int], row: dict[str, str]) -> bool:
    """Set ``row["correct"]`` from its expected answer, tally it; return True if wrong."""
    exp = row["expected"]
    decided = row["result"] in ("sat", "unsat")
    wrong = exp in ("sat", "unsat") and decided and exp != row["result"]
    row["correct"] = "" if not exp else ("WRONG" if wrong else "ok")
    counts[row["result"]] = counts.get(row["result"], 0) + 1
    counts["WRONG"] = counts.get("WRONG", 0) + int(wrong)
    return wrong
