"""The ``adversarial`` and ``visualize`` commands: JSON schema, PNG output, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bnbver.cli import main
from bnbver.io.onnx_export import save_onnx
from bnbver.network import Dense, Network, ReLU

KEYS = {"status", "x", "objective", "bound", "seconds"}


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A 16-8-3 network on 4x4 images and an image file."""
    rng = np.random.default_rng(0)
    net = Network((Dense(rng.normal(size=(8, 16)) / 4, rng.normal(size=8) * 0.1), ReLU(8),
                   Dense(rng.normal(size=(3, 8)) / 3, np.abs(rng.normal(size=3)))), (16,))
    path = tmp_path / "tiny.onnx"
    save_onnx(net, path)
    image = tmp_path / "img.npy"
    np.save(image, rng.uniform(0, 1, 16))
    return path, image


def test_adversarial_json_and_png(tiny: tuple[Path, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    net, image = tiny
    png = tmp_path / "adv.png"
    code = main(["adversarial", str(net), "--image", str(image), "--target", "2", "--margin",
                 "1", "--json", "--timeout", "20", "--png", str(png)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) >= KEYS
    if out["status"] in ("optimal", "feasible"):
        assert len(out["x"]) == 16 and out["bound"] <= out["objective"] + 1e-12
        assert png.is_file() and png.stat().st_size > 0
    else:
        assert out["status"] == "infeasible" and out["x"] is None


def test_visualize_json_and_png(tiny: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    net, image = tiny
    png = tmp_path / "vis.png"
    code = main(["visualize", str(net), "--unit", "0:3", "--near", str(image), "--weight",
                 "0.1", "--json", "--timeout", "20", "--png", str(png), "--tighten", "none"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) >= KEYS
    assert out["status"] == "optimal" and out["objective"] <= out["bound"] + 1e-12
    assert png.is_file()


@pytest.mark.parametrize("args", [
    ["--target", "9"], ["--target", "0", "--box", "1,0"], ["--target", "0", "--method", "x"],
])
def test_adversarial_bad_input_exits_2(tiny: tuple[Path, Path], args: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    net, image = tiny
    code = main(["adversarial", str(net), "--image", str(image), "--no-png", *args])
    assert code == 2 and capsys.readouterr().err.startswith("error:")


def test_missing_image_exits_2(tiny: tuple[Path, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    net, _ = tiny
    code = main(["adversarial", str(net), "--image", "nope.npy", "--target", "0"])
    assert code == 2 and "nope.npy" in capsys.readouterr().err


def test_visualize_bad_unit_exits_2(tiny: tuple[Path, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    net, _ = tiny
    assert main(["visualize", str(net), "--unit", "3:0"]) == 2
    assert "--unit" in capsys.readouterr().err


def test_issue_18_adversarial_without_matplotlib_keeps_the_result(
        tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """matplotlib is optional: without it the command warns before solving, writes no PNG
    and still reports the solve (it used to crash after the solve, losing the result)."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # "import matplotlib" now fails
    monkeypatch.chdir(tmp_path)
    net, image = tiny
    code = main(["adversarial", str(net), "--image", str(image), "--target", "2", "--margin",
                 "1", "--json", "--timeout", "20"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) >= KEYS and out["png"] is None
    assert not list(tmp_path.glob("*.png"))
    assert any("matplotlib is not installed" in r.getMessage() for r in caplog.records)


def test_issue_18_unwritable_png_fails_before_the_solve(
        tiny: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    net, image = tiny
    code = main(["adversarial", str(net), "--image", str(image), "--target", "2",
                 "--png", "/nonexistent-dir-bnbver/a.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--png: the folder" in err[0]
