"""Branch and bound on DAG networks (issue 19), against exact oracles.

ResNet-style blocks (two layers plus an identity shortcut, and a projection shortcut; dense
and convolutional) small enough for an exact oracle: for a threshold just above the true
maximum of ``c . f(x)`` the property holds (``unsat``), just below it is violated (``sat``,
with a counterexample); and a fuzz over random small residual networks compares bnbver's
answer with the oracle's.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.loop import BabOptions
from bnbver.driver import verify
from bnbver.network import Add, Concat, Dense, Layer, Network, ReLU
from bnbver.result import Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.graph_cases import conv_resnet, residual_net
from tests.oracle import max_linear_output_graph, max_linear_output_milp

GAP = 0.05


def _property(box: InputBox, c: np.ndarray, threshold: float) -> Property:
    """Unsafe: ``c . y >= threshold`` (written ``-c . y <= -threshold``)."""
    return Property(box, UnsafeSet((HalfSpaces(-c[None], np.array([-threshold])),)), "p")


def check_around_the_maximum(net: Network, box: InputBox, c: np.ndarray, best: float,
                             branching: str = "babsr", **options: object) -> None:
    """Verify ``c . y >= best +- GAP``: unsat just above the maximum, sat just below (with a
    counterexample that reaches it), with ``options`` for ``verify``."""
    for gap, expect in ((GAP, Status.HOLDS), (-GAP, Status.VIOLATED)):
        res = verify(net, _property(box, c, best + gap), timeout=60, split="relu",
                     branching=branching, **options)  # type: ignore[arg-type]
        assert res.status is expect, (gap, res.message)
        if expect is Status.VIOLATED:
            assert res.counterexample is not None
            y = net.forward(res.counterexample.x)
            assert float(c @ y) >= best - GAP - 1e-9


@pytest.mark.parametrize("shortcut", ["identity", "projection", "concat"])
@pytest.mark.parametrize("branching", ["babsr", "fsb"])
def test_issue_19_dense_residual_blocks_match_the_oracle(shortcut: str, branching: str) -> None:
    rng = np.random.default_rng(31)
    net = residual_net(rng, n_in=3, width=3, blocks=2, shortcut=shortcut)
    box = InputBox(-np.ones(3), np.ones(3))
    c = rng.normal(size=2)
    best = max_linear_output_milp(net, c, box.lower, box.upper)
    check_around_the_maximum(net, box, c, best, branching)


def conv_resnet_case() -> tuple[Network, InputBox, np.ndarray, float]:
    """Two 3x3 convolutions plus an identity shortcut, then a strided block with a 1x1
    projection shortcut (35 ReLUs), a box, an output direction and its exact maximum."""
    rng = np.random.default_rng(32)
    net = conv_resnet(rng, channels=1, size=3)
    box = InputBox(-0.5 * np.ones(9), 0.5 * np.ones(9))
    c = rng.normal(size=2)
    return net, box, c, max_linear_output_milp(net, c, box.lower, box.upper)


def test_issue_19_conv_resnet_matches_the_oracle() -> None:
    """Sat and unsat around the MILP oracle's maximum of a tiny conv ResNet."""
    check_around_the_maximum(*conv_resnet_case())


def test_issue_19_babsr_sees_the_bias_of_a_residual_join() -> None:
    """BaBSR's bias feeding a ReLU after a join is the sum of the branches' biases."""
    rng = np.random.default_rng(33)
    net = residual_net(rng, n_in=3, width=3, blocks=1, shortcut="projection")
    box = InputBox(-np.ones(3), np.ones(3))
    bounder = NodeBounder(net, _property(box, np.ones(2), 0.0), BabOptions(), "relu")
    d2, d3, proj = net.layers[2], net.layers[4], net.layers[5]
    assert isinstance(d3, Dense) and isinstance(proj, Dense) and isinstance(d2, Dense)
    biases = [bounder._feeding_bias(s).numpy() for s in bounder.net.relu_slots]
    np.testing.assert_allclose(biases[1], d2.bias)
    np.testing.assert_allclose(biases[2], d3.bias + proj.bias)


def _random_dag(rng: np.random.Generator) -> Network:
    """A random small residual network: blocks with identity, projection or concat joins,
    sometimes a block whose shortcut skips two blocks (a tensor read three times)."""
    n_in, w = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    layers: list[Layer] = []
    inputs: list[tuple[int, ...]] = []

    def add(layer: Layer, *ins: int) -> int:
        layers.append(layer)
        inputs.append(ins)
        return len(layers) - 1

    def dense(n_out: int, n: int) -> Dense:
        return Dense(rng.normal(size=(n_out, n)), rng.normal(size=n_out) * 0.5)

    h = add(ReLU(w), add(dense(w, n_in), -1))
    first = h
    for _ in range(int(rng.integers(1, 3))):
        a = add(dense(w, w), add(ReLU(w), add(dense(w, w), h)))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            j = add(Add(w), a, h)
        elif kind == 1:
            j = add(Add(w), a, add(dense(w, w), h))
        elif kind == 2:
            j = add(dense(w, 2 * w), add(Concat((w, w)), h, a))
        else:
            j = add(Add(w), a, h, first) if first != h else add(Add(w), a, h)
        h = add(ReLU(w), j)
    add(dense(2, w), h)
    return Network(tuple(layers), (n_in,), inputs=tuple(inputs))


def _fuzz(seeds: range) -> dict[tuple[str, str], int]:
    tally: dict[tuple[str, str], int] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        net = _random_dag(rng)
        if sum(net.relu_sizes) > 10:
            continue
        box = InputBox(-np.ones(net.input_size), np.ones(net.input_size))
        c = rng.normal(size=2)
        best, _ = max_linear_output_graph(net, c, box.lower, box.upper)
        gap = GAP if rng.random() < 0.5 else -GAP
        res = verify(net, _property(box, c, best + gap), timeout=30, split="relu")
        expect = Status.HOLDS if gap > 0 else Status.VIOLATED
        assert res.status in (expect, Status.TIMEOUT, Status.UNKNOWN), (seed, res.message)
        key = (res.status.name, expect.name)
        tally[key] = tally.get(key, 0) + 1
    return tally


def test_issue_19_soundness_fuzz_random_residual_nets() -> None:
    """bnbver's answer never contradicts the activation-pattern oracle."""
    tally = _fuzz(range(12))
    assert sum(tally.values()) >= 6
    assert tally.get(("HOLDS", "HOLDS"), 0) + tally.get(("VIOLATED", "VIOLATED"), 0) >= 5


@pytest.mark.slow
def test_issue_19_soundness_fuzz_random_residual_nets_many() -> None:
    tally = _fuzz(range(100, 300))
    assert sum(tally.values()) >= 100


def test_issue_19_certificates_of_a_dag_are_refused_before_any_work() -> None:
    """The certificate checker (issue 16) reads chains: a DAG with ``certify`` is an input
    error, not a certificate nobody can check."""
    from bnbver.errors import InputError

    net = residual_net(np.random.default_rng(0))
    box = InputBox(-np.ones(3), np.ones(3))
    with pytest.raises(InputError, match="certificate.*residual joins"):
        verify(net, _property(box, np.ones(2), 100.0), timeout=10, certify="on")
