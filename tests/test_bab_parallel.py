"""Parallel subtrees: joblib processes and a Dask cluster give the oracle's answers."""

from __future__ import annotations

import time

import joblib
import numpy as np
import pytest

import bnbver.bab.parallel as par
from bnbver.bab.loop import BabOptions
from bnbver.bab.parallel import run_parallel
from bnbver.driver import verify
from bnbver.result import Status, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output


def _instance(seed: int, offset: float):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 5, 4, 2], scale=1.5)
    box = InputBox(-np.ones(3), np.ones(3))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-(best + offset)]),)))
    return net, prop


@pytest.mark.parametrize(("offset", "expected"), [(0.02, Status.HOLDS), (-0.02, Status.VIOLATED)])
@pytest.mark.parametrize("split", ["relu", "input"])
def test_parallel_subtrees_match_oracle(offset: float, expected: Status, split: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    net, prop = _instance(7, offset)
    gathered = []
    original = par._gather

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        gathered.append(len(args[3]))
        return original(*args, **kwargs)

    monkeypatch.setattr(par, "SUBTREES_PER_JOB", 1)  # cut the tree after 2 open nodes
    monkeypatch.setattr(par, "_gather", spy)
    # Interval bounds keep the tree from closing before it is cut (stronger bounds may
    # prove these tiny instances at the root).
    options = BabOptions(split=split, jobs=2, batch_size=1, iterations=5, milp_max_unstable=0,
                         root_method="ibp", child_method="ibp" if split == "relu" else "beta")
    result = run_parallel(net, prop, options, deadline=time.monotonic() + 120)
    assert gathered and gathered[0] >= 2, "the search was not cut into subtrees"
    assert result.status is expected
    if expected is Status.VIOLATED:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None


def test_dask_cluster_runs_an_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    net, prop = _instance(7, 0.02)
    monkeypatch.setattr(par, "SUBTREES_PER_JOB", 1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        result = verify(net, prop, timeout=120, jobs=2, split="input", batch_size=1,
                        iterations=5, samples=0, restarts=0, steps=0)
    assert result.status is Status.HOLDS
    # Leaves of at least two subtrees (each has its own root) are in the certificate.
    assert result.certificate is not None and len(result.certificate.leaves) >= 2
