"""``scripts/bench_parallel.py``: the smoke run spreads a search and prints one row."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_parallel  # noqa: E402


def test_smoke_prints_one_row_per_instance(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_parallel.main(["--smoke", "--jobs", "1,2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| smoke")]
    assert len(rows) == 1 and rows[0].count("unsat") == 2, rows


def test_unknown_instance_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_parallel.main(["--instances", "cifar:x:y", "--out", "/nonexistent/p.md"]) == 2
    assert capsys.readouterr().err.startswith("error: --instances: 'cifar:x:y'")


def test_bad_jobs_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_parallel.main(["--smoke", "--jobs", "1,0"]) == 2
    assert "error: --jobs" in capsys.readouterr().err
