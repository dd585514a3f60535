"""run-suite streams one row per instance, checks expected answers, survives bad instances;
the VNN-COMP scripts write a result file."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bnbver.cli import main
from bnbver.commands.common import code_version

REPO = Path(__file__).resolve().parents[1]


def _suite(tmp_path: Path, examples_dir: Path, expected_sat: str) -> Path:
    """A suite of the two bundled MNIST instances plus one whose network file is missing."""
    shutil.copytree(examples_dir / "mnist_fc", tmp_path / "mnist_fc")
    (tmp_path / "instances.csv").write_text(
        "mnist_fc/mnist-net_256x2.onnx,mnist_fc/prop_0_0.03.vnnlib,60\n"
        "mnist_fc/missing.onnx,mnist_fc/prop_0_0.03.vnnlib,60\n"
        "mnist_fc/mnist-net_256x2.onnx,mnist_fc/prop_0_0.05.vnnlib,60\n")
    (tmp_path / "expected.csv").write_text(
        "onnx,vnnlib,expected,n_tools_agreeing,n_tools_disagreeing\n"
        "mnist_fc/mnist-net_256x2.onnx,mnist_fc/prop_0_0.03.vnnlib,unsat,1,0\n"
        f"mnist_fc/mnist-net_256x2.onnx,mnist_fc/prop_0_0.05.vnnlib,{expected_sat},1,0\n")
    return tmp_path / "instances.csv"


def test_run_suite_rows_and_errors(tmp_path: Path, examples_dir: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.csv"
    code = main(["run-suite", str(_suite(tmp_path, examples_dir, "sat")), "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["result"] for r in rows] == ["unsat", "error", "sat"]
    assert rows[0]["correct"] == "ok" and rows[2]["correct"] == "ok"
    assert "no such file" in rows[1]["message"]
    assert all(r["commit"] == code_version() != "" for r in rows)  # what made each row
    assert "[3/3]" in capsys.readouterr().err


def test_run_suite_flags_wrong_answers(tmp_path: Path, examples_dir: Path) -> None:
    out = tmp_path / "results.csv"
    code = main(["run-suite", str(_suite(tmp_path, examples_dir, "unsat")), "--out", str(out),
                 "--filter", "0.05"])
    assert code == 1
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["correct"] == "WRONG"


def test_vnncomp_run_instance_script(tmp_path: Path, examples_dir: Path) -> None:
    result = tmp_path / "out.txt"
    net = examples_dir / "mnist_fc/mnist-net_256x2.onnx"
    prop = examples_dir / "mnist_fc/prop_0_0.05.vnnlib"
    env = {"BNBVER_PYTHON": sys.executable, "PATH": "/usr/bin:/bin", "BNBVER_NO_PKILL": "1"}
    if "PYTHONPATH" in os.environ:  # an uninstalled checkout (e.g. the GPU machine)
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    prep = subprocess.run(["bash", str(REPO / "vnncomp/prepare_instance.sh"), "v1", "mnist_fc",
                           str(net), str(prop)], env=env, capture_output=True, check=False)
    assert prep.returncode == 0, prep.stderr
    run = subprocess.run(["bash", str(REPO / "vnncomp/run_instance.sh"), "v1", "mnist_fc",
                          str(net), str(prop), str(result), "60"], env=env,
                         capture_output=True, check=False)
    assert run.returncode == 0, run.stderr
    text = result.read_text()
    assert text.startswith("sat\n((X_0 ") and "(Y_9 " in text


def test_run_suite_passes_options_to_every_instance(tmp_path: Path, examples_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``--option`` reaches each instance (no falsifier samples/steps and a 1-node cap on
    the search leave the sat instance undecided), and a bad option stops before any run."""
    suite = _suite(tmp_path, examples_dir, "sat")
    out = tmp_path / "results.csv"
    code = main(["run-suite", str(suite), "--out", str(out), "--filter", "0.05",
                 "--option", "samples=0", "--option", "steps=0", "--option", "batch_size=1",
                 "--max-timeout", "2"])
    rows = list(csv.DictReader(out.open()))
    assert code == 0 and rows[0]["result"] != "error", rows[0]
    code = main(["run-suite", str(suite), "--out", str(tmp_path / "bad.csv"),
                 "--option", "split=sideways"])
    assert code == 2 and "split" in capsys.readouterr().err


def test_run_suite_resume_runs_only_the_missing_instances(
        tmp_path: Path, examples_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run cut after its first row goes on with the other two; the kept row is not re-run
    (its planted seconds survive) and the summary counts all three."""
    suite = _suite(tmp_path, examples_dir, "sat")
    out = tmp_path / "results.csv"
    assert main(["run-suite", str(suite), "--out", str(out), "--limit", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    rows[0]["seconds"] = "12345.000"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["run-suite", str(suite), "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(out.open()))
    assert [r["result"] for r in rows] == ["unsat", "error", "sat"]
    assert rows[0]["seconds"] == "12345.000"
    assert "[2/2]" in captured.err and "error=1 sat=1 unsat=1" in captured.out
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    code = main(["run-suite", str(suite), "--out", str(tmp_path / "other.csv"), "--resume"])
    assert code == 2 and "other.csv" in capsys.readouterr().err
