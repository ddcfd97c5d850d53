"""Import ONNX models (opsets 9 to 21) into the IR, translating older op forms to opset 21.

Import runs in two phases. The first looks at the whole model without building anything and
collects every op type, dtype, domain and training-only feature qcompiler cannot handle into
one ``UnsupportedModelError``. The second builds the graph node by node (older forms become
their opset-21 spelling: attributes turned into constant inputs, coerce-to-2D softmax made
explicit, ...), folding each node whose result is known as soon as it is added (so the nodes
after it see its contents: a Squeeze whose axes are computed from constants), then folds
constants once more (refining types) and removes dead code. Nothing half-built is ever
returned.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import onnx
import onnx.inliner
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import AttributeProto, TensorProto, defs, numpy_helper

from . import ops, qdq
from .errors import (
    InputShapeError,
    ModelLoadError,
    ShapeInferenceError,
    UnknownInputError,
    UnsupportedModelError,
)
from .folding import eliminate_dead_code, fold_constants, fold_node
from .graph import Graph, Node, Value
from .interpreter import Interpreter
from .ops.dtypes import FROM_ONNX
from .types import DType, TensorType

MIN_OPSET, MAX_OPSET = 9, 21
ORIGINS_KEY = "qcompiler.origins"  # node metadata: the user layers a node computes
IR_OPSET = 21  # the IR spells every op as ONNX opset 21 does

_DTYPES = {code: DType(name) for code, name in FROM_ONNX.items()}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
               "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")

InputShapes = Mapping[str, Sequence[int | str]]


# -- entry points --------------------------------------------------------------------------------


def load_onnx(path: str | Path, input_shapes: InputShapes | None = None) -> Graph:
    """Read an ONNX file (external data beside it is loaded too) and import it."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"cannot load {str(path)!r}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"cannot load {str(path)!r}: it is not a file")
    try:
        model = onnx.load(str(path))
    except DecodeError as exc:
        raise ModelLoadError(f"cannot load {str(path)!r}: the file is truncated, corrupt or not "
                             f"an ONNX model (protobuf: {exc})") from None
    except onnx.checker.ValidationError as exc:  # external data missing or misplaced
        raise ModelLoadError(f"cannot load {str(path)!r}: {exc}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load {str(path)!r}: {type(exc).__name__}: {exc}") from None
    return _import(model, input_shapes, repr(str(path)))


def from_onnx(model: onnx.ModelProto, input_shapes: InputShapes | None = None) -> Graph:
    """Import an in-memory ``onnx.ModelProto`` into a verified ``Graph``.

    ``input_shapes`` maps input names to shapes (ints and symbol names) that replace the
    model's dynamic dimensions; a rank or a fixed dimension that disagrees is an error.
    """
    if not isinstance(model, onnx.ModelProto):
        hint = "; read a file with qc.load_onnx(path)" if isinstance(
            model, str | bytes | os.PathLike) else ""
        raise TypeError(f"from_onnx takes an onnx.ModelProto, not {type(model).__name__}{hint}")
    return _import(model, input_shapes, "the model")


def _import(model: onnx.ModelProto, input_shapes: InputShapes | None, where: str) -> Graph:
    _check_structure(model, where)
    opset = _default_opset(model, where)
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    scan = _Scan(model, opset, dict(input_shapes or {}))
    scan.run()
    graph = _Builder(model, opset, scan).build()
    fold_constants(graph)
    eliminate_dead_code(graph)
    qdq.annotate(graph)  # a pre-quantized (QDQ) model: Q outputs and DQ'd constants get types
    graph.verify()
    return graph


def _check_structure(model: onnx.ModelProto, where: str) -> None:
    """A file can parse as protobuf and still not be a model: say so before anything else."""
    missing = [what for what, ok in (("ir_version", model.ir_version > 0),
                                     ("graph", model.HasField("graph")),
                                     ("opset_import", len(model.opset_import) > 0)) if not ok]
    if missing:
        raise ModelLoadError(f"{where} is not a complete ONNX model (no {', '.join(missing)}): "
                             f"the file is truncated, corrupt or not ONNX")
    if not model.graph.output:
        raise ModelLoadError(f"{where} is not a complete ONNX model: its graph has no outputs")
    _check_text(model, where)


def _check_text(model: onnx.ModelProto, where: str) -> None:
    """Every string in the model must be UTF-8. Protobuf hands back one that is not (a
    corrupted file) as ``bytes``, which would break every message naming it: refuse it here,
    shown with its bad bytes escaped, with the node (or tensor) that holds it."""
    found = _undecodable(model, [])
    if found is None:
        return
    chain, field_name, raw = found
    owner = next((m for _, m in reversed(chain) if _has_text(m, "name")), None)
    place = ".".join(step for step, _ in chain) or "the model"
    named = f" (named {_escaped(owner.name)})" if owner is not None else ""
    raise ModelLoadError(f"{where} is corrupt: the {field_name} of {place}{named} is not valid "
                         f"UTF-8: {_escaped(raw)}")


def _undecodable(message: Message, chain: list[tuple[str, Message]]
                 ) -> tuple[list[tuple[str, Message]], str, bytes] | None:
    """The first string field under ``message`` that protobuf could not decode: the path to
    the message holding it, the field's name and its raw bytes. Only string and message
    fields are read (never a tensor's raw data, which would be copied)."""
    for desc in message.DESCRIPTOR.fields:
        if desc.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            continue
        value = getattr(message, desc.name)
        single = isinstance(value, (str, bytes, Message))
        if desc.type == FieldDescriptor.TYPE_STRING:
            bad = next((v for v in ([value] if single else value) if isinstance(v, bytes)), None)
            if bad is not None:
                return chain, desc.name, bad
            continue
        if single and not message.HasField(desc.name):
            continue
        for k, item in enumerate([value] if single else value):
            step = desc.name if single else f"{desc.name}[{k}]"
            found = _undecodable(item, [*chain, (step, item)])
            if found is not None:
                return found
    return None


def _has_text(message: Message, field: str) -> bool:
    return field in message.DESCRIPTOR.fields_by_name and bool(getattr(message, field))


def _escaped(text: str | bytes) -> str:
    """``text`` in quotes, bytes that are not UTF-8 shown as \\xNN escapes."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    return f"'{text}'"


def _default_opset(model: onnx.ModelProto, where: str) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        if any(n.domain in _DEFAULT_DOMAINS for n in model.graph.node):
            raise ModelLoadError(f"{where} uses ONNX ops but imports no version of the default "
                                 f"ONNX domain (opset_import)")
        return MAX_OPSET
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise UnsupportedModelError(
            f"{where} uses ONNX opset {version}; qcompiler supports opsets {MIN_OPSET} to "
            f"{MAX_OPSET}. Convert it first, e.g. "
            f"onnx.version_converter.convert_version(model, {min(max(version, 13), MAX_OPSET)})",
            {f"opset {version}": []})
    return version


# -- translation rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """How one ONNX op type (below opset ``until``, when set) becomes IR nodes.

    ``needs`` are the IR ops the translation emits, ``consumes`` the ONNX attributes it handles
    itself (the others pass through to the IR op of the same name), ``check`` reports
    features that cannot be translated (training-only outputs, say).
    """

    build: Callable[[_Node], None]
    needs: tuple[str, ...] | None = None
    consumes: frozenset[str] = frozenset()
    check: Callable[[_NodeInfo], list[str]] | None = None
    until: int | None = None


_RULES: dict[str, list[_Rule]] = {}


def _rule(*op_types: str, needs: tuple[str, ...] | None = None, consumes: Sequence[str] = (),
          check: Callable[[_NodeInfo], list[str]] | None = None, until: int | None = None
          ) -> Callable[[Callable[[_Node], None]], Callable[[_Node], None]]:
    def register(build: Callable[[_Node], None]) -> Callable[[_Node], None]:
        for op_type in op_types:
            _RULES.setdefault(op_type, []).append(
                _Rule(build, needs, frozenset(consumes), check, until))
        return build

    return register


def _find_rule(op_type: str, opset: int) -> _Rule | None:
    for rule in _RULES.get(op_type, []):
        if rule.until is None or opset < rule.until:
            return rule
    return None


@dataclass
class _NodeInfo:
    """What the scan knows about one ONNX node before anything is built."""

    proto: onnx.NodeProto
    name: str
    opset: int
    attrs: dict[str, Any]
    used: Callable[[str], bool]
    constant: Callable[[str], np.ndarray | None]

    @property
    def op_type(self) -> str:
        return self.proto.op_type


class _Node:
    """Build-time view of one ONNX node: its IR operands, attributes and output names."""

    def __init__(self, builder: _Builder, info: _NodeInfo, rule: _Rule | None):
        self.b = builder
        self.info = info
        self.name = info.name
        self.op_type = info.op_type
        self.opset = info.opset
        self.attrs = info.attrs
        self.rule = rule
        self.inputs: list[Value | None] = [builder.lookup(n) if n else None
                                           for n in info.proto.input]
        self.outputs = list(info.proto.output)
        self.origins = _recorded_origins(info)

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def passthrough_attrs(self) -> dict[str, Any]:
        """Attributes the rule did not consume, without defaults the IR op does not declare."""
        consumed = self.rule.consumes if self.rule else frozenset()
        kept, _ = _split_attrs(self.op_type, self.op_type,
                               {k: v for k, v in self.attrs.items() if k not in consumed})
        return kept

    def required(self, attr: str) -> Any:
        if attr not in self.attrs:
            raise ModelLoadError(f"{self.op_type} node {self.name!r} lacks its required "
                                 f"attribute {attr!r}")
        return self.attrs[attr]

    def const(self, data: Any, suffix: str) -> Value:
        return self.b.graph.add_constant(data, f"{self.name}.{suffix}")

    def emit(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
             outputs: Sequence[str] | None = None, suffix: str | None = None) -> list[Value]:
        """Add an IR node named after the ONNX node (``<name>/<suffix>`` for a helper node).
        ``outputs`` are ONNX tensor names the new values are bound to; without them the node
        gets fresh intermediate names."""
        inputs = list(inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        node_name = self.name if suffix is None else f"{self.name}/{suffix}"
        names = list(outputs) if outputs is not None else [
            f"{self.outputs[0] or self.name}/{suffix or op.lower()}"]
        node = self.b.graph.add_node(op, inputs, attrs or {}, name=node_name, outputs=names,
                                     origins=self.origins)
        values = self.b.fold(node)
        if outputs is not None:
            for onnx_name, value in zip(outputs, values, strict=True):
                self.b.bind(onnx_name, value)
        return values

    def bind(self, onnx_name: str, value: Value) -> None:
        self.b.bind(onnx_name, value)

    def used_outputs(self, ir_op: str) -> list[str]:
        """The ONNX outputs to create: trailing optional outputs nobody reads are dropped."""
        opdef = ops.get(ir_op)
        outs = list(self.outputs)
        minimum = 1 if opdef.variadic_outputs else sum(
            1 for o in opdef.outputs if not o.endswith("?"))
        if not opdef.variadic_outputs:
            while len(outs) > max(minimum, 1) and not self.info.used(outs[-1]):
                outs.pop()
        return outs


def _recorded_origins(info: _NodeInfo) -> tuple[str, ...] | None:
    """The user layers a node written by ``qc.export_onnx`` records that it computes (its
    ``qcompiler.origins`` metadata), so that a round trip keeps them; None for other nodes."""
    for prop in info.proto.metadata_props:
        if prop.key != ORIGINS_KEY:
            continue
        try:
            layers = json.loads(prop.value)
        except ValueError:
            layers = None
        if not (isinstance(layers, list) and layers
                and all(isinstance(name, str) and name for name in layers)):
            raise ModelLoadError(f"{info.op_type} node {info.name!r}: its {ORIGINS_KEY!r} "
                                 f"metadata must be a JSON list of layer names, got "
                                 f"{prop.value!r:.80}")
        return tuple(layers)
    return None


def _default_build(n: _Node) -> None:
    n.emit(n.op_type, n.inputs, n.passthrough_attrs(), n.used_outputs(n.op_type))


# Constant nodes become graph constants named after their output.
def _constant_array(info: _NodeInfo) -> np.ndarray:
    attrs = info.attrs
    if "value" in attrs:
        return attrs["value"]
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    raise AssertionError("checked by _check_constant")


def _check_constant(info: _NodeInfo) -> list[str]:
    forms = ("value", "value_float", "value_floats", "value_int", "value_ints")
    if not any(k in info.attrs for k in forms):
        given = ", ".join(sorted(info.attrs)) or "nothing"
        return [f"Constant with {given}"]
    return []


@_rule("Constant", needs=(), check=_check_constant)
def _constant(n: _Node) -> None:
    value = n.b.graph.add_constant(_constant_array(n.info), n.outputs[0])
    n.bind(n.outputs[0], value)


def _constant_false(info: _NodeInfo, index: int) -> bool:
    names = info.proto.input
    if index >= len(names) or not names[index]:
        return True
    array = info.constant(names[index])
    return array is not None and not bool(np.asarray(array).any())


def _check_dropout(info: _NodeInfo) -> list[str]:
    problems = []
    if any(info.used(o) for o in info.proto.output[1:]):
        problems.append("Dropout (training mask output used)")
    if not _constant_false(info, 2) or info.attrs.get("is_test", 1) == 0:
        problems.append("Dropout (training mode)")
    return problems


@_rule("Dropout", consumes=("ratio", "is_test"), check=_check_dropout)
def _dropout(n: _Node) -> None:
    """Inference-mode Dropout in its opset-21 form: ratio as an input, no mask output."""
    inputs = list(n.inputs[:3])
    if "ratio" in n.attrs:
        inputs = [inputs[0], n.const(np.array(n.attrs["ratio"], dtype=np.float32), "ratio")]
    n.emit("Dropout", inputs, n.passthrough_attrs(), [n.outputs[0]])


def _check_batchnorm(info: _NodeInfo) -> list[str]:
    """Inference only. Asking for more than Y means training mode (before opset 14 that is
    the only sign of it, and onnxruntime then normalises with the batch's own statistics)."""
    problems = []
    if (info.attrs.get("training_mode", 0) != 0 or info.attrs.get("is_test", 1) == 0
            or any(info.proto.output[1:])):
        problems.append("BatchNormalization (training mode)")
    if info.attrs.get("spatial", 1) != 1:
        problems.append("BatchNormalization (spatial=0)")
    return problems


@_rule("BatchNormalization", consumes=("spatial", "is_test", "consumed_inputs", "training_mode"),
       check=_check_batchnorm)
def _batchnorm(n: _Node) -> None:
    n.emit("BatchNormalization", n.inputs[:5], n.passthrough_attrs(), [n.outputs[0]])


@_rule("Clip", consumes=("min", "max"), until=11)
def _clip_attrs(n: _Node) -> None:
    x = n.inputs[0]
    bounds = [n.const(np.array(n.attrs[k], dtype=x.dtype.np), k) if k in n.attrs else None
              for k in ("min", "max")]
    n.emit("Clip", [x, *bounds], n.passthrough_attrs(), [n.outputs[0]])


def _ints_input(n: _Node, attr: str) -> Value | None:
    if attr not in n.attrs:
        return None
    return n.const(np.array(n.attrs[attr], dtype=np.int64), attr)


@_rule("Squeeze", "Unsqueeze", consumes=("axes",), until=13)
def _axes_attr(n: _Node) -> None:
    n.emit(n.op_type, [n.inputs[0], _ints_input(n, "axes")], n.passthrough_attrs(), n.outputs)


@_rule("ReduceSum", consumes=("axes",), until=13)
@_rule(*(op for op in _REDUCE_OPS if op != "ReduceSum"), consumes=("axes",), until=18)
def _reduce_axes_attr(n: _Node) -> None:
    n.emit(n.op_type, [n.inputs[0], _ints_input(n, "axes")], n.passthrough_attrs(), n.outputs)


@_rule("Split", consumes=("split",), until=18)
def _split_old(n: _Node) -> None:
    split = _ints_input(n, "split") if n.opset < 13 else n.input(1)
    attrs = n.passthrough_attrs()
    if split is None:
        attrs["num_outputs"] = len(n.outputs)
    n.emit("Split", [n.inputs[0], split], attrs, n.outputs)


@_rule("Pad", consumes=("pads", "value"), until=11)
def _pad_attrs(n: _Node) -> None:
    x = n.inputs[0]
    pads = n.const(np.array(n.required("pads"), dtype=np.int64), "pads")
    value = (n.const(np.array(n.attrs["value"], dtype=x.dtype.np), "value")
             if "value" in n.attrs else None)
    n.emit("Pad", [x, pads, value], n.passthrough_attrs(), n.outputs)


@_rule("Slice", consumes=("starts", "ends", "axes"), until=10)
def _slice_attrs(n: _Node) -> None:
    n.required("starts"), n.required("ends")
    inputs = [n.inputs[0], *(_ints_input(n, k) for k in ("starts", "ends", "axes"))]
    n.emit("Slice", inputs, n.passthrough_attrs(), n.outputs)


def _resize_like_upsample(n: _Node, scales: Value, mode: str) -> None:
    """Upsample and Resize-10 sample at ``x_out / scale`` ("asymmetric"); onnxruntime picks
    the nearest pixel axis by axis: flooring on an axis it enlarges (or keeps), ceiling on one
    it shrinks. With constant scales that shrink some axes and enlarge others this is two
    Resize nodes, one per rounding, each over its own axes (nearest resizing is separable, so
    the result is exact); scales known only at run time are taken as enlarging."""
    mode = "linear" if mode in ("linear", "bilinear", "trilinear") else mode
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": "asymmetric"}
    if mode != "nearest":
        n.emit("Resize", [n.inputs[0], None, scales], attrs, [n.outputs[0]])
        return
    factors = scales.data.reshape(-1) if scales.is_constant else np.ones(0, np.float32)
    down = [a for a, f in enumerate(factors) if f < 1]
    up = [a for a, f in enumerate(factors) if f > 1]  # axes with scale 1 are copied
    if not down or not up:
        attrs["nearest_mode"] = "ceil" if down else "floor"
        n.emit("Resize", [n.inputs[0], None, scales], attrs, [n.outputs[0]])
        return
    shrunk = n.emit("Resize", [n.inputs[0], None, n.const(factors[down], "scales_down")],
                    {**attrs, "nearest_mode": "ceil", "axes": tuple(down)}, suffix="shrink")[0]
    n.emit("Resize", [shrunk, None, n.const(factors[up], "scales_up")],
           {**attrs, "nearest_mode": "floor", "axes": tuple(up)}, [n.outputs[0]])


@_rule("Upsample", needs=("Resize",), consumes=("scales", "mode", "height_scale", "width_scale"))
def _upsample(n: _Node) -> None:
    if "scales" in n.attrs:
        scales = n.const(np.array(n.attrs["scales"], dtype=np.float32), "scales")
    else:
        scales = n.inputs[1]
    _resize_like_upsample(n, scales, n.attrs.get("mode", "nearest"))


@_rule("Resize", consumes=("mode",), until=11)
def _resize_10(n: _Node) -> None:
    _resize_like_upsample(n, n.inputs[1], n.attrs.get("mode", "nearest"))


@_rule("Resize")
def _resize(n: _Node) -> None:
    """Resize 11+: an empty constant roi or scales (required inputs before opset 13) means
    "not given", which opset 13+ spells as an empty input name."""
    inputs = [None if i in (1, 2) and v is not None and v.is_constant and v.data.size == 0
              else v for i, v in enumerate(n.inputs)]
    n.emit("Resize", inputs, n.passthrough_attrs(), [n.outputs[0]])


@_rule("QuantizeLinear", "DequantizeLinear")
def _quantize_dequantize(n: _Node) -> None:
    """QDQ models: a one-element constant scale or zero point means per tensor, spelled as a
    scalar in the IR (onnxruntime's quantize_static writes a [1] scale beside a scalar zero
    point, which onnxruntime reads as per tensor)."""
    inputs = list(n.inputs)
    for k, suffix in ((1, "scale"), (2, "zero_point")):
        value = n.input(k)
        if value is not None and value.is_constant and value.data.size == 1 and value.shape:
            inputs[k] = n.const(value.data.reshape(()), suffix)
    n.emit(n.op_type, inputs, n.passthrough_attrs(), n.used_outputs(n.op_type))


def _softmax_2d(n: _Node) -> None:
    """Before opset 13 these ops flatten the input to 2-D at ``axis`` (default 1) and normalise
    each row; in opset-21 terms that is Flatten, the op over the last axis, and Reshape back."""
    x = n.inputs[0]
    rank = x.type.rank
    axis = n.attrs.get("axis", 1)
    if not -rank <= axis < max(rank, 1):
        raise ShapeInferenceError(
            f"{n.op_type} node {n.name!r}: axis {axis} is out of range for rank {rank}")
    axis %= max(rank, 1)
    if axis == rank - 1:
        n.emit(n.op_type, [x], {"axis": -1}, [n.outputs[0]])
        return
    flat = n.emit("Flatten", [x], {"axis": axis}, suffix="flatten")[0]
    shape = n.emit("Shape", [x], {}, suffix="shape")[0]
    rows = n.emit(n.op_type, [flat], {"axis": -1})[0]
    n.emit("Reshape", [rows, shape], {}, [n.outputs[0]], suffix="reshape")


for _op in ("Softmax", "LogSoftmax"):
    _rule(_op, needs=("Flatten", "Shape", "Reshape", _op), consumes=("axis",),
          until=13)(_softmax_2d)


# -- attributes and dtypes -----------------------------------------------------------------------


def _attr_value(attr: AttributeProto) -> Any:
    """An ONNX attribute as an IR attribute value (int, float, str, tuple or ndarray)."""
    t = attr.type
    if t == AttributeProto.INT:
        return int(attr.i)
    if t == AttributeProto.FLOAT:
        return float(attr.f)
    if t == AttributeProto.STRING:
        return attr.s.decode("utf-8", errors="replace")
    if t == AttributeProto.INTS:
        return tuple(int(v) for v in attr.ints)
    if t == AttributeProto.FLOATS:
        return tuple(float(v) for v in attr.floats)
    if t == AttributeProto.STRINGS:
        return tuple(s.decode("utf-8", errors="replace") for s in attr.strings)
    if t == AttributeProto.TENSOR:
        return attr.t  # converted once its dtype has been checked
    return attr  # graphs, sparse tensors, type protos: reported by the scan


def _onnx_default(op_type: str, attr: str) -> Any:
    """The opset-21 default of an ONNX attribute, or a sentinel when it has none."""
    try:
        schema = defs.get_schema(op_type, IR_OPSET, "")
    except defs.SchemaError:
        return _NO_DEFAULT
    proto = schema.attributes.get(attr)
    if proto is None or proto.default_value.type == AttributeProto.UNDEFINED:
        return _NO_DEFAULT
    return _attr_value(proto.default_value)


_NO_DEFAULT = object()


def _split_attrs(op_type: str, ir_op: str, attrs: dict[str, Any]
                 ) -> tuple[dict[str, Any], list[str]]:
    """(attributes for the IR op, attributes it cannot take). An attribute the IR op does not
    declare is dropped when it holds the ONNX default, and unsupported otherwise."""
    declared = ops.get(ir_op).attrs
    kept, refused = {}, []
    for key, value in attrs.items():
        if key in declared:
            kept[key] = value
        elif not _same(value, _onnx_default(op_type, key)):
            refused.append(f"{key}={_show(value)}")
    return kept, refused


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def _to_array(tensor: TensorProto, what: str) -> np.ndarray:
    """``tensor`` as an array. Data that does not fill its dims or fit its dtype, or external
    data that cannot be read, is a ``ModelLoadError`` naming ``what``."""
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, OSError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"cannot read {what}: {exc}") from None


def _dtype_name(code: int) -> str:
    try:
        return TensorProto.DataType.Name(code).lower()
    except ValueError:
        return f"code {code}"


def _supported_dtypes() -> str:
    return ", ".join(FROM_ONNX.values())


# -- phase 1: scan -------------------------------------------------------------------------------


@dataclass
class _Scan:
    """Everything about the model that can be checked before building, collected at once."""

    model: onnx.ModelProto
    opset: int
    input_shapes: dict[str, Sequence[int | str]]
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    infos: list[_NodeInfo] = field(default_factory=list)
    input_types: dict[str, TensorType] = field(default_factory=dict)
    initializers: dict[str, TensorProto] = field(default_factory=dict)
    constants: dict[str, TensorProto | np.ndarray] = field(default_factory=dict)

    def add(self, key: str, who: str) -> None:
        names = self.unsupported.setdefault(key, [])
        if who not in names:
            names.append(who)

    def run(self) -> None:
        g = self.model.graph
        self.initializers = {t.name: t for t in g.initializer}
        for sparse in g.sparse_initializer:
            self.add("sparse initializers", sparse.values.name)
        for t in g.initializer:
            self._check_dtype(t.data_type, t.name)
        _check_single_writer(g, self.initializers)
        self.constants = dict(self.initializers)
        used = {name for node in g.node for name in node.input if name}
        used |= {o.name for o in g.output}
        order = _topological_order(g)
        for index in order:
            node = g.node[index]
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                value = next((a.t for a in node.attribute if a.name == "value"
                              and a.type == AttributeProto.TENSOR), None)
                if value is not None and node.output:
                    self.constants[node.output[0]] = value
        taken: set[str] = set()
        for index in order:
            self._scan_node(g.node[index], index, used, taken)
        self._scan_inputs()
        if self.unsupported:
            raise UnsupportedModelError(self._message(), self.unsupported)

    def _constant_value(self, name: str) -> np.ndarray | None:
        value = self.constants.get(name)
        if isinstance(value, TensorProto):
            try:
                return numpy_helper.to_array(value)
            except (ValueError, TypeError):
                return None
        return value

    def _check_dtype(self, code: int, who: str) -> bool:
        if code in _DTYPES:
            return True
        self.add(f"dtype {_dtype_name(code)}", who)
        return False

    def _scan_node(self, node: onnx.NodeProto, index: int, used: set[str],
                   taken: set[str]) -> None:
        name = node.name or f"{node.op_type}_{index}"
        while name in taken:  # duplicate ONNX node names: keep them apart, stably
            name = f"{name}_{index}"
        taken.add(name)
        attrs = {a.name: _attr_value(a) for a in node.attribute}
        info = _NodeInfo(node, name, self.opset, attrs, lambda o: bool(o) and o in used,
                         self._constant_value)
        self.infos.append(info)
        if node.domain not in _DEFAULT_DOMAINS:
            self.add(f"{node.domain}.{node.op_type} (domain {node.domain!r})", name)
            return
        # A qcompiler extension an ONNX node spells (Conv's input Z) is reported below.
        if not (node.op_type in ops.OPS and _extensions_used(info)):
            _check_against_schema(node, name, self.opset)
        for key, value in list(attrs.items()):
            if isinstance(value, TensorProto):
                if self._check_dtype(value.data_type, f"{name} (attribute {key})"):
                    attrs[key] = _to_array(value, f"attribute {key!r} of {node.op_type} node "
                                                  f"{name!r}")
            elif isinstance(value, AttributeProto):
                self.add(f"{node.op_type} (attribute {key} of type "
                         f"{_attr_type_name(value.type)})", name)
                return
        if node.op_type == "Cast" and "to" in attrs:
            self._check_dtype(attrs["to"], f"{name} (Cast to)")
        rule = _find_rule(node.op_type, self.opset)
        needs = (node.op_type,) if rule is None or rule.needs is None else rule.needs
        missing = [op for op in needs if op not in ops.OPS]
        if missing:
            self.add(node.op_type, name)
            return
        if rule is not None and rule.check is not None:
            for problem in rule.check(info):
                self.add(problem, name)
        if node.op_type in ops.OPS and node.op_type in needs:
            extensions = ops.get(node.op_type).extensions
            for what in _extensions_used(info):
                self.add(f"{node.op_type} ({what}: a qcompiler extension, not ONNX)", name)
            passed = {k: v for k, v in attrs.items()
                      if (rule is None or k not in rule.consumes) and k not in extensions}
            _, refused = _split_attrs(node.op_type, node.op_type, passed)
            for attr in refused:
                self.add(f"{node.op_type} (attribute {attr})", name)
            self._check_outputs(info, rule)

    def _check_outputs(self, info: _NodeInfo, rule: _Rule | None) -> None:
        opdef = ops.get(info.op_type)
        if opdef.variadic_outputs or (rule is not None and rule.check is not None):
            return
        outputs = info.proto.output
        for k in range(len(opdef.outputs), len(outputs)):
            if info.used(outputs[k]):
                self.add(f"{info.op_type} (output {_output_name(info, k)})", info.name)

    def _scan_inputs(self) -> None:
        g = self.model.graph
        names = {vi.name for vi in g.input if vi.name not in self.initializers}
        for name in self.input_shapes:
            if name not in names:
                raise UnknownInputError(
                    f"input_shapes names {name!r}, which is not an input of the model "
                    f"(inputs: {', '.join(sorted(names)) or 'none'})")
        symbols: dict[str, int | str] = {}
        fresh = itertools.count()
        dims_of: dict[str, list[int | str] | None] = {}
        for vi in g.input:
            if vi.name in self.initializers:
                continue
            if vi.type.WhichOneof("value") != "tensor_type":
                kind = vi.type.WhichOneof("value") or "no type"
                self.add(f"graph input of type {kind}", vi.name)
                continue
            tt = vi.type.tensor_type
            if not self._check_dtype(tt.elem_type, vi.name):
                continue
            if not tt.HasField("shape"):
                dims_of[vi.name] = None
                continue
            dims: list[int | str] = []
            for d in tt.shape.dim:
                # A negative dim_value (paddle2onnx writes -1) is dynamic, as onnxruntime
                # takes it; a dim_value of 0 is a real empty axis (onnxruntime fixes it at 0).
                if d.HasField("dim_value") and d.dim_value >= 0:
                    dims.append(int(d.dim_value))
                elif d.dim_param:
                    dims.append(d.dim_param)
                else:
                    dims.append(f"unk__{next(fresh)}")
            dims_of[vi.name] = dims
        for name, dims in dims_of.items():
            if name in self.input_shapes:
                _bind_symbols(name, dims, self.input_shapes[name], symbols)
        for vi in g.input:
            if vi.name not in dims_of:
                continue
            dims = dims_of[vi.name]
            if vi.name in self.input_shapes:
                dims = [int(d) if isinstance(d, (int, np.integer)) else str(d)
                        for d in self.input_shapes[vi.name]]
            elif dims is None:
                self.add("graph input of unknown rank (give its shape in input_shapes)", vi.name)
                continue
            else:
                dims = [symbols.get(d, d) if isinstance(d, str) else d for d in dims]
            self.input_types[vi.name] = TensorType(_DTYPES[vi.type.tensor_type.elem_type],
                                                   tuple(dims))

    def _message(self) -> str:
        lines = [f"the model cannot be imported: it uses {len(self.unsupported)} unsupported op "
                 f"type(s) or feature(s), listed with the nodes or tensors that use them:"]
        for key, names in self.unsupported.items():
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)"
                                            if len(names) > 8 else "")
            lines.append(f"  {key}: {shown}" if names else f"  {key}")
        if any(k.startswith("dtype ") for k in self.unsupported):
            lines.append(f"supported dtypes: {_supported_dtypes()}")
        if any(_is_quantized_operator(k) for k in self.unsupported):
            lines.append("quantized operators (onnxruntime's QOperator format) are not "
                         "imported; a QDQ model (onnxruntime's QuantFormat.QDQ: QuantizeLinear "
                         "and DequantizeLinear around float ops) is")
        if any(_op_type(k) in _DYNAMIC_OPERATORS for k in self.unsupported):
            lines.append("onnxruntime's quantize_dynamic writes no QDQ form: load the float "
                         "model and quantize it with qc.quantize(g, None, "
                         "qc.QuantConfig(mode='dynamic'))")
        return "\n".join(lines)


# The integer ops of onnxruntime's quantize_dynamic (ONNX and contrib), and of its QOperator
# format.
_DYNAMIC_OPERATORS = ("ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul",
                      "MatMulIntegerToFloat")
_QUANTIZED_OPERATORS = (*_DYNAMIC_OPERATORS, "QGemm", "QAttention")


def _op_type(key: str) -> str:
    """The op type of an unsupported-feature key (``QLinearConv``, ``com.microsoft.QGemm
    (domain ...)``)."""
    return key.split(" ")[0].rsplit(".", 1)[-1]


def _is_quantized_operator(key: str) -> bool:
    """Whether an unsupported-feature key names a quantized operator that has a QDQ
    spelling."""
    op_type = _op_type(key)
    return op_type.startswith("QLinear") or op_type in _QUANTIZED_OPERATORS


def _check_against_schema(node: onnx.NodeProto, name: str, opset: int) -> None:
    """A node must have as many inputs and outputs (empty names included) as its ONNX schema
    allows, and attributes of the types it declares, as onnx's checker and onnxruntime
    require; an op ONNX does not know is reported elsewhere."""
    try:
        schema = defs.get_schema(node.op_type, opset, "")
    except defs.SchemaError:
        return
    where = f"{node.op_type} node {name!r}"
    spec = f"ONNX {node.op_type}-{schema.since_version}"
    for what, count, low, high in (("input", len(node.input), schema.min_input,
                                    schema.max_input),
                                   ("output", len(node.output), schema.min_output,
                                    schema.max_output)):
        if not low <= count <= high:
            allowed = f"{low} to {high}" if high < 2**31 - 1 else f"at least {low}"
            raise ModelLoadError(f"{where} has {count} {what}s; {spec} takes {allowed}: the "
                                 f"model is malformed")
    for attr in node.attribute:
        declared = schema.attributes.get(attr.name)
        if declared is not None and int(declared.type) != attr.type:
            raise ModelLoadError(
                f"{where}: attribute {attr.name!r} is {_attr_type_name(attr.type)}, but {spec} "
                f"declares it {_attr_type_name(int(declared.type))}: the model is malformed")


def _attr_type_name(code: int) -> str:
    try:
        return AttributeProto.AttributeType.Name(code).lower()
    except ValueError:
        return f"of unknown type {code}"


def _extensions_used(info: _NodeInfo) -> list[str]:
    """The qcompiler extensions of its IR op (fused-form inputs and attributes) that an ONNX
    node spells; ONNX has none of them, so a node that does is malformed."""
    opdef = ops.get(info.op_type)
    used = [f"attribute {k}" for k in info.attrs if k in opdef.extensions]
    used += [f"input {formal}" for formal, given in zip(opdef.input_names, info.proto.input)
             if given and formal in opdef.extensions]
    return used


def _output_name(info: _NodeInfo, k: int) -> str:
    try:
        schema = defs.get_schema(info.op_type, info.opset, "")
        return schema.outputs[k].name if k < len(schema.outputs) else str(k)
    except defs.SchemaError:
        return str(k)


def _bind_symbols(name: str, model_dims: list[int | str] | None, given: Sequence[int | str],
                  symbols: dict[str, int | str]) -> None:
    """Check ``input_shapes[name]`` against the model's shape; record what each symbol became."""
    given = list(given)
    for d in given:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer, str)) or (
                isinstance(d, (int, np.integer)) and d < 0):
            raise InputShapeError(f"input_shapes[{name!r}] = {given}: dimensions must be "
                                  f"non-negative ints or symbol names")
    if model_dims is None:
        return
    if len(given) != len(model_dims):
        raise InputShapeError(f"input_shapes[{name!r}] = {given} has rank {len(given)}, but "
                              f"input {name!r} has rank {len(model_dims)} in the model "
                              f"(shape {model_dims})")
    for axis, (model_dim, dim) in enumerate(zip(model_dims, given, strict=True)):
        if isinstance(model_dim, int):
            if model_dim != dim:
                raise InputShapeError(
                    f"input_shapes[{name!r}] = {given}: dimension {axis} is fixed at "
                    f"{model_dim} in the model (shape {model_dims}), not {dim!r}")
            continue
        previous = symbols.setdefault(model_dim, dim)
        if previous != dim:
            raise InputShapeError(
                f"input_shapes[{name!r}] = {given}: dimension {axis} is the model's symbol "
                f"{model_dim!r}, already fixed at {previous!r} by input_shapes")


def _check_single_writer(g: onnx.GraphProto, initializers: Mapping[str, TensorProto]) -> None:
    """Every tensor has one definition (ONNX graphs are SSA: onnx's checker and onnxruntime
    refuse a second one); a node output that repeats a graph input, an initializer or another
    node's output is an error naming both."""
    writer = {name: f"initializer {name!r}" for name in initializers}
    for vi in g.input:
        if vi.name in initializers:  # an initializer listed as an input (IR version < 4)
            continue
        if vi.name in writer:
            raise ModelLoadError(f"graph input {vi.name!r} is listed twice: an ONNX tensor has "
                                 f"exactly one definition (the file is malformed)")
        writer[vi.name] = f"graph input {vi.name!r}"
    for index, node in enumerate(g.node):
        who = f"{node.op_type} node {node.name or f'{node.op_type}_{index}'!r}"
        for name in node.output:
            if not name:
                continue
            if name in writer:
                raise ModelLoadError(
                    f"{who} writes tensor {name!r}, which {writer[name]} already defines: an "
                    f"ONNX tensor has exactly one definition (the file is malformed)")
            writer[name] = who


def _topological_order(g: onnx.GraphProto) -> list[int]:
    """Node indices in a dependency order (ONNX requires one; some exporters do not comply)."""
    producer = {o: i for i, node in enumerate(g.node) for o in node.output if o}
    deps = nx.DiGraph()
    deps.add_nodes_from(range(len(g.node)))
    for i, node in enumerate(g.node):
        for name in node.input:
            if name in producer and producer[name] != i:
                deps.add_edge(producer[name], i)
    try:
        return list(nx.lexicographical_topological_sort(deps))
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(g.node[a].name or g.node[a].op_type for a, _ in nx.find_cycle(deps))
        raise ModelLoadError(f"the model's graph has a cycle: {cycle}") from None


# -- phase 2: build ------------------------------------------------------------------------------


class _Builder:
    """Builds the IR graph from a model the scan accepted."""

    def __init__(self, model: onnx.ModelProto, opset: int, scan: _Scan):
        self.model = model
        self.opset = opset
        self.scan = scan
        self.graph = Graph(model.graph.name or "main")
        self.interpreter = Interpreter(self.graph)
        self.env: dict[str, Value] = {}

    def lookup(self, name: str) -> Value:
        try:
            return self.env[name]
        except KeyError:
            raise ModelLoadError(f"the model reads tensor {name!r}, which no node, graph input "
                                 f"or initializer defines") from None

    def bind(self, onnx_name: str, value: Value) -> None:
        self.env[onnx_name] = value

    def fold(self, node: Node) -> list[Value]:
        """``node``'s outputs, as constants when it can be folded now (its operands constant or
        its contents known, its result within the folding cap): the nodes added after it then
        see those contents, which the ones whose output rank depends on them need (a Squeeze
        or a keepdims=0 reduction whose axes are ``Add(a, b)`` or a ``Concat`` of constants)."""
        outputs = list(node.outputs)
        folded = fold_node(self.graph, node, self.interpreter, unread=True)
        return outputs if folded is None else folded  # type: ignore[return-value]

    def build(self) -> Graph:
        g = self.model.graph
        for vi in g.input:
            if vi.name in self.scan.input_types:
                self.bind(vi.name, self.graph.add_input(vi.name, self.scan.input_types[vi.name]))
        for t in g.initializer:
            array = _to_array(t, f"initializer {t.name!r}")
            self.bind(t.name, self.graph.add_constant(array, t.name))
        for info in self.scan.infos:
            rule = _find_rule(info.op_type, self.opset)
            node = _Node(self, info, rule)
            (rule.build if rule is not None else _default_build)(node)
        self.graph.set_outputs([self.lookup(vi.name) for vi in g.output])
        return self.graph
