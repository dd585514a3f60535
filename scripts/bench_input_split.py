"""Benchmark intermediate-bound modes for input splitting (ACAS Xu): speed and tightness.

Usage::

    python scripts/bench_input_split.py --smoke              # seconds, tiny random net (CI)
    python scripts/bench_input_split.py [--out results/bounds.md]

For each instance, intermediate mode (``inherit``, ``crown``, ``forward``, ``forward-crown``)
and dtype, the children of a uniform grid split of the property's box into ``k^n_in`` boxes
(k = 2, 4, and 8 for the throughput) are bounded with CROWN final rows, each child inheriting
the CROWN root's state (as the BaB's input-split children do). Reported: the root's worst
disjunct bound with that mode, per grid the worst and median child bound and the fraction of
children proven (> 0), and children per second at k = 4 (batches of 1024).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402

from bnbver.bab.bounding import stack_rows  # noqa: E402
from bnbver.bounds import BoundsOptions, NodeBatch, bound_batch, bound_root, prepare  # noqa: E402
from bnbver.bounds.prepared import BoundedNetwork  # noqa: E402
from bnbver.io.onnx import load_onnx  # noqa: E402
from bnbver.io.vnnlib import parse_vnnlib  # noqa: E402
from bnbver.network import Network  # noqa: E402
from bnbver.spec import Property  # noqa: E402

MODES = ("inherit", "crown", "forward", "forward-crown")
INSTANCES = (("1_1", "prop_2"), ("1_9", "prop_7"), ("3_3", "prop_9"), ("2_3", "prop_3"))
CHUNK = 1024


def grid(lo: np.ndarray, hi: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the k^n boxes (each (k^n, n)) of a uniform grid split of [lo, hi]."""
    n = lo.shape[0]
    idx = np.stack(np.meshgrid(*[np.arange(k)] * n, indexing="ij"), -1).reshape(-1, n)
    width = (hi - lo) / k
    return lo + idx * width, np.where(idx == k - 1, hi, lo + (idx + 1) * width)


def node_bounds(rows: torch.Tensor, disj: np.ndarray) -> np.ndarray:
    """Return per node min over disjuncts of max over its rows, (B,)."""
    r = rows.double().numpy()
    per = np.stack([r[:, disj == k].max(1) for k in np.unique(disj)], 1)
    return per.min(1)


def bound_grid(net: BoundedNetwork, lo: np.ndarray, hi: np.ndarray, k: int,
               opts: BoundsOptions, disj: np.ndarray) -> tuple[np.ndarray, float]:
    """Return the children's node bounds and children per second of a k-grid."""
    root = bound_root(net, lo, hi, BoundsOptions(method="crown", dtype=opts.dtype))
    blo, bhi = grid(lo, hi, k)
    out = []
    seconds = 0.0
    for i in range(0, blo.shape[0], CHUNK):
        n = min(CHUNK, blo.shape[0] - i)
        state = root.state.take(torch.zeros(n, dtype=torch.long)).without_optimizer_state()
        splits = tuple(torch.zeros((n, m), dtype=torch.int8) for m in net.relu_sizes)
        batch = NodeBatch(torch.tensor(blo[i:i + n]), torch.tensor(bhi[i:i + n]), splits, state)
        t0 = time.perf_counter()
        res = bound_batch(net, batch, opts)
        seconds += time.perf_counter() - t0
        out.append(node_bounds(res.row_lower, disj))
    return np.concatenate(out), blo.shape[0] / seconds


def bench_instance(name: str, net_ir: Network, prop: Property, ks: tuple[int, ...],
                   speed_k: int) -> list[str]:
    """Return the markdown rows of one instance."""
    C, d, disj = stack_rows(prop)
    lo, hi = prop.box.lower, prop.box.upper
    rows = []
    for dtype in (torch.float64, torch.float32):
        net = prepare(net_ir, C, d, BoundsOptions(dtype=dtype))
        for mode in MODES:
            opts = BoundsOptions(method="crown", intermediate=mode, dtype=dtype)
            root = bound_batch(net, NodeBatch(torch.tensor(lo[None]), torch.tensor(hi[None]),
                               tuple(torch.zeros((1, m), dtype=torch.int8)
                                     for m in net.relu_sizes)), opts)
            cells = [f"{node_bounds(root.row_lower, disj)[0]:.4g}"]
            speed = 0.0
            for k in ks:
                b, per_s = bound_grid(net, lo, hi, k, opts, disj)
                speed = per_s if k == speed_k else speed
                cells.append(f"{b.min():.4g} / {np.median(b):.4g} / {(b > 0).mean():.3f}")
            rows.append(f"| {name} | {str(dtype)[6:]} | {mode} | " + " | ".join(cells)
                        + f" | {speed:,.0f} |")
            print(rows[-1], flush=True)
    return rows


def smoke_case() -> tuple[Network, Property]:
    """Return a tiny random 3-input net and an output-ordering property."""
    from bnbver.spec import HalfSpaces, InputBox, UnsafeSet
    from tests.conftest import random_relu_net
    net_ir = random_relu_net(np.random.default_rng(0), [3, 8, 8, 2])
    unsafe = UnsafeSet((HalfSpaces(np.array([[1.0, -1.0]]), np.array([0.0])),))
    return net_ir, Property(InputBox(-np.ones(3), np.ones(3)), unsafe, "smoke")


def machine() -> str:
    """Return the CPU model line and torch version."""
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    return f"{cpu or platform.processor()}, torch {torch.__version__}, 1 torch thread"


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and, without --smoke, append) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--bench", default="/work/shared/benchmarks/acasxu")
    parser.add_argument("--out", default=str(REPO / "results" / "bounds.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    header = ("| instance | dtype | intermediate | root | 2^n: worst / median / proven "
              "| 4^n: worst / median / proven | children/s (4^n) |\n|---|---|---|---|---|---|---|")
    print(header)
    if args.smoke:
        net_ir, prop = smoke_case()
        bench_instance("smoke", net_ir, prop, (2, 4), 4)
        return 0
    rows = []
    for net_name, prop_name in INSTANCES:
        onnx = Path(args.bench) / "onnx" / f"ACASXU_run2a_{net_name}_batch_2000.onnx"
        prop = parse_vnnlib(Path(args.bench) / "vnnlib" / f"{prop_name}.vnnlib")[0]
        rows += bench_instance(f"{net_name} {prop_name}", load_onnx(onnx), prop, (2, 4), 4)
    with open(args.out, "a") as f:
        f.write("\n## Intermediate bounds for input splitting (forward vs CROWN)\n\n"
                f"Machine: {machine()}.\n\nCommand: `python scripts/bench_input_split.py`\n\n"
                "Children of a uniform grid split of the box, each inheriting the CROWN root's "
                "state, bounded with CROWN final rows; bound = min over disjuncts of max over "
                "its rows; proven = fraction > 0.\n\n" + header + "\n" + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
