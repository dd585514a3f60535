"""Benchmark processes sharing one search: jobs 1 vs 2 (and auto), locally and on Dask.

Usage::

    python scripts/bench_parallel.py --smoke                  # seconds, tiny random net (CI)
    python scripts/bench_parallel.py [--instances acasxu:4_2:prop_2,...] [--jobs 1,2,auto]
        [--dask] [--repeat N] [--timeout S] [--out results/parallel.md]

Every instance runs with each ``--jobs`` value in turn (and, with ``--dask``, with 2 jobs on a
``distributed.LocalCluster`` of 2 one-thread workers), ``--repeat`` times, interleaved so that
a change in the machine's load hits every column alike; a cell is the fastest repeat. The
cluster is started once, before the first run. This
process and every worker use one torch thread, so ``jobs`` is the number of busy cores. The
worker processes are started (and reused, as loky does) before the first run; the cost of
starting them cold is measured once and reported. Rows are printed as they finish; without
``--smoke`` the table is appended to ``--out`` with the command, the machine, the commit and
the load average before and after.

Instance names are ``acasxu:NET:PROP`` (``onnx/ACASXU_run2a_NET_batch_2000.onnx``) or
``mnist_fc:NET:PROP`` (``onnx/mnist-net_NET.onnx``) under ``--bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import ScriptError, clean_exit  # noqa: E402

from bnbver.bab.loop import BabOptions  # noqa: E402
from bnbver.bab.parallel import ShareOptions, run_parallel, validate_jobs  # noqa: E402
from bnbver.driver import VerifierOptions, verify  # noqa: E402
from bnbver.io.loaders import load_network, load_properties  # noqa: E402
from bnbver.network import Network  # noqa: E402
from bnbver.spec import Property  # noqa: E402

INSTANCES = ("acasxu:4_2:prop_2", "acasxu:3_3:prop_2", "acasxu:5_3:prop_2",
             "acasxu:1_1:prop_6", "acasxu:1_1:prop_3", "acasxu:3_3:prop_9",
             "mnist_fc:256x4:prop_8_0.03")
FILES = {"acasxu": "onnx/ACASXU_run2a_{net}_batch_2000.onnx",
         "mnist_fc": "onnx/mnist-net_{net}.onnx"}


@dataclass(frozen=True)
class Run:
    """One verification: its answer, seconds and nodes, and its length on idle cores.

    ``cpu_path`` is this process's CPU time plus, when the search spread, the busiest
    task's CPU time of every wave: what the run would take with a core per process. Other
    people's jobs on a shared machine stretch the wall-clock time, much less the CPU time.
    """

    status: str
    seconds: float
    nodes: int
    cpu_path: float


class CriticalPath(logging.Handler):
    """Collects the critical path that ``bab.parallel`` logs at the end of a shared search."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        self.seconds += float(getattr(record, "critical_cpu", 0.0))


def load(bench: Path, name: str) -> tuple[Network, list[Property]]:
    """Return the network and properties of ``suite:net:prop`` under ``bench``."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] not in FILES:
        raise ScriptError(f"--instances: {name!r} is not suite:net:prop with suite one of "
                          f"{sorted(FILES)}")
    suite, net, prop = parts
    network = load_network(bench / suite / FILES[suite].format(net=net))
    return network, load_properties(bench / suite / "vnnlib" / f"{prop}.vnnlib", network)


def run_one(network: Network, props: list[Property], jobs: int | str, timeout: float,
            share: ShareOptions | None = None) -> Run:
    """Verify once with ``jobs`` processes (``share``: the smoke run's sharing rules, which
    ``verify`` does not take: the search then runs on the first property alone)."""
    path = CriticalPath()
    logger = logging.getLogger("bnbver.bab.parallel")
    logger.addHandler(path)
    logger.setLevel(logging.INFO)
    t0, cpu = time.monotonic(), time.process_time()
    if share is None:
        result = verify(network, props, VerifierOptions(timeout=timeout,
                                                        bab=BabOptions(jobs=jobs)))
    else:
        result = run_parallel(network, props[0], BabOptions(jobs=jobs),
                              time.monotonic() + timeout, share=share)
    seconds, cpu = time.monotonic() - t0, time.process_time() - cpu
    logger.removeHandler(path)
    return Run(result.status.value, seconds, result.stats.nodes, cpu + path.seconds)


@contextlib.contextmanager
def dask_cluster(enabled: bool) -> Iterator[None]:
    """Keep a LocalCluster of 2 one-thread workers (and its client) up for the body, with
    its workers started; do nothing when not ``enabled``."""
    if not enabled:
        yield
        return
    import distributed
    import joblib

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            start_workers(2)
        yield


def backend(column: str) -> contextlib.AbstractContextManager[object]:
    """Return the joblib backend context of a column ("2 (dask)": the cluster's)."""
    import joblib

    if column == "2 (dask)":
        return joblib.parallel_config(backend="dask")
    return contextlib.nullcontext()


def start_workers(jobs: int) -> float:
    """Start (or reach) ``jobs`` workers of the active backend; return the seconds taken."""
    from joblib import Parallel, delayed

    from bnbver.bab.parallel import _warm

    t0 = time.monotonic()
    Parallel(n_jobs=jobs, batch_size=1)(delayed(_warm)() for _ in range(jobs))
    return time.monotonic() - t0


def cell(runs: list[Run], base: Run | None) -> str:
    """Return ``status seconds s / nodes / CPU path s (speedups)`` of the fastest run."""
    best = min(runs, key=lambda r: r.seconds)
    path = min(r.cpu_path for r in runs)
    text = f"{best.status} {best.seconds:.2f} s / {best.nodes} / {path:.2f} s"
    if base is None:
        return text
    return text + f" ({base.seconds / best.seconds:.2f}x; {base.cpu_path / path:.2f}x)"


def bench(cases: list[tuple[str, Network, list[Property]]], columns: list[str],
          timeout: float, repeat: int, share: ShareOptions | None) -> list[str]:
    """Return (and print) one markdown row per instance."""
    rows = []
    for name, network, props in cases:
        runs: dict[str, list[Run]] = {c: [] for c in columns}
        for _ in range(repeat):
            for col in columns:
                jobs = 2 if col == "2 (dask)" else validate_jobs(col)
                with backend(col):
                    runs[col].append(run_one(network, props, jobs, timeout, share))
        base = Run("", min(r.seconds for r in runs[columns[0]]), 0,
                   min(r.cpu_path for r in runs[columns[0]]))
        cells = [cell(runs[c], None if c == columns[0] else base) for c in columns]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


def machine() -> str:
    """Return the CPU model, core count and torch version."""
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True,
                         text=True).stdout.split(":")[-1].strip()
    return (f"{cpu or platform.processor()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            "1 torch thread per process")


def commit() -> str:
    """Return the checked-out commit (``+dirty`` when the tree has changes)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO).stdout
    return git("rev-parse", "--short", "HEAD").strip() + ("+dirty" if git("status", "--porcelain",
                                                                         "bnbver") else "")


def smoke_cases() -> list[tuple[str, Network, list[Property]]]:
    """Return a tiny random 3-input net (about 100 nodes with input splits) whose search the
    smoke run spreads every round."""
    from bnbver.spec import HalfSpaces, InputBox, UnsafeSet
    from tests.conftest import random_relu_net
    from tests.oracle import max_linear_output

    net = random_relu_net(np.random.default_rng(2), [3, 5, 4, 2], scale=1.5)
    box, c = InputBox(-np.ones(3), np.ones(3)), np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    unsafe = UnsafeSet((HalfSpaces(np.array([-c]), np.array([-(best + 0.02)])),))
    return [("smoke", net, [Property(box, unsafe, "smoke")])]


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and, without --smoke, append) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--bench", default="/work/shared/benchmarks")
    parser.add_argument("--instances", default=",".join(INSTANCES))
    parser.add_argument("--jobs", default="1,2,auto", help="columns; the first is the base")
    parser.add_argument("--dask", action="store_true", help="add 2 jobs on a LocalCluster")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", default=str(REPO / "results" / "parallel.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    columns = args.jobs.split(",") + (["2 (dask)"] if args.dask else [])
    for c in columns[:len(columns) - args.dask]:
        validate_jobs(c)
    share = ShareOptions(head_open_per_job=1, min_slice=0.0, max_slice=0.0,
                         wait_for_workers=False) if args.smoke else None
    cases = smoke_cases() if args.smoke else [
        (name, *load(Path(args.bench), name)) for name in args.instances.split(",")]
    load_before = os.getloadavg()
    cold = start_workers(2)
    header = ("| instance | " + " | ".join(f"jobs {c}" for c in columns) + " |\n|---|"
              + "---|" * len(columns))
    print(f"started 2 workers cold in {cold:.2f} s\n{header}", flush=True)
    with dask_cluster(args.dask):
        rows = bench(cases, columns, args.timeout, args.repeat, share)
    if args.smoke:
        return 0
    with open(args.out, "a") as f:
        f.write(f"\n## Shared search, {datetime.date.today()}\n\nCommand: `python "
                f"scripts/bench_parallel.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
                f"\n\nMachine: {machine()}. Commit {commit()}. Load average (1, 5, 15 min) "
                f"before {load_before}, after {os.getloadavg()}. Starting 2 loky workers cold: "
                f"{cold:.2f} s (then reused).\n\nCell: answer, seconds of `verify` / nodes / "
                f"CPU path (seconds with a free core per process: this process's CPU time plus "
                f"the busiest task's per wave), fastest of {args.repeat}; in brackets the "
                f"speedups over jobs {columns[0]} in seconds and in CPU path.\n\n{header}\n"
                + "\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
