"""``bnbver check NET PROP CERT``: re-verify an ``unsat`` certificate independently.

Prints one line, ``certificate valid: N leaves, checked in S s`` (or ``valid except K
solver-decided leaves``), or the first problem found; exits 0 only when the whole input set is
covered by leaves that each check (with ``--strict``, none closed by a solver alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from threadpoolctl import threadpool_limits

from bnbver.check import check_certificate
from bnbver.errors import InputError
from bnbver.io.loaders import load_network, load_properties


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``check``."""
    parser.add_argument("net", help="network file (.onnx or .nnet)")
    parser.add_argument("prop", help="property file (.vnnlib)")
    parser.add_argument("certificate", help="the proof written by verify --certificate")
    parser.add_argument("--strict", action="store_true",
                        help="fail when any leaf was closed by a MILP solver only")


def run(args: argparse.Namespace) -> int:
    """Check the certificate; exit 0 when valid, 1 when not."""
    if not Path(args.certificate).is_file():
        raise InputError(args.certificate, "no such file")
    network = load_network(args.net)
    props = load_properties(args.prop, network)
    # One BLAS thread: the checker's products are many and mid-sized, and a second thread
    # costs more than it gives (ACAS Xu 1_1 prop_3: 4.0 s against 7.4 s, 3x the CPU time).
    with threadpool_limits(limits=1, user_api="blas"):
        report = check_certificate(network, props, args.certificate, strict=args.strict)
    print(report.line())
    return 0 if report.valid else 1
