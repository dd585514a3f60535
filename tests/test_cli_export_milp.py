"""Tests of ``bnbver export-milp``: files per disjunct, --solve answers, input errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnbver.cli import main
from bnbver.io.onnx_export import save_onnx
from bnbver.lp.highs import solve_file
from bnbver.lp.model import LpStatus
from tests.conftest import random_relu_net

REPO = Path(__file__).resolve().parents[1]


def _instance(tmp_path: Path, rhs: float) -> tuple[Path, Path]:
    """A 2-6-6-2 network and a property with two disjuncts: Y_0 <= Y_1 - rhs or Y_0 >= 50."""
    net = random_relu_net(np.random.default_rng(0), [2, 6, 6, 2])
    onnx_path = tmp_path / "net.onnx"
    save_onnx(net, onnx_path, dtype="float64")
    text = "\n".join([
        "(declare-const X_0 Real)", "(declare-const X_1 Real)",
        "(declare-const Y_0 Real)", "(declare-const Y_1 Real)",
        "(assert (>= X_0 -1.0))", "(assert (<= X_0 1.0))",
        "(assert (>= X_1 -1.0))", "(assert (<= X_1 1.0))",
        f"(assert (or (and (<= (+ Y_0 {rhs}) Y_1)) (and (>= Y_0 50.0))))", ""])
    prop = tmp_path / "prop.vnnlib"
    prop.write_text(text)
    return onnx_path, prop


def test_export_writes_one_file_per_disjunct(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    out = tmp_path / "m.mps"
    assert main(["export-milp", str(net), str(prop), "--formulation", "partition:2",
                 "--tighten", "lp", "--out", str(out)]) == 0
    files = sorted(p.name for p in tmp_path.glob("m*.mps"))
    assert files == ["m.d0.mps", "m.d1.mps"]
    for f in files:  # Y_1 - Y_0 >= 100 and Y_0 >= 50 are unreachable: both infeasible
        assert solve_file(tmp_path / f).status is LpStatus.INFEASIBLE


def test_solve_prints_unsat_and_sat(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    assert main(["export-milp", str(net), str(prop), "--solve", "--cuts", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("result: unsat")
    net, prop = _instance(tmp_path, -100.0)
    assert main(["export-milp", str(net), str(prop), "--solve", "--formulation", "extended",
                 "--node-splits", ""]) == 0
    out = capsys.readouterr().out
    assert "counterexample:" in out and out.strip().endswith("result: sat")


@pytest.mark.parametrize(("args", "what"), [
    (["--solve", "--node-splits", "0:99:+"], "--node-splits"),
    (["--solve", "--node-splits", "0:1:x"], "--node-splits"),
    (["--formulation", "magic"], "--formulation"),
    (["--out", "m.txt"], "m.txt"),
    ([], "--out"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, args, what) -> None:
    net, prop = _instance(tmp_path, 1.0)
    assert main(["export-milp", str(net), str(prop), *args]) == 2
    assert what in capsys.readouterr().err


def test_stdout_is_clean_in_a_subprocess(tmp_path) -> None:
    net, prop = _instance(tmp_path, 100.0)
    out = subprocess.run([sys.executable, "-m", "bnbver.cli", "export-milp", str(net),
                          str(prop), "--solve"], capture_output=True, text=True, cwd=REPO,
                         check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("disjunct 0:") and lines[-1] == "result: unsat"


# ------------------------------------------------------------------------------ issue 20
def test_issue_20_prints_every_file_written(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    out = tmp_path / "m.lp"
    assert main(["export-milp", str(net), str(prop), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[1] for ln in lines] == [str(tmp_path / "m.d0.lp"),
                                               str(tmp_path / "m.d1.lp")]
    assert all(ln.startswith("wrote ") and "binaries" in ln for ln in lines)


def test_issue_20_help_documents_the_files(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["export-milp", "--help"])
    text = capsys.readouterr().out
    for phrase in ("m.d0.mps, m.d1.mps", "--disjunction", "binary", "equal share",
                   "undecided disjuncts", "--bounds"):
        assert phrase in text, phrase


@pytest.mark.parametrize("rhs", [100.0, -0.3, -100.0])  # -0.3: part of the box is unsafe
@pytest.mark.parametrize("formulation", ["bigm", "extended"])
def test_issue_20_one_file_agrees_with_the_per_disjunct_files(tmp_path, capsys, rhs,
                                                              formulation) -> None:
    """The --disjunction binary file is feasible exactly when one per-disjunct file is, and
    its optimum is their best one (all solved from the files by HiGHS)."""
    net, prop = _instance(tmp_path, rhs)
    common = ["export-milp", str(net), str(prop), "--formulation", formulation,
              "--bounds", "lp"]
    assert main([*common, "--out", str(tmp_path / "m.mps")]) == 0
    assert main([*common, "--out", str(tmp_path / "one.mps"), "--disjunction", "binary"]) == 0
    assert "wrote" in capsys.readouterr().out
    per = [solve_file(tmp_path / f"m.d{k}.mps") for k in (0, 1)]
    one = solve_file(tmp_path / "one.mps")
    feasible = [s.objective for s in per if s.status is LpStatus.OPTIMAL]
    assert all(s.status in (LpStatus.OPTIMAL, LpStatus.INFEASIBLE) for s in (*per, one))
    assert (one.status is LpStatus.OPTIMAL) == bool(feasible)
    if feasible:
        assert one.objective == pytest.approx(min(feasible), abs=1e-6)
    assert (rhs == 100.0) == (not feasible)  # both kinds of case are covered


def test_issue_20_bounds_source_in_the_file(tmp_path, capsys) -> None:
    net, prop = _instance(tmp_path, 100.0)
    assert main(["export-milp", str(net), str(prop), "--bounds", "crown", "--disjunction",
                 "binary", "--out", str(tmp_path / "c.mps")]) == 0
    text = (tmp_path / "c.mps").read_text().splitlines()
    assert any(ln.startswith("* bounds: crown") for ln in text[:10])
    assert any(ln.startswith("* network: ") for ln in text[:10])
    assert "NAME        bnbver_crown_bigm" in text
    assert solve_file(tmp_path / "c.mps").status is LpStatus.INFEASIBLE


class _Clock:
    """A fake monotonic clock for the time-share test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_issue_20_each_disjunct_gets_its_share_of_the_time_left(tmp_path, capsys,
                                                                monkeypatch) -> None:
    """Every disjunct's solve may use all it gets: the last one still gets 1/K of the time
    (it used to get what the first ones left: 0.02 s), and the undecided ones are named."""
    import types

    from bnbver.commands import export_milp as cmd
    from bnbver.lp.model import LpSolution

    clock, limits = _Clock(), []

    def fake_solve(model, time_limit, threads=1, first_solution=False):
        limits.append(time_limit)
        clock.now += time_limit  # uses all of it and times out
        return LpSolution(LpStatus.TIME_LIMIT, nodes=7, seconds=time_limit)

    net, prop = _instance(tmp_path, 100.0)
    monkeypatch.setattr(cmd, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(cmd, "solve_milp", fake_solve)
    assert main(["export-milp", str(net), str(prop), "--solve", "--time-limit", "30"]) == 0
    assert limits == pytest.approx([15.0, 15.0])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2:] == ["undecided disjuncts: 0, 1", "result: unknown"]


def test_issue_20_time_a_disjunct_leaves_goes_to_the_next(tmp_path, capsys,
                                                          monkeypatch) -> None:
    import types

    from bnbver.commands import export_milp as cmd
    from bnbver.lp.model import LpSolution

    clock, limits = _Clock(), []

    def fake_solve(model, time_limit, threads=1, first_solution=False):
        limits.append(time_limit)
        clock.now += 1.0  # decides in 1 s
        return LpSolution(LpStatus.INFEASIBLE, bound=float("inf"), seconds=1.0)

    net, prop = _instance(tmp_path, 100.0)
    monkeypatch.setattr(cmd, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(cmd, "solve_milp", fake_solve)
    assert main(["export-milp", str(net), str(prop), "--solve", "--time-limit", "30"]) == 0
    assert limits == pytest.approx([15.0, 29.0])
    assert capsys.readouterr().out.strip().endswith("result: unsat")


def test_issue_20_one_file_solve(tmp_path, capsys) -> None:
    for rhs, answer in ((100.0, "unsat"), (-100.0, "sat")):
        net, prop = _instance(tmp_path, rhs)
        assert main(["export-milp", str(net), str(prop), "--solve", "--disjunction",
                     "binary"]) == 0
        out = capsys.readouterr().out
        assert out.strip().endswith(f"result: {answer}")
        assert out.startswith("disjunction: ")
        if answer == "sat":
            assert "selected: disjunct 0" in out and "counterexample:" in out


@pytest.mark.parametrize("formulation", ["bigm", "extended", "partition:2"])
def test_issue_19_export_and_solve_a_residual_network(tmp_path, capsys, formulation) -> None:
    """The MILP of a DAG (identity shortcut, then a projection) decides it like the BaB."""
    from tests.graph_cases import residual_net

    dag = residual_net(np.random.default_rng(3), n_in=2, width=3, blocks=1,
                       shortcut="projection")
    net = tmp_path / "dag.onnx"
    save_onnx(dag, net, dtype="float64")
    for rhs, answer in ((100.0, "unsat"), (-100.0, "sat")):
        _, prop = _instance(tmp_path, rhs)
        assert main(["export-milp", str(net), str(prop), "--solve", "--formulation",
                     formulation, "--bounds", "crown"]) == 0
        assert capsys.readouterr().out.strip().endswith(f"result: {answer}")
