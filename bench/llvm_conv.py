"""The LLVM backend's IntConv kernels on ResNet-50's (and a MobileNet's depthwise) layer shapes:
GOPS (2 * N*M*OH*OW * C/group*KH*KW / time) at one and two threads against the exact peak
measured in the same run (``llvm_gemm.py``'s register-only ``vpmaddwd`` loop) and against the
numpy backend's IntConv on the same node.

    .venv/bin/python bench/llvm_conv.py [--repeats 10] [--weights full|reduce_range]

Each layer is one IntConv node (uint8 activations, int8 per-channel weights, bias, fixed-point
requantization; one also with the fused residual) compiled by the LLVM runtime; a figure is the
median of ``--repeats`` timed runs of the whole program (its Python call included, well below
1% at these sizes). The kernel column names the function the layer runs (``pmaddwd``: im2col
and the GEMM; ``winograd``: F(2x2, 3x3), whose GOPS, counted as the direct convolution's
multiply-adds, can exceed the peak; ``pointwise``: a 1x1 stride-1 layer as channels x pixels;
``depthwise_i16``). For a 3x3 or 1x1 stride-1 layer the other path is timed too at one thread
(Winograd's channel threshold moved, or the pointwise kernel's test replaced, for that
compile), so the table shows the choice the emitter makes against the one it does not.
``--weights reduce_range`` draws 7-bit weights ([-64, 63], as ``QuantConfig(reduce_range=True)``
gives with symmetric weights, the default): their pairs always fit the u8 x s8 pair
instruction, so the GEMM path runs it (``pmaddubsw``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread on both sides
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from llvm_gemm import PEAK_STEPS, median_time, peak  # noqa: E402
from qcompiler.backends.llvm import bound  # noqa: E402
from qcompiler.backends.llvm.kernels import pointwise, winograd  # noqa: E402
from qcompiler.backends.llvm.runtime import Program  # noqa: E402
from qcompiler.backends.llvm.target import host  # noqa: E402

import qcompiler as qc  # noqa: E402
from qcompiler.graph import Graph  # noqa: E402
from qcompiler.types import TensorType  # noqa: E402

# name: (C, H, W, M, kernel, stride, pad, group, residual)
LAYERS = {
    "conv1 7x7/2 3->64, 224x224": (3, 224, 224, 64, 7, 2, 3, 1, False),
    "3x3 64->64, 56x56": (64, 56, 56, 64, 3, 1, 1, 1, False),
    "1x1 64->256, 56x56": (64, 56, 56, 256, 1, 1, 0, 1, False),
    "1x1 64->256, 56x56 + residual": (64, 56, 56, 256, 1, 1, 0, 1, True),
    "1x1 256->64, 56x56": (256, 56, 56, 64, 1, 1, 0, 1, False),
    "1x1 256->1024, 14x14": (256, 14, 14, 1024, 1, 1, 0, 1, False),
    "1x1 2048->512, 7x7": (2048, 7, 7, 512, 1, 1, 0, 1, False),
    "3x3 256->256, 14x14": (256, 14, 14, 256, 3, 1, 1, 1, False),
    "3x3 3->64, 112x112": (3, 112, 112, 64, 3, 1, 1, 1, False),
    "depthwise 3x3, 112x112x32": (32, 112, 112, 32, 3, 1, 1, 32, False),
}


WEIGHTS = {"full": (-127, 128), "reduce_range": (-64, 64)}  # [low, high) of the int8 weights


def layer(c, h, w, m, k, stride, pad, group, residual,
          weights: str = "full") -> tuple[Graph, list[np.ndarray], int]:
    """The layer as a graph, its inputs and its operation count."""
    rng = np.random.default_rng(0)
    g = Graph("layer")
    x = g.add_input("x", TensorType("u8", (1, c, h, w)))
    inputs = [rng.integers(0, 256, (1, c, h, w)).astype(np.uint8)]
    low, high = WEIGHTS[weights]
    operands = [x, g.add_constant(rng.integers(low, high, (m, c // group, k, k)).astype(np.int8)),
                g.add_constant(2.0 ** rng.uniform(-18, -14, m)), g.add_constant(np.uint8(3)),
                g.add_constant(np.uint8(128)),
                g.add_constant(rng.integers(-999, 999, m).astype(np.int32))]
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if residual:
        z = g.add_input("z", TensorType("u8", (1, m, oh, ow)))
        inputs.append(rng.integers(0, 256, (1, m, oh, ow)).astype(np.uint8))
        operands += [None, z, g.add_constant(np.uint8(120)), g.add_constant(np.float64(0.7))]
    node = g.add_node("IntConv", operands, {"group": group, "strides": (stride, stride),
                                            "pads": (pad,) * 4})
    g.set_outputs([node.outputs[0]])
    return g, inputs, 2 * m * oh * ow * (c // group) * k * k


def other_path(g: Graph, inputs: list[np.ndarray], ops: int, target, kernel: str,
               repeats: int) -> str:
    """For a 3x3 or 1x1 stride-1 layer, the path the emitter did not take, timed at one thread
    (Winograd's channel threshold moved, or the pointwise kernel's test replaced, for the
    compile); "-" for other layers."""
    (node,) = g.nodes
    kernel_shape = tuple(node.inputs[1].shape[2:])
    if kernel not in ("pmaddwd", "pmaddubsw", "winograd", "pointwise") or kernel_shape not in (
            (3, 3), (1, 1)) or tuple(node.attrs.get("strides", (1, 1))) != (1, 1):
        return "-"
    threshold, applies = winograd.MIN_CHANNELS, pointwise.applies
    if kernel_shape == (3, 3):
        winograd.MIN_CHANNELS = 1 if kernel != "winograd" else sys.maxsize
    elif kernel == "pointwise":
        pointwise.applies = lambda geometry: False
    else:  # every pixel count, however many columns of the GEMM's panels it leaves empty
        pointwise.applies = lambda geometry: (geometry.group, geometry.ph, geometry.pw) == (
            1, 0, 0)
    try:
        program = Program(bound(g, tuple(a.shape for a in inputs)), target, 1)
    finally:
        winograd.MIN_CHANNELS, pointwise.applies = threshold, applies
    (_, call), = program.segments[0].calls
    taken = call.function.name.removeprefix("qc_int_conv_").rsplit("_", 1)[0]
    gops = ops / median_time(lambda: program.run(inputs), repeats) / 1e9
    program.close()
    return f"{taken} {gops:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--weights", choices=sorted(WEIGHTS), default="full")
    args = parser.parse_args()
    target = host()
    print(f"$ {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"numpy {np.__version__}, {platform.machine()}, LLVM CPU {target.cpu}; median of "
          f"{args.repeats}; {args.weights} int8 weights {WEIGHTS[args.weights]}")
    ops_per_step, step = next(iter(PEAK_STEPS.values()))  # the exact one
    exact = peak(step, ops_per_step, args.repeats)
    print(f"register-only exact peak (one thread): {exact:.1f} GOPS")
    print("| layer | kernel | GOPS 1 thread | % of exact peak | GOPS 2 threads "
          "| numpy IntConv GOPS | llvm 1 thread / numpy | other path, GOPS 1 thread |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape in LAYERS.items():
        g, inputs, ops = layer(*shape, weights=args.weights)
        gops = {}
        for threads in (1, 2):
            program = Program(bound(g, tuple(a.shape for a in inputs)), target, threads)
            assert not program.fallbacks, program.fallbacks
            (_, call), = program.segments[0].calls
            kernel = call.function.name.removeprefix("qc_int_conv_").rsplit("_", 1)[0]
            gops[threads] = ops / median_time(lambda p=program, i=inputs: p.run(i),
                                              args.repeats) / 1e9
            program.close()
        reference = qc.compile(g)
        feed = {v.name: a for v, a in zip(g.inputs, inputs, strict=True)}
        numpy_gops = ops / median_time(lambda r=reference, f=feed: r.run(f),
                                       max(3, args.repeats // 3)) / 1e9
        other = other_path(g, inputs, ops, target, kernel, args.repeats)
        print(f"| {name} | {kernel} | {gops[1]:.1f} | {100 * gops[1] / exact:.0f}% | "
              f"{gops[2]:.1f} | "
              f"{numpy_gops:.2f} | {gops[1] / numpy_gops:.1f}x | {other} |")


if __name__ == "__main__":
    main()
