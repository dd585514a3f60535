"""The ``bnbver`` command line: a thin dispatcher over ``bnbver.commands.<name>`` modules.

Each command module defines ``configure(parser)`` and ``run(args) -> int``. Every
:class:`~bnbver.errors.InputError` becomes one line ``error: <file>: <problem>`` on stderr and
exit code 2, so bad input never shows a traceback or a verdict.

Every command takes ``--config FILE.toml``: a table of the command's options (the long
option names, ``-`` or ``_``; positional arguments by their names; ``verbose``/``quiet``
too), which the command line overrides. ``-v`` logs progress (the search's nodes and bounds
every few seconds), ``-vv`` debug output, ``-q`` only the answer.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnbver import __version__
from bnbver.commands.common import process_age
from bnbver.errors import BnbverError, InputError

#: command name -> (module under bnbver.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "verify": ("verify", "verify one VNN-LIB property of a network (VNN-COMP result file)"),
    "certify": ("certify", "certify L-inf robustness of a model on a data set (CSV of rows)"),
    "check": ("check", "re-verify an unsat certificate independently"),
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
    parser.add_argument("--version", action="version", version=f"bnbver {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the answer (no progress, no summary)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in _available().items():
        mod = importlib.import_module(f"bnbver.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.configure(p)
        p.add_argument("--config", default=None, metavar="FILE.toml",
                       help="read options from a TOML file (the command line overrides it)")
        p.set_defaults(_module=mod)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking defaults from the command's ``--config`` file when given."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config is None:
        return parser.parse_args(argv)
    command = next((a for a in argv if a in _available()), None)
    sub = _subparser(parser, command)
    if sub is None:
        return parser.parse_args(argv)
    values = read_config(known.config)
    apply_config(parser, sub, values, known.config)
    return parser.parse_args(argv)


def _subparser(parser: argparse.ArgumentParser,
               command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    return None


def read_config(path: str) -> dict[str, Any]:
    """Read a TOML config file.

    Raises:
        InputError: the file is missing or not valid TOML.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such file")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None


def apply_config(top: argparse.ArgumentParser, sub: argparse.ArgumentParser,
                 values: dict[str, Any], path: str) -> None:
    """Make the config ``values`` the defaults of ``sub`` (and of ``top`` for -v/-q).

    A positional argument or a required option given in the file becomes optional on the
    command line. Values are converted by the option's type and checked against its choices.

    Raises:
        InputError: an unknown option or a value of the wrong type (naming the file).
    """
    actions = {a.dest: a for a in (*sub._actions, *top._actions)
               if a.dest not in ("help", "version", "config", "command", "_module")}
    for key, value in values.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise InputError(path, f"unknown option '{key}' (options: "
                             f"{', '.join(sorted(actions))})")
        value = _config_value(action, value, path, key)
        if not action.option_strings:  # a positional argument
            action.nargs = "?"
        action.required = False
        action.default = value


def _config_value(action: argparse.Action, value: Any, path: str, key: str) -> Any:
    """Convert one config value as the command line would."""
    if isinstance(value, dict):
        raise InputError(path, f"{key}: expected a value, got a table")
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        return [_converted(action, v, path, key) for v in items]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise InputError(path, f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._CountAction):
        return int(value)
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return _converted(action, value, path, key)


def _converted(action: argparse.Action, value: Any, path: str, key: str) -> Any:
    converter = action.type if callable(action.type) else None
    try:
        out = converter(value) if converter is not None else (
            value if isinstance(value, str) else str(value))
    except (TypeError, ValueError):
        raise InputError(path, f"{key}: {value!r} is not a valid value") from None
    if action.choices is not None and out not in action.choices:
        raise InputError(path, f"{key}: {value!r} is not one of {list(action.choices)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    try:
        args = _parse(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # As its own process (argv from the command line) a command's time limit counts from
    # the process's start, as a VNN-COMP harness times it; called in-process, from here.
    args.started = time.monotonic() - (process_age() if argv is None else 0.0)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=logging.ERROR if args.quiet else level,
                        format="%(levelname)s %(name)s: %(message)s")
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
