"""Tests of scripts/plot_tree.py and harness.tree (recorded search trees)."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import plot_tree  # noqa: E402
from harness.instances import load, select, write_tiny_suite  # noqa: E402
from harness.tree import (  # noqa: E402
    bound_curve,
    certificate_mismatches,
    depth_profile,
    load_tree,
    summarize,
)
from harness.tree import plot_tree as draw  # noqa: E402

from bnbver.driver import verify  # noqa: E402
from bnbver.result import Status  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A ReLU-split run on the tiny unsat instance, recorded; returns (record, result)."""
    tmp = tmp_path_factory.mktemp("tree")
    inst = load(select(write_tiny_suite(tmp / "suite"))[1])
    record = tmp / "tree.jsonl"
    result = verify(inst.network, list(inst.props), timeout=30, split="relu",
                    record=str(record))
    return record, result


def test_recorded_leaves_match_the_certificate(recorded: tuple[Path, object]) -> None:
    record, result = recorded
    assert result.status is Status.HOLDS
    nodes = load_tree(record)
    leaves = result.certificate.leaves
    assert len(leaves) > 1  # the run branched
    assert certificate_mismatches(nodes, leaves) == []
    assert sum(n.closed for n in nodes) == len(leaves)
    assert len(nodes) == result.stats.nodes


def test_a_planted_extra_leaf_is_detected(recorded: tuple[Path, object]) -> None:
    record, result = recorded
    nodes = load_tree(record)
    assert certificate_mismatches(nodes, result.certificate.leaves[1:]) != []


def test_summary_from_the_record_alone(recorded: tuple[Path, object],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    record, result = recorded
    assert plot_tree.main([str(record), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert summary["nodes"] == result.stats.nodes
    assert summary["max_depth"] == result.stats.max_depth
    assert summary["open_at_end"] == 0 and not summary["counterexample"]
    assert float(summary["final_global_lower_bound"]) == math.inf
    assert summary["branched"] + summary["closed"] == summary["nodes"]


def _reject(name: str) -> None:
    raise AssertionError(f"invalid JSON constant {name}")


def test_issue_20_json_summary_is_strict_json(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Infinity, -Infinity and NaN are not JSON: they print as "inf", "-inf" and null."""
    path = _write(tmp_path / "t.jsonl", [(0, -1, 0, -math.inf, "open", 0.1),
                                         (1, 0, 1, 2.0, "beta", 0.2),
                                         (2, 0, 1, 3.0, "beta", 0.2)])
    assert plot_tree.main([str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out, parse_constant=_reject)
    assert summary["root_bound"] == "-inf" and float(summary["root_bound"]) == -math.inf
    assert summary["final_global_lower_bound"] == "inf"
    assert summary["median_bound_gain"] is None  # nan: no finite gain


def test_plot_is_a_non_empty_png_with_the_expected_lines(recorded: tuple[Path, object],
                                                         tmp_path: Path) -> None:
    record, _ = recorded
    counts = draw(load_tree(record), tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert counts == {"bound_lines": 2, "depth_bars": 2}  # branched + closed


def _write(path: Path, rows: list[tuple[int, int, int, float, str, float]]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "parent": p, "depth": d, "split": None,
                                        "bound": b, "status": s, "time": t}) + "\n"
                            for i, p, d, b, s, t in rows) + '{"id": 9, "par')  # truncated
    return path


def test_hand_made_tree_curve_and_profile(tmp_path: Path) -> None:
    """Root (-3) -> children -1 (open) and 2 (closed); -1 -> two closed children: timeout-free.

    Global LB: -3 until both of the root's children are in, -1 until both of node 1's are,
    +inf at the end.
    """
    nodes = load_tree(_write(tmp_path / "t.jsonl", [
        (0, -1, 0, -3.0, "open", 0.1), (1, 0, 1, -1.0, "open", 0.2),
        (2, 0, 1, 2.0, "beta", 0.2), (3, 1, 2, 0.5, "beta", 0.3), (4, 1, 2, 1.0, "lp", 0.3)]))
    assert len(nodes) == 5  # the truncated line is ignored
    assert [b for _, b in bound_curve(nodes)] == [-3.0, -3.0, -1.0, -1.0, math.inf]
    assert nodes[3].bound_before == -1.0 and math.isnan(nodes[0].bound_before)
    assert depth_profile(nodes)["branched"] == [1, 1, 0]
    assert depth_profile(nodes)["closed"] == [0, 1, 2]
    s = summarize(nodes)
    assert s["closed_by"] == {"beta": 2, "lp": 1} and s["open_at_end"] == 0


def test_open_nodes_at_a_timeout_keep_the_bound(tmp_path: Path) -> None:
    nodes = load_tree(_write(tmp_path / "t.jsonl", [
        (0, -1, 0, -3.0, "open", 0.1), (1, 0, 1, -1.0, "open", 0.2),
        (2, 0, 1, -2.0, "open", 0.2)]))
    s = summarize(nodes)
    assert s["open_at_end"] == 2 and s["final_global_lower_bound"] == -2.0


def test_missing_record_is_an_error(tmp_path: Path) -> None:
    assert plot_tree.main([str(tmp_path / "none.jsonl")]) == 2


def test_a_file_that_is_not_a_record_is_one_error_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.txt").write_text("root:x:0:0\nsecond line\n")
    assert plot_tree.main([str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_issue_20_no_upward_spikes_between_siblings(tmp_path: Path) -> None:
    """A round pops nodes 1 (-2) and 2 (-1.5) and records their children one by one.

    Root (-3) -> 1 (-2), 2 (-1.5); then 1 -> 3 (closed), 4 (-1.9); 2 -> 5 (-1.2), 6 (1, closed).
    Dropping node 1 at its first child (3) made the curve jump to -1.5 and fall back to -1.9
    at its second (4): a spike no search state had. Node 1 now stands in until 4 is in.
    """
    nodes = load_tree(_write(tmp_path / "t.jsonl", [
        (0, -1, 0, -3.0, "open", 0.1), (1, 0, 1, -2.0, "open", 0.2),
        (2, 0, 1, -1.5, "open", 0.2), (3, 1, 2, 0.5, "beta", 0.3), (4, 1, 2, -1.9, "open", 0.3),
        (5, 2, 2, -1.2, "open", 0.3), (6, 2, 2, 1.0, "beta", 0.3)]))
    curve = [b for _, b in bound_curve(nodes)]
    assert curve == [-3.0, -3.0, -2.0, -2.0, -1.9, -1.9, -1.9]
    assert all(b >= a for a, b in itertools.pairwise(curve))


def test_issue_20_real_record_curve_never_falls(recorded: tuple[Path, object]) -> None:
    """Children are bounded at least as tight as their parents, so the global bound of a
    correctly drawn curve never goes down (the old curve did, after every spike)."""
    record, _ = recorded
    curve = [b for _, b in bound_curve(load_tree(record))]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(curve))
    assert curve[-1] == math.inf


def test_issue_20_a_stall_milp_closing_an_open_node_removes_it(tmp_path: Path) -> None:
    """A node recorded open and later closed by a stall MILP is one node, closed at that time.

    Root (-3) -> 1 (-2, open), 2 (-1, open); at 0.5 s a MILP closes 1 (bound +inf).
    """
    nodes = load_tree(_write(tmp_path / "t.jsonl", [
        (0, -1, 0, -3.0, "open", 0.1), (1, 0, 1, -2.0, "open", 0.2),
        (2, 0, 1, -1.0, "open", 0.2), (1, 0, 1, math.inf, "milp", 0.5)]))
    assert len(nodes) == 3
    assert nodes[1].status == "milp" and nodes[1].closed and nodes[1].closed_at == 0.5
    assert bound_curve(nodes)[-1] == (0.5, -1.0)
    s = summarize(nodes)
    assert s["closed_by"] == {"milp": 1} and s["open_at_end"] == 1


def test_input_split_record_names_the_split_dimension(tmp_path: Path,
                                                      examples_dir: Path) -> None:
    """Siblings of an input-split run record the same dimension, one lower and one upper
    half, although clipping may also have moved other sides of their boxes."""
    from bnbver.io.loaders import load_network, load_properties

    net = load_network(examples_dir / "acasxu/ACASXU_run2a_1_1_batch_2000.onnx")
    props = load_properties(examples_dir / "acasxu/prop_1.vnnlib", net)
    record = tmp_path / "tree.jsonl"
    result = verify(net, props, timeout=60, record=str(record))
    assert result.status is Status.HOLDS
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    children: dict[int, list[list[object]]] = {}
    for row in rows:
        if row["parent"] >= 0:
            children.setdefault(row["parent"], []).append(row["split"])
    assert children, "the run branched"
    for splits in children.values():
        assert len(splits) == 2
        assert {s[0] for s in splits} == {"input"} and splits[0][1] == splits[1][1]
        assert sorted(str(s[2]) for s in splits) == ["lower", "upper"]


def test_recorded_decision_is_the_stored_one_not_the_first_changed_side() -> None:
    """A child split on dim 3 whose box clipping also shrank dim 0 is recorded as dim 3."""
    import numpy as np

    from bnbver.bab.node import Node
    from bnbver.bab.record import branching_decision
    from bnbver.splits import SplitSet

    parent = Node(np.zeros(5), np.ones(5), SplitSet(), -1.0, 0)
    upper = np.ones(5)
    upper[0], upper[3] = 0.9, 0.5  # dim 0 clipped, dim 3 halved
    child = Node(np.zeros(5), upper, SplitSet(), -0.5, 1, decision=["input", 3, "lower"])
    assert branching_decision(child, parent) == ["input", 3, "lower"]
