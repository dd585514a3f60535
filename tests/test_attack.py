"""The falsifier finds planted counterexamples and never reports a false one."""

from __future__ import annotations

import numpy as np

from bnbver.attack import AttackOptions, falsify
from bnbver.network import Dense, Network
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net


def test_finds_corner_counterexample() -> None:
    """y = x0 + x1 on [0,1]^2; unsafe y >= 1.99 holds only near the corner (1, 1)."""
    net = Network((Dense([[1.0, 1.0]], [0.0]),), (2,))
    prop = Property(InputBox(np.zeros(2), np.ones(2)),
                    UnsafeSet((HalfSpaces([[-1.0]], [-1.99]),)))
    cex = falsify(net, prop, AttackOptions(samples=16, restarts=4, steps=20))
    assert cex is not None
    assert cex.y[0] >= 1.99 and prop.box.contains(cex.x)


def test_no_false_counterexample_on_safe_property() -> None:
    rng = np.random.default_rng(0)
    net = random_relu_net(rng, [3, 10, 2])
    box = InputBox(-np.ones(3), np.ones(3))
    samples = net.forward(rng.uniform(-1, 1, size=(20000, 3)))
    bound = samples[:, 0].max() + 10.0  # far above anything reachable
    prop = Property(box, UnsafeSet((HalfSpaces([[-1.0, 0.0]], [-bound]),)))
    assert falsify(net, prop, AttackOptions(samples=256, restarts=8, steps=30)) is None
