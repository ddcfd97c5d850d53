"""Accuracy of post-training quantization against onnxruntime's ``quantize_static``.

    .venv/bin/python bench/quantization.py [--model digits|dwsep|all]

For each model: float accuracy, then every calibration method of ``qc.quantize`` with per-channel
and per-tensor weights, next to onnxruntime's ``quantize_static`` (QDQ, int8, after its
``quant_pre_process``) with MinMax, Entropy and Percentile, run in its default session and in its
exact mode (``session.x64quantprecision=1``). Both quantize the same calibration images
(``calib_x``) and are scored on the same test images (``test_x``): accuracy, top-1 agreement
with the float model, and the SQNR of the logits against float (dB, higher is better).

For the depthwise-separable model (tests/data/models/digits_dwsep.onnx), per-tensor weights
naive, with cross-layer equalization, with bias correction, with both, and per-channel.
Our QDQ graphs run on the numpy backend (the QDQ simulation); integer lowering comes later.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import qcompiler as qc  # noqa: E402
from qcompiler.demo import ORT_METHODS, ort_quantize_static, ort_session  # noqa: E402
from qcompiler.observers import METHODS  # noqa: E402
from qcompiler.report import ErrorStats  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "digits": ROOT / "examples" / "digits_convnet.onnx",
    "dwsep": ROOT / "tests" / "data" / "models" / "digits_dwsep.onnx",
}
DATA = ROOT / "examples" / "digits.npz"


class Scorer:
    """Scores logits against the labels and the float model's logits."""

    def __init__(self, float_logits: np.ndarray, labels: np.ndarray):
        self.ref, self.labels = float_logits, labels

    def row(self, name: str, logits: np.ndarray, seconds: float | None = None) -> str:
        acc = float((logits.argmax(1) == self.labels).mean())
        agree = float((logits.argmax(1) == self.ref.argmax(1)).mean())
        took = "" if seconds is None else f" {seconds:.1f} s |"
        sqnr = ErrorStats.between(self.ref, logits).sqnr_db
        return f"| {name} | {acc:.4f} | {agree:.4f} | {sqnr:.1f} |{took}"


def ours(graph: qc.Graph, calib: np.ndarray, x: np.ndarray, config: qc.QuantConfig):
    start = time.perf_counter()
    q = qc.quantize(graph, calib, config, progress=False)
    took = time.perf_counter() - start
    out = qc.compile(q, backend="numpy").run({graph.inputs[0].name: x})
    return out[graph.outputs[0].name], took


def peer(path: Path, name: str, calib: np.ndarray, x: np.ndarray, label: str,
         per_channel: bool):
    method, extra = ORT_METHODS[label]
    model = ort_quantize_static(path, name, calib, method=method, per_channel=per_channel,
                                extra_options=extra)
    return [ort_session(model, exact_int8=exact).run(None, {name: x})[0]
            for exact in (False, True)]


def bench_model(key: str, data: dict[str, np.ndarray]) -> None:
    path = MODELS[key]
    graph = qc.load_onnx(path)
    name = graph.inputs[0].name
    calib, x, y = data["calib_x"], data["test_x"], data["test_y"]
    ref = qc.compile(qc.optimize(graph)).run({name: x})[graph.outputs[0].name]
    score = Scorer(ref, y)
    print(f"\n### {path.name}: float accuracy {float((ref.argmax(1) == y).mean()):.4f}, "
          f"{len(calib)} calibration images, {len(x)} test images\n")
    print("| quantizer | accuracy | agreement with float | logits SQNR dB | time |")
    print("|---|---|---|---|---|")
    base = qc.QuantConfig()
    for per_channel in (True, False):
        gran = "per-channel" if per_channel else "per-tensor"
        for method in METHODS:
            cfg = replace(base, calibration=method, per_channel=per_channel)
            logits, took = ours(graph, calib, x, cfg)
            print(score.row(f"qcompiler {method}, {gran}", logits, took))
        if key == "dwsep":
            for method in dict.fromkeys((base.calibration, "minmax")):
                for label, extra in (("equalize", {"equalize": True}),
                                     ("bias correction", {"bias_correction": True}),
                                     ("equalize + bias correction",
                                      {"equalize": True, "bias_correction": True})):
                    cfg = replace(base, calibration=method, per_channel=per_channel, **extra)
                    logits, took = ours(graph, calib, x, cfg)
                    print(score.row(f"qcompiler {method}, {gran}, {label}", logits, took))
        for method in ORT_METHODS:
            start = time.perf_counter()
            default, exact = peer(path, name, calib, x, method, per_channel)
            took = time.perf_counter() - start
            print(score.row(f"onnxruntime {method}, {gran}, default session", default, took))
            print(score.row(f"onnxruntime {method}, {gran}, x64quantprecision=1", exact))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    args = parser.parse_args()
    print(f"qcompiler {qc.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    data = dict(np.load(DATA))
    for key in MODELS if args.model == "all" else [args.model]:
        bench_model(key, data)


if __name__ == "__main__":
    sys.exit(main())
