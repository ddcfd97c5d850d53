"""qcompiler: compile ONNX models to int8 executables.

    import qcompiler as qc
    g = qc.load_onnx("model.onnx")
    exe = qc.compile(g, backend="numpy")
    out = exe.run({"image": x})

    g = qc.PassManager("canonicalize,fold-bn,fuse").run(g).graph   # or qc.optimize(g)
    q = qc.quantize(g, "calibration.npz", qc.QuantConfig())        # integer ops (post-training)
    q.float_islands()                                                # what stays float, and why
    qdq = qc.quantize(g, "calibration.npz", qc.QuantConfig(lower=False))   # the QDQ form
    qc.export_onnx(qdq, "model.qdq.onnx")                           # ONNX onnxruntime runs
    q = qc.lower(qc.load_onnx("other.qdq.onnx"))                    # a QDQ model lowered
"""

from __future__ import annotations

from .api import (
    compare,
    compile,
    export_onnx,
    from_onnx,
    load,
    load_onnx,
    lower,
    optimize,
    parse,
    quantize,
)
from .config import QuantConfig
from .errors import (
    BackendError,
    CalibrationError,
    ConfigError,
    ExecutionError,
    ExportError,
    InputDTypeError,
    InputError,
    InputFileError,
    InputShapeError,
    IRError,
    MissingInputError,
    ModelLoadError,
    ParseError,
    PassError,
    PipelineError,
    QCompilerError,
    QuantizationError,
    ReportError,
    RewriteError,
    SaveError,
    ShapeInferenceError,
    UnknownInputError,
    UnknownOpError,
    UnsupportedModelError,
    VerificationError,
)
from .executable import Executable
from .graph import Graph, Node, Value
from .interpreter import STOP, Interpreter
from .pass_manager import (
    Pass,
    PassManager,
    PassResult,
    available_passes,
    get_pass,
    register_pass,
)
from .types import DType, QuantParams, TensorType

__version__ = "0.1.0"

__all__ = [
    "BackendError", "CalibrationError", "ConfigError", "DType", "Executable", "ExecutionError",
    "ExportError",
    "Graph", "IRError", "InputDTypeError", "InputError", "InputFileError", "InputShapeError",
    "MissingInputError", "ModelLoadError", "Node", "ParseError", "Pass", "PassError",
    "PassManager", "PassResult", "PipelineError", "QCompilerError", "QuantParams",
    "QuantizationError", "RewriteError", "SaveError", "ShapeInferenceError", "TensorType",
    "UnknownInputError", "UnknownOpError", "UnsupportedModelError", "Value", "VerificationError",
    "available_passes", "compile", "export_onnx", "from_onnx", "get_pass", "load", "load_onnx",
    "lower", "optimize", "parse", "quantize", "register_pass", "Interpreter", "QuantConfig", "STOP",
    "ReportError", "compare",
]
