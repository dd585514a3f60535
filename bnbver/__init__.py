"""bnbver: a complete branch-and-bound verifier for ReLU neural networks."""

from bnbver.apps.certify import Row, Summary, certify, summarize
from bnbver.driver import VerifierOptions, verify, verify_robustness
from bnbver.network import Conv2d, Dense, Flatten, MaxPool2d, Network, ReLU
from bnbver.result import Result, Status
from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet

__all__ = [
    "Conv2d",
    "Dense",
    "Flatten",
    "HalfSpaces",
    "InputBox",
    "MaxPool2d",
    "Network",
    "Property",
    "ReLU",
    "Result",
    "Row",
    "Status",
    "Summary",
    "UnsafeSet",
    "VerifierOptions",
    "certify",
    "summarize",
    "verify",
    "verify_robustness",
]
__version__ = "0.1.0"
