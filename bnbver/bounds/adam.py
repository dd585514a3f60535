"""A plain Adam optimiser with exponential step-size decay, for alpha/beta-CROWN.

``torch.optim.Adam`` would do the same arithmetic, but constructing any ``torch.optim``
optimiser imports ``torch._dynamo``, about 2 s of start-up in every fresh process (one
``bnbver verify`` call, one VNN-COMP ``run_instance.sh``), which is more than a whole ACAS Xu
search often takes. This is the textbook update (Kingma & Ba 2015) on the given tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Adam:
    """Adam on groups of leaf tensors, each group with its own step size.

    ``step()`` reads each tensor's ``.grad`` (tensors without one are skipped), updates the
    tensor in place, multiplies every step size by ``decay`` and clears the gradients.
    """

    def __init__(self, groups: Sequence[tuple[Sequence[Tensor], float]], decay: float = 1.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups = [(list(params), lr) for params, lr in groups]
        self.decay, self.betas, self.eps = decay, betas, eps
        self.t = 0
        self.m: dict[int, Tensor] = {}
        self.v: dict[int, Tensor] = {}

    def step(self) -> None:
        """Apply one update to every tensor with a gradient, then decay the step sizes."""
        b1, b2 = self.betas
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        with torch.no_grad():
            for params, lr in self.groups:
                for p in params:
                    if p.grad is None:
                        continue
                    g = p.grad
                    m = self.m.setdefault(id(p), torch.zeros_like(p))
                    v = self.v.setdefault(id(p), torch.zeros_like(p))
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, v.div(c2).sqrt_().add_(self.eps), value=-lr / c1)
                    p.grad = None
        self.groups = [(params, lr * self.decay) for params, lr in self.groups]

    def take(self, keep: Tensor) -> dict[int, Tensor]:
        """Keep the entries ``keep`` (along dim 0) of every tensor and of its moments.

        The kept entries become new leaf tensors (what the caller optimises from now on);
        returns ``{id(old): new}``. Each entry's update depends on its own gradient and
        moments only, so the kept entries follow the same path as without the cut.
        """
        mapping: dict[int, Tensor] = {}
        groups = []
        for params, lr in self.groups:
            new = []
            for p in params:
                q = p.detach()[keep].clone().requires_grad_(True)
                for moments in (self.m, self.v):
                    if id(p) in moments:
                        moments[id(q)] = moments.pop(id(p))[keep]
                mapping[id(p)] = q
                new.append(q)
            groups.append((new, lr))
        self.groups = groups
        return mapping
