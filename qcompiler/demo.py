"""The demo: the embedded digits model through the float pipeline and the numpy backend, raced
against onnxruntime (the peer qcompiler is checked against) in the same run.

``ort_session`` and ``median_time`` are how the demo, the benchmarks and the tests set up
onnxruntime and time a run, so every comparison is made the same way.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import api
from .errors import InputFileError
from .input_check import read_feeds


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


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_demo(model: Path, data_path: str, repeats: int) -> None:
    """Print the demo's report: accuracy of the numpy backend and of onnxruntime on the test
    images in ``data_path``, the largest logit difference and the time ratio."""
    data = read_feeds(data_path, InputFileError)
    missing = [key for key in ("test_x", "test_y") if key not in data]
    if missing:
        raise InputFileError(f"{data_path!r} has no {' or '.join(missing)} array (it holds: "
                             f"{', '.join(data) or 'nothing'})")
    x, y = data["test_x"], data["test_y"]
    if x.ndim == 0 or y.shape != (len(x),) or y.dtype.kind not in "iu":
        raise InputFileError(f"{data_path!r}: test_y must hold one integer label per test image "
                             f"({len(x) if x.ndim else 0}), it is {y.dtype}{list(y.shape)}")
    imported = api.load_onnx(model)
    print(f"model  {model.name}: {len(imported.nodes)} nodes, {len(x)} test images")
    g = api.optimize(imported)
    print(f"passes {api.DEFAULT_FLOAT_PIPELINE}: {len(imported.nodes)} -> {len(g.nodes)} nodes "
          f"({', '.join(f'{n} {op}' for op, n in sorted(g.op_counts().items()))})")
    exe = api.compile(g, backend="numpy")
    logits = exe.run({g.inputs[0].name: x})[g.outputs[0].name]
    accuracy = float((logits.argmax(axis=1) == y).mean())
    print(f"numpy backend (fp32)  accuracy {accuracy:.3f}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed: no comparison (pip install qcompiler[bench])")
        return
    sess = ort_session(model)
    ref = sess.run(None, {g.inputs[0].name: x})[0]
    ref_acc = float((ref.argmax(axis=1) == y).mean())
    diff = float(np.max(np.abs(ref - logits)))
    print(f"onnxruntime (fp32)    accuracy {ref_acc:.3f}   max |logit difference| {diff:.2e}")
    ours = median_time(lambda: exe.run({g.inputs[0].name: x}), repeats)
    theirs = median_time(lambda: sess.run(None, {g.inputs[0].name: x}), repeats)
    threads = ("one thread each" if os.environ.get("OPENBLAS_NUM_THREADS") == "1" else
               "onnxruntime on one thread, numpy on its BLAS's default threads")
    print(f"time for the test set: numpy backend / onnxruntime = {ours / theirs:.2f}x "
          f"(median of {repeats}; {threads})")
