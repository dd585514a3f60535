"""``bnbver export-milp NET PROP``: write a BaB node of an instance as a MILP, or solve it.

The node is the property's input box plus ``--node-splits``; its pre-activation bounds come
from ``--bounds`` (``bnbver.bab.bound_sources``: the same function that
``scripts/compare_solvers.py --milp-bounds`` uses, so the same name gives the same model).
See :data:`EPILOG` for the files written and what ``--solve`` prints.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bnbver.bab.bound_sources import BOUND_SOURCES, NodeBounds, node_bounds
from bnbver.errors import InputError
from bnbver.io.loaders import load_network, load_properties
from bnbver.lp.model import LpStatus
from bnbver.milp import (
    MilpModel,
    add_anderson_cuts,
    build_disjunction_milp,
    build_milp,
    disjunct_paths,
    export_annotated,
    parse_formulation,
    solve_milp,
)
from bnbver.network import Network
from bnbver.result import validate_counterexample
from bnbver.spec import Property
from bnbver.splits import Split, SplitSet

EPILOG = """\
files:
  --out m.mps with a property of K > 1 unsafe disjuncts writes K files, one per
  disjunct: m.d0.mps, m.d1.mps, ..., m.d<K-1>.mps (with one disjunct: m.mps itself).
  Each file's feasible set is exactly the node's counterexamples for its disjunct
  (feasible = sat, all K infeasible = unsat); the objective minimises the margin t.
  --disjunction binary writes one file m.mps instead: the network once, a binary
  delta_k per disjunct (sum = 1) and big-M rows that select one; its optimum is the
  minimum of the K files' optima, and it is feasible exactly when one of them is.
  Every file written is printed ("wrote PATH ..."), and its first lines are comments
  (MPS "*", LP "\\") naming the network, property, splits, bounds source and
  formulation; an MPS file's NAME says bnbver_<bounds>_<formulation>.

bounds (--bounds):
  interval  interval arithmetic          lp     LP bound tightening
  milp      LP, then MILP tightening     crown  CROWN (the BaB root, ReLU splits)
  alpha     alpha-CROWN-optimised (the BaB root of a ReLU-split search)
  auto      the BaB's own root bounds for this network
  scripts/compare_solvers.py --milp-bounds X solves the files that
  "--bounds X --unsafe-slack 1e-6" writes (milp depends on the time limit).

--solve:
  one line per disjunct ("disjunct k: status ... time T s of L s"), then
  "result: sat|unsat|unknown". --time-limit covers the whole command; each disjunct
  gets an equal share of the time left when it starts (time a disjunct does not use
  goes to the next ones). When the result is unknown, "undecided disjuncts: ..." names
  the disjuncts that were neither infeasible nor falsified.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``export-milp``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("net", help="network file (.onnx or .nnet)")
    parser.add_argument("prop", help="VNN-LIB property file")
    parser.add_argument("--node-splits", default="",
                        help='ReLU splits of the node, e.g. "0:12:+,1:3:-" (layer:unit:+|-)')
    parser.add_argument("--formulation", default="bigm",
                        help="bigm, extended, or partition[:N[:size|range]] (default bigm)")
    parser.add_argument("--bounds", "--tighten", dest="bounds", default="interval",
                        choices=BOUND_SOURCES,
                        help="source of the pre-activation bounds (default interval; "
                        "--tighten is an old name)")
    parser.add_argument("--property-index", type=int, default=0,
                        help="which input box of a VNN-LIB disjunction of boxes (default 0)")
    parser.add_argument("--cuts", type=int, default=0,
                        help="rounds of Anderson et al. cut separation (default 0)")
    parser.add_argument("--valid-inequalities", action="store_true",
                        help="add the non-positive-bias valid inequalities")
    parser.add_argument("--disjunction", choices=("files", "binary"), default="files",
                        help="one file per unsafe disjunct (default), or one file with a "
                        "binary per disjunct")
    parser.add_argument("--unsafe-slack", type=float, default=0.0,
                        help="require t <= S (default 0; compare_solvers.py uses 1e-6)")
    parser.add_argument("--out", default=None,
                        help="output file, .mps or .lp (one per disjunct: see below)")
    parser.add_argument("--solve", action="store_true", help="solve with HiGHS and print")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds for the whole command (default 60)")
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
    if not args.time_limit > 0:
        raise InputError("--time-limit", f"must be > 0 seconds, got {args.time_limit}")
    if args.threads < 0 or args.cuts < 0:
        raise InputError("--threads/--cuts", "must be >= 0")
    if not args.unsafe_slack >= 0:
        raise InputError("--unsafe-slack", f"must be >= 0, got {args.unsafe_slack}")


def _header(args: argparse.Namespace, n_props: int, nb: NodeBounds, what: str) -> list[str]:
    """Return the comment lines of an exported file."""
    extras = [f"{args.cuts} rounds of Anderson cuts"] if args.cuts else []
    if args.valid_inequalities:
        extras.append("non-positive-bias valid inequalities")
    return [f"bnbver export-milp: {what}",
            f"network: {args.net}",
            f"property: {args.prop} (input box {args.property_index} of {n_props})",
            f"node splits: {args.node_splits or 'none'}",
            f"bounds: {nb.source} (bnbver.bab.bound_sources, {nb.seconds:.2f} s)",
            f"formulation: {args.formulation}" + "".join(f", {e}" for e in extras),
            f"objective: minimise the unsafe margin t, subject to t <= {args.unsafe_slack:g} "
            "(feasible = a counterexample)"]


def _write(model: MilpModel, path: Path, header: list[str], name: str) -> None:
    """Export one model and print what was written."""
    export_annotated(model, path, header, name)
    lp = model.lp
    binaries = 0 if lp.integrality is None else int(np.count_nonzero(lp.integrality))
    print(f"wrote {path} ({lp.num_rows} rows, {lp.num_cols} columns, {binaries} binaries; "
          f"{path.stat().st_size / 1e6:.2f} MB)")


def _solve_and_print(model: MilpModel, label: str, args: argparse.Namespace,
                     network: Network, prop: Property, limit: float,
                     disjunct_of: Callable[[np.ndarray], str] | None = None) -> str:
    """Solve one model within ``limit`` seconds; print a line; return sat / unsat / unknown."""
    sol = solve_milp(model, max(limit, 1e-3), args.threads)
    obj = "-" if sol.objective is None else f"{sol.objective:.6g}"
    print(f"{label}: {sol.status.value} objective {obj} bound {sol.bound:.6g} "
          f"nodes {sol.nodes} time {sol.seconds:.3f}s of {limit:.3g}s")
    if sol.status is LpStatus.INFEASIBLE:
        return "unsat"
    if sol.x is not None and validate_counterexample(network, prop, sol.x[model.columns.x]):
        x = sol.x[model.columns.x]
        if disjunct_of is not None:
            print(f"selected: {disjunct_of(sol.x)}")
        print("counterexample: " + " ".join(f"{v!r}" for v in x.tolist()))
        return "sat"
    return "unknown"


def _per_disjunct(args: argparse.Namespace, network: Network, prop: Property, n_props: int,
                  splits: SplitSet, nb: NodeBounds, deadline: float) -> dict[int, str]:
    """Build (write, solve) one model per disjunct; return the answers of those solved."""
    n = len(prop.unsafe.disjuncts)
    paths = disjunct_paths(args.out, n) if args.out else [None] * n
    answers: dict[int, str] = {}
    for k, path in enumerate(paths):
        model = build_milp(network, prop, (nb.lower, nb.upper), splits, args.formulation,
                           disjunct=k, valid_inequalities=args.valid_inequalities,
                           unsafe_slack=args.unsafe_slack)
        if args.cuts:
            model, _ = add_anderson_cuts(model, args.cuts)
        if path is not None:
            _write(model, path, _header(args, n_props, nb, f"unsafe disjunct {k} of {n} "
                                        "(one file per disjunct)"),
                   f"bnbver_{nb.source}_{args.formulation}_d{k}")
        if args.solve and "sat" not in answers.values():
            share = max(deadline - time.monotonic(), 0.0) / (n - k)
            answers[k] = _solve_and_print(model, f"disjunct {k}", args, network, prop, share)
    return answers


def _disjunction(args: argparse.Namespace, network: Network, prop: Property, n_props: int,
                 splits: SplitSet, nb: NodeBounds, deadline: float) -> dict[int, str]:
    """Build (write, solve) the one-file model; return {-1: answer} when solved."""
    dm = build_disjunction_milp(network, prop, (nb.lower, nb.upper), splits, args.formulation,
                                valid_inequalities=args.valid_inequalities,
                                unsafe_slack=args.unsafe_slack)
    model = dm.model
    if args.cuts:
        model, _ = add_anderson_cuts(model, args.cuts)
    n = len(prop.unsafe.disjuncts)
    if args.out is not None:
        _write(model, Path(args.out), _header(args, n_props, nb, f"all {n} unsafe disjuncts, "
                                              "a binary delta_k selects one"),
               f"bnbver_{nb.source}_{args.formulation}")
    if not args.solve:
        return {}

    def selected(x: np.ndarray) -> str:
        return f"disjunct {int(np.argmax(x[dm.selectors]))}"

    limit = max(deadline - time.monotonic(), 0.0)
    return {-1: _solve_and_print(model, "disjunction", args, network, prop, limit, selected)}


def _print_result(answers: dict[int, str], n: int) -> None:
    """Print the undecided disjuncts (when unknown) and the final result line."""
    values = list(answers.values())
    if "sat" in values:
        result = "sat"
    elif values and all(a == "unsat" for a in values) and (-1 in answers or len(values) == n):
        result = "unsat"
    else:
        result = "unknown"
        undecided = [k for k in range(n) if answers.get(k, "unknown") != "unsat"]
        if -1 not in answers:
            print("undecided disjuncts: " + ", ".join(map(str, undecided)))
    print(f"result: {result}")


def run(args: argparse.Namespace) -> int:
    """Build (and optionally write and solve) the node's MILP(s)."""
    _validate(args)
    deadline = time.monotonic() + args.time_limit
    network = load_network(args.net)
    props = load_properties(args.prop, network)
    if not 0 <= args.property_index < len(props):
        raise InputError("--property-index", f"{args.property_index} outside 0..{len(props) - 1}")
    prop = props[args.property_index]
    splits = parse_splits(args.node_splits, network.relu_sizes)
    nb = node_bounds(network, prop, args.bounds, splits, deadline=deadline,
                     threads=args.threads)
    build = _disjunction if args.disjunction == "binary" else _per_disjunct
    answers = build(args, network, prop, len(props), splits, nb, deadline)
    if args.solve:
        _print_result(answers, len(prop.unsafe.disjuncts))
    return 0


__all__ = ["EPILOG", "configure", "parse_splits", "run"]
