"""Run bnbver on a written instance through its public API, and classify the outcome.

``run_verifier`` is the only place that calls bnbver: ``load_network`` on the ONNX file,
``load_properties`` on the VNN-LIB file, then ``verify(..., source_path=onnx)`` with the
configuration's keywords. ``Isolated`` runs it in a separate process (one torch thread) that
is killed and restarted when it overruns its deadline by far, so one hung run cannot stop a
batch.

Outcome classes (``classify``):

- ``wrong-unsat`` (critical): bnbver says unsat, the oracle found an exact counterexample;
- ``refuted-witness``: bnbver says sat, and the witness is outside every box or misses the
  unsafe set in an exact rational forward pass (or there is no witness);
- ``refuted-ort``: the witness holds exactly but misses the unsafe set in onnxruntime on the
  ONNX file (the input cast to the model's element type, as a VNN-COMP checker does). The
  issue counts it as a refuted witness; it is a column of its own because it is a different
  bug (a float32 runtime disagreeing near the boundary, not a wrong proof);
- ``crash``: an exception, an ``error`` status, or a worker process that died;
- ``fuzzer-bug``: a witness that replays exactly while the oracle says unsat, the oracle's
  own witness failing its re-check, or an exception in the generator, oracle or writers: a
  bug of the fuzzer, also a failure (and the batch goes on);
- ``ok``: agrees with the oracle; ``skipped``: the oracle said unknown (its limits) and the
  answer could not be refuted; ``timeout``, ``unknown``, ``hang`` (killed after twice the
  deadline plus a grace period): allowed, counted.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from .exact import forward_spec, fr, in_box, violated_disjunct
from .netspec import Instance
from .oracle import OracleResult
from .write import ort_forward

FAILURES = ("wrong-unsat", "refuted-witness", "refuted-ort", "crash", "fuzzer-bug")
OUTCOMES = ("ok", *FAILURES, "timeout", "unknown", "hang", "skipped")
#: Extra seconds a worker gets beyond twice its deadline before it is killed.
GRACE = 30.0


def run_verifier(onnx_path: str, vnnlib_path: str, options: dict[str, Any], timeout: float,
                 seed: int) -> dict[str, Any]:
    """Run bnbver once; return status, witness x, message, wall time, or the error text."""
    from bnbver.driver import verify
    from bnbver.io.loaders import load_network, load_properties

    start = time.monotonic()
    try:
        net = load_network(onnx_path)
        props = load_properties(vnnlib_path, net)
        res = verify(net, props, source_path=onnx_path, timeout=timeout, seed=seed, **options)
    except Exception as exc:  # any exception is a finding (class "crash")
        tb = traceback.format_exc(limit=-3).strip().replace("\n", " | ")
        return {"status": "exception", "x": None, "wall": time.monotonic() - start,
                "message": f"{type(exc).__name__}: {exc} [{tb}]"[:2000]}
    cex = res.counterexample
    return {"status": res.status.value, "wall": time.monotonic() - start,
            "x": None if cex is None else [float(v) for v in cex.x],
            "message": res.message[:2000]}


def _worker(conn: Connection) -> None:
    """Serve ``run_verifier`` requests until the pipe closes (one torch thread)."""
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    while True:
        try:
            req = conn.recv()
        except EOFError:
            return
        conn.send(run_verifier(*req))


class Isolated:
    """A verifier process reused across runs; killed and restarted when a run hangs."""

    def __init__(self) -> None:
        self._proc: Any = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self._proc.start()
        self._conn = parent

    def run(self, onnx_path: str, vnnlib_path: str, options: dict[str, Any], timeout: float,
            seed: int) -> dict[str, Any]:
        """Run in the worker; a run past ``2 * timeout + GRACE`` seconds is killed (hang)."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        assert self._conn is not None
        start = time.monotonic()
        self._conn.send((onnx_path, vnnlib_path, options, timeout, seed))
        try:
            if self._conn.poll(2 * timeout + GRACE):
                out: dict[str, Any] = self._conn.recv()
                return out
            status, msg = "hang", f"no answer after {2 * timeout + GRACE:.0f} s; killed"
        except EOFError:
            status, msg = "exception", f"worker died (exit code {self._proc.exitcode})"
        self.close()
        return {"status": status, "x": None, "wall": time.monotonic() - start, "message": msg}

    def close(self) -> None:
        """Stop the worker process."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
        self._proc, self._conn = None, None


class InProcess:
    """Run the verifier in this process (tests, ``--no-isolate``)."""

    def run(self, onnx_path: str, vnnlib_path: str, options: dict[str, Any], timeout: float,
            seed: int) -> dict[str, Any]:
        """Run ``run_verifier`` here."""
        return run_verifier(onnx_path, vnnlib_path, options, timeout, seed)

    def close(self) -> None:
        """Nothing to stop."""


@dataclass(frozen=True)
class WitnessCheck:
    """Replays of a witness: exact (box and unsafe set) and onnxruntime (unsafe set)."""

    exact_ok: bool
    ort_ok: bool
    detail: str


def check_witness(inst: Instance, x: list[float], onnx_path: Path) -> WitnessCheck:
    """Replay witness x exactly and in onnxruntime (x cast to the model's element type)."""
    xa = np.asarray(x, dtype=np.float64)
    xf = [fr(v) for v in xa.tolist()]
    boxes = [k for k, (lo, up) in enumerate(inst.boxes) if in_box(xf, lo, up)]
    y = forward_spec(inst.net, xa)
    exact_ok = bool(boxes) and violated_disjunct(inst.disjuncts, y) is not None
    y_ort = ort_forward(onnx_path, xa)
    ort_ok = bool(np.all(np.isfinite(y_ort))) and violated_disjunct(
        inst.disjuncts, [Fraction(float(v)) for v in y_ort]) is not None
    detail = "" if boxes else "outside every box; "
    detail += f"exact y={[float(v) for v in y]}, ort y={y_ort.tolist()}"
    return WitnessCheck(exact_ok, ort_ok, detail)


def oracle_witness_replays(inst: Instance, oracle: OracleResult, onnx_path: Path
                           ) -> dict[str, bool | None]:
    """Return whether the oracle's exact witness (rounded to float64) stays unsafe in a
    plain float64 forward pass and in onnxruntime: context for triaging a wrong unsat (an
    instance that only exact arithmetic calls sat is ill-conditioned, but still sat)."""
    if oracle.witness is None:
        return {"witness_f64": None, "witness_ort": None}
    from .generate import float_forward

    x = np.array([float(v) for v in oracle.witness])
    y64 = float_forward(list(inst.net.ops), inst.net.input_shape, x[None])[0]
    y_ort = ort_forward(onnx_path, x)
    return {name: bool(np.all(np.isfinite(y))) and violated_disjunct(
        inst.disjuncts, [Fraction(float(v)) for v in y]) is not None
        for name, y in (("witness_f64", y64), ("witness_ort", y_ort))}


def classify(inst: Instance, oracle: OracleResult, run: dict[str, Any],
             onnx_path: Path) -> tuple[str, str]:
    """Return (outcome class, detail) of one verifier run against the oracle."""
    status = run["status"]
    if status in ("exception", "error"):
        return "crash", run["message"][:2000]
    if status == "hang":
        return "hang", run["message"]
    if status in ("timeout", "unknown"):
        return status, ""
    if oracle.reason.startswith("bug:"):
        return "fuzzer-bug", oracle.reason
    if status == "unsat":
        return {"sat": ("wrong-unsat", "the oracle found a counterexample"),
                "unsat": ("ok", ""), }.get(oracle.answer, ("skipped", oracle.reason))
    assert status == "sat", status
    if run["x"] is None:
        return "refuted-witness", "sat without a counterexample"
    w = check_witness(inst, run["x"], onnx_path)
    if not w.exact_ok:
        return "refuted-witness", "exact: " + w.detail
    if oracle.answer == "unsat":
        return "fuzzer-bug", "a witness that replays exactly, but the oracle says unsat"
    if not w.ort_ok:
        return "refuted-ort", w.detail
    return ("ok", "") if oracle.answer == "sat" else ("skipped", oracle.reason)
