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


def _valley_net() -> Network:
    """y = -|x0 - 0.5| on [0, 1] (two ReLUs): y >= -0.01 only for x0 in [0.49, 0.51]."""
    from bnbver.network import ReLU
    return Network((Dense([[1.0], [-1.0]], [-0.5, 0.5]), ReLU(2), Dense([[-1.0, -1.0]], [0.0])),
                   (1,))


def test_box_attack_finds_counterexample_inside_a_given_box() -> None:
    import torch

    from bnbver.attack import falsify_boxes
    net = _valley_net()
    prop = Property(InputBox(np.zeros(1), np.ones(1)),
                    UnsafeSet((HalfSpaces([[-1.0]], [0.01]),)))
    lower, upper = np.array([[0.0], [0.42]]), np.array([[0.3], [0.6]])
    module = net.to_torch(torch.float64)
    cex = falsify_boxes(net, prop, lower, upper, module, np.random.default_rng(0))
    assert cex is not None
    assert 0.42 <= cex.x[0] <= 0.6 and net.forward(cex.x[None])[0, 0] >= -0.01
    # the same search restricted to the safe box finds nothing (and invents nothing)
    assert falsify_boxes(net, prop, lower[:1], upper[:1], module,
                         np.random.default_rng(0)) is None


def test_float32_search_keeps_face_counterexamples_and_rejects_rounding_artefacts() -> None:
    """The default (float32) search is judged in exact arithmetic only.

    y = x0 - c - x1 with c = float64(0.37) on [0, c] x [0, 1]: only the corner (c, 0), which
    the random search's corners (lo, hi, centre) miss, reaches y >= 0 (y = 0 exactly there);
    float32 rounds c up, one ulp outside the box, so PGD's candidate must be clipped back, not
    lost. (With y = 1e8 (x0 - 0.37 - x1), as this test had before issue 15, the corner is
    not a counterexample in exact arithmetic: 1e8 * float64(0.37) < 0.37e8.)
    y' = (x0 + 1) - 1 on [1e-9, 1]: float32 absorbs x0 and computes y' = 0 at the low face,
    but y' > 0 everywhere in float64, so "y' <= 0" has no counterexample.
    """
    face = Network((Dense([[1.0, -1.0]], [-0.37]),), (2,))
    prop = Property(InputBox(np.zeros(2), np.array([0.37, 1.0])),
                    UnsafeSet((HalfSpaces([[-1.0]], [0.0]),)))
    assert np.float64(np.float32(0.37)) > 0.37
    cex = falsify(face, prop, AttackOptions(samples=0, restarts=4, steps=20))
    assert cex is not None and cex.x.tolist() == [0.37, 0.0]
    absorbed = Network((Dense([[1.0]], [1.0]), Dense([[1.0]], [-1.0])), (1,))
    prop = Property(InputBox(np.array([1e-9]), np.ones(1)),
                    UnsafeSet((HalfSpaces([[1.0]], [0.0]),)))
    assert falsify(absorbed, prop, AttackOptions(samples=64, restarts=4, steps=20)) is None
