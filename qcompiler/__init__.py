"""qcompiler: compile ONNX models to int8 executables.

    import qcompiler as qc
    g = qc.load_onnx("model.onnx")
    exe = qc.compile(g, backend="numpy")
    out = exe.run({"image": x})
"""

from __future__ import annotations

from .api import compile, from_onnx, load, load_onnx, parse
from .errors import (
    BackendError,
    ExecutionError,
    InputDTypeError,
    InputError,
    InputShapeError,
    IRError,
    MissingInputError,
    ModelLoadError,
    ParseError,
    QCompilerError,
    ShapeInferenceError,
    UnknownInputError,
    UnsupportedModelError,
    VerificationError,
)
from .executable import Executable
from .graph import Graph, Node, Value
from .types import DType, QuantParams, TensorType

__version__ = "0.1.0"

__all__ = [
    "BackendError", "DType", "Executable", "ExecutionError", "Graph", "IRError",
    "InputDTypeError", "InputError", "InputShapeError", "MissingInputError", "ModelLoadError",
    "Node", "ParseError", "QCompilerError", "QuantParams", "ShapeInferenceError", "TensorType",
    "UnknownInputError", "UnsupportedModelError", "Value", "VerificationError", "compile",
    "from_onnx", "load", "load_onnx", "parse",
]
