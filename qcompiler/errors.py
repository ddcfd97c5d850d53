"""The error hierarchy: every error qcompiler raises on purpose is a ``QCompilerError``.

Errors name what went wrong where: the node, the tensor and the user's original layer, and say
what was expected, so a message pasted into a bug report is enough to find the problem.
"""

from __future__ import annotations


class QCompilerError(Exception):
    """Base class of every error qcompiler raises on purpose."""


class ModelLoadError(QCompilerError):
    """A model file could not be read: missing, truncated, corrupt or not ONNX."""


class UnsupportedModelError(QCompilerError):
    """A model uses op types, attributes or dtypes that qcompiler does not support.

    ``unsupported`` maps each offending op type (or feature) to the node names that use it, so a
    single error lists everything that stands in the way, not only the first problem.
    """

    def __init__(self, message: str, unsupported: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.unsupported = dict(unsupported or {})


class IRError(QCompilerError):
    """The IR is malformed: a broken SSA edge, a wrong type, an illegal mutation."""


class VerificationError(IRError):
    """``Graph.verify()`` found invariants that do not hold; ``problems`` lists them all."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class ShapeInferenceError(IRError):
    """Type or shape inference failed for a node (incompatible shapes, bad attributes)."""


class ParseError(QCompilerError):
    """The text form of a graph could not be parsed; the message gives line and column."""


class InputError(QCompilerError):
    """The inputs given to ``Executable.run`` do not match what the model expects."""


class MissingInputError(InputError):
    """A model input was not given."""


class UnknownInputError(InputError):
    """An input was given that the model does not have."""


class InputShapeError(InputError):
    """An input has the wrong shape (rank, a fixed dimension, or an inconsistent symbol)."""


class InputDTypeError(InputError):
    """An input has the wrong element type."""


class ExecutionError(QCompilerError):
    """An op failed while the model ran; names the node and the user's layer."""


class BackendError(QCompilerError):
    """A backend cannot compile or load a graph (unknown backend, bad saved folder)."""


class PipelineError(QCompilerError):
    """A pass pipeline is malformed: an unknown pass, an unknown option or a bad option value."""


class RewriteError(IRError):
    """A rewrite rule failed on a node; ``rule`` and ``node`` (the node's name) say where."""

    def __init__(self, message: str, rule: str | None = None, node: str | None = None):
        super().__init__(message)
        self.rule = rule
        self.node = node


class PassError(QCompilerError):
    """A pass failed or left an invalid graph.

    ``pass_name`` is the failing pass, ``node`` the name of the node it was working on (the
    user's layer) when known, and ``passes_run`` the passes that had already run.
    """

    def __init__(self, message: str, pass_name: str, node: str | None = None,
                 passes_run: tuple[str, ...] = ()):
        super().__init__(message)
        self.pass_name = pass_name
        self.node = node
        self.passes_run = passes_run


class UnknownOpError(QCompilerError, KeyError):
    """An op type that is not in the op registry (``ops.get``). A ``KeyError`` too, so code
    written as ``except KeyError`` keeps working; the message suggests registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SaveError(QCompilerError):
    """An executable or an export could not be written (a missing or read-only folder, a
    directory where the file should go, a full disk); what was there before is left as it was."""


class InputFileError(InputError):
    """A file of input arrays could not be read: missing, a directory, not an ``.npz`` file,
    or holding pickled objects (which are never loaded)."""


class ConfigError(QCompilerError):
    """A quantization config is invalid: an unknown field or value, a file that cannot be read,
    or an exclusion or override that matches nothing in the graph."""


class CalibrationError(QCompilerError):
    """Calibration data cannot be used: empty, NaN or Inf (naming the input and the sample),
    or inputs whose names, dtypes or shapes are not the model's."""


class QuantizationError(QCompilerError):
    """A graph cannot be quantized as asked: names the node, the tensor and the user's layer."""


class ReportError(QCompilerError):
    """A per-layer report cannot be made: the float and quantized graphs do not correspond (a
    layer of one has no counterpart in the other, their inputs or a layer's outputs differ)."""


class ExportError(SaveError):
    """A graph cannot be written as ONNX: ``unsupported`` maps each op ONNX has no spelling for
    to the nodes that use it. Nothing is written."""

    def __init__(self, message: str, unsupported: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.unsupported = dict(unsupported or {})
