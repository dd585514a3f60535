"""Issue 15: no closing decision taken on faith. Regression tests for the audit's findings.

Each instance is built here from its description; the oracle is exact arithmetic at a known
point (and onnxruntime), never the verifier's own output.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bnbver.bounds import BoundsOptions, bound_root, prepare
from bnbver.driver import VerifierOptions, verify
from bnbver.io.loaders import load_network, load_properties
from bnbver.io.ort_check import ort_outputs
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from bnbver.result import Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet

S = 1e9
CENTRE = np.array([0.3141, -0.2718, 0.1618])


def _write_onnx(path: Path, layers: list[tuple[str, dict[str, np.ndarray]]], n_in: int,
                n_out: int, elem: int = TensorProto.FLOAT) -> Path:
    """Write a chain of Gemm / Relu / Sub nodes (weights as given) as an ONNX file."""
    dtype = np.float64 if elem == TensorProto.DOUBLE else np.float32
    nodes, inits, cur = [], [], "x"
    for i, (op, consts) in enumerate(layers):
        names = []
        for key, val in consts.items():
            names.append(f"{key}{i}")
            inits.append(numpy_helper.from_array(np.asarray(val, dtype=dtype), f"{key}{i}"))
        out = "y" if i == len(layers) - 1 else f"h{i}"
        extra = {"transB": 1} if op == "Gemm" else {}
        nodes.append(helper.make_node(op, [cur, *names], [out], **extra))
        cur = out
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [1, n_in])],
                              [helper.make_tensor_value_info("y", elem, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def _write_vnnlib(path: Path, lower: np.ndarray, upper: np.ndarray, rows: list[str]) -> Path:
    lines = [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(2)]
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        lines += [f"(assert (>= X_{i} {float(lo)!r}))", f"(assert (<= X_{i} {float(hi)!r}))"]
    lines += [f"(assert {r})" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_weight_net(tmp_path: Path) -> tuple[Path, Path]:
    """Finding 1: 21 inputs in [-1, 1], 3 used; u = relu(S(x - c)), v = relu(S(c - x));
    s = relu(S r - sum(u + v)); y0 = 0.01, y1 = 9e-10 s; unsafe y1 >= y0 (sat at x = c)."""
    w1 = np.zeros((6, 21))
    for i in range(3):
        w1[2 * i, i], w1[2 * i + 1, i] = S, -S
    b1 = np.concatenate([[-S * c, S * c] for c in CENTRE])
    layers = [("Gemm", {"W": w1, "B": b1}), ("Relu", {}),
              ("Gemm", {"W": -np.ones((1, 6)), "B": [S * 0.02]}), ("Relu", {}),
              ("Gemm", {"W": [[0.0], [9e-10]], "B": [0.01, 0.0]})]
    net = _write_onnx(tmp_path / "tiny.onnx", layers, 21, 2)
    prop = _write_vnnlib(tmp_path / "tiny.vnnlib", -np.ones(21), np.ones(21),
                         ["(>= Y_1 Y_0)"])
    return net, prop


def test_issue_15_tiny_weights_are_sat_at_the_centre(tmp_path: Path) -> None:
    """The instance really is sat: onnxruntime at x = c gives y1 >= y0."""
    net, _ = _tiny_weight_net(tmp_path)
    x = np.zeros(21)
    x[:3] = CENTRE.astype(np.float32)
    y = ort_outputs(net, x)
    assert y[1] >= y[0] > 0


@pytest.mark.parametrize("options", [
    {}, {"tighten": "lp"}, {"tighten": "milp"}, {"branching": "fsb"}, {"split": "input"},
    {"precision": "float32"}, {"milp_max_unstable": 100},
])
def test_issue_15_tiny_weights_never_unsat(tmp_path: Path, options: dict[str, object]) -> None:
    """HiGHS ignores |a| <= 1e-9: the MILP used to answer infeasible (unsat) in 0.04 s."""
    net_path, prop_path = _tiny_weight_net(tmp_path)
    network = load_network(net_path)
    props = load_properties(prop_path, network)
    res = verify(network, props, VerifierOptions.from_kwargs(timeout=8, **options),
                 source_path=net_path)
    assert res.status is not Status.HOLDS, res.message
    if res.status is Status.VIOLATED:
        assert res.counterexample is not None
        y = ort_outputs(net_path, res.counterexample.x)
        assert y[1] >= y[0]


def _shifted_net(tmp_path: Path) -> tuple[Path, Path]:
    """Finding 2: y0 = x - 10000.0003 as Sub then Gemm in float64 ONNX; x in
    [9999.9999, 10000], where y0 <= -3e-4 < -2e-4: every point is a counterexample."""
    layers = [("Sub", {"c": [10000.0003]}), ("Gemm", {"W": [[1.0], [0.0]], "B": [0.0, 0.0]})]
    net = _write_onnx(tmp_path / "shift.onnx", layers, 1, 2, TensorProto.DOUBLE)
    prop = _write_vnnlib(tmp_path / "shift.vnnlib", np.array([9999.9999]),
                         np.array([10000.0]), ["(<= Y_0 -0.0002)"])
    return net, prop


def test_issue_15_float32_bounds_cover_rounded_weights(tmp_path: Path) -> None:
    """float32 rounds the bias -10000.0003 to -10000; the bound must still hold."""
    net_path, prop_path = _shifted_net(tmp_path)
    network = load_network(net_path)
    prop = load_properties(prop_path, network)[0]
    h = prop.unsafe.disjuncts[0]
    for dtype in (torch.float32, torch.float64):
        opts = BoundsOptions(method="crown", dtype=dtype)
        res = bound_root(prepare(network, h.C, h.d, opts), prop.box.lower, prop.box.upper, opts)
        exact = Fraction(10000.0) - Fraction(10000.0003) + Fraction(0.0002)  # margin at x = hi
        assert Fraction(float(res.row_lower[0, 0])) <= exact < 0
    for precision in ("float32", "float64"):
        res = verify(network, [prop], VerifierOptions.from_kwargs(timeout=10,
                                                                   precision=precision),
                     source_path=net_path)
        assert res.status is Status.VIOLATED


def test_issue_15_no_sat_that_onnxruntime_refutes(tmp_path: Path) -> None:
    """Finding 4: y = x + 10000, unsafe y >= 10000.0004, x in [0, 0.00045]: sat in exact
    arithmetic (x = 0.00045), but onnxruntime (float32) gives 10000 everywhere."""
    layers = [("Gemm", {"W": [[1.0], [0.0]], "B": [10000.0, 0.0]})]
    net_path = _write_onnx(tmp_path / "add.onnx", layers, 1, 2)
    prop_path = _write_vnnlib(tmp_path / "add.vnnlib", np.zeros(1), np.array([0.00045]),
                              ["(>= Y_0 10000.0004)"])
    assert ort_outputs(net_path, np.array([0.00045]))[0] < 10000.0004
    network = load_network(net_path)
    res = verify(network, load_properties(prop_path, network),
                 VerifierOptions.from_kwargs(timeout=10), source_path=net_path)
    assert res.status is Status.UNKNOWN and "onnxruntime" in res.message


def test_issue_15_relu_after_max_pool(tmp_path: Path) -> None:
    """Finding 5: a ReLU right after a max pool made the bounder read the pool's bias."""
    rng = np.random.default_rng(5)
    conv = Conv2d(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.1, (1, 1),
                  (0, 0, 0, 0), (1, 4, 4))
    pool = MaxPool2d((2, 2), (1, 1), (0, 0, 0, 0), (2, 3, 3))
    n = pool.out_size
    net = Network((conv, pool, ReLU(n), Flatten(n), Dense(rng.normal(size=(2, n)),
                                                          np.zeros(2))), (1, 4, 4))
    lo, hi = np.zeros(16), np.full(16, 0.3)
    prop = Property(InputBox(lo, hi), UnsafeSet((HalfSpaces([[1.0, -1.0]], [-50.0]),)))
    for branching in ("babsr", "fsb", "widest"):
        res = verify(net, prop, VerifierOptions.from_kwargs(timeout=20, split="relu",
                                                            branching=branching))
        assert res.status is Status.HOLDS  # |y0 - y1| is far below 50 on this box


def test_issue_15_tiny_positive_bound_closes(tmp_path: Path) -> None:
    """Finding 5: a lower bound in (0, 1e-9] kept no state but was not closed (a crash on
    the next round). y = relu(x) + relu(-x) + 5e-10 >= 5e-10 > 0: proven, not a crash."""
    net = Network((Dense([[1.0], [-1.0]], [0.0, 0.0]), ReLU(2),
                   Dense([[1.0, 1.0]], [5e-10])), (1,))
    prop = Property(InputBox(np.array([-1.0]), np.array([1.0])),
                    UnsafeSet((HalfSpaces([[1.0]], [0.0]),)))
    for split in ("relu", "input"):
        res = verify(net, prop, VerifierOptions.from_kwargs(timeout=10, split=split))
        assert res.status is Status.HOLDS


DATA = Path(__file__).parent / "data" / "issue15"


@pytest.mark.parametrize(("name", "witness", "options"), [
    # float32 root tightening: bounds cast to float32 rounded inwards (then a MILP said no)
    ("narrow_tighten", [-0.094766575776661, -0.028213174218568192, -0.748539558107412],
     {"precision": "float32", "split": "relu", "tighten": "milp"}),
    # HiGHS presolve called a feasible MILP of a 1.5e-6 wide box infeasible
    ("narrow_presolve", [0.9648958130406976, 0.6116151674893754],
     {"precision": "float32", "split": "relu", "branching": "babsr"}),
])
def test_issue_15_fuzzer_finds_stay_fixed(name: str, witness: list[float],
                                          options: dict[str, object]) -> None:
    """Two wrong unsat answers the soundness fuzzer found (seed 2025, cases 158 and 498):
    the files are the fuzzer's, the witness its exact oracle's."""
    network = load_network(DATA / f"{name}.onnx")
    props = load_properties(DATA / f"{name}.vnnlib", network)
    exact = network.forward_exact(np.array(witness))
    assert exact is not None
    assert any(p.box.contains(np.array(witness)) and p.unsafe.exactly_violated_by(exact)
               is not None for p in props)
    res = verify(network, props, VerifierOptions.from_kwargs(timeout=10, **options))
    assert res.status is not Status.HOLDS


def test_issue_15_outward_cast_contains_the_float64_interval() -> None:
    from bnbver.bounds.rounding import outward

    rng = np.random.default_rng(0)
    lo64 = torch.tensor(rng.normal(size=1000) * 1e-6)
    hi64 = lo64 + torch.tensor(rng.random(1000) * 1e-9)
    lo, hi = outward(lo64, hi64, torch.float32)
    assert bool((lo.double() <= lo64).all() and (hi.double() >= hi64).all())


def test_issue_15_milp_margin_alone_keeps_the_presolve_case(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The presolve case of the fuzzer with the narrow-column precondition switched off: the
    rows' margin alone keeps HiGHS from calling the feasible MILP infeasible (without it,
    and without the precondition, the answer was a wrong unsat)."""
    from bnbver.lp import numerics

    monkeypatch.setattr(numerics, "MIN_WIDTH", 0.0)
    network = load_network(DATA / "narrow_presolve.onnx")
    props = load_properties(DATA / "narrow_presolve.vnnlib", network)
    res = verify(network, props, VerifierOptions.from_kwargs(
        timeout=10, precision="float32", split="relu", branching="babsr"))
    assert res.status is not Status.HOLDS


def test_issue_15_margin_contains_each_feasible_point_with_room() -> None:
    """Every point of the original rows satisfies the widened rows with the margin to spare."""
    import scipy.sparse as sp

    from bnbver.lp.model import LinearProgram
    from bnbver.lp.numerics import MARGIN, solver_safe

    rng = np.random.default_rng(3)
    A = rng.normal(size=(20, 6)) * 10.0 ** rng.integers(-3, 3, size=(20, 1))
    x = rng.uniform(-2, 2, size=(200, 6))
    act = x @ A.T
    lo, hi = act.min(axis=0), act.max(axis=0)
    lp = LinearProgram(c=np.zeros(6), A=sp.csr_matrix(A), row_lower=lo, row_upper=hi,
                       col_lower=np.full(6, -2.0), col_upper=np.full(6, 2.0))
    safe = solver_safe(lp, MARGIN).lp
    scaled = x @ safe.A.toarray().T
    assert np.all(scaled - safe.row_lower >= 0.5 * MARGIN)
    assert np.all(safe.row_upper - scaled >= 0.5 * MARGIN)


def test_bounds_beyond_highs_infinity_relax_instead_of_failing() -> None:
    """A leaf LP with bounds beyond 1e20 (weights of 1e8 over two layers) was refused by
    HiGHS and the run ended in an internal error (fuzzer seed 60606, case 46; its exact
    oracle says unsat). Such a bound is now dropped (a relaxation) and the answer is found."""
    from bnbver.lp.highs import _lower, _upper

    assert _lower(np.array([3e20, 1e19, -5e20])).tolist() == [-np.inf, 1e19, -5e20]
    assert _upper(np.array([-3e20, -1e19, 5e20])).tolist() == [np.inf, -1e19, 5e20]
    network = load_network(DATA / "huge_bounds.onnx")
    props = load_properties(DATA / "huge_bounds.vnnlib", network)
    res = verify(network, props, VerifierOptions.from_kwargs(
        timeout=10, split="relu", branching="random", precision="float32"))
    assert res.status is Status.HOLDS
