"""Tests of scripts/compare_branching.py: every registered heuristic joins the study."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import compare_branching  # noqa: E402
from harness.instances import load, select, write_tiny_suite  # noqa: E402
from harness.results import read_rows  # noqa: E402

from bnbver.bab.branching import REGISTRY, BranchContext, register  # noqa: E402


def _last_layer_first(ctx: BranchContext) -> list[torch.Tensor]:
    """Score later layers higher (a test heuristic)."""
    return [torch.full_like(lo, float(k + 1)) for k, lo in enumerate(ctx.pre_lower)]


def test_a_newly_registered_heuristic_joins_the_study(tmp_path: Path) -> None:
    register("test-last-layer", kind="relu")(_last_layer_first)
    try:
        refs = select(write_tiny_suite(tmp_path / "suite"))
        args = compare_branching.parse_args(["--out-dir", str(tmp_path / "out"),
                                             "--timeout", "10"])
        assert compare_branching.run(args, refs) == 0
    finally:
        del REGISTRY["test-last-layer"]
    rows = read_rows(tmp_path / "out" / "branching.csv")
    names = {r["solver"] for r in rows}
    assert names == {*REGISTRY, "test-last-layer"}
    assert all(r["answer"] in ("sat", "unsat") for r in rows)
    md = (tmp_path / "out" / "branching.md").read_text()
    assert "| test-last-layer |" in md
    for png in ("branching_cactus.png", "branching_nodes.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_input_heuristics_skip_high_dimensional_inputs() -> None:
    inst = load(select(REPO / "examples", ["mnist_fc/prop_0_0.03"])[0])
    out = compare_branching.heuristic_runner("smear")(inst, 5.0)
    assert out.answer == "n/a"


def test_unknown_heuristic_is_an_error(tmp_path: Path) -> None:
    args = compare_branching.parse_args(["--out-dir", str(tmp_path), "--heuristics", "nope"])
    assert compare_branching.run(args, []) == 2
