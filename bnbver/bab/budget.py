"""How many parents one BaB round may pop: the time it takes and the memory its bounding takes.

Rounds are kept to a share of the time limit: the frontier is re-sorted between rounds, so a
search of a few long rounds bounds many children of nodes that a shorter round would have
shown not to be the worst (on a CIFAR ResNet at 120 s, rounds of 256 parents left a search
of five to ten rounds).

A round bounds every child of its parents in one batched engine call, and that call's working
memory grows with the (child, open margin row) pairs it bounds: the backward pass keeps a
linear-coefficient tensor per operation for every row, and the alpha/beta optimisation keeps
them all for its gradient. On a CIFAR ResNet a round of 256 parents can take 9 GB, so two such
searches at once overrun a 24 GB machine. The estimate here is deliberately an upper one: a
round that fits it fits the machine.
"""

from __future__ import annotations

import os

import torch

from bnbver.bounds import BoundedNetwork
from bnbver.bounds.prepared import op_out_size

#: Bytes of working memory per (child, open row) and per value a row's backward pass carries
#: (the input plus every operation's output), in units of the compute dtype's size: an upper
#: estimate over the conv nets measured (results/README.md, "round memory").
ROW_BYTES_PER_VALUE = 40.0
#: Share of the machine's (or the GPU's) memory an automatic budget gives one round: room
#: for a few searches at once and their frontiers.
AUTO_MEMORY_SHARE = 0.125
#: Assumed machine memory where the operating system does not report it.
FALLBACK_MEMORY = 8 * 2**30


def child_row_bytes(net: BoundedNetwork) -> float:
    """Return the estimated working memory, in bytes, of bounding one open margin row of one
    child of ``net``."""
    values = net.input_size + sum(op_out_size(op) for op in net.ops)
    itemsize = torch.empty((), dtype=net.dtype).element_size()
    return ROW_BYTES_PER_VALUE * itemsize * float(values)


def memory_budget(gib: float, device: str) -> float:
    """Return the bytes one round's bounding may take: ``gib`` GiB, or where ``gib`` is 0 an
    ``AUTO_MEMORY_SHARE`` of the device's memory (the GPU's on CUDA, else the machine's)."""
    if gib < 0:
        raise ValueError(f"round_memory must be >= 0 GiB, got {gib}")
    if gib > 0:
        return gib * 2**30
    return AUTO_MEMORY_SHARE * device_memory(device)


def device_memory(device: str) -> float:
    """Return the total memory, in bytes, of ``device`` (a CUDA GPU's own, else the
    machine's physical memory; ``FALLBACK_MEMORY`` where neither is known)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return float(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return float(FALLBACK_MEMORY)


def parents_that_fit(batch_size: int, left: float, round_time: float, per_parent: float,
                     round_limit: float = float("inf")) -> int:
    """Return how many parents the next round may pop by time, at ``per_parent`` seconds
    each: at most ``batch_size``, as many as take ``round_limit`` seconds (at least one),
    and, when the last round's time ``round_time`` does not fit in the ``left`` seconds,
    as many as fit there with a 30 % margin (0: stop)."""
    if left <= 0:
        return 0
    if per_parent <= 0:
        return batch_size
    size = batch_size
    if round_limit < float("inf"):
        size = min(size, max(1, int(round_limit / per_parent)))
    if round_time < left:
        return size
    return min(size, int(0.7 * left / per_parent))
