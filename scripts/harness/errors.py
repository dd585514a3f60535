"""Clean failure of the ``scripts/`` entry points: one ``error:`` line and exit code 2.

A script's ``main`` is wrapped by :func:`clean_exit`. Bad input (bnbver's ``InputError``, a
:class:`ScriptError` raised by a script, a missing or unreadable file) becomes one line
``error: <what>`` on stderr and the return value 2, never a traceback. Anything else is a bug
and keeps its traceback. ``BNBVER_TRACEBACK=1`` shows the traceback of bad input too.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

from bnbver.errors import BnbverError

P = ParamSpec("P")

#: Exit code of a script that was given bad input.
EXIT_BAD_INPUT = 2


class ScriptError(Exception):
    """Bad input that a script itself detects (an unknown name, an empty selection, ...)."""


def fail(message: str) -> int:
    """Print ``error: message`` on stderr and return :data:`EXIT_BAD_INPUT`."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_BAD_INPUT


def clean_exit(main: Callable[P, int | None]) -> Callable[P, int]:
    """Wrap a script's ``main``: bad input returns 2 after one ``error:`` line."""

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            return int(main(*args, **kwargs) or 0)
        except (BnbverError, ScriptError, OSError) as exc:
            if os.environ.get("BNBVER_TRACEBACK"):
                raise
            text = str(exc) if not isinstance(exc, OSError) or not exc.filename else \
                f"{exc.filename}: {exc.strerror or exc}"
            return fail(text)

    return wrapper
