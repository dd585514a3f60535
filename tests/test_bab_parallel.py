"""Processes sharing one search: oracle answers, exact coverage, the stop flag, Dask, jobs=auto."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import joblib
import numpy as np
import pytest

import bnbver.bab.parallel as par
from bnbver.bab.loop import BabOptions, Relay, run_bab
from bnbver.bab.parallel import Board, ShareOptions, resolve_jobs, run_parallel, validate_jobs
from bnbver.driver import verify
from bnbver.errors import InputError
from bnbver.result import Certificate, Result, Stats, Status, validate_counterexample
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
from tests.conftest import random_relu_net
from tests.oracle import max_linear_output

#: Move the frontier after every round of every task: the most hand-overs a search can have.
EVERY_ROUND = ShareOptions(head_open_per_job=1, min_slice=0.0, max_slice=0.0,
                           wait_for_workers=False)


#: Nets whose trees have 100-600 nodes under ``_options``.
SEED = {"relu": 7, "input": 2}


def _instance(seed: int, offset: float):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    net = random_relu_net(rng, [3, 5, 4, 2], scale=1.5)
    box = InputBox(-np.ones(3), np.ones(3))
    c = np.array([1.0, -1.0])
    best, _ = max_linear_output(net, c, box.lower, box.upper)
    prop = Property(box, UnsafeSet((HalfSpaces([-c], [-(best + offset)]),)))
    return net, prop


def _options(split: str, **kw: object) -> BabOptions:
    # Interval bounds keep the tree from closing at once (stronger bounds prove these tiny
    # instances at the root); no clipping, so that the leaves tile the box exactly.
    base = dict(split=split, jobs=2, batch_size=4, iterations=5, milp_max_unstable=0,
                root_method="ibp", child_method="ibp" if split == "relu" else "beta",
                clip=False, attack_nodes=0, stall_rounds=0)
    base.update(kw)
    return BabOptions(**base)  # type: ignore[arg-type]


def _count_waves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    original = par._wave

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        sizes.append(len(args[4]))
        return original(*args, **kwargs)

    monkeypatch.setattr(par, "_wave", spy)
    return sizes


def _assert_tiles(cert: Certificate, box: InputBox, split: str) -> None:
    """The leaves cover the property exactly once: boxes tile the box (input splits), or the
    split sets are the leaves of one complete binary tree (ReLU splits)."""
    leaves = cert.leaves
    if split == "input":
        volume = sum(float(np.prod(f.upper - f.lower)) for f in leaves)
        assert volume == pytest.approx(float(np.prod(box.upper - box.lower)), rel=1e-12)
        for a, b in itertools.combinations(leaves, 2):
            overlap = np.minimum(a.upper, b.upper) - np.maximum(a.lower, b.lower)
            assert np.any(overlap <= 0), "two leaves overlap"
        return
    sets = [{(s.layer, s.unit): s.active for s in f.splits} for f in leaves]
    # Kraft equality plus prefix-freeness: every activation pattern is in exactly one leaf.
    assert sum(2.0 ** -len(s) for s in sets) == pytest.approx(1.0, abs=1e-12)
    for a, b in itertools.combinations(sets, 2):
        assert any(k in b and b[k] != v for k, v in a.items()), "two leaves overlap"


@pytest.mark.parametrize(("offset", "expected"), [(0.02, Status.HOLDS), (-0.02, Status.VIOLATED)])
@pytest.mark.parametrize("split", ["relu", "input"])
def test_sharing_every_round_matches_oracle(offset: float, expected: Status, split: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    net, prop = _instance(SEED[split], offset)
    waves = _count_waves(monkeypatch)
    result = run_parallel(net, prop, _options(split), time.monotonic() + 120,
                          share=EVERY_ROUND)
    assert waves, "the search never left this process"
    assert result.status is expected, result.message
    if expected is Status.VIOLATED:
        assert validate_counterexample(net, prop, result.counterexample.x) is not None
        return
    assert len(waves) >= 3, "the frontier did not move between processes"
    _assert_tiles(result.certificate, prop.box, split)
    alone = run_bab(net, prop, _options(split, jobs=1), time.monotonic() + 120)
    # No node is bounded twice: the shared search bounds the nodes of the one-process search
    # (the branching of a node depends on the node only).
    assert result.stats.nodes == alone.stats.nodes
    assert len(result.certificate.leaves) == len(alone.certificate.leaves)
    assert result.lower_bound == pytest.approx(alone.lower_bound)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sharing_matches_oracle_on_random_nets(seed: int) -> None:
    """Other nets, both answers (the sign of the margin is the oracle's), bigger batches."""
    for offset in (0.05, -0.05):
        net, prop = _instance(seed, offset)
        result = run_parallel(net, prop, _options("relu", batch_size=16),
                              time.monotonic() + 120, share=EVERY_ROUND)
        assert result.status is (Status.HOLDS if offset > 0 else Status.VIOLATED), seed


def test_first_sat_stops_the_other_tasks(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """The task that finds the counterexample raises the stop flag; the next task stops at
    its first round (tasks run one after another here, in dealing order)."""
    net, prop = _instance(SEED["input"], -0.02)
    options = _options("input", jobs=1)
    relay = Relay(hand_back=lambda n: n >= 4)
    run_bab(net, prop, options, time.monotonic() + 60, relay=relay)
    _, x = max_linear_output(net, np.array([1.0, -1.0]), prop.box.lower, prop.box.upper)
    bad = [n for n in relay.returned if np.all(n.lower <= x) and np.all(x <= n.upper)][:1]
    rest = [n for n in relay.returned if n is not bad[0]]
    groups = [par.pack_nodes(bad), par.pack_nodes(rest)]
    seen: list[par.Outcome] = []
    original = par._absorb
    monkeypatch.setattr(par, "_absorb", lambda t, out: (seen.append(out), original(t, out)))
    tally = par._Tally(Stats(), [], float("inf"), ())
    board = Board(str(tmp_path))
    with joblib.parallel_config(backend="sequential"):
        found = par._wave(net, prop, options, 2, groups, time.time() + 60, board, 0, tally,
                          ShareOptions())
    assert board.stopped()
    assert found is not None and found.status is Status.VIOLATED
    assert validate_counterexample(net, prop, found.counterexample.x) is not None
    assert [o.result.status for o in seen] == [Status.VIOLATED, Status.UNKNOWN]
    assert seen[1].result.message == "cancelled" and seen[1].result.stats.nodes == 0


def test_a_task_hands_back_only_to_an_idle_process(tmp_path: Path) -> None:
    net, prop = _instance(SEED["input"], 0.02)
    options = _options("input", jobs=1)
    relay = Relay(hand_back=lambda n: n >= 4)
    run_bab(net, prop, options, time.monotonic() + 60, relay=relay)
    pack = par.pack_nodes(relay.returned)
    board = Board(str(tmp_path))
    share = ShareOptions(min_slice=0.0)
    board.set_hungry(True)
    handed = par.run_task(net, prop, options, pack, time.time() + 60, board, 0, share)
    assert handed.result.status is Status.UNKNOWN and handed.returned is not None
    # One round (the task always makes progress), then its open nodes go to the idle one.
    assert handed.result.stats.nodes == 2 * options.batch_size
    board.set_hungry(False)
    done = par.run_task(net, prop, options, pack, time.time() + 60, board, 0, share)
    assert done.result.status is Status.HOLDS and done.returned is None
    assert len(done.leaves) > 0 and done.closed_bound > 0
    blind = Board(str(tmp_path / "elsewhere"))  # another machine: hands back on time only
    late = par.run_task(net, prop, options, pack, time.time() + 60, blind, 0,
                        ShareOptions(min_slice=0.0, blind_slice=0.0))
    assert late.returned is not None


def test_dask_cluster_shares_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    waves = _count_waves(monkeypatch)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster), joblib.parallel_config(backend="dask"):
        assert resolve_jobs("auto") == 2
        results = {}
        for offset in (0.02, -0.02):
            net, prop = _instance(SEED["input"], offset)
            results[offset] = run_parallel(net, prop, _options("input"), time.monotonic() + 120,
                                           share=EVERY_ROUND)
        net, prop = _instance(7, 0.02)
        via_verify = verify(net, prop, timeout=120, jobs=2, split="input", batch_size=1,
                            iterations=5, samples=0, restarts=0, steps=0)
    assert len(waves) >= 3
    assert results[0.02].status is Status.HOLDS
    _assert_tiles(results[0.02].certificate, _instance(SEED["input"], 0.02)[1].box, "input")
    assert results[-0.02].status is Status.VIOLATED
    assert via_verify.status is Status.HOLDS


def test_jobs_auto_resolves_to_the_cores_outside_workers() -> None:
    assert resolve_jobs("auto") == joblib.cpu_count()
    assert resolve_jobs(3) == 3
    assert resolve_jobs("auto", device="cuda") == 1
    inner = joblib.Parallel(n_jobs=2)(joblib.delayed(resolve_jobs)("auto") for _ in range(2))
    assert inner == [1, 1], "a worker of another parallel loop must not spread again"


@pytest.mark.parametrize("bad", [0, -1, "x", True, 1.5, "0"])
def test_validate_jobs_refuses(bad: object) -> None:
    with pytest.raises(InputError, match="--jobs"):
        validate_jobs(bad)


def test_validate_jobs_accepts() -> None:
    assert [validate_jobs(v) for v in ("auto", 2, "3")] == ["auto", 2, 3]


def test_jobs_auto_stays_in_process_until_auto_after(monkeypatch: pytest.MonkeyPatch) -> None:
    net, prop = _instance(7, 0.02)
    waves = _count_waves(monkeypatch)
    options = _options("relu", jobs="auto", batch_size=8)
    never = run_parallel(net, prop, options, time.monotonic() + 120,
                         share=ShareOptions(auto_after=1e6))
    assert never.status is Status.HOLDS and not waves
    if joblib.cpu_count() < 2:
        pytest.skip("one core: auto is always 1")
    now = run_parallel(net, prop, options, time.monotonic() + 120,
                       share=replace_share(EVERY_ROUND, auto_after=0.0))
    assert now.status is Status.HOLDS and waves


def replace_share(share: ShareOptions, **kw: float) -> ShareOptions:
    from dataclasses import replace

    return replace(share, **kw)


def test_results_of_tasks_are_combined_like_one_search() -> None:
    """A decided head is returned as is (no process is started)."""
    net, prop = _instance(7, 0.5)
    result = run_parallel(net, prop, BabOptions(jobs=2), time.monotonic() + 60)
    assert isinstance(result, Result) and result.status is Status.HOLDS
