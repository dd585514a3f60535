"""The proof file of an ``unsat`` answer: a search tree whose leaves each carry what proves them.

A certificate is one tree per property (a VNN-LIB file with a disjunction of input boxes has
several), stored column-wise in one ``.npz`` file (numpy only, so that the checker needs
nothing else). Node i of a tree has:

- ``parent[i]`` (-1 for the root, whose box is the property's box) and the decision that made
  it: ``kind[i]`` = ROOT, RELU (``layer[i]``, ``unit[i]``, ``active[i]``: the neuron's
  pre-activation is >= 0, resp. <= 0, in this node) or INPUT (``layer[i]`` holds the input
  dimension, ``active[i]`` is True for the upper half: the parent's box cut at ``mid[i]``);
- ``box_lo[i]``, ``box_hi[i]`` (input-split trees only): the node's box after input-domain
  clipping; ``clipped[i]`` says the box is smaller than its half of the parent's, so the
  checker must re-derive that the rest holds no counterexample;
- ``recompute[i]``: its intermediate bounds were recomputed (interval and CROWN bounds on its
  own box, intersected with its parent's) rather than inherited (the parent's, intersected
  with interval propagation and clamped by the new split);
- ``status[i]``: INTERNAL (it has children), BOUND (closed: every unsafe disjunct has a
  proof here or at an ancestor), INFEASIBLE (its splits contradict its bounds), EMPTY (clipping
  left no point), SOLVER (closed by a MILP: not certified) or CROWN (closed by recomputable
  CROWN/interval bounds of the margins).

A *proof* (rows of the ``proof_*`` arrays) shows that one unsafe disjunct cannot hold anywhere
in one node (and so in its subtree): a convex combination ``weights`` of the disjunct's rows
``C y - d`` and, per ReLU layer, the coefficients ``nu`` of the pre-activations in a linear
bound of that combination (the dual form of :mod:`bnbver.bounds.linear`; any vector is valid,
the checker evaluates it rigorously). ``root_*`` rows are proofs of intermediate bounds of a
root (optimised slopes cannot be re-derived): neuron ``unit`` of ReLU layer ``layer`` with
``sign`` +1 (a lower bound) or -1 (an upper bound), coefficients for the layers before.
``clip_*`` rows give the coefficients of the unsafe rows with which a node (a root bounded by
alpha-CROWN) was clipped; the checker replays the clipping with them. ``claim_*`` rows say
that a node's own interval or CROWN bound (no stored coefficients) excludes a disjunct: the
checker re-derives that bound at that node, and the disjunct stays excluded in its subtree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

VERSION = 2
ROOT, RELU, INPUT = 0, 1, 2
INTERNAL, BOUND, INFEASIBLE, EMPTY, SOLVER, CROWN = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {INTERNAL: "internal", BOUND: "bound", INFEASIBLE: "infeasible",
                EMPTY: "empty", SOLVER: "solver", CROWN: "crown"}


@dataclass(frozen=True, eq=False)
class Tree:
    """One property's proof tree, column-wise (N nodes, P proofs, Q root proofs).

    Attributes:
        parent, kind, layer, unit, active, mid, recompute, status, clipped: (N,) per node.
        box_lo, box_hi: (N, n_in) boxes, or (0, n_in) for ReLU-split trees (the root box).
        proof_node, proof_disjunct: (P,) where and which disjunct each proof excludes.
        proof_weights: (P, K) the row combination (K: the most rows of a disjunct).
        proof_nu: (P, sum n_l) the pre-activation coefficients, layer after layer.
        root_node, root_layer, root_unit, root_sign: (Q,) intermediate-bound proofs.
        root_nu: (Q, sum n_l) coefficients of the layers before ``root_layer`` (zero after).
        clip_node, clip_row: (C,) a node whose clipping used optimised rows, and which row
            (numbered over the disjuncts in order, each disjunct's rows then their mean).
        clip_nu: (C, sum n_l) that row's coefficients.
        claim_node, claim_disjunct: (M,) a disjunct excluded at an internal node by the
            checker's own interval or CROWN bound of that node (no stored proof): its
            descendants keep it excluded although their own CROWN bound may be lower.
    """

    parent: np.ndarray
    kind: np.ndarray
    layer: np.ndarray
    unit: np.ndarray
    active: np.ndarray
    mid: np.ndarray
    recompute: np.ndarray
    status: np.ndarray
    clipped: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray
    proof_node: np.ndarray
    proof_disjunct: np.ndarray
    proof_weights: np.ndarray
    proof_nu: np.ndarray
    root_node: np.ndarray
    root_layer: np.ndarray
    root_unit: np.ndarray
    root_sign: np.ndarray
    root_nu: np.ndarray
    clip_node: np.ndarray
    clip_row: np.ndarray
    clip_nu: np.ndarray
    claim_node: np.ndarray
    claim_disjunct: np.ndarray

    @property
    def size(self) -> int:
        """Number of nodes."""
        return int(self.parent.shape[0])

    def leaves(self) -> np.ndarray:
        """Indices of the nodes that are not INTERNAL."""
        return np.flatnonzero(self.status != INTERNAL)


@dataclass(frozen=True, eq=False)
class ProofFile:
    """A certificate: one :class:`Tree` per property, and what it was made for.

    Attributes:
        trees: one per property of the VNN-LIB file, in order.
        relu_sizes: the network's ReLU layer sizes (a shape check).
        input_size: the network's input size.
    """

    trees: tuple[Tree, ...]
    relu_sizes: tuple[int, ...]
    input_size: int

    def save(self, path: str | Path) -> None:
        """Write the certificate as a compressed ``.npz`` file."""
        arrays: dict[str, np.ndarray] = {
            "version": np.array(VERSION), "relu_sizes": np.asarray(self.relu_sizes, np.int64),
            "input_size": np.array(self.input_size), "trees": np.array(len(self.trees))}
        for t, tree in enumerate(self.trees):
            for f in fields(Tree):
                arrays[f"t{t}_{f.name}"] = getattr(tree, f.name)
        with Path(path).open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    @staticmethod
    def load(path: str | Path) -> ProofFile:
        """Read a certificate written by :meth:`save`.

        Raises:
            ValueError: the file is not a certificate of this version.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            if "version" not in data or int(data["version"]) != VERSION:
                raise ValueError(f"not a bnbver certificate of version {VERSION}")
            trees = tuple(
                Tree(**{f.name: np.array(data[f"t{t}_{f.name}"]) for f in fields(Tree)})
                for t in range(int(data["trees"])))
            return ProofFile(trees, tuple(int(v) for v in data["relu_sizes"]),
                             int(data["input_size"]))

    def nbytes(self) -> int:
        """Total size of the arrays (uncompressed)."""
        return sum(getattr(t, f.name).nbytes for t in self.trees for f in fields(Tree))
