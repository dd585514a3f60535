"""Reproduce the seed papers' MNIST experiments: exact minimal L1 adversarial examples and
feature visualisations, by bnbver's BaB and by HiGHS on each MILP formulation.

Images come from the MNIST test set held out from training (indices 8000..9999, see
``scripts/train_seed_nets.py``); the target rule is Fischetti & Jo's ``(label + 5) mod 10``;
the constraint is ``y_t >= 1.2 y_j``; the domain is [0, 1]^784. Every run has a time limit,
and a run counts as solved only with status ``optimal`` (gap <= 1e-4 relative).

Usage:
    python scripts/seed_experiments.py [DATA_DIR] [--images 4] [--timeout 15]
        [--nets mnist_fc8x3,...] [--methods bab,milp:bigm,...] [--out-name tables.md]
        [--first 0] [--no-visualize]
    python scripts/seed_experiments.py --smoke     # one image, tiny net, prints only

``--nets``, ``--methods`` and ``--tighten`` keep a slice of the plan (network file stems;
method names and tightening modes as in the tables), ``--first`` shifts the images so
shards can run side by side; the tables go to ``results/seeds/<out-name>``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402

from bnbver.apps.adversarial import minimal_adversarial  # noqa: E402
from bnbver.apps.images import (  # noqa: E402
    image_shape,
    read_idx_images,
    read_idx_labels,
    save_grid_png,
)
from bnbver.apps.optimize import OptimizeOptions  # noqa: E402
from bnbver.apps.visualize import maximize_unit  # noqa: E402
from bnbver.io.loaders import load_network  # noqa: E402
from bnbver.progress import Progress  # noqa: E402

SEEDS = REPO / "examples" / "seed_nets"
#: (network file, images, [(method, tighten), ...]); images is a cap on --images
ALL_RUNS = [("bab", "none"), ("bab", "lp"), ("milp:bigm", "none"), ("milp:bigm", "lp"),
            ("milp:partition:2", "none"), ("milp:extended", "none")]
PLAN = [
    (SEEDS / "mnist_fc8x3.onnx", 99, ALL_RUNS),
    (SEEDS / "mnist_fc20x3.onnx", 99, ALL_RUNS),
    (SEEDS / "mnist_fc40x3.onnx", 99, ALL_RUNS),
    (SEEDS / "mnist_pool.onnx", 99, ALL_RUNS[:4]),
    ("mnist_fc/onnx/mnist-net_256x2.onnx", 99, ALL_RUNS[:4]),
]
UNITS = [(2, 0), (2, 1), (2, 2), (2, 3)]


def adversarial_rows(net_path: Path, xs: np.ndarray, labels: np.ndarray,
                     runs: list[tuple[str, str]], timeout: float,
                     first: int = 0) -> list[dict[str, object]]:
    """Run every (method, tighten) on every image; return one row per run (images are
    numbered from ``first``: their index among the held-out images)."""
    net = load_network(net_path)
    rows = []
    with Progress(len(xs) * len(runs), net_path.stem) as bar:
        for i, (x, label) in enumerate(zip(xs, labels, strict=True), start=first):
            target = int((label + 5) % 10)
            for method, tighten in runs:
                opts = OptimizeOptions(time_limit=timeout, tighten=tighten)
                res = minimal_adversarial(net, x, target, norm="l1", margin=1.2,
                                          options=opts, method=method)
                rows.append({"net": net_path.stem, "image": i, "method": method,
                             "tighten": tighten, "status": res.status.value,
                             "l1": res.distance, "bound": res.bound, "seconds": res.seconds,
                             "unstable": res.solve.unstable, "res": res})
                bar.update(info=f"img {i} {method:17s} {tighten:5s} {res.status.value:9s} "
                           f"L1 {res.distance:8.4f} bound {res.bound:8.4f} "
                           f"{res.seconds:6.2f} s")
    return rows


ROW_FIELDS = ["net", "image", "method", "tighten", "status", "l1", "bound", "seconds",
              "unstable"]


def write_rows(rows: list[dict[str, object]], path: Path) -> None:
    """Write the runs' rows (without the result objects) as CSV, for ``--merge``."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ROW_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def read_rows(path: Path) -> list[dict[str, object]]:
    """Read rows written by :func:`write_rows` back, numbers as numbers."""
    with path.open() as f:
        return [{**r, "image": int(r["image"]), "l1": float(r["l1"]), "bound": float(r["bound"]),
                 "seconds": float(r["seconds"]), "unstable": int(r["unstable"])}
                for r in csv.DictReader(f)]


def summary(rows: list[dict[str, object]]) -> list[str]:
    """Return markdown table lines: per (net, method, tighten) solved count and times."""
    lines = ["| network | method | tightening | solved | median s (solved) | mean s (all) "
             "| mean L1 (optimal) | unstable ReLUs |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["net"], r["method"], r["tighten"]) for r in rows}, key=str)
    for key in keys:
        sel = [r for r in rows if (r["net"], r["method"], r["tighten"]) == key]
        ok = [r for r in sel if r["status"] == "optimal"]
        med = statistics.median(float(r["seconds"]) for r in ok) if ok else float("nan")
        mean_all = statistics.mean(float(r["seconds"]) for r in sel)
        l1 = statistics.mean(float(r["l1"]) for r in ok) if ok else float("nan")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(ok)}/{len(sel)} | {med:.2f} "
                     f"| {mean_all:.2f} | {l1:.3f} | {sel[0]['unstable']} |")
    return lines


def per_image(rows: list[dict[str, object]]) -> list[str]:
    """Return one table per network: seconds to the proven optimum per image and run."""
    lines: list[str] = []
    for net in dict.fromkeys(str(r["net"]) for r in rows):
        sel = [r for r in rows if r["net"] == net]
        runs = list(dict.fromkeys((str(r["method"]), str(r["tighten"])) for r in sel))
        lines += [f"Seconds to the proven optimum on {net} (`-` = not optimal in time):", "",
                  "| image (L1 optimum) | " + " | ".join(f"{m} {t}" for m, t in runs) + " |",
                  "|---" * (len(runs) + 1) + "|"]
        for img in dict.fromkeys(int(r["image"]) for r in sel):  # type: ignore[call-overload]
            cells, opt = [], []
            for m, t in runs:
                hit = [r for r in sel
                       if r["image"] == img and (r["method"], r["tighten"]) == (m, t)]
                ok = hit and hit[0]["status"] == "optimal"
                cells.append(f"{float(hit[0]['seconds']):.2f}" if ok else "-")  # type: ignore[arg-type]
                if ok:
                    opt.append(float(hit[0]["l1"]))  # type: ignore[arg-type]
            name = f"{8000 + img} ({min(opt):.4f})" if opt else f"{8000 + img}"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def agreement(rows: list[dict[str, object]]) -> list[str]:
    """Return lines checking that optimal BaB and MILP distances agree within the gaps."""
    out = []
    by_img: dict[tuple[object, object], list[dict[str, object]]] = {}
    for r in rows:
        if r["status"] == "optimal":
            by_img.setdefault((r["net"], r["image"]), []).append(r)
    worst = 0.0
    for sel in by_img.values():
        vals = [float(r["l1"]) for r in sel]
        worst = max(worst, (max(vals) - min(vals)) / max(min(vals), 1e-9))
    out.append(f"Largest relative spread of the optimal L1 distance across methods for one "
               f"image: {worst:.2e} (over {len(by_img)} images solved by at least one method).")
    return out


def visualize_grid(net_path: Path, timeout: float, out: Path | None) -> list[str]:
    """Maximise a few units of the last hidden layer; return table lines (and a PNG)."""
    net = load_network(net_path)
    lines = ["| unit | status | max pre-activation | proven upper bound | seconds |",
             "|---|---|---|---|---|"]
    images, titles = [], []
    for layer, index in UNITS:
        res = maximize_unit(net, layer, index, options=OptimizeOptions(time_limit=timeout,
                                                                       tighten="none"))
        print(f"visualize {layer}:{index} {res.status.value} {res.objective:.4f} "
              f"<= {res.bound:.4f} {res.seconds:.2f} s", flush=True)
        lines.append(f"| {layer}:{index} | {res.status.value} | {res.objective:.4f} | "
                     f"{res.bound:.4f} | {res.seconds:.2f} |")
        if res.x is not None:
            images.append(res.x)
            titles.append(f"unit {layer}:{index}")
    if out is not None and images:
        save_grid_png(out / "visualize_fc8x3.png", images, titles, image_shape(net))
    return lines


@clean_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "benchmarks"))
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--nets", default="", help="comma-separated network stems (default all)")
    parser.add_argument("--methods", default="", help="comma-separated methods (default all)")
    parser.add_argument("--out-name", default="tables.md", help="file name of the tables")
    parser.add_argument("--tighten", default="",
                        help="comma-separated tightening modes to keep (default all)")
    parser.add_argument("--first", type=int, default=0,
                        help="first held-out image (shards of one plan run side by side)")
    parser.add_argument("--no-visualize", action="store_true",
                        help="skip the feature visualisations (e.g. in all but one shard)")
    parser.add_argument("--merge", default="",
                        help="comma-separated row CSVs of earlier shards: write their tables")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    mnist = data / "data" / "mnist"
    xs = read_idx_images(mnist / "t10k-images-idx3-ubyte.gz")[8000:]
    ys = read_idx_labels(mnist / "t10k-labels-idx1-ubyte.gz")[8000:]
    if args.smoke:
        rows = adversarial_rows(PLAN[0][0], xs[:1], ys[:1], [("bab", "none"),
                                                              ("milp:bigm", "none")], 5.0)
        print("\n".join(summary(rows)))
        return 0
    t0 = time.monotonic()
    out = REPO / "results" / "seeds"
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merged = [r for f in args.merge.split(",") for r in read_rows(Path(f))]
        text = ["## Minimal L1 adversarial examples (margin 1.2)", "", *summary(merged), "",
                *agreement(merged), "", *per_image(merged)]
        (out / args.out_name).write_text("\n".join(text) + "\n")
        print("\n".join(text))
        return 0
    rows: list[dict[str, object]] = []
    a = args.first
    for p, n, runs in selected_plan(data, args):
        rows += adversarial_rows(p, xs[a:a + n], ys[a:a + n], runs, args.timeout, a)
    write_rows(rows, (out / args.out_name).with_suffix(".csv"))
    _adversarial_grid(rows, out)
    vis = [] if args.no_visualize else visualize_grid(PLAN[0][0], args.timeout, out)
    text = ["## Minimal L1 adversarial examples (margin 1.2)", "", *summary(rows), "",
            *agreement(rows), "", *per_image(rows),
            "## Feature visualisation (mnist_fc8x3, layer 2)", "", *vis,
            "", f"Total wall time {time.monotonic() - t0:.0f} s."]
    (out / args.out_name).write_text("\n".join(text) + "\n")
    print("\n".join(text))
    return 0


def selected_plan(data: Path, args: argparse.Namespace
                  ) -> list[tuple[Path, int, list[tuple[str, str]]]]:
    """Return (network path, images, runs) of the PLAN entries that --nets/--methods/--tighten
    keep."""
    nets = {n for n in args.nets.split(",") if n}
    methods = {m for m in args.methods.split(",") if m}
    tightens = {t for t in getattr(args, "tighten", "").split(",") if t}
    out = []
    for path, cap, runs in PLAN:
        p = path if isinstance(path, Path) else data / path
        kept = [r for r in runs if (not methods or r[0] in methods)
                and (not tightens or r[1] in tightens)]
        if (not nets or p.stem in nets) and kept:
            out.append((p, min(cap, args.images), kept))
    return out


def _adversarial_grid(rows: list[dict[str, object]], out: Path) -> None:
    """Save original / adversarial / difference for the BaB runs on fc8x3."""
    sel = [r for r in rows if r["net"] == "mnist_fc8x3" and r["method"] == "bab"
           and r["tighten"] == "none" and r["status"] == "optimal"][:4]
    images, titles, signed = [], [], []
    for r in sel:
        res = r["res"]
        images += [res.x0, res.x, res.x - res.x0]  # type: ignore[attr-defined]
        titles += [f"img {r['image']}", f"-> {res.target}, L1 {res.distance:.2f}",  # type: ignore[attr-defined]
                   "difference"]
        signed += [False, False, True]
    if images:
        save_grid_png(out / "adversarial_fc8x3.png", images, titles, (1, 28, 28), ncols=3,
                      signed=signed)


if __name__ == "__main__":
    sys.exit(main())
