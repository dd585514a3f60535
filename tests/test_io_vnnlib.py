"""Tests of bnbver.io.vnnlib (parse_vnnlib)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from bnbver.errors import InputError, VnnlibSyntaxError
from bnbver.io.vnnlib import parse_vnnlib

ACAS_P1_LOWER = [0.6, -0.5, -0.5, 0.45, -0.5]
ACAS_P1_UPPER = [0.679857769, 0.5, 0.5, 0.5, -0.45]


def write(tmp_path: Path, text: str, name: str = "spec.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def declare(n_x: int, n_y: int) -> str:
    xs = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_x))
    return xs + "".join(f"(declare-const Y_{i} Real)\n" for i in range(n_y))


def box_text(lower: list[float], upper: list[float]) -> str:
    return "".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))\n"
                   for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)))


def rows(*pairs: tuple[int, int], n: int = 5) -> np.ndarray:
    """Rows e_a - e_b: the constraint ``Y_a - Y_b <= 0`` i.e. ``(<= Y_a Y_b)``."""
    out = np.zeros((len(pairs), n))
    for r, (a, b) in enumerate(pairs):
        out[r, a], out[r, b] = 1.0, -1.0
    return out


# ---------------------------------------------------------------------------------------------
# Hand-checked real files


def test_acasxu_prop_1(examples_dir: Path) -> None:
    (prop,) = parse_vnnlib(examples_dir / "acasxu/prop_1.vnnlib")
    assert prop.name == "prop_1"
    np.testing.assert_array_equal(prop.box.lower, ACAS_P1_LOWER)
    np.testing.assert_array_equal(prop.box.upper, ACAS_P1_UPPER)
    (h,) = prop.unsafe.disjuncts  # (>= Y_0 3.991...) is -Y_0 <= -3.991...
    np.testing.assert_array_equal(h.C, [[-1.0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(h.d, [-3.991125645861615])


def test_acasxu_prop_2(examples_dir: Path) -> None:
    (prop,) = parse_vnnlib(examples_dir / "acasxu/prop_2.vnnlib")
    np.testing.assert_array_equal(prop.box.lower, ACAS_P1_LOWER)
    np.testing.assert_array_equal(prop.box.upper, ACAS_P1_UPPER)
    (h,) = prop.unsafe.disjuncts  # one conjunction: Y_k <= Y_0 for k = 1..4
    np.testing.assert_array_equal(h.C, rows((1, 0), (2, 0), (3, 0), (4, 0)))
    np.testing.assert_array_equal(h.d, np.zeros(4))


def test_acasxu_prop_5(benchmarks_dir: Path) -> None:
    (prop,) = parse_vnnlib(benchmarks_dir / "acasxu/vnnlib/prop_5.vnnlib")
    np.testing.assert_array_equal(
        prop.box.lower, [-0.324274257, 0.031830989, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(
        prop.box.upper, [-0.321785085, 0.063661977, -0.499204121, -0.227272727, -0.166666667])
    assert len(prop.unsafe.disjuncts) == 4  # Y_k <= Y_4, one disjunct each
    for k, h in enumerate(prop.unsafe.disjuncts):
        np.testing.assert_array_equal(h.C, rows((k, 4)))
        np.testing.assert_array_equal(h.d, [0.0])


def test_acasxu_prop_7(benchmarks_dir: Path) -> None:
    (prop,) = parse_vnnlib(benchmarks_dir / "acasxu/vnnlib/prop_7.vnnlib")
    np.testing.assert_array_equal(
        prop.box.lower, [-0.328422877, -0.499999896, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(prop.box.upper, [0.679857769, 0.499999896, 0.499999896, 0.5, 0.5])
    left, right = prop.unsafe.disjuncts
    np.testing.assert_array_equal(left.C, rows((3, 0), (3, 1), (3, 2)))
    np.testing.assert_array_equal(right.C, rows((4, 0), (4, 1), (4, 2)))
    np.testing.assert_array_equal(left.d, np.zeros(3))


def test_acasxu_prop_6_has_two_boxes(benchmarks_dir: Path) -> None:
    props = parse_vnnlib(benchmarks_dir / "acasxu/vnnlib/prop_6.vnnlib")
    assert [p.name for p in props] == ["prop_6#0", "prop_6#1"]
    np.testing.assert_array_equal(props[0].box.lower[:2], [-0.129289109, 0.11140846])
    np.testing.assert_array_equal(props[1].box.upper[:2], [0.700434925, -0.11140846])
    for p in props:
        assert [h.C.tolist() for h in p.unsafe.disjuncts] == [
            rows((k, 0)).tolist() for k in range(1, 5)]


def _simple_bounds(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the (assert (<= X_i c)) lines of a file independently of the parser."""
    text = path.read_text()
    lower = np.full(784, np.nan)
    upper = np.full(784, np.nan)
    for op, i, v in re.findall(r"\(assert \((<=|>=) X_(\d+) (\S+)\)\)", text):
        (upper if op == "<=" else lower)[int(i)] = float(v)
    return lower, upper


def test_mnist_prop(examples_dir: Path) -> None:
    path = examples_dir / "mnist_fc/prop_0_0.03.vnnlib"
    (prop,) = parse_vnnlib(path)
    lower, upper = _simple_bounds(path)
    np.testing.assert_array_equal(prop.box.lower, lower)
    np.testing.assert_array_equal(prop.box.upper, upper)
    assert prop.box.upper[783] == 0.029999999329447746 and prop.box.lower[783] == 0.0
    others = [j for j in range(10) if j != 4]  # label 4: unsafe if Y_j >= Y_4, Y_4 - Y_j <= 0
    assert len(prop.unsafe.disjuncts) == 9
    for j, h in zip(others, prop.unsafe.disjuncts, strict=True):
        np.testing.assert_array_equal(h.C, rows((4, j), n=10))
        np.testing.assert_array_equal(h.d, [0.0])


# ---------------------------------------------------------------------------------------------
# Hand-written files


def test_linear_terms(tmp_path: Path) -> None:
    text = declare(2, 3) + box_text([0, -1], [1, 1]) + (
        "(assert (<= (+ Y_0 (* 2 Y_1) 1.5) (- Y_2 0.5)))\n"
        "(assert (>= (- Y_1) (* Y_2 -3e-1)))\n"
        "(assert (<= 0.25 X_0))\n"
    )
    (prop,) = parse_vnnlib(write(tmp_path, text))
    np.testing.assert_array_equal(prop.box.lower, [0.25, -1])
    (h,) = prop.unsafe.disjuncts
    # Y0 + 2 Y1 + 1.5 - Y2 + 0.5 <= 0  and  -0.3 Y2 + Y1 <= 0
    np.testing.assert_allclose(h.C, np.array([[1, 2, -1], [0, 1, -0.3]]))
    np.testing.assert_allclose(h.d, [-2.0, 0.0])


def test_disjunction_of_boxes_gives_several_properties(tmp_path: Path) -> None:
    text = declare(2, 2) + (
        "(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n"
        "            (and (>= X_0 2) (<= X_0 3) (>= X_1 0) (<= X_1 1))\n"
        "            (and (>= X_0 4) (<= X_0 5) (>= X_1 0) (<= X_1 1) (<= Y_1 Y_0))))\n"
        "(assert (or (<= Y_0 Y_1) (>= Y_0 7)))\n"
    )
    props = parse_vnnlib(write(tmp_path, text, "boxes.vnnlib"))
    assert [p.name for p in props] == ["boxes#0", "boxes#1", "boxes#2"]
    assert [p.box.lower[0] for p in props] == [0, 2, 4]
    assert len(props[0].unsafe.disjuncts) == 2
    np.testing.assert_array_equal(props[2].unsafe.disjuncts[0].C, [[-1, 1], [1, -1]])
    np.testing.assert_array_equal(props[2].unsafe.disjuncts[1].C, [[-1, 1], [-1, 0]])
    np.testing.assert_array_equal(props[2].unsafe.disjuncts[1].d, [0, -7])


@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("(assert (<= Y_0 1.0)\n", 6, "never closed"),
        ("(assert (<= Y_0 1.0)))\n", 6, "unbalanced"),
        ("\n(assert (< Y_0 1.0))\n", 7, "unknown operator '<'"),
        ("; comment\n(assert (or\n  (<= Y_0 Y_7)))\n", 8, "undeclared variable 'Y_7'"),
        ("(assert (<= Y_0 1.0.0))\n", 6, "'1.0.0' is not a number"),
        ("(assert (<= (* Y_0 Y_0) 1))\n", 6, "not linear"),
        ("(check-sat)\n", 6, "unknown command"),
        ("(declare-const Z Real)\n", 6, "not X_i or Y_i"),
    ],
)
def test_syntax_error_reports_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    text = "; header\n" + declare(1, 1) + box_text([0], [1]) + body  # body starts on line 6
    path = write(tmp_path, text)
    with pytest.raises(VnnlibSyntaxError, match=f"line {line}: .*{re.escape(what)}") as info:
        parse_vnnlib(path)
    assert str(path) in str(info.value)


def test_mixed_constraint_is_refused(tmp_path: Path) -> None:
    text = declare(1, 1) + box_text([0], [1]) + "(assert (<= X_0 Y_0))\n"
    with pytest.raises(InputError, match="line 5: mixed input/output constraint not supported"):
        parse_vnnlib(write(tmp_path, text))


def test_missing_bound_names_variable(tmp_path: Path) -> None:
    text = declare(2, 1) + box_text([0], [1]) + "(assert (>= X_1 0))\n(assert (<= Y_0 0))\n"
    with pytest.raises(InputError, match="X_1 has no finite upper bound"):
        parse_vnnlib(write(tmp_path, text))


def test_sizes_given_by_caller(tmp_path: Path) -> None:
    path = write(tmp_path, declare(2, 2) + box_text([0, 0], [1, 1]) + "(assert (<= Y_1 0))\n")
    (prop,) = parse_vnnlib(path, n_inputs=2, n_outputs=4)
    assert prop.unsafe.disjuncts[0].C.shape == (1, 4)
    with pytest.raises(InputError, match="declares X_1 but the network has 1 inputs"):
        parse_vnnlib(path, n_inputs=1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        parse_vnnlib(tmp_path / "absent.vnnlib")


# ---------------------------------------------------------------------------------------------
# Whole suites (timings are in docs/vnnlib.md, not asserted here)


def test_all_acasxu_instances_parse(benchmarks_dir: Path) -> None:
    bench = benchmarks_dir / "acasxu"
    with open(bench / "instances.csv") as fh:
        specs = [row[1] for row in csv.reader(fh)]
    assert len(specs) == 186
    for spec in specs:
        props = parse_vnnlib(bench / spec, n_inputs=5, n_outputs=5)
        assert props and all(np.all(p.box.lower <= p.box.upper) for p in props)


@pytest.mark.parametrize(("suite", "n_in", "n_out"), [("mnist_fc", 784, 10),
                                                      ("oval21", 3072, 10)])
def test_all_image_suites_parse(benchmarks_dir: Path, suite: str, n_in: int, n_out: int) -> None:
    files = sorted((benchmarks_dir / suite / "vnnlib").glob("*.vnnlib"))
    assert len(files) == 30
    for path in files:
        (prop,) = parse_vnnlib(path)
        assert prop.box.size == n_in and len(prop.unsafe.disjuncts) == n_out - 1
        assert all(h.C.shape == (1, n_out) for h in prop.unsafe.disjuncts)
        assert np.all(prop.box.lower <= prop.box.upper)
