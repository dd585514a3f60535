"""``bnbver train-bdnn DATA.csv``: train a binarized network by MILP (Kurtz & Bah).

DATA.csv holds one point per row: the features, then an integer class label in the last column;
an optional header row is skipped. Labels are mapped to class indices ``0..K-1`` in sorted order
(printed as ``classes``); the ONNX output ``scores`` has one column per class in that order.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bnbver.apps.bdnn import LOSSES, METHODS, BdnnOptions, TrainResult, train
from bnbver.apps.bdnn_model import ACTIVATIONS, WeightSpec
from bnbver.commands.common import check_writable, quiet
from bnbver.errors import InputError
from bnbver.progress import timed


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``train-bdnn``."""
    parser.add_argument("data", help="CSV file: features..., integer label (header row allowed)")
    parser.add_argument("--hidden", default="2", help="hidden widths, comma-separated (e.g. 16,16)")
    parser.add_argument("--weights", default="int:1",
                        help="weight domain: int:B (integers in -B..B) or cont:B (reals in [-B,B])")
    parser.add_argument("--method", choices=METHODS, default="exact")
    parser.add_argument("--activation", choices=ACTIVATIONS, default="step")
    parser.add_argument("--loss", choices=LOSSES, default="count")
    parser.add_argument("--robust-eps", type=float, default=0.0,
                        help="train robust to L-inf perturbations of this radius")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds (whole run)")
    parser.add_argument("--threads", type=int, default=1, help="HiGHS threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=10, help="k-means: initial clusters")
    parser.add_argument("--out", help="write the trained network to this ONNX file")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _is_number(text: str) -> bool:
    """Return whether ``text`` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_labelled_csv(path: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Read DATA.csv; return features ``(N, d)``, class indices ``(N,)`` and the sorted labels.

    Raises:
        InputError: missing file, ragged rows, non-numeric values or non-integer labels
            (the message names the line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such file")
    with p.open(newline="") as fh:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(fh), start=1)
                if any(c.strip() for c in row)]
    if rows and not all(_is_number(c) for c in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise InputError(path, "no data rows")
    width = len(rows[0][1])
    if width < 2:
        raise InputError(path, f"line {rows[0][0]}: expected features and a label, got 1 column")
    values = np.empty((len(rows), width))
    for r, (line, cells) in enumerate(rows):
        if len(cells) != width:
            raise InputError(path, f"line {line}: expected {width} columns, got {len(cells)}")
        for c, cell in enumerate(cells):
            if not _is_number(cell) or not math.isfinite(float(cell)):
                raise InputError(path, f"line {line}: column {c + 1} is not a finite number: "
                                       f"{cell!r}")
            values[r, c] = float(cell)
        if values[r, -1] != round(values[r, -1]):
            raise InputError(path, f"line {line}: the label {cells[-1]!r} is not an integer")
    labels = sorted({int(v) for v in values[:, -1]})
    index = {lab: k for k, lab in enumerate(labels)}
    y = np.array([index[int(v)] for v in values[:, -1]], dtype=np.int64)
    return values[:, :-1], y, labels


def _options(args: argparse.Namespace) -> BdnnOptions:
    """Build BdnnOptions from the arguments, as InputErrors naming the flag."""
    try:
        hidden = tuple(int(h) for h in str(args.hidden).split(","))
    except ValueError:
        raise InputError("--hidden",
                         f"expected comma-separated integers, got {args.hidden!r}") from None
    if not hidden or min(hidden) < 1:
        raise InputError("--hidden", "expected widths >= 1")
    try:
        spec = WeightSpec.parse(args.weights)
    except ValueError as exc:
        raise InputError("--weights", str(exc)) from None
    for flag, ok in (("--time-limit", args.time_limit > 0), ("--threads", args.threads >= 1),
                     ("--robust-eps", args.robust_eps >= 0), ("--clusters", args.clusters >= 1)):
        if not ok:
            raise InputError(flag, "expected a positive value")
    if args.robust_eps > 0 and args.loss != "count":
        raise InputError("--robust-eps", "the robust variant needs --loss count")
    return BdnnOptions(hidden=hidden, spec=spec, activation=args.activation, method=args.method,
                       loss=args.loss, robust_eps=args.robust_eps, time_limit=args.time_limit,
                       threads=args.threads, seed=args.seed, clusters=args.clusters)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr meanwhile, so solver banners cannot spoil the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def summary(result: TrainResult, n_points: int, labels: list[int]) -> dict[str, object]:
    """Return the JSON-ready summary of a training run."""
    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {"method": result.method, "status": result.status.value,
            "train_accuracy": 1.0 - result.train_errors / n_points,
            "train_errors": result.train_errors, "objective": num(result.objective),
            "bound": num(result.bound), "gap": num(result.gap), "seconds": result.seconds,
            "solves": result.solves, "points": n_points, "classes": labels,
            "hidden": list(result.network.hidden)}


def run(args: argparse.Namespace) -> int:
    """Train, print the summary and optionally write the ONNX model."""
    x, y, labels = read_labelled_csv(args.data)
    options = _options(args)
    options = BdnnOptions(**{**options.__dict__, "num_classes": max(len(labels), 2)})
    if args.out:
        check_writable(args.out)
    with _stdout_to_stderr(), timed("train-bdnn", options.time_limit,
                                    enabled=not quiet(args)):
        result = train(x, y, options)
    info = summary(result, len(y), labels)
    if args.out:
        from bnbver.io.bdnn_onnx import save_bdnn_onnx

        save_bdnn_onnx(args.out, result.network.weights, result.network.biases,
                       result.network.activation)
        info["out"] = str(args.out)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:15s} {value}")
    return 0
