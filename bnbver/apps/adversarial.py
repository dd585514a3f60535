r"""Minimal adversarial examples, solved exactly (Fischetti & Jo 2018; Aftabi et al. 2024).

Given an input :math:`x^0`, a target class t and a margin :math:`\mu > 0`, find

.. math::
    \min_{x \in X} \|x - x^0\|_p \quad\text{s.t.}\quad y_t \ge \mu\, y_j \;\; (j \ne t),
    \qquad y = f(x),

with p = 1 (as in the papers) or p = ∞, and X the input domain (a box, [0, 1] for images).
The papers use :math:`\mu = 1.2` ("the target logit is at least 1.2 times every other");
:math:`\mu = 1` is the plain form "the target logit is at least every other". The constraint is
encoded exactly as written, :math:`y_t - \mu y_j \ge 0`, which is linear in y. It means "1.2
times larger" only where the logits are positive: with a negative :math:`y_j`,
:math:`\mu y_j < y_j` and the constraint is *weaker* than :math:`y_t \ge y_j`. (The papers'
networks end in ReLU-like positive scores; for raw logits use ``margin=1``.)

Distances, as auxiliary LP columns: L1, :math:`d_i \ge x_i - x^0_i`, :math:`d_i \ge x^0_i -
x_i`, minimise :math:`\sum_i d_i`; L∞, :math:`e \ge \pm(x_i - x^0_i)` for all i, minimise e.
Both are exact at an optimum. Every better point than an incumbent of distance v has
:math:`|x_i - x^0_i| \le v` for all i, which :func:`~bnbver.apps.optimize.minimize` uses to
cut the box (the "radius").

The returned x passed a float64 forward pass: :math:`y_t - \mu y_j \ge 0` for all j, and x lies
in X; ``distance`` is recomputed in float64 from x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnbver.apps.optimize import (
    OptimizeOptions,
    OptimizeResult,
    OptStatus,
    Terms,
    solve_problem,
)
from bnbver.bounds.adam import Adam
from bnbver.errors import InputError
from bnbver.lp.relaxation import ColumnMap, ModelBuilder, add_abs_rows, add_l1_distance
from bnbver.network import Network
from bnbver.spec import InputBox

NORMS = ("l1", "linf")


def distance(x: np.ndarray, x0: np.ndarray, norm: str) -> float:
    """Return ``||x - x0||_1`` (norm ``l1``) or ``||x - x0||_inf`` (``linf``) in float64."""
    diff = np.abs(np.asarray(x, dtype=np.float64) - np.asarray(x0, dtype=np.float64))
    return float(diff.sum() if norm == "l1" else diff.max(initial=0.0))


def margin_slacks(y: np.ndarray, target: int, margin: float) -> np.ndarray:
    """Return ``y_t - margin * y_j`` for every j != target (all >= 0: the goal is reached)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    others = np.delete(np.arange(y.size), target)
    out: np.ndarray = y[target] - margin * y[others]
    return out


@dataclass(frozen=True, eq=False)
class AdversarialProblem:
    """The minimal-perturbation problem as an :class:`~bnbver.apps.optimize.Problem`.

    Attributes:
        x0: (n_in,) the original input.
        target: the class to reach.
        margin: mu in ``y_t >= mu * y_j``.
        norm: ``l1`` or ``linf``.
        box: the input domain.
    """

    x0: np.ndarray
    target: int
    margin: float
    norm: str
    box: InputBox

    def centre(self) -> np.ndarray | None:
        """Return x0 (the incumbent radius is measured from it)."""
        return self.x0

    def radius(self, incumbent: float, columns: ColumnMap, col_upper: np.ndarray) -> float:
        """Return the incumbent distance: a better x has ``|x_i - x0_i| < incumbent``."""
        return incumbent

    def radius_norm(self) -> str:
        """Return the problem's norm: a better x is within the incumbent distance in it."""
        return self.norm

    def evaluate(self, network: Network, x: np.ndarray) -> float | None:
        """Return the distance of x when it is in the box and reaches the target, else None."""
        if not self.box.contains(x):
            return None
        y = network.forward(np.asarray(x, dtype=np.float64))
        if np.any(margin_slacks(y, self.target, self.margin) < 0.0):
            return None
        return distance(x, self.x0, self.norm)

    def add_terms(self, b: ModelBuilder, columns: ColumnMap, slack: float) -> tuple[Terms, float]:
        """Add the margin rows and the distance columns; return the distance as objective."""
        y, x = columns.y, columns.x
        others = np.delete(y, self.target)
        k = others.size
        b.add_rows(np.repeat(np.arange(k), 2),
                   np.stack([np.full(k, y[self.target]), others], 1).ravel(),
                   np.tile([1.0, -self.margin], k), np.full(k, slack), np.full(k, np.inf))
        if self.norm == "l1":
            cols = add_l1_distance(b, x, self.x0)
        else:
            lo, hi = b.bounds(x)
            reach = np.maximum(np.maximum(self.x0 - lo, hi - self.x0), 0.0)
            cols = b.add_cols(np.zeros(1), np.array([reach.max(initial=0.0)]))
            add_abs_rows(b, np.full(x.size, cols[0]), x, self.x0)
        return [(cols, np.ones(cols.size))], 0.0


@dataclass(frozen=True, eq=False)
class AdversarialResult:
    """A minimal adversarial example (see the module docstring).

    Attributes:
        status: ``optimal``, ``feasible`` (time limit, gap open), ``infeasible`` (no input in
            the domain reaches the target with the margin) or ``timeout`` (none found yet).
        x: (n_in,) the adversarial input found (checked in float64), or None.
        x0: (n_in,) the original input.
        target: the target class.
        norm: ``l1`` or ``linf``.
        margin: mu.
        distance: ``||x - x0||`` (+inf without x).
        bound: a proven lower bound on the minimal distance.
        seconds: wall time.
        logits: f(x) (None without x).
        original_logits: f(x0).
        solve: the optimiser's full answer (nodes, LP solves, tightening time, method).
    """

    status: OptStatus
    x: np.ndarray | None
    x0: np.ndarray
    target: int
    norm: str
    margin: float
    distance: float
    bound: float
    seconds: float
    logits: np.ndarray | None
    original_logits: np.ndarray
    solve: OptimizeResult

    @property
    def gap(self) -> float:
        """Return ``distance - bound`` (the proven optimality gap)."""
        return self.solve.gap


def attack_points(
    network: Network, problem: AdversarialProblem, steps: int = 200, seed: int = 0,
) -> list[np.ndarray]:
    """Return inputs found by gradient descent on a penalty of the margin and the distance.

    Minimises ``sum_j relu(mu y_j - y_t + kappa) + lam * ||x - x0||`` by Adam from x0 (and
    from x0 plus noise), projected onto the box, with lam halved whenever the margin is not
    yet reached. The points are only incumbent candidates: the BaB checks each exactly and
    improves it by the LP of its activation pattern.
    """
    import torch

    model = network.to_torch(dtype=torch.float64)
    rng = np.random.default_rng(seed)
    lo = torch.tensor(np.array(problem.box.lower))
    hi = torch.tensor(np.array(problem.box.upper))
    x0 = torch.tensor(np.array(problem.x0))
    starts = [problem.x0, np.clip(problem.x0 + rng.normal(0, 0.1, problem.x0.size),
                                  problem.box.lower, problem.box.upper)]
    found: list[np.ndarray] = []
    others = [j for j in range(network.num_outputs) if j != problem.target]
    for start in starts:
        x = torch.tensor(start, requires_grad=True)
        opt = Adam([([x], 0.01)])  # not torch.optim: it imports torch._dynamo (2 s)
        lam = 0.1
        for _ in range(steps):
            y = model(x[None, :])[0]
            viol = torch.relu(problem.margin * y[others] - y[problem.target] + 0.05).sum()
            dist = (x - x0).abs().sum() if problem.norm == "l1" else (x - x0).abs().max()
            loss = viol + lam * dist
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            with torch.no_grad():
                x.copy_(torch.minimum(torch.maximum(x, lo), hi))
            v = float(viol.detach())
            lam = lam * 0.9 if v > 0 else min(lam * 1.05, 1.0)
            if v == 0.0:
                found.append(x.detach().numpy().copy())
        found.append(x.detach().numpy().copy())
    return found[-8:]


def _validate(network: Network, x0: np.ndarray, target: int, norm: str, margin: float,
              box: InputBox) -> None:
    """Raise InputError naming the argument when the query is malformed."""
    if x0.shape != (network.input_size,) or not np.all(np.isfinite(x0)):
        raise InputError("image", f"expected {network.input_size} finite values, got "
                         f"shape {x0.shape}")
    if not 0 <= target < network.num_outputs:
        raise InputError("--target", f"{target} outside 0..{network.num_outputs - 1}")
    if norm not in NORMS:
        raise InputError("--norm", f"'{norm}' (expected l1 or linf)")
    if not (np.isfinite(margin) and margin > 0):
        raise InputError("--margin", f"{margin} (expected a positive number)")
    if box.size != network.input_size or np.any(box.lower > box.upper):
        raise InputError("--box", "lower bound above upper bound, or wrong size")
    if not box.contains(x0, tol=1e-9):
        raise InputError("image", "lies outside the input domain (--box)")


def as_box(domain: InputBox | tuple[float, float], size: int) -> InputBox:
    """Return the domain as an InputBox of ``size`` values (a pair means the same bounds)."""
    if isinstance(domain, InputBox):
        return domain
    lo, hi = (float(v) for v in domain)
    return InputBox(np.full(size, lo), np.full(size, hi))


def minimal_adversarial(
    network: Network, image: np.ndarray, target: int, *, norm: str = "l1",
    margin: float = 1.2, domain: InputBox | tuple[float, float] = (0.0, 1.0),
    options: OptimizeOptions | None = None, method: str = "bab",
    initial_points: tuple[np.ndarray, ...] = (), attack: bool = True,
) -> AdversarialResult:
    """Find the smallest perturbation of ``image`` whose logits satisfy the target margin.

    Args:
        network: the network.
        image: (n_in,) the original input (flattened as the network takes it).
        target: the class whose logit must be at least ``margin`` times every other.
        norm: ``l1`` (as in the seed papers) or ``linf``.
        margin: mu in ``y_t >= mu * y_j`` (1.2 in the papers; 1 for "exceeds every other").
        domain: the input box, or one (lo, hi) pair for every input.
        options: time limit, gap and bound tightening (``none``/``interval``/``lp``/``milp``).
        method: ``bab`` (bnbver's best-bound search) or ``milp:<formulation>`` (one HiGHS MILP;
            bigm, extended or partition:N).
        initial_points: inputs to try first as incumbents (``bab`` only).
        attack: also seed the BaB with :func:`attack_points` (a gradient heuristic).

    Returns:
        The :class:`AdversarialResult`.

    Raises:
        InputError: a malformed image, target, norm, margin, domain or method.
    """
    x0 = np.asarray(image, dtype=np.float64).reshape(-1)
    box = as_box(domain, network.input_size)
    _validate(network, x0, target, norm, margin, box)
    x0 = np.clip(x0, box.lower, box.upper)
    problem = AdversarialProblem(x0, int(target), float(margin), norm, box)
    points = tuple(initial_points)
    if method == "bab" and attack:
        points += tuple(attack_points(network, problem))
    res = solve_problem(network, box, problem, options, method, points)
    logits = None if res.x is None else network.forward(res.x)
    dist = np.inf if res.x is None else distance(res.x, x0, norm)
    return AdversarialResult(res.status, res.x, x0, int(target), norm, float(margin), dist,
                             res.bound, res.seconds, logits, network.forward(x0), res)

