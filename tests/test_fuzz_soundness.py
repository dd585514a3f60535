"""Tests of scripts/fuzz_soundness.py (issue 15): the exact oracle, the generator, the writers.

The oracle is checked against tiny networks solved by hand (the math is in each docstring),
including a max-pool net and an extreme-scale net on which float64 arithmetic is wrong. The
generator's planted counterexamples are checked by the exact forward pass, the ONNX files
by onnxruntime, the VNN-LIB files by bnbver's parser, and a small fixed-seed fuzz run goes
through bnbver end to end.
"""

from __future__ import annotations

import ast
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import fuzz_soundness  # noqa: E402
from soundness.exact import forward_spec, fr, in_box, violated_disjunct  # noqa: E402
from soundness.generate import FAMILIES, compile_float, generate, run_float  # noqa: E402
from soundness.netspec import (  # noqa: E402
    Conv,
    Dense,
    Flatten,
    Instance,
    MaxPool,
    NetSpec,
    OutRow,
    Relu,
    Residual,
    as_dtype,
)
from soundness.oracle import OracleResult, decide  # noqa: E402
from soundness.run import classify  # noqa: E402
from soundness.simplex import feasible_point  # noqa: E402
from soundness.write import ort_forward, to_vnnlib, write_instance  # noqa: E402

from bnbver.io.loaders import load_network, load_properties  # noqa: E402

ONE = np.ones(1)


def _inst(net: NetSpec, boxes: list[tuple[list[float], list[float]]],
          *disjuncts: tuple[OutRow, ...]) -> Instance:
    bx = tuple((np.array(lo, dtype=float), np.array(up, dtype=float)) for lo, up in boxes)
    return Instance("hand", net, bx, tuple(disjuncts))


def _abs_net() -> NetSpec:
    """``y = relu(x) + relu(-x) = |x|``."""
    return NetSpec((Dense(np.array([[1.0], [-1.0]]), np.zeros(2)), Relu(),
                    Dense(np.array([[1.0, 1.0]]), np.zeros(1))), (1,), "float64")


@pytest.mark.parametrize(("row", "answer"), [
    (OutRow(0, "<=", None, -0.01), "unsat"),  # |x| >= 0 everywhere
    (OutRow(0, "<=", None, 0.0), "sat"),      # only at x = 0
    (OutRow(0, ">=", None, 1.0), "sat"),      # only at x = -1 and x = 1
    (OutRow(0, ">=", None, 1.0000001), "unsat"),
])
def test_oracle_abs_net(row: OutRow, answer: str) -> None:
    """``|x|`` on [-1, 1] takes exactly the values [0, 1]."""
    res = decide(_inst(_abs_net(), [([-1.0], [1.0])], (row,)))
    assert res.answer == answer
    if answer == "sat":
        assert res.witness is not None and abs(res.witness[0]) in (0, 1)


def test_oracle_two_layers_and_disjuncts() -> None:
    """``y = (relu(x0 - x1), relu(x1 - 0.5))`` on [0, 1]^2 (dyadic numbers: exact floats).

    ``y0 >= 0.875 and y1 >= 0.125`` needs x1 >= 0.625 and x0 >= x1 + 0.875 > 1: impossible.
    The second disjunct ``y0 >= 0.375 and y1 >= 0.125`` holds at x = (1, 0.625) only.
    """
    net = NetSpec((Dense(np.array([[1.0, -1.0], [0.0, 1.0]]), np.array([0.0, -0.5])), Relu()),
                  (2,), "float64")
    first = (OutRow(0, ">=", None, 0.875), OutRow(1, ">=", None, 0.125))
    second = (OutRow(0, ">=", None, 0.375), OutRow(1, ">=", None, 0.125))
    assert decide(_inst(net, [([0, 0], [1, 1])], first)).answer == "unsat"
    res = decide(_inst(net, [([0, 0], [1, 1])], first, second))
    assert res.answer == "sat" and res.disjunct == 1 and res.witness == (1, Fraction(5, 8))
    # A first box where the second disjunct is impossible too (x0 <= 0.5): sat in box 1.
    assert decide(_inst(net, [([0, 0], [0.5, 1]), ([0, 0], [1, 1])], first, second)).box == 1


def test_oracle_uses_the_float_values_not_the_decimals() -> None:
    """``x1 - 0.5 >= 0.1`` and ``1 - x1 >= 0.4`` meet at x1 = 0.6 in decimals only.

    As float64 numbers 0.5 + 0.1 > 0.6000000000000000055 > 1 - 0.4: the region is empty, so
    the exact answer is unsat although decimal arithmetic says sat at x = (1, 0.6).
    """
    net = NetSpec((Dense(np.array([[1.0, -1.0], [0.0, 1.0]]), np.array([0.0, -0.5])), Relu()),
                  (2,), "float64")
    rows = (OutRow(0, ">=", None, 0.4), OutRow(1, ">=", None, 0.1))
    assert decide(_inst(net, [([0, 0], [1, 1])], rows)).answer == "unsat"


def _range_net() -> NetSpec:
    """Conv 1x1 with channels (x, -x), MaxPool 2x2 per channel, Dense sum: max(x) - min(x)."""
    conv = Conv(np.array([1.0, -1.0]).reshape(2, 1, 1, 1), np.zeros(2), (1, 1), (0, 0, 0, 0),
                (1, 2, 2))
    pool = MaxPool((2, 2), (2, 2), (0, 0, 0, 0), (2, 2, 2))
    return NetSpec((conv, pool, Flatten(), Dense(np.array([[1.0, 1.0]]), np.zeros(1))),
                   (1, 2, 2), "float32")


@pytest.mark.parametrize(("row", "answer"), [
    (OutRow(0, ">=", None, 0.625), "sat"),        # x0 = 0.125, x1 = 0.75
    (OutRow(0, ">=", None, 0.6250001), "unsat"),
    (OutRow(0, "<=", None, 0.375), "sat"),        # x0 = 0.25, x1 = 0.625
    (OutRow(0, "<=", None, 0.3749999), "unsat"),
])
def test_oracle_max_pool(row: OutRow, answer: str) -> None:
    """The range ``max(x) - min(x)``, x0 in [1/8, 1/4], x1 in [5/8, 3/4], x2 = x3 = 1/2.

    max(x) = x1 and min(x) = x0 on the whole box, so the range is x1 - x0 in [3/8, 5/8].
    """
    box = ([0.125, 0.625, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5])
    assert decide(_inst(_range_net(), [box], (row,))).answer == answer


def test_oracle_max_pool_argmax_changes() -> None:
    """On [0, 1]^4 the range is in [0, 1]: 1 at a 0/1 vertex, 0 where all are equal."""
    box = ([0.0] * 4, [1.0] * 4)
    assert decide(_inst(_range_net(), [box], (OutRow(0, ">=", None, 1.0),))).answer == "sat"
    assert decide(_inst(_range_net(), [box], (OutRow(0, ">=", None, 1.01),))).answer == "unsat"
    assert decide(_inst(_range_net(), [box], (OutRow(0, "<=", None, 0.0),))).answer == "sat"
    assert decide(_inst(_range_net(), [box], (OutRow(0, "<=", None, -1e-12),))).answer == "unsat"


def test_oracle_extreme_scale_where_float64_is_wrong() -> None:
    """``y = relu(x + 1e17) - 1e17 = x`` on [0, 1] in exact arithmetic.

    1e17 is an integer in float64, so exactly y = x and ``y >= 0.5`` is sat (x >= 0.5) while
    ``y >= 1.0000001`` is unsat. In float64, ``1.0 + 1e17 == 1e17``: every float64
    evaluation (and a float64 LP on it) gives y = 0 on the whole box and would say unsat.
    """
    net = NetSpec((Dense(ONE[None], np.array([1e17])), Relu(),
                   Dense(ONE[None], np.array([-1e17]))), (1,), "float64")
    res = decide(_inst(net, [([0.0], [1.0])], (OutRow(0, ">=", None, 0.5),)))
    assert res.answer == "sat" and res.witness is not None and res.witness[0] >= 0.5
    y64 = run_float(compile_float(list(net.ops), (1,)), np.array([[1.0]]))
    assert y64[0, 0] == 0.0  # float64 misses the counterexample entirely
    assert decide(_inst(net, [([0.0], [1.0])], (OutRow(0, ">=", None, 1.0000001),))
                  ).answer == "unsat"


def test_oracle_issue_15_case_a() -> None:
    """Issue 15 (a): sat at x = c; a LP that drops the 9e-10 entry would call it unsat."""
    for seed in range(40):
        inst = generate(seed, 0, "hilo")
        if "unused" in inst.note and "S=1e+09 r=0.02 g=9.00e-10" in inst.note:
            break
    else:
        pytest.fail("no copy of the issue's own instance in 40 seeds")
    res = decide(inst)
    assert res.answer == "sat" and inst.planted is not None


def test_oracle_gives_up_beyond_its_limits() -> None:
    from soundness.oracle import OracleLimits

    inst = _inst(_abs_net(), [([-1.0], [1.0])], (OutRow(0, "<=", None, -1.0),))
    assert decide(inst, OracleLimits(max_units=1)).answer == "unknown"


def test_exact_simplex_matches_scipy() -> None:
    """Random small integer LPs: the exact simplex agrees with HiGHS and its points check."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(0)
    for _ in range(150):
        m, n = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        A = rng.integers(-3, 4, size=(m, n)).astype(float)
        b = rng.integers(-3, 4, size=m).astype(float)
        lo = rng.integers(-2, 1, size=n).astype(float)
        up = lo + rng.integers(0, 3, size=n)
        ref = linprog(np.zeros(n), A_ub=A, b_ub=b, bounds=list(zip(lo, up, strict=True)))
        p = feasible_point([[Fraction(v) for v in r] for r in A], [Fraction(v) for v in b],
                           [Fraction(v) for v in lo], [Fraction(v) for v in up])
        assert (ref.status == 0) == (p is not None)
        if p is not None:
            assert all(sum(Fraction(a) * x for a, x in zip(r, p, strict=True)) <= bi
                       for r, bi in zip(A, b, strict=True))


def test_planted_counterexamples_are_real() -> None:
    """Every planted x* lies in its box and is unsafe in an exact forward pass."""
    planted = 0
    for fam in FAMILIES:
        for case in range(6):
            inst = generate(7, case, fam)
            if inst.planted is None:
                continue
            planted += 1
            x, b = inst.planted
            assert in_box([fr(v) for v in x], *inst.boxes[b])
            assert violated_disjunct(inst.disjuncts, forward_spec(inst.net, x)) is not None
    assert planted >= 3 * len(FAMILIES)


def test_generator_covers_many_cases() -> None:
    """300 cases of every family generate, within the oracle's size limit (seed 15, case 699
    once drew a max-pool window lying entirely in the padding)."""
    for fam in FAMILIES:
        for case in range(300):
            assert generate(15, case, fam).net.num_units <= 40
    assert "pool" in generate(15, 699).note


def test_generation_is_deterministic() -> None:
    a, b = generate(3, 11), generate(3, 11)
    assert a.family == b.family and a.note == b.note
    assert to_vnnlib(a) == to_vnnlib(b)


def _abs_forward_bound(net: NetSpec, x: np.ndarray) -> float:
    """Return the output of the net with |W|, |b| on |x|: a scale for rounding errors."""
    prog = [(k, (np.abs(d[0]), np.abs(d[1])) if k == "affine" else d)
            for k, d in compile_float(list(net.ops), net.input_shape)]
    return float(np.max(run_float(prog, np.abs(x)[None])))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_round_trips_through_onnxruntime(family: str, tmp_path: Path) -> None:
    """onnxruntime on the written file equals the exact forward pass up to rounding."""
    for case in range(3):
        inst = generate(1, case, family)
        onnx_path, _ = write_instance(inst, tmp_path, f"{family}{case}")
        rng = np.random.default_rng(case)
        for lo, up in inst.boxes:
            x = as_dtype(lo + rng.uniform(size=lo.size) * (up - lo), inst.net.dtype)
            exact = np.array([float(v) for v in forward_spec(inst.net, x)])
            eps = 1e-5 if inst.net.dtype == "float32" else 1e-13
            tol = eps * _abs_forward_bound(inst.net, x) + 1e-30
            assert np.max(np.abs(ort_forward(onnx_path, x) - exact)) <= tol


def test_files_read_back_in_bnbver(tmp_path: Path) -> None:
    """bnbver's loaders read the exact boxes and thresholds, and the same network."""
    for case in range(8):
        inst = generate(2, case)
        onnx_path, vnnlib_path = write_instance(inst, tmp_path, f"c{case}")
        net = load_network(onnx_path)
        props = load_properties(vnnlib_path, net)
        assert len(props) == len(inst.boxes)
        for prop, (lo, up) in zip(props, inst.boxes, strict=True):
            assert np.array_equal(prop.box.lower, lo) and np.array_equal(prop.box.upper, up)
            consts = {float(v) for h in prop.unsafe.disjuncts for v in h.d}
            rhs = [r.rhs for d in inst.disjuncts for r in d if r.rhs_var is None]
            assert all(c in consts or -c in consts for c in rhs)  # ">=" rows are negated
        if inst.net.dtype == "float64":
            x = inst.boxes[0][0]
            exact = np.array([float(v) for v in forward_spec(inst.net, x)])
            tol = 1e-12 * _abs_forward_bound(inst.net, x) + 1e-30
            assert np.max(np.abs(net.forward(x) - exact)) <= tol


def test_classify_outcomes(tmp_path: Path) -> None:
    """A planted sat instance: unsat is a wrong unsat; a bad witness is refuted."""
    inst = _inst(_abs_net(), [([-1.0], [1.0])], (OutRow(0, ">=", None, 1.0),))
    onnx_path, _ = write_instance(inst, tmp_path)
    sat = decide(inst)

    def run(status: str, x: list[float] | None = None) -> dict[str, object]:
        return {"status": status, "x": x, "message": "boom", "wall": 0.0}

    assert classify(inst, sat, run("unsat"), onnx_path)[0] == "wrong-unsat"
    assert classify(inst, sat, run("sat", [0.5]), onnx_path)[0] == "refuted-witness"
    assert classify(inst, sat, run("sat", [2.0]), onnx_path)[0] == "refuted-witness"
    assert classify(inst, sat, run("sat", [-1.0]), onnx_path)[0] == "ok"
    assert classify(inst, sat, run("error"), onnx_path)[0] == "crash"
    assert classify(inst, sat, run("timeout"), onnx_path)[0] == "timeout"
    unsat = OracleResult("unsat")
    assert classify(inst, unsat, run("unsat"), onnx_path)[0] == "ok"
    assert classify(inst, unsat, run("sat", [1.0]), onnx_path)[0] == "fuzzer-bug"
    unknown = OracleResult("unknown", reason="limits")
    assert classify(inst, unknown, run("unsat"), onnx_path)[0] == "skipped"


def test_refuted_by_onnxruntime_only(tmp_path: Path) -> None:
    """Issue 15 (c): ``x + 10000 >= 10000.0004`` at x = 0.00045 holds exactly, not in float32."""
    net = NetSpec((Dense(ONE[None], np.array([1e4])),), (1,), "float32")
    inst = _inst(net, [([0.0], [0.00045])], (OutRow(0, ">=", None, 10000.0004),))
    onnx_path, _ = write_instance(inst, tmp_path)
    res = decide(inst)
    assert res.answer == "sat"
    run = {"status": "sat", "x": [0.00045], "message": "", "wall": 0.0}
    assert classify(inst, res, run, onnx_path)[0] == "refuted-ort"


def test_oracle_does_not_import_bnbver() -> None:
    """The oracle and everything it reads share no code with the verifier."""
    folder = REPO / "scripts" / "soundness"
    for name in ("netspec", "exact", "simplex", "oracle", "generate", "write"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(m.split(".")[0] == "bnbver" for m in mods), (name, mods)


def test_fixed_seed_fuzz_run_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """Four dense cases, two configurations each, through bnbver; then --resume skips them."""
    out = tmp_path / "runs.jsonl"
    argv = ["--n", "4", "--seed", "5", "--family", "dense", "--per-case", "2", "--timeout", "5",
            "--no-isolate", "--quiet", "--out", str(out)]
    code = fuzz_soundness.main(argv)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 8 and {r["case"] for r in recs} == {0, 1, 2, 3}
    assert all(r["oracle"] in ("sat", "unsat") for r in recs)
    assert all(r["outcome"] in fuzz_soundness.OUTCOMES for r in recs)
    assert all(f"--seed 5 --case {r['case']} --family dense --config {r['config']}" in r["repro"]
               for r in recs)
    assert code == int(any(r["outcome"] in fuzz_soundness.FAILURES for r in recs))
    md = tmp_path / "soundness.md"
    assert fuzz_soundness.main([*argv, "--resume", "--md", str(md)]) == code
    assert len(out.read_text().splitlines()) == 8
    assert "| all | 8 |" in capsys.readouterr().out
    assert "| all | 8 |" in md.read_text() and "--family dense" in md.read_text()


@pytest.mark.parametrize(("thr", "answer"), [(4.0, "sat"), (4.5, "unsat")])
def test_issue_19_oracle_hand_solved_residual(thr: float, answer: str) -> None:
    """``y = relu(x - 1) + 0.5 x + 0.5`` on x in [-1, 3]: a residual block whose body is
    ``relu(h - 1)`` (Dense, Relu, Dense) and whose projection is ``0.5 h + 0.5``; its maximum
    is 2 + 1.5 + 0.5 = 4 at x = 3, so ``y >= 4`` is sat (x = 3) and ``y >= 4.5`` unsat."""
    one = np.ones((1, 1))
    block = Residual((Dense(one, np.array([-1.0])), Relu(), Dense(one, np.zeros(1))),
                     Dense(0.5 * one, np.array([0.5])))
    net = NetSpec((block,), (1,), "float64")
    inst = Instance("hand", net, ((np.array([-1.0]), np.array([3.0])),),
                    ((OutRow(0, ">=", None, thr),),))
    res = decide(inst)
    assert res.answer == answer
    if answer == "sat":
        assert res.witness == (Fraction(3),)
    assert forward_spec(net, np.array([3.0])) == [Fraction(4)]


def test_issue_19_residual_fuzz_run_is_sound(tmp_path: Path) -> None:
    """Residual (DAG) instances through bnbver's ONNX reader and search: no failure."""
    out = tmp_path / "runs.jsonl"
    code = fuzz_soundness.main(["--n", "6", "--seed", "19", "--family", "residual",
                                "--per-case", "2", "--timeout", "10", "--no-isolate",
                                "--quiet", "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and len(recs) == 12
    assert sum(r["oracle"] in ("sat", "unsat") for r in recs) >= 10


def test_smoke_run_is_sound() -> None:
    """The CI smoke run (bnbver in a worker process): a few dense cases, no failure."""
    assert fuzz_soundness.main(["--smoke", "--quiet"]) == 0


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 15: bnbver still gives wrong unsats (hilo, extreme) and "
                   "witnesses onnxruntime refutes; remove once the fixes land", strict=False)
def test_few_hundred_cases_are_sound(tmp_path: Path) -> None:
    """300 cases over every family, four configurations each: no failure of any class."""
    assert fuzz_soundness.main(["--n", "300", "--seed", "15", "--per-case", "4",
                                "--timeout", "10", "--quiet",
                                "--out", str(tmp_path / "runs.jsonl")]) == 0
