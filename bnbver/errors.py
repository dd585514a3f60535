"""Exception types of bnbver.

Every error a user can cause (a bad file, an unsupported operator, a property that does not fit
the network) is an :class:`InputError`; the CLI prints it as one line ``error: <file>: <what>``
and exits with code 2. This module imports nothing from bnbver so every layer may use it.
"""

from __future__ import annotations


class BnbverError(Exception):
    """Base class of every exception bnbver raises on purpose."""


class InputError(BnbverError):
    """A user-supplied file or argument is unusable.

    Args:
        source: the file (or argument name) at fault.
        problem: what is wrong with it, as a short phrase.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class UnsupportedOperatorError(InputError):
    """The network uses an operator bnbver cannot encode."""


class VnnlibSyntaxError(InputError):
    """A VNN-LIB file does not parse."""


class SolverError(BnbverError):
    """A solver (HiGHS) failed in a way that is not an answer."""
