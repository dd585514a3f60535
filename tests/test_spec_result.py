"""Properties, margins, counterexample validation and the VNN-COMP result format."""

from __future__ import annotations

import numpy as np
import pytest

from bnbver.errors import InputError
from bnbver.network import Dense, Network
from bnbver.result import Result, Status, format_vnncomp, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet, validate_property


def _identity_prop() -> tuple[Network, Property]:
    net = Network((Dense(np.eye(2), np.zeros(2)),), (2,))
    # unsafe: y0 >= y1 + 1, i.e. -y0 + y1 <= -1
    unsafe = UnsafeSet((HalfSpaces([[-1.0, 1.0]], [-1.0]),))
    return net, Property(InputBox(np.zeros(2), np.ones(2)), unsafe)


def test_margins_sign_convention() -> None:
    _, prop = _identity_prop()
    np.testing.assert_allclose(prop.unsafe.margins(np.array([[1.0, 0.0], [0.0, 1.0]])),
                               [[0.0], [2.0]])


def test_validate_counterexample_accepts_only_real_ones() -> None:
    net, prop = _identity_prop()
    assert validate_counterexample(net, prop, np.array([1.0, 0.0])) is not None
    assert validate_counterexample(net, prop, np.array([0.9, 0.0])) is None
    assert validate_counterexample(net, prop, np.array([1.5, 0.0])) is None  # outside the box


def test_format_vnncomp_sat() -> None:
    net, prop = _identity_prop()
    cex = validate_counterexample(net, prop, np.array([1.0, 0.0]))
    text = format_vnncomp(Result(Status.VIOLATED, cex))
    assert text.startswith("sat\n((X_0 1.0)\n(X_1 0.0)\n(Y_0 1.0)\n(Y_1 0.0))")
    assert format_vnncomp(Result(Status.HOLDS)) == "unsat\n"
    assert format_vnncomp(Result(Status.ERROR)) == "unknown\n"


def test_validate_property_errors() -> None:
    _, prop = _identity_prop()
    with pytest.raises(InputError, match="network takes 3"):
        validate_property(prop, 3, 2, "p.vnnlib")
    bad = Property(InputBox(np.array([1.0, 0.0]), np.array([0.0, 1.0])), prop.unsafe)
    with pytest.raises(InputError, match="lower bound 1.0 > upper bound 0.0 for X_0"):
        validate_property(bad, 2, 2, "p.vnnlib")


def _round_trip(result: Result) -> dict:  # type: ignore[type-arg]
    """Return ``to_dict`` after a trip through JSON text and ``from_dict``; check it."""
    import json

    data = result.to_dict()
    again = Result.from_dict(json.loads(json.dumps(data)))
    back = again.to_dict()
    assert back == {**data, "certificate_leaves": None, "open_nodes": 0}
    return data


def test_issue_18_result_json_round_trip_keeps_every_field() -> None:
    """Counterexample, bounds (infinities too), stats and trace survive JSON exactly; the
    certificate is only counted."""
    from bnbver.result import Certificate, Leaf, Stats
    from bnbver.splits import SplitSet

    net, prop = _identity_prop()
    cex = validate_counterexample(net, prop, np.array([1.0, 0.0]))
    assert cex is not None and cex.reached_class == 0
    stats = Stats(nodes=7, max_depth=3, bound_calls=4, lp_calls=1, milp_calls=2,
                  seconds_by_phase={"bounds": 0.1 + 0.2}, lower_bound_trace=[(0.5, -np.inf),
                                                                         (1.0, -0.3)])
    violated = Result(Status.VIOLATED, cex, stats=stats, wall_time=1.5, message="m")
    data = _round_trip(violated)
    assert data["counterexample"]["class"] == 0
    assert data["counterexample"]["x"] == [1.0, 0.0]
    leaf = Leaf(np.zeros(2), np.ones(2), SplitSet(), 0.5, "lp")
    holds = Result(Status.HOLDS, certificate=Certificate((leaf, leaf)), lower_bound=np.inf,
                   disjunct_bounds=((np.inf, 0.25), (1e-300,)))
    data = _round_trip(holds)
    assert data["certificate_leaves"] == 2 and data["lower_bound"] == "inf"
    assert Result.from_dict(data).disjunct_bounds == ((np.inf, 0.25), (1e-300,))
    _round_trip(Result(Status.TIMEOUT, lower_bound=-1.25, message="x"))


def test_issue_18_result_from_dict_rejects_other_dicts() -> None:
    with pytest.raises(InputError, match="result"):
        Result.from_dict({"status": "unsat"})
    with pytest.raises(InputError, match="result"):
        Result.from_dict({**Result(Status.HOLDS).to_dict(), "status": "maybe"})
