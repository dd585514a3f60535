"""bnbver's Adam matches torch.optim.Adam + ExponentialLR, and a verification run never
imports torch._dynamo (the 2 s start-up that torch.optim costs)."""

from __future__ import annotations

import subprocess
import sys

import torch

from bnbver.bounds.adam import Adam


def test_matches_torch_adam_with_exponential_decay() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    start_a = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    start_b = torch.randn(5, generator=gen, dtype=torch.float64)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - target) ** 4).sum() + (b.sin() * b).sum()

    a1, b1 = start_a.clone().requires_grad_(True), start_b.clone().requires_grad_(True)
    ours = Adam([([a1], 0.1), ([b1], 0.05)], decay=0.9)
    a2, b2 = start_a.clone().requires_grad_(True), start_b.clone().requires_grad_(True)
    ref = torch.optim.Adam([{"params": [a2], "lr": 0.1}, {"params": [b2], "lr": 0.05}])
    sched = torch.optim.lr_scheduler.ExponentialLR(ref, 0.9)
    for _ in range(15):
        loss(a1, b1).backward()  # type: ignore[no-untyped-call]
        ours.step()
        ref.zero_grad()
        loss(a2, b2).backward()  # type: ignore[no-untyped-call]
        ref.step()
        sched.step()
    assert torch.allclose(a1, a2, atol=1e-12) and torch.allclose(b1, b2, atol=1e-12)
    assert not torch.equal(a1, start_a)


def test_verification_does_not_import_torch_dynamo() -> None:
    code = (
        "import sys, numpy as np\n"
        "import bnbver\n"
        "from bnbver.network import Dense, Network, ReLU\n"
        "net = Network((Dense([[1.0, -1.0], [0.5, 1.0]], [0.0, -0.2]), ReLU(2),"
        " Dense([[1.0, -1.0]], [0.1])), (2,))\n"
        "from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet\n"
        "p = Property(InputBox(np.zeros(2), np.ones(2)), UnsafeSet((HalfSpaces([[1.0]],"
        " [-5.0]),)))\n"
        "for split in ('relu', 'input'):\n"
        "    r = bnbver.verify(net, p, timeout=20, split=split)\n"
        "    assert r.status.value == 'unsat', r\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 0, run.stderr
