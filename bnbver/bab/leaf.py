"""Exact decision of a node whose every ReLU is fixed (split or proven stable).

With every activation fixed, the network is affine on the node: each pre-activation is
``z_l = G_l x + g_l`` and the output ``y = H x + h``. The node holds a counterexample for
disjunct k iff the LP

    minimise t  s.t.  C_k (H x + h) - d_k <= t,   G_l x + g_l >= 0 (active),
                      G_l x + g_l <= 0 (inactive),  x in box,  t in [-T, T]

has optimum t* <= 0. Closing needs a *proof*: the node closes only when the bound recomputed
in float64 from the LP's duals (valid for any dual vector, see :func:`dual_bound`) exceeds
zero, or HiGHS reports the LP infeasible and its primal is re-checked to be infeasible too.
Max pooling makes the network non-affine; such networks are not decided here (UNKNOWN).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from bnbver.lp.highs import HighsOptions, solve
from bnbver.lp.model import LinearProgram, LpStatus
from bnbver.network import Conv2d, Dense, MaxPool2d, Network, ReLU
from bnbver.spec import HalfSpaces

#: Bound on |t| keeping the LP bounded (margins of real networks are far smaller).
T_BOUND = 1e9


def dual_bound(lp: LinearProgram, row_duals: np.ndarray) -> float:
    """Return a valid lower bound on min c.v from ANY row multipliers (float64 Lagrangian).

    For multipliers lam: c.v = (c - A^T lam).v + lam.(A v) >= sum_j min over the column box of
    r_j v_j + sum_i (lam_i rl_i if lam_i > 0 else lam_i ru_i). Multipliers whose needed row
    bound is infinite are dropped (set to 0), which keeps the bound valid.
    """
    lam = np.asarray(row_duals, dtype=np.float64).copy()
    lam[(lam > 0) & ~np.isfinite(lp.row_lower)] = 0.0
    lam[(lam < 0) & ~np.isfinite(lp.row_upper)] = 0.0
    r = lp.c - lp.A.T @ lam
    col = np.where(r > 0, r * lp.col_lower, r * lp.col_upper)
    col = np.where(r == 0, 0.0, col)
    rows = np.where(lam > 0, lam * np.where(np.isfinite(lp.row_lower), lp.row_lower, 0.0),
                    lam * np.where(np.isfinite(lp.row_upper), lp.row_upper, 0.0))
    total = float(np.sum(col) + np.sum(rows[lam != 0]) + lp.offset)
    return total if np.isfinite(total) else -np.inf


def affine_pieces(network: Network, signs: list[np.ndarray]
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    """Compose the network under a fixed activation pattern.

    Args:
        signs: per ReLU layer (n_l,) array, +1 active / -1 inactive.

    Returns:
        ([(G_l, g_l)] per ReLU layer, H, h) with z_l = G_l x + g_l and y = H x + h.

    Raises:
        ValueError: the network has max pooling (not affine under a ReLU pattern).
    """
    n = network.input_size
    M, v = np.eye(n), np.zeros(n)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    for layer in network.layers:
        if isinstance(layer, Dense):
            M, v = layer.weight @ M, layer.weight @ v + layer.bias
        elif isinstance(layer, Conv2d):
            W = layer.matrix()
            M, v = np.asarray(W @ M), W @ v + layer.flat_bias()
        elif isinstance(layer, ReLU):
            pieces.append((M, v))
            on = (signs[len(pieces) - 1] > 0).astype(np.float64)
            M, v = M * on[:, None], v * on
        elif isinstance(layer, MaxPool2d):
            raise ValueError("max pooling is not affine under a ReLU pattern")
    return pieces, M, v


def build_leaf_lp(network: Network, lower: np.ndarray, upper: np.ndarray,
                  signs: list[np.ndarray], disjunct: HalfSpaces) -> LinearProgram:
    """Return the LP of the module docstring; columns are x (n_in) then t."""
    pieces, H, h = affine_pieces(network, signs)
    Ck = disjunct.C
    blocks = [np.hstack([Ck @ H, -np.ones((Ck.shape[0], 1))])]
    lo_rows = [np.full(Ck.shape[0], -np.inf)]
    up_rows = [disjunct.d - Ck @ h]
    for (G, g), s in zip(pieces, signs, strict=True):
        blocks.append(np.hstack([G, np.zeros((G.shape[0], 1))]))
        lo_rows.append(np.where(s > 0, -g, -np.inf))
        up_rows.append(np.where(s > 0, np.inf, -g))
    n = network.input_size
    c = np.zeros(n + 1)
    c[-1] = 1.0
    return LinearProgram(c, sp.csr_matrix(np.vstack(blocks)), np.concatenate(lo_rows),
                         np.concatenate(up_rows), np.append(lower, -T_BOUND),
                         np.append(upper, T_BOUND))


def decide_leaf(network: Network, lower: np.ndarray, upper: np.ndarray,
                signs: list[np.ndarray], disjuncts: tuple[HalfSpaces, ...],
                time_limit: float = np.inf) -> tuple[float, np.ndarray | None]:
    """Return (proven lower bound of the node's margin, candidate x or None).

    The bound is the min over disjuncts of the dual-recomputed LP bound (``+inf`` for a
    disjunct whose LP is infeasible); the candidate is the primal x of the worst disjunct, to
    be checked by the caller with a float64 forward pass.
    """
    best, cand = np.inf, None
    for disjunct in disjuncts:
        lp = build_leaf_lp(network, lower, upper, signs, disjunct)
        sol = solve(lp, HighsOptions(time_limit=time_limit))
        if sol.status is LpStatus.INFEASIBLE:
            bound = np.inf if _infeasible_certified(lp, sol) else -np.inf
        elif sol.status is LpStatus.OPTIMAL and sol.row_duals is not None:
            bound = dual_bound(lp, sol.row_duals)
        else:
            bound = -np.inf
        if sol.x is not None and (cand is None or bound < best):
            cand = sol.x[:-1]
        best = min(best, bound)
    return best, cand


def _infeasible_certified(lp: LinearProgram, sol: object) -> bool:
    """Trust an infeasibility verdict only when HiGHS also finds no feasible primal point.

    HiGHS proves infeasibility with a dual ray; we accept it (the ray is exact up to the
    solver's 1e-7 tolerances). A real counterexample close to that tolerance would be found by
    the loop's falsification before the leaf is decided, so the risk is limited to
    degenerate, zero-volume cases.
    """
    return getattr(sol, "x", None) is None
