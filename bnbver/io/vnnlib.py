"""Parse VNN-LIB 1.0 property files (the VNN-COMP subset) into :class:`Property` objects.

Grammar (SMT-LIB subset): comments start with ``;``; commands are ``(declare-const X_i Real)``,
``(declare-const Y_j Real)`` and ``(assert F)``. Formulas are ``(and F...)``, ``(or F...)`` and
comparisons ``(<= a b ...)``, ``(>= a b ...)``, ``(= a b)`` over linear terms: a variable, a
number, ``(+ t...)``, ``(- t)``, ``(- t t...)`` and ``(* c t)`` with at most one non-constant
factor.

Semantics: the asserts form one conjunction. It is brought into disjunctive normal form; every
conjunct is an input box (single-variable bounds on the X_i) together with output constraints,
written as rows of ``C y <= d`` (``a <= b`` becomes ``a - b <= 0``; ``>=`` is negated). The output
constraints describe the *violation* (VNN-COMP meaning). Conjuncts with the same input box become
the disjuncts of one :class:`~bnbver.spec.UnsafeSet`; each distinct box is its own
:class:`~bnbver.spec.Property`, named ``<file stem>#k`` when the file has several boxes. A
conjunct without output constraints (every output is unsafe) gets the row ``0 y <= 0``; a
conjunct with a false constant comparison is dropped.

Speed: most lines of large files are ``(assert (<= X_i c))`` or declarations; a per-line regex
handles those without tokenising, and only the remaining lines go through the tokenizer and the
recursive-descent parser.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bnbver.errors import InputError, VnnlibSyntaxError
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet

MAX_CONJUNCTS = 100_000
"""Refuse files whose disjunctive normal form has more conjuncts than this."""

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_FAST_BOUND = re.compile(rf"\s*\(\s*assert\s+\(\s*(<=|>=)\s+X_(\d+)\s+({_NUM})\s*\)\s*\)\s*")
_FAST_DECL = re.compile(r"\s*\(\s*declare-const\s+([XY])_(\d+)\s+Real\s*\)\s*")
_TOKEN = re.compile(r"[()]|[^\s()]+")
_VAR = re.compile(r"([XY])_(\d+)")


class _Atom(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: list[_Atom | _List]
    line: int


_Sexp = _Atom | _List
_Var = tuple[str, int]


@dataclass
class _Constraint:
    """``sum coefs[v] * v + const <= 0``, from the comparison starting at ``line``."""

    coefs: dict[_Var, float]
    const: float
    line: int


_Conj = list[_Constraint]


@dataclass
class _Spec:
    """Everything read from a file: declarations, fast-path bounds and the other asserts."""

    declared: dict[str, set[int]]
    bounds: list[tuple[int, str, int, float]]
    asserts: list[list[_Conj]]


def parse_vnnlib(
    path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None
) -> list[Property]:
    """Parse a VNN-LIB file into one property per input box.

    Args:
        path: the ``.vnnlib`` file.
        n_inputs: the number of network inputs; default: the number of declared X_i.
        n_outputs: the number of network outputs; default: the number of declared Y_j.

    Returns:
        The properties, in the order their boxes first appear.

    Raises:
        InputError: the file is missing, a variable lacks a finite bound, a constraint mixes
            inputs and outputs, or the sizes do not fit.
        VnnlibSyntaxError: the file does not parse (the message gives the line).
    """
    p = Path(path)
    src = str(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(src, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(src, f"cannot read: {exc}") from None
    spec = _read_spec(text, src)
    n_in = _count(spec, "X", n_inputs, src)
    n_out = _count(spec, "Y", n_outputs, src)
    base = _base_box(spec, n_in, src)
    groups = _group_by_box(spec, base, n_in, n_out, src)
    _check_box_complete(groups, src)
    return _to_properties(groups, p.stem)


def _read_spec(text: str, src: str) -> _Spec:
    """Split the file into fast-path lines and the rest, and parse the rest."""
    spec = _Spec(declared={"X": set(), "Y": set()}, bounds=[], asserts=[])
    rest: list[tuple[int, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";", 1)[0]
        if not line or line.isspace():
            continue
        m = _FAST_BOUND.fullmatch(line)
        if m:
            spec.bounds.append((lineno, m[1], int(m[2]), float(m[3])))
            continue
        m = _FAST_DECL.fullmatch(line)
        if m:
            _declare(spec, m[1], int(m[2]), lineno, src)
            continue
        rest.append((lineno, line))
    for form in _parse_sexps(_tokenize(rest), src):
        _command(spec, form, src)
    return spec


def _tokenize(lines: list[tuple[int, str]]) -> list[_Atom]:
    """Return the tokens of the given (line number, text) pairs, each with its line."""
    return [_Atom(t, n) for n, line in lines for t in _TOKEN.findall(line)]


def _parse_sexps(tokens: list[_Atom], src: str) -> list[_Sexp]:
    """Build the top-level s-expressions from the token list."""
    stack: list[_List] = [_List([], 0)]
    for tok in tokens:
        if tok.text == "(":
            stack.append(_List([], tok.line))
        elif tok.text == ")":
            if len(stack) == 1:
                raise _syntax(src, tok.line, "unbalanced ')'")
            done = stack.pop()
            stack[-1].items.append(done)
        else:
            stack[-1].items.append(tok)
    if len(stack) > 1:
        raise _syntax(src, stack[-1].line, "'(' is never closed")
    return stack[0].items


def _syntax(src: str, line: int, what: str) -> VnnlibSyntaxError:
    """Return the syntax error for ``what`` at ``line``."""
    return VnnlibSyntaxError(src, f"line {line}: {what}")


def _head(node: _Sexp, src: str) -> tuple[str, list[_Sexp]]:
    """Return the operator name and the arguments of a list node."""
    if not isinstance(node, _List) or not node.items or not isinstance(node.items[0], _Atom):
        what = f"unexpected '{node.text}'" if isinstance(node, _Atom) else "expected (op ...)"
        raise _syntax(src, node.line, what)
    return node.items[0].text, node.items[1:]


def _command(spec: _Spec, form: _Sexp, src: str) -> None:
    """Apply one top-level command (declare-const or assert)."""
    op, args = _head(form, src)
    if op == "declare-const":
        if len(args) != 2 or not all(isinstance(a, _Atom) for a in args):
            raise _syntax(src, form.line, "expected (declare-const NAME Real)")
        name, sort = args[0], args[1]
        assert isinstance(name, _Atom) and isinstance(sort, _Atom)
        m = _VAR.fullmatch(name.text)
        if not m:
            raise _syntax(src, name.line, f"variable '{name.text}' is not X_i or Y_i")
        if sort.text != "Real":
            raise _syntax(src, sort.line, f"sort '{sort.text}' is not Real")
        _declare(spec, m[1], int(m[2]), name.line, src)
    elif op == "assert":
        if len(args) != 1:
            raise _syntax(src, form.line, "assert takes one formula")
        spec.asserts.append(_dnf(args[0], spec, src))
    else:
        raise _syntax(src, form.line, f"unknown command '{op}'")


def _declare(spec: _Spec, kind: str, index: int, line: int, src: str) -> None:
    """Record the declaration of ``<kind>_<index>``; a second declaration is an error."""
    if index in spec.declared[kind]:
        raise _syntax(src, line, f"{kind}_{index} is declared twice")
    spec.declared[kind].add(index)


def _dnf(node: _Sexp, spec: _Spec, src: str) -> list[_Conj]:
    """Return the formula as a disjunction (list) of conjunctions (lists of constraints)."""
    op, args = _head(node, src)
    if op == "or":
        return [conj for a in args for conj in _dnf(a, spec, src)]
    if op == "and":
        out: list[_Conj] = [[]]
        for a in args:
            out = [x + y for x in out for y in _dnf(a, spec, src)]
            if len(out) > MAX_CONJUNCTS:
                raise InputError(src, f"line {node.line}: more than {MAX_CONJUNCTS} cases")
        return out
    if op in ("<=", ">=", "="):
        return [_comparison(op, args, node.line, spec, src)]
    raise _syntax(src, node.line, f"unknown operator '{op}'")


def _comparison(op: str, args: list[_Sexp], line: int, spec: _Spec, src: str) -> _Conj:
    """Return the constraints ``a_k - a_{k+1} <= 0`` (or reversed) of a comparison chain."""
    if len(args) < 2:
        raise _syntax(src, line, f"'{op}' needs at least two arguments")
    terms = [_linear(a, spec, src) for a in args]
    out: _Conj = []
    for (ca, ka), (cb, kb) in itertools.pairwise(terms):
        le = _Constraint(_combine(ca, cb, -1.0), ka - kb, line)
        ge = _Constraint(_combine(cb, ca, -1.0), kb - ka, line)
        out.extend({"<=": [le], ">=": [ge], "=": [le, ge]}[op])
    return out


def _combine(a: dict[_Var, float], b: dict[_Var, float], sb: float) -> dict[_Var, float]:
    """Return ``a + sb * b`` on coefficient dicts."""
    out = dict(a)
    for v, c in b.items():
        out[v] = out.get(v, 0.0) + sb * c
    return out


def _linear(node: _Sexp, spec: _Spec, src: str) -> tuple[dict[_Var, float], float]:
    """Return a linear term as (coefficients, constant)."""
    if isinstance(node, _Atom):
        return _atom_term(node, spec, src)
    op, args = _head(node, src)
    terms = [_linear(a, spec, src) for a in args]
    if op == "+" and terms:
        coefs: dict[_Var, float] = {}
        for c, _ in terms:
            coefs = _combine(coefs, c, 1.0)
        return coefs, sum(k for _, k in terms)
    if op == "-" and len(terms) == 1:
        return {v: -c for v, c in terms[0][0].items()}, -terms[0][1]
    if op == "-" and terms:
        coefs, const = terms[0]
        for c, k in terms[1:]:
            coefs, const = _combine(coefs, c, -1.0), const - k
        return coefs, const
    if op == "*" and terms:
        return _product(terms, node.line, src)
    raise _syntax(src, node.line, f"unknown or malformed term '({op} ...)'")


def _product(
    terms: list[tuple[dict[_Var, float], float]], line: int, src: str
) -> tuple[dict[_Var, float], float]:
    """Return the product of terms, at most one of which may contain variables."""
    variable = [t for t in terms if t[0]]
    if len(variable) > 1:
        raise _syntax(src, line, "product of variables is not linear")
    scale = float(np.prod([k for c, k in terms if not c]))
    if not variable:
        return {}, scale
    coefs, const = variable[0]
    return {v: scale * c for v, c in coefs.items()}, scale * const


def _atom_term(tok: _Atom, spec: _Spec, src: str) -> tuple[dict[_Var, float], float]:
    """Return a number or a declared variable as a linear term."""
    m = _VAR.fullmatch(tok.text)
    if m:
        var = (m[1], int(m[2]))
        if var[1] not in spec.declared[var[0]]:
            raise _syntax(src, tok.line, f"undeclared variable '{tok.text}'")
        return {var: 1.0}, 0.0
    try:
        return {}, float(tok.text)
    except ValueError:
        raise _syntax(src, tok.line, f"'{tok.text}' is not a number or a variable") from None


def _count(spec: _Spec, kind: str, given: int | None, src: str) -> int:
    """Return the number of X (or Y) variables and check the declarations fit it."""
    declared = spec.declared[kind]
    n = given if given is not None else (max(declared) + 1 if declared else 0)
    if declared and max(declared) >= n:
        side = "inputs" if kind == "X" else "outputs"
        raise InputError(src, f"declares {kind}_{max(declared)} but the network has {n} {side}")
    return n


def _base_box(spec: _Spec, n_in: int, src: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (lower, upper) from the fast-path bound lines."""
    lower = np.full(n_in, -np.inf)
    upper = np.full(n_in, np.inf)
    declared = spec.declared["X"]
    for line, op, i, value in spec.bounds:
        if i not in declared:
            raise _syntax(src, line, f"undeclared variable 'X_{i}'")
        if op == "<=":
            upper[i] = min(upper[i], value)
        else:
            lower[i] = max(lower[i], value)
    return lower, upper


_Groups = dict[bytes, tuple[np.ndarray, np.ndarray, list[HalfSpaces]]]


def _group_by_box(
    spec: _Spec, base: tuple[np.ndarray, np.ndarray], n_in: int, n_out: int, src: str
) -> _Groups:
    """Expand the asserts into conjuncts and group their output polytopes by input box."""
    cases: list[_Conj] = [[]]
    for dnf in spec.asserts:
        cases = [x + y for x in cases for y in dnf]
        if len(cases) > MAX_CONJUNCTS:
            raise InputError(src, f"more than {MAX_CONJUNCTS} cases")
    groups: _Groups = {}
    for conj in cases:
        split = _split_conjunct(conj, base, n_in, n_out, src)
        if split is None:
            continue
        lower, upper, polytope = split
        key = lower.tobytes() + upper.tobytes()
        groups.setdefault(key, (lower, upper, []))[2].append(polytope)
    return groups


def _split_conjunct(
    conj: _Conj, base: tuple[np.ndarray, np.ndarray], n_in: int, n_out: int, src: str
) -> tuple[np.ndarray, np.ndarray, HalfSpaces] | None:
    """Return (lower, upper, C y <= d) of one conjunct, or None when it is trivially false."""
    lower, upper = base[0].copy(), base[1].copy()
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    for con in conj:
        kinds = {v[0] for v, c in con.coefs.items() if c != 0.0}
        if not kinds:
            if con.const > 0:
                return None
            continue
        if kinds == {"X", "Y"}:
            raise InputError(src, f"line {con.line}: mixed input/output constraint not supported")
        if kinds == {"X"}:
            _apply_input_bound(con, lower, upper, src)
            continue
        row = np.zeros(n_out)
        for (_, j), c in con.coefs.items():
            row[j] += c
        rows.append(row)
        rhs.append(0.0 - con.const)
    if not rows:
        rows, rhs = [np.zeros(n_out)], [0.0]
    return lower, upper, HalfSpaces(np.array(rows), np.array(rhs))


def _apply_input_bound(con: _Constraint, lower: np.ndarray, upper: np.ndarray, src: str) -> None:
    """Intersect the box with ``a * X_i + k <= 0`` (in place on the caller's copies)."""
    nonzero = [(v, c) for v, c in con.coefs.items() if c != 0.0]
    if len(nonzero) != 1:
        raise InputError(
            src, f"line {con.line}: input constraint over several variables not supported"
        )
    (_, i), a = nonzero[0]
    bound = -con.const / a
    if a > 0:
        upper[i] = min(upper[i], bound)
    else:
        lower[i] = max(lower[i], bound)


def _check_box_complete(groups: _Groups, src: str) -> None:
    """Raise when some X_i lacks a finite lower or upper bound."""
    for lower, upper, _ in groups.values():
        for name, arr in (("lower", lower), ("upper", upper)):
            bad = np.flatnonzero(~np.isfinite(arr))
            if bad.size:
                raise InputError(src, f"X_{int(bad[0])} has no finite {name} bound")


def _to_properties(groups: _Groups, stem: str) -> list[Property]:
    """Return one Property per box, named after the file stem (``#k`` when several)."""
    out = []
    for k, (lower, upper, polys) in enumerate(groups.values()):
        name = stem if len(groups) == 1 else f"{stem}#{k}"
        out.append(Property(InputBox(lower, upper), UnsafeSet(tuple(polys)), name))
    return out
