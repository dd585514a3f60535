"""An independent checker of ``unsat`` certificates.

``check_certificate(network, properties, path)`` re-verifies a proof written by
``bnbver verify --certificate``: that the search tree covers every property's input box and
that each leaf's closing argument holds, recomputing every bound in outward-rounded float64.
It imports numpy and bnbver's readers and IR only (``network``, ``spec``, ``io``): nothing of
the bounds engine, the LP layer, the search or torch, so a bug there cannot hide from it (a
test checks the imports). Leaves that only a MILP solver closed are counted as uncertified.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bnbver.check.format import ProofFile
from bnbver.check.net import check_net
from bnbver.check.tree import CheckError, TreeReport, check_tree
from bnbver.network import Network
from bnbver.spec import Property

__all__ = ["CheckReport", "ProofFile", "check_certificate", "check_proof"]


@dataclass(frozen=True)
class CheckReport:
    """The checker's verdict.

    Attributes:
        valid: every property's box is covered by leaves that each check (uncertified
            leaves allowed unless ``strict``).
        leaves: leaves checked.
        uncertified: leaves that only a solver closed.
        seconds: checking time.
        failure: the first problem found ("" when valid).
    """

    valid: bool
    leaves: int
    uncertified: int
    seconds: float
    failure: str = ""

    def line(self) -> str:
        """One line for the command line."""
        if not self.valid:
            return f"certificate INVALID: {self.failure}"
        tail = (f" except {self.uncertified} solver-decided leaves"
                if self.uncertified else "")
        return (f"certificate valid{tail}: {self.leaves} leaves, checked in "
                f"{self.seconds:.2f} s")


def check_proof(network: Network, properties: Sequence[Property], proof: ProofFile,
                strict: bool = False) -> CheckReport:
    """Check a loaded certificate against a network and its properties."""
    start = time.monotonic()
    total = TreeReport()
    try:
        net = check_net(network)
        if proof.relu_sizes != net.relu_sizes or proof.input_size != net.input_size:
            raise CheckError("the certificate is for a network of another shape")
        if len(proof.trees) != len(properties):
            raise CheckError(f"the certificate has {len(proof.trees)} trees, the property "
                               f"file {len(properties)} input boxes")
        for t, (tree, prop) in enumerate(zip(proof.trees, properties, strict=True)):
            try:
                rep = check_tree(net, prop, tree)
            except CheckError as exc:
                raise CheckError(f"tree {t}, {exc}") from None
            total.leaves += rep.leaves
            total.uncertified += rep.uncertified
        if strict and total.uncertified:
            raise CheckError(f"{total.uncertified} leaves were closed by a solver only")
    except (CheckError, ValueError, IndexError, TypeError) as exc:  # malformed arrays too
        return CheckReport(False, total.leaves, total.uncertified,
                           time.monotonic() - start, str(exc))
    return CheckReport(True, total.leaves, total.uncertified, time.monotonic() - start)


def check_certificate(network: Network, properties: Sequence[Property], path: str | Path,
                      strict: bool = False) -> CheckReport:
    """Load and check a certificate file (see :func:`check_proof`)."""
    try:
        proof = ProofFile.load(path)
    except (OSError, ValueError, KeyError) as exc:
        return CheckReport(False, 0, 0, 0.0, f"{path}: cannot read the certificate ({exc})")
    return check_proof(network, properties, proof, strict)
