"""Certify a data set: L-infinity robustness of every sample at every radius.

For each sample the model's prediction is computed first. A misclassified sample is not
certified (it is not robust at any radius: its rows say ``misclassified``), as certification
papers count it. A correctly classified one is verified at each eps in ascending order with
:func:`bnbver.driver.verify` on :func:`~bnbver.driver.robustness_property`; once a
counterexample is found at some eps it also answers every larger eps (the larger ball holds
it), after a float64 re-check against that eps's property.

Row statuses: ``verified`` (robust on the whole ball), ``falsified`` (a counterexample),
``timeout``, ``unknown``, ``error``, ``misclassified``. The summary per eps reports, over all
samples: clean accuracy, verified robust accuracy (verified / samples) and the falsified
share (falsified / samples).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bnbver.driver import (
    VerifierOptions,
    as_network,
    fit_input,
    robustness_property,
    validate_domain,
    validate_in_domain,
    validate_label,
    validate_options,
    verify,
)
from bnbver.errors import InputError
from bnbver.network import Network
from bnbver.result import Result, Status, validate_counterexample

log = logging.getLogger(__name__)

#: Result status -> row status.
ROW_STATUS = {Status.HOLDS: "verified", Status.VIOLATED: "falsified",
              Status.TIMEOUT: "timeout", Status.UNKNOWN: "unknown", Status.ERROR: "error"}
MISCLASSIFIED = "misclassified"


@dataclass(frozen=True, eq=False)
class Row:
    """The answer for one (sample, eps).

    Attributes:
        index: the sample's index in the data.
        eps: the L-infinity radius.
        status: verified, falsified, timeout, unknown, error or misclassified.
        seconds: wall-clock seconds of the verification (0 when not run).
        nodes: branch-and-bound nodes.
        lower_bound: the best proven lower bound of the margin ``min_j y_label - y_j`` over
            the ball (> 0 for verified), or None when none was computed.
        predicted: the class the model gives the sample.
        label: the true class.
        counterexample: a violating input in the sample's shape, or None.
        cex_class: the class the counterexample reaches, or None.
        message: how the answer was found, or why there is none.
    """

    index: int
    eps: float
    status: str
    seconds: float
    nodes: int
    lower_bound: float | None
    predicted: int
    label: int
    counterexample: np.ndarray | None = None
    cex_class: int | None = None
    message: str = ""


@dataclass(frozen=True)
class Summary:
    """Counts of one eps over all samples (what certification papers report)."""

    eps: float
    samples: int
    correct: int
    verified: int
    falsified: int
    timeout: int
    unknown: int
    error: int

    @property
    def clean_accuracy(self) -> float:
        """Return the share of correctly classified samples."""
        return self.correct / self.samples if self.samples else math.nan

    @property
    def verified_accuracy(self) -> float:
        """Return the verified robust accuracy: verified samples over all samples."""
        return self.verified / self.samples if self.samples else math.nan

    @property
    def falsified_share(self) -> float:
        """Return the share of samples with a counterexample."""
        return self.falsified / self.samples if self.samples else math.nan

    def line(self) -> str:
        """Return the summary as one line of text."""
        return (f"eps={self.eps:g}: {self.samples} samples, clean accuracy "
                f"{100 * self.clean_accuracy:.1f}% ({self.correct}), verified robust accuracy "
                f"{100 * self.verified_accuracy:.1f}% ({self.verified}), falsified "
                f"{100 * self.falsified_share:.1f}% ({self.falsified}), timeout {self.timeout}"
                f", unknown {self.unknown}, error {self.error}, misclassified "
                f"{self.samples - self.correct} (not certified)")


@dataclass(frozen=True, eq=False)
class Task:
    """One sample to certify (what a worker receives)."""

    index: int
    x: np.ndarray
    label: int
    eps: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class Setup:
    """What every sample shares: the network and how to verify."""

    network: Network
    source: str | None
    options: VerifierOptions
    domain: tuple[float, float] | None
    sample_shape: tuple[int, ...]


def certify(model: Any, x: Any, y: Any, eps: float | Sequence[float], *,
            domain: tuple[float, float] | None = None, mean: Any = None, std: Any = None,
            indices: Sequence[int] | None = None, input_shape: Sequence[int] | None = None,
            jobs: int = 1, **options: Any) -> list[Row]:
    """Certify L-infinity robustness of ``model`` on every sample of ``x`` at every ``eps``.

    Args:
        model: a bnbver ``Network``, a torch module, or a model file (.onnx, .nnet, .pt).
        x: (N, ...) samples: each in the model's input shape (a batch dimension of 1 is
            not needed) or flat.
        y: (N,) integer labels.
        eps: one radius or several.
        domain: the input domain (low, high), e.g. (0, 1); every sample must lie inside it,
            and the balls are clipped to it.
        mean, std: normalisation the model expects on top of the domain: it verifies
            ``model((x - mean) / std)`` with the ball in the raw domain (one value, or one
            per channel).
        indices: the sample numbers that ``Row.index`` reports (default 0..N-1).
        input_shape: the torch module's input shape when x is flat (e.g. (1, 28, 28)).
        jobs: samples verified in parallel (joblib processes, one torch thread each).
        **options: as for :func:`bnbver.verify`, per (sample, eps) (timeout, seed, ...).

    Returns:
        One :class:`Row` per (sample, eps), sorted by sample then eps.

    Raises:
        InputError: bad model, data, labels, domain, eps or options (before any work).
    """
    setup, tasks = prepare(model, x, y, eps, domain=domain, mean=mean, std=std,
                           indices=indices, input_shape=input_shape, jobs=jobs, **options)
    rows = [row for batch in run_tasks(setup, tasks, jobs) for row in batch]
    return sorted(rows, key=lambda r: (r.index, r.eps))


def prepare(model: Any, x: Any, y: Any, eps: float | Sequence[float], *,
            domain: tuple[float, float] | None = None, mean: Any = None, std: Any = None,
            indices: Sequence[int] | None = None, input_shape: Sequence[int] | None = None,
            jobs: int = 1, **options: Any) -> tuple[Setup, list[Task]]:
    """Validate everything and return the shared setup and one task per sample.

    Raises:
        InputError: see :func:`certify`.
    """
    xs = _samples(x)
    radii = validate_eps(eps)
    if jobs < 1:
        raise InputError("--jobs", f"must be >= 1, got {jobs}")
    shape = tuple(int(d) for d in input_shape) if input_shape else tuple(xs.shape[1:])
    network, source = as_network(model, shape)
    if mean is not None or std is not None:
        from bnbver.io.layers import normalize_input

        network = normalize_input(network, 0.0 if mean is None else mean,
                                  1.0 if std is None else std)
        source = None  # the ONNX file no longer computes this network
    opts = VerifierOptions.from_kwargs(**options)
    validate_options(network, opts)
    dom = validate_domain(domain) if domain is not None else None
    ids = _indices(indices, xs.shape[0])
    tasks = [_task(network, ids[i], xs[i], lab, radii, dom)
             for i, lab in enumerate(_labels(y, xs.shape[0]))]
    return Setup(network, source, opts, dom, tuple(xs.shape[1:])), tasks


def _samples(x: Any) -> np.ndarray:
    try:
        xs = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("x", f"expected an (N, ...) array of numbers, got "
                         f"{type(x).__name__}") from None
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise InputError("x", f"expected an (N, ...) array with N >= 1, got shape {xs.shape}")
    return xs


def _labels(y: Any, n: int) -> list[Any]:
    labels = list(np.asarray(y).reshape(-1)) if np.ndim(y) else [y]
    if len(labels) != n:
        raise InputError("y", f"expected {n} labels (one per sample), got {len(labels)}")
    return labels


def _indices(indices: Sequence[int] | None, n: int) -> list[int]:
    if indices is None:
        return list(range(n))
    if len(indices) != n:
        raise InputError("indices", f"expected {n} indices (one per sample), got {len(indices)}")
    return [int(i) for i in indices]


def validate_eps(eps: float | Sequence[float]) -> tuple[float, ...]:
    """Return the radii sorted ascending without repeats.

    Raises:
        InputError: no radius, or one that is negative or not finite.
    """
    values: list[Any] = list(np.atleast_1d(np.asarray(eps, dtype=object)).reshape(-1))
    try:
        radii = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError("--eps", f"expected numbers, got {eps!r}") from None
    if not radii or not all(math.isfinite(r) and r >= 0 for r in radii):
        raise InputError("--eps", f"expected one or more finite radii >= 0, got {radii}")
    return tuple(sorted(set(radii)))


def _task(network: Network, index: int, x: np.ndarray, label: Any, eps: tuple[float, ...],
          domain: tuple[float, float] | None) -> Task:
    """Check one sample and return its task."""
    flat = fit_input(network, x, name=f"x[{index}]")
    if not np.all(np.isfinite(flat)):
        raise InputError(f"x[{index}]", "has NaN or infinite values")
    if domain is not None:
        validate_in_domain(flat, domain, name=f"x[{index}]")
    try:
        lab = validate_label(label, network.num_outputs)
    except InputError as exc:
        raise InputError(f"y[{index}]", exc.problem) from None
    return Task(index, flat, lab, eps)


def run_tasks(setup: Setup, tasks: list[Task], jobs: int = 1) -> Iterator[list[Row]]:
    """Yield each task's rows as it finishes (in any order when ``jobs > 1``)."""
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield certify_sample(setup, task)
        return
    from joblib import Parallel, delayed

    calls = (delayed(_in_worker)(setup, task) for task in tasks)
    yield from Parallel(n_jobs=jobs, return_as="generator_unordered")(calls)


def _in_worker(setup: Setup, task: Task) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    return certify_sample(setup, task)


def certify_sample(setup: Setup, task: Task) -> list[Row]:
    """Certify one sample at every eps of its task (ascending; see the module docstring)."""
    net = setup.network
    predicted = int(np.argmax(net.forward(task.x)))
    if predicted != task.label:
        log.info("sample %d: predicted %d, label %d: misclassified, not certified",
                 task.index, predicted, task.label)
        return [Row(task.index, e, MISCLASSIFIED, 0.0, 0, None, predicted, task.label,
                    message=f"predicted {predicted}, label {task.label}: not certified")
                for e in task.eps]
    rows: list[Row] = []
    for e in task.eps:
        prop = robustness_property(task.x, task.label, e, net.num_outputs, setup.domain)
        earlier = next((r for r in rows if r.counterexample is not None), None)
        cex = None if earlier is None else validate_counterexample(
            net, prop, np.asarray(earlier.counterexample).reshape(-1))
        if earlier is not None and cex is not None:
            rows.append(replace(earlier, eps=e, seconds=0.0, nodes=0, lower_bound=None,
                                message=f"the counterexample of eps={earlier.eps:g}"))
            continue
        try:
            result = verify(net, prop, setup.options, source_path=setup.source)
        except Exception as exc:
            log.error("sample %d eps %g failed: %s", task.index, e, exc)
            result = Result(Status.ERROR, message=f"{type(exc).__name__}: {exc}")
        rows.append(_row(setup, task, e, predicted, result))
        log.info("sample %d eps %g: %s in %.2f s", task.index, e, rows[-1].status,
                 result.wall_time)
    return rows


def _row(setup: Setup, task: Task, eps: float, predicted: int, result: Result) -> Row:
    cex = result.counterexample
    return Row(task.index, eps, ROW_STATUS[result.status], result.wall_time,
               result.stats.nodes, result.lower_bound, predicted, task.label,
               None if cex is None else cex.x.reshape(setup.sample_shape),
               None if cex is None else cex.reached_class, result.message)


def summarize(rows: Sequence[Row] | Sequence[dict[str, str]]) -> list[Summary]:
    """Return one :class:`Summary` per eps (ascending) of ``rows`` (Row objects, or the
    string dicts of a results CSV)."""
    by_eps: dict[float, list[str]] = {}
    for r in rows:
        eps, status = (r.eps, r.status) if isinstance(r, Row) else (float(r["eps"]),
                                                                     r["status"])
        by_eps.setdefault(eps, []).append(status)
    return [Summary(eps, len(st), len(st) - st.count(MISCLASSIFIED), st.count("verified"),
                    st.count("falsified"), st.count("timeout"), st.count("unknown"),
                    st.count("error")) for eps, st in sorted(by_eps.items())]

