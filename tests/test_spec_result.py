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
