"""Named verifier configurations: keyword options of ``bnbver.driver.verify``.

One configuration per registered branching heuristic and bounds precision
(``<kind>-<heuristic>-<f32|f64>``: ``relu-babsr-f64``, ``input-gradient-smear-f32``, ...),
plus root tightening (``lp``/``milp``), two parallel jobs, the search without LP/MILP
leaves, inferred cuts (nogoods), other intermediate-bound modes, no input-box clipping, a
near-disabled falsifier (so that the search itself must find the counterexamples), and the
defaults. The heuristics come from ``bnbver.bab.branching.REGISTRY``, so a newly registered
one is fuzzed too.
"""

from __future__ import annotations

from typing import Any

from bnbver.bab.branching import REGISTRY

#: The falsifier turned down as far as it goes (``restarts=0`` crashes the attack today).
NO_ATTACK: dict[str, Any] = {"samples": 0, "restarts": 1, "steps": 1, "attack_nodes": 0}


def build_configs() -> dict[str, dict[str, Any]]:
    """Return every named configuration, in a stable order."""
    out: dict[str, dict[str, Any]] = {"default": {}}
    for name in sorted(REGISTRY):
        kind = REGISTRY[name].kind
        for prec in ("f64", "f32"):
            precision = "float64" if prec == "f64" else "float32"
            out[f"{kind}-{name}-{prec}"] = {"split": kind, "branching": name,
                                            "precision": precision}
    for kind in ("relu", "input"):
        out[f"{kind}-tighten-lp"] = {"split": kind, "tighten": "lp"}
        out[f"{kind}-tighten-milp"] = {"split": kind, "tighten": "milp"}
        out[f"{kind}-jobs2"] = {"split": kind, "jobs": 2}
        out[f"{kind}-noattack"] = {"split": kind, **NO_ATTACK}
        out[f"{kind}-bounds-only"] = {"split": kind,
                                      "milp_max_unstable": 0, "stall_rounds": 0, **NO_ATTACK}
    out["relu-crown-intermediate-f32"] = {"split": "relu", "relu_intermediate": "crown",
                                          "precision": "float32"}
    out["relu-tighten-milp-f32"] = {"split": "relu", "tighten": "milp", "precision": "float32"}
    for prec in ("f64", "f32"):  # nogoods matter most when bounds alone close nodes
        out[f"relu-nogoods-{prec}"] = {
            "split": "relu", "nogoods": True, "milp_max_unstable": 0, "stall_rounds": 0,
            "precision": "float64" if prec == "f64" else "float32", **NO_ATTACK}
    for prec in ("f64", "f32"):  # one root per open disjunct, closed by bounds alone
        out[f"relu-disjunct-roots-{prec}"] = {
            "split": "relu", "disjunct_roots": True, "milp_max_unstable": 0,
            "stall_rounds": 0, "precision": "float64" if prec == "f64" else "float32",
            **NO_ATTACK}
    # the root's last layer alone alpha-optimised (optimize_from), closed by bounds alone
    out["relu-root-last-layer-f32"] = {
        "split": "relu", "root_interm_layers": 1, "milp_max_unstable": 0, "stall_rounds": 0,
        "precision": "float32", **NO_ATTACK}
    out["input-noclip"] = {"split": "input", "clip": False}
    out["input-crown-intermediate"] = {"split": "input", "input_intermediate": "crown"}
    out["input-forward-f32"] = {"split": "input", "input_intermediate": "forward",
                                "precision": "float32"}
    return out


CONFIGS = build_configs()
