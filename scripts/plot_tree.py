"""Summarise and plot a recorded search tree: global lower bound over time, depth profile.

A run recorded with ``bnbver verify NET PROP --record tree.jsonl`` (or ``BabOptions.record``,
or ``compare_solvers.py --record-dir``) is summarised from the file alone, without re-running
it: nodes, depth, leaves closed by each method, nodes still open at the end, the final global
lower bound. ``--out`` draws the plot (left: the global lower bound of the unsafe margin over
time, a proof once it is above 0; right: nodes per depth, stacked by role: branched, closed,
open at the end, counterexample). ``--json`` prints strict JSON: an infinite bound is the
string ``"inf"`` or ``"-inf"`` (``float()`` reads it back), a missing one ``null``.

Usage:
    python scripts/plot_tree.py TREE.jsonl [--out tree.png] [--json]
    python scripts/plot_tree.py --smoke
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.errors import clean_exit, fail
from harness.tree import (
    certificate_mismatches,
    load_tree,
    plot_tree,
    summarize,
)


def json_safe(value: Any) -> Any:
    """Return ``value`` with non-finite floats as "inf" / "-inf" (nan: None), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def print_summary(summary: dict[str, object], as_json: bool) -> None:
    """Print the summary as aligned text (or one strict JSON object)."""
    if as_json:
        print(json.dumps(json_safe(summary), allow_nan=False))
        return
    for key, value in summary.items():
        print(f"{key:>24}: {value}")


def smoke() -> int:
    """Record a tiny ReLU-split run in a temp dir, check it against its certificate, plot it."""
    import torch
    from harness.instances import write_tiny_suite

    from bnbver.driver import verify
    from bnbver.io.loaders import load_network, load_properties

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bnbver-smoke-") as tmp:
        suite = write_tiny_suite(Path(tmp) / "suite")
        net = load_network(suite / "tiny.onnx")
        props = load_properties(suite / "prop_1.vnnlib", net)
        record = Path(tmp) / "tree.jsonl"
        result = verify(net, props, timeout=20, split="relu", record=str(record))
        nodes = load_tree(record)
        print_summary(summarize(nodes), False)
        leaves = result.certificate.leaves if result.certificate else ()
        problems = certificate_mismatches(nodes, leaves)
        counts = plot_tree(nodes, Path(tmp) / "tree.png", "smoke")
        ok = (Path(tmp) / "tree.png").stat().st_size > 0 and counts["bound_lines"] == 2
        for p in problems:
            print(f"smoke: record vs certificate: {p}", file=sys.stderr)
        return 0 if ok and result.status.value == "unsat" and not problems else 1


@clean_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree", nargs="?", type=Path, help="a JSON-lines tree record")
    ap.add_argument("--out", type=Path, default=None, help="PNG to draw (default: none)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--smoke", action="store_true", help="record and plot a tiny run (temp)")
    args = ap.parse_args(argv)
    if args.smoke:
        return smoke()
    if args.tree is None or not args.tree.is_file():
        return fail(f"{args.tree}: no such tree record")
    nodes = load_tree(args.tree)
    print_summary(summarize(nodes), args.json)
    if args.out is not None:
        plot_tree(nodes, args.out, args.tree.name)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
