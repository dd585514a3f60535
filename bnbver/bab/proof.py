"""Collect a search's tree as a certificate (``bnbver.check.format.Tree``).

The loop registers every bounded node (its parent, the split that made it, its box before
and after clipping, how its intermediate bounds were obtained, and the dual proofs of the
disjuncts its own bounds exclude), marks a node INTERNAL when it is branched, and gives each
closed node its status. ``tree()`` then returns the columns the checker reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnbver.bab.bounding import BoundedChild
from bnbver.bab.node import Node
from bnbver.check.format import (
    BOUND,
    EMPTY,
    INFEASIBLE,
    INPUT,
    INTERNAL,
    RELU,
    ROOT,
    SOLVER,
    Tree,
)

#: closing method (as the loop names it) -> certificate status ("lp-farkas": an LP leaf
#: closed by a Farkas ray, which the certificate does not carry yet)
STATUS_OF = {"infeasible": INFEASIBLE, "clip": EMPTY, "milp": SOLVER, "lp-farkas": SOLVER}


@dataclass
class _Record:
    """What the certificate keeps of one node."""

    parent: int
    kind: int
    layer: int
    unit: int
    active: bool
    mid: float
    recompute: bool
    clipped: bool
    box: tuple[np.ndarray, np.ndarray]
    region: tuple[np.ndarray, np.ndarray]
    status: int = INTERNAL


@dataclass
class ProofBuilder:
    """The tree of one search, as it grows (a mutable resource owned by the search).

    Attributes:
        input_splits: the search splits the input (boxes are recorded).
        recompute_children: children recompute their intermediate bounds.
        width: sum of the ReLU layer sizes (length of a proof's coefficients).
        max_rows: the most rows of one unsafe disjunct.
    """

    input_splits: bool
    recompute_children: bool
    width: int
    max_rows: int
    nodes: dict[int, _Record] = field(default_factory=dict)
    proofs: list[tuple[int, int, np.ndarray, np.ndarray]] = field(default_factory=list)
    interm: list[tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = field(
        default_factory=list)
    clips: list[tuple[int, np.ndarray]] = field(default_factory=list)
    claims: list[tuple[int, int]] = field(default_factory=list)

    def add(self, node: Node, child: BoundedChild) -> None:
        """Register a freshly bounded node (its decision is ``node.decision``)."""
        region = child.region or (child.lower, child.upper)
        kind, layer, unit, active, mid = ROOT, -1, -1, False, 0.0
        dec = node.decision
        if dec is not None and dec[0] == "relu":
            kind, layer, unit, active = RELU, int(str(dec[1])), int(str(dec[2])), bool(dec[3])
        elif dec is not None:
            kind, layer, active = INPUT, int(str(dec[1])), dec[2] == "upper"
            mid = float(region[0][layer] if active else region[1][layer])
        root = node.parent_id < 0
        self.nodes[node.node_id] = _Record(
            node.parent_id, kind, layer, unit, active, mid,
            root or self.recompute_children, bool(child.shrunk),
            (child.lower.copy(), child.upper.copy()), (region[0].copy(), region[1].copy()))
        for k, weights, nu in child.proofs:
            self.proofs.append((node.node_id, k, weights, nu))
        if child.interm_proofs is not None:
            self.interm.append((node.node_id, child.interm_proofs))
        self.claims.extend((node.node_id, k) for k in child.claims)
        if child.clip_nus is not None and child.shrunk:
            self.clips.append((node.node_id, child.clip_nus))

    def add_proofs(self, node_id: int,
                   proofs: tuple[tuple[int, np.ndarray, np.ndarray], ...]) -> None:
        """Attach more proofs to a node (an LP leaf's duals)."""
        for k, weights, nu in proofs:
            self.proofs.append((node_id, k, weights, nu))

    def close(self, node_id: int, method: str) -> None:
        """Mark a node closed by ``method`` (the loop's names: a bound method, "lp", ...)."""
        rec = self.nodes[node_id]
        rec.status = STATUS_OF.get(method, BOUND)
        # A closed node's argument holds on its whole region: keep that, not the clipped box.
        rec.box, rec.clipped = rec.region, False

    def tree(self) -> Tree:
        """Return the certificate columns (node ids must be 0..N-1)."""
        n = len(self.nodes)
        recs = [self.nodes[i] for i in range(n)]
        def col(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(r, name) for r in recs], dtype=dtype)
        boxes = self.input_splits
        n_in = recs[0].box[0].size if recs else 0
        return Tree(
            parent=col("parent", np.int64), kind=col("kind", np.int8),
            layer=col("layer", np.int64), unit=col("unit", np.int64),
            active=col("active", bool), mid=col("mid", np.float64),
            recompute=col("recompute", bool), status=col("status", np.int8),
            clipped=col("clipped", bool),
            box_lo=np.array([r.box[0] for r in recs]) if boxes else np.zeros((0, n_in)),
            box_hi=np.array([r.box[1] for r in recs]) if boxes else np.zeros((0, n_in)),
            claim_node=np.array([c[0] for c in self.claims], np.int64),
            claim_disjunct=np.array([c[1] for c in self.claims], np.int64),
            **self._proof_columns(), **self._interm_columns(), **self._clip_columns())

    def _clip_columns(self) -> dict[str, np.ndarray]:
        nodes = [np.full(v.shape[0], i) for i, v in self.clips if self.nodes[i].clipped]
        rows = [np.arange(v.shape[0]) for i, v in self.clips if self.nodes[i].clipped]
        nus = [v for i, v in self.clips if self.nodes[i].clipped]
        if not nus:
            return {"clip_node": np.zeros(0, np.int64), "clip_row": np.zeros(0, np.int64),
                    "clip_nu": np.zeros((0, self.width))}
        return {"clip_node": np.concatenate(nodes).astype(np.int64),
                "clip_row": np.concatenate(rows).astype(np.int64), "clip_nu": np.vstack(nus)}

    def _proof_columns(self) -> dict[str, np.ndarray]:
        p = len(self.proofs)
        weights = np.zeros((p, self.max_rows))
        nu = np.zeros((p, self.width))
        for q, (_, _, w, v) in enumerate(self.proofs):
            weights[q, :w.size] = w
            nu[q] = v
        return {"proof_node": np.array([x[0] for x in self.proofs], np.int64),
                "proof_disjunct": np.array([x[1] for x in self.proofs], np.int64),
                "proof_weights": weights, "proof_nu": nu}

    def _interm_columns(self) -> dict[str, np.ndarray]:
        if not self.interm:
            return {"root_node": np.zeros(0, np.int64), "root_layer": np.zeros(0, np.int64),
                    "root_unit": np.zeros(0, np.int64), "root_sign": np.zeros(0, np.int8),
                    "root_nu": np.zeros((0, self.width))}
        nodes, layer, unit, sign, nu = [], [], [], [], []
        for node_id, (la, un, si, v) in self.interm:
            nodes.append(np.full(la.size, node_id))
            layer.append(la)
            unit.append(un)
            sign.append(si)
            nu.append(v)
        return {"root_node": np.concatenate(nodes).astype(np.int64),
                "root_layer": np.concatenate(layer).astype(np.int64),
                "root_unit": np.concatenate(unit).astype(np.int64),
                "root_sign": np.concatenate(sign).astype(np.int8),
                "root_nu": np.vstack(nu)}
