"""Properties: an input box and an unsafe output set (a union of polyhedra).

A :class:`Property` is violated (``sat``) when some x in ``box`` has ``f(x)`` in ``unsafe``,
i.e. satisfies ``C y <= d`` row-wise for at least one disjunct. VNN-LIB states the unsafe set
directly, so ``sat``/``unsat`` match VNN-COMP. A VNN-LIB file with a disjunction of input boxes
becomes several properties; the file is violated when any of them is.

Margins: for a disjunct (C, d) the *margin* of y is ``max_i (C y - d)_i``; y is unsafe for the
disjunct iff its margin is <= 0. Verifiers prove a property by showing every disjunct's margin
is > 0 on the whole box (the "lower bound > 0" convention used everywhere in bnbver).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnbver.errors import InputError


def _ro(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class InputBox:
    """An axis-aligned box ``lower <= x <= upper`` on flat inputs, each (n,)."""

    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "lower", _ro(self.lower))
        object.__setattr__(self, "upper", _ro(self.upper))
        if self.lower.shape != self.upper.shape or self.lower.ndim != 1:
            raise ValueError("box lower and upper must be 1-D arrays of one shape")

    @property
    def size(self) -> int:
        return int(self.lower.shape[0])

    def contains(self, x: np.ndarray, tol: float = 0.0) -> bool:
        """Return True when x lies in the box, allowing ``tol`` outside each face."""
        x = np.asarray(x, dtype=np.float64)
        return bool(np.all(x >= self.lower - tol) and np.all(x <= self.upper + tol))


@dataclass(frozen=True, eq=False)
class HalfSpaces:
    """The conjunction ``C @ y <= d``; C is (k, m), d is (k,)."""

    C: np.ndarray
    d: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "C", _ro(np.atleast_2d(self.C)))
        object.__setattr__(self, "d", _ro(np.atleast_1d(self.d)))

    def margins(self, y: np.ndarray) -> np.ndarray:
        """Return ``max_i (C y - d)_i`` per row of y (B, m) -> (B,); <= 0 means unsafe."""
        y2 = np.atleast_2d(y)
        out: np.ndarray = np.max(y2 @ self.C.T - self.d, axis=1)
        return out


@dataclass(frozen=True)
class UnsafeSet:
    """A union of :class:`HalfSpaces`; y is unsafe when it satisfies any disjunct."""

    disjuncts: tuple[HalfSpaces, ...]

    def margins(self, y: np.ndarray) -> np.ndarray:
        """Return (B, k) margins, one column per disjunct."""
        return np.stack([h.margins(y) for h in self.disjuncts], axis=1)

    def violated_by(self, y: np.ndarray, tol: float = 0.0) -> int | None:
        """Return the index of a disjunct that single output y satisfies within tol, else None."""
        m = self.margins(np.asarray(y, dtype=np.float64).reshape(1, -1))[0]
        hits = np.flatnonzero(m <= tol)
        return int(hits[0]) if hits.size else None

    def exactly_violated_by(self, y: np.ndarray) -> int | None:
        """Return a disjunct that the exact output y (an object array of ``Fraction``)
        satisfies, in rational arithmetic, else None."""
        from fractions import Fraction

        for k, h in enumerate(self.disjuncts):
            C = [[Fraction(float(c)) for c in row] for row in h.C]
            d = [Fraction(float(v)) for v in h.d]
            if all(sum((c * v for c, v in zip(row, y, strict=True)), Fraction(0)) <= di
                   for row, di in zip(C, d, strict=True)):
                return k
        return None

    def surely_violated_by(self, y: np.ndarray, err: np.ndarray) -> int | None:
        """Return a disjunct that every output within ``err`` of y (elementwise) satisfies.

        Row i of a disjunct holds for all such outputs when ``C_i y - d_i + |C_i| err`` plus
        the rounding of that sum is <= 0 (a rigorous check in real arithmetic).
        """
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        for k, h in enumerate(self.disjuncts):
            n = h.C.shape[1] + 4
            gamma = n * 2.0 ** -53 / (1.0 - n * 2.0 ** -53) * (1.0 + 1e-9)
            slack = np.abs(h.C) @ err + gamma * (np.abs(h.C) @ np.abs(y) + np.abs(h.d))
            if np.all(h.C @ y - h.d + np.nextafter(slack * (1 + 1e-12), np.inf) <= 0):
                return k
        return None


@dataclass(frozen=True)
class Property:
    """An input box and the unsafe output set; ``name`` is for messages."""

    box: InputBox
    unsafe: UnsafeSet
    name: str = ""


def validate_property(prop: Property, n_in: int, n_out: int, source: str) -> None:
    """Check the property fits a network with n_in inputs and n_out outputs.

    Raises:
        InputError: sizes differ, bounds are not finite, or lower > upper.
    """
    if prop.box.size != n_in:
        raise InputError(source, f"property has {prop.box.size} inputs, network takes {n_in}")
    for h in prop.unsafe.disjuncts:
        if h.C.shape[1] != n_out:
            raise InputError(source, f"property has {h.C.shape[1]} outputs, network has {n_out}")
    if not (np.all(np.isfinite(prop.box.lower)) and np.all(np.isfinite(prop.box.upper))):
        raise InputError(source, "input bounds must be finite")
    bad = np.flatnonzero(prop.box.lower > prop.box.upper)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            source, f"lower bound {prop.box.lower[i]} > upper bound {prop.box.upper[i]} for X_{i}"
        )
