"""Known answers on real benchmark instances.

The bundled examples run in the default test run (about 2 s in all); the sample of the full
VNN-COMP suites is marked slow (``-m slow``), needs ../shared and is skipped (with the reason)
in a clone without it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bnbver.driver import verify
from bnbver.io.loaders import load_network, load_properties
from tests.conftest import EXAMPLES, SHARED_BENCHMARKS


def _rows(folder: Path) -> list[tuple[str, str, float, str]]:
    expected = {(r["onnx"], r["vnnlib"]): r["expected"]
                for r in csv.DictReader((folder / "expected.csv").open())}
    out = []
    for onnx, vnnlib, timeout in csv.reader((folder / "instances.csv").read_text().splitlines()):
        out.append((onnx, vnnlib, float(timeout), expected[(onnx, vnnlib)]))
    return out


def _check(folder: Path, onnx: str, vnnlib: str, timeout: float, expected: str,
           allow_timeout: bool) -> None:
    network = load_network(folder / onnx)
    props = load_properties(folder / vnnlib, network)
    result = verify(network, props, timeout=timeout, source_path=folder / onnx)
    answer = result.status.value
    if allow_timeout and answer in ("timeout", "unknown"):
        return
    assert answer == expected, f"{onnx} {vnnlib}: {answer} ({result.message})"


@pytest.mark.parametrize(("onnx", "vnnlib", "timeout", "expected"), _rows(EXAMPLES))
def test_bundled_instance_known_answer(onnx: str, vnnlib: str, timeout: float,
                                       expected: str) -> None:
    _check(EXAMPLES, onnx, vnnlib, timeout, expected, allow_timeout=False)


SAMPLE = [("acasxu", i) for i in range(0, 186, 12)] + [("mnist_fc", i) for i in range(0, 30, 3)]


@pytest.mark.slow
@pytest.mark.parametrize(("suite", "index"), SAMPLE)
def test_shared_suite_sample_never_wrong(suite: str, index: int) -> None:
    folder = SHARED_BENCHMARKS / suite
    if not folder.is_dir():
        pytest.skip("../shared/benchmarks not present: the full suites are not in the repo")
    onnx, vnnlib, timeout, expected = _rows(folder)[index]
    if expected not in ("sat", "unsat"):
        pytest.skip(f"{onnx} {vnnlib}: no known answer")
    _check(folder, onnx, vnnlib, min(timeout, 60.0), expected, allow_timeout=True)


@pytest.mark.parametrize(("net", "prop"), [("1_6", "2"), ("2_9", "8")])
def test_acas_counterexample_only_found_inside_open_boxes(net: str, prop: str) -> None:
    """Sat instances whose counterexamples the whole-box falsifier misses (they timed out
    before the BaB ran PGD inside its worst open boxes); the answer must be sat, and the
    counterexample is re-checked in float64 by ``verify`` itself."""
    folder = SHARED_BENCHMARKS / "acasxu"
    if not folder.is_dir():
        pytest.skip("../shared/benchmarks not present: ACAS Xu 1_6 / 2_9 are not bundled")
    network = load_network(folder / f"onnx/ACASXU_run2a_{net}_batch_2000.onnx")
    props = load_properties(folder / f"vnnlib/prop_{prop}.vnnlib", network)
    result = verify(network, props, timeout=60.0)
    assert result.status.value == "sat", result.message
    assert result.counterexample is not None
    assert props[0].box.contains(result.counterexample.x)
