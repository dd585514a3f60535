"""Benchmark instances for the comparison scripts: selection from a suite, and a tiny one.

An instance is one (network, VNN-LIB file) row of a suite's ``instances.csv``. Its name is
``suite/onnx-stem/vnnlib-stem``, which keys the resumable CSV. A VNN-LIB file with several
input boxes is several properties: the instance is sat when any is, unsat when all are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnbver.commands.run_suite import read_expected, read_instances
from bnbver.io.loaders import load_network, load_properties
from bnbver.io.onnx_export import save_onnx
from bnbver.network import Dense, Network, ReLU
from bnbver.spec import Property


@dataclass(frozen=True)
class InstanceRef:
    """One instance on disk (not loaded yet).

    Attributes:
        name: ``suite/onnx-stem/vnnlib-stem`` (the CSV key).
        onnx: network file; vnnlib: property file.
        expected: "sat", "unsat" or "" (from the suite's expected.csv).
    """

    name: str
    onnx: Path
    vnnlib: Path
    expected: str = ""


@dataclass(frozen=True, eq=False)
class LoadedInstance:
    """An instance with its network and properties loaded."""

    ref: InstanceRef
    network: Network
    props: tuple[Property, ...]


def spread(items: Sequence[InstanceRef], limit: int | None) -> list[InstanceRef]:
    """Return ``limit`` items evenly spaced over ``items`` (all of them when None)."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def select(suite_dir: Path, patterns: Sequence[str] = (), limit: int | None = None,
           ) -> list[InstanceRef]:
    """Return the instances of one suite that match any pattern, ``limit`` evenly spaced.

    Args:
        suite_dir: folder with instances.csv (and optionally expected.csv).
        patterns: substrings of ``onnx,vnnlib`` (relative paths); none = every instance.
        limit: keep at most this many, evenly spaced over the matches (deterministic).
    """
    rows = read_instances(suite_dir / "instances.csv")
    expected = read_expected(suite_dir / "expected.csv")
    refs = []
    for r in rows:
        key = f"{r.name_onnx},{r.name_vnnlib}"
        if patterns and not any(p in key for p in patterns):
            continue
        name = f"{suite_dir.name}/{Path(r.name_onnx).stem}/{Path(r.name_vnnlib).stem}"
        refs.append(InstanceRef(name, r.onnx, r.vnnlib,
                                expected.get((r.name_onnx, r.name_vnnlib), "")))
    return spread(refs, limit)


def load(ref: InstanceRef) -> LoadedInstance:
    """Load the network and properties of an instance (raises InputError on bad files)."""
    network = load_network(ref.onnx)
    return LoadedInstance(ref, network, tuple(load_properties(ref.vnnlib, network)))


def tiny_network(seed: int = 0, sizes: Sequence[int] = (3, 8, 8, 2)) -> Network:
    """Return a seeded fully connected ReLU network (the smoke instances' network)."""
    rng = np.random.default_rng(seed)
    layers: list[Dense | ReLU] = []
    for i in range(len(sizes) - 1):
        w = rng.normal(size=(sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])
        layers.append(Dense(w, rng.normal(size=sizes[i + 1]) * 0.1))
        if i < len(sizes) - 2:
            layers.append(ReLU(sizes[i + 1]))
    return Network(tuple(layers), (sizes[0],))


def vnnlib_text(lower: np.ndarray, upper: np.ndarray, threshold: float) -> str:
    """Return a VNN-LIB property: x in [lower, upper], unsafe when ``Y_0 - Y_1 >= threshold``."""
    n = len(lower)
    lines = [f"(declare-const X_{i} Real)" for i in range(n)]
    lines += ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    for i in range(n):
        lines += [f"(assert (>= X_{i} {float(lower[i])!r}))",
                  f"(assert (<= X_{i} {float(upper[i])!r}))"]
    lines.append(f"(assert (<= (- Y_1 Y_0) {-float(threshold)!r}))")
    return "\n".join(lines) + "\n"


def write_tiny_suite(folder: Path, thresholds: Sequence[float] = (-0.5, 0.0)) -> Path:
    """Write a tiny suite (one ONNX net, one property per threshold) and return its folder.

    The suite has no expected.csv: its answers are only cross-checked between solvers,
    which is what the smoke runs exercise.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_onnx(tiny_network(), folder / "tiny.onnx")
    rows = []
    for i, thr in enumerate(thresholds):
        (folder / f"prop_{i}.vnnlib").write_text(vnnlib_text(-np.ones(3), np.ones(3), thr))
        rows.append(f"tiny.onnx,prop_{i}.vnnlib,10")
    (folder / "instances.csv").write_text("\n".join(rows) + "\n")
    return folder
