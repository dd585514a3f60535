"""Argument helpers the commands share: output paths checked before any work, number lists."""

from __future__ import annotations

import argparse
import csv
import math
import os
from pathlib import Path

from bnbver.errors import InputError


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Raise InputError unless ``path`` can be written (checked before the work, not after).

    Raises:
        InputError: ``path`` is a folder, its folder does not exist, or it is not writable.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(str(path), f"{flag}: is a folder, expected a file name")
    if not parent.is_dir():
        raise InputError(str(path), f"{flag}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise InputError(str(path), f"{flag}: not writable")


def float_list(text: str | float | list[float], flag: str) -> list[float]:
    """Parse ``"0.01,0.03"`` (or a number, or a list from a config file) into floats.

    Raises:
        InputError: an empty list or a value that is not a finite number.
    """
    parts = text if isinstance(text, list) else str(text).split(",")
    try:
        values = [float(v) for v in parts if str(v).strip()]
    except ValueError:
        raise InputError(flag, f"{text!r}: expected comma-separated numbers") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise InputError(flag, f"{text!r}: expected comma-separated finite numbers")
    return values


def int_list(text: str | int | list[int], flag: str) -> list[int]:
    """Parse ``"3,17"`` (or an int, or a list from a config file) into ints.

    Raises:
        InputError: an empty list or a value that is not an integer.
    """
    parts = text if isinstance(text, list) else str(text).split(",")
    try:
        values = [int(str(v).strip()) for v in parts if str(v).strip()]
    except ValueError:
        raise InputError(flag, f"{text!r}: expected comma-separated integers") from None
    if not values:
        raise InputError(flag, "expected at least one integer")
    return values


def domain_arg(text: str | None, flag: str = "--domain") -> tuple[float, float] | None:
    """Parse ``"lo,hi"``.

    Raises:
        InputError: not two numbers, or lo > hi.
    """
    if text is None:
        return None
    values = float_list(text, flag)
    if len(values) != 2:
        raise InputError(flag, f"{text!r}: expected lo,hi")
    if values[0] > values[1]:
        raise InputError(flag, f"{text!r}: lo > hi (the domain is reversed)")
    return values[0], values[1]


def quiet(args: argparse.Namespace) -> bool:
    """Return whether ``bnbver -q`` asked for the answer only."""
    return bool(getattr(args, "quiet", False))


def check_positive(value: float | None, flag: str, integer: bool = False) -> None:
    """Raise InputError unless ``value`` (when given) is > 0 (>= 1 for counts).

    Raises:
        InputError: naming ``flag`` and the value.
    """
    if value is None:
        return
    ok = value >= 1 if integer else (math.isfinite(value) and value > 0)
    if not ok:
        raise InputError(flag, f"must be {'>= 1' if integer else '> 0'}, got {value:g}")


def process_age() -> float:
    """Return the seconds since this process started (0 where the OS does not say).

    A VNN-COMP harness times the whole process, interpreter start-up and imports included
    (seconds on a loaded machine), so ``verify`` deducts them from its time limit.
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(age, 0.0)


def read_rows(out: Path, fields: list[str]) -> list[dict[str, str]]:
    """Return the rows of a results CSV that ``--resume`` keeps ([] when there is none).

    Raises:
        InputError: the file has other columns than ``fields`` (another command's CSV).
    """
    if not out.exists() or out.stat().st_size == 0:
        return []
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != fields:
            raise InputError(str(out), f"--resume: expected the columns {','.join(fields)}, "
                             f"found {','.join(reader.fieldnames or [])}")
        return list(reader)


def code_version() -> str:
    """Return the commit bnbver runs from (``+dirty`` with uncommitted changes to tracked
    files), or its version when it is not a git checkout: what a results row was made by."""
    import subprocess

    from bnbver import __version__

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return __version__
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
