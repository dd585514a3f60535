"""Verify one mnist_fc instance with BabOptions given as NAME=VALUE and print the statistics.

Usage: python scripts/gpu/runm.py BENCH_DIR NET PROP TIMEOUT [device=cuda batch_size=1024 ...]
(BENCH_DIR holds onnx/mnist-net_NET.onnx and vnnlib/prop_PROP.vnnlib). Used for the GPU
throughput table in results/README.md; ``run1.sh`` and ``run2.sh`` beside it are the two
commands that ran on the lent GPU machine.
"""

from __future__ import annotations

import sys
import time

import torch

import bnbver
from bnbver.driver import parse_options
from bnbver.io.loaders import load_network, load_properties


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    bench, net_id, prop, timeout = argv[0], argv[1], argv[2], float(argv[3])
    kw = parse_options(argv[4:])
    net = load_network(f"{bench}/onnx/mnist-net_{net_id}.onnx")
    props = load_properties(f"{bench}/vnnlib/prop_{prop}.vnnlib", net)
    t = time.monotonic()
    r = bnbver.verify(net, props, timeout=timeout, **kw)
    s = r.stats
    phases = {k: round(v, 2) for k, v in s.seconds_by_phase.items()}
    print(net_id, prop, kw, r.status.value, f"{time.monotonic() - t:.2f}s nodes={s.nodes}",
          f"depth={s.max_depth} calls={s.bound_calls}", phases, r.message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
