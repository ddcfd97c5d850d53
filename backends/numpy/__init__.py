"""The numpy backend: the graph as generated Python source calling the ops' reference kernels.

``exe.source`` is that source, one statement per op. ``export.py`` writes it out as a program
that runs with numpy alone (``Executable.export_python``).
"""

from __future__ import annotations

import collections
import hashlib
import linecache
import types
import weakref
from typing import Any

import numpy as np

from qcompiler import ops
from qcompiler.errors import ExecutionError, QCompilerError
from qcompiler.executable import Executable
from qcompiler.graph import Graph

from .. import Backend, register_backend
from .codegen import NodeLine, generate


class _SourceLines:
    """``linecache`` entries for generated sources, kept while an executable uses them."""

    def __init__(self) -> None:
        self.users: collections.Counter[str] = collections.Counter()

    def acquire(self, filename: str, source: str) -> None:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        self.users[filename] += 1

    def release(self, filename: str) -> None:
        self.users[filename] -= 1
        if self.users[filename] <= 0:
            del self.users[filename]
            linecache.cache.pop(filename, None)


_source_lines = _SourceLines()


class NumpyExecutable(Executable):
    """A graph compiled to Python source over numpy; ``source`` is that text.

    The source is compiled under a file name made from its hash and registered with
    ``linecache`` while an executable uses it, so tracebacks show it. Compiling or loading the
    same model any number of times leaves nothing behind (CPython keeps every distinct file
    name given to ``compile`` alive, so the name must not change from one load to the next).
    """

    def __init__(self, graph: Graph):
        super().__init__(graph, "numpy", {})
        self.program = generate(graph)
        digest = hashlib.sha256(self.program.source.encode()).hexdigest()[:20]
        self._filename = f"<qcompiler-numpy {digest}>"
        _source_lines.acquire(self._filename, self.program.source)
        weakref.finalize(self, _source_lines.release, self._filename)
        namespace: dict[str, Any] = {}
        exec(compile(self.program.source, self._filename, "exec"), namespace)
        self._fn = namespace["run"]
        self._constants = self.program.constants
        self._kernels = types.SimpleNamespace(**{name: d.kernel for name, d in ops.OPS.items()})

    @property
    def source(self) -> str:
        return self.program.source

    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            results = self._fn(self._constants, self._kernels, *arrays)
        except QCompilerError:
            raise
        except Exception as exc:  # a kernel failed: say which node, layer and operands
            raise self._node_error(exc) from exc
        # numpy reductions of 0-d operands give scalars: hand back arrays as promised
        return [r if isinstance(r, np.ndarray) else np.asarray(r) for r in results]

    def _node_error(self, exc: Exception) -> ExecutionError:
        tb, frame_locals, line = exc.__traceback__, None, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._filename:
                frame_locals, line = tb.tb_frame.f_locals, tb.tb_lineno
            tb = tb.tb_next
        info: NodeLine | None = self.program.lines.get(line) if line else None
        if info is None:
            return ExecutionError(f"model {self.name!r} failed: {type(exc).__name__}: {exc}")
        operands = []
        for var in info.inputs:
            value = (frame_locals or {}).get(var) if var else None
            if isinstance(value, np.ndarray):
                operands.append(f"{var}: {value.dtype}{list(value.shape)}")
        shown = f" with operands {', '.join(operands)}" if operands else ""
        return ExecutionError(f"{info.node} failed{shown}: {type(exc).__name__}: {exc}")


register_backend(Backend("numpy", NumpyExecutable,
                         "readable Python source over numpy's reference kernels (float and int)"))
