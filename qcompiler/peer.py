"""onnxruntime, the peer qcompiler is checked against and raced, set up the same way everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx


def ort_session(model: onnx.ModelProto | str | Path, optimize: bool = True) -> Any:
    """An onnxruntime CPU session on one thread (as the numpy backend runs), quiet about
    warnings; ``optimize=False`` turns off its graph rewrites so it runs the model as written.
    Needs the ``bench`` or ``test`` extra (onnxruntime)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: unused initializers are not worth a warning
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
