"""The ``bnbver`` command line: a thin dispatcher over ``bnbver.commands.<name>`` modules.

Each command module defines ``configure(parser)`` and ``run(args) -> int``. Every
:class:`~bnbver.errors.InputError` becomes one line ``error: <file>: <problem>`` on stderr and
exit code 2, so bad input never shows a traceback or a verdict.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from bnbver.errors import BnbverError, InputError

#: command name -> (module under bnbver.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("verify", "verify one VNN-LIB property of a network (VNN-COMP result file)"),
    "info": ("info", "print a network's layers, shapes and neuron counts"),
    "export-milp": ("export_milp", "export a BaB node of an instance as a MILP (MPS/LP file)"),
    "run-suite": ("run_suite", "run every instance of a benchmark instances.csv"),
    "adversarial": ("adversarial", "minimal adversarial example by exact optimisation"),
    "visualize": ("visualize", "feature visualisation: maximise one unit's activation"),
    "train-bdnn": ("train_bdnn", "train a binarized network by mixed-integer programming"),
}


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(f"bnbver.commands.{module}") is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with one sub-parser per available command."""
    parser = argparse.ArgumentParser(prog="bnbver", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in _available().items():
        mod = importlib.import_module(f"bnbver.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._module.run(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BnbverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
