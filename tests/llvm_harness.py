"""Checks shared by the LLVM backend's tests: a graph compiled by the LLVM runtime, with guard
bytes around every buffer (``Program(check=True)``), must give the numpy backend's outputs bit
for bit, on this CPU with one thread and with two (every segment split, however small) and on
baseline x86-64 with one (how rows split between threads is the same code on every target),
and every node the test names must have run natively (not through its numpy fallback)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.runtime import Program
from qcompiler.backends.llvm.target import generic, host

import qcompiler as qc
from qcompiler.graph import Graph

TARGETS = {"host": host, "generic": generic}
RUNS = (("host", 1), ("host", 2), ("generic", 1))


def pair_safe_codes(rng, dtype, rows: int, k: int, zero_point: str):
    """Weight codes ``[rows, k]`` of ``dtype`` and their zero point (``zero_point`` "none",
    "scalar" or "per channel": one per row; uint8 codes always have one) whose centred values
    fit the u8 x s8 pair instruction (``gemm.pairs_fit``: pairs along k) and reach its bound:
    per pair, at random, two weights summing to +128, two summing to -128, 127 and -128, or
    two reduce-range weights in [-64, 63]."""
    pairs = -(-k // 2)
    kind = rng.integers(0, 4, (rows, pairs))
    small = rng.integers(-64, 64, (2, rows, pairs))
    first = np.select([kind == 0, kind == 1, kind == 2],
                      [rng.integers(1, 128, (rows, pairs)), rng.integers(-128, 1, (rows, pairs)),
                       np.full((rows, pairs), 127)], small[0])
    second = np.select([kind == 0, kind == 1, kind == 2],
                       [128 - first, -128 - first, np.full((rows, pairs), -128)], small[1])
    centred = np.stack([first, second], axis=2).reshape(rows, 2 * pairs)[:, :k]
    if dtype == np.int8 and zero_point == "none":
        return centred.astype(np.int8), None
    # a zero point that keeps every code of its rows within the dtype: drawn from what the
    # rows allow (uint8: from 128 up; int8: about 0, often only 0 for rows at the limits)
    info = np.iinfo(dtype)
    low = np.maximum(int(info.min) - centred.min(axis=1), int(info.min))
    high = np.minimum(int(info.max) - centred.max(axis=1), int(info.max))
    if zero_point != "per channel":  # one for all rows (uint8 codes always have one)
        low, high = np.full(1, low.max()), np.full(1, high.min())
    zp = rng.integers(low, high + 1).astype(dtype)
    zp = zp.reshape(()) if zero_point != "per channel" else zp
    return (centred + np.asarray(zp, np.int64).reshape(-1, 1)).astype(dtype), zp


def assert_native_exact(graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *,
                        native: Sequence[str] | None = None,
                        targets: Sequence[str] | None = None,
                        threads: Sequence[int] | None = None,
                        functions: Counter | None = None) -> int:
    """Compare ``graph`` compiled by the LLVM runtime with the numpy backend on every feed.

    ``native`` lists the op types that must run natively (default: every op of the graph).
    Runs ``RUNS``, or every pair of ``targets`` and ``threads`` when either is given. Returns
    the number of (feed, target, threads) runs compared, so a caller can check that the
    comparison happened. ``functions`` (a Counter) counts the kernels the host programs call,
    by name without the signature hash (``qc_int_conv_pmaddwd``): which kernel ran."""
    reference = qc.compile(graph)
    feeds = [dict(f) for f in feeds]
    must = set(graph.op_counts()) if native is None else set(native)
    runs = RUNS if targets is None and threads is None else [
        (t, n) for t in targets or ("host", "generic") for n in threads or (1, 2)]
    programs: dict[tuple, Program] = {}
    compared = 0
    for feed in feeds:
        arrays = [np.asarray(feed[v.name]) for v in graph.inputs]
        expected = reference.run(feed)
        shapes = tuple(a.shape for a in arrays)
        for target, count in runs:
            key = (shapes, target, count)
            if key not in programs:
                # every segment split across the threads, however little its work
                program = Program(bound(graph, shapes), TARGETS[target](), count, check=True,
                                  parallel_work=0)
                slow = Counter(f"{f.node.op}: {f.reason}" for f in program.fallbacks
                               if f.node.op in must)
                assert not slow, f"ran through numpy: {dict(slow)}"
                programs[key] = program
                if functions is not None and target == "host" and count == 1:
                    functions.update(name for names in program.kernels.values()
                                     for name in names)
            got = programs[key].run(arrays)
            for value, array in zip(graph.outputs, got, strict=True):
                want = expected[value.name]
                assert array.dtype == want.dtype and array.shape == want.shape, value.name
                np.testing.assert_array_equal(array, want, err_msg=f"{value.name} on "
                                              f"{target} with {count} thread(s)")
            compared += 1
    for program in programs.values():
        program.close()
    return compared
