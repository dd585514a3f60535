"""Input-domain clipping keeps every point that can violate, and really shrinks boxes."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnbver.bounds.clip import clip_boxes


def test_one_row_cuts_the_box_where_the_row_is_positive() -> None:
    """x0 - 0.5 <= 0 on [0, 1]^2 leaves x0 in [0, 0.5]; x0 + 0.5 <= 0 holds nowhere on
    the box, which is then empty."""
    a = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float64)
    c = torch.tensor([[-0.5], [0.5]], dtype=torch.float64)
    lo = torch.zeros((2, 2), dtype=torch.float64)
    hi = torch.ones((2, 2), dtype=torch.float64)
    new_lo, new_hi, empty = clip_boxes(a, c, lo, hi, [torch.tensor([0])])
    assert empty.tolist() == [False, True]
    # within the replay slack (clip.REPLAY_SLACK, 1e-9 of the row's magnitude) of the true face
    assert abs(float(new_hi[0, 0]) - 0.5) < 1e-8 and float(new_hi[0, 0]) >= 0.5
    assert float(new_hi[0, 1]) == 1.0 and float(new_lo[0, 0]) == 0.0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_in=st.integers(1, 4), rows=st.integers(1, 4),
       disjuncts=st.integers(1, 2))
def test_clipped_boxes_keep_every_violating_point(seed: int, n_in: int, rows: int,
                                                  disjuncts: int) -> None:
    """Points of the box with every row of some disjunct <= 0 stay inside the clipped box;
    a box flagged empty holds no such point (checked on samples and box corners)."""
    rng = np.random.default_rng(seed)
    b = 6
    a = rng.normal(size=(b, rows * disjuncts, n_in))
    c = rng.normal(size=(b, rows * disjuncts))
    lo = rng.uniform(-1, 0, size=(b, n_in))
    hi = lo + rng.uniform(0.1, 2, size=(b, n_in))
    groups = [torch.arange(k * rows, (k + 1) * rows) for k in range(disjuncts)]
    new_lo, new_hi, empty = (t.numpy() for t in clip_boxes(
        torch.tensor(a), torch.tensor(c), torch.tensor(lo), torch.tensor(hi), groups))
    for i in range(b):
        x = lo[i] + rng.random((4000, n_in)) * (hi[i] - lo[i])
        values = np.einsum("rn,pn->pr", a[i], x) + c[i]
        bad = np.zeros(x.shape[0], dtype=bool)
        for g in groups:
            bad |= np.all(values[:, g.numpy()] <= 0, axis=1)
        if empty[i]:
            assert not bad.any()
            continue
        assert np.all(new_lo[i] >= lo[i]) and np.all(new_hi[i] <= hi[i])
        inside = np.all((x >= new_lo[i]) & (x <= new_hi[i]), axis=1)
        assert np.all(inside[bad])
