"""Compare the root bounds (and their time) of two bnbver checkouts on chain benchmarks.

Usage::

    python scripts/bench_graph.py --smoke                       # seconds (CI): this checkout
    python scripts/bench_graph.py --baseline /path/to/main/checkout \
        --suites oval21,mnist_fc --out results/graph_bounds.md

Issue 19 made the IR a DAG; a chain must keep its bounds exactly. For every instance of the
suites (its first property) each checkout, in its own process (``--worker``), bounds the root
by IBP, CROWN and alpha-CROWN (``bnbver.bounds``, 20 iterations, float64, one thread) with the
specification stacked as the BaB does (``bab.bounding.stack_rows``). The report gives, per
suite and method, how many instances have bit-identical margin and intermediate bounds, the
largest difference, and the time ratio (this checkout / baseline; each side runs
``--repeats`` times, alternating, and every bound keeps its fastest time).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import ScriptError, clean_exit  # noqa: E402

METHODS = ("ibp", "crown", "alpha")


def worker(root: Path, instances: list[tuple[str, str, str]], out: Path) -> None:
    """Bound every instance with the bnbver found at ``root``; write an npz and timings."""
    for name in [m for m in sys.modules if m == "bnbver" or m.startswith("bnbver.")]:
        del sys.modules[name]  # the error harness imported this checkout's bnbver
    sys.path.insert(0, str(root))
    import torch

    import bnbver
    from bnbver.bab.bounding import stack_rows
    from bnbver.bounds import BoundsOptions, bound_root, prepare
    from bnbver.io.loaders import load_network, load_properties

    torch.set_num_threads(1)
    assert Path(bnbver.__file__).resolve().is_relative_to(root.resolve()), bnbver.__file__
    arrays: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    warm = load_network(instances[0][1])  # first-call costs (imports, kernels) untimed
    bound_root(prepare(warm), np.zeros(warm.input_size), np.zeros(warm.input_size))
    for suite, net_path, prop_path in instances:
        net = load_network(net_path)
        prop = load_properties(prop_path, net)[0]
        C, d, _ = stack_rows(prop)
        bn = prepare(net, C, d)
        for method in METHODS:
            key = f"{suite}|{Path(net_path).name}|{Path(prop_path).name}|{method}"
            t0 = time.perf_counter()
            res = bound_root(bn, prop.box.lower, prop.box.upper, BoundsOptions(method=method))
            times[key] = time.perf_counter() - t0
            arrays[key] = np.concatenate([res.row_lower[0].numpy(),
                                          *(t[0].numpy() for t in res.pre_lower),
                                          *(t[0].numpy() for t in res.pre_upper)])
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(times))


def instances(bench: Path, suites: list[str], limit: int | None) -> list[tuple[str, str, str]]:
    """Return (suite, onnx, vnnlib) rows of each suite's instances.csv."""
    rows = []
    for suite in suites:
        with open(bench / suite / "instances.csv") as fh:
            for k, row in enumerate(csv.reader(fh)):
                if limit is not None and k >= limit:
                    break
                rows.append((suite, str(bench / suite / row[0]), str(bench / suite / row[1])))
    return rows


def run_side(root: Path, rows: list[tuple[str, str, str]], folder: Path, name: str
             ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run the worker of one checkout in a fresh process; return its bounds and times."""
    spec = folder / "instances.json"
    spec.write_text(json.dumps(rows))
    out = folder / f"{name}.npz"
    subprocess.run([sys.executable, __file__, "--worker", str(root), "--spec", str(spec),
                    "--dump", str(out)], check=True)
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(out.with_suffix(".json").read_text())


def report(base: tuple[dict[str, np.ndarray], dict[str, float]],
           new: tuple[dict[str, np.ndarray], dict[str, float]], command: str) -> str:
    """Return the Markdown table comparing the two sides."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key in new[0]:
        suite, _, _, method = key.split("|")
        groups.setdefault((suite, method), []).append(key)
    lines = [f"`{command}`", "",
             "| suite | method | instances | bit-identical | max abs difference | "
             "time graph / baseline |", "|---|---|---|---|---|---|"]
    for (suite, method), keys in sorted(groups.items()):
        same = sum(np.array_equal(new[0][k], base[0][k]) for k in keys)
        diff = max(float(np.max(np.abs(new[0][k] - base[0][k]), initial=0.0)) for k in keys)
        ratio = sum(new[1][k] for k in keys) / max(sum(base[1][k] for k in keys), 1e-12)
        lines.append(f"| {suite} | {method} | {len(keys)} | {same} | {diff:.3g} | "
                     f"{ratio:.3f} |")
    return "\n".join(lines) + "\n"


Side = tuple[dict[str, np.ndarray], dict[str, float]]


def _fastest(old: Side, run: Side) -> Side:
    """Return the run's bounds with, per key, the faster of the two times."""
    return run[0], {k: min(t, old[1].get(k, np.inf)) for k, t in run[1].items()}


def smoke_rows(folder: Path) -> list[tuple[str, str, str]]:
    """Write a tiny chain network and property; return its instance row."""
    from bnbver.io.onnx_export import save_onnx
    from bnbver.network import Dense, Network, ReLU

    rng = np.random.default_rng(0)
    net = Network((Dense(rng.normal(size=(6, 3)), rng.normal(size=6)), ReLU(6),
                   Dense(rng.normal(size=(2, 6)), rng.normal(size=2))), (3,))
    save_onnx(net, folder / "tiny.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(3)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -0.5))\n(assert (<= X_{i} 0.5))" for i in range(3)]
    lines.append("(assert (>= Y_1 Y_0))")
    (folder / "tiny.vnnlib").write_text("\n".join(lines) + "\n")
    return [("smoke", str(folder / "tiny.onnx"), str(folder / "tiny.vnnlib"))]


def _validate(args: argparse.Namespace) -> None:
    """Refuse a baseline that is not a bnbver checkout, a missing benchmarks folder or an
    output folder that does not exist, before any work."""
    if args.baseline is not None and not (args.baseline / "bnbver" / "__init__.py").is_file():
        raise ScriptError(f"{args.baseline}: not a bnbver checkout (no bnbver/__init__.py)")
    if not args.smoke and not args.benchmarks.is_dir():
        raise ScriptError(f"{args.benchmarks}: no such benchmarks folder")
    if args.out is not None and not args.out.parent.is_dir():
        raise ScriptError(f"{args.out.parent}: no such folder for --out")


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Run the comparison (or one worker)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, help="the other checkout (e.g. main)")
    ap.add_argument("--benchmarks", type=Path, default=REPO.parent / "shared" / "benchmarks")
    ap.add_argument("--suites", default="oval21,mnist_fc")
    ap.add_argument("--limit", type=int, help="instances per suite")
    ap.add_argument("--out", type=Path, help="Markdown report to write")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side (fastest kept)")
    ap.add_argument("--smoke", action="store_true", help="a tiny chain net against itself")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        worker(args.worker, [tuple(r) for r in json.loads(args.spec.read_text())], args.dump)
        return 0
    if args.baseline is None and not args.smoke:
        ap.error("--baseline is required (or --smoke)")
    _validate(args)
    with tempfile.TemporaryDirectory(prefix="bnbver-graph-") as tmp:
        folder = Path(tmp)
        rows = smoke_rows(folder) if args.smoke else instances(
            args.benchmarks, args.suites.split(","), args.limit)
        base = new = ({}, {})
        for _ in range(args.repeats):
            base = _fastest(base, run_side(args.baseline or REPO, rows, folder, "baseline"))
            new = _fastest(new, run_side(REPO, rows, folder, "graph"))
    text = report(base, new, "python scripts/bench_graph.py " + " ".join(argv or sys.argv[1:]))
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
