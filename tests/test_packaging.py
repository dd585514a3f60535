"""Packaging: the torch requirement, optional extras, and the VNN-COMP scripts (issue 18)."""

from __future__ import annotations

import shutil
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("install_tool.sh", "prepare_instance.sh", "run_instance.sh", "common.sh")


def test_torch_is_not_pinned_and_plots_are_optional() -> None:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_req = [d for d in meta["dependencies"] if d.startswith("torch")]
    assert torch_req == ["torch>=2.1"]
    assert not any(d.startswith("matplotlib") for d in meta["dependencies"])
    assert any(d.startswith("matplotlib") for d in meta["optional-dependencies"]["plots"])


def test_vnncomp_scripts_parse() -> None:
    for name in SCRIPTS:
        subprocess.run(["bash", "-n", str(REPO / "vnncomp" / name)], check=True)
    assert "pkill -f" not in "".join((REPO / "vnncomp" / n).read_text() for n in SCRIPTS)


@pytest.fixture
def fake_tool(tmp_path: Path) -> Path:
    """A copy of vnncomp/ in a repository whose .venv python is a stub: ``info`` succeeds,
    ``verify`` sleeps (a long verification), and every call is logged."""
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "vnncomp", repo / "vnncomp")
    stub = repo / ".venv/bin/python"
    stub.parent.mkdir(parents=True)
    stub.write_text(f'#!/bin/bash\necho "$PYTHONPATH $@" >> {tmp_path}/calls.log\n'
                    'case "$3" in verify) sleep 30 ;; *) exit 0 ;; esac\n')
    stub.chmod(0o755)
    return repo


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "BNBVER_PIDFILE": str(tmp_path / "run.pid")}


def test_vnncomp_default_interpreter_and_targeted_stop(fake_tool: Path, tmp_path: Path) -> None:
    """Without $BNBVER_PYTHON the scripts use the repository's .venv (with the repository
    on PYTHONPATH); prepare_instance.sh stops the verifier that run_instance.sh recorded
    and leaves other bnbver runs alone. (tests/test_cli_run_suite.py runs a real one.)"""
    env = _env(tmp_path)
    bystander = subprocess.Popen(["bash", "-c", "sleep 30", "python -m bnbver.cli verify"])
    args = ["v1", "cat", "net.onnx", "prop.vnnlib"]
    run = subprocess.Popen(["bash", str(fake_tool / "vnncomp/run_instance.sh"), *args,
                            str(tmp_path / "res.txt"), "60"], env=env)
    try:
        for _ in range(100):
            if (tmp_path / "run.pid").is_file() and (tmp_path / "calls.log").is_file():
                break
            time.sleep(0.05)
        start = time.monotonic()
        prep = subprocess.run(["bash", str(fake_tool / "vnncomp/prepare_instance.sh"), *args],
                              env=env, capture_output=True, check=False)
        assert prep.returncode == 0, prep.stderr
        run.wait(timeout=10)
        assert time.monotonic() - start < 10
        assert (tmp_path / "res.txt").read_text() == "unknown\n"
        assert bystander.poll() is None  # not killed by name
        calls = (tmp_path / "calls.log").read_text().splitlines()
        # the repository is on PYTHONPATH: an uninstalled checkout runs too
        assert calls[0].startswith(f"{fake_tool} -m bnbver.cli verify net.onnx prop.vnnlib")
        assert calls[1] == f"{fake_tool} -m bnbver.cli info net.onnx"
    finally:
        for proc in (run, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
