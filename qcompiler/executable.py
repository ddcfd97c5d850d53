"""What every backend's compiled model shares: the graph it came from and its input contract.

The input checks live in ``input_check`` (numpy only), which an exported standalone program
carries too, so both refuse a wrong input with the same message.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    InputDTypeError,
    InputError,
    InputShapeError,
    MissingInputError,
    SaveError,
    UnknownInputError,
)
from .graph import Graph
from .input_check import InputSpec, check_feeds
from .paths import as_path

INPUT_ERRORS: dict[str, type[Exception]] = {
    "feeds": InputError,
    "missing": MissingInputError,
    "unknown": UnknownInputError,
    "shape": InputShapeError,
    "dtype": InputDTypeError,
}


def checked_feeds(specs: list[InputSpec], feeds: Any) -> list[np.ndarray]:
    """``feeds`` as arrays in the order of ``specs``, or the typed ``InputError`` saying what
    was expected (every backend's ``Executable.run`` and the ``Interpreter`` check this way)."""
    return check_feeds(specs, feeds, INPUT_ERRORS)


def input_specs(graph: Graph) -> list[InputSpec]:
    """The input contract of ``graph``: one spec per graph input, in order."""
    return [InputSpec(v.name, v.dtype.value, v.dtype.np.name, tuple(v.shape))
            for v in graph.inputs]


class Executable(abc.ABC):
    """A compiled model. ``run({name: array})`` returns ``{output_name: array}``; ``exe(x)``
    runs a single-input model on one array and returns its output (or a tuple of outputs).

    ``graph`` is (a copy of) the graph it was compiled from, ``backend`` the registered name of
    the backend that compiled it and ``options`` that backend's options: together they are
    what ``save`` writes and what ``qc.load`` compiles again.
    """

    def __init__(self, graph: Graph, backend: str, options: Mapping[str, Any]):
        self.graph = graph
        self.backend = backend
        self.options = dict(options)
        self.name = graph.name
        self.inputs = input_specs(graph)
        self.outputs = [v.name for v in graph.outputs]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = self.check_inputs(feeds)
        results = self._execute(arrays)
        return dict(zip(self.outputs, results))

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self.inputs):
            names = ", ".join(s.name for s in self.inputs)
            raise MissingInputError(f"the model takes {len(self.inputs)} input(s) ({names}), "
                                    f"got {len(arrays)} positional array(s)")
        out = self.run({spec.name: a for spec, a in zip(self.inputs, arrays)})
        values = [out[name] for name in self.outputs]
        return values[0] if len(values) == 1 else tuple(values)

    def check_inputs(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The feeds as arrays in input order, or a typed ``InputError`` saying what was
        expected (names, dtypes, shapes, symbolic dimensions that agree across inputs)."""
        return checked_feeds(self.inputs, feeds)

    @abc.abstractmethod
    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model on checked inputs (in input order); outputs in output order."""

    def save(self, path: str | Path) -> None:
        """Write one data-only ``.qcx`` file (IR text, weights, backend name; no code), which
        ``qc.load`` checks and compiles again. The file appears whole or not at all."""
        from .saved import write_saved

        write_saved(self, as_path(path, SaveError, "cannot save"))

    def export_python(self, folder: str | Path) -> Path:
        """Write a standalone program that runs this model with numpy alone and checks its
        inputs like ``run`` does: ``python FOLDER/model.py inputs.npz outputs.npz``."""
        from qcompiler.backends.numpy.export import export_python

        return export_python(self.graph, as_path(folder, SaveError, "cannot export"))
