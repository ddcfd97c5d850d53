"""The LLVM backend's exact int8 GEMM at one thread: GOPS (2*M*N*K / time) against the exact
peak measured in the same run and against numpy's float32 matmul of the same sizes.

    .venv/bin/python bench/llvm_gemm.py [--repeats 30]

The exact peak is a loop of independent ``vpmaddwd`` + ``vpaddd`` on registers only (16-bit
pair products summed in int32: the kernel's inner step without its loads), so it is the
ceiling of any exact int8 GEMM on this CPU; the GEMM is also compiled for baseline x86-64 (SSE2
``pmaddwd``). numpy runs on one BLAS thread. Each figure is the median of ``--repeats`` timed
calls of the kernel alone (operands bound once, the weights packed beforehand).

The requantizing GEMM (IntMatMul's codes in one call: per-column rescale, zero point and clamp
in the tile store) is timed on the same operands in both roundings, next to the int32 output:
the difference is what the fused epilogue costs. The pair GEMM (``gemm.PAIRS``: the u8 x s8
pair instruction, which the compiler picks for a layer whose weights ``pairs_fit``, as
symmetric ``reduce_range`` weights in [-64, 63] always do) is timed on such weights, against the
saturating peak and against the exact GEMM on the same operands.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one thread on both sides
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from qcompiler.backends.llvm import gemm  # noqa: E402
from qcompiler.backends.llvm.target import Jit, generic, host  # noqa: E402

# M x K x N: a square product, a 3x3 conv layer over 8x8 and 28x28 pixels (K = 9 * 128), a
# 1x1 conv over 56x56 pixels, a fully connected layer at batch 1
SIZES = [(256, 256, 256), (64, 1152, 128), (784, 1152, 128), (3136, 64, 256), (1, 1024, 1024)]
ISSUE_PEAK = 166.0  # GOPS: the exact peak the issue quotes for this machine
CHAINS = 12  # independent accumulators in the peak loop: more than the latency needs


# the register-only loops: per step and chain, the pair product of the accumulator's bits with
# a constant, and the int32 add (32 int8 multiply-adds = 64 ops, or 32 for pmaddwd alone)
PEAK_STEPS = {
    "exact (vpmaddwd + vpaddd)": (32, [
        "  %x{i}.w = bitcast <8 x i32> %x{i} to <16 x i16>",
        "  %p{i} = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> %x{i}.w, <16 x i16> %m)"]),
    "saturating (vpmaddubsw + vpmaddwd by ones + vpaddd)": (64, [
        "  %x{i}.b = bitcast <8 x i32> %x{i} to <32 x i8>",
        "  %m.b{i} = bitcast <16 x i16> %m to <32 x i8>",
        "  %t{i} = call <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8> %x{i}.b, "
        "<32 x i8> %m.b{i})",
        "  %p{i} = call <8 x i32> @llvm.x86.avx2.pmadd.wd(<16 x i16> %t{i}, <16 x i16> <"
        + ", ".join(["i16 1"] * 16) + ">)"]),
}


def peak_ir(step: list[str], chains: int) -> str:
    """``i64 peak(i64 steps, ptr b)``: ``chains`` independent ``acc += step(acc)`` per loop
    step, all summed at the end so that none is dead."""
    v = "<8 x i32>"
    start, phis, body, total = [], [], [], []
    for i in range(chains):
        start += [f"  %b{i}.at = getelementptr {v}, ptr %b, i64 {i}",
                  f"  %init{i} = load {v}, ptr %b{i}.at, align 2"]
        phis.append(f"  %x{i} = phi {v} [ %init{i}, %entry ], [ %y{i}, %loop ]")
        body += [line.format(i=i) for line in step] + [f"  %y{i} = add {v} %p{i}, %x{i}"]
        total.append(f"  %s{i} = add {v} %s{i - 1}, %y{i}" if i else f"  %s0 = add {v} %y0, %y0")
    lines = "\n".join
    return f"""
declare {v} @llvm.x86.avx2.pmadd.wd(<16 x i16>, <16 x i16>)
declare <16 x i16> @llvm.x86.avx2.pmadd.ub.sw(<32 x i8>, <32 x i8>)

define i64 @peak(i64 %steps, ptr %b) {{
entry:
  %m = load <16 x i16>, ptr %b, align 2
{lines(start)}
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]
{lines(phis)}
{lines(body)}
  %i.next = add i64 %i, 1
  %more = icmp slt i64 %i.next, %steps
  br i1 %more, label %loop, label %exit
exit:
{lines(total)}
  %wide = bitcast {v} %s{chains - 1} to i256
  %low = trunc i256 %wide to i64
  ret i64 %low
}}
"""


def median_time(call, repeats: int) -> float:
    """The median of ``repeats`` timed calls (after one warm-up), each at least 1 ms long
    (calls repeated within a timing when faster)."""
    call()
    start = time.perf_counter()
    call()
    inner = max(1, int(1e-3 / max(time.perf_counter() - start, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            call()
        times.append((time.perf_counter() - start) / inner)
    return float(np.median(times))


def peak(step: list[str], ops: int, repeats: int) -> float:
    """GOPS of a register-only loop of ``step`` (``ops`` per step and chain)."""
    jit = Jit(host())
    jit.add(peak_ir(step, CHAINS), "peak")
    fn = jit.function("peak", ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
    values = np.arange(16 * CHAINS, dtype=np.int16) % 7
    steps = 200_000
    seconds = median_time(lambda: fn(steps, values.ctypes.data), repeats)
    return ops * CHAINS * steps / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    target = host()
    print(f"$ {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"numpy {np.__version__}, {platform.machine()}, LLVM CPU {target.cpu}, AVX2 "
          f"{target.has('avx2')}; one thread; median of {args.repeats}")
    if not target.has("avx2"):
        sys.exit("this benchmark measures the AVX2 peak: the host has no AVX2")
    peaks = {name: peak(step, ops, args.repeats) for name, (ops, step) in PEAK_STEPS.items()}
    for name, gops in peaks.items():
        print(f"register-only peak, {name}: {gops:.1f} GOPS")
    exact = peaks[next(iter(PEAK_STEPS))]
    print(f"(the issue quotes {ISSUE_PEAK:.0f} GOPS exact, 205 saturating, for this machine)")
    kernels = {name: gemm.Gemm(Jit(make()), signed=False)
               for name, make in (("host", host), ("x86-64", generic))}
    fused_jit = Jit(host())
    fused = {rounding: gemm.Gemm(fused_jit, signed=False, rounding=rounding)
             for rounding in gemm.ROUNDINGS}
    pairs = gemm.Gemm(fused_jit, signed=False, product=gemm.PAIRS)
    saturating = peaks[list(PEAK_STEPS)[1]]
    rng = np.random.default_rng(0)
    print("| M x K x N | llvm host GOPS | % of measured exact peak | % of issue peak "
          "| llvm x86-64 GOPS | numpy fp32 GOPS | llvm host / numpy fp32 "
          "| fused fixed_point GOPS | fused float GOPS | pair GEMM GOPS (reduce_range weights) "
          "| % of measured saturating peak | exact GEMM on the same weights GOPS "
          "| pair / exact time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, k, n in SIZES:
        a = rng.integers(0, 256, (m, k)).astype(np.uint8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        weights = gemm.pack_weights(b, bias=rng.integers(-999, 999, n).astype(np.int32))
        out = np.empty((m, n), np.int32)
        ops = 2 * m * n * k
        gops = {name: ops / median_time(kernel.bind(a, weights, out), args.repeats) / 1e9
                for name, kernel in kernels.items()}
        af, bf, cf = a.astype(np.float32), b.astype(np.float32), np.empty((m, n), np.float32)
        blas = ops / median_time(lambda af=af, bf=bf, cf=cf: np.matmul(af, bf, out=cf),
                                 args.repeats) / 1e9
        multiplier = 2.0 ** rng.uniform(-16, -8, n)
        codes = np.empty((m, n), np.uint8)
        fused_gops = {
            rounding: ops / median_time(kernel.bind(a, weights, codes, requant=(
                gemm.requantization(multiplier, np.uint8(128), rounding=rounding, n=n))),
                args.repeats) / 1e9
            for rounding, kernel in fused.items()}
        small = rng.integers(-64, 64, (k, n)).astype(np.int8)  # reduce_range's weights
        pair_gops = ops / median_time(pairs.bind(a, gemm.pack_weights(small, product=gemm.PAIRS),
                                                 out), args.repeats) / 1e9
        small_gops = ops / median_time(kernels["host"].bind(a, gemm.pack_weights(small), out),
                                       args.repeats) / 1e9
        print(f"| {m} x {k} x {n} | {gops['host']:.1f} | {100 * gops['host'] / exact:.0f}% | "
              f"{100 * gops['host'] / ISSUE_PEAK:.0f}% | {gops['x86-64']:.1f} | {blas:.1f} | "
              f"{gops['host'] / blas:.2f}x | {fused_gops['fixed_point']:.1f} | "
              f"{fused_gops['float']:.1f} | {pair_gops:.1f} | {100 * pair_gops / saturating:.0f}% "
              f"| {small_gops:.1f} | {small_gops / pair_gops:.2f}x |")


if __name__ == "__main__":
    main()
