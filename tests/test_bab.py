"""Branch and bound against an independent oracle on tiny random networks (sat and unsat)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnbver.bab.loop import BabOptions, run_bab, stall_budget
from bnbver.result import Stats, Status, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output


def _instance(seed: int, n_in: int, hidden: list[int], offset: float):
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [n_in, *hidden, 2], scale=1.5)
    box = InputBox(-np.ones(n_in), np.ones(n_in))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    threshold = best + offset
    # unsafe: y0 - y1 >= threshold  <=>  -(y0 - y1) <= -threshold
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-threshold]),)))
    return net, prop, best >= threshold


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_in=st.integers(1, 3),
       hidden=st.lists(st.integers(2, 4), min_size=1, max_size=2),
       offset=st.sampled_from([-0.05, 0.05, 0.2]), split=st.sampled_from(["relu", "input"]))
def test_bab_matches_oracle(seed: int, n_in: int, hidden: list[int], offset: float,
                            split: str) -> None:
    net, prop, violated = _instance(seed, n_in, hidden, offset)
    opts = BabOptions(split=split, batch_size=8, iterations=5)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    if violated:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None
    else:
        assert result.certificate is not None and len(result.certificate.leaves) >= 1


def test_deadline_respected() -> None:
    rng = np.random.default_rng(3)
    net = random_relu_net(rng, [8, 40, 40, 2])
    box = InputBox(-np.ones(8), np.ones(8))
    samples = net.forward(rng.uniform(-1, 1, (5000, 8)))
    thr = float((samples[:, 0] - samples[:, 1]).max()) + 0.01  # hard: barely unreachable?
    prop = Property(box, UnsafeSet((HalfSpaces([[-1.0, 1.0]], [-thr]),)))
    run_bab(net, prop, BabOptions(split="relu"), deadline=time.monotonic() + 0.5)  # warm up
    start = time.monotonic()
    result = run_bab(net, prop, BabOptions(split="relu", batch_size=4), deadline=start + 3.0)
    elapsed = time.monotonic() - start
    assert result.status in (Status.HOLDS, Status.VIOLATED, Status.TIMEOUT)
    assert elapsed < 3.0 * 1.05


@pytest.mark.parametrize("offset", [0.01, -0.01])
@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_fully_split_leaves_are_decided_by_lp(seed: int, offset: float) -> None:
    """With interval bounds only, nodes close late; fully split leaves go to the exact LP."""
    net, prop, violated = _instance(seed, 2, [3, 3], offset)
    opts = BabOptions(split="relu", batch_size=4, root_method="ibp", child_method="ibp",
                      milp_max_unstable=0)
    _check_oracle_and_leaf(net, prop, violated, opts, "lp")


def _check_oracle_and_milp_leaf(net, prop, violated: bool, opts: BabOptions) -> None:  # type: ignore[no-untyped-def]
    _check_oracle_and_leaf(net, prop, violated, opts, "milp")


def _check_oracle_and_leaf(net, prop, violated: bool, opts: BabOptions,  # type: ignore[no-untyped-def]
                           method: str) -> None:
    """Run the search; the answer matches the oracle, and a proof has a leaf closed by
    ``method`` ("lp" or "milp", counted in the stats too)."""
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    if violated:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None
    else:
        assert getattr(result.stats, f"{method}_calls") > 0
        assert any(leaf.method == method for leaf in result.certificate.leaves)


@pytest.mark.parametrize("offset", [0.01, -0.01])
@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_small_subtrees_are_decided_by_milp(seed: int, offset: float) -> None:
    """Nodes with few unstable neurons go to the MILP; answers still match the oracle."""
    net, prop, violated = _instance(seed, 2, [3, 3], offset)
    opts = BabOptions(split="relu", batch_size=4, root_method="ibp", child_method="ibp",
                      milp_max_unstable=6)
    _check_oracle_and_milp_leaf(net, prop, violated, opts)


@pytest.mark.parametrize("offset", [0.01, -0.01])
@pytest.mark.parametrize("seed", [1, 2, 4, 5])
def test_stalled_search_hands_the_worst_node_to_milp(seed: int, offset: float) -> None:
    """With a stall declared after every round, the worst open node goes to the MILP;
    the answers still match the oracle and, when it holds, a stall MILP closed a leaf."""
    net, prop, violated = _instance(seed, 2, [3, 3], offset)
    opts = BabOptions(split="relu", batch_size=1, root_method="ibp", child_method="ibp",
                      milp_max_unstable=0, stall_rounds=1, stall_tol=1e9)
    _check_oracle_and_milp_leaf(net, prop, violated, opts)


@pytest.mark.parametrize("offset", [0.02, -0.02])
def test_root_lp_tightening_keeps_answers(offset: float) -> None:
    net, prop, violated = _instance(9, 2, [4, 4], offset)
    plain = run_bab(net, prop, BabOptions(split="relu", batch_size=4),
                    deadline=time.monotonic() + 60)
    tight = run_bab(net, prop, BabOptions(split="relu", batch_size=4, tighten="lp"),
                    deadline=time.monotonic() + 60)
    expected = Status.VIOLATED if violated else Status.HOLDS
    assert plain.status is expected and tight.status is expected
    milp = run_bab(net, prop, BabOptions(split="relu", batch_size=4, tighten="milp",
                                         tighten_jobs=2), deadline=time.monotonic() + 60)
    assert milp.status is expected
    # A probe search too short to decide anything: the answer comes from the second search.
    stats = Stats()
    late = run_bab(net, prop, BabOptions(split="relu", batch_size=4, tighten="milp",
                                         tighten_after=1e-9, root_method="ibp"),
                   deadline=time.monotonic() + 60, stats=stats)
    assert late.status is expected and stats.seconds_by_phase["probe"] > 0


def test_stall_budget_is_a_share_of_the_time_limit_not_of_the_elapsed_time() -> None:
    """The first stall MILP of a 300 s search gets its full 20 s (a share of the time elapsed
    gave it almost nothing, and 256x4 prop_8_0.03 went from 11 s to a timeout); the MILPs
    stop once they have used 30 % of the limit."""
    opts = BabOptions(stall_milp_time=20.0, stall_share=0.3)
    assert stall_budget(opts, 300.0, 0.0) == 20.0
    assert stall_budget(opts, 300.0, 85.0) == pytest.approx(5.0)
    assert stall_budget(opts, 300.0, 90.0) <= 0.0


@pytest.mark.parametrize(("split", "clip"), [("relu", True), ("input", False), ("input", True)])
@pytest.mark.parametrize("offset", [0.05, 0.2])
@pytest.mark.parametrize("seed", [3, 7])
def test_issue_18_lower_bound_is_a_proven_bound_of_the_true_margin(
        seed: int, offset: float, split: str, clip: bool) -> None:
    """The smallest margin over the box is exactly ``offset`` (oracle). A proof reports a
    global lower bound in (0, offset] (or 0 where input-domain clipping cut regions away:
    it only knows that their margin is positive), and its disjunct bound lies between."""
    net, prop, violated = _instance(seed, 2, [3, 3], offset)
    assert not violated
    result = run_bab(net, prop, BabOptions(split=split, clip=clip, batch_size=4),
                     deadline=time.monotonic() + 60)
    assert result.status is Status.HOLDS
    assert result.lower_bound is not None and result.lower_bound <= offset + 1e-9
    assert result.lower_bound >= 0.0 if (split == "input" and clip) else result.lower_bound > 0
    (per,) = result.disjunct_bounds
    assert result.lower_bound - 1e-12 <= per[0] <= offset + 1e-9


def test_issue_18_per_disjunct_bounds_bound_each_disjunct() -> None:
    """Robustness-style disjuncts ``y_l - y_j <= 0``: each reported bound is at most the
    exact minimum of that disjunct's margin (oracle), and the global bound is their min."""
    rng = np.random.default_rng(11)
    net = random_relu_net(rng, [2, 4, 3, 3], scale=1.5)
    box = InputBox(-0.05 * np.ones(2), 0.05 * np.ones(2))
    label = int(np.argmax(net.forward(np.zeros(2))))
    disjuncts, exact = [], []
    for j in range(3):
        if j != label:
            row = np.zeros(3)
            row[label], row[j] = 1.0, -1.0
            disjuncts.append(HalfSpaces(row[None, :], np.zeros(1)))
            exact.append(-max_linear_output(net, -row, box.lower, box.upper)[0])
    prop = Property(box, UnsafeSet(tuple(disjuncts)))
    result = run_bab(net, prop, BabOptions(split="relu", batch_size=4),
                     deadline=time.monotonic() + 60)
    assert result.status is Status.HOLDS and result.lower_bound is not None
    (per,) = result.disjunct_bounds
    assert len(per) == 2
    for bound, true_min in zip(per, exact, strict=True):
        assert bound <= true_min + 1e-9
        assert bound >= result.lower_bound - 1e-12
    assert result.lower_bound <= min(exact) + 1e-9


def test_issue_18_timeout_carries_the_global_lower_bound_as_a_field() -> None:
    """A search stopped at once times out with the root's bound in ``lower_bound`` (the same
    number the message prints), below the true smallest margin."""
    net, prop, _violated = _instance(5, 3, [4, 4], 0.02)
    result = run_bab(net, prop, BabOptions(split="relu", batch_size=4, root_method="ibp"),
                     deadline=time.monotonic())
    assert result.status is Status.TIMEOUT
    assert result.lower_bound is not None and result.lower_bound <= 0.02
    assert f"global lower bound {result.lower_bound:.4g}" in result.message


def test_issue_18_search_logs_progress_at_info_level(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """``bnbver -v`` shows the search's nodes, open nodes, bound and elapsed time."""
    import bnbver.bab.loop as loop

    monkeypatch.setattr(loop, "PROGRESS_LOG_SECONDS", 0.0)
    net, prop, _ = _instance(4, 2, [3, 3], 0.01)
    with caplog.at_level("INFO", logger="bnbver.bab.loop"):
        run_bab(net, prop, BabOptions(split="relu", batch_size=1, root_method="ibp",
                                      child_method="ibp", milp_max_unstable=0),
                deadline=time.monotonic() + 60)
    lines = [r.getMessage() for r in caplog.records if r.name == "bnbver.bab.loop"]
    assert any("nodes" in m and "open" in m and "global lower bound" in m for m in lines)


def _disjunct_instance(seed: int, hidden: list[int], offsets: list[float]):
    """Three one-row disjuncts ``c_j y >= t_j``, each ``t_j`` the exact maximum of ``c_j y``
    plus an offset (negative: that disjunct is reachable)."""
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [2, *hidden, 4], scale=1.5)
    box = InputBox(-np.ones(2), np.ones(2))
    disjuncts, violated = [], False
    for off in offsets:
        c = rng.normal(size=4)
        best, _ = max_linear_output(net, c, box.lower, box.upper)
        disjuncts.append(HalfSpaces([-c], [-(best + off)]))
        violated |= best >= best + off
    return net, Property(box, UnsafeSet(tuple(disjuncts))), violated


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), hidden=st.lists(st.integers(3, 5), min_size=1,
                                                    max_size=2),
       offsets=st.lists(st.sampled_from([-0.05, 0.03, 0.2]), min_size=3, max_size=3))
def test_one_root_per_open_disjunct_matches_oracle(seed: int, hidden: list[int],
                                                   offsets: list[float]) -> None:
    net, prop, violated = _disjunct_instance(seed, hidden, offsets)
    opts = BabOptions(split="relu", batch_size=8, iterations=5, disjunct_roots=True)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    if violated:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None


def test_by_disjunct_gives_each_open_disjunct_its_own_node() -> None:
    """Each copy keeps its own disjunct's rows and counts the others as proven; copies
    exist only for the disjuncts the root leaves open, and their bounds are sound."""
    from bnbver.bab.bounding import NodeBounder

    net, prop, _ = _disjunct_instance(5, [5, 5], [0.03, 0.03, 0.03])
    bounder = NodeBounder(net, prop, BabOptions(split="relu", iterations=5), "relu")
    root = bounder.bound_root(prop.box.lower, prop.box.upper)
    open_k = np.flatnonzero(~(root.disjunct_bounds > 0))
    assert open_k.size >= 2
    copies = bounder.by_disjunct(root)
    assert len(copies) == open_k.size
    for k, copy in zip(open_k, copies, strict=True):
        per = copy.disjunct_bounds
        assert np.isinf(np.delete(per, k)).all() and np.isfinite(per[k])
        assert per[k] >= root.disjunct_bounds[k] - 1e-12  # warm-started from the root
        assert per[k] <= 0.03 + 1e-9  # the disjunct's exact minimum margin is its offset
        assert copy.lower_bound == per[k]
