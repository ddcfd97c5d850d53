"""The numpy backend: the graph as generated Python source calling the ops' reference kernels.

Saved, a model is a folder that runs with numpy alone::

    model.py        the generated source plus a small loader (``python model.py in.npz out.npz``)
    qc_ops/         a copy of the op kernels (they import only numpy)
    constants.npz   the constants the source reads as ``C[name]``
    manifest.json   format, inputs (name, dtype, shape), outputs, and the line -> node map
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import linecache
import shutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qcompiler import ops
from qcompiler.errors import BackendError, ExecutionError, QCompilerError
from qcompiler.executable import Executable, InputSpec, input_specs
from qcompiler.graph import Graph

from .codegen import NodeLine, Program, generate

FORMAT = "qcompiler-numpy"
FORMAT_VERSION = 1

_LOADER = '''

# -- added by Executable.save: run this folder with numpy alone ---------------------------------


def load():
    """The constants ``C`` and kernels ``K`` that ``run(C, K, *inputs)`` needs."""
    import importlib.util
    import os
    import types

    import numpy as np

    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    name = "qc_ops_" + format(id(load), "x")
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(here, "qc_ops", "__init__.py"),
        submodule_search_locations=[os.path.join(here, "qc_ops")])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package  # the package's relative imports look itself up here
    spec.loader.exec_module(package)
    kernels = types.SimpleNamespace(**{n: d.kernel for n, d in package.OPS.items()})
    with np.load(os.path.join(here, "constants.npz"), allow_pickle=False) as data:
        constants = {k: data[k] for k in data.files}
    return constants, kernels


if __name__ == "__main__":
    import sys

    import numpy as np

    if len(sys.argv) != 3:
        sys.exit("usage: python model.py INPUTS.npz OUTPUTS.npz")
    C, K = load()
    with np.load(sys.argv[1], allow_pickle=False) as feeds:
        results = run(C, K, *[feeds[name] for name in INPUTS])
    np.savez(sys.argv[2], **dict(zip(OUTPUTS, results)))
'''


class NumpyExecutable(Executable):
    """A graph compiled to Python source over numpy; ``source`` is that text."""

    backend = "numpy"

    def __init__(self, name: str, program: Program, inputs: list[InputSpec], outputs: list[str],
                 kernels: types.SimpleNamespace | None = None,
                 fn: Callable[..., tuple[np.ndarray, ...]] | None = None,
                 filename: str | None = None):
        super().__init__(inputs, outputs)
        self.name = name
        self.program = program
        if fn is None:
            filename = f"<qcompiler-numpy {name} {id(self):x}>"
            linecache.cache[filename] = (len(program.source), None,
                                         program.source.splitlines(True), filename)
            namespace: dict[str, Any] = {}
            exec(compile(program.source, filename, "exec"), namespace)
            fn = namespace["run"]
        self._fn = fn
        self._filename = filename
        self._kernels = kernels or types.SimpleNamespace(
            **{op_name: d.kernel for op_name, d in ops.OPS.items()})
        self._constants = program.constants

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
        return ExecutionError(f"{info.op} node {info.node!r} (-> %{info.outputs[0]}) failed"
                              f"{shown}: {type(exc).__name__}: {exc}")

    def save(self, path: str | Path) -> None:
        """Write the folder described in this module's docstring (replacing ``path``)."""
        path = Path(path)
        staging = path.with_name(path.name + ".partial")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            shutil.copytree(Path(ops.__file__).parent, staging / "qc_ops",
                            ignore=shutil.ignore_patterns("__pycache__"))
            np.savez(staging / "constants.npz", **self._constants)
            names = (f"INPUTS = {[s.name for s in self.inputs]!r}\n"
                     f"OUTPUTS = {self.outputs!r}\n")
            (staging / "model.py").write_text(self.source + "\n" + names + _LOADER)
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "name": self.name,
                "inputs": [s.to_json() for s in self.inputs],
                "outputs": self.outputs,
                "lines": {str(k): [v.op, v.node, list(v.inputs), list(v.outputs)]
                          for k, v in self.program.lines.items()},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)


def compile_numpy(graph: Graph) -> NumpyExecutable:
    return NumpyExecutable(graph.name, generate(graph), input_specs(graph),
                           [v.name for v in graph.outputs])


def load_numpy(path: Path, manifest: dict[str, Any]) -> NumpyExecutable:
    """Rebuild a saved executable by importing its ``model.py``, which brings its own kernels."""
    try:
        name = f"qc_saved_model_{next(_saved_counter)}"
        spec = importlib.util.spec_from_file_location(name, path / "model.py")
        if spec is None or spec.loader is None:
            raise OSError(f"cannot import {path / 'model.py'}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        constants, kernels = module.load()
        source = (path / "model.py").read_text()
        source = source[: source.rindex("\nINPUTS = ")]
        lines = {int(k): NodeLine(v[0], v[1], tuple(v[2]), tuple(v[3]))
                 for k, v in manifest["lines"].items()}
        inputs = [InputSpec.from_json(s) for s in manifest["inputs"]]
        program = Program(source, constants, lines)
        return NumpyExecutable(manifest["name"], program, inputs, list(manifest["outputs"]),
                               kernels=kernels, fn=module.run, filename=module.__file__)
    except (OSError, KeyError, ValueError, IndexError, SyntaxError, AttributeError) as exc:
        raise BackendError(f"{path} is not a complete saved numpy-backend model: {exc}") from exc


_saved_counter = itertools.count()
