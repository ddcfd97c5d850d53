"""The public entry points behind ``import qcompiler as qc``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExportError, ModelLoadError, SaveError
from .graph import Graph
from .paths import as_path
from .text import parse as _parse

if TYPE_CHECKING:
    import onnx

    from .config import QuantConfig
    from .executable import Executable
    from .pass_manager import PipelineSpec
    from .report import Data, QuantizationReport


def load_onnx(path: str | Path,
              input_shapes: Mapping[str, Sequence[int | str]] | None = None) -> Graph:
    """Read an ONNX file into a verified ``Graph``; ``input_shapes`` fixes dynamic dims."""
    from .onnx_import import load_onnx as _load

    return _load(as_path(path, ModelLoadError, "cannot load an ONNX model"), input_shapes)


def from_onnx(model: onnx.ModelProto,
              input_shapes: Mapping[str, Sequence[int | str]] | None = None) -> Graph:
    """Import an in-memory ``onnx.ModelProto`` into a verified ``Graph``."""
    from .onnx_import import from_onnx as _from

    return _from(model, input_shapes)


def export_onnx(graph: Graph, path: str | Path) -> None:
    """Write ``graph`` (float, or QDQ as ``qcompiler.qdq`` spells it) as an ONNX model
    (opset 21) that onnxruntime runs: fused ops are written as the standard ops they stand
    for, ``Observe`` nodes are dropped, node names and the user's layers are kept. The file is
    written atomically (``SaveError`` when it cannot be, ``ExportError`` for a graph with ops
    ONNX has no spelling for)."""
    from .onnx_export import export_onnx as _export

    if not isinstance(graph, Graph):
        raise ExportError(f"export_onnx takes a qc.Graph, not {type(graph).__name__}")
    as_path(path, SaveError, "cannot export to ONNX")  # a typed error for a non-path
    _export(graph, path)  # as given: a trailing separator says it names a directory


def parse(text: str, constants: Mapping[str, np.ndarray] | None = None) -> Graph:
    """Parse the text form printed by ``str(graph)``; ``constants`` resolves ``@name`` refs."""
    return _parse(text, constants)


DEFAULT_FLOAT_PIPELINE = "canonicalize,fold-bn,fuse"


def optimize(graph: Graph, pipeline: PipelineSpec = DEFAULT_FLOAT_PIPELINE,
             **options: Any) -> Graph:
    """The graph after ``pipeline`` (default: cleanup, BatchNorm folding, fusion), run by a
    ``PassManager(pipeline, **options)``; the graph given is left as it was."""
    from .pass_manager import PassManager

    return PassManager(pipeline, **options).run(graph).graph


def quantize(graph: Graph, calib: Any = None, config: QuantConfig | None = None, *,
             progress: bool | None = None) -> Graph:
    """The post-training quantized form of ``graph``: float passes, calibration on ``calib``
    (an iterable of ``{input: array}`` dicts, of arrays for a single-input model, or an
    ``.npz`` path), Q/DQ per ``config`` (default ``QuantConfig()``), Q/DQ cancellation and, in
    static mode, integer lowering (``config.lower``; ``graph.float_islands()`` lists what stays
    float). The graph given is left as it was. ``progress`` forces the calibration progress
    bar on or off (default: shown on a terminal)."""
    from .ptq import quantize as _quantize

    return _quantize(graph, calib, config, progress=progress)


def lower(graph: Graph, rounding: str = "fixed_point") -> Graph:
    """A QDQ graph quantized elsewhere (onnxruntime's ``quantize_static``, QAT exports) lowered
    to integer ops, as ``quantize`` ends: cleanup, Relu/Clip fused, Q/DQ cancellation, then
    ``lower-int`` with ``rounding`` (``"fixed_point"`` or ``"float"``). The graph given is left
    as it was."""
    from .ptq import lower as _lower

    return _lower(graph, rounding)


def compile(graph: Graph, backend: str = "numpy", **options: Any) -> Executable:
    """Compile a (float or quantized) graph into an ``Executable`` with the named backend
    (``qcompiler.backends.available_backends()`` lists them); ``options`` go to the backend."""
    from qcompiler.backends import compile_graph

    return compile_graph(graph, backend, **options)


def load(path: str | Path) -> Executable:
    """Load an executable written by ``Executable.save(path)``: the file is checked (format,
    version, checksum, manifest), its IR parsed and verified, and compiled again with the
    backend it records. Nothing in the file is executed; any fault is a ``ModelLoadError``."""
    from .saved import load_saved

    return load_saved(as_path(path, ModelLoadError, "cannot load an executable"))


def compare(float_graph: Graph, quantized_graph: Graph, data: Data, *,
            config: QuantConfig | None = None,
            progress: bool | None = None) -> QuantizationReport:
    """Per-layer error of a quantized graph against the float graph it came from, on ``data``
    (what calibration takes): SQNR and max error per user layer, cumulative and layer alone,
    worst first, and the ops left in float with why (``config``: the config it was quantized
    with, for its exclusions). ``print(report)`` shows a table, ``report.to_json()`` is for
    tools."""
    from .report import compare as _compare

    return _compare(float_graph, quantized_graph, data, config=config, progress=progress)
