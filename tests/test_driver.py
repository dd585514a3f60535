"""``verify_robustness`` / ``robustness_property``: inputs checked at the boundary, shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bnbver.driver import fit_input, robustness_property, verify, verify_robustness
from bnbver.errors import InputError
from bnbver.io.onnx_export import save_onnx
from bnbver.io.torch_loader import from_torch
from bnbver.network import Dense, Network
from bnbver.result import Status

IDENTITY = Network((Dense(np.eye(2), np.zeros(2)),), (2,))


def test_issue_18_x_outside_the_domain_is_an_input_error() -> None:
    """Clipping the ball into the domain used to verify a different point and return a
    witness 0.5 away from x."""
    net = Network((Dense(np.array([[1.0], [-1.0]]), np.zeros(2)),), (1,))
    with pytest.raises(InputError, match=r"x: 1 value\(s\) outside the domain \[0, 1\]"):
        verify_robustness(net, 1.5, 0, 0.1, domain=(0, 1))
    assert verify_robustness(net, 0.5, 0, 0.1, domain=(0, 1)).status is Status.HOLDS


@pytest.mark.parametrize(("label", "needle"), [(2.5, "integer class"), ("a", "integer class"),
                                              (True, "integer class"), (5, r"\[0, 2\)")])
def test_issue_18_labels_must_be_integer_classes(label: object, needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        verify_robustness(IDENTITY, np.zeros(2), label, 0.1)  # type: ignore[arg-type]
    prop = robustness_property(np.zeros(2), np.float64(1.0), 0.1, 2)  # type: ignore[arg-type]
    assert prop.name == "robust[label=1]"


def test_issue_18_reversed_domain_and_bad_eps() -> None:
    with pytest.raises(InputError, match="domain"):
        verify_robustness(IDENTITY, np.zeros(2), 0, 0.1, domain=(1, 0))
    with pytest.raises(InputError, match="eps"):
        verify_robustness(IDENTITY, np.zeros(2), 0, -0.1)


def _conv_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 3)).eval()


def test_issue_18_batch_of_one_and_single_input_both_fit_a_conv_model(tmp_path: Path) -> None:
    model = _conv_model()
    x = np.random.default_rng(0).uniform(0, 1, size=(1, 6, 6))
    label = int(model(torch.tensor(x[None], dtype=torch.float32)).argmax())
    path = tmp_path / "conv.onnx"
    save_onnx(from_torch(model, (1, 6, 6)), path)
    answers = set()
    for m, shapes in ((model, ((1, 6, 6), (1, 1, 6, 6))), (path, ((1, 6, 6), (1, 1, 6, 6),
                                                                    (36,)))):
        for shape in shapes:
            res = verify_robustness(m, x.reshape(shape), label, 0.001, domain=(0, 1),
                                    timeout=30)
            answers.add(res.status)
    assert answers == {Status.HOLDS}


@pytest.mark.parametrize("shape", [(6, 6, 1), (35,), (2, 6, 6)])
def test_issue_18_input_shape_mismatch_is_an_input_error(tmp_path: Path,
                                                         shape: tuple[int, ...]) -> None:
    model = _conv_model()
    x = np.zeros(shape)
    with pytest.raises(InputError, match="does not fit"):
        verify_robustness(model, x, 0, 0.01)
    net = from_torch(model, (1, 6, 6))
    with pytest.raises(InputError, match=r"does not fit the network's input \(1, 6, 6\)"):
        fit_input(net, x)


def test_issue_18_bad_options_fail_before_any_work() -> None:
    prop = robustness_property(np.zeros(2), 0, 0.1, 2)
    with pytest.raises(InputError, match="--jobs"):
        verify(IDENTITY, prop, jobs=0)
    with pytest.raises(InputError, match="--timeout"):
        verify(IDENTITY, prop, timeout=0)
    with pytest.raises(InputError, match="--device"):
        verify(IDENTITY, prop, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            verify(IDENTITY, prop, device="cuda")


def test_issue_18_verified_result_carries_bounds_per_class() -> None:
    """Robustness bounds: one disjunct per other class, each at least the global bound."""
    net = Network((Dense(np.array([[2.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), np.zeros(3)),), (2,))
    res = verify_robustness(net, np.array([1.0, 0.0]), 0, 0.1, timeout=30)
    assert res.status is Status.HOLDS
    (per,) = res.disjunct_bounds
    # exact minima over the box: y0 - y1 = 2 x0 - x1 >= 1.7, y0 - y2 = 1.5 x0 - 0.5 x1 >= 1.3
    assert per[0] == pytest.approx(1.7) and per[1] == pytest.approx(1.3)
    assert res.lower_bound == pytest.approx(1.3)
