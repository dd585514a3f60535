"""Search throughput (nodes per CPU second) of bnbver checkouts and options, side by side.

Usage::

    python scripts/bench_throughput.py --smoke                      # seconds (CI)
    python scripts/bench_throughput.py --suite oval21 --limit 6 --timeout 60 \
        --arm new=. --arm old=/path/to/baseline/checkout \
        --arm f32=.:precision=float32 --out results/throughput.md

Issue 17 asks for alpha-beta-CROWN's CPU throughput on conv nets (200+ nodes per second on
oval21's cifar_base_kw, one thread). Each *arm* is a checkout and optional ``verify``
options; per instance every arm runs once in its own process (``--worker``, one torch
thread, ``jobs=1``), the arms in turn, so a machine's load hits them alike. Reported per
instance and arm: the answer, nodes, CPU seconds of the search (``time.process_time`` around
``verify``, so other processes on the machine do not count) and nodes per CPU second; then
per arm the total nodes over total CPU seconds and its ratio to the first arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from harness.errors import ScriptError, clean_exit  # noqa: E402

SHARED = REPO.parent / "shared" / "benchmarks"
EXAMPLES = REPO / "examples"


def worker(root: Path, onnx: str, vnnlib: str, timeout: float, options: dict[str, str]
           ) -> dict[str, object]:
    """Verify one instance with the bnbver at ``root``; return what the report needs."""
    for name in [m for m in sys.modules if m == "bnbver" or m.startswith("bnbver.")]:
        del sys.modules[name]  # the error harness imported this checkout's bnbver
    sys.path.insert(0, str(root))
    import torch

    import bnbver
    from bnbver.driver import parse_options, verify
    from bnbver.io.loaders import load_network, load_properties

    torch.set_num_threads(1)
    assert Path(bnbver.__file__).resolve().is_relative_to(root.resolve()), bnbver.__file__
    net = load_network(onnx)
    props = load_properties(vnnlib, net)
    opts = parse_options([f"{k}={v}" for k, v in {"jobs": "1", **options}.items()])
    cpu0, wall0 = time.process_time(), time.monotonic()
    res = verify(net, props, timeout=timeout, **opts)
    return {"status": res.status.value, "nodes": res.stats.nodes,
            "cpu": time.process_time() - cpu0, "wall": time.monotonic() - wall0}


def parse_arm(text: str) -> tuple[str, Path, dict[str, str]]:
    """``name=checkout[:opt=value,...]`` -> (name, checkout, options)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ScriptError(f"--arm {text!r}: expected name=checkout[:option=value,...]")
    path, _, opts = rest.partition(":")
    root = Path(path).resolve()
    if not (root / "bnbver" / "__init__.py").is_file():
        raise ScriptError(f"--arm {text!r}: {root} is not a bnbver checkout")
    options = {}
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ScriptError(f"--arm {text!r}: option {item!r} is not name=value")
        options[key] = value
    return name, root, options


def instances(suite: str, limit: int, match: str = "") -> list[tuple[str, str]]:
    """Return the first ``limit`` (onnx, vnnlib) pairs of a suite under ../shared whose
    paths contain one of the comma-separated strings of ``match`` (all without one)."""
    path = SHARED / suite / "instances.csv"
    if not path.is_file():
        raise ScriptError(f"{path}: no such file (the suites live in ../shared/benchmarks)")
    with path.open() as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    keys = [k for k in match.split(",") if k]
    rows = [r for r in rows if not keys or any(k in f"{r[0]},{r[1]}" for k in keys)]
    if not rows:
        raise ScriptError(f"{path}: no instance matches --filter {match!r}")
    return [(str(path.parent / r[0]), str(path.parent / r[1])) for r in rows[:limit]]


def run_worker(root: Path, onnx: str, vnnlib: str, timeout: float,
               options: dict[str, str]) -> dict[str, object]:
    """Run :func:`worker` in a fresh process (its own imports, one thread)."""
    cmd = [sys.executable, __file__, "--worker", str(root), onnx, vnnlib, str(timeout),
           json.dumps(options)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                         timeout=timeout * 3 + 120)
    if out.returncode != 0:
        raise ScriptError(f"worker failed on {Path(vnnlib).name}: {out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def report(arms: list[tuple[str, Path, dict[str, str]]], rows: list[dict[str, object]],
           command: str) -> str:
    """Return the Markdown report of the measurements."""
    lines = [f"Command: `{command}`", "",
             "| instance | " + " | ".join(f"{a[0]}: answer, nodes, CPU s, nodes/s"
                                          for a in arms) + " |",
             "|---|" + "---|" * len(arms)]
    for name in dict.fromkeys(str(r["instance"]) for r in rows):
        cells = []
        for arm in arms:
            r = next(x for x in rows if x["instance"] == name and x["arm"] == arm[0])
            cpu = float(r["cpu"])  # type: ignore[arg-type]
            nodes = int(r["nodes"])  # type: ignore[call-overload]
            cells.append(f"{r['status']}, {nodes}, {cpu:.1f}, {nodes / max(cpu, 1e-9):.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | checkout | options | nodes | CPU s | nodes/s | ratio |",
              "|---|---|---|---|---|---|---|"]
    base = None
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm[0]]
        nodes = sum(int(r["nodes"]) for r in mine)  # type: ignore[call-overload]
        cpu = sum(float(r["cpu"]) for r in mine)  # type: ignore[arg-type]
        rate = nodes / max(cpu, 1e-9)
        base = base or rate
        opts = ",".join(f"{k}={v}" for k, v in arm[2].items()) or "default"
        lines.append(f"| {arm[0]} | {arm[1]} | {opts} | {nodes} | {cpu:.1f} | {rate:.1f} | "
                     f"{rate / base:.2f} |")
    return "\n".join(lines) + "\n"


@clean_exit
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        root, onnx, vnnlib, timeout, options = argv[1:6]
        print(json.dumps(worker(Path(root), onnx, vnnlib, float(timeout),
                                json.loads(options))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", default="oval21", help="a suite of ../shared/benchmarks")
    ap.add_argument("--limit", type=int, default=6, help="its first instances")
    ap.add_argument("--filter", default="", help="only instances whose paths contain one "
                    "of these comma-separated strings")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    ap.add_argument("--arm", action="append", default=[],
                    help="name=checkout[:option=value,...] (repeatable; default: this one)")
    ap.add_argument("--out", type=Path, help="write the Markdown report here")
    ap.add_argument("--smoke", action="store_true", help="one bundled instance, 2 s (CI)")
    args = ap.parse_args(argv)
    arms = [parse_arm(a) for a in args.arm] or [("this", REPO, {})]
    if args.smoke:
        pairs = [(str(EXAMPLES / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"),
                  str(EXAMPLES / "acasxu" / "prop_2.vnnlib"))]
        for path in pairs[0]:
            if not Path(path).is_file():
                raise ScriptError(f"{path}: the bundled example is missing")
        args.timeout, args.out = 2.0, None
    else:
        pairs = instances(args.suite, args.limit, args.filter)
    rows: list[dict[str, object]] = []
    for onnx, vnnlib in pairs:
        for name, root, options in arms:
            r = run_worker(root, onnx, vnnlib, args.timeout, options)
            rows.append({"instance": Path(vnnlib).stem, "arm": name, **r})
            print(f"{Path(vnnlib).stem} {name}: {r}", file=sys.stderr)
    text = report(arms, rows, "python scripts/bench_throughput.py " + " ".join(argv))
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
