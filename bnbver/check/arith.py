"""Outward-rounded float64 arithmetic for the checker (it shares no code with the engine).

The error model is the standard one: a dot product of length n computed in float64 in any
order is off by at most ``gamma_n |a|.|b|`` with ``gamma_n = n u / (1 - n u)``, u = 2^-53;
a single operation by u times its result. Every bound the checker computes subtracts such a
term and is then moved one ulp outwards.
"""

from __future__ import annotations

import numpy as np

U = 2.0 ** -53


def gamma(n: int) -> float:
    """Return gamma_n, rounded up."""
    nu = max(int(n), 1) * U
    return float(np.nextafter(nu / (1.0 - nu), np.inf)) * (1.0 + 1e-9)


def up(x: np.ndarray) -> np.ndarray:
    """Return x one ulp up (NaN becomes +inf)."""
    out = np.nextafter(x, np.inf)
    return np.where(np.isnan(out), np.inf, out)


def down(x: np.ndarray) -> np.ndarray:
    """Return x one ulp down (NaN becomes -inf)."""
    out = np.nextafter(x, -np.inf)
    return np.where(np.isnan(out), -np.inf, out)


def magnitude(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Return ``max(|lo|, |hi|)``: a bound on |x| over the box (exact)."""
    out: np.ndarray = np.maximum(np.abs(lo), np.abs(hi))
    return out
