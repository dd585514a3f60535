"""An exact simplex in rational arithmetic: is ``{s : A s <= b, l <= s <= u}`` non-empty?

Method (Chvatal, *Linear Programming*, ch. 3-4): shift ``t = s - l`` so that ``0 <= t <= w``
with ``w = u - l``, turn the upper bounds into rows, and solve the auxiliary problem

    maximise -x0  subject to  A t - x0 <= b - A l,  t <= w,  t >= 0, x0 >= 0

in dictionary form with Bland's rule (the smallest-index entering and leaving variables, so
the method cannot cycle). The region is non-empty exactly when the optimum is 0, and the
final dictionary then gives a point of it. Every number is a ``fractions.Fraction``, so the
answer has no rounding error at all; the cost is ``O(m n)`` rational operations per pivot
(m rows, n variables), which is fine for the oracle's few input dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

MAX_PIVOTS = 10_000
"""Safety cap on pivots (Bland's rule terminates; the cap only guards against a bug)."""

_ZERO = Fraction(0)


class SimplexLimitError(RuntimeError):
    """The pivot cap was reached (never expected; the oracle then answers unknown)."""


def feasible_point(A: Sequence[Sequence[Fraction]], b: Sequence[Fraction],
                   lower: Sequence[Fraction], upper: Sequence[Fraction]) -> list[Fraction] | None:
    """Return a point s with ``A s <= b`` and ``lower <= s <= upper``, or None if none exists.

    Args:
        A: m rows of n coefficients.
        b: m right-hand sides.
        lower, upper: n finite bounds with ``lower <= upper``.

    Raises:
        SimplexLimitError: more than ``MAX_PIVOTS`` pivots.
    """
    n = len(lower)
    rhs = [bi - sum((a * lo for a, lo in zip(row, lower, strict=True) if a), _ZERO)
           for row, bi in zip(A, b, strict=True)]
    rows = [list(row) for row in A]
    for k in range(n):
        rows.append([Fraction(int(j == k)) for j in range(n)])
        rhs.append(upper[k] - lower[k])
    t = _phase_one(rows, rhs, n)
    return None if t is None else [lo + v for lo, v in zip(lower, t, strict=True)]


def _phase_one(rows: list[list[Fraction]], rhs: list[Fraction], n: int) -> list[Fraction] | None:
    """Return t >= 0 with ``rows t <= rhs``, or None (the auxiliary problem's optimum < 0)."""
    m = len(rows)
    if all(r >= 0 for r in rhs):
        return [_ZERO] * n
    # Variables: 0..n-1 are t, n is x0, n+1+i is the slack of row i.
    nonbasic = [*range(n), n]
    basis = [n + 1 + i for i in range(m)]
    dic = [[rhs[i], *(-a for a in rows[i]), Fraction(1)] for i in range(m)]
    obj = [_ZERO] * (n + 1) + [Fraction(-1)]
    leave = min(range(m), key=lambda i: (rhs[i], basis[i]))
    _pivot(dic, obj, basis, nonbasic, leave, n)
    for _ in range(MAX_PIVOTS):
        enter = _entering(obj, nonbasic)
        if enter is None:
            break
        leave_row = _leaving(dic, basis, enter)
        assert leave_row is not None, "the auxiliary problem is bounded by 0"
        _pivot(dic, obj, basis, nonbasic, leave_row, enter)
    else:
        raise SimplexLimitError(f"more than {MAX_PIVOTS} pivots")
    if obj[0] != 0:
        return None
    t = [_ZERO] * n
    for i, var in enumerate(basis):
        if var < n:
            t[var] = dic[i][0]
    return t


def _entering(obj: list[Fraction], nonbasic: list[int]) -> int | None:
    """Bland: the nonbasic position with a positive objective coefficient and the least index."""
    best = None
    for pos, var in enumerate(nonbasic):
        if obj[pos + 1] > 0 and (best is None or var < nonbasic[best]):
            best = pos
    return best


def _leaving(dic: list[list[Fraction]], basis: list[int], enter: int) -> int | None:
    """The row with the least ratio ``value / -coefficient`` (ties: least basic index)."""
    best, best_key = None, None
    for i, row in enumerate(dic):
        c = row[enter + 1]
        if c < 0:
            key = (row[0] / -c, basis[i])
            if best_key is None or key < best_key:
                best, best_key = i, key
    return best


def _pivot(dic: list[list[Fraction]], obj: list[Fraction], basis: list[int],
           nonbasic: list[int], r: int, e: int) -> None:
    """Exchange basic variable of row r with nonbasic position e (in place)."""
    row = dic[r]
    a = row[e + 1]
    new = [-v / a for v in row]
    new[e + 1] = 1 / a
    dic[r] = new
    for other in (*(dic[i] for i in range(len(dic)) if i != r), obj):
        c = other[e + 1]
        if c == 0:
            continue
        for k, v in enumerate(new):
            if k != e + 1 and v:
                other[k] += c * v
        other[e + 1] = c * new[e + 1]
    basis[r], nonbasic[e] = nonbasic[e], basis[r]
