"""Inferred cuts (bnbver.bab.nogoods): the store's rules, and searches that use them against
the exact oracle (every learned nogood is checked to be safe by pattern enumeration)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbver.bab import nogoods as ng
from bnbver.bab.loop import BabOptions, run_bab
from bnbver.result import Status, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from bnbver.splits import Split, SplitSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output


def _masks(rows: list[list[int]], sizes: list[int]) -> list[torch.Tensor]:
    """Per-layer (B, n_l) int8 masks from flat rows over all layers."""
    flat = torch.tensor(rows, dtype=torch.int8)
    return list(torch.split(flat, sizes, dim=1))


def test_store_closes_covered_nodes_and_implies_the_missing_split() -> None:
    store = ng.Nogoods([3, 2])
    good = SplitSet.of([Split(0, 1, True), Split(1, 0, False)])
    assert store.add([good, good, SplitSet()]) == 1 and len(store) == 1 and good in store
    masks = _masks([[0, 1, 0, -1, 0],    # both literals: closed
                    [1, 1, -1, -1, 1],   # both, and more splits: closed
                    [0, 1, 0, 0, 0],     # all but (1, 0), which is free: implied inactive->active
                    [0, 1, 0, 1, 0],     # (1, 0) has the other phase: nothing
                    [0, 0, 0, 0, 0]],    # two literals missing: nothing
                   [3, 2])
    safe, implied = store.match(masks)
    assert safe.tolist() == [True, True, False, False, False]
    assert implied == [(2, Split(1, 0, True))]


def test_two_nogoods_that_imply_both_phases_close_the_node() -> None:
    store = ng.Nogoods([2])
    store.add([SplitSet.of([Split(0, 0, True), Split(0, 1, True)]),
               SplitSet.of([Split(0, 0, True), Split(0, 1, False)])])
    safe, implied = store.match(_masks([[1, 0]], [2]))
    assert safe.tolist() == [True] and implied == []


def test_capacity_and_contradictions() -> None:
    store = ng.Nogoods([4], capacity=2)
    bad = SplitSet.of([Split(0, 0, True), Split(0, 0, False)])
    sets = [SplitSet.of([Split(0, k, True)]) for k in range(4)]
    assert store.add([bad, *sets]) == 2 and len(store) == 2


def test_zero_multiplier_splits_are_dropped_unless_kept() -> None:
    splits = SplitSet.of([Split(0, 0, True), Split(0, 2, False), Split(1, 1, True)])
    beta = [torch.zeros((2, 3, 4)), None]
    beta[0][1, 2, 2] = 0.5  # node 1 uses (0, 2) in its third row
    assert ng.zero_multiplier_splits(splits, beta, 1) == SplitSet.of([Split(0, 2, False)])
    keep = SplitSet.of([Split(1, 1, True)])
    assert ng.zero_multiplier_splits(splits, beta, 0, keep) == keep


def _instance(seed: int, hidden: list[int], offset: float
              ) -> tuple[object, Property, bool, float, np.ndarray]:
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, *hidden, 2], scale=1.5)
    box = InputBox(-np.ones(3), np.ones(3))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    thr = best + offset
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-thr]),)))
    return net, prop, best >= thr, thr, c


def _learned(monkeypatch: pytest.MonkeyPatch) -> list[SplitSet]:
    """Record every split set the search stores as a nogood."""
    seen: list[SplitSet] = []
    add = ng.Nogoods.add

    def spy(self: ng.Nogoods, sets: object) -> int:
        sets = list(sets)  # type: ignore[call-overload]
        seen.extend(sets)
        return add(self, sets)

    monkeypatch.setattr(ng.Nogoods, "add", spy)
    return seen


def test_search_with_nogoods_learns_only_safe_sets_and_uses_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10-ReLU net whose search learns, closes and implies by nogoods (seed found by a
    scan); the answer is the oracle's and every learned set is safe by enumeration."""
    hidden = [5, 5]
    net, prop, violated, thr, c = _instance(9, hidden, 0.02)
    learned = _learned(monkeypatch)
    opts = BabOptions(split="relu", batch_size=2, iterations=3, nogoods=True,
                      milp_max_unstable=0, stall_rounds=0, jobs=1)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 120)
    assert not violated and result.status is Status.HOLDS
    counts = result.stats.counts
    assert counts["nogoods_learned"] > 0
    assert counts["nogoods_closed"] + counts["nogoods_implied"] > 0
    for s in learned:
        fixed = {sum(hidden[:sp.layer]) + sp.unit: int(sp.active) for sp in s}
        best, _ = max_linear_output(net, c, prop.box.lower, prop.box.upper, fixed)
        assert best < thr, (s, best, thr)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), hidden=st.sampled_from([[4, 4], [3, 3, 2], [6]]),
       offset=st.sampled_from([-0.05, 0.02, 0.2]))
def test_search_with_nogoods_matches_oracle(seed: int, hidden: list[int],
                                            offset: float) -> None:
    net, prop, violated, _, _ = _instance(seed, hidden, offset)
    opts = BabOptions(split="relu", batch_size=2, iterations=3, nogoods=True,
                      milp_max_unstable=0, stall_rounds=0, jobs=1)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    if violated:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None
