"""Imports follow DESIGN.md's layering; only lp/highs.py imports highspy, only io/ imports onnx."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bnbver"

#: rank of each top-level part of the package; a module may import equal or lower ranks.
RANKS = {
    "errors": 0, "progress": 0, "network": 1, "spec": 1, "splits": 1, "torch_model": 1,
    "check": 2, "result": 2, "io": 2, "attack": 2, "bounds": 3, "lp": 3, "milp": 4, "bab": 5,
    "driver": 6, "apps": 7, "vnncomp": 8, "commands": 8, "cli": 8, "__init__": 9, "__main__": 9,
}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_layering() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        part = _part(path)
        for name in _imports(path):
            if not name.startswith("bnbver."):
                continue
            target = name.split(".")[1]
            if RANKS[target] > RANKS[part]:
                bad.append(f"{path.relative_to(PKG)} imports {name}")
            if {part, target} == {"bounds", "lp"}:
                bad.append(f"{path.relative_to(PKG)} imports {name} (bounds and lp are siblings)")
    assert not bad, "\n".join(bad)


def test_solver_and_onnx_imports_are_confined() -> None:
    for path in PKG.rglob("*.py"):
        roots = {n.split(".")[0] for n in _imports(path)}
        rel = path.relative_to(PKG).as_posix()
        if "highspy" in roots:
            assert rel == "lp/highs.py", rel
        if "onnx" in roots:
            assert rel.startswith("io/"), rel


def test_checker_imports_numpy_and_the_readers_only() -> None:
    """Issue 16: bnbver/check/ imports numpy and the IR/readers, nothing of the engines, the
    search or torch, so a bug there cannot hide from it."""
    allowed = {"numpy", "__future__", "dataclasses", "collections", "pathlib", "time",
               "typing", "bnbver"}
    allowed_bnbver = {"network", "spec", "io", "errors", "check"}
    for path in (PKG / "check").rglob("*.py"):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root in allowed, f"{path.name} imports {name}"
            if root == "bnbver":
                assert name.split(".")[1] in allowed_bnbver, f"{path.name} imports {name}"
