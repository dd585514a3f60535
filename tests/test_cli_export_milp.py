"""Tests of ``bnbver export-milp``: files per disjunct, --solve answers, input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnbver.cli import main
from bnbver.io.onnx_export import save_onnx
from bnbver.lp.highs import solve_file
from bnbver.lp.model import LpStatus
from tests.conftest import random_relu_net

REPO = Path(__file__).resolve().parents[1]


def _instance(tmp_path: Path, rhs: float) -> tuple[Path, Path]:
    """A 2-6-6-2 network and a property with two disjuncts: Y_0 <= Y_1 - rhs or Y_0 >= 50."""
    net = random_relu_net(np.random.default_rng(0), [2, 6, 6, 2])
    onnx_path = tmp_path / "net.onnx"
    save_onnx(net, onnx_path, dtype="float64")
    text = "\n".join([
        "(declare-const X_0 Real)", "(declare-const X_1 Real)",
        "(declare-const Y_0 Real)", "(declare-const Y_1 Real)",
        "(assert (>= X_0 -1.0))", "(assert (<= X_0 1.0))",
        "(assert (>= X_1 -1.0))", "(assert (<= X_1 1.0))",
        f"(assert (or (and (<= (+ Y_0 {rhs}) Y_1)) (and (>= Y_0 50.0))))", ""])
    prop = tmp_path / "prop.vnnlib"
    prop.write_text(text)
    return onnx_path, prop


def test_export_writes_one_file_per_disjunct(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    out = tmp_path / "m.mps"
    assert main(["export-milp", str(net), str(prop), "--formulation", "partition:2",
                 "--tighten", "lp", "--out", str(out)]) == 0
    files = sorted(p.name for p in tmp_path.glob("m*.mps"))
    assert files == ["m.d0.mps", "m.d1.mps"]
    for f in files:  # Y_1 - Y_0 >= 100 and Y_0 >= 50 are unreachable: both infeasible
        assert solve_file(tmp_path / f).status is LpStatus.INFEASIBLE


def test_solve_prints_unsat_and_sat(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    assert main(["export-milp", str(net), str(prop), "--solve", "--cuts", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("result: unsat")
    net, prop = _instance(tmp_path, -100.0)
    assert main(["export-milp", str(net), str(prop), "--solve", "--formulation", "extended",
                 "--node-splits", ""]) == 0
    out = capsys.readouterr().out
    assert "counterexample:" in out and out.strip().endswith("result: sat")


@pytest.mark.parametrize(("args", "what"), [
    (["--solve", "--node-splits", "0:99:+"], "--node-splits"),
    (["--solve", "--node-splits", "0:1:x"], "--node-splits"),
    (["--formulation", "magic"], "--formulation"),
    (["--out", "m.txt"], "m.txt"),
    ([], "--out"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, what) -> None:
    net, prop = _instance(tmp_path, 1.0)
    assert main(["export-milp", str(net), str(prop), *args]) == 2
    assert what in capsys.readouterr().err


def test_stdout_is_clean_in_a_subprocess(tmp_path) -> None:
    net, prop = _instance(tmp_path, 100.0)
    out = subprocess.run([sys.executable, "-m", "bnbver.cli", "export-milp", str(net),
                          str(prop), "--solve"], capture_output=True, text=True, cwd=REPO,
                         check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("disjunct 0:") and lines[-1] == "result: unsat"
