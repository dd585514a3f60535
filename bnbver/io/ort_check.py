"""Evaluate an ONNX file with onnxruntime, the judge of VNN-COMP's counterexample checks.

onnxruntime evaluates the model in its own precision (float32 for float32 models), so a
counterexample that holds in exact arithmetic can still miss the unsafe set there; the driver
reports ``sat`` only with a witness that holds in both (``bnbver.driver``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class OrtModel:
    """An onnxruntime session of one ONNX file (a resource: built once, run many times)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session: Any = ort.InferenceSession(str(path), opts,
                                                 providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.name = inp.name
        self.shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        self.dtype = np.float64 if "double" in inp.type else np.float32

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Return the first output on flat input x (cast to the declared type), float64."""
        feed = {self.name: np.asarray(x, dtype=self.dtype).reshape(self.shape)}
        out = self.session.run(None, feed)[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def ort_outputs(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Return the first output of the ONNX model at ``path`` on flat input x.

    The input is reshaped to the model's declared input shape (dynamic dimensions become 1)
    and cast to the declared element type.
    """
    return OrtModel(path).outputs(x)
