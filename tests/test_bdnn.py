"""Tests of the MILP training of binarized networks (bnbver.apps.bdnn*, bnbver.io.bdnn_onnx)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from bnbver.apps.bdnn import (
    BdnnOptions,
    TrainStatus,
    initial_clusters,
    kmeans,
    loss_value,
    refine_clusters,
    train,
    train_local_search,
)
from bnbver.apps.bdnn_milp import TrainingProblem, build_training_milp, solve_training
from bnbver.apps.bdnn_model import BinarizedNetwork, WeightSpec, activate, random_network
from bnbver.lp.highs import HighsOptions

INT1 = WeightSpec("int", 1.0)
CONT1 = WeightSpec("cont", 1.0)


def _tiny(seed: int, n: int = 7, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Integer points in [-2, 2]^2 with random labels (no brute-force network is perfect)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=(n, 2)).astype(np.float64)
    return x, rng.integers(0, k, size=n)


def _brute_force(x: np.ndarray, y: np.ndarray, hidden: int, k: int, activation: str) -> int:
    """Return the fewest errors over all networks with weights and biases in {-1, 0, 1}.

    The first layer is enumerated; for each distinct hidden pattern matrix H (N, n) every
    output layer is scored at once: scores (M, N, K) = H W^T + b, argmax with ties to the
    lowest index, exactly as ``BinarizedNetwork.predict``.
    """
    vals = np.array([-1.0, 0.0, 1.0])
    d = x.shape[1]
    out = np.array(list(itertools.product(vals, repeat=k * (hidden + 1))))
    w2, b2 = out[:, : k * hidden].reshape(-1, k, hidden), out[:, k * hidden:]
    seen: set[bytes] = set()
    best = len(y)
    for p in itertools.product(vals, repeat=hidden * (d + 1)):
        p1 = np.array(p)
        h = activate(x @ p1[: hidden * d].reshape(hidden, d).T + p1[hidden * d:], activation)
        if h.tobytes() in seen:
            continue
        seen.add(h.tobytes())
        scores = np.einsum("nj,mkj->mnk", h, w2) + b2[:, None, :]
        errors = (np.argmax(scores, axis=2) != y[None, :]).sum(axis=1)
        best = min(best, int(errors.min()))
    return best


@pytest.mark.parametrize(("activation", "hidden", "k", "seed", "warm"), [
    ("step", 1, 2, 0, 0.0), ("sign", 1, 2, 1, 0.2), ("step", 2, 2, 2, 0.0),
    ("sign", 2, 2, 3, 0.2), ("step", 1, 3, 4, 0.2), ("sign", 1, 3, 5, 0.0),
    ("step", 2, 2, 6, 0.2), ("sign", 2, 2, 7, 0.0),
])
def test_exact_optimum_equals_brute_force(activation: str, hidden: int, k: int, seed: int,
                                          warm: float) -> None:
    """With and without the local-search cutoff (warm start), the optimum is brute force's."""
    x, y = _tiny(seed, n=8, k=k)
    opts = BdnnOptions(hidden=(hidden,), spec=INT1, activation=activation, num_classes=k,
                       time_limit=30, warm_start=warm)
    result = train(x, y, opts)
    assert result.status is TrainStatus.OPTIMAL
    assert result.objective == _brute_force(x, y, hidden, k, activation)
    assert result.bound == result.objective and result.gap == 0.0


@pytest.mark.parametrize(("spec", "activation", "hidden", "k"), [
    (INT1, "step", (2, 2), 3), (CONT1, "sign", (2,), 3), (CONT1, "step", (3, 2), 2),
    (WeightSpec("int", 2.0), "sign", (2, 2), 2),
])
def test_forward_pass_reproduces_milp_objective(spec: WeightSpec, activation: str,
                                                hidden: tuple[int, ...], k: int) -> None:
    """The decoded network's forward-pass error count equals the MILP's objective.

    The solve stops at its first incumbent (not at a time limit, which made the test depend
    on the machine's load): the equality must hold for any incumbent.
    """
    rng = np.random.default_rng(7)
    x = rng.normal(size=(14, 3))
    y = rng.integers(0, k, size=14)
    problem = TrainingProblem(x, y, (3, *hidden, k), spec, activation)
    out = solve_training(problem, HighsOptions(time_limit=120, first_solution=True))
    assert out.network is not None and out.objective is not None
    assert out.network.errors(x, y) == round(out.objective)
    assert abs(out.objective - round(out.objective)) < 1e-6


def test_hinge_objective_matches_forward() -> None:
    x, y = _tiny(3, n=8)
    opts = BdnnOptions(hidden=(2,), spec=INT1, loss="hinge", time_limit=20)  # no warm start
    result = train(x, y, opts)
    assert result.milp_objective is not None
    assert result.objective == pytest.approx(result.milp_objective, abs=1e-6)
    assert result.objective == pytest.approx(loss_value(result.network, x, y, opts))


def test_cutoff_below_the_optimum_is_infeasible() -> None:
    x, y = _tiny(2, n=8)
    base = TrainingProblem(x, y, (2, 2, 2), INT1, "step")
    best = solve_training(base, HighsOptions(time_limit=20)).objective
    assert best is not None and best >= 1
    capped = solve_training(replace(base, objective_cap=best - 1), HighsOptions(time_limit=20))
    assert capped.network is None and capped.status.value == "infeasible"


def test_symmetry_breaking_keeps_the_optimum() -> None:
    x, y = _tiny(11, n=8)
    base = TrainingProblem(x, y, (2, 2, 2), INT1, "step")
    a = solve_training(base, HighsOptions(time_limit=20))
    b = solve_training(replace(base, symmetry_breaking=False), HighsOptions(time_limit=20))
    assert a.objective == b.objective


def test_kmeans_never_worse_than_first_feasible() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like: clusters must split to fit
    opts = BdnnOptions(hidden=(2,), spec=CONT1, method="kmeans", clusters=4, max_rounds=6,
                       time_limit=20, seed=3)
    result = train(x, y, opts)
    assert result.history, "no feasible solution"
    assert result.objective <= result.history[0]
    assert result.objective == min(result.history)
    assert result.network.errors(x, y) == result.objective


def test_clusters_are_label_pure_and_refined() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = rng.integers(0, 2, size=30)
    groups = initial_clusters(x, y, 6, rng)
    for g in np.unique(groups):
        assert len(np.unique(y[groups == g])) == 1
    wrong = np.zeros(30, dtype=bool)
    wrong[:5] = True
    refined = refine_clusters(x, groups, wrong, rng)
    assert len(np.unique(refined)) > len(np.unique(groups))
    assert np.array_equal(np.unique(kmeans(x, 3, rng)), [0, 1, 2])


def test_local_search_improves_to_local_optimum() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 3))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    opts = BdnnOptions(hidden=(2,), spec=INT1, method="local", time_limit=20, seed=1)
    start = random_network(np.random.default_rng(9), [3, 2, 2], INT1)
    result = train_local_search(x, y, opts, init=start)
    assert result.objective <= loss_value(start, x, y, opts)
    assert list(result.history) == sorted(result.history, reverse=True)
    assert result.status in (TrainStatus.LOCAL_OPTIMUM, TrainStatus.STOPPED)
    assert result.objective == result.network.errors(x, y)
    if result.milp_objective is not None:
        assert result.milp_objective == pytest.approx(result.objective, abs=1e-6)


def _ball_points(x: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
    """Corners of the L-inf ball around each point, then random points: (N, M, d)."""
    d = x.shape[1]
    corners = np.array(list(itertools.product([-eps, eps], repeat=d)))
    rand = rng.uniform(-eps, eps, size=(50, d))
    return x[:, None, :] + np.concatenate([corners, rand])[None]


@pytest.mark.parametrize("spec", [CONT1, INT1])
def test_robust_model_classifies_the_whole_ball_as_claimed(spec: WeightSpec) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(16, 2))
    y = (x[:, 0] > 0.1).astype(np.int64)
    eps = 0.15
    opts = BdnnOptions(hidden=(2,), spec=spec, robust_eps=eps, time_limit=20, warm_start=0.0)
    result = train(x, y, opts)
    net = result.network
    assert result.milp_objective == pytest.approx(result.objective, abs=1e-6)
    claimed = ~net.error_mask(x, y, eps)
    assert np.all(net.first_layer_robust(x, eps))
    perturbed = _ball_points(x, eps, rng)
    preds = net.predict(perturbed.reshape(-1, 2)).reshape(perturbed.shape[:2])
    assert np.all(preds == net.predict(x)[:, None])
    assert np.all(preds[claimed] == y[claimed, None])
    assert result.objective >= train(x, y, replace(opts, robust_eps=0.0)).objective


def test_robust_problem_builds_abs_value_rows() -> None:
    x, y = _tiny(0)
    plain, _ = build_training_milp(TrainingProblem(x, y, (2, 2, 2), CONT1))
    robust, _ = build_training_milp(TrainingProblem(x, y, (2, 2, 2), CONT1, robust_eps=0.1))
    assert robust.num_cols == plain.num_cols + 4 and robust.num_rows == plain.num_rows + 8


@pytest.mark.parametrize("activation", ["step", "sign"])
def test_onnx_export_matches_numpy_forward(activation: str, tmp_path: object) -> None:
    ort = pytest.importorskip("onnxruntime")
    from bnbver.io.bdnn_onnx import save_bdnn_onnx

    rng = np.random.default_rng(4)
    net = random_network(rng, [3, 4, 3, 3], INT1, activation)
    path = f"{tmp_path}/net.onnx"
    save_bdnn_onnx(path, net.weights, net.biases, activation)
    x = rng.integers(-2, 3, size=(200, 3)).astype(np.float64)  # many exact ties z = 0
    z0 = x @ net.weights[0].T + net.biases[0]
    assert np.any(z0 == 0)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, net.forward(x))


def test_step_and_sign_tie_convention() -> None:
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(activate(z, "step"), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(activate(z, "sign"), [-1.0, 1.0, 1.0])
    net = BinarizedNetwork((np.eye(2), np.zeros((2, 2))), (np.zeros(2), np.zeros(2)))
    assert net.predict(np.array([[1.0, 1.0]]))[0] == 0  # tied scores go to class 0


def test_weight_spec_parse() -> None:
    assert WeightSpec.parse("int:2") == WeightSpec("int", 2.0)
    assert WeightSpec.parse("cont:0.5") == WeightSpec("cont", 0.5)
    for bad in ("int", "int:1.5", "foo:1", "cont:-1", "cont:nan"):
        with pytest.raises(ValueError):
            WeightSpec.parse(bad)


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"hidden": ()}, "hidden"), ({"method": "sgd"}, "method"), ({"loss": "l2"}, "loss"),
    ({"robust_eps": 0.1, "loss": "hinge"}, "robust_eps"), ({"num_classes": 1}, "num_classes"),
])
def test_train_validates_options(kwargs: dict[str, object], word: str) -> None:
    x, y = _tiny(0)
    with pytest.raises(ValueError, match=word):
        train(x, y, BdnnOptions(**kwargs))  # type: ignore[arg-type]


def test_train_validates_data() -> None:
    with pytest.raises(ValueError, match="y:"):
        train(np.zeros((3, 2)), np.array([0, 1.5, 0]), BdnnOptions())
    with pytest.raises(ValueError, match="x:"):
        train(np.array([[np.nan, 0.0]]), np.array([0]), BdnnOptions())


@pytest.mark.parametrize("free", [0, 1, 2])
def test_layer_subproblem_objective_matches_forward_robust(free: int) -> None:
    """Local search's subproblems: other layers fixed (a non-robust fixed layer 1 included)."""
    rng = np.random.default_rng(8)
    x = rng.uniform(-1, 1, size=(20, 2))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    start = random_network(np.random.default_rng(1), [2, 3, 2, 2], INT1)
    fixed = tuple(None if li == free else (w, b)
                  for li, (w, b) in enumerate(zip(start.weights, start.biases, strict=True)))
    eps = 0.2
    problem = TrainingProblem(x, y, (2, 3, 2, 2), INT1, fixed=fixed, robust_eps=eps,
                              symmetry_breaking=False)
    out = solve_training(problem, HighsOptions(time_limit=10))
    assert out.network is not None and out.objective is not None
    assert out.network.errors(x, y, eps) == round(out.objective)
    for li in range(3):
        if li != free:
            np.testing.assert_array_equal(out.network.weights[li], start.weights[li])
