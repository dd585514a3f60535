"""``bnbver export-milp NET PROP``: write a BaB node of an instance as a MILP, or solve it.

The node is the property's input box plus ``--node-splits``; its pre-activation bounds come
from ``--tighten`` (interval, lp or milp). One file is written per disjunct of the unsafe
set (``model.d0.mps``, ``model.d1.mps``, ... when there are several). Each file's feasible
set is exactly the node's counterexamples for that disjunct (feasible = sat, infeasible =
unsat); its objective minimises the margin t. ``--solve`` solves in-process and prints one
line per disjunct and a final ``result: sat|unsat|unknown``.
"""

from __future__ import annotations

import argparse
import time

from bnbver.errors import InputError
from bnbver.io.loaders import load_network, load_properties
from bnbver.lp.model import LpStatus
from bnbver.lp.tighten import MODES, TightenOptions, tighten_bounds
from bnbver.milp import (
    MilpModel,
    add_anderson_cuts,
    build_milp,
    disjunct_paths,
    export_milp,
    parse_formulation,
    solve_milp,
)
from bnbver.network import Network
from bnbver.result import validate_counterexample
from bnbver.spec import Property
from bnbver.splits import Split, SplitSet


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``export-milp``."""
    parser.add_argument("net", help="network file (.onnx or .nnet)")
    parser.add_argument("prop", help="VNN-LIB property file")
    parser.add_argument("--node-splits", default="",
                        help='ReLU splits of the node, e.g. "0:12:+,1:3:-" (layer:unit:+|-)')
    parser.add_argument("--formulation", default="bigm",
                        help="bigm, extended, or partition[:N[:size|range]] (default bigm)")
    parser.add_argument("--tighten", default="interval", choices=MODES,
                        help="bound tightening before encoding (default interval)")
    parser.add_argument("--property-index", type=int, default=0,
                        help="which input box of a VNN-LIB disjunction of boxes (default 0)")
    parser.add_argument("--cuts", type=int, default=0,
                        help="rounds of Anderson et al. cut separation (default 0)")
    parser.add_argument("--valid-inequalities", action="store_true",
                        help="add the non-positive-bias valid inequalities")
    parser.add_argument("--out", default=None, help="output file, .mps or .lp")
    parser.add_argument("--solve", action="store_true", help="solve with HiGHS and print")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--threads", type=int, default=1, help="HiGHS threads (default 1)")


def parse_splits(text: str, relu_sizes: list[int]) -> SplitSet:
    """Parse ``"layer:unit:+|-,..."`` into a SplitSet checked against ``relu_sizes``.

    Raises:
        InputError: a split is malformed or outside the network's ReLU layers.
    """
    splits = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        bits = item.split(":")
        if len(bits) != 3 or bits[2] not in ("+", "-"):
            raise InputError("--node-splits", f"'{item}' is not layer:unit:+ or layer:unit:-")
        try:
            layer, unit = int(bits[0]), int(bits[1])
        except ValueError:
            raise InputError("--node-splits", f"'{item}': layer and unit must be integers"
                             ) from None
        if not (0 <= layer < len(relu_sizes) and 0 <= unit < relu_sizes[layer]):
            raise InputError("--node-splits",
                             f"'{item}' is outside the ReLU layer sizes {relu_sizes}")
        splits.append(Split(layer, unit, bits[2] == "+"))
    return SplitSet.of(splits)


def _validate(args: argparse.Namespace) -> None:
    parse_formulation(args.formulation)
    if args.out is None and not args.solve:
        raise InputError("--out", "give an output file (.mps or .lp) or --solve")
    if args.out is not None and not args.out.lower().endswith((".mps", ".lp")):
        raise InputError(args.out, "output must end in .mps or .lp")
    if args.time_limit <= 0 or args.threads < 0 or args.cuts < 0:
        raise InputError("--time-limit/--threads/--cuts", "must be positive")


def _solve_and_print(model: MilpModel, k: int, args: argparse.Namespace, network: Network,
                     prop: Property, deadline: float) -> str:
    """Solve one disjunct's model; print a line; return sat / unsat / unknown."""
    sol = solve_milp(model, max(deadline - time.monotonic(), 1e-3), args.threads)
    obj = "-" if sol.objective is None else f"{sol.objective:.6g}"
    print(f"disjunct {k}: {sol.status.value} objective {obj} bound {sol.bound:.6g} "
          f"nodes {sol.nodes} time {sol.seconds:.3f}s")
    if sol.status is LpStatus.INFEASIBLE:
        return "unsat"
    if sol.x is not None and validate_counterexample(network, prop, sol.x[model.columns.x]):
        x = sol.x[model.columns.x]
        print("counterexample: " + " ".join(f"{v!r}" for v in x.tolist()))
        return "sat"
    return "unknown"


def run(args: argparse.Namespace) -> int:
    """Build (and optionally write and solve) the node's MILP per disjunct."""
    _validate(args)
    network = load_network(args.net)
    props = load_properties(args.prop, network)
    if not 0 <= args.property_index < len(props):
        raise InputError("--property-index", f"{args.property_index} outside 0..{len(props) - 1}")
    prop = props[args.property_index]
    splits = parse_splits(args.node_splits, network.relu_sizes)
    deadline = time.monotonic() + args.time_limit
    tight = tighten_bounds(network, prop.box, None, splits,
                           TightenOptions(args.tighten, deadline, args.threads))
    n = len(prop.unsafe.disjuncts)
    paths = disjunct_paths(args.out, n) if args.out else [None] * n
    answers = []
    for k, path in enumerate(paths):
        model = build_milp(network, prop, (tight.lower, tight.upper), splits, args.formulation,
                           disjunct=k, valid_inequalities=args.valid_inequalities)
        if args.cuts:
            model, _ = add_anderson_cuts(model, args.cuts)
        if path is not None:
            export_milp(model, path)
        if args.solve:
            answers.append(_solve_and_print(model, k, args, network, prop, deadline))
            if answers[-1] == "sat":
                break
    if args.solve:
        result = "sat" if "sat" in answers else "unsat" if all(
            a == "unsat" for a in answers) else "unknown"
        print(f"result: {result}")
    return 0


__all__ = ["configure", "parse_splits", "run"]
