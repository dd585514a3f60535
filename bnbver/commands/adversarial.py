"""``bnbver adversarial NET``: the minimal adversarial example of an input, solved exactly.

Prints a summary (or with ``--json`` one JSON object: ``status``, ``x``, ``objective`` = the
distance, ``bound`` = the proven lower bound, ``seconds``, and more) and writes a PNG of
original / adversarial / difference.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.apps.adversarial import AdversarialResult, minimal_adversarial
from bnbver.apps.images import (
    has_matplotlib,
    image_shape,
    load_image,
    read_dataset_row,
    save_adversarial_png,
)
from bnbver.apps.optimize import TIGHTEN_MODES, OptimizeOptions, OptimizeResult
from bnbver.commands.common import check_writable, quiet
from bnbver.errors import InputError
from bnbver.io.loaders import load_network
from bnbver.network import Network
from bnbver.progress import timed

log = logging.getLogger(__name__)

#: where ``--index`` reads images when ``--data`` is not given (relative to the working dir)
DEFAULT_DATA = "../shared/benchmarks/data/mnist/t10k-images-idx3-ubyte.gz"


def add_common(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``adversarial`` and ``visualize``."""
    parser.add_argument("net", help="network file (.onnx or .nnet)")
    parser.add_argument("--box", default="0,1", help="input domain lo,hi (default 0,1)")
    parser.add_argument("--tighten", default="lp", choices=TIGHTEN_MODES,
                        help="root bound tightening (default lp)")
    parser.add_argument("--method", default="bab",
                        help="bab (default) or milp:<bigm|extended|partition:N>")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--gap", type=float, default=1e-4, help="relative gap (default 1e-4)")
    parser.add_argument("--png", help="where to write the PNG (default: next to nothing, "
                        "<command>.png in the working directory)")
    parser.add_argument("--no-png", action="store_true", help="do not write a PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``adversarial``."""
    add_common(parser)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="input file (.npy, .png, or csv/txt of pixel values)")
    src.add_argument("--index", type=int, help="image number in --data")
    parser.add_argument("--data", help=f"MNIST idx3 (.gz) or csv for --index "
                        f"(default {DEFAULT_DATA})")
    parser.add_argument("--target", required=True,
                        help="target class, or 'auto' = (predicted class + 5) mod classes")
    parser.add_argument("--norm", default="l1", choices=("l1", "linf"))
    parser.add_argument("--margin", type=float, default=1.2,
                        help="require y_t >= margin * y_j for j != t (default 1.2; 1 = plain)")


def parse_box(text: str) -> tuple[float, float]:
    """Parse ``lo,hi``.

    Raises:
        InputError: not two numbers with lo <= hi.
    """
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--box", f"'{text}' (expected lo,hi)") from None
    if not lo <= hi:
        raise InputError("--box", f"'{text}' has lo > hi")
    return lo, hi


def png_target(args: argparse.Namespace, default: str) -> str | None:
    """Return where to write the PNG, or None (``--no-png``, or no matplotlib: a warning).

    Checked before the solve, so a missing plotting library or an unwritable path never
    costs the result.

    Raises:
        InputError: the PNG path is not writable.
    """
    if args.no_png:
        return None
    if not has_matplotlib():
        log.warning("matplotlib is not installed: no PNG is written (pip install matplotlib)")
        return None
    target = str(args.png or default)
    check_writable(target, "--png")
    return target


def options_of(args: argparse.Namespace) -> OptimizeOptions:
    """Return the optimiser options of the shared arguments."""
    if not args.timeout > 0:
        raise InputError("--timeout", f"{args.timeout} (expected > 0)")
    _check_method(args.method)
    return OptimizeOptions(time_limit=args.timeout, tighten=args.tighten, gap_rel=args.gap)


def read_input(args: argparse.Namespace, network: Network, image: str | None,
               index: int | None) -> tuple[np.ndarray, int | None]:
    """Return the input (flat) from ``image`` or from row ``index`` of ``--data``."""
    if image is not None:
        return load_image(image, network.input_size), None
    data = args.data or DEFAULT_DATA
    if not Path(data).is_file():
        raise InputError("--data", f"{data}: no such file (give --data with --index)")
    x, label = read_dataset_row(data, int(index or 0))
    if x.size != network.input_size:
        raise InputError(str(data), f"images have {x.size} values, the network takes "
                         f"{network.input_size}")
    return x, label


def solve_json(res: OptimizeResult, x: np.ndarray | None, objective: float, bound: float
               ) -> dict[str, Any]:
    """Return the JSON fields every application prints."""
    def num(v: float) -> float | str:
        return float(v) if np.isfinite(v) else ("inf" if v > 0 else "-inf")

    return {"status": res.status.value, "x": None if x is None else [float(v) for v in x],
            "objective": num(objective), "bound": num(bound), "seconds": round(res.seconds, 4),
            "gap": num(res.gap), "method": res.method, "nodes": res.nodes,
            "tighten_seconds": round(res.tighten_seconds, 4), "unstable": res.unstable}


def _report(res: AdversarialResult, label: int | None, png: str | None, as_json: bool) -> None:
    if as_json:
        out = solve_json(res.solve, res.x, res.distance, res.bound)
        out.update({"norm": res.norm, "target": res.target, "margin": res.margin,
                    "label": label, "original_class": int(np.argmax(res.original_logits)),
                    "adversarial_class": None if res.logits is None
                    else int(np.argmax(res.logits)), "png": png})
        print(json.dumps(out))
        return
    print(f"status    {res.status.value}")
    print(f"distance  {res.distance:.6g} ({res.norm}); proven lower bound {res.bound:.6g}; "
          f"gap {res.gap:.3g}")
    print(f"classes   original {int(np.argmax(res.original_logits))} -> target {res.target} "
          f"(margin {res.margin:g})")
    if res.logits is not None:
        print(f"logits    {np.array2string(res.logits, precision=4)}")
    print(f"time      {res.seconds:.2f} s ({res.solve.method}, {res.solve.nodes} nodes)")
    if png:
        print(f"png       {png}")


def run(args: argparse.Namespace) -> int:
    """Solve the minimal adversarial problem and report it."""
    network = load_network(args.net)
    x0, label = read_input(args, network, args.image, args.index)
    y0 = network.forward(x0)
    target = _target(args.target, int(np.argmax(y0)), network.num_outputs)
    options, domain = options_of(args), parse_box(args.box)
    png = png_target(args, "adversarial.png")
    with timed("adversarial", args.timeout, enabled=not quiet(args)):
        res = minimal_adversarial(network, x0, target, norm=args.norm, margin=args.margin,
                                  domain=domain, options=options, method=args.method)
    if res.x is not None and png is not None:
        png = str(save_adversarial_png(
            png, res.x0, res.x, image_shape(network),
            f"{res.norm} distance {res.distance:.4g} (bound {res.bound:.4g}), target "
            f"{res.target}"))
    else:
        png = None
    _report(res, label, png, args.json)
    return 0


def _check_method(method: str) -> None:
    """Raise InputError for a ``--method`` that is not bab or milp[:<formulation>]."""
    from bnbver.milp import parse_formulation

    if method == "bab" or method == "milp":
        return
    if method.startswith("milp:"):
        parse_formulation(method.partition(":")[2])
        return
    raise InputError("--method", f"unknown method '{method}' (expected bab or "
                     "milp:<bigm|extended|partition:N>)")


def _target(text: str, predicted: int, classes: int) -> int:
    if text == "auto":
        return (predicted + 5) % classes
    try:
        t = int(text)
    except ValueError:
        raise InputError("--target", f"'{text}' (expected a class number or 'auto')") from None
    if not 0 <= t < classes:
        raise InputError("--target", f"{t} outside 0..{classes - 1}")
    return t
