"""Root bounds in float64 and in float32, side by side: what float32's rounding allowance costs.

Usage::

    python scripts/bench_precision.py --smoke                                   # CI
    python scripts/bench_precision.py --suite sri_resnet_a --filter idx_4836_ --method crown

Per instance (the first disjunct of its property) the root's lower bound of the worst row,
with intermediate bounds by CROWN, computed by ``bound_root`` on the network prepared in each
dtype. Both are sound; their difference is what float32 rounding (and its allowance) costs
at the root. The bounds engine's centred form (``bnbver/bounds/centres.py``) is what keeps it
small.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_throughput import instances  # noqa: E402
from harness.errors import clean_exit  # noqa: E402

from bnbver.bounds import BoundsOptions, bound_root, prepare  # noqa: E402
from bnbver.io.loaders import load_network, load_properties  # noqa: E402

EXAMPLE = (REPO / "examples" / "mnist_fc" / "mnist-net_256x2.onnx",
           REPO / "examples" / "mnist_fc" / "prop_0_0.03.vnnlib")


def root_bounds(onnx: str, vnnlib: str, method: str) -> list[tuple[str, float, float]]:
    """Return per dtype (name, worst row's root bound, seconds)."""
    net = load_network(onnx)
    prop = load_properties(vnnlib, net)[0]
    half = prop.unsafe.disjuncts[0]
    out = []
    for dtype in (torch.float64, torch.float32):
        opts = BoundsOptions(method=method, dtype=dtype, intermediate="crown")
        t0 = time.process_time()
        res = bound_root(prepare(net, half.C, half.d, opts), prop.box.lower, prop.box.upper,
                         opts)
        out.append((str(dtype).removeprefix("torch."), float(res.row_lower.min()),
                    time.process_time() - t0))
    return out


@clean_exit
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="oval21", help="a suite of ../shared/benchmarks")
    parser.add_argument("--limit", type=int, default=3, help="its first instances")
    parser.add_argument("--filter", default="", help="comma-separated path fragments")
    parser.add_argument("--method", default="crown", choices=["crown", "alpha"])
    parser.add_argument("--smoke", action="store_true", help="one bundled instance (CI)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pairs = ([(str(EXAMPLE[0]), str(EXAMPLE[1]))] if args.smoke
             else instances(args.suite, args.limit, args.filter))
    print("| instance | float64 | float32 | difference | CPU s (f64, f32) |")
    print("|---|---:|---:|---:|---|")
    for onnx, vnnlib in pairs:
        (_, b64, t64), (_, b32, t32) = root_bounds(onnx, vnnlib, args.method)
        print(f"| {Path(vnnlib).stem} | {b64:.4f} | {b32:.4f} | {b64 - b32:.4f} | "
              f"{t64:.2f}, {t32:.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
