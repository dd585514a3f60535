"""Tests of the HiGHS adapter: tiny hand-solved LPs, duals, Farkas rays, warm starts, files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from bnbver.lp.highs import HighsOptions, WarmLp, solve, solve_file, write_model
from bnbver.lp.model import LinearProgram, LpStatus, lagrangian_bound


def _lp(c, A, rl, ru, cl, cu, integrality=None) -> LinearProgram:
    return LinearProgram(np.asarray(c, float), sp.csr_matrix(np.asarray(A, float)),
                         np.asarray(rl, float), np.asarray(ru, float), np.asarray(cl, float),
                         np.asarray(cu, float), integrality)


def tiny() -> LinearProgram:
    """min x + y  s.t.  x - y >= 1,  0 <= x, y <= 5.  Optimum 1 at (1, 0), row dual 1."""
    return _lp([1, 1], [[1, -1]], [1], [np.inf], [0, 0], [5, 5])


def test_tiny_lp_hand_solved() -> None:
    sol = solve(tiny())
    assert sol.status is LpStatus.OPTIMAL
    assert sol.objective == pytest.approx(1.0)
    np.testing.assert_allclose(sol.x, [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(sol.row_duals, [1.0], atol=1e-9)


def test_lagrangian_bound_exact_at_optimal_duals_and_valid_for_any() -> None:
    lp = tiny()
    sol = solve(lp)
    assert lagrangian_bound(lp, sol.row_duals) == pytest.approx(1.0, abs=1e-12)
    assert lagrangian_bound(lp, sol.row_duals) <= 1.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert lagrangian_bound(lp, rng.normal(size=1) * 3) <= 1.0 + 1e-12


def test_lagrangian_bound_hand_value() -> None:
    """With lambda = 0.5: r = c - A^T lambda = (0.5, 1.5) >= 0, so the bound is
    0.5 * 1 (row at its lower bound) + 0.5 * 0 + 1.5 * 0 = 0.5."""
    assert lagrangian_bound(tiny(), np.array([0.5])) == pytest.approx(0.5, abs=1e-12)


def test_infeasible_lp_has_checked_farkas_ray() -> None:
    """x - y >= 1 with x <= 0.5, y >= 0 is empty: the ray proves it (bound with c = 0 > 0)."""
    lp = _lp([1, 1], [[1, -1]], [1], [np.inf], [0, 0], [0.5, 5])
    warm = WarmLp(lp)
    assert warm.run().status is LpStatus.INFEASIBLE
    ray = warm.dual_ray()
    assert ray is not None
    assert max(lagrangian_bound(lp, s * ray, np.zeros(2)) for s in (1, -1)) > 0


def test_warm_start_equals_cold_solve() -> None:
    rng = np.random.default_rng(1)
    n, m = 8, 6
    A = rng.normal(size=(m, n))
    lp = _lp(rng.normal(size=n), A, -np.ones(m), np.ones(m), -np.ones(n), np.ones(n))
    warm = WarmLp(lp)
    warm.run()
    for _ in range(5):
        cols = rng.choice(n, 3, replace=False)
        lo = rng.uniform(-1, 0, 3)
        warm.set_col_bounds(cols, lo, lo + 0.5)
        w = warm.run()
        cold = solve(warm.current_lp())
        assert w.status is cold.status is LpStatus.OPTIMAL
        assert w.objective == pytest.approx(cold.objective, abs=1e-8)
    warm.set_cost(-lp.c)
    assert warm.run().objective == pytest.approx(solve(warm.current_lp()).objective, abs=1e-8)


def test_add_rows_and_coeffs() -> None:
    """After adding x + y <= 0.5 the tiny LP min x + y with x - y >= 1 becomes infeasible;
    changing the row to x + y <= 3 makes it feasible again with optimum 1."""
    warm = WarmLp(tiny())
    warm.add_rows(sp.csr_matrix([[1.0, 1.0]]), np.array([-np.inf]), np.array([0.5]))
    assert warm.run().status is LpStatus.INFEASIBLE
    warm.set_row_bounds(np.array([1]), np.array([-np.inf]), np.array([3.0]))
    assert warm.run().objective == pytest.approx(1.0)
    warm.set_coeffs(np.array([0]), np.array([1]), np.array([-2.0]))
    assert warm.run().objective == pytest.approx(1.0)  # x - 2y >= 1: still (1, 0)


@pytest.mark.parametrize("suffix", [".mps", ".lp"])
def test_file_round_trip_mip(tmp_path, suffix) -> None:
    """max x + y (min -x - y) s.t. 2x + 2y <= 3, x, y integer in [0, 5]: optimum -1."""
    lp = _lp([-1, -1], [[2, 2]], [-np.inf], [3], [0, 0], [5, 5], np.array([1, 1], np.uint8))
    assert solve(lp).objective == pytest.approx(-1.0)
    write_model(lp, tmp_path / f"m{suffix}")
    sol = solve_file(tmp_path / f"m{suffix}")
    assert sol.objective == pytest.approx(-1.0)
    assert sol.status is LpStatus.OPTIMAL


def test_mip_time_limit_maps_to_status() -> None:
    lp = _lp([-1, -1], [[2, 2]], [-np.inf], [3], [0, 0], [5, 5], np.array([1, 1], np.uint8))
    sol = solve(lp, HighsOptions(time_limit=10.0))
    assert sol.status is LpStatus.OPTIMAL and sol.bound <= sol.objective + 1e-9


def test_banner_is_not_printed_on_stdout() -> None:
    code = ("from bnbver.lp.highs import solve; from tests.test_lp_highs import tiny; "
            "solve(tiny()); print('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__('pathlib').Path(__file__).parents[1]))
    assert out.stdout == "done\n"
