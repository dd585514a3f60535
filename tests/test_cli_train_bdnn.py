"""Tests of ``bnbver train-bdnn`` (bnbver.commands.train_bdnn)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bnbver.cli import main

XOR_CSV = "x1,x2,label\n0,0,0\n1,0,1\n0,1,1\n1,1,0\n2,1,0\n-1,1,1\n2,2,0\n"


def _write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_fields_are_present_and_consistent(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path, XOR_CSV)
    out = tmp_path / "m.onnx"
    code = main(["train-bdnn", str(data), "--hidden", "2", "--weights", "int:1",
                 "--method", "exact", "--time-limit", "20", "--seed", "1", "--out", str(out),
                 "--json"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    for key in ("train_accuracy", "objective", "bound", "gap", "seconds", "method", "status"):
        assert key in info
    assert info["method"] == "exact" and info["status"] == "optimal"
    assert info["objective"] == info["train_errors"]
    assert info["train_accuracy"] == pytest.approx(1 - info["train_errors"] / 7)
    assert info["bound"] <= info["objective"] and info["gap"] == 0.0
    ort = pytest.importorskip("onnxruntime")
    x = np.loadtxt(data, delimiter=",", skiprows=1)
    scores = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"x": x[:, :2]})[0]
    assert np.mean(np.argmax(scores, axis=1) == x[:, 2]) == pytest.approx(info["train_accuracy"])


@pytest.mark.parametrize("method", ["local", "kmeans"])
def test_heuristics_and_labels_without_header(method: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path, "0,0,3\n1,0,7\n0,1,7\n1,1,3\n2,1,3\n-1,1,7\n\n2,2,3\n")
    code = main(["train-bdnn", str(data), "--hidden", "2", "--weights", "cont:1",
                 "--method", method, "--time-limit", "10", "--clusters", "2", "--json"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == method and info["classes"] == [3, 7]
    assert 0.0 <= info["train_accuracy"] <= 1.0 and info["bound"] == 0.0


@pytest.mark.parametrize(("text", "needle"), [
    ("a,b,label\n0,0,0\n1,x,1\n", "line 3"),
    ("0,0,0\n1,1\n", "line 2"),
    ("0,0,0\n1,1,0.5\n", "not an integer"),
    ("a,b,label\n", "no data rows"),
    ("0,0,0\n1,inf,1\n", "line 2"),
])
def test_bad_csv_exits_2(text: str, needle: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path, text)
    assert main(["train-bdnn", str(data), "--time-limit", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data}: ") and needle in err


def test_missing_file_and_bad_flags_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-bdnn", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    data = _write(tmp_path, XOR_CSV)
    assert main(["train-bdnn", str(data), "--weights", "int:0.5"]) == 2
    assert capsys.readouterr().err.startswith("error: --weights: ")
    assert main(["train-bdnn", str(data), "--hidden", "2,x"]) == 2
    assert capsys.readouterr().err.startswith("error: --hidden: ")
