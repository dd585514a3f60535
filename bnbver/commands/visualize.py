"""``bnbver visualize NET --unit LAYER:INDEX``: the input that maximises one unit, exactly.

Fischetti & Jo's feature visualisation; ``--near IMAGE --weight w`` adds ``- w ||x - x0||_1``
to the objective. Prints a summary (or with ``--json`` one JSON object: ``status``, ``x``,
``objective`` = the maximised value, ``bound`` = a proven upper bound, ``seconds``) and writes
a PNG of the input found.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bnbver.apps.images import image_shape, load_image, save_grid_png
from bnbver.apps.visualize import UnitResult, maximize_unit, parse_unit
from bnbver.commands.adversarial import add_common, options_of, parse_box, png_target, solve_json
from bnbver.commands.common import quiet
from bnbver.io.loaders import load_network
from bnbver.progress import timed


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``visualize``."""
    add_common(parser)
    parser.add_argument("--unit", required=True,
                        help="LAYER:INDEX; LAYER = ReLU layer number (see bnbver info) or 'out'")
    parser.add_argument("--near", help="stay near this image (.npy, .png, csv/txt)")
    parser.add_argument("--weight", type=float, default=0.0,
                        help="weight w of the L1 distance to --near (default 0)")


def _report(res: UnitResult, png: str | None, as_json: bool) -> None:
    if as_json:
        out = solve_json(res.solve, res.x, res.objective, res.bound)
        out.update({"layer": res.layer, "index": res.index,
                    "activation": float(res.activation) if np.isfinite(res.activation)
                    else None, "png": png})
        print(json.dumps(out))
        return
    print(f"status     {res.status.value}")
    print(f"objective  {res.objective:.6g}; proven upper bound {res.bound:.6g}; "
          f"gap {res.gap:.3g}")
    print(f"unit       layer {res.layer} index {res.index}: pre-activation "
          f"{res.activation:.6g}")
    print(f"time       {res.seconds:.2f} s ({res.solve.method}, {res.solve.nodes} nodes)")
    if png:
        print(f"png        {png}")


def run(args: argparse.Namespace) -> int:
    """Maximise the unit and report it."""
    network = load_network(args.net)
    layer, index = parse_unit(args.unit, network)
    near = None if args.near is None else load_image(args.near, network.input_size)
    options, domain = options_of(args), parse_box(args.box)
    target = png_target(args, "visualize.png")
    with timed("visualize", args.timeout, enabled=not quiet(args)):
        res = maximize_unit(network, layer, index, near=near, weight=args.weight,
                            domain=domain, options=options, method=args.method)
    png = None
    if res.x is not None and target is not None:
        images, titles = [res.x], [f"unit {layer}:{index} = {res.activation:.3g}"]
        if near is not None:
            images, titles = [near, res.x], ["near", titles[0]]
        png = str(save_grid_png(target, images, titles, image_shape(network)))
    _report(res, png, args.json)
    return 0
