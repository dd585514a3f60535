"""``bnbver certify``: the same answers as the API, CSV rows, summary, resume, data formats."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import bnbver
from bnbver.apps.certify import summarize
from bnbver.cli import main
from bnbver.commands.certify import FIELDS
from tests.conftest import digits_model

EPS = "0.02,0.1"


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits model saved whole and as a state dict (+ factory), and 8 samples as npz
    and as a CSV with a ``label`` column."""
    tmp = tmp_path_factory.mktemp("digits")
    model, x, y = digits_model()
    torch.save(model, tmp / "model.pt")
    torch.save(model.state_dict(), tmp / "state.pt")
    (tmp / "factory.py").write_text(
        "import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(64, 20),"
        " torch.nn.ReLU(), torch.nn.Linear(20, 10))\n")
    np.savez(tmp / "data.npz", x=x[:8], y=y[:8])
    with (tmp / "data.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"p{i}" for i in range(64)] + ["label"])
        w.writerows([*map(float, row), int(lab)] for row, lab in zip(x[:8], y[:8], strict=True))
    return {"model": tmp / "model.pt", "state": tmp / "state.pt", "factory": tmp / "factory.py",
            "npz": tmp / "data.npz", "csv": tmp / "data.csv"}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _key(rows: list[dict[str, str]]) -> list[tuple[int, float, str]]:
    return sorted((int(r["index"]), float(r["eps"]), r["status"]) for r in rows)


def test_issue_18_cli_and_api_give_the_same_answers(
        digits_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two parallel workers through the CLI, one process through the API: the same status
    per (sample, eps); the printed summary is the rows' summary; counterexamples are saved
    as .npy files that really are counterexamples."""
    model, x, y = digits_model()
    api = bnbver.certify(model, x[:8], y[:8], [0.02, 0.1], domain=(0, 1), timeout=120)
    out = tmp_path / "r.csv"
    code = main(["certify", str(digits_files["model"]), "--data", str(digits_files["npz"]),
                 "--eps", EPS, "--domain", "0,1", "--timeout", "120", "--jobs", "2",
                 "--out", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    rows = _read(out)
    assert code == 0 and list(rows[0]) == FIELDS
    assert _key(rows) == sorted((r.index, r.eps, r.status) for r in api)
    assert printed == [s.line() for s in summarize(rows)] == [s.line() for s in summarize(api)]
    falsified = [r for r in rows if r["status"] == "falsified"]
    assert falsified and any(r["status"] == "verified" for r in rows)
    for r in falsified:
        cex = np.load(out.parent / r["counterexample"])
        i, eps = int(r["index"]), float(r["eps"])
        assert np.all(np.abs(cex - x[i]) <= eps + 1e-12)
        with torch.no_grad():
            reached = int(model(torch.tensor(cex[None], dtype=torch.float32)).argmax())
        assert reached == int(r["cex_class"]) != int(r["label"])
    for r in rows:
        if r["status"] == "verified":
            assert float(r["lower_bound"]) > 0


def test_issue_18_state_dict_factory_and_csv_data(digits_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """A state dict with ``--factory file.py:function`` and the samples as a CSV with a
    ``label`` column give the same rows as the whole model on the npz."""
    outs = []
    for model_args, data in ((["--factory", f"{digits_files['factory']}:build"], "csv"),
                             ([], "npz")):
        out = tmp_path / f"{data}.csv"
        model = digits_files["state" if model_args else "model"]
        assert main(["-q", "certify", str(model), *model_args, "--data", str(digits_files[data]),
                     "--eps", EPS, "--domain", "0,1", "--indices", "5,1,2", "--out",
                     str(out)]) == 0
        outs.append(_key(_read(out)))
    assert outs[0] == outs[1] and {i for i, _, _ in outs[0]} == {5, 1, 2}


def test_issue_18_resume_runs_only_what_is_missing(digits_files: dict[str, Path],
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.csv"
    base = ["certify", str(digits_files["model"]), "--data", str(digits_files["npz"]),
            "--domain", "0,1", "--out", str(out)]
    assert main([*base, "--eps", "0.02", "--limit", "2"]) == 0
    rows = _read(out)
    rows[0]["seconds"] = "12345.000"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main([*base, "--eps", "0.02,0.1", "--limit", "3", "--resume"]) == 0
    captured = capsys.readouterr()
    rows = _read(out)
    assert "2 rows kept" in captured.err and "3 samples to run" in captured.err
    assert sorted((int(r["index"]), float(r["eps"])) for r in rows) == [
        (i, e) for i in range(3) for e in (0.02, 0.1)]
    assert rows[0]["seconds"] == "12345.000"
    assert "eps=0.02: 3 samples" in captured.out and "eps=0.1: 3 samples" in captured.out
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main([*base[:-1], str(tmp_path / "other.csv"), "--eps", "0.02", "--resume"]) == 2
