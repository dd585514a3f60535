"""Benchmark the bounds engine: bound quality per method and batched throughput on the CPU.

Usage::

    python scripts/bench_bounds.py --smoke            # seconds, tiny random net (CI)
    python scripts/bench_bounds.py [BENCHMARKS_DIR]   # full run, writes results/bounds.md

The full run, for MNIST (mnist-net_256x2/4/6, prop_0_0.03 and prop_1_0.03; throughput on
prop_1, which CROWN does not prove, so alpha/beta run all their iterations) and two ACAS Xu
instances:

- quality: the root's worst disjunct lower bound (a disjunct ``C y <= d`` is excluded when any
  of its rows has a positive margin bound; the node bound is the minimum over disjuncts of the
  maximum over its rows) for IBP, CROWN, alpha-CROWN (also with alpha-optimised intermediate
  bounds), and, after splitting the three most
  unstable neurons (8 children), the worst child under alpha and under alpha+beta;
- throughput: nodes per second of one ``bound_batch`` call with inherited intermediate bounds
  for batches of 1, 64 and 1024 nodes (CROWN in float64 and float32; alpha and beta with 20
  iterations in float64 for 1 and 64 nodes).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402

from bnbver.bounds import (  # noqa: E402
    BoundResult,
    BoundsOptions,
    NodeBatch,
    bound_batch,
    bound_root,
    prepare,
    stable_neurons,
)
from bnbver.network import Dense, Network, ReLU  # noqa: E402

MNIST = [("mnist_fc", f"onnx/mnist-net_256x{k}.onnx", f"vnnlib/prop_{i}_0.03.vnnlib")
         for k in (2, 4, 6) for i in (0, 1)]
ACAS = [("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
        ("acasxu", "onnx/ACASXU_run2a_1_9_batch_2000.onnx", "vnnlib/prop_3.vnnlib")]
BATCHES = (1, 64, 1024)
N_SPLITS = 3


def load_instance(bench: Path, folder: str, onnx_rel: str,
                  vnnlib_rel: str) -> tuple[Network, np.ndarray, np.ndarray, np.ndarray,
                                            np.ndarray, list[int]]:
    """Return (network, lower, upper, C, d, disjunct sizes) of an instance."""
    from bnbver.io.loaders import load_network, load_properties

    net = load_network(bench / folder / onnx_rel)
    prop = load_properties(bench / folder / vnnlib_rel, net)[0]
    C = np.concatenate([h.C for h in prop.unsafe.disjuncts])
    d = np.concatenate([h.d for h in prop.unsafe.disjuncts])
    groups = [h.C.shape[0] for h in prop.unsafe.disjuncts]
    return net, prop.box.lower, prop.box.upper, C, d, groups


def node_bound(rows: torch.Tensor, groups: list[int]) -> torch.Tensor:
    """Return (B,) min over disjuncts of the max over the disjunct's rows."""
    parts = torch.split(rows, groups, dim=1)
    return torch.stack([p.max(dim=1).values for p in parts], dim=1).min(dim=1).values


def most_unstable(res: BoundResult, k: int) -> list[tuple[int, int]]:
    """Return the k unstable neurons with the largest ``-l * u`` (a simple branching score)."""
    scored = []
    for layer, (lo, hi, st) in enumerate(zip(res.pre_lower, res.pre_upper,
                                             stable_neurons(res.state), strict=True)):
        score = torch.where(st[0] == 0, -lo[0] * hi[0], torch.zeros_like(lo[0]))
        for j in torch.topk(score, min(k, score.numel())).indices.tolist():
            if float(score[j]) > 0:
                scored.append((float(score[j]), layer, j))
    return [(layer, j) for _, layer, j in sorted(scored, reverse=True)[:k]]


def children(root: BoundResult, lo: np.ndarray, hi: np.ndarray, sizes: list[int],
             k: int) -> NodeBatch:
    """Return the 2^k children of the root splitting its k most unstable neurons."""
    picks = most_unstable(root, k)
    n = 2 ** len(picks)
    splits = [torch.zeros((n, m), dtype=torch.int8) for m in sizes]
    for c in range(n):
        for bit, (layer, j) in enumerate(picks):
            splits[layer][c, j] = 1 if (c >> bit) & 1 else -1
    return NodeBatch(torch.tensor(lo).expand(n, -1), torch.tensor(hi).expand(n, -1),
                     tuple(splits), root.state.take(torch.zeros(n, dtype=torch.long)))


def random_batch(root: BoundResult, lo: np.ndarray, hi: np.ndarray, sizes: list[int], n: int,
                 seed: int, k: int = 5) -> NodeBatch:
    """Return n nodes with k random splits each on root-unstable neurons, inheriting."""
    rng = np.random.default_rng(seed)
    splits = [np.zeros((n, m), dtype=np.int8) for m in sizes]
    unstable = [(layer, j) for layer, st in enumerate(stable_neurons(root.state))
                for j in (st[0] == 0).nonzero().flatten().tolist()]
    for b in range(n):
        for i in rng.choice(len(unstable), size=min(k, len(unstable)), replace=False):
            layer, j = unstable[i]
            splits[layer][b, j] = rng.choice([-1, 1])
    return NodeBatch(torch.tensor(lo).expand(n, -1), torch.tensor(hi).expand(n, -1),
                     tuple(torch.from_numpy(s) for s in splits),
                     root.state.take(torch.zeros(n, dtype=torch.long)))


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Return (min, median) seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def quality_row(name: str, net_ir: Network, lo: np.ndarray, hi: np.ndarray, C: np.ndarray,
                d: np.ndarray, groups: list[int], iterations: int) -> str:
    """Return a markdown row: root bounds per method and the worst child after splits."""
    cells = [name]
    net = prepare(net_ir, C, d)
    root_alpha = None
    for method, deep in (("ibp", False), ("crown", False), ("alpha", False), ("alpha", True)):
        opts = BoundsOptions(method=method, iterations=iterations, optimize_intermediate=deep)
        t = time.perf_counter()
        res = bound_root(net, lo, hi, opts)
        cells.append(f"{float(node_bound(res.row_lower, groups)[0]):.4f} "
                     f"({time.perf_counter() - t:.2f}s)")
        root_alpha = res
    assert root_alpha is not None
    batch = children(root_alpha, lo, hi, net_ir.relu_sizes, N_SPLITS)
    for method in ("alpha", "beta"):
        res = bound_batch(net, batch, BoundsOptions(method=method, iterations=iterations))
        open_nodes = ~res.infeasible
        worst = node_bound(res.row_lower[open_nodes], groups).min() if bool(
            open_nodes.any()) else torch.tensor(float("inf"))
        cells.append(f"{float(worst):.4f}")
    return "| " + " | ".join(cells) + " |"


def throughput_rows(name: str, net_ir: Network, lo: np.ndarray, hi: np.ndarray, C: np.ndarray,
                    d: np.ndarray, repeats: int) -> list[str]:
    """Return markdown rows of nodes/second per method, dtype and batch size."""
    rows = []
    configs = [("crown", torch.float64, BATCHES), ("crown", torch.float32, BATCHES),
               ("alpha", torch.float64, (1, 64)), ("beta", torch.float64, (1, 64))]
    for method, dtype, batches in configs:
        opts = BoundsOptions(method=method, iterations=20, dtype=dtype)
        net = prepare(net_ir, C, d, opts)
        root = bound_root(net, lo, hi, BoundsOptions(method="crown", dtype=dtype))
        for n in batches:
            batch = random_batch(root, lo, hi, net_ir.relu_sizes, n, seed=n)
            best, med = timed(lambda b=batch, o=opts, nt=net: bound_batch(nt, b, o),
                              repeats if method == "crown" else 1)
            rows.append(f"| {name} | {method} | {str(dtype).split('.')[-1]} | {n} | "
                        f"{best:.4f} | {med:.4f} | {n / best:,.0f} |")
    return rows


def machine() -> str:
    """Return the CPU model line and the core count."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                      if ln.startswith("Model name")), platform.processor())
    except OSError:
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.2f}"


def full(bench: Path, out: Path, iterations: int, repeats: int) -> None:
    """Run the full benchmark and write ``out``."""
    instances = [(f"{Path(o).stem} {Path(v).stem}", load_instance(bench, f, o, v))
                 for f, o, v in MNIST + ACAS]
    lines = ["# Bounds engine benchmark", "",
             f"Machine: {machine()}.", "",
             "Command: `python scripts/bench_bounds.py " + " ".join(sys.argv[1:]) + "`", "",
             "## Bound quality (root; worst disjunct; higher is tighter; > 0 proves)", "",
             f"alpha/beta: {iterations} Adam iterations. Children: the {N_SPLITS} most unstable "
             "neurons of the alpha root split both ways (8 children), worst child shown.", "",
             "| instance | IBP | CROWN | alpha | alpha, optimised intermediate | "
             "children alpha | children alpha+beta |",
             "|---|---|---|---|---|---|---|"]
    for name, (net_ir, lo, hi, C, d, groups) in instances:
        lines.append(quality_row(name, net_ir, lo, hi, C, d, groups, iterations))
        print(lines[-1], flush=True)
    lines += ["", "## Throughput of one bound_batch call (inherited intermediate bounds)", "",
              "Each node has 5 random splits on root-unstable neurons; seconds are the min and "
              f"median of {repeats} calls after a warm-up (alpha/beta: one call, 20 "
              "iterations).", "",
              "| network | method | dtype | batch | min s | median s | nodes/s |",
              "|---|---|---|---|---|---|---|"]
    for name, (net_ir, lo, hi, C, d, _) in instances:
        if "prop_3" in name or "prop_0" in name:
            continue
        for row in throughput_rows(name.split()[0], net_ir, lo, hi, C, d, repeats):
            lines.append(row)
            print(row, flush=True)
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.2f} (timings are only "
              "meaningful when it stays near or below the core count)."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def smoke() -> None:
    """Bound a tiny random net with every method and a small batch; check basic sanity."""
    rng = np.random.default_rng(0)
    layers: list = []
    sizes = [5, 16, 16, 3]
    for i in range(3):
        layers.append(Dense(rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i]),
                            rng.normal(size=sizes[i + 1]) * 0.1))
        if i < 2:
            layers.append(ReLU(sizes[i + 1]))
    net_ir = Network(tuple(layers), (5,))
    C, d = np.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]]), np.zeros(2)
    lo, hi = -np.ones(5) * 0.5, np.ones(5) * 0.5
    net = prepare(net_ir, C, d)
    bounds = {}
    for method in ("ibp", "crown", "alpha", "beta"):
        res = bound_root(net, lo, hi, BoundsOptions(method=method, iterations=5))
        bounds[method] = float(res.row_lower.min())
    assert bounds["ibp"] <= bounds["crown"] <= bounds["alpha"] + 1e-12, bounds
    batch = random_batch(res, lo, hi, net_ir.relu_sizes, 8, seed=0, k=2)
    kids = bound_batch(net, batch, BoundsOptions(method="beta", iterations=5))
    x = rng.uniform(lo, hi, size=(2000, 5))
    assert float((net_ir.forward(x) @ C.T - d).min()) >= bounds["alpha"] - 1e-9
    print(f"smoke ok: root {bounds}; 8 children bounded, "
          f"{int(kids.infeasible.sum())} infeasible")


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the smoke or the full benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmarks", nargs="?", default=str(REPO.parent / "shared" / "benchmarks"))
    ap.add_argument("--smoke", action="store_true", help="tiny random net, a few seconds")
    ap.add_argument("--out", default=str(REPO / "results" / "bounds.md"))
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        smoke()
        return 0
    full(Path(args.benchmarks), Path(args.out), args.iterations, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
