"""The bridge between the BaB loop and the bounds engine (and the LP for exact leaves).

:class:`NodeBounder` turns parents plus branching decisions into bounded children with ONE
batched bounds-engine call per round:

- ReLU splits: each parent gives an inactive child then an active child; the children inherit
  the parent's intermediate bounds and alpha/beta (warm start), tightened by the new split.
- Input splits: each parent's box is bisected along one dimension; the children's
  intermediate bounds are recomputed by CROWN and intersected with the parent's (the child's
  box is inside the parent's, so the parent's bounds stay valid).

A node's lower bound is ``min_k max_{i in disjunct k} row_lower_i``: a disjunct ``C_k y <= d_k``
is excluded when any of its rows has a positive margin lower bound; the node closes when every
disjunct is excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from bnbver.bab.branching import BranchContext, uses_relu_coeffs
from bnbver.bab.budget import child_row_bytes
from bnbver.bab.node import Node
from bnbver.bab.nogoods import Nogoods, zero_multiplier_splits
from bnbver.bab.storage import StoredState
from bnbver.bounds import (
    BoundResult,
    BoundsOptions,
    NodeBatch,
    NodeState,
    bound_batch,
    prepare,
)
from bnbver.bounds.clip import clip_boxes
from bnbver.bounds.gradient import gradient_bounds, supports_gradient
from bnbver.bounds.prepared import AffineOp, BoundedNetwork
from bnbver.bounds.rounding import outward
from bnbver.bounds.rowpack import open_mask
from bnbver.lp.highs import HighsOptions
from bnbver.lp.relaxation import dual_proof, fixed_node_relaxation, lp_lower_bound
from bnbver.lp.tighten import TightenOptions, tighten_bounds
from bnbver.milp import MilpVerdict, decide_milp
from bnbver.network import Network
from bnbver.spec import InputBox, Property
from bnbver.splits import Split, SplitSet, split_masks

#: Input boxes narrower than this (absolute, every side) are treated as points.
POINT_WIDTH = 1e-10
#: The root's alpha-optimised intermediate bounds may take this share of the time left ...
ROOT_SHARE = 0.3
#: ... estimated as this many CROWN passes per optimisation step (backward pass, gradient).
ROOT_STEP_COST = 3.0
#: Networks below this many multiply-adds per CROWN pass (``_crown_work``) skip the timing
#: probe: their optimised root is cheap (mnist_fc 256x6: 8e8; sri_resnet_a: 4e10).
ROOT_PROBE_WORK = 1e10


@dataclass(frozen=True, eq=False)
class Payload:
    """The per-node data the bounder keeps: split masks and where its engine state lives.

    The state stays with the batch it was computed in (``batch_state``, row ``index``):
    taking one row per node cost more than the bounding itself on small networks. The
    batch's open nodes share one copy of their rows (:func:`_open_payloads`), so closed
    siblings free theirs, with alpha and beta of their open margin rows only
    (:class:`~bnbver.bab.storage.StoredState`).

    Attributes:
        batch_masks: per ReLU layer (B', n_l) split states of the batch's open nodes.
        batch_state: the engine state of the batch's open nodes.
        index: the node's row in ``batch_masks`` and ``batch_state``.
        input_coeffs: (1, n_in) input coefficients of the worst row, or None.
        relu_coeffs: per ReLU layer (1, n_l) coefficients of the ReLU outputs in the worst
            row's bound (for BaBSR), or None.
    """

    batch_masks: tuple[torch.Tensor, ...]
    batch_state: NodeState | StoredState
    index: int
    input_coeffs: torch.Tensor | None = None
    relu_coeffs: tuple[torch.Tensor, ...] | None = None

    @property
    def masks(self) -> tuple[torch.Tensor, ...]:
        """Per ReLU layer (1, n_l) split states of this node."""
        return tuple(m[self.index:self.index + 1] for m in self.batch_masks)

    def single(self) -> NodeState:
        """Return the node's own state (B = 1)."""
        return self.batch_state.take(torch.tensor([self.index]))

    def open_rows(self) -> int | None:
        """Return how many margin rows the node left open (None: not recorded)."""
        state = self.batch_state
        rows = (state.bounds if isinstance(state, StoredState) else state).row_lower
        return None if rows is None else int(open_mask(rows[self.index]).sum())


def gather_masks(payloads: list[Payload]) -> tuple[torch.Tensor, ...]:
    """Return per ReLU layer the (len(payloads), n_l) split states of ``payloads``, in order."""
    groups: dict[int, list[int]] = {}
    for pos, p in enumerate(payloads):
        groups.setdefault(id(p.batch_masks), []).append(pos)
    n_layers = len(payloads[0].batch_masks)
    out = [torch.empty((len(payloads), m.shape[1]), dtype=m.dtype, device=m.device)
           for m in payloads[0].batch_masks]
    for positions in groups.values():
        source = payloads[positions[0]].batch_masks
        rows = torch.tensor([payloads[i].index for i in positions])
        where = torch.tensor(positions)
        for k in range(n_layers):
            out[k][where] = source[k].index_select(0, rows.to(source[k].device))
    return tuple(out)


def gather_states(payloads: list[Payload]) -> NodeState:
    """Return the states of ``payloads`` stacked in order, one ``take`` per source batch."""
    groups: dict[int, list[int]] = {}
    for pos, p in enumerate(payloads):
        groups.setdefault(id(p.batch_state), []).append(pos)
    parts, order = [], []
    for positions in groups.values():
        source = payloads[positions[0]].batch_state
        parts.append(source.take(torch.tensor([payloads[i].index for i in positions])))
        order.extend(positions)
    stacked = parts[0] if len(parts) == 1 else NodeState.cat(parts)
    if order == sorted(order):
        return stacked
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return stacked.take(inverse)


def _open_payloads(masks: tuple[torch.Tensor, ...], result: BoundResult,
                   keep: np.ndarray) -> list[Payload | None]:
    """Return each node's payload (None where it closed), the open ones sharing one copy of
    their rows of the batch's masks, state and coefficients: a payload holds its batch's
    tensors alive, so payloads of the whole batch kept the closed nodes' alpha and beta (all
    rows of every ReLU layer) in memory as long as one sibling stayed open. Alpha and beta
    are kept for the open margin rows alone (:class:`~bnbver.bab.storage.StoredState`)."""
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return [None] * keep.size
    state, coeffs, relu = result.state, result.input_coeffs, result.relu_coeffs
    if rows.size < keep.size:
        idx = torch.as_tensor(rows, dtype=torch.long)
        masks = tuple(m.index_select(0, idx.to(m.device)) for m in masks)
        state = state.take(idx)
        if coeffs is not None:
            coeffs = coeffs.index_select(0, idx.to(coeffs.device))
        if relu is not None:
            relu = tuple(r.index_select(0, idx.to(r.device)) for r in relu)
    stored = StoredState.pack(state)
    out: list[Payload | None] = [None] * keep.size
    for i, b in enumerate(rows):
        out[b] = Payload(masks, stored, i, None if coeffs is None else coeffs[i:i + 1],
                         None if relu is None else tuple(r[i:i + 1] for r in relu))
    return out


@dataclass(frozen=True, eq=False)
class BoundedChild:
    """A freshly bounded node as the loop sees it.

    ``lower``/``upper`` is the child's box after input-domain clipping (input splits), and
    ``infeasible`` also marks a box that clipping emptied (``method`` is then "clip").
    """

    lower: np.ndarray
    upper: np.ndarray
    splits: SplitSet
    lower_bound: float
    infeasible: bool
    candidate: np.ndarray | None
    exhausted: bool
    method: str
    state: Payload | None
    free_unstable: int = 0
    #: (K,) lower bound of each disjunct's margin on the child's box (before clipping).
    disjunct_bounds: np.ndarray | None = None
    #: clipping cut part of the box away (that part's margin is only known to be > 0)
    shrunk: bool = False
    #: (lower, upper) of the box before clipping (the region the node covers)
    region: tuple[np.ndarray, np.ndarray] | None = None
    #: certificates: per disjunct proven here, ``(disjunct, row weights, coefficients)``
    proofs: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()
    #: certificates: proofs of the root's optimised intermediate bounds
    #: ``(layer, unit, sign, coefficients)`` arrays, or None
    interm_proofs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    #: certificates: every row's coefficients when the box was clipped with optimised rows
    clip_nus: np.ndarray | None = None
    #: certificates: disjuncts that this node's own CROWN/interval bound excludes (and no
    #: ancestor's did), with no stored proof: the checker re-derives that bound here, since
    #: descendants keep the parent's rows and their own bound may be lower
    claims: tuple[int, ...] = ()


@dataclass(frozen=True)
class LeafVerdict:
    """The exact decision of a node with no free unstable neuron."""

    lower_bound: float
    infeasible: bool
    counterexample: np.ndarray | None
    #: certificates: per disjunct its LP's dual proof ``(disjunct, weights, coefficients)``
    proofs: tuple[tuple[int, np.ndarray, np.ndarray], ...] = ()
    #: some disjunct's LP was closed by a Farkas ray (not kept in certificates)
    farkas: bool = False


Box = tuple[np.ndarray, np.ndarray]


def _compute_dtype(precision: str, network: Network, device: str) -> torch.dtype | None:
    """Return the bounds dtype (None: the device default, float64 on the CPU).

    "auto" is float32 for convolutional networks on the CPU, where a float64 convolution
    costs about twice as much per node and a search's count rests on nodes per second (the
    centred form of the bounds keeps float32's rounding allowance proportional to interval
    widths); fully connected nets keep float64. Both are sound: the engine's bounds carry
    their rounding error.
    """
    if precision == "float64":
        return torch.float64
    if precision == "float32":
        return torch.float32
    if device == "cpu" and network.has_conv:
        return torch.float32
    return None


#: alpha/beta steps of a ReLU child's bound on a convolutional network, by default.
CONV_CHILD_ITERATIONS = 10


def child_iterations(value: int, iterations: int, network: Network) -> int:
    """Return the alpha/beta steps of a ReLU-split child's bound: ``value``, or for 0 (auto)
    :data:`CONV_CHILD_ITERATIONS` on convolutional networks (where a step is a backward pass
    through every convolution and the count rests on nodes per second) and ``iterations``
    on the others."""
    if value > 0:
        return value
    if network.has_conv:
        return min(CONV_CHILD_ITERATIONS, iterations)
    return iterations


def _crown_pass(net: BoundedNetwork, batch: NodeBatch, opts: BoundsOptions) -> NodeState:
    """Return the state of a plain CROWN pass of ``batch`` (the root's timing probe)."""
    return bound_batch(net, batch, replace(opts, method="crown", relu_coeffs=False,
                                           row_linear=False, optimize_intermediate=False)).state


def _crown_work(net: BoundedNetwork) -> float:
    """Return an upper estimate of a root CROWN pass's multiply-adds: every ReLU neuron's
    rows through every affine op (a convolution costs its kernel at every output position)."""
    per_row = 0.0
    for op in net.ops:
        if isinstance(op, AffineOp):
            spatial = 1 if op.conv is None else op.conv.out_shape[1] * op.conv.out_shape[2]
            per_row += float(op.weight.numel()) * spatial
    return per_row * float(sum(net.relu_sizes))


def stack_rows(prop: Property) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (C_all (R, m), d_all (R,), disjunct index (R,)) over all disjuncts.

    A disjunct with k > 1 rows also gets their average as an extra row: since
    ``mean_i m_i(x) <= max_i m_i(x)``, a lower bound of the average is a valid lower bound of
    the disjunct's margin, and it is often far better than each row's own bound where the rows
    pull the input in different directions (e.g. ACAS Xu's "Y_0 is maximal").
    """
    Cs, ds, idx = [], [], []
    for k, h in enumerate(prop.unsafe.disjuncts):
        C, d = h.C, h.d
        if C.shape[0] > 1:
            C = np.vstack([C, C.mean(axis=0, keepdims=True)])
            d = np.append(d, d.mean())
        Cs.append(C)
        ds.append(d)
        idx.append(np.full(C.shape[0], k))
    return np.vstack(Cs), np.concatenate(ds), np.concatenate(idx)


def row_weights(prop: Property) -> list[np.ndarray]:
    """Return per row of :func:`stack_rows` its weights over its disjunct's own rows (a unit
    vector, or 1/k each for the mean row): how a certificate names the row."""
    out: list[np.ndarray] = []
    for h in prop.unsafe.disjuncts:
        k = h.C.shape[0]
        out.extend(np.eye(k))
        if k > 1:
            out.append(np.full(k, 1.0 / k))
    return out


class NodeBounder:
    """Bounds nodes of one property's search (holds the prepared network: a resource)."""

    def __init__(self, network: Network, prop: Property, options: object, kind: str,
                 seed: int = 0) -> None:
        self.network = network
        self.prop = prop
        self.kind = kind
        self.options = options
        C, d, self.row_disjunct = stack_rows(prop)
        self.row_weights = row_weights(prop)
        certify = getattr(options, "certify", "off") != "off"
        self.n_disjuncts = len(prop.unsafe.disjuncts)
        device = getattr(options, "device", "cpu")
        iterations = getattr(options, "iterations", 20)
        dtype = _compute_dtype(getattr(options, "precision", "auto"), network, device)
        branching = getattr(options, "branching", None) or ("babsr" if kind == "relu" else "")
        wants_coeffs = kind == "relu" and uses_relu_coeffs(branching)
        # Input-domain clipping (bounds.clip) shrinks input-split boxes to where a
        # counterexample can be, by the rows' linear bounds.
        self.clip = kind == "input" and getattr(options, "clip", True)
        self.groups = [torch.as_tensor(np.flatnonzero(self.row_disjunct == k))
                       for k in range(self.n_disjuncts)]
        # alpha-optimised intermediate bounds at the root are much tighter on deep nets
        # (results/bounds.md: mnist 256x6 -1245 -> -395) and their cost is paid once.
        self.root_opts = BoundsOptions(method=getattr(options, "root_method", "alpha"),
                                       iterations=iterations, device=device, dtype=dtype,
                                       optimize_intermediate=kind == "relu",
                                       relu_coeffs=wants_coeffs, row_linear=self.clip,
                                       certify=certify)
        child_method = getattr(options, "child_method", "beta")
        relu_interm = getattr(options, "relu_intermediate", "inherit")
        if kind == "input":
            self.child_opts = BoundsOptions(
                method="crown", device=device, dtype=dtype, row_linear=self.clip,
                intermediate=getattr(options, "input_intermediate", "forward-crown"),
                certify=certify)
        else:
            self.child_opts = BoundsOptions(
                method=child_method, device=device, dtype=dtype,
                iterations=child_iterations(getattr(options, "child_iterations", 0),
                                            iterations, network),
                relu_coeffs=wants_coeffs, row_linear=self.clip,
                intermediate=("crown" if relu_interm == "alpha" else relu_interm),
                optimize_intermediate=relu_interm == "alpha",
                seed_beta=getattr(options, "seed_beta", True), certify=certify)
        # FSB's lookahead bounds each candidate's children at their parent's alpha and beta
        # (no optimisation step: one backward pass and the new split's seed), so a score
        # compares children as the search would start them; plain CROWN, far below a
        # beta-CROWN parent, made every candidate tie at the parent's bound.
        warm = self.child_opts.method in ("alpha", "beta")
        self.look_opts = replace(self.child_opts, method=self.child_opts.method if warm
                                  else "crown", iterations=0, relu_coeffs=False,
                                  row_linear=False, certify=False,
                                  intermediate=("inherit" if warm
                                                else self.child_opts.intermediate),
                                  optimize_intermediate=False, seed_beta=False)
        self.net = prepare(network, C, d, self.root_opts)
        self.dtype, self.device = self.net.dtype, self.net.device
        self.row_bytes = child_row_bytes(self.net)
        # A float32 search takes its root's bounds in float64: children inherit the root's
        # intermediate bounds, so their tightness is paid for once.
        self.root_net = self.net
        if (self.dtype == torch.float32 and not certify
                and getattr(options, "root_precision", "float64") == "float64"):
            self.root_net = prepare(network, C, d, replace(self.root_opts, dtype=torch.float64))
        self.generator = torch.Generator().manual_seed(seed)
        self.root_width = torch.tensor(prop.box.upper - prop.box.lower,
                                          dtype=self.dtype, device=self.device)
        self._disj = torch.as_tensor(self.row_disjunct, device=self.device)
        self._last_gather: tuple[tuple[int, ...], NodeState] | None = None
        # Inferred cuts (bab.nogoods): learned from proven children, re-bounded from the
        # root's state; a certified search keeps only what its certificate can show.
        use_nogoods = kind == "relu" and getattr(options, "nogoods", False) and not certify
        self.nogoods = Nogoods(self.net.relu_sizes, device=self.device) if use_nogoods else None
        self.nogood_learn = int(getattr(options, "nogood_learn", 64))
        self.nogood_counts = {"learned": 0, "closed": 0, "implied": 0}
        self._root: tuple[NodeBatch, NodeState, SplitSet] | None = None
        self._root_box: Box | None = None

    # ------------------------------------------------------------------ bounding
    def bound_root(self, lower: np.ndarray, upper: np.ndarray,
                   splits: SplitSet | None = None,
                   deadline: float | None = None) -> BoundedChild:
        """Bound the root node (intermediate bounds by CROWN, final by ``root_method``).

        ``splits`` makes the root a subtree of a larger search (parallel subtrees). With a
        ``deadline``, the alpha-optimised intermediate bounds are computed only when their
        estimated cost fits in ``ROOT_SHARE`` of the time left (:meth:`_root_bounds`).
        """
        splits = splits or SplitSet()
        box = (np.asarray(lower, dtype=np.float64)[None], np.asarray(upper, dtype=np.float64)[None])
        masks = tuple(torch.tensor(m, device=self.device)
                      for m in split_masks([splits], self.net.relu_sizes))
        batch = NodeBatch(*self._box_tensors(*box), masks, None)
        result = self._root_bounds(batch, deadline)
        self._root = (batch, result.state, splits)
        self._root_box = (box[0][0].copy(), box[1][0].copy())
        for corner in self._root_box:  # shared by every node with the root's box
            corner.flags.writeable = False
        root = self._children(box, batch, result, [splits], self.root_opts.method)[0]
        mode = getattr(self.options, "tighten", "none")
        tighten_end = time.monotonic() + getattr(self.options, "tighten_time", 30.0)
        if deadline is not None:
            tighten_end = min(tighten_end, deadline)
        for k in range(len(self.net.relu_sizes)):
            if (mode == "none" or root.state is None or root.infeasible
                    or root.lower_bound > 0 or time.monotonic() > tighten_end):
                return root
            state = self._tightened(root, splits, mode, k, tighten_end)
            if state is None:
                continue
            batch = NodeBatch(batch.lower, batch.upper, masks, state)
            result = bound_batch(self.net, batch, self.root_opts, deadline)
            self._root = (batch, result.state, splits)
            root = self._children(box, batch, result, [splits],
                                  f"{self.root_opts.method}+{mode}")[0]
        return root

    def _root_bounds(self, batch: NodeBatch, deadline: float | None) -> BoundResult:
        """Return the root's bounds, alpha-optimising its intermediate bounds only when
        affordable: one CROWN pass is timed first, and if ``iterations + 1`` optimisation
        steps of ``ROOT_STEP_COST`` such passes do not fit in ``ROOT_SHARE`` of the time left,
        the root keeps CROWN's intermediate bounds and optimises only its final rows (on
        sri_resnet_a the optimised root would take about 6 minutes on one CPU core;
        ``root_interm_layers=k`` optimises the last k layers' whatever the time). A
        float32 search computes them on the float64 network (``root_net``) and optimises its
        final rows in float32 on the inherited intermediate bounds."""
        inherit = replace(self.root_opts, optimize_intermediate=False, intermediate="inherit")
        if self.root_net is self.net:
            return self._root_pass(self.net, self.root_opts, batch, deadline)
        # Only the intermediate bounds go on; the float32 pass computes the rest.
        opts64 = replace(self.root_opts, dtype=torch.float64, relu_coeffs=False,
                         row_linear=False)
        root = self._root_pass(self.root_net, opts64, batch, deadline)
        state = root.state.bounds_in(self.dtype)
        return bound_batch(self.net, NodeBatch(batch.lower, batch.upper, batch.splits, state),
                           inherit, deadline)

    def _root_pass(self, net: BoundedNetwork, opts: BoundsOptions, batch: NodeBatch,
                   deadline: float | None) -> BoundResult:
        """Return the root's bounds on ``net`` (see :meth:`_root_bounds`)."""
        layers = int(getattr(self.options, "root_interm_layers", -1))
        n_slots = len(net.slot_ops)
        if opts.optimize_intermediate and layers >= 0 and not opts.certify:
            first = n_slots - min(layers, n_slots) if layers else None
            return self._suffix_pass(net, opts, batch, first, deadline)
        if (not opts.optimize_intermediate or deadline is None
                or _crown_work(net) < ROOT_PROBE_WORK):
            return bound_batch(net, batch, opts, deadline)
        t0 = time.monotonic()
        crown = _crown_pass(net, batch, opts)
        cost = (time.monotonic() - t0) * ROOT_STEP_COST * (opts.iterations + 1)
        fits = time.monotonic() + cost <= t0 + ROOT_SHARE * max(deadline - t0, 0.0)
        return self._suffix_pass(net, opts, batch, 0 if fits else None, deadline, crown)

    @staticmethod
    def _suffix_pass(net: BoundedNetwork, opts: BoundsOptions, batch: NodeBatch,
                     first: int | None, deadline: float | None,
                     crown: NodeState | None = None) -> BoundResult:
        """Return the root's bounds with the intermediate bounds of slots ``first`` on
        alpha-optimised (None: none, the final rows alone on CROWN's bounds)."""
        if first is not None:
            return bound_batch(net, batch, replace(opts, optimize_from=first), deadline)
        state = (crown or _crown_pass(net, batch, opts)).without_optimizer_state()
        return bound_batch(net, NodeBatch(batch.lower, batch.upper, batch.splits, state),
                           replace(opts, optimize_intermediate=False, intermediate="inherit"),
                           deadline)

    def parent_bytes(self, node: Node | None = None) -> float:
        """Return the estimated working memory, in bytes, of bounding ``node``'s two
        children (``bab.budget``): each child bounds the rows its parent left open (every
        row for ``None``: the most a parent can cost)."""
        rows = node.state.open_rows() if node is not None and isinstance(
            node.state, Payload) else None
        return 2.0 * (self.net.num_rows if rows is None else rows) * self.row_bytes

    def _box_tensors(self, lo: np.ndarray, up: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float64 tensors of a box: the engine rounds them outwards itself."""
        return (torch.tensor(lo, dtype=torch.float64, device=self.device),
                torch.tensor(up, dtype=torch.float64, device=self.device))

    def _tightened(self, root: BoundedChild, splits: SplitSet, mode: str, layer: int,
                   deadline: float) -> NodeState | None:
        """Return the root state with ReLU layer ``layer``'s bounds tightened by LP (or
        MILP) solves, or None when no bound moved.

        The tightened bounds come from ``lp.tighten`` (dual/MIP-dual bounds only, so they
        are sound) and are intersected with the engine's bounds. ``bound_root`` goes layer by
        layer and re-bounds the root after each, so an instance that the first layers'
        tightening decides stops there.
        """
        assert root.state is not None
        state = root.state.single()
        pre = ([t[0].cpu().numpy() for t in state.pre_lower],
               [t[0].cpu().numpy() for t in state.pre_upper])
        opts = TightenOptions(mode=mode, deadline=deadline, layers=(layer,),
                              milp_time_per_neuron=getattr(self.options,
                                                           "tighten_neuron_time", 1.0),
                              lp_pass=not self.root_opts.optimize_intermediate,
                              jobs=getattr(self.options, "tighten_jobs", 1),
                              priority=self._tighten_priority(root, pre))
        res = tighten_bounds(self.network, InputBox(root.lower, root.upper), pre, splits, opts)
        if all(np.array_equal(a, b) for a, b in zip((*res.lower, *res.upper), (*pre[0], *pre[1]),
                                                    strict=True)):
            return None
        lower, upper = list(state.lower), list(state.upper)
        for k, slot in enumerate(state.relu_slots):
            # Cast outwards: a float32 cast rounding a bound inwards made it invalid.
            lo, up = outward(torch.as_tensor(res.lower[k], dtype=torch.float64)[None],
                             torch.as_tensor(res.upper[k], dtype=torch.float64)[None],
                             self.dtype)
            lo, up = lo.to(self.device), up.to(self.device)
            lower[slot] = torch.maximum(lower[slot], lo)
            upper[slot] = torch.minimum(upper[slot], up)
        return NodeState(tuple(lower), tuple(upper), state.relu_slots, state.row_lower)

    @staticmethod
    def _tighten_priority(root: BoundedChild, pre: tuple[list[np.ndarray], list[np.ndarray]]
                          ) -> tuple[np.ndarray, ...] | None:
        """Per ReLU layer, how much each neuron's relaxation costs the worst row's bound:
        ``|coefficient of its output| * -l u / (u - l)`` (BaBSR's estimate), when the root
        kept the coefficients; the MILP tightening takes the costliest first."""
        coeffs = None if root.state is None else root.state.relu_coeffs
        if coeffs is None:
            return None
        out = []
        for c, lo, hi in zip(coeffs, *pre, strict=True):
            area = np.where((lo < 0) & (hi > 0), -lo * hi / np.maximum(hi - lo, 1e-300), 0.0)
            out.append(np.abs(c[0].double().cpu().numpy()) * area)
        return tuple(out)

    def by_disjunct(self, root: BoundedChild, deadline: float | None = None
                    ) -> list[BoundedChild]:
        """Return the open root as one node per disjunct it leaves open, each responsible for
        its own disjunct only (the others count as proven there: a sibling covers them).

        The property holds on the root's box iff every disjunct is excluded there, so the
        copies together decide exactly what the root does. In one node for all disjuncts a
        subtree must close each of them, and the splits that close one are repeated under
        every leaf of the splits that closed another; a node per disjunct branches on what
        its own disjunct needs. The copies are re-bounded at once from the root's state (its
        alpha and beta warm-start each copy's own rows), so each gets its own branching
        coefficients. ReLU splits only; not in a certified search (the proof tree has one
        root).
        """
        if (self.kind != "relu" or root.state is None or root.disjunct_bounds is None
                or self.root_opts.certify):
            return [root]
        open_k = np.flatnonzero(~(root.disjunct_bounds > 0))
        if open_k.size < 2:
            return [root]
        k = int(open_k.size)
        zero = torch.zeros(k, dtype=torch.long, device=self.device)
        state = root.state.single().take(zero)
        assert state.row_lower is not None
        mine = torch.as_tensor(open_k, device=self.device).unsqueeze(1) == self._disj
        rows = torch.where(mine, state.row_lower, torch.full_like(state.row_lower,
                                                                  torch.inf))
        box = (np.repeat(root.lower[None], k, axis=0), np.repeat(root.upper[None], k, axis=0))
        batch = NodeBatch(*self._box_tensors(*box),
                          tuple(m.index_select(0, zero) for m in root.state.masks),
                          replace(state, row_lower=rows))
        return self._bound_subset(box, batch, [root.splits] * k, deadline)

    def bound_children(self, parents: list[Node], decisions: list[Any],
                       deadline: float | None = None) -> list[BoundedChild]:
        """Branch every parent by its decision and bound all children in one call.

        Returns 2 children per parent, in parent order (inactive/lower half first).
        """
        box, batch, splits = (self._relu_children(parents, decisions) if self.kind == "relu"
                              else self._input_children(parents, decisions))
        safe = self._apply_nogoods(batch, splits)
        if not bool(safe.any()):
            return self._bound_subset(box, batch, splits, deadline)
        # Children a nogood closes are not bounded: only the others go to the engine.
        self.nogood_counts["closed"] += int(safe.sum())
        keep = np.flatnonzero(~safe.numpy())
        index = torch.as_tensor(keep, device=self.device)
        sub = NodeBatch(batch.lower.index_select(0, index), batch.upper.index_select(0, index),
                        tuple(m.index_select(0, index) for m in batch.splits),
                        None if batch.state is None else batch.state.take(index))
        bounded = iter([] if not keep.size else self._bound_subset(
            (box[0][keep], box[1][keep]), sub, [splits[i] for i in keep], deadline))
        return [BoundedChild(box[0][i], box[1][i], splits[i], float("inf"), False, None, False,
                             "nogood", None) if bool(safe[i]) else next(bounded)
                for i in range(len(splits))]

    def _bound_subset(self, box: Box, batch: NodeBatch, splits: list[SplitSet],
                      deadline: float | None) -> list[BoundedChild]:
        """Bound the children of ``batch`` and learn nogoods from the proven ones."""
        result = bound_batch(self.net, batch, self.child_opts, deadline)
        children = self._children(box, batch, result, splits, self.child_opts.method)
        self._learn_nogoods(children, result, deadline)
        return children

    # ------------------------------------------------------------------ inferred cuts
    def _apply_nogoods(self, batch: NodeBatch, splits: list[SplitSet]) -> torch.Tensor:
        """Close the children a nogood covers and give the others their implied splits (in
        place, in the masks of ``batch`` and in ``splits``); return the closed ones (B,)."""
        if self.nogoods is None or not len(self.nogoods):
            return torch.zeros(batch.batch_size, dtype=torch.bool)
        safe, implied = self.nogoods.match(batch.splits)
        for node, sp in implied:
            batch.splits[sp.layer][node, sp.unit] = 1 if sp.active else -1
            splits[node] = splits[node].with_split(sp)
        self.nogood_counts["implied"] += len(implied)
        return safe

    def _learn_nogoods(self, children: list[BoundedChild], result: BoundResult,
                       deadline: float | None) -> None:
        """Learn nogoods from the children their bound proved: each one's splits without
        those of zero multiplier, re-bounded from the root (at most ``nogood_learn`` per
        round, the shortest first); the ones proven there are kept."""
        if self.nogoods is None or self._root is None:
            return
        root_batch, root_state, root_splits = self._root
        beta = result.state.beta
        found: dict[SplitSet, None] = {}
        for b, c in enumerate(children):
            if c.infeasible or not c.lower_bound > 0 or c.method == "clip":
                continue
            cut = zero_multiplier_splits(c.splits, beta, b, keep=root_splits)
            if len(root_splits) < len(cut) < len(c.splits) and cut not in self.nogoods:
                found[cut] = None
        todo = sorted(found, key=len)[: self.nogood_learn]
        if not todo:
            return
        n = len(todo)
        masks = tuple(torch.tensor(m, device=self.device)
                      for m in split_masks(todo, self.net.relu_sizes))
        zero = torch.zeros(n, dtype=torch.long, device=self.device)
        batch = NodeBatch(root_batch.lower.index_select(0, zero),
                          root_batch.upper.index_select(0, zero), masks, root_state.take(zero))
        opts = replace(self.child_opts, relu_coeffs=False, row_linear=False)
        res = bound_batch(self.net, batch, opts, deadline)
        proven = (self._disjunct_bounds(res.row_lower).min(dim=1).values > 0) | res.infeasible
        self.nogood_counts["learned"] += self.nogoods.add(
            s for s, ok in zip(todo, proven.tolist(), strict=True) if ok)

    def _gathered(self, parents: list[Node]) -> NodeState:
        """Return the parents' stacked states; the branching step and the bounding step of
        one round ask for the same parents, so the last stack is reused."""
        key = tuple(id(p) for p in parents)
        if self._last_gather is None or self._last_gather[0] != key:
            self._last_gather = (key, gather_states([p.state for p in parents]))
        return self._last_gather[1]

    def _parent_state(self, parents: list[Node]) -> tuple[NodeState, torch.Tensor]:
        states = self._gathered(parents)
        index = torch.arange(len(parents), device=self.device).repeat_interleave(2)
        return states.take(index), index

    def _relu_children(self, parents: list[Node],
                       decisions: list[Any]) -> tuple[Box, NodeBatch, list[SplitSet]]:
        state, index = self._parent_state(parents)
        masks = [m.index_select(0, index) for m in gather_masks([p.state for p in parents])]
        splits: list[SplitSet] = []
        for i, (parent, dec) in enumerate(zip(parents, decisions, strict=True)):
            layer, unit = dec
            masks[layer][2 * i, unit] = -1
            masks[layer][2 * i + 1, unit] = 1
            splits.append(parent.splits.with_split(Split(layer, unit, False)))
            splits.append(parent.splits.with_split(Split(layer, unit, True)))
        lo = np.repeat(np.stack([p.lower for p in parents]), 2, axis=0)
        up = np.repeat(np.stack([p.upper for p in parents]), 2, axis=0)
        return (lo, up), NodeBatch(*self._box_tensors(lo, up), tuple(masks), state), splits

    def _input_children(self, parents: list[Node],
                        dims: list[Any]) -> tuple[Box, NodeBatch, list[SplitSet]]:
        state, _ = self._parent_state(parents)
        lo = np.repeat(np.stack([p.lower for p in parents]), 2, axis=0)
        up = np.repeat(np.stack([p.upper for p in parents]), 2, axis=0)
        for i, j in enumerate(dims):
            mid = 0.5 * (lo[2 * i, j] + up[2 * i, j])
            up[2 * i, j] = mid
            lo[2 * i + 1, j] = mid
        masks = tuple(torch.zeros((2 * len(parents), n), dtype=torch.int8, device=self.device)
                      for n in self.net.relu_sizes)
        batch = NodeBatch(*self._box_tensors(lo, up), masks, state.without_optimizer_state())
        return (lo, up), batch, [p.splits for p in parents for _ in (0, 1)]

    def _children(self, box: Box, batch: NodeBatch, result: BoundResult,
                  splits: list[SplitSet], method: str) -> list[BoundedChild]:
        """Split a batch result into per-node BoundedChild objects.

        Boxes stay float64 numpy (``box``): the engine may compute in float32, but node
        boxes must tile the root box exactly.
        """
        per_disjunct = self._disjunct_bounds(result.row_lower)
        node_lb = per_disjunct.min(dim=1).values.cpu().numpy()
        per_disjunct_np = per_disjunct.cpu().numpy()
        infeasible = result.infeasible.cpu().numpy()
        lo, up = box
        clipped = np.zeros(batch.batch_size, dtype=bool)
        if result.row_linear is not None and self.clip:
            lo, up, clipped = self._clipped(result, lo, up)
        shrunk = np.any((lo != box[0]) | (up != box[1]), axis=1)
        coeffs = result.input_coeffs
        cands = (result.candidates.cpu().numpy() if coeffs is None
                 else np.where(coeffs.cpu().numpy() > 0, lo, up))
        free = self._free_unstable(batch, result.state)
        exhausted = (free == 0) | np.all(up - lo <= POINT_WIDTH, axis=1)
        out = []
        fresh = self._fresh(result, None if batch.state is None else batch.state.row_lower)
        interm = self._interm_proofs(result) if result.interm_duals else None
        keep = ~(infeasible | (node_lb > 0) | clipped)
        payloads = _open_payloads(batch.splits, result, keep)
        node_lo, node_up = self._node_boxes(lo, up)
        for b in range(batch.batch_size):
            payload = payloads[b]
            out.append(BoundedChild(node_lo[b], node_up[b], splits[b], float(node_lb[b]),
                                    bool(infeasible[b] or clipped[b]), cands[b],
                                    bool(exhausted[b]),
                                    "clip" if clipped[b] and not infeasible[b] else method,
                                    payload, int(free[b]), per_disjunct_np[b],
                                    bool(shrunk[b]), (box[0][b], box[1][b]),
                                    self._proofs(result, b, fresh), interm,
                                    self._clip_nus(result, b) if shrunk[b] else None,
                                    self._claims(result, b, fresh)))
        return out

    def _node_boxes(self, lo: np.ndarray, up: np.ndarray
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Return each node's box corners: the root's own arrays where the box is the root's
        (every ReLU-split node's), else its row of ``lo``/``up``. A row is a view that keeps
        the whole batch's (B, n_in) arrays alive as long as the node or its leaf lives."""
        if self._root_box is None:
            return list(lo), list(up)
        r_lo, r_up = self._root_box
        same = np.all(lo == r_lo, axis=1) & np.all(up == r_up, axis=1)
        return ([r_lo if same[b] else lo[b] for b in range(lo.shape[0])],
                [r_up if same[b] else up[b] for b in range(up.shape[0])])

    def _clip_nus(self, result: BoundResult, b: int) -> np.ndarray | None:
        """Return (R, sum n_l) coefficients of every row of node b (optimised rows only)."""
        if not result.duals:
            return None
        return torch.cat([d[b] for d in result.duals], dim=1).double().cpu().numpy()

    # ------------------------------------------------------------------ certificates
    def _fresh(self, result: BoundResult, parent_rows: torch.Tensor | None
               ) -> np.ndarray | None:
        """Return (B, K): the disjuncts that each node's own bound excludes and no ancestor's
        did (where a certificate records why), or None without certificates."""
        if result.own_rows is None:
            return None
        fresh = self._disjunct_bounds(result.own_rows) > 0
        if parent_rows is not None:
            fresh &= ~(self._disjunct_bounds(parent_rows.to(fresh.device)) > 0)
        out: np.ndarray = fresh.cpu().numpy()
        return out

    def _proofs(self, result: BoundResult, b: int, fresh: np.ndarray | None
                ) -> tuple[tuple[int, np.ndarray, np.ndarray], ...]:
        """Return the dual proofs of node b's fresh exclusions (:meth:`_fresh`): per
        disjunct its best row's weights and coefficients."""
        if result.duals is None or result.own_rows is None or fresh is None:
            return ()
        out = []
        for k in np.flatnonzero(fresh[b]):
            rows = self.groups[k].to(result.own_rows.device)
            r = int(rows[int(result.own_rows[b, rows].argmax())])
            nu = (torch.cat([d[b, r] for d in result.duals]).double().cpu().numpy()
                  if result.duals else np.zeros(0))  # a network without ReLUs
            out.append((int(k), self.row_weights[r], nu))
        return tuple(out)

    def _claims(self, result: BoundResult, b: int, fresh: np.ndarray | None
                ) -> tuple[int, ...]:
        """Return node b's fresh exclusions when its bound has no stored proof (plain CROWN
        or interval rows): the checker re-derives them at this node."""
        if result.duals is not None or fresh is None:
            return ()
        return tuple(int(k) for k in np.flatnonzero(fresh[b]))

    def _interm_proofs(self, result: BoundResult
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the root's intermediate-bound proofs as flat arrays (node 0 of a batch)."""
        sizes = self.net.relu_sizes
        width = sum(sizes)
        layer, unit, sign, nus = [], [], [], []
        for slot, index, lower, upper in result.interm_duals:
            k = self.net.relu_slots.index(slot)
            for s_, parts in ((1, lower), (-1, upper)):
                block = np.zeros((index.numel(), width))
                col = 0
                for t in parts:
                    block[:, col:col + t.shape[2]] = t[0].double().cpu().numpy()
                    col += t.shape[2]
                layer.append(np.full(index.numel(), k))
                unit.append(index.cpu().numpy())
                sign.append(np.full(index.numel(), s_))
                nus.append(block)
        if not layer:
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8),
                    np.zeros((0, width)))
        return (np.concatenate(layer), np.concatenate(unit),
                np.concatenate(sign).astype(np.int8), np.vstack(nus))

    def _clipped(self, result: BoundResult, lo: np.ndarray,
                 up: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the boxes clipped to their possible counterexamples and (B,) "none left"."""
        assert result.row_linear is not None
        a, c = result.row_linear
        lo_t = torch.as_tensor(np.array(lo), dtype=torch.float64, device=a.device)
        up_t = torch.as_tensor(np.array(up), dtype=torch.float64, device=a.device)
        n_lo, n_up, empty = clip_boxes(a, c, lo_t, up_t, self.groups)
        return n_lo.cpu().numpy(), n_up.cpu().numpy(), empty.cpu().numpy()

    def _node_bounds(self, row_lower: torch.Tensor) -> torch.Tensor:
        """Return (B,) node bounds: min over disjuncts of max over the disjunct's rows."""
        return self._disjunct_bounds(row_lower).min(dim=1).values

    def _disjunct_bounds(self, row_lower: torch.Tensor) -> torch.Tensor:
        """Return (B, K) disjunct bounds: max over each disjunct's rows."""
        per = torch.full((row_lower.shape[0], self.n_disjuncts), -torch.inf,
                         dtype=row_lower.dtype, device=row_lower.device)
        return per.scatter_reduce(1, self._disj.expand_as(row_lower), row_lower, "amax")

    def _free_unstable(self, batch: NodeBatch, state: NodeState) -> np.ndarray:
        """Return (B,) counts of ReLUs that are neither split nor stable.

        A node with none left (or a point box) is decided exactly by LP: with every ReLU
        stable the network is affine on the box, conjunctions included, also under input
        splits.
        """
        free = torch.zeros(batch.batch_size, dtype=torch.long, device=self.device)
        for m, lo, up in zip(batch.splits, state.pre_lower, state.pre_upper, strict=True):
            free += ((m == 0) & (lo < 0) & (up > 0)).sum(dim=1)
        return free.cpu().numpy()

    # ----------------------------------------------------------------- branching
    def branch_context(self, parents: list[Node], needs_lookahead: bool = False) -> BranchContext:
        """Stack the parents' data for a heuristic (see ``BranchContext``)."""
        lo = torch.as_tensor(np.stack([p.lower for p in parents]), dtype=self.dtype,
                             device=self.device)
        up = torch.as_tensor(np.stack([p.upper for p in parents]), dtype=self.dtype,
                             device=self.device)
        state = self._gathered(parents)
        masks = gather_masks([p.state for p in parents])
        biases = tuple(self._feeding_bias(s) for s in self.net.relu_slots)
        evaluate = self._lookahead(parents, state, masks, lo, up) if needs_lookahead else None
        coeffs = [p.state.input_coeffs for p in parents]
        input_coeffs = None if any(c is None for c in coeffs) else torch.cat(coeffs, 0)
        lams = [p.state.relu_coeffs for p in parents]
        relu_coeffs = None if any(c is None for c in lams) else tuple(
            torch.cat([c[k] for c in lams], 0)
            for k in range(len(self.net.relu_sizes)))
        return BranchContext(lo, up, self.root_width, state.pre_lower, state.pre_upper, masks,
                             relu_coeffs, biases, input_coeffs, evaluate, self.generator,
                             self._gradient(state, masks, len(parents)))

    def _feeding_bias(self, slot: int) -> torch.Tensor:
        """Return the bias feeding ReLU ``slot``: the affine op's, summed over the branches of
        a residual join (zeros after a max pool, which has none: a ReLU may follow a pooling
        layer directly)."""
        return self.net.pre_bias(slot)

    def _gradient(self, state: NodeState, masks: tuple[torch.Tensor, ...], batch: int
                  ) -> Callable[[], tuple[torch.Tensor, torch.Tensor]] | None:
        """Return the worst rows' gradient-interval closure (None for conv/pool nets)."""
        if not supports_gradient(self.net):
            return None

        def gradient() -> tuple[torch.Tensor, torch.Tensor]:
            rows = (state.row_lower.argmin(dim=1) if state.row_lower is not None
                    else torch.zeros(batch, dtype=torch.long, device=self.device))
            return gradient_bounds(self.net, rows, state.pre_lower, state.pre_upper, masks)

        return gradient

    def _lookahead(self, parents: list[Node], state: NodeState,
                   masks: tuple[torch.Tensor, ...], lo: torch.Tensor, up: torch.Tensor
                   ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Return FSB's evaluate(candidates) -> (lb_inactive, lb_active) by cheap CROWN."""
        offsets = np.cumsum([0, *self.net.relu_sizes])

        def evaluate(cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            node = cand[:, 0].repeat_interleave(2)
            child_masks = [m.index_select(0, node).clone() for m in masks]
            for i, (_, flat) in enumerate(cand.tolist()):
                layer = int(np.searchsorted(offsets, flat, side="right") - 1)
                unit = flat - int(offsets[layer])
                child_masks[layer][2 * i, unit] = -1
                child_masks[layer][2 * i + 1, unit] = 1
            batch = NodeBatch(lo.index_select(0, node), up.index_select(0, node),
                              tuple(child_masks), self._lookahead_state(state, node))
            res = bound_batch(self.net, batch, self.look_opts)
            lb = torch.where(res.infeasible, torch.inf, self._node_bounds(res.row_lower))
            return lb[0::2], lb[1::2]

        return evaluate

    def _lookahead_state(self, state: NodeState, node: torch.Tensor) -> NodeState:
        """Return the parents' states per candidate child: with their alpha and beta for a
        warm lookahead, else the bounds alone."""
        taken = state.take(node)
        return taken if self.look_opts.method != "crown" else taken.without_optimizer_state()

    # -------------------------------------------------------------------- leaves
    def decide_by_milp(self, node: Node, time_limit: float) -> MilpVerdict:
        """Decide a node by one big-M MILP per disjunct (HiGHS) under ``time_limit``."""
        payload: Payload = node.state
        single = payload.single()
        lowers = [t[0].cpu().numpy() for t in single.pre_lower]
        uppers = [t[0].cpu().numpy() for t in single.pre_upper]
        masks = [m[0].cpu().numpy() for m in payload.masks]
        return decide_milp(self.network, self.prop, (lowers, uppers), masks, "bigm",
                           time_limit=time_limit, threads=1,
                           box=InputBox(node.lower, node.upper))

    def decide_exactly(self, node: Node, time_limit: float = 60.0) -> LeafVerdict:
        """Decide a node with no free unstable ReLU by one exact LP per disjunct.

        The LP (``lp.relaxation.solve_fixed_node``) encodes every neuron by its split or its
        stable piece, so it is exact for ReLU networks; its bound is recomputed from the duals
        in float64. A node that still has an unfixed neuron (a point-like box whose bounds do
        not settle it) gets no proof (bound -inf), and the loop then answers UNKNOWN.
        """
        payload: Payload = node.state
        single = payload.single()
        lowers = [t[0].cpu().numpy() for t in single.pre_lower]
        uppers = [t[0].cpu().numpy() for t in single.pre_upper]
        masks = [m[0].cpu().numpy() for m in payload.masks]
        box = InputBox(node.lower, node.upper)
        best, cand = np.inf, None
        proofs: list[tuple[int, np.ndarray, np.ndarray]] = []
        farkas = False
        for k, disjunct in enumerate(self.prop.unsafe.disjuncts):
            try:
                relax = fixed_node_relaxation(self.network, box, (lowers, uppers), masks,
                                              disjunct)
            except ValueError:
                return LeafVerdict(-np.inf, False, None)
            res = lp_lower_bound(relax, HighsOptions(time_limit=time_limit, presolve=False))
            if res.candidate is not None and (cand is None or res.lower < best):
                cand = res.candidate
            best = min(best, res.lower)
            wanted = getattr(self.options, "certify", "off") != "off"
            proof = (dual_proof(relax, res.row_duals)
                     if wanted and res.lower > 0 and res.row_duals is not None else None)
            if proof is not None:
                weights, nu = proof
                if np.isinf(res.lower):
                    # a Farkas ray: a proof that the node is empty (no objective involved)
                    weights = np.zeros_like(weights)
                proofs.append((k, weights, nu))
            farkas |= bool(np.isinf(res.lower) and res.lower > 0 and proof is None)
        return LeafVerdict(best, bool(np.isinf(best) and best > 0), cand, tuple(proofs),
                           farkas)
