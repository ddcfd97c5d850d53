"""The LLVM backend's exact int8 GEMM at one thread: GOPS (2*M*N*K / time) against the exact
peak measured in the same run and against numpy's float32 matmul of the same sizes.

    .venv/bin/python bench/llvm_gemm.py [--repeats 30]

The exact peak is a loop of independent ``vpmaddwd`` + ``vpaddd`` on registers only (16-bit
pair products summed in int32: the kernel's inner step without its loads), so it is the
ceiling of any exact int8 GEMM on this CPU; the GEMM is also compiled for baseline x86-64 (SSE2
``pmaddwd``). numpy runs on one BLAS thread. Each figure is the median of ``--repeats`` timed
calls of the kernel alone (operands bound once, the weights packed beforehand).
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


def peak_ir(chains: int) -> str:
    """``i64 peak(i64 steps, ptr b)``: ``chains`` independent ``acc += pmaddwd(acc, b)`` per
    step, all summed at the end so that none is dead."""
    v, w = "<8 x i32>", "<16 x i16>"
    start, phis, step, total = [], [], [], []
    for i in range(chains):
        start += [f"  %b{i}.at = getelementptr {w}, ptr %b, i64 {i}",
                  f"  %init{i} = load {v}, ptr %b{i}.at, align 2"]
        phis.append(f"  %x{i} = phi {v} [ %init{i}, %entry ], [ %y{i}, %loop ]")
        step += [f"  %x{i}.w = bitcast {v} %x{i} to {w}",
                 f"  %p{i} = call {v} @llvm.x86.avx2.pmadd.wd({w} %x{i}.w, {w} %m)",
                 f"  %y{i} = add {v} %p{i}, %x{i}"]
        total.append(f"  %s{i} = add {v} %s{i - 1}, %y{i}" if i else f"  %s0 = add {v} %y0, %y0")
    lines = "\n".join
    return f"""
declare {v} @llvm.x86.avx2.pmadd.wd({w}, {w})

define i64 @peak(i64 %steps, ptr %b) {{
entry:
  %m = load {w}, ptr %b, align 2
{lines(start)}
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]
{lines(phis)}
{lines(step)}
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


def exact_peak(repeats: int) -> float:
    """GOPS of the register-only ``vpmaddwd`` + ``vpaddd`` loop (32 ops each)."""
    jit = Jit(host())
    jit.add(peak_ir(CHAINS), "peak")
    fn = jit.function("peak", ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
    values = np.arange(16 * CHAINS, dtype=np.int16) % 7
    steps = 200_000
    seconds = median_time(lambda: fn(steps, values.ctypes.data), repeats)
    return 32 * CHAINS * steps / seconds / 1e9


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
    peak = exact_peak(args.repeats)
    print(f"exact peak (register-only vpmaddwd + vpaddd): {peak:.1f} GOPS "
          f"(the issue quotes {ISSUE_PEAK:.0f})")
    kernels = {name: gemm.Gemm(Jit(make()), signed=False)
               for name, make in (("host", host), ("x86-64", generic))}
    rng = np.random.default_rng(0)
    print("| M x K x N | llvm host GOPS | % of measured peak | % of issue peak "
          "| llvm x86-64 GOPS | numpy fp32 GOPS | llvm host / numpy fp32 |")
    print("|---|---|---|---|---|---|---|")
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
        print(f"| {m} x {k} x {n} | {gops['host']:.1f} | {100 * gops['host'] / peak:.0f}% | "
              f"{100 * gops['host'] / ISSUE_PEAK:.0f}% | {gops['x86-64']:.1f} | {blas:.1f} | "
              f"{gops['host'] / blas:.2f}x |")


if __name__ == "__main__":
    main()
