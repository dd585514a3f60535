"""The branch-and-bound loop: pop a batch, branch, bound children in one call, prune, push.

The loop is written once over a :class:`~bnbver.bab.bounding.NodeBounder`, which turns parent
nodes plus branching decisions into bounded children (one batched bounds-engine call per
round). Two kinds of branching share it: ReLU splits (a neuron fixed active / inactive) and
input splits (one input dimension bisected), chosen by input dimension unless forced.

Soundness: a child is closed only when its proven lower bound on every disjunct's margin is
> 0 (bounds hold in real arithmetic: the engine charges its own rounding, see
``bnbver.bounds.rounding``), or the bounds engine proved its split set infeasible; every candidate
counterexample is re-checked by an exact float64 forward pass before VIOLATED is returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from bnbver.attack import falsify_boxes
from bnbver.bab.bounding import BoundedChild, NodeBounder
from bnbver.bab.branching import choose_branches, default_heuristic, validate_heuristic
from bnbver.bab.budget import memory_budget, parents_that_fit
from bnbver.bab.node import Frontier, Node
from bnbver.bab.proof import ProofBuilder
from bnbver.bab.record import TreeRecorder
from bnbver.check.format import ProofFile
from bnbver.network import Network
from bnbver.result import Certificate, Leaf, Result, Stats, Status, validate_counterexample
from bnbver.spec import Property
from bnbver.splits import SplitSet

log = logging.getLogger(__name__)

#: A node closes only when its lower bound exceeds this. The bounds are rigorous (rounding
#: included), so 0 is enough; it is also what the bounder uses to decide which children keep
#: a state, so the two can never disagree.
SOUNDNESS_EPS = 0.0
#: Seconds between two progress lines of a search (logged at INFO level: ``bnbver -v``).
PROGRESS_LOG_SECONDS = 5.0


@dataclass(frozen=True)
class BabOptions:
    """Options of the branch-and-bound search.

    Attributes:
        split: "relu", "input", or "auto" (input splits when the input has at most
            ``input_split_max_dim`` values and the net has no convolutions).
        branching: heuristic name from ``bnbver.bab.branching.REGISTRY`` (None = default
            for the split kind).
        batch_size: parent nodes popped per round (children bounded: twice as many), fewer
            where their bounding would take more than ``round_memory``.
        round_share: the largest share of the search's time limit one round may take
            (fewer parents where a round would take longer, by the last rounds' time per
            parent; 1 disables).
        round_memory: GiB of working memory one round's bounding may take (estimated per
            child and open margin row, ``bnbver.bab.budget``); 0 (auto): an eighth of the
            device's memory. A round takes at least one parent.
        root_method / child_method: bounds method at the root and for children.
        iterations: alpha/beta optimisation steps per bound call (the root's; a ReLU child's
            unless ``child_iterations`` says otherwise).
        child_iterations: alpha/beta steps of a ReLU-split child's bound; 0 (auto): 10 on
            convolutional networks, ``iterations`` on the others (results/README.md,
            "Session 10").
        device: torch device of the bounds ("cpu" or "cuda").
        precision: "auto" (float32 for convolutional networks, else the device default:
            float64 on the CPU), "float32" or "float64"; counterexamples are always checked
            in float64.
        root_precision: "float64" (a float32 search bounds its root in float64, and its
            children inherit those intermediate bounds) or "same".
        root_interm_layers: how many of the last layers' intermediate bounds the root
            alpha-optimises: -1 (auto) every layer where the estimated cost fits in a share
            of the time limit, else none; 0 none; k the last k (every layer when k is at
            least their number; a certified search takes auto).
        memory_cap: open nodes beyond which the frontier goes depth-first.
        jobs: processes sharing the search (``bnbver.bab.parallel``): a count, or "auto"
            (the cores available, once the search has run long enough to pay for them;
            ``bnbver.bab.parallel.ShareOptions.auto_after``).
        milp_max_unstable: a ReLU-split node with at most this many free unstable neurons
            (and at least one) is decided at once by a big-M MILP with HiGHS instead of being
            branched further (0 disables); the MILP gets at most ``milp_time`` seconds, and
            a node it cannot decide goes back on the frontier.
        tighten: bound tightening of the root's ReLU bounds before branching: "none",
            "lp" or "milp" (Fischetti & Jo / Tjeng et al.), within ``tighten_time`` seconds.
            With ReLU splits, "milp" skips the LP pass (the root's alpha-optimised
            intermediate bounds are as tight as the LP's: on mnist 256x4 prop_6_0.03 the LP
            pass took 81 s and stabilised 1 of 379 neurons).
        tighten_neuron_time: seconds per neuron and direction of "milp" tightening.
        tighten_after: with ReLU splits, first search this many seconds without tightening
            and tighten (then search again from the root) only if that search timed out:
            the easy instances never pay for the tightening (0: tighten first).
        tighten_jobs: processes that share the MILP tightening's solves.
        record: path of a JSON-lines search-tree record, or None.
        input_intermediate: intermediate bounds of input-split children
            (``BoundsOptions.intermediate``): "forward-crown" (forward symbolic bounds, then
            CROWN on the neurons they leave unstable: as tight as "crown" and about half the
            ACAS Xu search time, results/README.md) or "crown", "forward", "inherit".
        relu_intermediate: intermediate bounds of ReLU-split children: "inherit" (the
            parent's, clamped by the new split and interval propagation) or "crown"
            (recomputed by CROWN with the node's splits, intersected with the parent's) or
            "alpha" (recomputed by alpha-beta-CROWN with the split constraints, as
            alpha-beta-CROWN's optimised intermediate bounds; layers before every split of
            the batch keep the parent's).
        seed_beta: start each ReLU child's new split multiplier where its parent's relaxation
            puts it (``BoundsOptions.seed_beta``).
        stall_rounds: with ReLU splits, when the global lower bound rose by less than
            ``stall_tol`` (relative) over this many rounds, the worst open node is handed
            to a big-M MILP with HiGHS for up to ``stall_milp_time`` seconds (the issue's
            "MILP fallback on stagnating subtrees"); 0 disables. These MILPs get at most
            ``stall_share`` of the search's time limit in all (on mnist_fc 256x6 they took
            70 % of it, deciding nothing, while the BaB starved). A share of the time
            *elapsed* instead starved the first MILPs: 256x4 prop_8_0.03, which one early
            20 s MILP decides in 11 s, timed out.
        clip: with input splits, shrink each child's box to where the rows' linear bounds
            still allow a counterexample (``bnbver.bounds.clip``).
        attack_nodes: with input splits, each round runs a short PGD inside the boxes of
            this many of the popped parents (the lowest bounds: where counterexamples are
            most likely), within ``attack_share`` of the search time (0 disables).
        certify: "off", "on" (an ``unsat`` carries a proof that ``bnbver check`` re-verifies;
            leaves closed by a MILP are marked uncertified) or "strict" (no MILP closes a
            node: they are branched further, so every leaf is certified). See
            :func:`certify_options` for what a certified run changes.
        nogoods: with ReLU splits, learn inferred cuts from proven children and use them on
            the others (:mod:`bnbver.bab.nogoods`: a child a nogood covers is closed, one it
            covers but for one free neuron takes that neuron's other phase); off in a
            certified search.
        nogood_learn: children per round whose reduced split sets are re-bounded from the
            root to learn nogoods.
        disjunct_roots: with ReLU splits, a root that leaves several disjuncts of the
            property open becomes one node per open disjunct, each searched for its own
            (``NodeBounder.by_disjunct``); off in a certified search.
    """

    split: str = "auto"
    branching: str | None = None
    batch_size: int = 256
    round_share: float = 1 / 32
    round_memory: float = 0.0
    input_split_max_dim: int = 20
    root_method: str = "alpha"
    child_method: str = "beta"
    iterations: int = 20
    child_iterations: int = 0
    device: str = "cpu"
    precision: str = "auto"
    root_precision: str = "float64"
    root_interm_layers: int = -1
    memory_cap: int = 200_000
    jobs: int | str = "auto"
    milp_max_unstable: int = 8
    milp_time: float = 10.0
    tighten: str = "none"
    tighten_time: float = 30.0
    tighten_neuron_time: float = 1.0
    tighten_after: float = 0.0
    tighten_jobs: int = 1
    record: str | None = None
    input_intermediate: str = "forward-crown"
    relu_intermediate: str = "inherit"
    seed_beta: bool = True
    clip: bool = True
    stall_rounds: int = 8
    stall_tol: float = 0.01
    stall_milp_time: float = 20.0
    stall_share: float = 0.3
    attack_nodes: int = 64
    attack_share: float = 0.1
    certify: str = "off"
    nogoods: bool = False
    nogood_learn: int = 64
    disjunct_roots: bool = False


@dataclass
class Relay:
    """A search's link to others sharing its frontier (``bab.parallel``): a stateful channel.

    Attributes:
        start: bounded open nodes (``bab.transfer.unpack_nodes``) to search from instead of
            bounding the root.
        hand_back: polled once per round with the number of open nodes; True ends the
            search as UNKNOWN and moves its open nodes to ``returned``.
        returned: the open nodes handed back (filled by the search).
        clipped: set with ``returned``: input-domain clipping cut part of a box away, so the
            margin of the search's closed part is only known to be > 0 there.
        others_idle: True while another process waits for nodes: the search then leaves
            nodes open instead of deciding them by MILP (seconds each), so that they go
            back at the end of the round.
    """

    start: list[Node] = field(default_factory=list)
    hand_back: Callable[[int], bool] | None = None
    returned: list[Node] = field(default_factory=list)
    clipped: bool = False
    others_idle: Callable[[], bool] | None = None


@dataclass
class _Search:
    """Mutable state of one search (owned by ``run_bab``)."""

    network: Network
    prop: Property
    options: BabOptions
    bounder: NodeBounder
    frontier: Frontier
    stats: Stats
    leaves: list[Leaf]
    recorder: TreeRecorder
    deadline: float
    started: float
    split_kind: str
    root_splits: SplitSet
    should_stop: Callable[[], bool] | None
    max_open: int | None
    next_id: int = 0
    module: torch.nn.Module | None = None
    stall_checked: int = 0
    stall_seconds: float = 0.0
    undecided: list[Node] = field(default_factory=list)
    proof: ProofBuilder | None = None
    milp_tried: set[int] = field(default_factory=set)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    root_disjuncts: np.ndarray | None = None
    last_log: float = 0.0
    clipped: bool = False
    relay: Relay | None = None
    round_bytes: float = float("inf")


def choose_split_kind(network: Network, options: BabOptions) -> str:
    """Return "input" or "relu" for ``options.split`` == "auto" (or the forced kind)."""
    if options.split in ("relu", "input"):
        return options.split
    small = network.input_size <= options.input_split_max_dim
    return "input" if small and not network.has_conv else "relu"


def run_bab(network: Network, prop: Property, options: BabOptions, deadline: float,
            stats: Stats | None = None, seed: int = 0, root_splits: SplitSet | None = None,
            should_stop: Callable[[], bool] | None = None,
            max_open: int | None = None, relay: Relay | None = None) -> Result:
    """Decide ``prop`` by branch and bound until ``deadline`` (absolute monotonic time).

    Args:
        root_splits: splits of the root (the search is then one subtree of a larger one).
        should_stop: polled once per round; True ends the search as UNKNOWN (cancellation).
        max_open: stop as UNKNOWN once this many nodes are open, returning them in
            ``Result.open_nodes`` (used to cut the tree into parallel subtrees).
        relay: start from ``relay.start`` (when not empty) and hand the open nodes back
            when ``relay.hand_back`` says so (processes sharing one search).

    Returns:
        HOLDS with a certificate of closed leaves, VIOLATED with a float64-checked
        counterexample, or TIMEOUT / UNKNOWN.
    """
    stats = stats if stats is not None else Stats()
    kind = choose_split_kind(network, options)
    validate_heuristic(options.branching or default_heuristic(kind), kind)
    if options.tighten != "none" and options.tighten_after > 0 and kind == "relu":
        t0 = time.monotonic()
        probe = min(deadline, t0 + options.tighten_after)
        probe_stats = Stats()
        first = run_bab(network, prop, replace(options, tighten="none"), probe, probe_stats,
                        seed, root_splits, should_stop, max_open, relay)
        final = first.status is not Status.TIMEOUT or time.monotonic() >= deadline
        _merge_probe(stats, probe_stats, time.monotonic() - t0, final)
        if final:
            return replace(first, stats=stats)
        log.info("no answer in %.0f s: tightening the root (%s) and searching again",
                 options.tighten_after, options.tighten)
        options = replace(options, tighten_after=0.0)
    options = certify_options(options)
    bounder = NodeBounder(network, prop, options, kind, seed)
    search = _Search(network, prop, options, bounder,
                     Frontier(options.memory_cap), stats, [],
                     TreeRecorder(options.record), deadline, time.monotonic(), kind,
                     root_splits or SplitSet(), should_stop, max_open,
                     rng=np.random.default_rng(seed), proof=_proof_builder(bounder, prop),
                     relay=relay,
                     round_bytes=memory_budget(options.round_memory, options.device))
    try:
        return _search(search)
    finally:
        search.recorder.close()


def certify_options(options: BabOptions) -> BabOptions:
    """Return the options a run with certificates uses (``certify`` "on" or "strict").

    Every closing argument must be one the checker can re-derive or re-evaluate: the forward
    symbolic intermediate bounds of input splits become CROWN's, root tightening by LP/MILP
    is off, subtrees run in this process (one tree), and "strict" also turns off the MILPs
    that would close nodes without a checkable proof.
    """
    if options.certify == "off":
        return options
    changes: dict[str, Any] = {}
    if options.input_intermediate in ("forward", "forward-crown"):
        changes["input_intermediate"] = "crown"
    if options.relu_intermediate == "alpha":
        changes["relu_intermediate"] = "crown"
    if options.tighten != "none":
        log.warning("certificates: root tightening (%s) is switched off", options.tighten)
        changes["tighten"] = "none"
    if options.jobs != 1:
        changes["jobs"] = 1
    if options.certify == "strict":
        changes.update(milp_max_unstable=0, stall_rounds=0)
    return replace(options, **changes)


def _proof_builder(bounder: NodeBounder, prop: Property) -> ProofBuilder | None:
    if getattr(bounder.options, "certify", "off") == "off":
        return None
    return ProofBuilder(bounder.kind == "input", bounder.child_opts.intermediate != "inherit",
                        sum(bounder.net.relu_sizes),
                        max(h.C.shape[0] for h in prop.unsafe.disjuncts))


def _proof_file(s: _Search) -> ProofFile | None:
    if s.proof is None:
        return None
    return ProofFile((s.proof.tree(),), tuple(s.bounder.net.relu_sizes),
                     s.network.input_size)


def _merge_probe(stats: Stats, probe: Stats, seconds: float, final: bool) -> None:
    """Add a probe search's counters to ``stats``. When its answer is the final one, its
    phases and lower-bound trace too; otherwise its time goes under the phase "probe" and its
    trace is dropped (the next search's trace starts at that search's own start).
    """
    stats.nodes += probe.nodes
    stats.max_depth = max(stats.max_depth, probe.max_depth)
    stats.bound_calls += probe.bound_calls
    stats.lp_calls += probe.lp_calls
    stats.milp_calls += probe.milp_calls
    if not final:
        stats.add_time("probe", seconds)
        return
    for phase, t in probe.seconds_by_phase.items():
        stats.add_time(phase, t)
    stats.lower_bound_trace.extend(probe.lower_bound_trace)


def _search(s: _Search) -> Result:
    """Bound the root (or take the relay's nodes), then run rounds until decided or out of
    time."""
    outcome = _start(s)
    if outcome is not None:
        return outcome
    round_time = per_parent = 0.0
    round_limit = s.options.round_share * (s.deadline - s.started)
    # Costing each popped parent is only needed where a full batch at the most a parent can
    # cost would overrun the memory budget (never on small nets: no per-node work there).
    full = s.options.batch_size * s.bounder.parent_bytes()
    cost = s.bounder.parent_bytes if full > s.round_bytes else None
    while len(s.frontier):
        # A round that would likely end past the deadline gets only the parents that fit
        # (rounds through a large network take a good share of a time limit); none fit: stop.
        size = parents_that_fit(s.options.batch_size, s.deadline - time.monotonic(),
                                round_time, per_parent, round_limit)
        if size == 0:
            return _timeout(s)
        if s.should_stop is not None and s.should_stop():
            return Result(Status.UNKNOWN, stats=s.stats, message="cancelled")
        if s.max_open is not None and len(s.frontier) >= s.max_open:
            return _split_off(s)
        if s.relay is not None and s.relay.hand_back is not None and s.relay.hand_back(
                len(s.frontier)):
            return _split_off(s)
        t0 = time.monotonic()
        parents = s.frontier.pop_batch(size, cost, s.round_bytes)
        outcome = _round(s, parents)
        took = time.monotonic() - t0
        round_time = max(round_time * 0.8, took)
        per_parent = max(per_parent * 0.8, took / len(parents))
        if outcome is not None:
            return outcome
        _trace(s)
        _log_progress(s)
        outcome = _on_stall(s)
        if outcome is not None:
            return outcome
    if s.undecided:
        return Result(Status.UNKNOWN, stats=s.stats, message=(
            f"{len(s.undecided)} fully split leaves were neither closed nor falsified (their "
            f"LPs are numerically ambiguous: a margin within rounding of 0)"))
    return Result(Status.HOLDS, certificate=Certificate(tuple(s.leaves), _proof_file(s)),
                  stats=s.stats, **_bound_fields(s, _leaves_bound(s)))


def _start(s: _Search) -> Result | None:
    """Push the relay's start nodes, or bound and prune the root."""
    if s.relay is not None and s.relay.start:
        for node in s.relay.start:
            s.frontier.push(node)
        s.next_id = max(n.node_id for n in s.relay.start) + 1
        s.last_log = time.monotonic()
        return None
    t0 = time.monotonic()
    root = s.bounder.bound_root(s.prop.box.lower, s.prop.box.upper, s.root_splits,
                                s.deadline)
    s.stats.bound_calls += 1
    s.stats.add_time("root_bounds", time.monotonic() - t0)
    s.root_disjuncts = root.disjunct_bounds
    roots = [root]
    if s.options.disjunct_roots and not root.infeasible and not root.lower_bound > 0:
        t0 = time.monotonic()
        roots = s.bounder.by_disjunct(root, s.deadline)
        s.stats.add_time("root_bounds", time.monotonic() - t0)
    s.last_log = time.monotonic()
    return _prune(s, roots, [None] * len(roots))


def _round(s: _Search, parents: list[Node]) -> Result | None:
    """One BaB round: branch the popped ``parents`` -> bound children -> prune -> push."""
    cex = _attack_parents(s, parents)
    if cex is not None:
        return cex
    t0 = time.monotonic()
    decisions = choose_branches(s.bounder, parents, s.split_kind,
                                s.options.branching or default_heuristic(s.split_kind))
    s.stats.add_time("branching", time.monotonic() - t0)
    t0 = time.monotonic()
    children = s.bounder.bound_children(parents, decisions, s.deadline)
    s.stats.bound_calls += 1
    s.stats.add_time("bounds", time.monotonic() - t0)
    if s.bounder.nogoods is not None:
        s.stats.counts.update({f"nogoods_{k}": v for k, v in s.bounder.nogood_counts.items()})
    made: list[list[object] | None] = [_decision(s, dec, side) for dec in decisions
                                        for side in (0, 1)]
    return _prune(s, children, [p for p in parents for _ in (0, 1)], made)


def _decision(s: _Search, decision: Any, side: int) -> list[object]:
    """Return the record form of child ``side`` (0: inactive / lower half) of a decision."""
    if s.split_kind == "relu":
        return ["relu", int(decision[0]), int(decision[1]), bool(side)]
    return ["input", int(decision), "upper" if side else "lower"]


def stall_budget(options: BabOptions, limit: float, used: float) -> float:
    """Return the seconds the next stall MILP may take: ``stall_milp_time``, capped by what
    is left of ``stall_share`` of the search's time limit ``limit`` after ``used`` seconds of
    earlier stall MILPs (<= 0: none may run). Elapsed time plays no part, so the first
    MILPs of a search get their full time."""
    return min(options.stall_milp_time, options.stall_share * limit - used)


def _on_stall(s: _Search) -> Result | None:
    """Hand the worst open node to a MILP when the global lower bound has stalled.

    A node whose bound no split moves (deep in a ReLU tree, many neurons still free) can
    hold the global bound for the rest of the run; the MILP decides it exactly, or leaves
    it open (it is not tried twice).
    """
    n = s.options.stall_rounds
    trace = s.stats.lower_bound_trace
    if s.split_kind != "relu" or n <= 0 or len(trace) - s.stall_checked < n or _others_idle(s):
        return None
    old, new = trace[-n][1], trace[-1][1]
    if not (np.isfinite(old) and np.isfinite(new)) or new - old > s.options.stall_tol * abs(old):
        return None
    s.stall_checked = len(trace)
    budget = stall_budget(s.options, s.deadline - s.started, s.stall_seconds)
    if budget <= 0:
        return None
    worst = s.frontier.pop_batch(1)
    if not worst:
        return None
    node = worst[0]
    if node.node_id in s.milp_tried:
        s.frontier.push(node)
        return None
    s.milp_tried.add(node.node_id)
    t0 = time.monotonic()
    closed, verdict = _decide_milp(s, node, None, budget)
    s.stall_seconds += time.monotonic() - t0
    if verdict is not None:
        return verdict
    if not closed:
        s.frontier.push(node)
    return None


def _others_idle(s: _Search) -> bool:
    """Return True while another process sharing this search waits for nodes."""
    return s.relay is not None and s.relay.others_idle is not None and s.relay.others_idle()


def _attack_parents(s: _Search, parents: list[Node]) -> Result | None:
    """Run PGD inside the boxes of the worst parents (input splits; within a time share).

    The frontier pops the lowest bounds first, so ``parents[:k]`` are the boxes most likely
    to hold a counterexample.
    """
    k = s.options.attack_nodes
    if s.split_kind != "input" or k <= 0 or not parents:
        return None
    spent = s.stats.seconds_by_phase.get("attack_nodes", 0.0)
    if spent > s.options.attack_share * (time.monotonic() - s.started):
        return None
    t0 = time.monotonic()
    if s.module is None:
        s.module = s.network.to_torch(torch.float64)
    chosen = parents[:k]
    cex = falsify_boxes(s.network, s.prop, np.stack([p.lower for p in chosen]),
                        np.stack([p.upper for p in chosen]), s.module, s.rng,
                        deadline=s.deadline)
    s.stats.add_time("attack_nodes", time.monotonic() - t0)
    if cex is None:
        return None
    return Result(Status.VIOLATED, cex, stats=s.stats, message="found by PGD in an open box")


def _prune(s: _Search, children: list[BoundedChild], parents: list[Node | None],
           decisions: list[list[object] | None] | None = None) -> Result | None:
    """Close proven children, check candidates, decide fully split leaves, push the rest."""
    suspicious = _unsafe_candidates(s, children)
    made = decisions or [None] * len(children)
    for child, parent, suspect, dec in zip(children, parents, suspicious, made, strict=True):
        node = _as_node(s, child, parent, dec)
        if s.proof is not None:
            s.proof.add(node, child)
        s.stats.nodes += 1
        s.stats.max_depth = max(s.stats.max_depth, node.depth)
        if child.infeasible or child.lower_bound > SOUNDNESS_EPS:
            _close(s, node, parent, "infeasible" if child.infeasible and child.method != "clip"
                   else child.method)
            continue
        s.clipped |= child.shrunk
        cex = _check_candidate(s, child) if suspect else None
        if cex is not None:
            s.recorder.node(node, parent, "counterexample", time.monotonic() - s.started,
                            child.method)
            return cex
        if child.exhausted:
            decided = _decide_leaf(s, node, parent)
            if decided is not None:
                return decided
            continue
        if (s.split_kind == "relu" and 0 < child.free_unstable <= s.options.milp_max_unstable
                and not _others_idle(s)):
            closed, verdict = _decide_milp(s, node, parent)
            if verdict is not None:
                return verdict
            if closed:
                continue
        s.recorder.node(node, parent, "open", time.monotonic() - s.started, child.method)
        s.frontier.push(node)
    return None


def _as_node(s: _Search, child: BoundedChild, parent: Node | None,
             decision: list[object] | None = None) -> Node:
    node = Node(child.lower, child.upper, child.splits, child.lower_bound,
                0 if parent is None else parent.depth + 1, child.state, s.next_id,
                -1 if parent is None else parent.node_id, decision)
    s.next_id += 1
    return node


def _close(s: _Search, node: Node, parent: Node | None, method: str) -> None:
    """Record ``node`` as a closed leaf; its ``lower_bound`` is the proven bound."""
    s.leaves.append(Leaf(node.lower, node.upper, node.splits, node.lower_bound, method))
    s.recorder.node(node, parent, method, time.monotonic() - s.started, method)
    if s.proof is not None:
        s.proof.close(node.node_id, method)


def _unsafe_candidates(s: _Search, children: list[BoundedChild]) -> np.ndarray:
    """Return (n,) bool: the child's candidate looks unsafe in one batched float64 pass.

    Only these are then validated one by one (``validate_counterexample``), which keeps the
    per-child cost of the search low.
    """
    flags = np.zeros(len(children), dtype=bool)
    idx = [i for i, c in enumerate(children) if c.candidate is not None]
    if idx:
        xs = np.stack([children[i].candidate for i in idx])  # type: ignore[misc]
        margins = s.prop.unsafe.margins(s.network.forward(xs)).min(axis=1)
        flags[np.asarray(idx)[margins <= 1e-9]] = True
    return flags


def _check_candidate(s: _Search, child: BoundedChild) -> Result | None:
    """Return VIOLATED when the child's candidate input is a real counterexample."""
    if child.candidate is None:
        return None
    cex = validate_counterexample(s.network, s.prop, child.candidate)
    if cex is None:
        return None
    return Result(Status.VIOLATED, cex, stats=s.stats, message="found by bounds candidate")


def _decide_leaf(s: _Search, node: Node, parent: Node | None) -> Result | None:
    """Decide a node whose every ReLU is fixed (or stable) exactly by LP."""
    t0 = time.monotonic()
    verdict = s.bounder.decide_exactly(node, max(s.deadline - time.monotonic(), 0.5))
    s.stats.lp_calls += 1
    s.stats.add_time("lp", time.monotonic() - t0)
    if verdict.counterexample is not None:
        cex = validate_counterexample(s.network, s.prop, verdict.counterexample)
        if cex is not None:
            return Result(Status.VIOLATED, cex, stats=s.stats, message="found by leaf LP")
    if verdict.lower_bound > SOUNDNESS_EPS or verdict.infeasible:
        if s.proof is not None:
            s.proof.add_proofs(node.node_id, verdict.proofs)
        _close(s, replace(node, lower_bound=verdict.lower_bound), parent,
               "lp-farkas" if verdict.farkas else "lp")
        return None
    # Numerically ambiguous (a margin within the LP's rounding of 0): this leaf can only end
    # in "unknown", but the rest of the tree may still hold a counterexample, so go on.
    s.undecided.append(node)
    s.recorder.node(node, parent, "undecided", time.monotonic() - s.started, "lp")
    return None


def _decide_milp(s: _Search, node: Node, parent: Node | None,
                 time_limit: float | None = None) -> tuple[bool, Result | None]:
    """Try to decide a small subtree by MILP.

    Returns:
        (closed, result): ``result`` is VIOLATED when the MILP found a checked
        counterexample; ``closed`` is True when the MILP proved the node safe.
    """
    left = s.deadline - time.monotonic()
    if left <= 0.5:
        return False, None
    t0 = time.monotonic()
    limit = s.options.milp_time if time_limit is None else time_limit
    verdict = s.bounder.decide_by_milp(node, min(limit, left))
    s.stats.milp_calls += 1
    s.stats.add_time("milp", time.monotonic() - t0)
    if verdict.status is Status.VIOLATED and verdict.counterexample is not None:
        return False, Result(Status.VIOLATED, verdict.counterexample, stats=s.stats,
                             message="found by MILP on a small subtree")
    if verdict.status is Status.HOLDS:
        # An infeasible MILP proves the node safe: its bound is +inf.
        _close(s, replace(node, lower_bound=float("inf")), parent, "milp")
        return True, None
    return False, None


def _trace(s: _Search) -> None:
    s.stats.lower_bound_trace.append(
        (time.monotonic() - s.started, float(s.frontier.global_lower_bound())))


def _split_off(s: _Search) -> Result:
    """Stop early and hand the open nodes (as boxes + splits) to the caller."""
    lb = s.frontier.global_lower_bound()
    # Undecided leaves go along: their subtree will meet them again and end in "unknown".
    nodes = [*s.frontier.drain(), *s.undecided]
    if s.relay is not None:
        s.relay.returned, s.relay.clipped = nodes, s.clipped
    open_nodes = tuple((n.lower, n.upper, n.splits) for n in nodes)
    return Result(Status.UNKNOWN, certificate=Certificate(tuple(s.leaves)), stats=s.stats,
                  message="split into subtrees", open_nodes=open_nodes,
                  **_bound_fields(s, lb))


def _timeout(s: _Search) -> Result:
    lb = s.frontier.global_lower_bound()
    return Result(Status.TIMEOUT, stats=s.stats,
                  message=f"{len(s.frontier)} open nodes, global lower bound {lb:.4g}",
                  **_bound_fields(s, lb))


def _leaves_bound(s: _Search) -> float:
    """Return the proven lower bound of the margin over the box once every node closed.

    It is the smallest bound of a leaf closed by its bound.
    """
    return leaves_bound(s.leaves)


def leaves_bound(leaves: list[Leaf]) -> float:
    """Return a lower bound of the margin over the closed leaves (+inf when there are none).

    A leaf's bound holds on its whole box. Leaves of infeasible split sets hold no input; a
    box that clipping emptied holds no counterexample, so its margin is also positive.
    """
    bounds = [max(leaf.bound, 0.0) if leaf.method == "clip" else leaf.bound
              for leaf in leaves if leaf.method != "infeasible"]
    return min(bounds, default=float("inf"))


def _bound_fields(s: _Search, lower_bound: float) -> dict[str, Any]:
    """Return the ``Result`` bound fields: the global bound and the per-disjunct bounds.

    Every disjunct's margin is at least the global bound (each node's bound is its smallest
    disjunct bound), and at least the root's bound of that disjunct. Where input-domain
    clipping cut away parts of open boxes, their margin is only known to be positive, so the
    global bound is then at most 0 (a box closed by its bound is bounded as a whole).
    """
    if s.clipped:
        lower_bound = min(lower_bound, 0.0)
    root = s.root_disjuncts
    if root is None:
        return {"lower_bound": lower_bound}
    per = tuple(float(max(v, lower_bound)) for v in root)
    return {"lower_bound": float(lower_bound), "disjunct_bounds": (per,)}


def _log_progress(s: _Search) -> None:
    """Log the search's progress at most every ``PROGRESS_LOG_SECONDS`` (INFO level)."""
    now = time.monotonic()
    if now - s.last_log < PROGRESS_LOG_SECONDS:
        return
    s.last_log = now
    log.info("%d nodes, %d open, global lower bound %.4g, %.1f s", s.stats.nodes,
             len(s.frontier), s.frontier.global_lower_bound(), now - s.started)
