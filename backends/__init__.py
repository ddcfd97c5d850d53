"""Backends turn a verified graph into an ``Executable``; they register here by name.

A backend is a name, a ``compile(graph, **options)`` function and the options it takes (with
their defaults). ``qc.compile``, ``qc.load`` and the command line's ``--backend`` all go
through this registry, so a new backend plugs in by calling ``register_backend`` when its module
is imported (and by being listed in ``BUILTIN`` if it ships with qcompiler). A saved ``.qcx``
file records the backend's name and options: loading it compiles the saved IR again with the
same backend, so a backend needs nothing else to be loadable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qcompiler.errors import BackendError
from qcompiler.executable import Executable
from qcompiler.graph import Graph

BUILTIN = ("numpy", "llvm")  # modules of this package that register a backend when imported


@dataclass(frozen=True)
class Backend:
    """A registered backend: ``compile(graph, **options)`` returns an ``Executable`` whose
    ``backend`` is ``name`` and whose ``options`` are the options it was compiled with."""

    name: str
    compile: Callable[..., Executable]
    summary: str
    options: Mapping[str, Any] = field(default_factory=dict)  # name -> default (JSON values)


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` available to ``qc.compile``, ``qc.load`` and the command line."""
    if backend.name in _REGISTRY and _REGISTRY[backend.name] is not backend:
        raise BackendError(f"a backend named {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    return backend


def _load_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(f"{__name__}.{module}")


def available_backends() -> tuple[str, ...]:
    """The names of the registered backends, sorted."""
    _load_builtin()
    return tuple(sorted(_REGISTRY))


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; a ``BackendError`` listing them if there is none."""
    _load_builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}; the registered backends are: "
                           f"{', '.join(available_backends())}")
    return _REGISTRY[name]


def compile_graph(graph: Graph, backend: str = "numpy", **options: Any) -> Executable:
    """Compile a copy of ``graph`` with the named backend; the graph is verified first."""
    if not isinstance(graph, Graph):
        hint = (" (a path? read the model with qc.load_onnx(path) first, or load a saved "
                "executable with qc.load(path))" if isinstance(graph, str) else "")
        raise BackendError(f"qc.compile takes a qc.Graph, got {type(graph).__name__}{hint}")
    chosen = get_backend(backend)
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        known = ", ".join(chosen.options) or "none"
        raise BackendError(f"the {chosen.name} backend has no option(s) {', '.join(unknown)} "
                           f"(its options: {known})")
    for key, value in options.items():
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise BackendError(f"the {chosen.name} backend's option {key}={value!r} must be a "
                               f"string, number, boolean or None (a saved file records it)")
    graph.verify()
    return chosen.compile(graph.copy(), **{**chosen.options, **options})
