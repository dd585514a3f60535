"""``bnbver verify NET PROP``: decide one VNN-LIB property, VNN-COMP style.

Writes the result file (``sat`` with the counterexample, ``unsat``, ``timeout`` or
``unknown``) to ``--out`` and prints the status word on stdout, or with ``--json`` the whole
result as one JSON object (``Result.to_dict``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bnbver.bab.parallel import validate_jobs
from bnbver.commands.common import check_positive, check_writable, quiet
from bnbver.driver import VerifierOptions, parse_options, validate_device, verify
from bnbver.io.loaders import load_network, load_properties
from bnbver.result import Result, Status, format_vnncomp


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``verify``."""
    parser.add_argument("net", help="network file (.onnx or .nnet)")
    parser.add_argument("prop", help="property file (.vnnlib)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--out", help="write the VNN-COMP result file here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the falsifier")
    parser.add_argument("--branching", default=None,
                        help="branching heuristic: a registered name, module:function or "
                        "path/file.py:function (a function its module registers with "
                        "@register), or a name an installed package registers (entry-point "
                        "group bnbver.heuristics)")
    parser.add_argument("--split", choices=["auto", "relu", "input"], default="auto",
                        help="what to branch on (default: auto by input dimension)")
    parser.add_argument("--jobs", default="auto",
                        help="processes sharing the search: a number, or auto (default: the "
                        "cores available, once the search has run a few seconds)")
    parser.add_argument("--device", default="cpu", help="torch device for the bounds")
    parser.add_argument("--tighten", choices=["none", "lp", "milp"], default="none",
                        help="tighten the root's ReLU bounds by LP or MILP before branching")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any BabOptions/AttackOptions field, e.g. "
                             "input_intermediate=crown (repeatable)")
    parser.add_argument("--record", default=None,
                        help="write the search tree as JSON lines (one line per node)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as one JSON object instead of the status word")
    parser.add_argument("--certificate", default=None, metavar="FILE",
                        help="on unsat, write a proof (.npz) that `bnbver check` re-verifies "
                             "(turns certificates on; --option certify=strict also forbids "
                             "leaves that only a MILP solver closed)")


def summary(result: Result) -> str:
    """Return a one-line human summary of a result."""
    s = result.stats
    phases = ", ".join([f"{k} {v:.2f}s" for k, v in s.seconds_by_phase.items()]
                       + [f"{k} {v}" for k, v in s.counts.items()])
    return (f"{result.status.value} in {result.wall_time:.2f}s: {s.nodes} nodes, "
            f"depth {s.max_depth}, {s.bound_calls} bound calls, {s.lp_calls} LPs"
            + (f" [{phases}]" if phases else "")
            + (f" ({result.message})" if result.message else ""))


def run(args: argparse.Namespace) -> int:
    """Verify and write the result; exit 0 whatever the verdict (1 on a solver error)."""
    start = getattr(args, "started", time.monotonic())
    check_positive(args.timeout, "--timeout")
    jobs = validate_jobs(args.jobs)
    validate_device(args.device)
    for path, flag in ((args.out, "--out"), (args.record, "--record"),
                       (args.certificate, "--certificate")):
        if path:
            check_writable(path, flag)
    network = load_network(args.net)
    props = load_properties(args.prop, network)
    kwargs = dict(
        timeout=max(args.timeout - (time.monotonic() - start), 0.1), seed=args.seed,
        branching=args.branching, split=args.split, jobs=jobs, device=args.device,
        tighten=args.tighten, record=args.record,
    )
    if args.certificate:
        kwargs["certify"] = "on"
    kwargs.update(parse_options(args.option))  # --option NAME=VALUE wins
    options = VerifierOptions.from_kwargs(**kwargs)
    result = verify(network, props, options, source_path=args.net)
    text = format_vnncomp(result)
    if args.out:
        Path(args.out).write_text(text)
    if args.certificate and result.status is Status.HOLDS and result.certificate is not None:
        result.certificate.save(args.certificate)
    print(json.dumps(result.to_dict()) if args.json else text.splitlines()[0])
    if not quiet(args):
        print(summary(result), file=sys.stderr)
    return 1 if result.status is Status.ERROR else 0
