"""The command line: bad input gives one error line and exit code 2; verdicts on examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bnbver.cli import main
from bnbver.io.onnx_export import save_onnx
from bnbver.network import Dense, Network, ReLU

ACAS = "acasxu/ACASXU_run2a_1_1_batch_2000.onnx"
MNIST = "mnist_fc/mnist-net_256x2.onnx"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _tiny_onnx(path: Path, weight: np.ndarray) -> Path:
    """y = W x with W (2, 2), as a Gemm model; NaNs allowed (the loader must reject them)."""
    node = helper.make_node("Gemm", ["x", "W"], ["y"], transB=1, name="gemm0")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(weight.astype(np.float32), "W")])
    onnx.save(helper.make_model(graph), path)
    return path


def _prop(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD_PROP = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
             "(declare-const Y_1 Real)\n(assert (>= X_0 0))\n(assert (<= X_0 1))\n"
             "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (>= Y_0 100))\n")


def _expect_error(argv: list[str], capsys: pytest.CaptureFixture[str], file: Path | str,
                  what: str) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {file}: "), lines[0]
    assert what in lines[0], lines[0]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.onnx"
    _expect_error(["verify", str(missing), str(_prop(tmp_path / "p.vnnlib", GOOD_PROP))],
                  capsys, missing, "no such file")


def test_malformed_onnx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xfe")
    _expect_error(["info", str(bad)], capsys, bad, "not a valid ONNX model")


def test_unsupported_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = helper.make_node("Sigmoid", ["x"], ["y"], name="squash")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    path = tmp_path / "sig.onnx"
    onnx.save(helper.make_model(graph), path)
    _expect_error(["info", str(path)], capsys, path, "Sigmoid")
    _expect_error(["info", str(path)], capsys, path, "squash")


def test_nan_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _tiny_onnx(tmp_path / "nan.onnx", np.array([[1.0, np.nan], [0.0, 1.0]]))
    _expect_error(["verify", str(path), str(_prop(tmp_path / "p.vnnlib", GOOD_PROP))],
                  capsys, path, "NaN")


def test_vnnlib_syntax_error_names_line(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    net = _tiny_onnx(tmp_path / "n.onnx", np.eye(2))
    prop = _prop(tmp_path / "p.vnnlib", GOOD_PROP.replace("(assert (>= X_1 0))",
                                                          "(assert (>= X_1 0)"))
    _expect_error(["verify", str(net), str(prop)], capsys, prop, "line")


def test_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _tiny_onnx(tmp_path / "n.onnx", np.eye(2))
    three = GOOD_PROP.replace("(declare-const Y_0 Real)",
                              "(declare-const X_2 Real)\n(declare-const Y_0 Real)")
    three += "(assert (>= X_2 0))\n(assert (<= X_2 1))\n"
    prop = _prop(tmp_path / "p.vnnlib", three)
    _expect_error(["verify", str(net), str(prop)], capsys, prop, "3 inputs")


def test_lower_above_upper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = _tiny_onnx(tmp_path / "n.onnx", np.eye(2))
    prop = _prop(tmp_path / "p.vnnlib", GOOD_PROP.replace("(assert (<= X_0 1))",
                                                          "(assert (<= X_0 -1))"))
    _expect_error(["verify", str(net), str(prop)], capsys, prop, "X_0")


def test_info_lists_layers(examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["info", str(examples_dir / ACAS)], capsys)
    assert code == 0
    assert "300 ReLU neurons" in out and "6 ReLU layers" in out


def test_issue_19_info_shows_the_inputs_of_a_dag(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from bnbver.io.onnx_export import save_onnx
    from tests.graph_cases import residual_net

    save_onnx(residual_net(np.random.default_rng(0), shortcut="concat"), tmp_path / "d.onnx")
    code, out, _ = _run(["info", str(tmp_path / "d.onnx")], capsys)
    assert code == 0
    assert "Concat     3 + 3 -> 6  <- [1, 4]" in out


@pytest.mark.parametrize(("net", "prop", "expected"), [
    (MNIST, "mnist_fc/prop_0_0.03.vnnlib", "unsat"),
    (MNIST, "mnist_fc/prop_0_0.05.vnnlib", "sat"),
    (ACAS, "acasxu/prop_1.vnnlib", "unsat"),
])
def test_bundled_examples(examples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          net: str, prop: str, expected: str) -> None:
    out_file = tmp_path / "result.txt"
    code, out, err = _run(["verify", str(examples_dir / net), str(examples_dir / prop),
                           "--timeout", "200", "--out", str(out_file)], capsys)
    assert code == 0
    assert out.strip() == expected
    assert err.startswith(f"{expected} in ") and "[attack " in err  # seconds per phase
    text = out_file.read_text()
    assert text.splitlines()[0] == expected
    if expected == "sat":
        values = dict(part.strip("()").split() for part in text.split("\n")[1:] if part.strip("()"))
        x = np.array([float(values[f"X_{i}"]) for i in range(784)])
        from bnbver.io.loaders import load_network, load_properties

        network = load_network(examples_dir / net)
        p = load_properties(examples_dir / prop, network)[0]
        assert p.box.contains(x, tol=1e-9)
        assert p.unsafe.violated_by(network.forward(x)) is not None


def test_entry_point_subprocess(tmp_path: Path) -> None:
    net = Network((Dense(np.eye(2), np.zeros(2)), ReLU(2), Dense(np.eye(2), np.zeros(2))), (2,))
    save_onnx(net, tmp_path / "n.onnx")
    prop = _prop(tmp_path / "p.vnnlib", GOOD_PROP)
    proc = subprocess.run([sys.executable, "-m", "bnbver.cli", "verify", str(tmp_path / "n.onnx"),
                           str(prop), "--timeout", "30"], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "unsat"  # y0 <= 1 on the box, never >= 100


def test_bad_branching_option(examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _expect_error(["verify", str(examples_dir / ACAS), str(examples_dir / "acasxu/prop_1.vnnlib"),
                   "--branching", "babsr"], capsys, "--branching", "branches on relu")


def test_option_flag_sets_search_options(capsys: pytest.CaptureFixture[str],
                                         examples_dir: Path) -> None:
    """``--option NAME=VALUE`` reaches the search (a forced ReLU split on ACAS Xu branches
    on neurons, not inputs, and needs other node counts), and a bad option is one error."""
    net, prop = str(examples_dir / ACAS), str(examples_dir / "acasxu/prop_1.vnnlib")
    code, out, err_input = _run(["verify", net, prop, "--timeout", "60"], capsys)
    assert code == 0 and out.strip() == "unsat"
    code, out, err_relu = _run(["verify", net, prop, "--timeout", "5",
                                "--option", "split=relu", "--option", "milp_max_unstable=0"],
                               capsys)
    assert code == 0 and out.strip() in ("unsat", "timeout")
    assert err_input.split(":")[1] != err_relu.split(":")[1]  # "N nodes, ..." differ
    for bad in ("bogus=1", "batch_size=abc", "clip=maybe", "nameonly"):
        code, _, err = _run(["verify", net, prop, "--option", bad], capsys)
        assert code == 2 and err.startswith("error: --option:"), (bad, err)


def test_parse_options_converts_to_the_fields_types() -> None:
    from bnbver.driver import parse_options

    assert parse_options(["batch_size=64", "clip=false", "attack_share=0.5",
                          "input_intermediate=crown", "branching=none"]) == {
        "batch_size": 64, "clip": False, "attack_share": 0.5,
        "input_intermediate": "crown", "branching": None}
