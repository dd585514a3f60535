"""Pre-activation bounds of a node from a named source, for the MILP encodings.

One function, :func:`node_bounds`, so that every place that encodes a node as a MILP
(``bnbver export-milp --bounds``, ``scripts/compare_solvers.py --milp-bounds``) gets the same
numbers for the same name. The sources (:data:`BOUND_SOURCES`):

- ``interval``: interval arithmetic through the network (``lp.tighten`` mode ``interval``);
- ``lp``: LP bound tightening, layer by layer from the interval bounds (mode ``lp``);
- ``milp``: the LP pass, then one big-M MILP per unstable neuron and direction (mode
  ``milp``), within the deadline;
- ``crown``: CROWN intermediate bounds: the BaB's root (``NodeBounder.bound_root``) with
  ReLU splits and ``root_method="crown"``;
- ``alpha``: alpha-CROWN-optimised intermediate bounds: the BaB's root with ReLU splits and
  the default options (what a ReLU-split search starts from);
- ``auto``: the BaB's own root for this network (``split="auto"``): ``alpha`` on
  ReLU-split networks; with input splits (ACAS Xu) the root's CROWN intermediate bounds.

Every source returns sound bounds valid on the node's box with its splits (the tightening
modes use dual bounds only; the bounds engine rounds outwards).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from bnbver.bab.bounding import NodeBounder
from bnbver.bab.loop import BabOptions, choose_split_kind
from bnbver.bounds import NodeBatch, NodeState, bound_batch
from bnbver.errors import InputError
from bnbver.lp.tighten import TightenOptions, tighten_bounds
from bnbver.network import Network
from bnbver.spec import InputBox, Property
from bnbver.splits import SplitSet, split_masks

BOUND_SOURCES = ("interval", "lp", "milp", "crown", "alpha", "auto")

#: source -> the BabOptions of the root that gives it (the bounds-engine sources).
_ENGINE_OPTIONS = {
    "crown": BabOptions(split="relu", root_method="crown"),
    "alpha": BabOptions(split="relu"),
    "auto": BabOptions(),
}


@dataclass(frozen=True, eq=False)
class NodeBounds:
    """Pre-activation bounds of a node.

    Attributes:
        lower, upper: per ReLU layer (n_l,) float64 bounds.
        source: the name they came from (one of :data:`BOUND_SOURCES`).
        seconds: wall time to compute them.
        margin_lower: the engine's lower bound of the unsafe margin (nan for the
            tightening sources; +inf when the node is infeasible).
        infeasible: the bounds proved the node empty (an engine source then returns
            empty intervals, lower > upper, so a MILP built on them is infeasible too).
    """

    lower: list[np.ndarray]
    upper: list[np.ndarray]
    source: str
    seconds: float
    margin_lower: float = math.nan
    infeasible: bool = False


def validate_source(source: str, argument: str = "--bounds") -> str:
    """Return ``source`` if it is a known bounds source.

    Raises:
        InputError: (naming ``argument``) it is not one of :data:`BOUND_SOURCES`.
    """
    if source not in BOUND_SOURCES:
        raise InputError(argument, f"unknown bounds source {source!r}; expected one of "
                         f"{', '.join(BOUND_SOURCES)}")
    return source


def node_bounds(network: Network, prop: Property, source: str,
                splits: SplitSet | None = None, *, box: InputBox | None = None,
                deadline: float | None = None, threads: int = 1) -> NodeBounds:
    """Return the node's pre-activation bounds from ``source`` (see the module docstring).

    Args:
        network: the network.
        prop: the property (its box is the node's unless ``box`` is given).
        source: one of :data:`BOUND_SOURCES`.
        splits: the node's ReLU splits.
        box: the node's input box (default: the property's).
        deadline: absolute ``time.monotonic()`` for the ``lp`` / ``milp`` tightening.
        threads: HiGHS threads of the tightening.

    Raises:
        InputError: unknown source.
    """
    validate_source(source)
    box = box or prop.box
    t0 = time.monotonic()
    if source in _ENGINE_OPTIONS:
        return _engine_bounds(network, Property(box, prop.unsafe, prop.name), source,
                              splits, t0)
    res = tighten_bounds(network, box, None, splits, TightenOptions(source, deadline, threads))
    return NodeBounds(list(res.lower), list(res.upper), source, time.monotonic() - t0,
                      infeasible=res.infeasible)


def _engine_bounds(network: Network, prop: Property, source: str, splits: SplitSet | None,
                   t0: float) -> NodeBounds:
    """Return the root bounds of a ``NodeBounder`` with the options of ``source``.

    A root that its bounds already prove (or that input-domain clipping empties) keeps no
    state in the search, so its pre-activation bounds come from the same engine call made
    again (same network, box, splits and options: the same numbers).
    """
    options = _ENGINE_OPTIONS[source]
    bounder = NodeBounder(network, prop, options, choose_split_kind(network, options))
    root = bounder.bound_root(prop.box.lower, prop.box.upper, splits)
    if root.infeasible and root.method != "clip":  # clip: no counterexample left, not empty
        # empty intervals: a MILP built on them is infeasible, like the node
        return NodeBounds([np.ones(n) for n in network.relu_sizes],
                          [-np.ones(n) for n in network.relu_sizes], source,
                          time.monotonic() - t0, math.inf, True)
    state = root.state.single() if root.state is not None else _root_state(bounder, prop,
                                                                           splits)
    lower = [t[0].detach().cpu().numpy().astype(np.float64) for t in state.pre_lower]
    upper = [t[0].detach().cpu().numpy().astype(np.float64) for t in state.pre_upper]
    return NodeBounds(lower, upper, source, time.monotonic() - t0, float(root.lower_bound))


def _root_state(bounder: NodeBounder, prop: Property, splits: SplitSet | None) -> NodeState:
    """Return the engine state of the root as ``NodeBounder.bound_root`` computes it."""
    device = bounder.device
    masks = tuple(torch.tensor(m, device=device)
                  for m in split_masks([splits or SplitSet()], bounder.network.relu_sizes))
    lower = torch.tensor(prop.box.lower[None], dtype=torch.float64, device=device)
    upper = torch.tensor(prop.box.upper[None], dtype=torch.float64, device=device)
    return bound_batch(bounder.net, NodeBatch(lower, upper, masks, None),
                       bounder.root_opts).state
