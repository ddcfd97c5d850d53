"""Whole models on the LLVM backend against onnxruntime, everything measured in one run.

    .venv/bin/python bench/llvm_models.py [--quick] [--models digits-b1,digits-b64,resnet50]
                                          [--threads 1,2] [--seconds 15]

Models: the demo model (examples/digits_convnet.onnx, calibrated on ``calib_x`` of
examples/digits.npz) at batch 1 and 64, and the onnx package's light ResNet-50 with random
weights (``qcompiler.testing.light_models``) at 1x3x224x224, calibrated on a few random images.
Each is quantized by ``qc.quantize`` (defaults) and compiled with ``backend="llvm"``; the peer
is onnxruntime fp32 and onnxruntime int8: the QDQ model of its ``quantize_static`` (after
``quant_pre_process``) calibrated on the same images, in its default session and with
``session.x64quantprecision=1``. Both sides run on the same number of threads (the llvm
backend's ``threads``, onnxruntime's ``intra_op_num_threads``, its workers not spin-waiting
between runs: see ``qcompiler.demo.ort_session``); the numpy kernels of nodes that are not
native yet run on one thread.

Printed: per model and thread count, the median latency of each contender (timed interleaved:
every round runs each contender once, in a shuffled order, so load from other work hits all
alike), the ratios llvm time / each onnxruntime time, the runs' spread, and whether the llvm
outputs equal the numpy backend's bit for bit; the accuracy on the demo's 541 test images;
quantize and compile times; each model quantized with ``reduce_range=True`` (7-bit symmetric
weights, on which the compiler proves the u8 x s8 pair instruction safe for every GEMM-path
layer)
against the default one, interleaved with onnxruntime's exact mode at one thread, with the
number of calls that run the pair instruction; the cold quantize + compile of the
ResNet-50-sized model and ``qc.load`` of a saved ``.qcx`` (twice), each in a fresh process;
and the nodes that still run their numpy kernel (``exe.fallbacks()``): while there are any,
the llvm times measure them too.
Compiled code is cached in folders of the run's own (``QCOMPILER_CACHE_DIR``), empty at the
start: compiles are cold, the first load compiles, the second may reuse what the first cached.
Compare ratios measured in one run, not absolute times across runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy kernels on one thread
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import cached_property  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import llvmlite  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from qcompiler.backends.llvm.target import host  # noqa: E402

import qcompiler as qc  # noqa: E402
from qcompiler.demo import (  # noqa: E402
    Samples,
    differing,
    fallback_summary,
    interleaved_times,
    ort_int8_sessions,
    ort_quantize_static,
    ort_session,
)
from qcompiler.testing.light_models import light_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits_convnet.onnx"
DIGITS_DATA = ROOT / "examples" / "digits.npz"
CASES = {"digits-b1": ("digits", 1), "digits-b64": ("digits", 64), "resnet50": ("resnet50", 1)}
RESNET_SHAPE = (1, 3, 224, 224)
MIN_RUNS, MAX_RUNS = 10, 2000


# -- the models --------------------------------------------------------------------------------


@dataclass
class Model:
    """A float model, its int8 graph from ``qc.quantize`` and onnxruntime's int8 QDQ model,
    both calibrated on ``calib``; ``images`` are what it is timed on."""

    name: str
    onnx_model: onnx.ModelProto
    graph: qc.Graph
    calib: np.ndarray  # calibration images, stacked along the batch axis
    images: np.ndarray
    quantize_seconds: float = 0.0

    @property
    def input(self) -> str:
        return self.graph.inputs[0].name

    @property
    def output(self) -> str:
        return self.graph.outputs[0].name

    @cached_property
    def int8(self) -> qc.Graph:
        start = time.perf_counter()
        q = self.quantize()
        self.quantize_seconds = time.perf_counter() - start
        return q

    def quantize(self, config: qc.QuantConfig | None = None) -> qc.Graph:
        """``qc.quantize`` calibrated on ``calib`` (a symbolic batch: one batch, as the demo)."""
        batch = self.fixed_batch or len(self.calib)
        return qc.quantize(self.graph, [{self.input: self.calib[i:i + batch]}
                                        for i in range(0, len(self.calib), batch)], config,
                           progress=False)

    @property
    def fixed_batch(self) -> int | None:
        first = self.graph.inputs[0].shape[0]
        return first if isinstance(first, int) else None

    @cached_property
    def ort_int8(self) -> onnx.ModelProto:
        if self.fixed_batch is None:
            return ort_quantize_static(self.onnx_model, self.input, self.calib)
        return ort_quantize_static(self.onnx_model, self.input, self.calib,
                                   batch=self.fixed_batch)

    @cached_property
    def numpy_int8(self) -> qc.Executable:
        return qc.compile(self.int8, backend="numpy")


def digits_model() -> Model:
    data = dict(np.load(DIGITS_DATA))
    graph = qc.optimize(qc.load_onnx(DIGITS))
    return Model("digits_convnet", onnx.load(DIGITS), graph, data["calib_x"], data["test_x"])


def resnet_model(calib_images: int) -> Model:
    model = light_model("resnet50")
    rng = np.random.default_rng(1)
    images = rng.random((calib_images + 1, *RESNET_SHAPE[1:]), dtype=np.float32)
    return Model("light ResNet-50, random weights", model, qc.from_onnx(model), images[1:],
                 images[:1])


# -- measuring ---------------------------------------------------------------------------------


def compile_llvm(q: qc.Graph, feeds: dict[str, np.ndarray], threads: int) -> tuple[Any, float]:
    """The llvm executable of ``q`` with its program for these feeds' shapes built, and the
    seconds that took (a graph with a symbolic batch compiles per shape set)."""
    start = time.perf_counter()
    exe = qc.compile(q, backend="llvm", threads=threads)
    exe.program(tuple(tuple(feeds[spec.name].shape) for spec in exe.inputs))
    return exe, time.perf_counter() - start


def timed(calls: dict[str, Callable[[], Any]], seconds: float) -> dict[str, Samples]:
    """``interleaved_times`` with as many rounds as fit in ``seconds`` (from the time of a
    warm-up round), within MIN_RUNS and MAX_RUNS."""
    warm = interleaved_times(calls, 1)
    round_seconds = sum(s.median for s in warm.values())
    runs = int(min(MAX_RUNS, max(MIN_RUNS, seconds / max(round_seconds, 1e-9))))
    return interleaved_times(calls, runs, warmup=2)


@dataclass
class Row:
    case: str
    threads: int
    times: dict[str, Samples]
    wrong: int  # llvm output elements that differ from the numpy backend's
    size: int
    compile_seconds: float

    def cells(self) -> str:
        llvm = self.times["llvm int8"].median
        ms = " | ".join(f"{s.median * 1e3:.3f}" for s in self.times.values())
        ratios = " | ".join(f"{llvm / self.times[k].median:.2f}x" for k in self.times
                            if k != "llvm int8")
        noise = ", ".join(f"{s.spread:.0%}" for s in self.times.values())
        runs = len(self.times["llvm int8"].times)
        exact = "yes" if not self.wrong else f"NO ({self.wrong} of {self.size} differ)"
        return (f"| {self.case} | {self.threads} | {ms} | {ratios} | {runs} | {noise} | "
                f"{exact} |")


def bench_case(case: str, model: Model, batch: int, threads: int, seconds: float,
               executables: dict[str, Any]) -> Row:
    """``case``: ``model`` at ``batch`` on ``threads`` threads, the llvm executable against
    onnxruntime fp32 and int8 (both sessions); the first executable per model goes into
    ``executables`` for the list of fallbacks."""
    feeds = {model.input: model.images[:batch]}
    exe, compile_seconds = compile_llvm(model.int8, feeds, threads)
    ours = exe.run(feeds)[model.output]
    reference = model.numpy_int8.run(feeds)[model.output]
    executables.setdefault(model.name, exe)
    int8 = ort_int8_sessions(model.ort_int8, threads)
    sessions = {"onnxruntime fp32": ort_session(model.onnx_model, threads=threads),
                **{f"onnxruntime int8 {mode}": s for mode, s in int8.items()}}
    calls: dict[str, Callable[[], Any]] = {"llvm int8": lambda: exe.run(feeds)}
    calls.update({label: (lambda s=s: s.run(None, feeds)) for label, s in sessions.items()})
    return Row(case, threads, timed(calls, seconds), differing(ours, reference), ours.size,
               compile_seconds)


def digits_accuracy(model: Model) -> None:
    """Accuracy on the demo's test images: fp32, llvm int8 (and its bit-exactness with the
    numpy backend), onnxruntime fp32 and int8 in both sessions."""
    data = dict(np.load(DIGITS_DATA))
    x, y = data["test_x"], data["test_y"]
    feeds = {model.input: x}
    fp32 = qc.compile(model.graph, backend="numpy").run(feeds)[model.output]
    llvm, _ = compile_llvm(model.int8, feeds, 1)
    ours = llvm.run(feeds)[model.output]
    wrong = differing(ours, model.numpy_int8.run(feeds)[model.output])
    outputs = {"qcompiler fp32 (numpy backend)": fp32,
               "qcompiler int8 (llvm backend)": ours,
               "onnxruntime fp32": ort_session(model.onnx_model).run(None, feeds)[0]}
    for mode, session in ort_int8_sessions(model.ort_int8).items():
        outputs[f"onnxruntime int8, {mode}"] = session.run(None, feeds)[0]
    print(f"\n### Accuracy on the {len(x)} test images of {DIGITS_DATA.name}\n")
    print(f"llvm int8 outputs {'equal' if not wrong else 'DIFFER FROM'} the numpy backend's "
          f"bit for bit ({ours.size} logits{'' if not wrong else f', {wrong} differ'}).\n")
    narrow, _ = compile_llvm(model.quantize(qc.QuantConfig(reduce_range=True)), feeds, 1)
    outputs["qcompiler int8, reduce_range=True (llvm backend)"] = narrow.run(feeds)[model.output]
    print("| runner | accuracy | agreement with fp32 |")
    print("|---|---|---|")
    for label, out in outputs.items():
        print(f"| {label} | {float((out.argmax(1) == y).mean()):.4f} | "
              f"{float((out.argmax(1) == fp32.argmax(1)).mean()):.4f} |")


def kernel_kinds(exe: Any, feeds: dict[str, np.ndarray]) -> Counter:
    """How many calls of each kernel (``qc_int_conv_pmaddubsw``...) the program for these
    feeds makes (``exe.kernels``): the per-layer decisions the compiler made."""
    shapes = tuple(tuple(feeds[spec.name].shape) for spec in exe.inputs)
    return Counter(name for names in exe.kernels(shapes).values() for name in names)


def reduce_range_speed(case: str, model: Model, batch: int, seconds: float) -> None:
    """One table row: the llvm executable of ``model`` quantized with ``reduce_range=True``
    (7-bit symmetric weights: every GEMM-path layer's pairs fit the u8 x s8 pair instruction)
    against
    the default one, timed interleaved with onnxruntime's exact-mode int8 on one thread."""
    feeds = {model.input: model.images[:batch]}
    narrow_graph = model.quantize(qc.QuantConfig(reduce_range=True))
    narrow, _ = compile_llvm(narrow_graph, feeds, 1)
    default, _ = compile_llvm(model.int8, feeds, 1)
    wrong = differing(narrow.run(feeds)[model.output],
                      qc.compile(narrow_graph, backend="numpy").run(feeds)[model.output])
    exact = ort_int8_sessions(model.ort_int8, 1)["x64quantprecision=1"]
    times = timed({"default": lambda: default.run(feeds),
                   "reduce_range": lambda: narrow.run(feeds),
                   "ort": lambda: exact.run(None, feeds)}, seconds)
    kinds = {name: kernel_kinds(exe, feeds) for name, exe in (("default", default),
                                                             ("narrow", narrow))}
    pairs = sum(n for k, n in kinds["narrow"].items() if k.endswith("pmaddubsw"))
    before = sum(n for k, n in kinds["default"].items() if k.endswith("pmaddubsw"))
    ms = {k: v.median * 1e3 for k, v in times.items()}
    print(f"| {case} | {ms['default']:.3f} | {ms['reduce_range']:.3f} | "
          f"{ms['reduce_range'] / ms['default']:.2f}x | {ms['reduce_range'] / ms['ort']:.2f}x | "
          f"{pairs} (default: {before}) | {'yes' if not wrong else f'NO ({wrong} differ)'} |")


# -- fresh processes: cold build and loading ---------------------------------------------------


def cold_resnet(calib_images: int) -> dict[str, float]:
    """In a fresh process: seconds to import the light ResNet-50, quantize and compile it."""
    marks = {"start": time.perf_counter()}
    model = resnet_model(calib_images)
    marks["ONNX load, random weights, qc.from_onnx"] = time.perf_counter()
    q = model.int8
    marks["qc.quantize"] = time.perf_counter()
    compile_llvm(q, {model.input: model.images}, 1)
    marks["llvm compile"] = time.perf_counter()
    names = list(marks)
    return {b: marks[b] - marks[a] for a, b in zip(names, names[1:])}


def load_ready(path: str, feeds: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """In a fresh process: seconds of ``qc.load`` plus building the program for ``feeds``'
    shapes (ready to run), and the loaded executable's first output on them."""
    start = time.perf_counter()
    exe = qc.load(path)
    exe.program(tuple(tuple(feeds[spec.name].shape) for spec in exe.inputs))
    seconds = time.perf_counter() - start
    return seconds, next(iter(exe.run(feeds).values()))


CACHE = "QCOMPILER_CACHE_DIR"  # where the llvm backend keeps compiled code ("off": nowhere)


def use_cache(folder: str) -> None:
    os.environ[CACHE] = folder


def in_fresh_process(cache: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new Python process whose llvm backend caches compiled code in
    ``cache``."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=use_cache, initargs=(cache,)) as pool:
        return pool.submit(fn, *args).result()


def save_and_load(model: Model, batch: int) -> None:
    """Save the llvm executable, then load it in two fresh processes sharing a cache that
    starts empty: the first load compiles (and fills the cache), the second may reuse it."""
    feeds = {model.input: model.images[:batch]}
    exe, _ = compile_llvm(model.int8, feeds, 1)
    expected = exe.run(feeds)[model.output]
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp, "model.qcx"))
        start = time.perf_counter()
        exe.save(path)
        save = time.perf_counter() - start
        size = Path(path).stat().st_size
        cache = str(Path(tmp, "cache"))
        loads = [in_fresh_process(cache, load_ready, path, feeds) for _ in range(2)]
    same = all(not differing(out, expected) for _, out in loads)
    print(f"| {model.name}, batch {batch} | {size / 1024:.0f} KiB | {save:.2f} | "
          f"{loads[0][0]:.2f} | {loads[1][0]:.2f} | {'yes' if same else 'NO'} |")


# -- the report --------------------------------------------------------------------------------


def print_fallbacks(executables: dict[str, Any]) -> None:
    print("\n### Nodes still on numpy kernels (exe.fallbacks())\n")
    for name, exe in executables.items():
        print(f"- {name}: {fallback_summary(exe)}")
        groups: dict[tuple[str, str], list[str]] = {}
        for fallback in exe.fallbacks():
            groups.setdefault((fallback.node.op, fallback.reason), []).append(fallback.node.name)
        for (op, reason), nodes in groups.items():
            print(f"  - {op} ({reason}): {', '.join(nodes)}")


def thread_counts(text: str) -> list[int]:
    try:
        counts = [int(t) for t in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"thread counts are whole numbers >= 1, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES),
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2],
                        help="thread counts, comma-separated (default 1,2)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="timing budget per model and thread count")
    parser.add_argument("--calib-images", type=int, default=8,
                        help="random calibration images for the ResNet-50-sized model")
    parser.add_argument("--quick", action="store_true",
                        help="one thread, 1 s per timing, 2 calibration images")
    args = parser.parse_args()
    cases = args.models.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    # compiled code goes to an empty cache of this run's own: compile times are cold, and the
    # user's cache is left alone
    with tempfile.TemporaryDirectory(prefix="qcompiler-bench-cache-") as cache:
        use_cache(cache)
        report(cases, [1] if args.quick else args.threads, 1.0 if args.quick else args.seconds,
               2 if args.quick else args.calib_images, cache)


def report(cases: list[str], threads: list[int], seconds: float, calib_images: int,
           cache: str) -> None:
    target = host()
    features = ", ".join(f for f in ("avx2", "fma", "avx512f", "avxvnni", "avx512vnni")
                         if target.has(f))
    print(f"qcompiler {qc.__version__}, numpy {np.__version__}, onnxruntime {ort.__version__}, "
          f"llvmlite {llvmlite.__version__}; {platform.machine()}, LLVM CPU {target.cpu} "
          f"({features}); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")

    models: dict[str, Model] = {}
    for case in cases:
        family = CASES[case][0]
        if family not in models:
            models[family] = digits_model() if family == "digits" else resnet_model(calib_images)

    executables: dict[str, Any] = {}
    rows = [bench_case(case, models[CASES[case][0]], CASES[case][1], n, seconds, executables)
            for case in cases for n in threads]
    print("\n### Latency: median ms, and llvm time / onnxruntime time\n")
    print("| model | threads | llvm int8 ms | onnxruntime fp32 ms | onnxruntime int8 default ms "
          "| onnxruntime int8 x64quantprecision=1 ms | llvm / ort fp32 | llvm / ort int8 default "
          "| llvm / ort int8 x64quantprecision=1 | runs | spread | llvm == numpy backend |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.cells())
    print("\nspread: interquartile range / median of each contender's runs, in the order of "
          "the ms columns.")

    print("\n### Quantize and compile (this process, code cache empty at the start)\n")
    print("| model | threads | qc.quantize s | llvm compile s (qc.compile + program) |")
    print("|---|---|---|---|")
    for row in rows:
        model = models[CASES[row.case][0]]
        print(f"| {row.case} | {row.threads} | {model.quantize_seconds:.2f} | "
              f"{row.compile_seconds:.3f} |")

    if "digits" in models:
        digits_accuracy(models["digits"])

    print("\n### reduce_range=True: what the u8 x s8 pair instruction buys (one thread, "
          "timed interleaved)\n")
    print("| model | llvm int8 ms | llvm int8 reduce_range ms | reduce_range / default "
          "| reduce_range / ort int8 x64quantprecision=1 | calls on the pair instruction "
          "| llvm == numpy backend |")
    print("|---|---|---|---|---|---|---|")
    for case in dict.fromkeys(cases):
        reduce_range_speed(case, models[CASES[case][0]], CASES[case][1], seconds)

    if "resnet50" in models:
        cold = in_fresh_process(str(Path(cache, "cold")), cold_resnet, calib_images)
        print(f"\n### Cold build of the ResNet-50-sized model (fresh process, empty code cache, "
              f"{calib_images} calibration images)\n")
        print(" + ".join(f"{step} {s:.2f} s" for step, s in cold.items())
              + f" = {sum(cold.values()):.2f} s")

    print("\n### Save and load (each load in a fresh process: qc.load + program built; the "
          "first with an empty code cache, the second with the cache the first filled)\n")
    print("| model | .qcx size | exe.save s | first qc.load s | second qc.load s | "
          "loaded outputs == compiled |")
    print("|---|---|---|---|---|---|")
    for model in models.values():
        save_and_load(model, 1)

    print_fallbacks(executables)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    sys.exit(main())
