"""Bad input to ``verify``, ``certify`` and ``run-suite``: one ``error:`` line, exit 2, no
traceback, and no work done (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bnbver.cli import main
from tests.conftest import digits_model

REPO = Path(__file__).resolve().parents[1]
ACAS = REPO / "examples/acasxu/ACASXU_run2a_1_1_batch_2000.onnx"
PROP = REPO / "examples/acasxu/prop_1.vnnlib"
MNIST = REPO / "examples/mnist_fc/mnist-net_256x2.onnx"


def _one_error(argv: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("extra", "needles"), [
    (["--timeout", "0"], ["error: --timeout: must be > 0"]),
    (["--timeout", "-5"], ["--timeout"]),
    (["--jobs", "0"], ["error: --jobs: must be >= 1"]),
    (["--device", "tpu"], ["error: --device: "]),
    (["--out", "/nonexistent-dir-bnbver/r.txt"], ["--out: the folder", "does not exist"]),
    (["--record", "/nonexistent-dir-bnbver/t.jsonl"], ["--record"]),
    (["--option", "precision=float16"], ["error: precision: must be auto, float32 or float64"]),
    (["--option", "root_precision=half"], ["error: root_precision: must be float64 or same"]),
    (["--option", "child_iterations=-1"], ["error: iterations/child_iterations: must be >= 0"]),
    (["--option", "iterations=-3"], ["error: iterations/child_iterations: must be >= 0"]),
])
def test_issue_18_verify_refuses_bad_options(extra: list[str], needles: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["verify", str(ACAS), str(PROP), *extra], capsys, *needles)


def test_issue_18_verify_out_is_a_folder(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["verify", str(ACAS), str(PROP), "--out", str(tmp_path)], capsys,
               f"error: {tmp_path}: --out: is a folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_issue_18_cuda_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    _one_error(["verify", str(ACAS), str(PROP), "--device", "cuda"], capsys,
               "error: --device: 'cuda': CUDA is not available")


@pytest.fixture(scope="module")
def digits_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("val") / "model.pt"
    torch.save(digits_model()[0], path)
    return path


def _npz(tmp_path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return tmp_path / "d.npz"


@pytest.mark.parametrize(("case", "extra", "needles"), [
    ("float-label", [], ["d.npz: y: labels must be integer classes, got 2.5 at index 1"]),
    ("ok", ["--domain", "1,0"], ["error: --domain: '1,0': lo > hi"]),
    ("outside", ["--domain", "0,1"], ["error: x[2]: 1 value(s) outside the domain [0, 1]"]),
    ("hwc", [], ["error: x: shape (8, 8, 1) does not fit the torch module"]),
    ("ok", ["--timeout", "0"], ["error: --timeout"]),
    ("ok", ["--jobs", "0"], ["error: --jobs"]),
    ("ok", ["--limit", "0"], ["error: --limit"]),
    ("ok", ["--eps", "0.1,x"], ["error: --eps"]),
    ("ok", ["--out", "/nonexistent-dir-bnbver/r.csv"], ["--out: the folder"]),
    ("ok", ["--indices", "1,99"], ["error: --indices: [99] outside 0..2"]),
])
def test_issue_18_certify_refuses_bad_input(case: str, extra: list[str], needles: list[str],
                                            digits_pt: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, x, y = digits_model()
    xs, ys = x[:3].copy(), y[:3].astype(np.float64)
    if case == "float-label":
        ys[1] = 2.5
    elif case == "outside":
        xs[2, 7] = 1.5
    elif case == "hwc":
        xs = xs.reshape(3, 8, 8, 1)
    argv = ["certify", str(digits_pt), "--data", str(_npz(tmp_path, xs, ys)), "--eps", "0.01",
            "--out", str(tmp_path / "r.csv")]
    _one_error([*argv, *extra], capsys, *needles)
    assert not (tmp_path / "r_cex").exists()


def test_issue_18_certify_onnx_shape_mismatch(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """(28, 28, 1) images do not fit the (784, 1) input of mnist-net (flat ones do)."""
    npz = _npz(tmp_path, np.zeros((2, 28, 28, 1)), np.array([0, 1]))
    _one_error(["certify", str(MNIST), "--data", str(npz), "--eps", "0.01", "--out",
                str(tmp_path / "r.csv")], capsys,
               "error: x[0]: shape (28, 28, 1) does not fit the network's input (784, 1)")


@pytest.mark.parametrize(("extra", "needle"), [(["--jobs", "0"], "--jobs"),
                                               (["--timeout-scale", "0"], "--timeout-scale"),
                                               (["--out", "/nonexistent-dir-bnbver/o.csv"],
                                                "--out")])
def test_issue_18_run_suite_refuses_bad_options(extra: list[str], needle: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run-suite", str(REPO / "examples/instances.csv"), "--out", str(tmp_path / "o.csv")]
    _one_error([*argv, *extra], capsys, needle)
