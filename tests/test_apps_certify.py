"""``bnbver.certify``: rows per (sample, eps), summaries, reuse of counterexamples, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnbver
from bnbver.apps.certify import MISCLASSIFIED, Row, summarize
from bnbver.errors import InputError
from tests.conftest import digits_model

EPS = [0.01, 0.05, 0.15]


def _predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    model, x, y = digits_model()
    return bnbver.certify(model, x[:8], y[:8], EPS, domain=(0, 1), timeout=30, seed=0)


def test_issue_18_rows_are_sound_and_complete(rows: list[Row]) -> None:
    """One row per (sample, eps) in order; misclassified samples are skipped; a verified row
    has a positive bound; a counterexample lies in the clipped ball and reaches another
    class; a radius never verifies where a smaller one was falsified."""
    model, x, y = digits_model()
    predicted = _predict(model, x[:8])
    assert [(r.index, r.eps) for r in rows] == [(i, e) for i in range(8) for e in EPS]
    statuses = {r.status for r in rows}
    assert {"verified", "falsified", MISCLASSIFIED} <= statuses, statuses
    for r in rows:
        assert r.label == y[r.index] and r.predicted == predicted[r.index]
        assert (r.status == MISCLASSIFIED) == (r.predicted != r.label)
        if r.status == "verified":
            assert r.lower_bound is not None and r.lower_bound > 0
        if r.status == "falsified":
            cex = r.counterexample
            assert cex is not None and cex.shape == (64,)
            assert np.all(np.abs(cex - x[r.index]) <= r.eps + 1e-12)
            assert np.all((cex >= 0) & (cex <= 1))
            assert _predict(model, cex[None])[0] == r.cex_class != r.label
    for i in range(8):
        seq = [r.status for r in rows if r.index == i]
        if "falsified" in seq:
            assert "verified" not in seq[seq.index("falsified"):]


def test_issue_18_summary_counts_match_the_rows(rows: list[Row]) -> None:
    summaries = summarize(rows)
    assert [s.eps for s in summaries] == EPS
    for s in summaries:
        mine = [r for r in rows if r.eps == s.eps]
        assert s.samples == len(mine) == 8
        assert s.correct == sum(r.predicted == r.label for r in mine)
        assert s.verified == sum(r.status == "verified" for r in mine)
        assert s.falsified == sum(r.status == "falsified" for r in mine)
        assert s.clean_accuracy == s.correct / 8
        assert s.verified_accuracy == s.verified / 8
        assert s.falsified_share == s.falsified / 8
        assert f"verified robust accuracy {100 * s.verified / 8:.1f}%" in s.line()
    # rows read back from a CSV (strings) summarise the same
    as_csv = [{"eps": repr(r.eps), "status": r.status} for r in rows]
    assert summarize(as_csv) == summaries


def test_issue_18_normalisation_outside_equals_inside_the_model() -> None:
    """``mean``/``std`` certify ``model((x - mean) / std)`` with the ball in the raw domain:
    the same answers as a model that normalises in its first layer."""
    model, x, y = digits_model()
    mean, std = 0.25, 0.5
    first = model[0]
    inside = torch.nn.Sequential(torch.nn.Linear(64, 20), *list(model)[1:]).eval()
    with torch.no_grad():
        inside[0].weight.copy_(first.weight / std)
        inside[0].bias.copy_(first.bias - first.weight.sum(dim=1) * mean / std)
    xs = x[:4] * std + mean  # raw inputs whose normalisation is x
    outside = bnbver.certify(model, xs, y[:4], [0.01, 0.05], mean=mean, std=std, timeout=30)
    plain = bnbver.certify(inside, xs, y[:4], [0.01, 0.05], timeout=30)
    assert [r.status for r in outside] == [r.status for r in plain]
    assert [r.predicted for r in outside] == [r.predicted for r in plain]


@pytest.mark.parametrize(("change", "needle"), [
    ({"x": "outside"}, "x[2]: 1 value(s) outside the domain"),
    ({"y": [0, 1, 2.5]}, "y[2]: must be an integer class"),
    ({"y": [0, 1, 10]}, "y[2]: must be in [0, 10)"),
    ({"domain": (1, 0)}, "domain: expected finite low <= high"),
    ({"eps": [-0.1]}, "--eps"),
    ({"x": "hwc"}, "does not fit the torch module"),
    ({"jobs": 0}, "--jobs"),
    ({"timeout": 0}, "--timeout"),
])
def test_issue_18_bad_input_is_refused_before_any_work(change: dict, needle: str) -> None:  # type: ignore[type-arg]
    model, x, y = digits_model()
    xs = x[:3].copy()
    if change.get("x") == "outside":
        xs[2, 5] = 1.5
    elif change.get("x") == "hwc":
        xs = xs.reshape(3, 8, 8, 1)
    kwargs = {"domain": (0, 1), "timeout": 30, **{k: v for k, v in change.items()
                                                  if k not in ("x", "y", "eps")}}
    with pytest.raises(InputError) as err:
        bnbver.certify(model, xs, change.get("y", y[:3]), change.get("eps", [0.01]), **kwargs)
    assert needle in str(err.value)
