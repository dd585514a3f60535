"""Tests of scripts/compare_solvers.py and its harness (scripts/harness/)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import compare_solvers  # noqa: E402
from harness import solvers  # noqa: E402
from harness.instances import load, select, write_tiny_suite  # noqa: E402
from harness.report import cactus_plot, summary_table  # noqa: E402
from harness.results import disagreements, ratios, read_rows  # noqa: E402
from harness.solvers import EXTRA_RUNNERS, BoundsCache, Outcome  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny suite: prop_0 is sat, prop_1 is unsat (margin about 0.006)."""
    return write_tiny_suite(tmp_path_factory.mktemp("tiny") / "suite")


def _wrong_answer(cache: BoundsCache) -> solvers.Runner:
    """A planted buggy solver: it flips bnbver's answer (and gives no counterexample)."""

    def run(inst: solvers.LoadedInstance, timeout: float) -> Outcome:
        truth = solvers.run_bnbver(inst, timeout).answer
        return Outcome({"sat": "unsat", "unsat": "sat"}.get(truth, truth), 0.01)

    return run


def test_planted_disagreement_is_flagged_and_fails(suite: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    EXTRA_RUNNERS["fake-wrong"] = _wrong_answer
    try:
        code = compare_solvers.main([str(suite), "--solvers", "bnbver,fake-wrong",
                                     "--timeout", "10", "--out-dir", str(tmp_path)])
    finally:
        del EXTRA_RUNNERS["fake-wrong"]
    err = capsys.readouterr().err
    assert code == 1
    assert "DISAGREEMENT on suite/tiny/prop_0" in err
    assert "DISAGREEMENT on suite/tiny/prop_1" in err
    assert "BADCEX" in err  # its "sat" came without a valid counterexample
    rows = read_rows(tmp_path / "solvers.csv")
    assert set(disagreements(rows)) == {"suite/tiny/prop_0", "suite/tiny/prop_1"}


def test_agreeing_solvers_pass_and_resume_without_rerunning(
        suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(suite), "--solvers", "bnbver,highs-bigm,scip-bigm", "--timeout", "10",
            "--out-dir", str(tmp_path), "--tag", "t"]
    assert compare_solvers.main(argv) == 0
    rows = read_rows(tmp_path / "t.csv")
    answers = {(r["instance"], r["solver"]): r["answer"] for r in rows}
    assert answers[("suite/tiny/prop_0", "bnbver")] == "sat"
    assert answers[("suite/tiny/prop_1", "highs-bigm")] == "unsat"
    assert compare_solvers.main(argv) == 0  # resumed: nothing left to run
    assert len(read_rows(tmp_path / "t.csv")) == len(rows)
    md = (tmp_path / "t.md").read_text()
    assert "median ratio bnbver/solver" in md
    assert (tmp_path / "t_cactus.png").read_bytes()[:8] == PNG_MAGIC
    if solvers.missing_package("scip-bigm"):
        assert "scip-bigm skipped" in capsys.readouterr().err


def test_milp_runner_reports_gap_at_timeout(suite: Path) -> None:
    inst = load(select(suite)[1])
    out = solvers.make_runner("highs-extended", BoundsCache())(inst, 1e-4)
    assert out.answer == "timeout"
    assert out.lower_bound <= 0.0
    assert "bounds_s" in out.extra


def test_same_bounds_as_the_bab_root(suite: Path) -> None:
    inst = load(select(suite)[1])
    (lo, up), root_lb = solvers.root_bounds(inst.network, inst.props[0])
    assert [a.shape for a in lo] == [(n,) for n in inst.network.relu_sizes]
    assert all(np.all(a <= b) for a, b in zip(lo, up, strict=True))
    assert root_lb <= 0.0  # prop_1 is not proved at the root: the solvers must branch


def test_cactus_plot_has_one_line_per_solver(tmp_path: Path) -> None:
    rows = [{"instance": f"i{k}", "solver": s, "answer": a, "seconds": str(t)}
            for k, (s, a, t) in enumerate([("bnbver", "unsat", 0.1), ("bnbver", "sat", 0.2),
                                           ("highs-bigm", "unsat", 3.0),
                                           ("highs-bigm", "timeout", 60.0),
                                           ("scip-bigm", "timeout", 60.0)])]
    assert cactus_plot(rows, tmp_path / "c.png") == 3
    data = (tmp_path / "c.png").read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_ratios_and_medians_on_instances_both_decided() -> None:
    def row(inst: str, solver: str, answer: str, t: float, nodes: int = 0) -> dict[str, str]:
        return {"instance": inst, "solver": solver, "answer": answer, "seconds": str(t),
                "expected": "", "check": "ok", "nodes": str(nodes)}

    rows = [row("a", "bnbver", "unsat", 1.0, 40), row("a", "highs-bigm", "unsat", 10.0),
            row("b", "bnbver", "unsat", 2.0, 1), row("b", "highs-bigm", "unsat", 4.0),
            row("c", "bnbver", "unsat", 1.0), row("c", "highs-bigm", "timeout", 60.0)]
    assert ratios(rows, "bnbver", "highs-bigm") == {"a": 0.1, "b": 0.5}
    line = next(ln for ln in summary_table(rows, "bnbver") if ln.startswith("| highs-bigm"))
    # both decided a and b (median ratio 0.3); the root bounds alone proved b (ratio 0.1)
    assert line.split("|")[-5:-1] == [" 2 ", " 0.3 ", " 1 ", " 0.1 "]


class _FakeGurobiError(Exception):
    def __init__(self, errno: int, msg: str) -> None:
        super().__init__(msg)
        self.errno = errno


def test_gurobi_size_limit_reports_too_large(suite: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("gurobipy")
    fake.GurobiError = _FakeGurobiError  # type: ignore[attr-defined]

    def read(*_: object) -> None:
        raise _FakeGurobiError(10010, "Model too large for size-limited license")

    fake.read = read  # type: ignore[attr-defined]
    fake.Env = lambda **_: types.SimpleNamespace(setParam=lambda *a: None,  # type: ignore
                                                 start=lambda: None)
    fake.GRB = types.SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gurobipy", fake)
    inst = load(select(suite)[1])
    out = solvers.milp_runner("gurobi", "bigm", BoundsCache())(inst, 5.0)
    assert out.answer == "too large"


def test_unknown_solver_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown solver"):
        solvers.make_runner("cplex-bigm", BoundsCache())
    with pytest.raises(Exception, match="formulation"):
        solvers.make_runner("highs-nonsense", BoundsCache())


def test_shards_split_the_instances_without_overlap(suite: Path) -> None:
    full = compare_solvers.parse_args([str(suite)])
    shards = [compare_solvers.instances(compare_solvers.parse_args([str(suite), "--shard", s]))
              for s in ("0/2", "1/2")]
    names = [[r.name for r in refs] for refs in shards]
    assert sorted(names[0] + names[1]) == sorted(r.name for r in compare_solvers.instances(full))
    assert not set(names[0]) & set(names[1])
    with pytest.raises(SystemExit):
        compare_solvers.parse_args([str(suite), "--shard", "2/2"])


# ------------------------------------------------------------------------------ issue 20
@pytest.mark.parametrize("source", ["auto", "alpha", "crown", "lp"])
def test_issue_20_export_milp_writes_the_model_the_comparison_solved(
        suite: Path, tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``export-milp --bounds X --unsafe-slack 1e-6`` = the model of ``--milp-bounds X``."""
    from bnbver.cli import main as cli
    from bnbver.milp import MILP_UNSAT_SLACK, build_milp, export_milp

    ref = select(suite)[1]
    inst = load(ref)
    (bounds,), _ = BoundsCache(source).get(inst, 60.0)
    model = build_milp(inst.network, inst.props[0], bounds, None, "partition:2", disjunct=0,
                       unsafe_slack=MILP_UNSAT_SLACK)
    export_milp(model, tmp_path / "solved.mps")
    assert cli(["export-milp", str(ref.onnx), str(ref.vnnlib), "--bounds", source,
                "--formulation", "partition:2", "--unsafe-slack", str(MILP_UNSAT_SLACK),
                "--out", str(tmp_path / "exported.mps")]) == 0
    assert f"wrote {tmp_path / 'exported.mps'}" in capsys.readouterr().out

    def body(name: str) -> list[str]:
        lines = (tmp_path / name).read_text().splitlines()
        return [ln for ln in lines if not ln.startswith(("*", "NAME"))]

    assert body("exported.mps") == body("solved.mps")
    head = (tmp_path / "exported.mps").read_text().splitlines()[:8]
    assert f"* bounds: {source} (bnbver.bab.bound_sources" in "\n".join(head)


def test_issue_20_old_milp_bounds_name_is_alpha() -> None:
    assert BoundsCache("relu").source == "alpha"
    assert compare_solvers.parse_args(["x", "--milp-bounds", "crown"]).milp_bounds == "crown"
    with pytest.raises(SystemExit):
        compare_solvers.parse_args(["x", "--milp-bounds", "beta"])


def test_issue_20_node_counts_beside_the_milp_solvers() -> None:
    from harness.report import node_table

    def row(inst: str, solver: str, answer: str, t: float, nodes: int,
            gap: str = "") -> dict[str, str]:
        return {"instance": inst, "solver": solver, "answer": answer, "seconds": str(t),
                "nodes": str(nodes), "gap": gap}

    rows = [row("a", "bnbver", "unsat", 1.0, 100), row("a", "highs-bigm", "unsat", 10.0, 50),
            row("b", "bnbver", "unsat", 2.0, 400), row("b", "highs-bigm", "unsat", 4.0, 400),
            row("c", "bnbver", "sat", 0.1, 0), row("c", "highs-bigm", "sat", 0.5, 0),
            row("d", "bnbver", "unsat", 1.0, 300), row("d", "highs-bigm", "timeout", 60, 900),
            row("e", "bnbver", "timeout", 60, 9000, "0.5"),
            row("e", "highs-bigm", "timeout", 60, 300, "20")]
    lines = node_table(rows, "bnbver")
    assert "nodes on the 3 all decided" in lines[0]
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
             for ln in lines[2:]}
    # decided, nodes there, median there, both decided, median node ratio, ms per node
    assert cells["bnbver"][:4] == ["4", "500", "100", ""]
    assert cells["highs-bigm"][:5] == ["3", "450", "50", "3", "0.75"]  # ratios 0.5 and 1
    assert cells["bnbver"][5] == f"{1e3 * 64 / 9800:.3g}"  # (1 + 2 + 1 + 60) s / nodes
    assert cells["highs-bigm"][5] == f"{1e3 * 134 / 1650:.3g}"
    assert "gap left on the 1 none decided" in lines[0]
    assert (cells["bnbver"][6], cells["highs-bigm"][6]) == ("0.5", "20")


def test_issue_20_smoke_names_no_deleted_folder(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_solvers.main(["--smoke", "--solvers", "bnbver,highs-bigm"]) == 0
    out = capsys.readouterr().out
    assert "wrote" not in out and "bnbver-smoke-" not in out
    assert "(in a temp dir, now removed)" in out
    kept = tmp_path / "kept"
    assert compare_solvers.main(["--smoke", "--solvers", "bnbver", "--out-dir", str(kept)]) == 0
    assert f"wrote {kept / 'solvers.csv'}" in capsys.readouterr().out
    assert (kept / "solvers_cactus.png").stat().st_size > 1000


def test_issue_20_bad_solver_in_smoke_is_one_error_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_solvers.main(["--smoke", "--solvers", "bnbver,cplex-bigm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --solvers: unknown solver") and "Traceback" not in err


def test_issue_20_store_header_written_once_and_repeated_headers_skipped(
        tmp_path: Path) -> None:
    from harness.results import ResultStore

    path = tmp_path / "r.csv"
    a, b = ResultStore(path), ResultStore(path)  # two shards opening together
    a.append({"instance": "i", "solver": "s", "answer": "sat", "timeout": "1"})
    b.append({"instance": "j", "solver": "s", "answer": "unsat", "timeout": "1"})
    a.close()
    b.close()
    assert path.read_text().count("instance,solver") == 1
    with path.open("a") as f:  # a header repeated by the old race
        f.write(path.read_text().splitlines()[0] + "\n")
    assert [r["instance"] for r in read_rows(path)] == ["i", "j"]
