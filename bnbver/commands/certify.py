"""``bnbver certify MODEL --data DATA --eps E1,E2 --out results.csv``: certify a data set.

Writes one CSV row per (sample, eps) as samples finish (columns ``FIELDS``; ``lower_bound``
is the best proven lower bound of ``min_j y_label - y_j`` over the ball, ``counterexample``
the ``.npy`` file of a violating input, relative to the CSV's folder) and prints one summary
line per eps on stdout: clean accuracy, verified robust accuracy and falsified share over
all samples. ``--resume`` keeps the rows already in ``--out`` and runs only what is missing.
See :mod:`bnbver.apps.certify` for the statuses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.apps.certify import Row, Setup, Task, prepare, run_tasks, summarize
from bnbver.commands.common import (
    check_positive,
    check_writable,
    domain_arg,
    float_list,
    int_list,
    quiet,
    read_rows,
)
from bnbver.errors import InputError
from bnbver.progress import Progress

FIELDS = ["index", "eps", "status", "seconds", "nodes", "lower_bound", "predicted", "label",
          "counterexample", "cex_class", "message"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``certify``."""
    parser.add_argument("model", help="model file: .onnx, .nnet, or .pt/.pth (torch)")
    parser.add_argument("--data", required=True,
                        help=".npz (x, y), CSV (label column or first), or MNIST idx3 file")
    parser.add_argument("--eps", required=True, help="L-inf radii, comma-separated")
    parser.add_argument("--out", required=True, help="CSV file, one row per (sample, eps)")
    parser.add_argument("--domain", default=None, help="input domain lo,hi, e.g. 0,1")
    parser.add_argument("--mean", default=None,
                        help="normalisation mean(s) the model expects (one or per channel)")
    parser.add_argument("--std", default=None, help="normalisation std(s) (with --mean)")
    parser.add_argument("--indices", default=None, help="sample numbers, comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="certify at most N samples")
    parser.add_argument("--jobs", type=int, default=1, help="samples in parallel (joblib)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds per (sample, eps) (default 60)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out; run only the missing ones")
    parser.add_argument("--cex-dir", default=None,
                        help="folder of counterexample .npy files (default: <out>_cex)")
    parser.add_argument("--factory", default=None,
                        help="module:function (or file.py:function) building the torch "
                             "module of a state dict")
    parser.add_argument("--input-shape", default=None,
                        help="input shape of a torch model fed flat data, e.g. 1,28,28")
    parser.add_argument("--scale", type=float, default=None,
                        help="divide CSV values by this (default: 255 for 0..255 pixels)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the falsifier")
    parser.add_argument("--device", default="cpu", help="torch device for the bounds")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any BabOptions/AttackOptions field (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Certify, stream rows to ``--out``, print the summary; 1 if any row is an error."""
    from bnbver.driver import parse_options, validate_device
    from bnbver.io.datasets import load_dataset
    from bnbver.io.loaders import load_model

    check_positive(args.timeout, "--timeout")
    check_positive(args.jobs, "--jobs", integer=True)
    check_positive(args.limit, "--limit", integer=True)
    validate_device(args.device)
    out = Path(args.out)
    check_writable(out)
    cex_dir = Path(args.cex_dir) if args.cex_dir else out.with_name(out.stem + "_cex")
    _check_cex_dir(cex_dir)
    kept = _kept_rows(out) if args.resume else []
    options: dict[str, Any] = {"timeout": args.timeout, "seed": args.seed,
                               "device": args.device, **parse_options(args.option)}
    data = load_dataset(args.data, int_list(args.indices, "--indices") if args.indices
                        else None, args.limit, args.scale)
    model = load_model(args.model, args.factory)
    setup, tasks = prepare(
        model, data.x, data.y, float_list(args.eps, "--eps"),
        domain=domain_arg(args.domain), indices=data.indices.tolist(),
        mean=None if args.mean is None else float_list(args.mean, "--mean"),
        std=None if args.std is None else float_list(args.std, "--std"),
        input_shape=int_list(args.input_shape, "--input-shape") if args.input_shape else None,
        jobs=args.jobs, **options)
    todo = _missing(tasks, kept)
    if kept and not quiet(args):
        print(f"resuming: {len(kept)} rows kept in {out}, {len(todo)} samples to run",
              file=sys.stderr)
    rows = kept + _run(setup, todo, args, out, cex_dir, bool(kept))
    for s in summarize(rows):
        print(s.line())
    return 1 if any(r["status"] == "error" for r in rows) else 0


def _check_cex_dir(cex_dir: Path) -> None:
    """Raise InputError unless counterexamples can be written into ``cex_dir``."""
    if cex_dir.exists() and not cex_dir.is_dir():
        raise InputError(str(cex_dir), "--cex-dir: is a file, expected a folder")
    check_writable(cex_dir / "cex.npy" if cex_dir.is_dir() else cex_dir, "--cex-dir")


def _run(setup: Setup, todo: list[Task], args: argparse.Namespace, out: Path, cex_dir: Path,
         append: bool) -> list[dict[str, str]]:
    """Run the tasks, writing each row as its sample finishes; return the rows written."""
    written: list[dict[str, str]] = []
    with out.open("a" if append else "w", newline="") as f, Progress(
            len(todo), "certify", enabled=not quiet(args)) as bar:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if not append:
            writer.writeheader()
        for rows in run_tasks(setup, todo, args.jobs):
            for row in rows:
                written.append(_csv_row(row, out, cex_dir))
                writer.writerow(written[-1])
            f.flush()
            done = " ".join(f"eps {r.eps:g} {r.status}" for r in rows)
            bar.update(info=f"sample {rows[0].index}: {done}" if rows else "")
    return written


def _csv_row(row: Row, out: Path, cex_dir: Path) -> dict[str, str]:
    """Return the CSV form of a row, saving its counterexample as .npy."""
    cex_path = ""
    if row.counterexample is not None:
        cex_dir.mkdir(parents=True, exist_ok=True)
        target = cex_dir / f"{row.index}_eps{row.eps:g}.npy"
        np.save(target, row.counterexample)
        cex_path = _relative(target, out.parent)
    return {"index": str(row.index), "eps": repr(row.eps), "status": row.status,
            "seconds": f"{row.seconds:.3f}", "nodes": str(row.nodes),
            "lower_bound": "" if row.lower_bound is None else repr(float(row.lower_bound)),
            "predicted": str(row.predicted), "label": str(row.label),
            "counterexample": cex_path,
            "cex_class": "" if row.cex_class is None else str(row.cex_class),
            "message": row.message.replace("\n", " ")[:300]}


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _missing(tasks: list[Task], kept: list[dict[str, str]]) -> list[Task]:
    """Return the tasks reduced to the eps that have no kept row (dropping finished ones)."""
    done = {(int(r["index"]), float(r["eps"])) for r in kept}
    out = []
    for t in tasks:
        eps = tuple(e for e in t.eps if (t.index, e) not in done)
        if eps:
            out.append(Task(t.index, t.x, t.label, eps))
    return out


def _kept_rows(out: Path) -> list[dict[str, str]]:
    """Return the rows already in ``out`` (a certify CSV) for ``--resume``."""
    return read_rows(out, FIELDS)


