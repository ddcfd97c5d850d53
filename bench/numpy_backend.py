"""Time the numpy backend against onnxruntime (fp32, one thread) in the same run.

    .venv/bin/python bench/numpy_backend.py [--repeats 30]

Prints, for each model, the median time of both and the ratio numpy-backend / onnxruntime
(lower is better; the target is at most 3x, because calibration runs on this backend), for the
graph as imported and after the float pipeline ``canonicalize,fold-bn,fuse``. Machines are
noisy: compare ratios measured in one run, not absolute times across runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread on both sides
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import qcompiler as qc  # noqa: E402
from qcompiler.demo import median_time, ort_session  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import zoo  # noqa: E402  (the test suite's model builders)


def bench(name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray], repeats: int) -> None:
    graph = qc.from_onnx(model)
    sess = ort_session(model)
    theirs = sess.run(None, feeds)
    t_ort = median_time(lambda: sess.run(None, feeds), repeats)
    cells = []
    for g in (graph, qc.optimize(graph)):
        exe = qc.compile(g, backend="numpy")
        ours = exe.run(feeds)
        err = max(float(np.max(np.abs(ours[o.name] - t))) for o, t in zip(g.outputs, theirs))
        t_ours = median_time(lambda exe=exe: exe.run(feeds), repeats)
        cells.append(f"{len(g.nodes)} | {t_ours * 1e3:.2f} | {t_ours / t_ort:.2f}x | {err:.1e}")
    print(f"| {name} | {t_ort * 1e3:.2f} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, "
          f"median of {args.repeats} runs, one thread each")
    print("| model | onnxruntime ms | imported: ops | ms | ratio | max abs diff "
          "| optimized: ops | ms | ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = [
        ("ResNet-18 layout, 224x224, batch 1", zoo.resnet_style(width=64, image_size=224)),
        ("resnet_style 64x64, batch 32 (calibration-sized)", zoo.resnet_style(batch=32)),
        ("resnet_style 64x64, batch 1", zoo.resnet_style()),
    ]
    for name, model in cases:
        x = rng.standard_normal(_input_shape(model)).astype(np.float32)
        bench(name, model, {model.graph.input[0].name: x}, args.repeats)
    digits = onnx.load(str(resources.files("qcompiler.examples") / "digits_convnet.onnx"))
    with np.load(str(resources.files("qcompiler.examples") / "digits.npz")) as data:
        test_x = data["test_x"]
    bench("digits_convnet (541 images)", digits, {"image": test_x}, args.repeats)


def _input_shape(model: onnx.ModelProto) -> list[int]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.dim_value > 0 else 1 for d in dims]


if __name__ == "__main__":
    main()
