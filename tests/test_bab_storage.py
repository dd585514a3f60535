"""bnbver.bab.storage: the frontier keeps alpha and beta of each node's open rows only.

Properties: ``take`` gives back every open (node, row)'s alpha and beta exactly and 0 on
proven rows, for any index (repeats too); NaN rows count as open; nothing is packed where
nothing is saved; and a search's children see the same open rows' warm starts as before.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bab.bounding import _open_payloads
from bnbver.bab.storage import StoredState
from bnbver.bounds import NodeState


def _state(seed: int, b: int, r: int, with_beta: bool) -> NodeState:
    g = torch.Generator().manual_seed(seed)
    sizes = (5, 3)
    lower = tuple(-torch.rand(b, n, generator=g) for n in sizes)
    upper = tuple(torch.rand(b, n, generator=g) for n in sizes)
    rows = torch.randn(b, r, generator=g)
    rows[torch.rand(b, r, generator=g) < 0.1] = float("nan")
    alpha = tuple(torch.rand(b, r, n, generator=g) for n in sizes)
    beta = (torch.rand(b, r, 5, generator=g), None) if with_beta else None
    return NodeState(lower, upper, (0, 1), rows, alpha, beta)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6), r=st.integers(1, 5),
       with_beta=st.booleans(), picks=st.lists(st.integers(0, 5), min_size=1, max_size=8))
def test_take_restores_open_rows_and_zeroes_proven_ones(seed: int, b: int, r: int,
                                                        with_beta: bool,
                                                        picks: list[int]) -> None:
    state = _state(seed, b, r, with_beta)
    stored = StoredState.pack(state)
    index = torch.tensor([p % b for p in picks])
    want = state.take(index)
    got = stored.take(index)
    open_ = ~(want.row_lower > 0)
    for a, w in zip(got.alpha, want.alpha, strict=True):
        assert torch.equal(a[open_], w[open_])
        assert bool((a[~open_] == 0).all())
    if with_beta:
        assert torch.equal(got.beta[0][open_], want.beta[0][open_])
        assert bool((got.beta[0][~open_] == 0).all())
        assert got.beta[1] is None
    else:
        assert got.beta is None
    for x, y in zip((*got.lower, *got.upper), (*want.lower, *want.upper), strict=True):
        assert torch.equal(x, y)
    torch.testing.assert_close(got.row_lower, want.row_lower, equal_nan=True)


def test_packs_only_what_saves_memory() -> None:
    state = _state(1, 4, 3, True)
    every_open = NodeState(state.lower, state.upper, state.relu_slots,
                           -torch.ones(4, 3), state.alpha, state.beta)
    assert StoredState.pack(every_open) is every_open
    no_alpha = state.without_optimizer_state()
    assert StoredState.pack(no_alpha) is no_alpha
    rows = torch.tensor([[1.0, -1.0, 2.0]] * 4)
    stored = StoredState.pack(NodeState(state.lower, state.upper, state.relu_slots, rows,
                                        state.alpha, state.beta))
    assert isinstance(stored, StoredState)
    # one open row of three: a third of the alpha entries kept
    assert stored.alpha[0].shape == (4, 5)
    np.testing.assert_array_equal(stored.pair.numpy(), [[-1, 0, -1], [-1, 1, -1],
                                                        [-1, 2, -1], [-1, 3, -1]])


def test_closed_siblings_free_their_state() -> None:
    """The open children of a batch share a copy of their own rows: the closed ones' alpha,
    beta, masks and coefficients are not kept alive by their siblings' payloads."""
    state = _state(2, 6, 3, True)
    masks = (torch.zeros(6, 5, dtype=torch.int8), torch.zeros(6, 3, dtype=torch.int8))
    result = SimpleNamespace(state=state, input_coeffs=torch.arange(6.0)[:, None],
                             relu_coeffs=(torch.rand(6, 5), torch.rand(6, 3)))
    keep = np.array([False, True, False, False, True, False])
    payloads = _open_payloads(masks, result, keep)  # type: ignore[arg-type]
    assert [p is None for p in payloads] == [True, False, True, True, False, True]
    kept = [p for p in payloads if p is not None]
    assert all(p.batch_state.batch_size == 2 for p in kept)
    assert all(m.shape[0] == 2 for m in kept[0].batch_masks)
    assert [float(p.input_coeffs[0, 0]) for p in kept] == [1.0, 4.0]
    for p, b in zip(kept, (1, 4), strict=True):
        full = p.single()
        open_ = ~(state.row_lower[b] > 0)
        assert torch.equal(full.alpha[0][0][open_], state.alpha[0][b][open_])
        assert torch.equal(full.lower[0][0], state.lower[0][b])
