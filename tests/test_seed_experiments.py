"""scripts/seed_experiments.py: the plan filters and the per-image table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import seed_experiments as se  # noqa: E402


def _args(nets: str = "", methods: str = "", images: int = 20,
          tighten: str = "") -> argparse.Namespace:
    return argparse.Namespace(nets=nets, methods=methods, images=images, tighten=tighten)


def test_plan_filters_keep_only_the_named_nets_and_methods() -> None:
    full = se.selected_plan(Path("data"), _args())
    assert len(full) == len(se.PLAN)
    plan = se.selected_plan(Path("data"), _args("mnist_fc8x3", "bab,milp:partition:2"))
    assert [(p.stem, n) for p, n, _ in plan] == [("mnist_fc8x3", 20)]
    assert plan[0][2] == [("bab", "none"), ("bab", "lp"), ("milp:partition:2", "none")]
    assert se.selected_plan(Path("data"), _args(methods="milp:extended"))[0][2] == [
        ("milp:extended", "none")]
    assert se.selected_plan(Path("data"), _args(nets="no-such-net")) == []
    lp_bab = se.selected_plan(Path("data"), _args("mnist_fc20x3", "bab", tighten="lp"))
    assert [(p.stem, runs) for p, _, runs in lp_bab] == [("mnist_fc20x3", [("bab", "lp")])]


def test_per_image_table_marks_unsolved_runs() -> None:
    rows: list[dict[str, object]] = [
        {"net": "n", "image": 0, "method": "bab", "tighten": "none", "status": "optimal",
         "seconds": 1.5, "l1": 2.0},
        {"net": "n", "image": 0, "method": "milp:bigm", "tighten": "none", "status": "timeout",
         "seconds": 30.0, "l1": 3.0},
        {"net": "n", "image": 1, "method": "bab", "tighten": "none", "status": "timeout",
         "seconds": 30.0, "l1": 9.0},
        {"net": "n", "image": 1, "method": "milp:bigm", "tighten": "none", "status": "optimal",
         "seconds": 4.25, "l1": 7.0},
    ]
    lines = se.per_image(rows)
    assert "| 8000 (2.0000) | 1.50 | - |" in lines
    assert "| 8001 (7.0000) | - | 4.25 |" in lines


def test_rows_round_trip_through_csv(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"net": "n", "image": 3, "method": "bab", "tighten": "lp", "status": "optimal",
         "l1": 2.5, "bound": 2.4999, "seconds": 1.25, "unstable": 7, "res": object()}]
    se.write_rows(rows, tmp_path / "r.csv")
    back = se.read_rows(tmp_path / "r.csv")
    assert back == [{k: v for k, v in rows[0].items() if k != "res"}]
    assert se.summary(back) == se.summary(rows)
