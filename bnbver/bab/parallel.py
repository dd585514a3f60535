"""Parallel subtrees: cut the search tree into independent pieces and run them with joblib.

The root is branched in this process until ``jobs * SUBTREES_PER_JOB`` nodes are open; each
open node (an input box plus a split set) becomes an independent BaB task. Tasks run under
whatever joblib backend is active: local processes (loky, the default) with one torch thread
each, or a Dask cluster inside ``joblib.parallel_config(backend="dask")``. Results stream back
unordered; the first ``sat`` sets a stop flag (a file all local workers poll) and the rest are
abandoned. Deadlines cross process boundaries as wall-clock times (``time.time()``), each task
turning its remaining seconds back into a local monotonic deadline.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bnbver.bab.loop import BabOptions, leaves_bound, run_bab
from bnbver.network import Network
from bnbver.result import Certificate, Leaf, Result, Stats, Status
from bnbver.spec import InputBox, Property
from bnbver.splits import SplitSet

SUBTREES_PER_JOB = 4


def run_parallel(network: Network, prop: Property, options: BabOptions, deadline: float,
                 stats: Stats | None = None, seed: int = 0) -> Result:
    """Decide ``prop`` with ``options.jobs`` parallel subtrees (see the module docstring)."""
    stats = stats if stats is not None else Stats()
    head = run_bab(network, prop, replace(options, jobs=1), deadline, stats, seed,
                   max_open=options.jobs * SUBTREES_PER_JOB)
    if head.status is not Status.UNKNOWN or not head.open_nodes:
        return head
    leaves = list(head.certificate.leaves) if head.certificate else []
    with tempfile.TemporaryDirectory(prefix="bnbver-") as tmp:
        flag = str(Path(tmp) / "stop")
        wall_deadline = time.time() + (deadline - time.monotonic())
        return _gather(network, prop, options, head.open_nodes, wall_deadline, flag, seed,
                       stats, leaves, head.disjunct_bounds)


def _gather(network: Network, prop: Property, options: BabOptions,
            pieces: tuple[tuple[np.ndarray, np.ndarray, SplitSet], ...], wall_deadline: float,
            flag: str, seed: int, stats: Stats, leaves: list[Leaf],
            root: tuple[tuple[float, ...], ...] = ()) -> Result:
    """Run the subtrees and combine: any sat wins; all unsat gives unsat; else the worst."""
    from joblib import Parallel, delayed

    sub_opts = replace(options, jobs=1, record=None)
    tasks = (delayed(solve_subtree)(network, prop, sub_opts, lo, up, sp, wall_deadline, flag,
                                    seed + i) for i, (lo, up, sp) in enumerate(pieces))
    worst: Result | None = None
    results: Iterator[Result] = Parallel(n_jobs=options.jobs,
                                         return_as="generator_unordered")(tasks)
    bound: float | None = leaves_bound(leaves)
    for sub in results:
        _merge_stats(stats, sub.stats)
        if sub.status is Status.VIOLATED:
            Path(flag).touch()
            return replace(sub, stats=stats)
        bound = None if bound is None or sub.lower_bound is None else min(bound,
                                                                         sub.lower_bound)
        if sub.status is Status.HOLDS and sub.certificate is not None:
            leaves.extend(sub.certificate.leaves)
        elif worst is None or sub.status is Status.TIMEOUT:
            worst = sub
    if worst is not None:
        return replace(worst, stats=stats, open_nodes=(), **_bound_fields(root, bound))
    return Result(Status.HOLDS, certificate=Certificate(tuple(leaves)), stats=stats,
                  **_bound_fields(root, bound))


def _bound_fields(root: tuple[tuple[float, ...], ...], bound: float | None) -> dict[str, Any]:
    """Return the combined bound fields: the smallest subtree bound, and per disjunct at
    least that and the root's bound (``root``: the head search's ``disjunct_bounds``)."""
    if bound is None:
        return {"lower_bound": None, "disjunct_bounds": ()}
    return {"lower_bound": bound,
            "disjunct_bounds": tuple(tuple(max(v, bound) for v in row) for row in root)}


def solve_subtree(network: Network, prop: Property, options: BabOptions, lower: np.ndarray,
                  upper: np.ndarray, splits: SplitSet, wall_deadline: float, flag: str,
                  seed: int) -> Result:
    """Run one subtree in a worker (one torch thread); poll ``flag`` to stop early."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    deadline = time.monotonic() + max(wall_deadline - time.time(), 0.0)
    sub = Property(InputBox(lower, upper), prop.unsafe, prop.name)
    return run_bab(network, sub, options, deadline, Stats(), seed, root_splits=splits,
                   should_stop=lambda: os.path.exists(flag))


def _merge_stats(total: Stats, part: Stats) -> None:
    total.nodes += part.nodes
    total.max_depth = max(total.max_depth, part.max_depth)
    total.bound_calls += part.bound_calls
    total.lp_calls += part.lp_calls
    total.milp_calls += part.milp_calls
    for k, v in part.seconds_by_phase.items():
        total.add_time(k, v)
