"""The demo: the embedded digits model through the float pipeline and the numpy backend, then
quantized to int8 on the numpy and llvm backends, raced against onnxruntime (the peer qcompiler
is checked against) in the same run.

``ort_session``, ``ort_int8_sessions``, ``median_time`` and ``interleaved_times`` are how the
demo, the benchmarks and the tests set up onnxruntime and time a run, and ``differing`` and
``fallback_summary`` how they report the llvm backend's exactness and coverage, so every
comparison is made the same way.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import api
from .config import QuantConfig
from .errors import InputFileError
from .input_check import read_feeds
from .report import ErrorStats


def ort_session(model: onnx.ModelProto | str | Path, optimize: bool = True,
                exact_int8: bool = False, threads: int = 1) -> Any:
    """An onnxruntime CPU session on ``threads`` threads (one by default, as the numpy backend
    runs), quiet about warnings; ``optimize=False`` turns off its graph rewrites so it runs the
    model as written. ``exact_int8=True`` sets ``session.x64quantprecision=1``: on x86 CPUs
    without VNNI its default int8 kernels saturate int16 pair sums, and this mode avoids that
    (more slowly). With more than one thread its workers do not spin-wait after a run
    (``session.intra_op.allow_spinning=0``): benchmarks alternate several sessions, and idle
    spinning workers take the cores from whatever runs next (on 2 cores, measured: the digits
    model at batch 64 ran 1.8x slower in the llvm backend and in onnxruntime itself).
    Needs the ``bench`` or ``test`` extra (onnxruntime)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if exact_int8:
        opts.add_session_config_entry("session.x64quantprecision", "1")
    if threads > 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only: unused initializers are not worth a warning
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


# onnxruntime's calibration methods as quantize_static offers them, with its defaults. Its
# Entropy collects a 128-bin histogram, as many bins as it quantizes to, so the KL search has
# one candidate, the whole range: it gives MinMax's ranges (quantize_static has no option to
# change the bin count; measured identical scales on both digits models).
ORT_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "MinMax": ("MinMax", {}),
    "Entropy": ("Entropy", {}),
    "Percentile": ("Percentile", {}),
}


def ort_quantize_static(model: onnx.ModelProto | str | Path, name: str, calib: np.ndarray, *,
                        method: str = "MinMax", per_channel: bool = True,
                        batch: int = 32,
                        extra_options: dict[str, Any] | None = None) -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` (QDQ format, int8 activations and weights, its
    defaults otherwise) on the single-input ``model``, calibrated on ``calib`` fed to input
    ``name`` in batches of ``batch``: the peer's post-training quantization, for comparisons.
    ``extra_options`` go to quantize_static (e.g. ``{"num_bins": 2048}``). A model below opset
    13 is converted to opset 13 first (onnx's version converter): per-channel QDQ needs the
    ``axis`` of DequantizeLinear-13, and quantize_static itself only lifts models to 11."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: calib[i:i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        source, ready, target = (Path(tmp, f) for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
        if _opset(proto) < PER_AXIS_OPSET:
            proto = onnx.version_converter.convert_version(proto, PER_AXIS_OPSET)
        onnx.save(proto, str(source))
        # its recommended first step (folds BatchNorm); symbolic shapes would need sympy
        quant_pre_process(str(source), str(ready), skip_symbolic_shape=True)
        quantize_static(str(ready), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options=extra_options)
        return onnx.load(str(target))


# onnxruntime's two ways to run an int8 QDQ model on this CPU: label -> exact_int8
ORT_INT8_MODES = {"default session": False, "x64quantprecision=1": True}


def ort_int8_sessions(model: onnx.ModelProto, threads: int = 1) -> dict[str, Any]:
    """onnxruntime sessions of the int8 QDQ ``model`` (from ``ort_quantize_static``) in each of
    ``ORT_INT8_MODES``, keyed by its label, on ``threads`` threads."""
    return {label: ort_session(model, exact_int8=exact, threads=threads)
            for label, exact in ORT_INT8_MODES.items()}


PER_AXIS_OPSET = 13  # QuantizeLinear / DequantizeLinear take an axis from here on


def _opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence what onnxruntime's quantization tool prints and logs while it works."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one untimed warm-up run."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Samples:
    """The seconds of the timed runs of one contender."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median: how noisy the runs were."""
        if len(self.times) < 2:
            return 0.0
        low, _, high = statistics.quantiles(self.times, n=4)
        return (high - low) / self.median


def interleaved_times(calls: Mapping[str, Callable[[], Any]], repeats: int,
                      warmup: int = 1) -> dict[str, Samples]:
    """Every call timed ``repeats`` times after ``warmup`` untimed rounds. A round runs each
    contender once, in an order shuffled per round (seeded: runs are reproducible), so load
    from other work on the machine hits every contender alike instead of the one timed while
    it lasted."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    shuffle = random.Random(0).shuffle
    for round_ in range(warmup + max(1, repeats)):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name]()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: Samples(tuple(t)) for name, t in times.items()}


def differing(ours: np.ndarray, reference: np.ndarray) -> int:
    """How many elements of ``ours`` differ from ``reference`` bit for bit (a float's sign of
    zero and NaN payload count); every element when dtypes or shapes differ."""
    if ours.dtype != reference.dtype or ours.shape != reference.shape:
        return max(ours.size, reference.size)
    bits = f"u{ours.dtype.itemsize}"
    return int(np.count_nonzero(np.ascontiguousarray(ours).view(bits)
                                != np.ascontiguousarray(reference).view(bits)))


def fallback_summary(exe: Any) -> str:
    """Which nodes of the llvm executable ``exe`` run their numpy kernel (for the shapes it
    compiled last), by op: what is not native code yet."""
    ops = Counter(fallback.node.op for fallback in exe.fallbacks())
    nodes = len(exe.graph.nodes)
    if not ops:
        return f"all {nodes} nodes native"
    listed = ", ".join(op if n == 1 else f"{op} x{n}" for op, n in ops.items())
    return f"{sum(ops.values())} of {nodes} nodes on numpy kernels: {listed}"


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
    if "calib_x" in data:
        _int8_report(model, imported, data["calib_x"], x, y, logits, exe, repeats)


def _int8_report(model: Path, graph: Any, calib: np.ndarray, x: np.ndarray, y: np.ndarray,
                 float_logits: np.ndarray, float_exe: Any, repeats: int) -> None:
    """Post-training int8 with the default config (lowered to integer ops) on the numpy and
    llvm backends, next to onnxruntime's quantize_static, both calibrated on the same images:
    accuracy, logits SQNR against fp32, what stays float, whether the llvm backend matches the
    numpy backend bit for bit, and the time of the test set against the fp32 numpy backend,
    onnxruntime fp32 and onnxruntime int8 (all timed interleaved, one thread each)."""
    name, output = graph.inputs[0].name, graph.outputs[0].name
    feeds = {name: x}
    config = QuantConfig()
    q = api.quantize(graph, [calib], config, progress=False)
    islands = q.float_islands()
    exe = api.compile(q, backend="numpy")
    logits = exe.run(feeds)[output]
    integer = "fully integer" if not islands else f"{len(islands)} float island(s)"
    print(f"int8 (qc.quantize, {config.calibration}, per-channel weights, {len(calib)} "
          f"calibration images; {integer} between the input Quantize and the output "
          f"Dequantize, {config.rounding} requantization, on the numpy and llvm backends)")
    for island in islands:
        print(f"  float: {island}")
    native = api.compile(q, backend="llvm")
    native_logits = native.run(feeds)[output]
    wrong = differing(native_logits, logits)
    exact = "yes" if not wrong else f"NO, {wrong} of {logits.size} logits differ"
    for label, out, note in (("qcompiler int8      ", logits, "numpy backend"),
                             ("llvm backend int8   ", native_logits,
                              f"bit-exact with the numpy backend: {exact}")):
        print(f"  {label} accuracy {_accuracy(out, y):.3f}   agreement with fp32 "
              f"{_accuracy(out, float_logits.argmax(1)):.3f}   logits SQNR "
              f"{ErrorStats.between(float_logits, out).sqnr_db:.1f} dB   ({note})")
    print(f"  llvm backend: {fallback_summary(native)}")
    theirs = ort_quantize_static(model, name, calib, method="MinMax", per_channel=True)
    int8 = ort_int8_sessions(theirs)
    for mode, session in int8.items():
        out = session.run(None, feeds)[0]
        sqnr = ErrorStats.between(float_logits, out).sqnr_db
        print(f"  onnxruntime int8     accuracy {_accuracy(out, y):.3f}   agreement with fp32 "
              f"{_accuracy(out, float_logits.argmax(1)):.3f}   logits SQNR {sqnr:.1f} dB   "
              f"(quantize_static MinMax, {mode})")
    calls: dict[str, Callable[[], Any]] = {
        "fp32 numpy backend": lambda: float_exe.run(feeds),
        "numpy backend int8": lambda: exe.run(feeds),
        "llvm backend int8": lambda: native.run(feeds)}
    sessions = {"onnxruntime fp32": ort_session(model),
                **{f"onnxruntime int8 ({mode})": session for mode, session in int8.items()}}
    calls.update({label: (lambda s=session: s.run(None, feeds))
                  for label, session in sessions.items()})
    times = {label: samples.median for label, samples in interleaved_times(calls, repeats).items()}
    base = times.pop("fp32 numpy backend")
    print(f"  time for the test set, relative to the fp32 numpy backend (median of {repeats}, "
          f"interleaved): " + ", ".join(f"{label} {t / base:.2f}x" for label, t in times.items()))
    llvm = times["llvm backend int8"]
    print("  llvm backend int8 time / " + ", / ".join(f"{label} {llvm / times[label]:.2f}x"
                                                      for label in sessions))


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())
