"""Evaluate an ONNX file with onnxruntime (an optional dependency) for counterexample checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def ort_outputs(path: str | Path, x: np.ndarray) -> np.ndarray | None:
    """Return the first output of the ONNX model at ``path`` on flat input x, or None.

    None means onnxruntime is not installed. The input is reshaped to the model's declared
    input shape (dynamic dimensions become 1) and cast to the declared element type.
    """
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = np.float64 if "double" in inp.type else np.float32
    out = sess.run(None, {inp.name: np.asarray(x, dtype=dtype).reshape(shape)})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)
