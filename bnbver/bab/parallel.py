"""Processes sharing one search: the frontier moves between them (dynamic work sharing).

1. **Head.** The search starts in this process (``run_bab`` with a :class:`Relay`). Meanwhile
   a background thread starts the worker processes (the torch import takes seconds), so the
   head searches while they start. It hands its open nodes back once the workers are ready
   and ``jobs * head_open_per_job`` nodes are open (:class:`ShareOptions`).
   With ``jobs="auto"`` the search stays in this process until it has run ``auto_after``
   seconds and has as long left (the workers start at half that time): most searches end
   sooner, and start-up would cost more than it saves; the time a search has run is the
   best guess of the time it still needs (a large frontier is not: ACAS Xu 1_1 prop_3
   closes 8,000 nodes in 2 s). Then it spreads over :func:`resolve_jobs` processes (the
   cores of this machine, or a Dask cluster's workers). A search that may spread runs with
   one torch thread per process, the head included.
2. **Waves.** The open nodes are dealt into ``jobs`` groups of alike bounds
   (``transfer.deal``); each group is one joblib task, a search that starts from those nodes
   with their engine state (``bab.transfer``: no node is bounded twice). When a task ends
   while others still run, a process is idle: the coordinator raises the *hungry* flag, and
   every running task hands its open nodes back at the end of its current round (once it
   has run ``min_slice`` seconds and holds two nodes or more; meanwhile it starts no MILP,
   which takes seconds, and leaves those nodes open). When all are back the wave
   ends, and the union of the open nodes is dealt again. So no process idles for longer
   than a round of another, a long search keeps every process busy to its end, and every
   node is searched by exactly one task.
3. **Answer.** The first ``sat`` raises the stop flag (the others stop at their next round)
   and wins. Otherwise the closed leaves of the head and of every task form the
   certificate, which tiles the root box: each open node is either closed by the task it
   was dealt to or handed back and dealt again. Counters add up over the processes.

Flags are files in a temporary folder that only this search uses, which every process of
this machine sees: local loky workers and a Dask ``LocalCluster``. A task that cannot see
the folder (a Dask worker on another machine) hands its nodes back every ``blind_slice``
seconds instead, and learns of a ``sat`` at that point. Deadlines cross processes as
wall-clock times (``time.time()``), each task turning its remaining seconds back into a
local monotonic deadline. Tasks run under whatever joblib backend is active: loky by
default (one torch thread per worker, workers reused between calls), or Dask inside
``joblib.parallel_config(backend="dask")``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bnbver.bab.loop import BabOptions, Relay, certify_options, leaves_bound, run_bab
from bnbver.bab.node import Node
from bnbver.bab.transfer import (
    LeafPack,
    NodePack,
    deal,
    pack_leaves,
    pack_nodes,
    unpack_leaves,
    unpack_nodes,
)
from bnbver.errors import InputError
from bnbver.network import Network
from bnbver.result import Certificate, Leaf, Result, Stats, Status
from bnbver.spec import Property

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareOptions:
    """How the processes of one search share it (module docstring).

    Attributes:
        auto_after: with ``jobs="auto"``, seconds the search runs in this process before it
            spreads (and the least time it must have left to spread).
        head_open_per_job: with a count of jobs, the head hands over once this many open
            nodes per process are there (and the workers are up).
        min_slice: a task hands its nodes back to an idle process only after running this
            long (seconds): it bounds how often the frontier moves.
        blind_slice: a task that cannot see the flags hands its nodes back after this many
            seconds.
        max_slice: a task hands its nodes back after this many seconds even when no process
            is idle (None: never; tests use 0 to move the frontier every round).
        wait_for_workers: the head hands over only once the workers are up (False: as soon
            as the open nodes are there; the tasks then wait for the workers).
    """

    auto_after: float = 3.0
    head_open_per_job: int = 2
    min_slice: float = 0.5
    blind_slice: float = 10.0
    max_slice: float | None = None
    wait_for_workers: bool = True


def validate_jobs(jobs: Any) -> int | str:
    """Return ``jobs`` as an int >= 1 or "auto" (digit strings are read as ints).

    Raises:
        InputError: anything else.
    """
    if isinstance(jobs, str) and jobs.strip().isdigit():
        jobs = int(jobs)
    if jobs == "auto":
        return "auto"
    if isinstance(jobs, int) and not isinstance(jobs, bool) and jobs >= 1:
        return jobs
    raise InputError("--jobs", f"must be >= 1 or auto, got {jobs!r}")


def resolve_jobs(jobs: int | str, device: str = "cpu") -> int:
    """Return how many processes a search may use.

    A count is itself. "auto" is the number of workers of the active joblib backend
    (``joblib.effective_n_jobs(-1)``: the usable cores of this machine, or the worker
    threads of a Dask cluster), except 1 on a GPU (one process feeds it the largest
    batches) and inside a worker of another parallel loop (``run-suite --jobs``,
    ``certify --jobs``, a Dask task), whose siblings already use the cores.
    """
    jobs = validate_jobs(jobs)
    if isinstance(jobs, int):
        return jobs
    if device != "cpu" or _nested():
        return 1
    import joblib

    return max(1, int(joblib.effective_n_jobs(-1)))


def _nested() -> bool:
    """Return True inside a joblib worker or a Dask task."""
    from joblib.parallel import get_active_backend

    if getattr(get_active_backend()[0], "nesting_level", 0):
        return True
    if "distributed" not in sys.modules:
        return False
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Board:
    """The flags of one shared search: files in a folder that only this search uses."""

    folder: str

    def visible(self) -> bool:
        """Return True when this process sees the folder (same machine as the coordinator)."""
        return os.path.isdir(self.folder)

    def stop(self) -> None:
        """Tell every task to stop."""
        Path(self.folder, "stop").touch()

    def stopped(self) -> bool:
        """Return True once a stop was asked (or the search is over: the folder is gone)."""
        return not os.path.isdir(self.folder) or os.path.exists(Path(self.folder, "stop"))

    def set_hungry(self, on: bool) -> None:
        """Raise (or lower) the flag that asks running tasks for their open nodes."""
        path = Path(self.folder, "hungry")
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def hungry(self) -> bool:
        """Return True while a process is idle."""
        return os.path.exists(Path(self.folder, "hungry"))


@dataclass(frozen=True, eq=False)
class Outcome:
    """What one task sends back (compact: packed leaves and nodes).

    Attributes:
        result: the task's result, without certificate and open nodes.
        leaves: the leaves it closed (also when it handed back or timed out).
        returned: the open nodes it handed back, or None.
        closed_bound: a lower bound of the margin over its closed leaves (at most 0 where
            clipping cut part of a box away).
        cpu_seconds: the CPU time the task took (its process's).
    """

    result: Result
    leaves: LeafPack
    returned: NodePack | None
    closed_bound: float
    cpu_seconds: float = 0.0


@dataclass
class _Tally:
    """The sum of the finished tasks of one shared search (owned by ``_share``)."""

    stats: Stats
    leaves: list[Leaf]
    closed_bound: float
    root: tuple[tuple[float, ...], ...]
    worst: Result | None = None
    open_bound: float | None = float("inf")
    waves: int = 0
    critical_cpu: float = 0.0
    handovers: int = 0
    pool: list[Node] = field(default_factory=list)


def run_parallel(network: Network, prop: Property, options: BabOptions, deadline: float,
                 stats: Stats | None = None, seed: int = 0,
                 share: ShareOptions | None = None) -> Result:
    """Decide ``prop`` with ``options.jobs`` processes sharing the search (module docstring).

    A run with certificates stays in this process (``loop.certify_options``): its proof is
    one tree, built as the search grows.
    """
    stats = stats if stats is not None else Stats()
    share = share or ShareOptions()
    options = certify_options(options)
    jobs = resolve_jobs(options.jobs, options.device)
    solo = replace(options, jobs=1)
    if jobs <= 1:
        return run_bab(network, prop, solo, deadline, stats, seed)
    warmup = _Warmup(jobs)
    relay = Relay(hand_back=_head_rule(warmup, jobs, options.jobs == "auto", deadline, share))
    with _one_torch_thread():
        head = run_bab(network, prop, solo, deadline, stats, seed, relay=relay)
    if not relay.returned:
        return head  # decided here: a warm-up still running finishes on its own
    warmup.join()
    leaves = list(head.certificate.leaves) if head.certificate else []
    closed = leaves_bound(leaves)
    tally = _Tally(stats, leaves, min(closed, 0.0) if relay.clipped else closed,
                   head.disjunct_bounds, pool=relay.returned)
    log.info("sharing %d open nodes among %d processes", len(relay.returned), jobs)
    with tempfile.TemporaryDirectory(prefix="bnbver-") as tmp:
        wall_deadline = time.time() + (deadline - time.monotonic())
        return _share(network, prop, options, jobs, wall_deadline, Board(tmp), tally, seed,
                      share)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the body with one torch thread (the number is restored after).

    A search that may spread counts its processes as its cores: torch's own threads would
    compete with the workers (starting up, then searching), and with other jobs on a shared
    machine that competition made torch's CPU kernels several times slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _head_rule(warmup: _Warmup, jobs: int, auto: bool, deadline: float,
               share: ShareOptions) -> Callable[[int], bool]:
    """Return the head's hand-back rule (module docstring, step 1). With "auto" the workers
    start at half of ``auto_after``, so that they are up when the search may spread; a
    search with less than ``auto_after`` seconds left stays in this process."""
    started = time.monotonic()
    wait = share.auto_after

    def hand_back(open_nodes: int) -> bool:
        now = time.monotonic()
        if share.wait_for_workers and (not auto or now - started >= wait / 2):
            warmup.start()
        if auto and (now - started < wait or deadline - now < wait):
            return False
        ready = warmup.ready() or not share.wait_for_workers
        return ready and open_nodes >= (jobs if auto else jobs * share.head_open_per_job)

    return hand_back


def _share(network: Network, prop: Property, options: BabOptions, jobs: int,
           wall_deadline: float, board: Board, tally: _Tally, seed: int,
           share: ShareOptions) -> Result:
    """Run waves until the pool of open nodes is empty, a task found a counterexample, or
    time is up."""
    sub = replace(options, jobs=1, record=None, tighten="none", tighten_after=0.0)
    found: Result | None = None
    while tally.pool and found is None:
        if time.time() >= wall_deadline or (tally.worst is not None
                                            and tally.worst.status is Status.TIMEOUT):
            break
        groups = [pack_nodes(g) for g in deal(tally.pool, jobs)]
        tally.pool = []
        tally.waves += 1
        found = _wave(network, prop, sub, jobs, groups, wall_deadline, board,
                      seed + 1000 * tally.waves, tally, share)
    # The busiest task's CPU time per wave, summed: the waves' length on idle cores.
    log.info("%d waves, %d hand-overs, critical path %.2f s of CPU", tally.waves,
             tally.handovers, tally.critical_cpu, extra={"critical_cpu": tally.critical_cpu})
    return _final(tally) if found is None else replace(found, stats=tally.stats)


def _wave(network: Network, prop: Property, options: BabOptions, jobs: int,
          groups: list[NodePack], wall_deadline: float, board: Board, seed: int,
          tally: _Tally, share: ShareOptions) -> Result | None:
    """Run one task per group; raise the hungry flag as soon as a process is idle.

    Returns:
        The VIOLATED result of a task, or None (the tasks' nodes and leaves are in
        ``tally``).
    """
    from joblib import Parallel, delayed

    board.set_hungry(len(groups) < jobs)
    tasks = (delayed(run_task)(network, prop, options, g, wall_deadline, board, seed + i,
                               share) for i, g in enumerate(groups))
    # batch_size=1: joblib's automatic batching (kept by a Dask backend across calls) would
    # put two tasks of a wave into one batch after a wave of short tasks, and run them in turn.
    outcomes: Iterator[Outcome] = Parallel(n_jobs=jobs, batch_size=1,
                                           return_as="generator_unordered")(tasks)
    found: Result | None = None
    t0, first, busiest = time.monotonic(), None, 0.0
    with warnings.catch_warnings():
        # Dask warns of task arguments over 10 MB: the nodes are meant to travel.
        warnings.filterwarnings("ignore", "Sending large graph", UserWarning)
        for out in outcomes:
            first = first if first is not None else time.monotonic() - t0
            board.set_hungry(True)
            if found is None and out.result.status is Status.VIOLATED:
                found = out.result
                board.stop()  # the other tasks stop at their next round; wait for them
            _absorb(tally, out)
            busiest = max(busiest, out.cpu_seconds)
    tally.critical_cpu += busiest
    log.debug("wave %d: %s nodes, first task back after %.2f s, last after %.2f s",
              tally.waves, [len(g) for g in groups], first, time.monotonic() - t0)
    return found


def _absorb(tally: _Tally, out: Outcome) -> None:
    """Add a task's counters, leaves, bound and open nodes to the tally."""
    _merge_stats(tally.stats, out.result.stats)
    tally.leaves.extend(unpack_leaves(out.leaves))
    tally.closed_bound = min(tally.closed_bound, out.closed_bound)
    if out.returned is not None:
        tally.pool.extend(unpack_nodes(out.returned))
        tally.handovers += 1
        return
    status = out.result.status
    if status in (Status.HOLDS, Status.VIOLATED):
        return
    bound = out.result.lower_bound
    tally.open_bound = None if tally.open_bound is None or bound is None else min(
        tally.open_bound, bound)
    if tally.worst is None or status is Status.TIMEOUT:
        tally.worst = out.result


def _final(tally: _Tally) -> Result:
    """Combine: all closed gives unsat; else the worst task's status (with the pool open)."""
    bound = tally.open_bound
    if bound is not None:
        pool = min((n.lower_bound for n in tally.pool), default=float("inf"))
        bound = min(bound, pool, tally.closed_bound)
    if tally.worst is None and tally.pool:
        lb = min(n.lower_bound for n in tally.pool)
        tally.worst = Result(Status.TIMEOUT, message=f"{len(tally.pool)} open nodes, global "
                             f"lower bound {lb:.4g}")
    if tally.worst is not None:
        return replace(tally.worst, stats=tally.stats, open_nodes=(),
                       **_bound_fields(tally.root, bound))
    return Result(Status.HOLDS, certificate=Certificate(tuple(tally.leaves)), stats=tally.stats,
                  **_bound_fields(tally.root, bound))


def _bound_fields(root: tuple[tuple[float, ...], ...], bound: float | None) -> dict[str, Any]:
    """Return the combined bound fields: the smallest bound over the pieces, and per
    disjunct at least that and the root's bound (``root``: the head's ``disjunct_bounds``)."""
    if bound is None:
        return {"lower_bound": None, "disjunct_bounds": ()}
    return {"lower_bound": bound,
            "disjunct_bounds": tuple(tuple(max(v, bound) for v in row) for row in root)}


def run_task(network: Network, prop: Property, options: BabOptions, nodes: NodePack,
             wall_deadline: float, board: Board, seed: int,
             share: ShareOptions | None = None) -> Outcome:
    """Search from ``nodes`` in a worker (one torch thread) until they are decided, time is
    up, a stop is asked, or an idle process wants the open nodes."""
    import torch

    torch.set_num_threads(1)
    started, cpu = time.monotonic(), time.thread_time()
    deadline = started + max(wall_deadline - time.time(), 0.0)
    live = board.visible()
    relay = Relay(unpack_nodes(nodes), _task_rule(board, live, started, share or ShareOptions()),
                  others_idle=board.hungry if live else None)
    with _search_memory():
        result = run_bab(network, prop, options, deadline, Stats(), seed,
                         should_stop=board.stopped if live else None, relay=relay)
        leaves = result.certificate.leaves if result.certificate is not None else ()
        closed = leaves_bound(list(leaves))
        if relay.returned and relay.clipped:
            closed = min(closed, 0.0)
        elif result.status is Status.HOLDS and result.lower_bound is not None:
            closed = result.lower_bound  # clipping included
        out = Outcome(replace(result, certificate=None, open_nodes=()), pack_leaves(leaves),
                      pack_nodes(relay.returned) if relay.returned else None, closed,
                      time.thread_time() - cpu)
        del relay, result, leaves
    return out


#: glibc's ``mallopt`` parameters (malloc.h) and the values a task runs with.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TASK_MMAP_THRESHOLD, _TASK_TRIM_THRESHOLD = 32 << 20, 1 << 30


@contextlib.contextmanager
def _search_memory() -> Iterator[None]:
    """Run a worker's search with a heap that keeps its freed memory, and trim it after.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also pins
    glibc's mmap threshold at 128 KiB: every batch tensor is then a fresh mapping, and on
    ACAS Xu page faults took as much CPU as the search (3.4 M faults, 4 of 9 s; 1.8x the
    wall-clock time). Where that variable is set, a task raises both thresholds and puts the
    worker's values back at its end; elsewhere glibc's adaptive thresholds are left alone.
    Either way the heap is trimmed at the end: loky replaces a worker whose memory grew by
    300 MB since its first task (a leak check; ACAS Xu 4_2 prop_2 left 500 MB in freed heap
    pages), and a new worker imports torch again, seconds lost at the next wave.
    """
    libc = _libc()
    pinned = libc is not None and "MALLOC_TRIM_THRESHOLD_" in os.environ
    if pinned:
        libc.mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)
    try:
        yield
    finally:
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)
        if pinned:
            with contextlib.suppress(ValueError):
                libc.mallopt(_M_TRIM_THRESHOLD, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))
            libc.mallopt(_M_MMAP_THRESHOLD, 128 << 10)


def _libc() -> Any:
    """Return glibc (ctypes), or None where there is none."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        _ = (libc.mallopt, libc.malloc_trim)  # AttributeError where the C library lacks them
    except (OSError, AttributeError):
        return None
    return libc


def _task_rule(board: Board, live: bool, started: float,
               share: ShareOptions) -> Callable[[int], bool]:
    """Return a task's hand-back rule (module docstring, step 2). The first poll comes
    before the task's first round: it never hands back then, so every task makes progress."""
    polls = itertools.count()

    def hand_back(open_nodes: int) -> bool:
        ran = time.monotonic() - started
        if next(polls) == 0 or open_nodes < 2 or ran < share.min_slice:
            return False
        if not live:
            return ran >= share.blind_slice
        return board.hungry() or (share.max_slice is not None and ran >= share.max_slice)

    return hand_back


class _Warmup:
    """Starts the worker processes in a background thread (a resource: the thread).

    The thread runs one tiny task per process under the caller's joblib backend (a
    ``parallel_config`` is per thread, so the backend is passed on), which makes each
    worker import torch and bnbver while the head searches.
    """

    def __init__(self, jobs: int) -> None:
        from joblib.parallel import get_active_backend

        self.jobs = jobs
        self.backend = get_active_backend()[0]
        self.thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> None:
        """Start the thread (once)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="bnbver-warmup", daemon=True)
            self.thread.start()

    def ready(self) -> bool:
        """Return True once every worker answered (or the warm-up failed: the waves then
        raise the error)."""
        return self.done.is_set()

    def join(self) -> None:
        """Wait for the thread (a wave must not start while it still holds the pool)."""
        if self.thread is not None:
            self.thread.join()

    def _run(self) -> None:
        from joblib import Parallel, delayed, parallel_config

        try:
            with parallel_config(backend=self.backend):
                Parallel(n_jobs=self.jobs, batch_size=1)(
                    delayed(_warm)() for _ in range(self.jobs))
        except Exception as exc:  # the waves run the tasks again and report the error
            log.warning("starting the worker processes failed: %s", exc)
        finally:
            self.done.set()


def _warm() -> int:
    """Import what a task needs (in a worker) and return the worker's process id."""
    import torch

    import bnbver.bab.loop  # noqa: F401

    torch.set_num_threads(1)
    return os.getpid()


def _merge_stats(total: Stats, part: Stats) -> None:
    total.nodes += part.nodes
    total.max_depth = max(total.max_depth, part.max_depth)
    total.bound_calls += part.bound_calls
    total.lp_calls += part.lp_calls
    total.milp_calls += part.milp_calls
    for k, v in part.seconds_by_phase.items():
        total.add_time(k, v)
