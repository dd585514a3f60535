r"""Feature visualisation, solved exactly (Fischetti & Jo 2018, section 5).

Find the input of the domain X that maximises one unit of the network:

.. math::
    \max_{x \in X}\; z_{k,j}(x) \;-\; w\,\|x - x^0\|_1,

where :math:`z_{k,j}` is the *pre-activation* of unit j of ReLU layer k (or output j), and the
optional L1 term (weight w >= 0, near an image :math:`x^0`) keeps the answer close to a given
image. The unit's activation is :math:`\max(z_{k,j}, 0)`, which has the same maximiser
whenever the maximum is positive; maximising z also ranks inputs where the unit is off.

The problem is passed to :func:`~bnbver.apps.optimize.minimize` as :math:`\min -z + w\sum_i
d_i` with :math:`d_i \ge |x_i - x^0_i|`. Every input of X is feasible, so any LP point is an
incumbent after its forward pass. With w > 0 a better point than an incumbent of value v
satisfies :math:`w\|x - x^0\|_1 < v + \bar z` (:math:`\bar z` the unit's upper bound), which
gives the search a radius around :math:`x^0`.

``objective`` of the result is the maximised value (:math:`z - w\|x - x^0\|_1`), ``bound`` a
proven upper bound on it, and ``activation`` the unit's pre-activation at x (float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnbver.apps.adversarial import as_box
from bnbver.apps.optimize import (
    OptimizeOptions,
    OptimizeResult,
    OptStatus,
    Terms,
    solve_problem,
)
from bnbver.errors import InputError
from bnbver.lp.relaxation import ColumnMap, ModelBuilder, add_l1_distance
from bnbver.network import Network
from bnbver.spec import InputBox


def unit_value(network: Network, x: np.ndarray, layer: int, index: int) -> float:
    """Return the pre-activation of unit ``index`` of ReLU layer ``layer`` (or the output
    when ``layer == len(network.relu_sizes)``) at x, in float64."""
    y, pre = network.forward_with_preactivations(np.asarray(x, dtype=np.float64))
    values = [*pre, y]
    return float(values[layer][index])


@dataclass(frozen=True, eq=False)
class UnitProblem:
    """Maximise one unit (see the module docstring), as a minimisation Problem.

    Attributes:
        layer: the ReLU layer (0-based), or ``len(relu_sizes)`` for the outputs.
        index: the unit within the layer.
        x0: (n_in,) the image to stay near, or None.
        weight: w, the L1 penalty weight (ignored without x0).
        box: the input domain.
    """

    layer: int
    index: int
    x0: np.ndarray | None
    weight: float
    box: InputBox

    def _unit_col(self, columns: ColumnMap) -> int:
        if self.layer < len(columns.relus):
            return int(columns.relus[self.layer].z[self.index])
        return int(columns.y[self.index])

    def centre(self) -> np.ndarray | None:
        """Return x0 when the penalty is active (the radius is measured from it)."""
        return self.x0 if self.x0 is not None and self.weight > 0 else None

    def radius(self, incumbent: float, columns: ColumnMap, col_upper: np.ndarray) -> float:
        """Return ``(incumbent + z_max) / w``: a better x has a smaller L1 distance to x0."""
        if self.centre() is None:
            return np.inf
        z_max = float(col_upper[self._unit_col(columns)])
        return max((incumbent + z_max) / self.weight, 0.0)

    def radius_norm(self) -> str:
        """Return ``l1``: the radius bounds the penalised L1 distance."""
        return "l1"

    def evaluate(self, network: Network, x: np.ndarray) -> float | None:
        """Return ``-z(x) + w ||x - x0||_1`` for x in the box (every such x is feasible)."""
        if not self.box.contains(x):
            return None
        value = -unit_value(network, x, self.layer, self.index)
        if self.centre() is not None:
            assert self.x0 is not None
            value += self.weight * float(np.abs(x - self.x0).sum())
        return value

    def add_terms(self, b: ModelBuilder, columns: ColumnMap, slack: float) -> tuple[Terms, float]:
        """Return ``-z`` (plus the weighted L1 columns near x0) as the objective."""
        terms: Terms = [(np.array([self._unit_col(columns)]), np.array([-1.0]))]
        if self.centre() is None:
            return terms, 0.0
        assert self.x0 is not None
        d = add_l1_distance(b, columns.x, self.x0)
        terms.append((d, np.full(d.size, self.weight)))
        return terms, 0.0


@dataclass(frozen=True, eq=False)
class UnitResult:
    """A feature visualisation (see the module docstring).

    Attributes:
        status: ``optimal``, ``feasible`` (time limit, gap open) or ``timeout``.
        x: (n_in,) the maximising input found, or None.
        layer: the ReLU layer (``len(relu_sizes)``: outputs).
        index: the unit.
        objective: the maximised value ``z(x) - w ||x - x0||_1`` (-inf without x).
        bound: a proven upper bound on the maximum.
        activation: z(x), the unit's pre-activation at x (its activation is max(z, 0)).
        seconds: wall time.
        solve: the optimiser's answer (minimisation sense: objective = -this objective).
    """

    status: OptStatus
    x: np.ndarray | None
    layer: int
    index: int
    objective: float
    bound: float
    activation: float
    seconds: float
    solve: OptimizeResult

    @property
    def gap(self) -> float:
        """Return ``bound - objective`` (the proven optimality gap)."""
        return self.solve.gap


def parse_unit(text: str, network: Network) -> tuple[int, int]:
    """Parse ``LAYER:INDEX`` (LAYER a ReLU layer number, or ``out``) into (layer, index).

    Raises:
        InputError: the text is malformed or outside the network.
    """
    layer_s, sep, index_s = text.partition(":")
    sizes = [*network.relu_sizes, network.num_outputs]
    try:
        layer = len(sizes) - 1 if layer_s.strip() in ("out", "output") else int(layer_s)
        index = int(index_s)
    except ValueError:
        layer, index = -1, -1
    if not sep or not 0 <= layer < len(sizes) or not 0 <= index < sizes[layer]:
        raise InputError("--unit", f"'{text}' (expected LAYER:INDEX with LAYER in "
                         f"0..{len(sizes) - 2} or 'out', sizes {sizes})")
    return layer, index


def maximize_unit(
    network: Network, layer: int, index: int, *, near: np.ndarray | None = None,
    weight: float = 0.0, domain: InputBox | tuple[float, float] = (0.0, 1.0),
    options: OptimizeOptions | None = None, method: str = "bab",
) -> UnitResult:
    """Find the input of the domain that maximises one unit (optionally near an image).

    Args:
        network: the network.
        layer: ReLU layer number (0-based), or ``len(network.relu_sizes)`` for an output.
        index: the unit within that layer.
        near: (n_in,) an image to stay near, or None.
        weight: the L1 penalty weight w >= 0 (used with ``near``).
        domain: the input box, or one (lo, hi) pair for every input.
        options: time limit, gap and bound tightening.
        method: ``bab`` or ``milp:<formulation>``.

    Returns:
        The :class:`UnitResult`.

    Raises:
        InputError: a unit outside the network, a bad image, weight or domain.
    """
    sizes = [*network.relu_sizes, network.num_outputs]
    if not (0 <= layer < len(sizes) and 0 <= index < sizes[layer]):
        raise InputError("--unit", f"{layer}:{index} outside the layer sizes {sizes}")
    box = as_box(domain, network.input_size)
    if box.size != network.input_size or np.any(box.lower > box.upper):
        raise InputError("--box", "lower bound above upper bound, or wrong size")
    x0 = None if near is None else np.asarray(near, dtype=np.float64).reshape(-1)
    if x0 is not None and (x0.size != network.input_size or not np.all(np.isfinite(x0))):
        raise InputError("--near", f"expected {network.input_size} finite values")
    if not (np.isfinite(weight) and weight >= 0):
        raise InputError("--weight", f"{weight} (expected a number >= 0)")
    x0 = None if x0 is None else np.clip(x0, box.lower, box.upper)
    problem = UnitProblem(layer, index, x0, float(weight), box)
    res = solve_problem(network, box, problem, options, method)
    act = -np.inf if res.x is None else unit_value(network, res.x, layer, index)
    return UnitResult(res.status, res.x, layer, index, -res.objective, -res.bound, act,
                      res.seconds, res)
