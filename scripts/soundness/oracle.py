"""An independent, exact oracle for tiny networks: enumerate activation patterns, exact LPs.

It shares no code with bnbver (it imports nothing from ``bnbver``) and reads the generator's
own weight arrays (:mod:`netspec`), not the ONNX file.

Method. Fix an input box; the inputs of zero width are constants and the others, the *free*
dimensions ``s``, are the variables. Walking the network in order, every value is kept as an
exact affine function ``a . s + c`` of the free inputs (``fractions.Fraction`` coefficients),
valid on the current region ``P = box /\\ {s : a_k . s <= b_k for the constraints so far}``.

- An affine operator maps the affine functions exactly.
- A residual block keeps its input's affine functions and adds them (through its shortcut's
  affine map) to the body's output: exact too.
- A ReLU unit ``z`` branches into ``z <= 0`` (output 0) and ``z >= 0`` (output z); a
  max-pool unit branches into one choice ``j`` per window cell with ``z_j >= z_i`` for all
  other cells i (output z_j). Together the branches cover P, so nothing is lost.
- A branch is kept only if its region is non-empty. That is decided exactly: a constraint
  implied by the box (interval arithmetic in rationals) is dropped, one violated on the whole
  box closes the branch, a known point of the parent region that satisfies the new
  constraints proves non-emptiness, and otherwise the exact simplex (:mod:`simplex`) decides.
- At a leaf the outputs are affine on the region; each unsafe conjunction adds its rows and
  the same test decides whether some input of the region is unsafe.

So ``sat`` comes with an exact witness (re-checked here by an exact forward pass) and
``unsat`` means every leaf region was shown empty by exact arithmetic. This is one exact
LP per feasible pattern prefix, which is the "one LP per activation pattern" enumeration with
the infeasible patterns pruned early.

Numerical limits. There are none in the arithmetic: every step is exact, whatever the scale
(weights of 1e-11 or 1e9, inputs of 1e6, float32 or float64 values). The limits are of size
and time, and outside them the answer is ``unknown`` (the fuzzer skips and counts those):

- at most ``OracleLimits.max_units`` ReLU neurons plus max-pool outputs;
- at most ``OracleLimits.max_free_dims`` input dimensions of non-zero width per box (inputs
  with no weight in the first affine layer do not count: they are held at a constant);
- at most ``OracleLimits.max_lps`` exact LPs and ``OracleLimits.time_limit`` seconds.

Semantics. The network is evaluated in real arithmetic on the exact weight values; the
boxes and output thresholds are the exact float64 values written (as exact decimals) to the
VNN-LIB file. The oracle answers the question in that exact semantics; a float32 runtime
may disagree near the boundary, which is why the fuzzer replays every witness there too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .exact import (
    AddPop,
    Affine,
    ExactOp,
    Pool,
    PushOp,
    exact_ops,
    forward,
    fr,
    in_box,
    violated_disjunct,
)
from .netspec import Instance, OutRow
from .simplex import SimplexLimitError, feasible_point

Vec = tuple[Fraction, ...]
Lin = tuple[Vec, Fraction]  # a . s + c
Cons = tuple[tuple[Vec, Fraction], ...]  # rows a . s <= b
Kept = tuple[list[Lin], ...]  # the inputs of the open residual blocks, innermost last

_ZERO = Fraction(0)


@dataclass(frozen=True)
class OracleLimits:
    """Size and time limits; outside them the oracle answers "unknown"."""

    max_units: int = 40
    max_free_dims: int = 8
    max_lps: int = 20_000
    time_limit: float = 30.0


@dataclass(frozen=True)
class OracleResult:
    """The answer ("sat", "unsat" or "unknown"), an exact witness for sat, and statistics.

    ``reason`` says why the answer is unknown; it starts with "bug:" only when the oracle's
    own re-check of its witness failed (an oracle bug, reported as a failure).
    """

    answer: str
    witness: tuple[Fraction, ...] | None = None
    box: int = -1
    disjunct: int = -1
    lps: int = 0
    seconds: float = 0.0
    reason: str = ""


class _BudgetError(Exception):
    """The LP or time budget ran out."""


class _FoundError(Exception):
    """An unsafe point was found: ``s`` (free coordinates) and the disjunct."""

    def __init__(self, s: Vec, disjunct: int) -> None:
        super().__init__()
        self.s, self.disjunct = s, disjunct


@dataclass
class _Walk:
    """The enumeration over one box (mutable: counts LPs)."""

    ops: tuple[ExactOp, ...]
    disjuncts: tuple[tuple[OutRow, ...], ...]
    lower: Vec
    upper: Vec
    limits: OracleLimits
    deadline: float
    lps: int = 0

    def run(self, vals: list[Lin]) -> None:
        """Enumerate from the input values; raise _FoundError on an unsafe point."""
        self._op(0, vals, (), self.lower)

    def _op(self, k: int, vals: list[Lin], cons: Cons, wit: Vec, kept: Kept = ()) -> None:
        """Apply operator k; ``kept`` holds the inputs of the open residual blocks."""
        if k == len(self.ops):
            self._leaf(vals, cons, wit)
            return
        op = self.ops[k]
        d = len(self.lower)
        if isinstance(op, Affine):
            self._op(k + 1, _affine(op, vals, d), cons, wit, kept)
        elif isinstance(op, PushOp):
            self._op(k + 1, vals, cons, wit, (*kept, vals))
        elif isinstance(op, AddPop):
            h = kept[-1] if op.shortcut is None else _affine(op.shortcut, kept[-1], d)
            joined = [(tuple(x + y for x, y in zip(a, b, strict=True)), c + e)
                      for (a, c), (b, e) in zip(vals, h, strict=True)]
            self._op(k + 1, joined, cons, wit, kept[:-1])
        else:
            self._unit(k, 0, vals, [], cons, wit, kept)

    def _unit(self, k: int, i: int, src: list[Lin], out: list[Lin], cons: Cons,
              wit: Vec, kept: Kept) -> None:
        """Branch on unit i of the nonlinear operator k (ReLU or max pool)."""
        op = self.ops[k]
        if i == (len(op.windows) if isinstance(op, Pool) else len(src)):
            self._op(k + 1, out, cons, wit, kept)
            return
        for rows, value in _choices(op, src, i, len(self.lower)):
            child = self._branch(cons, wit, rows)
            if child is not None:
                self._unit(k, i + 1, src, [*out, value], *child, kept)

    def _leaf(self, vals: list[Lin], cons: Cons, wit: Vec) -> None:
        for k, conj in enumerate(self.disjuncts):
            rows = [_out_row(r, vals, len(self.lower)) for r in conj]
            child = self._branch(cons, wit, rows)
            if child is not None:
                raise _FoundError(child[1], k)

    def _branch(self, cons: Cons, wit: Vec, rows: Sequence[tuple[Vec, Fraction]]
                ) -> tuple[Cons, Vec] | None:
        """Return (constraints, a point) of ``region /\\ rows``, or None if it is empty."""
        new = []
        for a, b in rows:
            lo, hi = _range(a, self.lower, self.upper)
            if lo > b:
                return None
            if hi > b:
                new.append((a, b))
        if not new:
            return cons, wit
        full = cons + tuple(new)
        if all(_dot(a, wit) <= b for a, b in new):
            return full, wit
        point = self._lp(full, wit)
        return None if point is None else (full, point)

    def _lp(self, cons: Cons, wit: Vec) -> Vec | None:
        """Decide the region exactly; only the dimensions that appear in a row are variables."""
        self.lps += 1
        if self.lps > self.limits.max_lps or time.monotonic() > self.deadline:
            raise _BudgetError
        used = [d for d in range(len(wit)) if any(a[d] for a, _ in cons)]
        A = [[a[d] for d in used] for a, _ in cons]
        sol = feasible_point(A, [b for _, b in cons], [self.lower[d] for d in used],
                             [self.upper[d] for d in used])
        if sol is None:
            return None
        point = list(wit)
        for d, v in zip(used, sol, strict=True):
            point[d] = v
        return tuple(point)


def decide(inst: Instance, limits: OracleLimits | None = None) -> OracleResult:
    """Decide the instance exactly: "sat" (with a witness), "unsat", or "unknown".

    Args:
        inst: the generator's instance (its own weight arrays).
        limits: size and time limits (see the module docstring).
    """
    limits = limits or OracleLimits()
    start = time.monotonic()
    if inst.net.num_units > limits.max_units:
        return OracleResult("unknown", reason=f"{inst.net.num_units} units > "
                            f"{limits.max_units}")
    ops = exact_ops(inst.net)
    lps = 0
    used = _used_inputs(ops, inst.net.input_size)
    for bi, (lower, upper) in enumerate(inst.boxes):
        free = [i for i in range(lower.size) if upper[i] > lower[i] and i in used]
        if len(free) > limits.max_free_dims:
            return OracleResult("unknown", lps=lps, reason=f"{len(free)} free dims > "
                                f"{limits.max_free_dims}")
        walk = _Walk(ops, inst.disjuncts, tuple(fr(lower[i]) for i in free),
                     tuple(fr(upper[i]) for i in free), limits, start + limits.time_limit)
        try:
            walk.run(_input_values(lower, free))
        except _FoundError as found:
            x = _full_point(lower, free, found.s)
            return _checked(inst, ops, x, bi, found.disjunct, lps + walk.lps, start)
        except _BudgetError:
            return OracleResult("unknown", lps=lps + walk.lps, seconds=time.monotonic() - start,
                                reason="LP or time budget exhausted")
        except SimplexLimitError as exc:
            return OracleResult("unknown", lps=lps + walk.lps, reason=str(exc))
        lps += walk.lps
    return OracleResult("unsat", lps=lps, seconds=time.monotonic() - start)


def _checked(inst: Instance, ops: tuple[ExactOp, ...], x: Vec, box: int, disjunct: int,
             lps: int, start: float) -> OracleResult:
    """Re-check a witness by an exact forward pass before answering sat."""
    lower, upper = inst.boxes[box]
    y = forward(ops, x)
    seconds = time.monotonic() - start
    if not in_box(x, lower, upper) or violated_disjunct(inst.disjuncts, y) is None:
        return OracleResult("unknown", lps=lps, seconds=seconds,
                            reason="bug: the oracle's witness fails its exact re-check")
    return OracleResult("sat", x, box, disjunct, lps, seconds)


def _used_inputs(ops: tuple[ExactOp, ...], n: int) -> set[int]:
    """Return the inputs the network reads (an input outside them is held at its lower bound)."""
    if ops and isinstance(ops[0], Affine):
        return {j for row in ops[0].rows for j, _ in row}
    return set(range(n))


def _input_values(lower: np.ndarray, free: list[int]) -> list[Lin]:
    """Return each input as an affine function of the free inputs (fixed ones: constants)."""
    d = len(free)
    out: list[Lin] = []
    pos = {i: k for k, i in enumerate(free)}
    for i, v in enumerate(lower.tolist()):
        if i in pos:
            out.append((tuple(Fraction(int(t == pos[i])) for t in range(d)), _ZERO))
        else:
            out.append(((_ZERO,) * d, fr(v)))
    return out


def _full_point(lower: np.ndarray, free: list[int], s: Vec) -> Vec:
    x = [fr(v) for v in lower.tolist()]
    for k, i in enumerate(free):
        x[i] = s[k]
    return tuple(x)


def _affine(op: Affine, vals: list[Lin], d: int) -> list[Lin]:
    """Map affine functions through ``op`` exactly."""
    out: list[Lin] = []
    for row, bias in zip(op.rows, op.bias, strict=True):
        acc = [_ZERO] * d
        const = bias
        for j, w in row:
            a, c = vals[j]
            const += w * c
            for t in range(d):
                if a[t]:
                    acc[t] += w * a[t]
        out.append((tuple(acc), const))
    return out


def _choices(op: ExactOp, src: list[Lin], i: int, d: int
             ) -> list[tuple[list[tuple[Vec, Fraction]], Lin]]:
    """Return the branches of unit i: (rows ``a . s <= b``, output value) per branch."""
    if isinstance(op, Pool):
        win = op.windows[i]
        out = []
        for j in win:
            rows = [_sub(src[m], src[j]) for m in win if m != j]  # z_m - z_j <= 0
            out.append((rows, src[j]))
        return out
    a, c = src[i]
    zero: Lin = ((_ZERO,) * d, _ZERO)
    neg = tuple(-v for v in a)
    return [([(a, -c)], zero), ([(neg, c)], src[i])]  # z <= 0 -> 0;  z >= 0 -> z


def _sub(p: Lin, q: Lin) -> tuple[Vec, Fraction]:
    """Return the row ``p - q <= 0`` as (a, b)."""
    return tuple(x - y for x, y in zip(p[0], q[0], strict=True)), q[1] - p[1]


def _out_row(row: OutRow, vals: list[Lin], d: int) -> tuple[Vec, Fraction]:
    """Return one output constraint as a row ``a . s <= b``."""
    lhs = vals[row.lhs]
    rhs: Lin = vals[row.rhs_var] if row.rhs_var is not None else ((_ZERO,) * d, fr(row.rhs))
    return _sub(lhs, rhs) if row.op == "<=" else _sub(rhs, lhs)


def _dot(a: Vec, s: Vec) -> Fraction:
    return sum((x * y for x, y in zip(a, s, strict=True) if x), _ZERO)


def _range(a: Vec, lower: Vec, upper: Vec) -> tuple[Fraction, Fraction]:
    """Return (min, max) of ``a . s`` over the box, exactly."""
    lo = hi = _ZERO
    for v, l_, u in zip(a, lower, upper, strict=True):
        if v > 0:
            lo, hi = lo + v * l_, hi + v * u
        elif v < 0:
            lo, hi = lo + v * u, hi + v * l_
    return lo, hi
