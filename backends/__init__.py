"""Backends turn a verified graph into an ``Executable``: ``numpy`` (reference) and ``llvm``."""

from __future__ import annotations

from qcompiler.errors import BackendError
from qcompiler.executable import Executable
from qcompiler.graph import Graph

BACKENDS = ("numpy",)


def compile_graph(graph: Graph, backend: str = "numpy") -> Executable:
    """Compile ``graph`` with the named backend; the graph is verified first."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    graph.verify()
    from .numpy import compile_numpy

    return compile_numpy(graph)
