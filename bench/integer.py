"""The integer numpy backend on the digits model: speed against the float numpy backend and
onnxruntime in the same run, and accuracy.

    .venv/bin/python bench/integer.py [--repeats 20]

``qc.quantize`` with the default config lowers the model to integer ops (``lower-int``); the
numpy backend runs them bit-exactly (integer products through BLAS, in float32 where every
partial sum provably stays below 2^24, else float64). Printed per batch
size: the median time of the float graph and of the integer graph (both roundings) on the numpy
backend, of onnxruntime fp32 and of onnxruntime's int8 model (``quantize_static``, QDQ) in its
default session and with ``session.x64quantprecision=1``, each as a ratio to the float numpy
backend (the target for the integer graph is at most 2x), then test accuracy. One thread on
every side; compare ratios measured in one run, not absolute times across runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread on both sides
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import qcompiler as qc  # noqa: E402
from qcompiler.demo import median_time, ort_quantize_static, ort_session  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits_convnet.onnx"
DATA = dict(np.load(ROOT / "examples" / "digits.npz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    graph = qc.optimize(qc.load_onnx(MODEL))
    calib = [DATA["calib_x"]]
    runners = {"numpy fp32": qc.compile(graph, backend="numpy")}
    for rounding in ("fixed_point", "float"):
        q = qc.quantize(graph, calib, qc.QuantConfig(rounding=rounding), progress=False)
        islands = q.float_islands()
        assert not islands, f"the digits model is not fully integer: {islands}"
        runners[f"numpy integer ({rounding})"] = qc.compile(q, backend="numpy")
    peer = ort_quantize_static(onnx.load(MODEL), "image", DATA["calib_x"])
    sessions = {"onnxruntime fp32": ort_session(MODEL),
                "onnxruntime int8 default": ort_session(peer),
                "onnxruntime int8 x64quantprecision=1": ort_session(peer, exact_int8=True)}
    x, y = DATA["test_x"], DATA["test_y"]
    calls = {name: (lambda feeds, exe=exe: exe.run(feeds)["logits"])
             for name, exe in runners.items()}
    calls.update({name: (lambda feeds, s=s: s.run(None, feeds)[0]) for name, s in sessions.items()})
    print(f"numpy {np.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, "
          f"median of {args.repeats} runs, one thread each; digits_convnet, "
          f"{len(x)} test images")
    batches = (1, 64, len(x))
    print("| runner | accuracy | " + " | ".join(f"batch {b}: ms | vs numpy fp32"
                                                for b in batches) + " |")
    print("|---|---|" + "---|---|" * len(batches))
    base = {}
    for name, call in calls.items():
        accuracy = float((call({"image": x}).argmax(1) == y).mean())
        cells = []
        for b in batches:
            feeds = {"image": x[:b]}
            t = median_time(lambda call=call, feeds=feeds: call(feeds), args.repeats)
            base.setdefault(b, t)
            cells.append(f"{t * 1e3:.3f} | {t / base[b]:.2f}x")
        print(f"| {name} | {accuracy:.4f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
