"""Compare MILP formulations x bound tightening, and warm vs cold LP re-solves.

For each instance, each tightening mode (interval / lp / milp) and each formulation (bigm,
extended, partition:2, partition:4): the root LP bound (the LP relaxation of the MILP,
minimum margin over the disjuncts), the HiGHS MIP solve time, nodes and the answer, all in one
run; plus the warm-vs-cold LP speed-up on random child nodes. Writes ``results/formulations.md``
(full mode) and prints rows as they come.

Usage:
    python scripts/bench_formulations.py [BENCH_DIR] [--time-limit 15] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import clean_exit  # noqa: E402

from bnbver.io.loaders import load_network, load_properties  # noqa: E402
from bnbver.lp.highs import HighsOptions, solve  # noqa: E402
from bnbver.lp.intervals import interval_bounds  # noqa: E402
from bnbver.lp.model import LpStatus  # noqa: E402
from bnbver.lp.relaxation import NodeLp, build_relaxation, lp_lower_bound  # noqa: E402
from bnbver.lp.tighten import TightenOptions, count_unstable, tighten_bounds  # noqa: E402
from bnbver.milp import build_milp, solve_milp  # noqa: E402
from bnbver.network import Dense, Network, ReLU  # noqa: E402
from bnbver.progress import Progress  # noqa: E402
from bnbver.result import validate_counterexample  # noqa: E402
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet  # noqa: E402
from bnbver.splits import Split, SplitSet, split_masks  # noqa: E402

INSTANCES = [
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_12_0.03.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_3.vnnlib"),
    ("acasxu", "onnx/ACASXU_run2a_2_1_batch_2000.onnx", "vnnlib/prop_2.vnnlib"),
]
FORMULATIONS = ["bigm", "extended", "partition:2", "partition:4"]
MODES = ["interval", "lp", "milp"]


def root_lp_bound(network: Network, prop: Property, bounds: tuple, formulation: str,
                  time_limit: float = 60.0) -> float:
    """Return the min over disjuncts of the LP relaxation of the margin MILP (nan: no answer
    within ``time_limit`` seconds per LP)."""
    vals = []
    for k in range(len(prop.unsafe.disjuncts)):
        m = build_milp(network, prop, bounds, None, formulation, disjunct=k,
                       require_unsafe=False)
        sol = solve(dataclasses.replace(m.lp, integrality=None),
                    HighsOptions(time_limit=time_limit))
        if sol.status is LpStatus.INFEASIBLE:
            vals.append(np.inf)
        elif sol.status is LpStatus.OPTIMAL and sol.objective is not None:
            vals.append(sol.objective)
        else:
            return float("nan")
    return float(min(vals))


def decide(network: Network, prop: Property, bounds: tuple, formulation: str,
           time_limit: float) -> tuple[str, float, int]:
    """Solve one feasibility MILP per disjunct in a shared time budget; return the answer."""
    t0 = time.perf_counter()
    nodes = 0
    answer = "unsat"
    for k in range(len(prop.unsafe.disjuncts)):
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0:
            return "timeout", time.perf_counter() - t0, nodes
        m = build_milp(network, prop, bounds, None, formulation, disjunct=k, unsafe_slack=1e-6)
        sol = solve_milp(m, left, threads=1, first_solution=True)
        nodes += sol.nodes
        if sol.x is not None and validate_counterexample(network, prop, sol.x[m.columns.x]):
            return "sat", time.perf_counter() - t0, nodes
        if sol.status is not LpStatus.INFEASIBLE:
            answer = "timeout" if sol.status is LpStatus.TIME_LIMIT else "unknown"
            return answer, time.perf_counter() - t0, nodes
    return answer, time.perf_counter() - t0, nodes


def warm_vs_cold(network: Network, prop: Property, n_nodes: int, seed: int) -> dict:
    """Solve random child nodes warm (NodeLp) and cold; return times and the max difference."""
    rng = np.random.default_rng(seed)
    box, disj = prop.box, prop.unsafe.disjuncts[0]
    lo, hi, _ = interval_bounds(network, box.lower, box.upper)
    unstable = [(k, j) for k, (a, b) in enumerate(zip(lo, hi, strict=True))
                for j in np.flatnonzero((a < 0) & (b > 0))]
    node = NodeLp(build_relaxation(network, box, (lo, hi), None, disj, reserve=True))
    node.bound()
    warm_t = cold_t = cold_build_t = 0.0
    diff = 0.0
    done = 0
    path: list[Split] = []
    while done < n_nodes:
        if len(path) >= 6 or rng.random() < 0.2:
            path = []
        k, j = unstable[rng.integers(len(unstable))]
        path.append(Split(int(k), int(j), bool(rng.integers(2))))
        ss = SplitSet.of(path)
        if ss.is_contradictory():
            path = []
            continue
        masks = [m[0] for m in split_masks([ss], network.relu_sizes)]
        l2, h2, _ = interval_bounds(network, box.lower, box.upper, (lo, hi), masks)
        t0 = time.perf_counter()
        w = node.bound(ss, l2, h2)
        warm_t += time.perf_counter() - t0
        t0 = time.perf_counter()
        relax = build_relaxation(network, box, (l2, h2), ss, disj)
        t1 = time.perf_counter()
        c = lp_lower_bound(relax)
        cold_t += time.perf_counter() - t1
        cold_build_t += t1 - t0
        if np.isfinite(w.lower) and np.isfinite(c.lower):
            diff = max(diff, abs(w.lower - c.lower))
        done += 1
    return {"nodes": n_nodes, "warm": warm_t, "cold": cold_t, "cold_build": cold_build_t,
            "max_diff": diff}


def run_instance(network: Network, prop: Property, name: str, time_limit: float,
                 tighten_budget: float, formulations: list[str], modes: list[str],
                 out: list[str]) -> None:
    """Run every (tightening, formulation) pair on one instance; append table rows."""
    bar = Progress(len(modes) * len(formulations), name)
    for mode in modes:
        t0 = time.monotonic()
        opts = TightenOptions(mode, deadline=t0 + tighten_budget, milp_time_per_neuron=0.5)
        tight = tighten_bounds(network, prop.box, None, None, opts)
        bounds = (tight.lower, tight.upper)
        unstable = count_unstable(tight.lower, tight.upper)
        for form in formulations:
            root = root_lp_bound(network, prop, bounds, form, time_limit)
            answer, secs, nodes = decide(network, prop, bounds, form, time_limit)
            row = (f"| {name} | {mode} | {tight.seconds:.1f}{'*' if tight.timed_out else ''} | "
                   f"{unstable} | {form} | {root:.4g} | {secs:.2f} | {nodes} | {answer} |")
            print(row, flush=True)
            out.append(row)
            bar.update()
    bar.close()


def tiny_instance() -> tuple[Network, Property]:
    """Return a seeded 4-8-8-3 ReLU network and a margin property (the smoke instance)."""
    rng = np.random.default_rng(0)
    sizes = [4, 8, 8, 3]
    layers: list = []
    for i in range(3):
        layers.append(Dense(rng.normal(size=(sizes[i + 1], sizes[i])) / 2, rng.normal(
            size=sizes[i + 1]) * 0.1))
        if i < 2:
            layers.append(ReLU(sizes[i + 1]))
    net = Network(tuple(layers), (4,))
    box = InputBox(-np.ones(4) * 0.5, np.ones(4) * 0.5)
    C = np.array([[-1.0, 1.0, 0.0]])
    return net, Property(box, UnsafeSet((HalfSpaces(C, np.array([0.0])),)), "tiny")


HEADER = ("| instance | tightening | tighten s | unstable | formulation | root LP bound | "
          "MIP s | nodes | answer |\n|---|---|---|---|---|---|---|---|---|")


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Run the smoke or the full benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench_dir", nargs="?", default=str(REPO.parent / "shared" / "benchmarks"))
    ap.add_argument("--time-limit", type=float, default=15.0)
    ap.add_argument("--tighten-budget", type=float, default=40.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=str(REPO / "results" / "formulations.md"))
    args = ap.parse_args(argv)
    rows: list[str] = []
    print(HEADER, flush=True)
    if args.smoke:
        net, prop = tiny_instance()
        run_instance(net, prop, "tiny", 5.0, 5.0, ["bigm", "partition:2"], MODES, rows)
        wc = warm_vs_cold(net, prop, 10, 0)
        print(f"warm {wc['warm']:.3f}s cold {wc['cold']:.3f}s max diff {wc['max_diff']:.2e}")
        return 0
    base = Path(args.bench_dir)
    warm_rows = []
    for bench, onnx, vnnlib in INSTANCES:
        net = load_network(base / bench / onnx)
        prop = load_properties(base / bench / vnnlib, net)[0]
        name = f"{Path(onnx).stem.replace('_batch_2000', '')} {Path(vnnlib).stem}"
        run_instance(net, prop, name, args.time_limit, args.tighten_budget, FORMULATIONS,
                     MODES, rows)
        wc = warm_vs_cold(net, prop, 60, 0)
        warm_rows.append(f"| {name} | {wc['nodes']} | {wc['warm']:.3f} | {wc['cold']:.3f} | "
                         f"{wc['cold_build']:.3f} | {wc['cold'] / wc['warm']:.1f}x | "
                         f"{(wc['cold'] + wc['cold_build']) / wc['warm']:.1f}x | "
                         f"{wc['max_diff']:.1e} |")
        print(warm_rows[-1], flush=True)
    write_report(Path(args.out), rows, warm_rows, " ".join(sys.argv))
    return 0


def write_report(path: Path, rows: list[str], warm_rows: list[str], command: str) -> None:
    """Write the markdown report (tables, machine, command)."""
    machine = f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip()
    text = [
        "# MILP formulations x bound tightening (HiGHS)", "",
        f"Machine: {machine}, Python {platform.python_version()}, 1 HiGHS thread.  ",
        f"Command: `python {command}`", "",
        "Root LP bound: LP relaxation of the margin MILP, min over disjuncts (> 0 proves "
        "unsat). MIP s: HiGHS feasibility MILPs (t <= 0) over all disjuncts within the time "
        "limit; `*` on tighten s: the tightening budget ran out.", "",
        HEADER, *rows, "", "## Warm vs cold LP re-solve (random child nodes)", "",
        "| instance | nodes | warm s | cold solve s | cold build s | speed-up (solve) | "
        "speed-up (build+solve) | max bound diff |", "|---|---|---|---|---|---|---|---|",
        *warm_rows, "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


if __name__ == "__main__":
    sys.exit(main())
