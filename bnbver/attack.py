"""Falsification: random sampling and PGD on the torch model, checked in float64.

The attack minimises the *unsafe margin* of the property,
``m(y) = min_k max_i (C_k y - d_k)_i`` (one term per disjunct); ``m(f(x)) <= 0`` means x is a
counterexample. PGD takes sign-gradient steps on m inside the box (projected by clipping) from
several random starts. Every candidate is re-checked by :func:`validate_counterexample`, so a
float32/float64 rounding difference can only lose a counterexample, never invent one. The
whole-box search of :func:`falsify` therefore runs in float32 by default (half the time of
float64 on a CPU); the searches inside tiny BaB boxes (:func:`falsify_boxes`) keep the
module's dtype, float64 in the loop, since float32 cannot resolve their widths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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


def margin_fn(prop: Property, dtype: torch.dtype,
              device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the unsafe margin ``y -> m(y) = min_k max_i (C_k y - d_k)_i``, (B, m) -> (B,),
    for ``prop``, with its C, d tensors built once."""
    terms = [(torch.tensor(h.C, dtype=dtype, device=device).T,
              torch.tensor(h.d, dtype=dtype, device=device)) for h in prop.unsafe.disjuncts]

    def margin(y: torch.Tensor) -> torch.Tensor:
        per_disjunct = [(y @ Ct - d).max(dim=1).values for Ct, d in terms]
        return torch.stack(per_disjunct, dim=1).min(dim=1).values

    return margin


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _check_batch(network: Network, prop: Property, xs: np.ndarray,
                 margins: np.ndarray) -> Counterexample | None:
    """Validate the most promising inputs of a batch in float64; return the first real one.

    Candidates up to a small positive margin are tried (1e-6 from a float64 search, 1e-4
    from float32), since the search's rounding may hide a real counterexample's sign; each
    is clipped into the box, then judged by the float64 forward pass alone.
    """
    tol = 1e-6 if margins.dtype == np.float64 else 1e-4
    for i in np.argsort(margins)[:8]:
        if margins[i] > tol:
            break
        # A float32 point on a face may lie one float32 ulp outside the float64 box.
        x = np.clip(xs[i].astype(np.float64), prop.box.lower, prop.box.upper)
        cex = validate_counterexample(network, prop, x)
        if cex is not None:
            return cex
    return None


def _random_search(network: Network, module: torch.nn.Module, prop: Property,
                   n: int, rng: np.random.Generator) -> Counterexample | None:
    lo, hi = prop.box.lower, prop.box.upper
    xs = lo + rng.random((n, lo.size)) * (hi - lo)
    xs = np.vstack([(lo + hi) / 2, lo, hi, xs])
    dtype = _module_dtype(module)
    with torch.no_grad():
        m = margin_fn(prop, dtype)(module(torch.as_tensor(xs, dtype=dtype))).numpy()
    return _check_batch(network, prop, xs, m)


def _pgd_boxes(network: Network, module: torch.nn.Module, prop: Property, lo: torch.Tensor,
               hi: torch.Tensor, x: torch.Tensor, steps: int, step_fraction: float,
               deadline: float) -> Counterexample | None:
    """Run PGD from the starts ``x`` (N, n_in), each inside its own box ``[lo, hi]`` (N, n_in).

    Sign-gradient steps of ``step_fraction`` times the box width (decaying linearly) on the
    unsafe margin, projected by clipping; candidates are validated every 10 steps and at the
    end.
    """
    dtype = _module_dtype(module)
    lo, hi, x = lo.to(dtype), hi.to(dtype), x.to(dtype)
    margin = margin_fn(prop, dtype)
    width = hi - lo
    for step in range(steps):
        if time.monotonic() > deadline:
            break
        x = x.detach().requires_grad_(True)
        m = margin(module(x))
        if step % 10 == 0:
            cex = _check_batch(network, prop, x.detach().numpy(), m.detach().numpy())
            if cex is not None:
                return cex
        (grad,) = torch.autograd.grad(m.sum(), x)
        size = step_fraction * (1.0 - step / steps)
        x = torch.minimum(torch.maximum(x - size * width * grad.sign(), lo), hi)
    x = x.detach()
    with torch.no_grad():
        m = margin(module(x))
    return _check_batch(network, prop, x.numpy(), m.numpy())


def _pgd(network: Network, module: torch.nn.Module, prop: Property,
         options: AttackOptions, rng: np.random.Generator,
         deadline: float) -> Counterexample | None:
    if options.restarts < 1 or options.steps < 1:
        return None
    lo = torch.tensor(prop.box.lower).expand(options.restarts, -1)
    hi = torch.tensor(prop.box.upper).expand(options.restarts, -1)
    x = lo + torch.as_tensor(rng.random(tuple(lo.shape))) * (hi - lo)
    return _pgd_boxes(network, module, prop, lo, hi, x, options.steps, options.step_fraction,
                      deadline)


def falsify_boxes(network: Network, prop: Property, lower: np.ndarray, upper: np.ndarray,
                  module: torch.nn.Module, rng: np.random.Generator, restarts: int = 2,
                  steps: int = 10, deadline: float = float("inf")) -> Counterexample | None:
    """Search for a counterexample inside each of N small boxes (e.g. open BaB nodes).

    The box centres and ``restarts - 1`` random points per box start a batched PGD, each run
    kept in its own box (which must lie in ``prop.box``). This finds counterexamples in
    regions that a search of the whole box misses (ACAS Xu 1_6 property 2).

    Args:
        lower, upper: (N, n_in) boxes.
        module: float64 torch module of ``network``.
        rng: random generator of the starts.
    """
    lo = torch.as_tensor(np.repeat(lower, restarts, axis=0))
    hi = torch.as_tensor(np.repeat(upper, restarts, axis=0))
    u = torch.as_tensor(rng.random(tuple(lo.shape)))
    u[::restarts] = 0.5
    return _pgd_boxes(network, module, prop, lo, hi, lo + u * (hi - lo), steps, 0.25, deadline)


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
        module: a prebuilt torch module of ``network``, whose dtype the search uses (a
            float32 one is built when None).
    """
    options = options or AttackOptions()
    rng = np.random.default_rng(seed)
    module = module if module is not None else network.to_torch(torch.float32)
    cex = _random_search(network, module, prop, options.samples, rng)
    if cex is None and options.steps > 0 and time.monotonic() < deadline:
        cex = _pgd(network, module, prop, options, rng, deadline)
    return cex


def deepen_witness(network: Network, prop: Property, x: np.ndarray,
                   accept: Callable[[Counterexample], bool], deadline: float,
                   steps: int = 40) -> Counterexample | None:
    """Return a counterexample near x that ``accept`` takes too (e.g. onnxruntime agrees).

    A counterexample on the edge of the unsafe set (margin just below 0 in exact arithmetic)
    can be refuted by a float32 evaluation. Sign-gradient steps on the float64 margin from
    x, with step sizes from 1e-9 to 0.25 of the box width, push it inwards; every iterate
    that is a counterexample in exact arithmetic (:func:`validate_counterexample`) is offered
    to ``accept``, first the least moved. Random points in growing boxes around x follow.
    """
    module = network.to_torch(torch.float64)
    margin = margin_fn(prop, torch.float64)
    lo, hi = torch.tensor(prop.box.lower), torch.tensor(prop.box.upper)
    width = hi - lo
    for size in 10.0 ** np.arange(-9.0, 0.0):
        cur = torch.as_tensor(np.asarray(x, dtype=np.float64))
        for _ in range(steps):
            if time.monotonic() > deadline:
                return None
            cur = cur.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(margin(module(cur[None]))[0], cur)
            cur = torch.minimum(torch.maximum(cur - min(size, 0.25) * width * grad.sign(),
                                              lo), hi).detach()
            cex = validate_counterexample(network, prop, cur.numpy())
            if cex is not None and accept(cex):
                return cex
    return _sample_around(network, prop, np.asarray(x, dtype=np.float64), accept, deadline)


def _sample_around(network: Network, prop: Property, x: np.ndarray,
                   accept: Callable[[Counterexample], bool], deadline: float,
                   per_radius: int = 64) -> Counterexample | None:
    """Try random points in boxes around x of radius 1e-9 to 1e-1 of the box width."""
    rng = np.random.default_rng(0)
    width = prop.box.upper - prop.box.lower
    for radius in 10.0 ** np.arange(-9.0, 0.0):
        lo = np.maximum(x - radius * width, prop.box.lower)
        hi = np.minimum(x + radius * width, prop.box.upper)
        for _ in range(per_radius):
            if time.monotonic() > deadline:
                return None
            cex = validate_counterexample(network, prop, lo + rng.random(x.size) * (hi - lo))
            if cex is not None and accept(cex):
                return cex
    return None
