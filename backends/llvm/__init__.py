"""The LLVM backend: integer kernels emitted as LLVM IR, compiled through llvmlite for the host
CPU (features read at run time) and checked bit for bit against the numpy backend, whose
kernels define the numerics.

``qc.compile(graph, backend="llvm", threads=1)``. The graph is compiled for concrete shapes: a
model with a symbolic dimension (a batch ``N``) is compiled for the shapes of the first run
that has them (and kept: a few shape sets at once). ``runtime.Program`` is one compiled shape
set: a static schedule of native calls over one arena (``memory``), kernels from the emitters in
``kernels/`` (``kernel.py`` is their contract), nodes without a native kernel run by their
numpy kernel between native segments (``exe.fallbacks()`` lists them with the reason).

Modules: ``target`` (the CPU, -O3 with the loop and SLP vectorizers, a JIT), ``gemm`` (the
exact int8 matrix product: 16-bit pair products with ``pmaddwd``, or the u8 x s8 pair
instruction where a layer's weights are proved safe for it, int32 accumulators, a 4 x 16
register tile, weights centred and packed once, requantizing store), ``requantize``,
``lookup``, ``memory`` (the arena plan from value lifetimes), ``kernel`` and ``runtime``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from qcompiler.errors import BackendError
from qcompiler.executable import Executable
from qcompiler.graph import Graph
from qcompiler.types import TensorType

from .. import Backend, register_backend
from .runtime import Fallback, Program
from .target import host

SHAPE_SETS = 4  # compiled shape sets kept per executable


class LlvmExecutable(Executable):
    """A graph compiled to native code by LLVM, per set of concrete input shapes."""

    def __init__(self, graph: Graph, threads: int = 1):
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise BackendError(f"the llvm backend's threads must be a whole number >= 1, got "
                               f"{threads!r}")
        super().__init__(graph, "llvm", {"threads": threads})
        self.threads = threads
        self.target = host()
        self._programs: OrderedDict[tuple, Program] = OrderedDict()
        self._lock = threading.Lock()
        shapes = tuple(spec.shape for spec in self.inputs)
        if all(isinstance(d, int) for shape in shapes for d in shape):
            self.program(shapes)

    def program(self, shapes: tuple[tuple[int, ...], ...]) -> Program:
        """The program compiled for these input shapes (compiled now if it is not kept)."""
        program = self._programs.get(shapes)
        if program is not None:  # the run's fast path: no lock, no reordering
            return program
        with self._lock:
            program = self._programs.get(shapes)
            if program is None:
                program = Program(bound(self.graph, shapes), self.target, self.threads)
                self._programs[shapes] = program
                while len(self._programs) > SHAPE_SETS:  # the oldest goes (a run still using
                    self._programs.popitem(last=False)  # it keeps it alive until it ends)
            return program

    def fallbacks(self, shapes: tuple[tuple[int, ...], ...] | None = None) -> list[Fallback]:
        """The nodes that run their numpy kernel, with the reason (for ``shapes``, or the
        shape set compiled last)."""
        return self._compiled(shapes).fallbacks

    def kernels(self, shapes: tuple[tuple[int, ...], ...] | None = None) -> dict[str, list[str]]:
        """Per node, the kernels it runs (``Program.kernels``: ``qc_int_conv_pmaddwd``,
        ``qc_int_conv_pmaddubsw``, ``qc_int_conv_winograd``, ``numpy``...), for ``shapes`` or
        the shape set compiled last: where the compiler chose the u8 x s8 pair instruction, a
        Winograd or a pointwise kernel, and which nodes fell back to numpy."""
        return self._compiled(shapes).kernels

    def _compiled(self, shapes: tuple[tuple[int, ...], ...] | None) -> Program:
        """The program for ``shapes``, or the one compiled last."""
        if shapes is not None:
            return self.program(shapes)
        if not self._programs:
            raise BackendError("nothing compiled yet: run the model once or give the shapes")
        return next(reversed(self._programs.values()))

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return self.program(tuple([a.shape for a in arrays])).run(arrays)


def bound(graph: Graph, shapes: tuple[tuple[int, ...], ...]) -> Graph:
    """A copy of ``graph`` with its inputs' shapes ``shapes`` and every shape inferred."""
    bound = graph.copy()
    for value, shape in zip(bound.inputs, shapes, strict=True):
        value.type = TensorType(value.dtype, shape, value.type.quant)
    bound.infer_types()
    return bound


register_backend(Backend("llvm", LlvmExecutable,
                         "native int8 code through LLVM (llvmlite) for this CPU",
                         options={"threads": 1}))
