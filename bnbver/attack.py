"""Falsification: random sampling and PGD on the torch model, checked in float64.

The attack minimises the *unsafe margin* of the property,
``m(y) = min_k max_i (C_k y - d_k)_i`` (one term per disjunct); ``m(f(x)) <= 0`` means x is a
counterexample. PGD takes sign-gradient steps on m inside the box (projected by clipping) from
several random starts. Every candidate is re-checked by :func:`validate_counterexample`, so a
float32/float64 rounding difference can only lose a counterexample, never invent one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from bnbver.network import Network
from bnbver.result import Counterexample, validate_counterexample
from bnbver.spec import Property


@dataclass(frozen=True)
class AttackOptions:
    """Budget of the falsifier.

    Attributes:
        samples: uniform random samples drawn from the box (plus its centre).
        restarts: PGD runs from random starts, batched together.
        steps: PGD iterations per run.
        step_fraction: initial step size as a fraction of the box width (decays linearly).
    """

    samples: int = 1024
    restarts: int = 16
    steps: int = 60
    step_fraction: float = 0.25


def unsafe_margin(y: torch.Tensor, prop: Property) -> torch.Tensor:
    """Return m(y) = min_k max_i (C_k y - d_k)_i for y of shape (B, m) -> (B,)."""
    per_disjunct = []
    for h in prop.unsafe.disjuncts:
        C = torch.tensor(h.C, dtype=y.dtype, device=y.device)
        d = torch.tensor(h.d, dtype=y.dtype, device=y.device)
        per_disjunct.append((y @ C.T - d).max(dim=1).values)
    return torch.stack(per_disjunct, dim=1).min(dim=1).values


def _check_batch(network: Network, prop: Property, xs: np.ndarray,
                 margins: np.ndarray) -> Counterexample | None:
    """Validate the most promising inputs of a batch in float64; return the first real one."""
    for i in np.argsort(margins)[:8]:
        if margins[i] > 1e-6:
            break
        cex = validate_counterexample(network, prop, xs[i])
        if cex is not None:
            return cex
    return None


def _random_search(network: Network, module: torch.nn.Module, prop: Property,
                   n: int, rng: np.random.Generator) -> Counterexample | None:
    lo, hi = prop.box.lower, prop.box.upper
    xs = lo + rng.random((n, lo.size)) * (hi - lo)
    xs = np.vstack([(lo + hi) / 2, lo, hi, xs])
    with torch.no_grad():
        m = unsafe_margin(module(torch.as_tensor(xs)), prop).numpy()
    return _check_batch(network, prop, xs, m)


def _pgd(network: Network, module: torch.nn.Module, prop: Property,
         options: AttackOptions, rng: np.random.Generator,
         deadline: float) -> Counterexample | None:
    lo = torch.tensor(prop.box.lower)
    hi = torch.tensor(prop.box.upper)
    width = hi - lo
    x = lo + torch.as_tensor(rng.random((options.restarts, lo.numel()))) * width
    for step in range(options.steps):
        if time.monotonic() > deadline:
            break
        x = x.detach().requires_grad_(True)
        m = unsafe_margin(module(x), prop)
        if step % 10 == 0 or step == options.steps - 1:
            cex = _check_batch(network, prop, x.detach().numpy(), m.detach().numpy())
            if cex is not None:
                return cex
        (grad,) = torch.autograd.grad(m.sum(), x)
        size = options.step_fraction * (1.0 - step / options.steps)
        x = torch.minimum(torch.maximum(x - size * width * grad.sign(), lo), hi)
    x = x.detach()
    with torch.no_grad():
        m = unsafe_margin(module(x), prop)
    return _check_batch(network, prop, x.numpy(), m.numpy())


def falsify(network: Network, prop: Property, options: AttackOptions | None = None,
            seed: int = 0, deadline: float = float("inf"),
            module: torch.nn.Module | None = None) -> Counterexample | None:
    """Search for a counterexample by random sampling then PGD; return it or None.

    Args:
        network: the network (its float64 forward is the judge).
        prop: the property; its box bounds the search.
        options: budget.
        seed: seed of the random starts.
        deadline: absolute ``time.monotonic()`` time to stop at.
        module: a prebuilt float64 torch module of ``network`` (built when None).
    """
    options = options or AttackOptions()
    rng = np.random.default_rng(seed)
    module = module if module is not None else network.to_torch(torch.float64)
    cex = _random_search(network, module, prop, options.samples, rng)
    if cex is None and options.steps > 0 and time.monotonic() < deadline:
        cex = _pgd(network, module, prop, options, rng, deadline)
    return cex
