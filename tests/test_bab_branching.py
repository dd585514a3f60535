"""Branching heuristics: every registered one gives the oracle's answers; plug-ins work."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from bnbver.bab.branching import REGISTRY, BranchContext, pick_input, pick_relu, register
from bnbver.bab.loop import BabOptions, run_bab
from bnbver.errors import InputError
from bnbver.result import Status
from tests.test_bab import _instance


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("offset", [0.02, -0.02])
def test_every_heuristic_matches_oracle(name: str, offset: float) -> None:
    kind = REGISTRY[name].kind
    net, prop, violated = _instance(21, 2, [4, 3], offset)
    opts = BabOptions(split=kind, branching=name, batch_size=4, iterations=5,
                      milp_max_unstable=0)
    result = run_bab(net, prop, opts, deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)


def test_plugin_heuristic_from_readme() -> None:
    @register("test-deepest-widest", kind="relu")
    def deepest_widest(ctx: BranchContext) -> list[torch.Tensor]:
        """Prefer later layers, then the widest triangle."""
        return [(k + 1) * (-lo.clamp(max=0) * up.clamp(min=0) / (up - lo).clamp(min=1e-12))
                for k, (lo, up) in enumerate(zip(ctx.pre_lower, ctx.pre_upper, strict=True))]

    net, prop, violated = _instance(22, 2, [3, 3], 0.02)
    result = run_bab(net, prop, BabOptions(split="relu", branching="test-deepest-widest"),
                     deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    del REGISTRY["test-deepest-widest"]


def test_unknown_or_wrong_kind_heuristic_is_rejected() -> None:
    net, prop, _ = _instance(23, 2, [3], 0.02)
    with pytest.raises(InputError, match="unknown branching heuristic"):
        run_bab(net, prop, BabOptions(split="relu", branching="nope", root_method="ibp"),
                deadline=time.monotonic() + 10)
    with pytest.raises(InputError, match="branches on input"):
        run_bab(net, prop, BabOptions(split="relu", branching="smear", root_method="ibp"),
                deadline=time.monotonic() + 10)


def test_pick_relu_masks_split_and_stable_neurons() -> None:
    lo = (torch.tensor([[-1.0, -1.0, 0.5, -2.0]]),)
    up = (torch.tensor([[1.0, 2.0, 1.0, -1.0]]),)
    splits = (torch.tensor([[0, 1, 0, 0]], dtype=torch.int8),)
    ctx = BranchContext(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(2), lo, up, splits)
    scores = [torch.tensor([[1.0, 9.0, 9.0, 9.0]])]  # only neuron 0 is free and unstable
    assert pick_relu(ctx, scores) == [(0, 0)]
    none_free = (torch.tensor([[0, 1, 0, 0]], dtype=torch.int8),)
    ctx2 = BranchContext(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(2),
                         (torch.tensor([[0.0, -1.0, 0.5, -2.0]]),), up, none_free)
    assert pick_relu(ctx2, scores) == [None]


def test_pick_input_skips_degenerate_sides() -> None:
    ctx = BranchContext(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]]),
                        torch.ones(2))
    assert pick_input(ctx, [torch.tensor([[5.0, 1.0]])]) == [1]
    assert np.isfinite(1.0)


def test_gradient_smear_splits_the_v_shaped_dimension_that_smear_misses() -> None:
    """y = 3 |x1| + 0.5 x0 on [-1, 1]^2, unsafe y <= -0.4 (reached near x = (-1, 0)).

    Along x1 the linear bound's coefficient is a flat secant (0), so smear splits x0 (the
    coefficient 0.5); the gradient interval of x1 is [-3, 3], so gradient-smear splits x1.
    """
    from bnbver.bab.bounding import NodeBounder
    from bnbver.bab.branching import choose_branches
    from bnbver.bab.node import Node
    from bnbver.network import Dense, Network, ReLU
    from bnbver.spec import HalfSpaces, InputBox, Property, UnsafeSet
    from bnbver.splits import SplitSet

    net = Network((Dense([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0]], [0.0, 0.0, 2.0]), ReLU(3),
                   Dense([[3.0, 3.0, 0.5]], [-1.0])), (2,))
    prop = Property(InputBox(-np.ones(2), np.ones(2)), UnsafeSet((HalfSpaces([[1.0]], [-0.4]),)))
    bounder = NodeBounder(net, prop, BabOptions(split="input", root_method="crown"), "input")
    root = bounder.bound_root(prop.box.lower, prop.box.upper, SplitSet())
    assert root.lower_bound < 0 and not root.infeasible
    node = Node(root.lower, root.upper, root.splits, root.lower_bound, 0, root.state)
    assert choose_branches(bounder, [node], "input", "smear") == [0]
    assert choose_branches(bounder, [node], "input", "gradient-smear") == [1]


# ------------------------------------------------------------------ issue 20: plug-ins
PLUGIN = '''
import torch
from bnbver.bab.branching import register

SEEN = []


@register("{name}", kind="relu"{extra})
def {fn}(ctx):
    """Later layers first (a test plug-in); records whether it saw relu_coeffs."""
    SEEN.append(ctx.relu_coeffs is not None)
    return [torch.full_like(lo, float(k + 1)) for k, lo in enumerate(ctx.pre_lower)]


def not_registered(ctx):
    return []
'''


@pytest.fixture
def clean_registry():
    """Restore REGISTRY (and drop plug-in modules) after a test that registers plug-ins."""
    import sys

    saved, modules = dict(REGISTRY), set(sys.modules)
    yield
    REGISTRY.clear()
    REGISTRY.update(saved)
    for name in set(sys.modules) - modules:
        if "bnbver_test_plug" in name or name.startswith("bnbver_plugin_"):
            del sys.modules[name]


def _plugin(folder, module: str, name: str, fn: str = "score", extra: str = ""):
    path = folder / f"{module}.py"
    path.write_text(PLUGIN.format(name=name, fn=fn, extra=extra))
    return path


def _decided(branching: str) -> Status:
    net, prop, violated = _instance(31, 2, [4, 3], 0.02)
    result = run_bab(net, prop, BabOptions(split="relu", branching=branching, batch_size=4,
                                           iterations=5, milp_max_unstable=0),
                     deadline=time.monotonic() + 60)
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
    return result.status


def test_issue_20_file_path_module_function(tmp_path, clean_registry) -> None:
    path = _plugin(tmp_path, "bnbver_test_plug_file", "test-file-plugin")
    _decided(f"{path}:score")
    assert "test-file-plugin" in REGISTRY  # importing the file registered it
    from bnbver.driver import verify

    net, prop, violated = _instance(31, 2, [4, 3], 0.02)
    result = verify(net, prop, timeout=30, split="relu", branching=f"{path}:score")
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)


def test_issue_20_dotted_module_function(tmp_path, monkeypatch, clean_registry) -> None:
    _plugin(tmp_path, "bnbver_test_plug_dotted", "test-dotted-plugin", fn="later_first")
    monkeypatch.syspath_prepend(str(tmp_path))
    _decided("bnbver_test_plug_dotted:later_first")
    from bnbver.bab.branching import resolve

    assert resolve("bnbver_test_plug_dotted:later_first") is REGISTRY["test-dotted-plugin"]


def test_issue_20_cli_verify_branching_module_function(tmp_path, monkeypatch, capsys,
                                                       clean_registry) -> None:
    """``bnbver verify --branching mod:fn`` from the working directory (the console script
    does not put it on sys.path: resolve adds it)."""
    from bnbver.cli import main
    from bnbver.io.onnx_export import save_onnx
    from tests.conftest import random_relu_net

    _plugin(tmp_path, "bnbver_test_plug_cwd", "test-cwd-plugin")
    net = random_relu_net(np.random.default_rng(0), [2, 5, 5, 2])
    save_onnx(net, tmp_path / "n.onnx", dtype="float64")
    (tmp_path / "p.vnnlib").write_text(
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
        "(declare-const Y_1 Real)\n(assert (>= X_0 -1.0))\n(assert (<= X_0 1.0))\n"
        "(assert (>= X_1 -1.0))\n(assert (<= X_1 1.0))\n(assert (>= Y_0 1000.0))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    assert main(["verify", "n.onnx", "p.vnnlib", "--split", "relu", "--timeout", "20",
                 "--branching", "bnbver_test_plug_cwd:score"]) == 0
    assert capsys.readouterr().out.strip() == "unsat"
    assert main(["verify", "n.onnx", "p.vnnlib", "--branching", "no_such_mod_xyz:f"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no_such_mod_xyz: cannot import") and err.count("\n") == 1


def test_issue_20_entry_point_plugin(tmp_path, monkeypatch, clean_registry) -> None:
    """An installed package registers through the entry-point group bnbver.heuristics."""
    from bnbver.bab.branching import ENTRY_POINT_GROUP, known_heuristics, resolve

    _plugin(tmp_path, "bnbver_test_plug_ep", "test-ep-plugin")
    dist = tmp_path / "bnbver_test_plug_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bnbver-test-plug-ep\n"
                                   "Version: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nmine = bnbver_test_plug_ep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "test-ep-plugin" not in REGISTRY
    assert resolve("test-ep-plugin").kind == "relu"  # loaded on the first miss
    assert "test-ep-plugin" in known_heuristics()
    _decided("test-ep-plugin")


def test_issue_20_broken_or_unregistered_plugins_are_input_errors(tmp_path,
                                                                  clean_registry) -> None:
    from bnbver.bab.branching import resolve

    path = _plugin(tmp_path, "bnbver_test_plug_bad", "test-bad-plugin")
    with pytest.raises(InputError, match="not a registered heuristic"):
        resolve(f"{path}:not_registered")
    with pytest.raises(InputError, match="has no attribute"):
        resolve(f"{path}:missing")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(InputError, match="cannot import heuristics: RuntimeError: boom"):
        resolve(f"{tmp_path / 'broken.py'}:f")
    with pytest.raises(InputError, match="no such Python file"):
        resolve(f"{tmp_path / 'absent.py'}:f")
    with pytest.raises(ValueError, match="without ':'"):
        register("a:b", kind="relu")


def test_issue_20_relu_coeffs_reach_plugins_that_ask(tmp_path, clean_registry) -> None:
    """BaBSR's coefficients are computed for a plug-in registered with relu_coeffs=True."""
    import sys

    plain = _plugin(tmp_path, "bnbver_test_plug_plain", "test-plain")
    asks = _plugin(tmp_path, "bnbver_test_plug_asks", "test-asks", extra=", relu_coeffs=True")
    _decided(f"{plain}:score")
    _decided(f"{asks}:score")
    by_file = {name: mod.SEEN for name, mod in sys.modules.items()
               if name.startswith("bnbver_plugin_") and hasattr(mod, "SEEN")}
    plain_seen = next(v for k, v in by_file.items() if "plain" in k)
    asks_seen = next(v for k, v in by_file.items() if "asks" in k)
    assert plain_seen and not any(plain_seen)
    assert asks_seen and all(asks_seen)


@pytest.mark.slow
def test_issue_20_plugin_resolves_in_joblib_workers(tmp_path, monkeypatch,
                                                    clean_registry) -> None:
    """With --jobs 2 every worker imports the plug-in file again by its name (about 15 s)."""
    from bnbver.driver import verify

    path = _plugin(tmp_path, "bnbver_test_plug_jobs", "test-jobs-plugin")
    net, prop, violated = _instance(31, 2, [6, 5], 0.02)
    monkeypatch.chdir(tmp_path)
    result = verify(net, prop, timeout=60, split="relu", jobs=2,
                    branching=f"{path.name}:score")
    assert result.status is (Status.VIOLATED if violated else Status.HOLDS)
