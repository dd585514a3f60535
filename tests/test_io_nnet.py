"""Tests of bnbver.io.nnet (ACAS Xu .nnet files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bnbver.errors import InputError
from bnbver.io.nnet import load_nnet
from bnbver.io.onnx import load_onnx
from bnbver.network import Dense, ReLU

# Normalisation constants in the header of every ACAS Xu .nnet file.
ACAS_MEANS = np.array([19791.091, 0.0, 0.0, 650.0, 600.0])
ACAS_RANGES = np.array([60261.0, 6.28318530718, 6.28318530718, 1100.0, 1200.0])
ACAS_OUT_MEAN, ACAS_OUT_RANGE = 7.5188840201005975, 373.94992

# A 2-2-1 network: h = relu(W1 x + b1), y = W2 h + b2, inputs normalised by (x - m) / r.
TINY = """// a tiny hand-made network
// second comment line
2,2,1,2,
2,2,1,
0,
-10.0,0.0,
10.0,4.0,
1.0,2.0,3.0,
2.0,4.0,10.0,
1.0,-1.0,
0.5,2.0,
0.25,
-1.0,
3.0,-2.0,
1.5,
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.nnet"
    path.write_text(text)
    return path


def test_tiny_network_by_hand(tmp_path: Path) -> None:
    net = load_nnet(write(tmp_path, TINY))
    assert net.input_shape == (2,) and net.output_shape == (1,)
    assert [type(layer) for layer in net.layers] == [Dense, ReLU, Dense]
    # x = (1, 2): W1 x + b1 = (1 - 2 + 0.25, 0.5 + 4 - 1) = (-0.75, 3.5); relu -> (0, 3.5)
    # y = 3 * 0 - 2 * 3.5 + 1.5 = -5.5
    assert net.forward(np.array([1.0, 2.0])) == pytest.approx([-5.5])


def test_tiny_network_raw_io(tmp_path: Path) -> None:
    norm = load_nnet(write(tmp_path, TINY))
    raw = load_nnet(write(tmp_path, TINY), normalized_io=False)
    x = np.random.default_rng(0).uniform(-5, 5, size=(20, 2))
    expected = norm.forward((x - [1.0, 2.0]) / [2.0, 4.0]) * 10.0 + 3.0
    np.testing.assert_allclose(raw.forward(x), expected, rtol=1e-12, atol=1e-12)


def _pairs(bench: Path) -> list[tuple[Path, Path]]:
    out = []
    for i in range(1, 6):
        for j in range(1, 10):
            nnet = bench / "nnet" / f"ACASXU_experimental_v2a_{i}_{j}.nnet"
            onnx = bench / "onnx" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
            if nnet.exists() and onnx.exists():
                out.append((nnet, onnx))
    return out


def test_all_acasxu_nnet_equal_onnx(benchmarks_dir: Path) -> None:
    pairs = _pairs(benchmarks_dir / "acasxu")
    assert len(pairs) == 45
    rng = np.random.default_rng(1)
    for nnet, onnx in pairs:
        x = rng.uniform(-0.5, 0.5, size=(100, 5))
        np.testing.assert_allclose(load_nnet(nnet).forward(x), load_onnx(onnx).forward(x),
                                   rtol=1e-5, atol=1e-5, err_msg=str(nnet))


def test_acasxu_raw_io_equals_scaled_onnx(benchmarks_dir: Path) -> None:
    bench = benchmarks_dir / "acasxu"
    for nnet, onnx in _pairs(bench)[::11]:
        raw = load_nnet(nnet, normalized_io=False)
        ref = load_onnx(onnx)
        rng = np.random.default_rng(2)
        x = rng.uniform([0, -3.14, -3.14, 100, 0], [60760, 3.14, 3.14, 1200, 1200], (50, 5))
        expected = ref.forward((x - ACAS_MEANS) / ACAS_RANGES) * ACAS_OUT_RANGE + ACAS_OUT_MEAN
        np.testing.assert_allclose(raw.forward(x), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("0.5,2.0,", "0.5,oops,"), "line 11: not a list of numbers"),
        (lambda t: t.replace("0.5,2.0,", "0.5,"), "line 11: expected 2 values"),
        (lambda t: t.replace("2,2,1,\n", "3,2,1,\n"), "line 4: layer sizes disagree"),
        (lambda t: t.rsplit("1.5", 1)[0], "unexpected end of file"),
        (lambda t: t + "7.0,\n", "line 16: unexpected data"),
        (lambda t: t.replace("0.25,", "nan,"), "line 12: NaN or infinite"),
    ],
)
def test_bad_files_name_the_line(
    tmp_path: Path, edit: Callable[[str], str], message: str
) -> None:
    path = write(tmp_path, edit(TINY))
    with pytest.raises(InputError, match=message) as info:
        load_nnet(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_nnet(tmp_path / "absent.nnet")
