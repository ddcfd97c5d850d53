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


def assert_native_exact(graph: Graph, feeds: Iterable[Mapping[str, np.ndarray]], *,
                        native: Sequence[str] | None = None,
                        targets: Sequence[str] | None = None,
                        threads: Sequence[int] | None = None) -> int:
    """Compare ``graph`` compiled by the LLVM runtime with the numpy backend on every feed.

    ``native`` lists the op types that must run natively (default: every op of the graph).
    Runs ``RUNS``, or every pair of ``targets`` and ``threads`` when either is given. Returns
    the number of (feed, target, threads) runs compared, so a caller can check that the
    comparison happened."""
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
