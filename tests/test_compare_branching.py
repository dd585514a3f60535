"""Tests of scripts/compare_branching.py: plug-ins join, kinds apart, informative selection."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import compare_branching  # noqa: E402
from harness.errors import ScriptError  # noqa: E402
from harness.instances import InstanceRef, load, select, write_tiny_suite  # noqa: E402
from harness.results import read_rows  # noqa: E402
from harness.selection import (  # noqa: E402
    parse_selection,
    root_gap,
    select_band,
    select_root_gap,
)

from bnbver.bab.branching import REGISTRY, BranchContext, register  # noqa: E402


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[InstanceRef]:
    """The tiny suite: prop_0 is sat (the falsifier finds it), prop_1 unsat after branching."""
    return select(write_tiny_suite(tmp_path_factory.mktemp("tiny") / "suite"))


@pytest.fixture
def clean_registry():
    saved = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)


def _last_layer_first(ctx: BranchContext) -> list[torch.Tensor]:
    """Score later layers higher (a test heuristic)."""
    return [torch.full_like(lo, float(k + 1)) for k, lo in enumerate(ctx.pre_lower)]


def test_a_newly_registered_heuristic_joins_the_study(tmp_path: Path, suite, clean_registry
                                                      ) -> None:
    """Registered at run time, it joins the ReLU study; kinds get separate tables and plots."""
    register("test-last-layer", kind="relu")(_last_layer_first)
    args = compare_branching.parse_args(["--out-dir", str(tmp_path / "out"), "--timeout",
                                         "10", "--select", "spread", "--heuristics",
                                         "babsr,test-last-layer,smear"])
    assert compare_branching.run(args, {"relu": suite, "input": suite}) == 0
    rows = read_rows(tmp_path / "out" / "branching.csv")
    assert {r["solver"] for r in rows} == {"babsr", "test-last-layer", "gradient-smear",
                                           "smear"}  # the references join
    assert all(r["answer"] in ("sat", "unsat") for r in rows)
    md = (tmp_path / "out" / "branching.md").read_text()
    relu, inp = md.split("## Input heuristics")
    assert "| test-last-layer |" in relu and "| smear |" not in relu
    assert "| smear |" in inp and "| test-last-layer |" not in inp
    assert relu.index("### Nodes") < relu.index("### Time")  # nodes are the headline
    assert "Selection: spread" in md
    for png in ("relu_nodes", "relu_cactus", "input_nodes", "input_cactus"):
        assert (tmp_path / "out" / f"branching_{png}.png").stat().st_size > 1000


def test_issue_20_import_a_users_heuristic_file(tmp_path: Path, suite, clean_registry,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "my_heuristics.py"
    plugin.write_text("import torch\nfrom bnbver.bab.branching import register\n\n"
                      "@register('test-imported', kind='relu')\n"
                      "def score(ctx):\n"
                      "    return [torch.rand(lo.shape, dtype=torch.float64)"
                      " for lo in ctx.pre_lower]\n")
    args = compare_branching.parse_args(["--out-dir", str(tmp_path / "out"), "--kind", "relu",
                                         "--import", str(plugin), "--heuristics",
                                         "test-imported", "--timeout", "10"])
    assert compare_branching.run(args, {"relu": suite}) == 0
    solvers = {r["solver"] for r in read_rows(tmp_path / "out" / "branching.csv")}
    assert solvers == {"babsr", "test-imported"}
    assert "wrote" in capsys.readouterr().out


def test_input_heuristics_skip_high_dimensional_inputs() -> None:
    inst = load(select(REPO / "examples", ["mnist_fc/prop_0_0.03"])[0])
    out = compare_branching.heuristic_runner("smear")(inst, 5.0)
    assert out.answer == "n/a"


def test_unknown_heuristic_is_an_error(tmp_path: Path) -> None:
    args = compare_branching.parse_args(["--out-dir", str(tmp_path), "--heuristics", "nope"])
    with pytest.raises(ScriptError, match="unknown nope"):
        compare_branching.run(args, {})
    assert not (tmp_path / "branching.csv").exists()


def test_issue_20_unknown_heuristic_in_smoke_is_one_error_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    """It printed the error, then a FileNotFoundError traceback for the missing report."""
    assert compare_branching.main(["--heuristics", "babsr,unknown", "--smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --heuristics: unknown unknown")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_issue_20_smoke_names_no_deleted_folder(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    argv = ["--smoke", "--heuristics", "babsr,widest-input"]
    assert compare_branching.main(argv) == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and "bnbver-smoke-" not in out
    assert "in a temp dir, now removed" in out
    assert compare_branching.main([*argv, "--out-dir", str(tmp_path / "kept")]) == 0
    assert f"wrote {tmp_path / 'kept' / 'branching.csv'}" in capsys.readouterr().out
    assert (tmp_path / "kept" / "branching_relu_nodes.png").is_file()


# ------------------------------------------------------------------------------ selection
def test_parse_selection() -> None:
    assert parse_selection("root-gap").kind == "root-gap"
    band = parse_selection("band:1:30")
    assert (band.kind, band.lo, band.hi) == ("band", 1.0, 30.0)
    for bad in ("band:3", "band:5:1", "band:a:b", "gaps"):
        with pytest.raises(ScriptError, match="--select"):
            parse_selection(bad)


def test_issue_20_root_gap_drops_instances_decided_before_branching(suite) -> None:
    """prop_0 falls to the falsifier, prop_1 needs branching (gap > 0)."""
    gaps = [root_gap(load(ref), "relu") for ref in suite]
    assert math.isnan(gaps[0][0]) and gaps[0][1] == "sat by the falsifier"
    assert gaps[1][0] > 0 and gaps[1][1] == ""


def _refs(names: list[str]) -> list[InstanceRef]:
    return [InstanceRef(n, Path("n.onnx"), Path("p.vnnlib")) for n in names]


def test_issue_20_root_gap_keeps_the_smallest_gaps_per_suite() -> None:
    pool = _refs(["a/n/p0", "a/n/p1", "a/n/p2", "a/n/p3", "b/n/p0", "b/n/p1"])
    gaps = {"a/n/p0": (math.nan, "unsat at the root"), "a/n/p1": (5.0, ""),
            "a/n/p2": (0.5, ""), "a/n/p3": (2.0, ""), "b/n/p0": (math.nan, "sat"),
            "b/n/p1": (9.0, "")}
    chosen = select_root_gap(pool, "relu", 2, measure=lambda inst, kind: gaps[inst],
                             loader=lambda ref: ref.name)
    assert [r.name for r in chosen.refs] == ["a/n/p2", "a/n/p3", "b/n/p1"]
    assert chosen.notes["a/n/p2"] == "root gap 0.5" and chosen.candidates == 6


def test_issue_20_band_keeps_what_the_reference_decides_in_the_band() -> None:
    pool = _refs([f"s/n/p{i}" for i in range(7)])

    def row(answer: str, seconds: float, nodes: int) -> dict[str, str]:
        return {"answer": answer, "seconds": str(seconds), "nodes": str(nodes)}

    rows = {"s/n/p0": row("unsat", 0.1, 1),      # the root bounds: too easy
            "s/n/p1": row("sat", 0.2, 0),        # the falsifier: too easy
            "s/n/p2": row("unsat", 3.0, 40),
            "s/n/p3": row("timeout", 60.0, 9000),  # hopeless for the reference
            "s/n/p4": row("sat", 12.0, 700),
            "s/n/p5": row("unsat", 29.0, 5000),
            "s/n/p6": row("unsat", 45.0, 8000)}  # beyond the band
    spec = parse_selection("band:1:30")
    chosen = select_band(pool, rows, spec, None)
    assert [r.name for r in chosen.refs] == ["s/n/p2", "s/n/p4", "s/n/p5"]
    assert chosen.notes["s/n/p4"] == "reference 12 s, 700 nodes"
    assert [r.name for r in select_band(pool, rows, spec, 2).refs] == ["s/n/p2", "s/n/p5"]


def test_issue_20_band_selection_runs_the_reference_once(tmp_path: Path, suite,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    """The calibration runs are the reference's rows of the study: not run twice, and the
    report only lists the selected instances."""
    args = compare_branching.parse_args(["--out-dir", str(tmp_path), "--kind", "input",
                                         "--heuristics", "smear", "--select", "band:0:30",
                                         "--timeout", "10"])
    assert compare_branching.run(args, {"input": suite}) == 0
    rows = read_rows(tmp_path / "branching.csv")
    ref_rows = [r for r in rows if r["solver"] == "gradient-smear"]
    assert len(ref_rows) == 2  # both candidates, once
    assert {r["instance"] for r in rows if r["solver"] == "smear"} == {"suite/tiny/prop_1"}
    md = (tmp_path / "branching.md").read_text()
    assert "suite/tiny/prop_0" not in md and "| suite/tiny/prop_1 | reference" in md
    assert "band:0:30: instances that gradient-smear decides" in md


def test_issue_20_shards_split_the_selected_instances(tmp_path: Path, suite) -> None:
    base = ["--out-dir", str(tmp_path), "--kind", "input", "--heuristics", "smear",
            "--select", "spread", "--timeout", "10"]
    for shard in ("0/2", "1/2"):
        args = compare_branching.parse_args([*base, "--shard", shard])
        assert compare_branching.run(args, {"input": suite}) == 0
    rows = read_rows(tmp_path / "branching.csv")
    assert sorted((r["instance"], r["solver"]) for r in rows) == sorted(
        (ref.name, h) for ref in suite for h in ("gradient-smear", "smear"))
    band = compare_branching.parse_args(["--out-dir", str(tmp_path), "--kind", "input",
                                         "--select", "band:0:30", "--timeout", "10",
                                         "--tag", "b", "--shard", "0/2"])
    with pytest.raises(ScriptError, match="calibrate first"):
        compare_branching.run(band, {"input": suite})
