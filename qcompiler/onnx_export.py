"""Export a graph to ONNX (opset 21): float graphs and QDQ graphs, which onnxruntime runs.

The IR spells every op as ONNX opset 21 does, so most nodes are written as they are, their
values keeping their names (constants become initializers). What ONNX does not have is
spelled with standard ops:

- fused forms (qcompiler extensions, see ``qcompiler/ops/activation.py``): a Conv with a
  residual ``Z`` and an ``activation`` becomes ``Conv``, ``Add(., Z)`` and the activation op; a
  MatMul with a ``bias`` becomes ``MatMul`` and ``Add(., bias)``. Each is bit-exact with the
  fused node on float32 (the fused kernels add and activate in that order).
- ``Observe`` nodes (calibration's identities) are dropped: their readers read the observed
  value (an ``Identity`` keeps the name when the observed value is a graph output).
- ``Requantize`` (what ``cancel-qdq`` makes of a DQ -> Q pair with different parameters) is
  that pair again, DequantizeLinear then QuantizeLinear: bit-exact with its "float" rounding,
  the composition itself; another rounding mode has no ONNX spelling and is refused.
- a SAME ``auto_pad`` that onnxruntime cannot run (a dilated window, or a stride so large
  that the padding the spec clamps at 0 comes out negative) is written as the explicit pads it
  means, when the spatial sizes are known: the same windows, so the same numbers.
- a GlobalMaxPool of integers (``cancel-qdq`` moves DQ below it; ONNX's GlobalMaxPool takes
  floats only) is the ReduceMax over the spatial axes that it is, exactly.
- the integer constant, scale and zero point of a weight's DequantizeLinear get initializers
  of their own when other nodes share them, and an int8 weight's DequantizeLinear that several
  nodes read is written once per reader, as onnxruntime's weight rewrites need (see
  ``own_parameter`` and ``weight_dequantize``); an initializer no node reads is not written.

Any other op ONNX lacks is refused with an ``ExportError`` listing every such node. Symbolic
dimensions become ``dim_param``s (an unknown ``?`` dimension is left without one). Each node
keeps its name (a node split from a fused one is ``<name>/<role>``) and records the user's
layers it computes (``Node.origins``) in its ``doc_string`` and in its metadata under
``qcompiler.origins`` (a JSON list), which ``load_onnx`` reads back. The file is written to a
temporary file beside the target and renamed into place, so a failed export leaves no partial
file.

Opset 21 with IR version 10 is ONNX 1.16, which onnxruntime implements from 1.18 on (by its
version table; the tests run 1.32); per-axis Q/DQ needs opset 13, which 21 covers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from . import ops, qdq
from .errors import ExportError, SaveError
from .graph import Graph, Node, Value
from .onnx_import import ORIGINS_KEY
from .ops.activation import ACTIVATIONS
from .ops.dtypes import TO_ONNX
from .ops.window import conv_window
from .paths import atomic_file
from .quant_ops import INTEGER_OPS
from .types import TensorType

EXPORT_OPSET = 21
IR_VERSION = 10  # the IR version of opset 21
OBSERVE = "Observe"
REQUANTIZE = "Requantize"
FUSED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WINDOWED_OPS = ("Conv", "MaxPool", "AveragePool")  # whose SAME padding conv_window computes

_ATTR_TYPES = {
    "int": onnx.AttributeProto.INT, "float": onnx.AttributeProto.FLOAT,
    "string": onnx.AttributeProto.STRING, "ints": onnx.AttributeProto.INTS,
    "floats": onnx.AttributeProto.FLOATS, "tensor": onnx.AttributeProto.TENSOR,
}


def export_onnx(graph: Graph, path: str | Path) -> None:
    """Write ``graph`` to ``path`` as an ONNX model (see the module docstring); ``SaveError``
    when the file cannot be written, ``ExportError`` when the graph has no ONNX spelling."""
    model = to_onnx(graph)
    write_model(model, path)


def to_onnx(graph: Graph) -> onnx.ModelProto:
    """The ONNX model of ``graph``, checked by ``onnx.checker``."""
    refused = {}
    for node in graph.nodes:
        if not _exportable(node):
            refused.setdefault(node.op, []).append(node)
    if refused:
        lines = [f"  {op}: " + ", ".join(n.describe() for n in nodes)
                 for op, nodes in refused.items()]
        hint = ("lower or remove them first" if not set(refused) & INTEGER_OPS else
                "integer ops have no ONNX spelling; qc.quantize with "
                "QuantConfig(lower=False) gives the QDQ form that ONNX runtimes read")
        raise ExportError(f"cannot export to ONNX: these ops have no ONNX spelling ({hint}):\n"
                          + "\n".join(lines),
                          {op: [n.name for n in nodes] for op, nodes in refused.items()})
    writer = _Writer(graph)
    for node in graph.nodes:
        writer.node(node)
    onnx_graph = helper.make_graph(
        writer.nodes, graph.name,
        [_value_info(v.name, v.type) for v in graph.inputs],
        [_value_info(v.name, v.type) for v in graph.outputs],
        initializer=writer.read_initializers())
    from . import __version__

    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
                              producer_name="qcompiler", producer_version=__version__)
    model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model)  # not full_check: onnx's shape inference departs from
    except onnx.checker.ValidationError as exc:  # the spec on dilated SAME pooling
        raise ExportError(f"the exported model of graph {graph.name!r} does not pass "
                          f"onnx.checker: {exc}") from None
    return model


def write_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Write ``model`` to a temporary file beside ``path`` and rename it into place; a path
    that is a directory, or ends with a separator (``"exports/"``), is refused."""
    if Path(path).is_dir() or str(path).endswith(("/", os.sep)):
        raise SaveError(f"cannot export to {str(path)!r}: it names a directory (an ONNX model "
                        f"is one file, e.g. model.onnx)")
    path = Path(path)
    try:
        blob = model.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise SaveError(f"cannot export to {str(path)!r}: {exc}; nothing was written") from None
    with atomic_file(path, "export to") as file:
        file.write(blob)


def _exportable(node: Node) -> bool:
    if node.op == OBSERVE:
        return True
    if node.op == REQUANTIZE:
        return node.attrs.get("rounding", "float") == "float"
    return _is_onnx_op(node.op)


def _is_onnx_op(op: str) -> bool:
    try:
        defs.get_schema(op, EXPORT_OPSET, "")
    except defs.SchemaError:
        return False
    return True


def _value_info(name: str, type: TensorType) -> onnx.ValueInfoProto:
    dims = [None if d == "?" else d for d in type.shape]
    return helper.make_tensor_value_info(name, TO_ONNX[type.dtype.value], dims)


class _Writer:
    """Collects the ONNX nodes and initializers of one graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = [numpy_helper.from_array(v.data, v.name)
                             for v in graph.constants.values()]
        self.taken = {v.name for v in graph.values()}
        self.alias: dict[str, str] = {}  # an Observe output -> the value it observes
        self.per_reader: dict[tuple[str, int], str] = {}  # (value, id(reader)) -> its copy

    def read_initializers(self) -> list[onnx.TensorProto]:
        """The initializers a node or a graph output reads (not those that ``own_parameter``
        replaced by copies everywhere)."""
        read = {name for proto in self.nodes for name in proto.input}
        read.update(v.name for v in self.graph.outputs)
        return [t for t in self.initializers if t.name in read]

    def name_of(self, value: Value | None, reader: Node | None = None) -> str:
        """The ONNX name ``reader`` reads ``value`` by."""
        if value is None:
            return ""
        copy = self.per_reader.get((value.name, id(reader)))
        return copy or self.alias.get(value.name, value.name)

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def constant(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def emit(self, node: Node, op: str, inputs: list[str], outputs: list[str], attrs: dict,
             role: str | None = None) -> None:
        proto = helper.make_node(op, inputs, outputs,
                                 name=node.name if role is None else f"{node.name}/{role}")
        proto.attribute.extend(_attributes(node, op, attrs))
        proto.doc_string = f"qcompiler layers: {', '.join(node.origins)}"
        entry = proto.metadata_props.add()
        entry.key, entry.value = ORIGINS_KEY, json.dumps(list(node.origins))
        self.nodes.append(proto)

    def node(self, node: Node) -> None:
        if node.op == OBSERVE:
            self.observe(node)
            return
        if node.op == REQUANTIZE:
            self.requantize(node)
            return
        if node.op == "GlobalMaxPool" and node.inputs[0].dtype.is_integer:
            self.integer_global_max_pool(node)
            return
        if node.op == qdq.DEQUANTIZE and node.inputs[0].is_constant:
            self.weight_dequantize(node)
            return
        inputs = [self.name_of(v, node) for v in node.inputs]
        outputs = [v.name for v in node.outputs]
        attrs = dict(node.attrs)
        attrs = _runnable_padding(node, attrs)
        if node.op not in FUSED_OPS or not _fused(node):
            self.emit(node, node.op, _trimmed(inputs), outputs, attrs)
            return
        self.unfuse(node, inputs, outputs[0], attrs)

    def weight_dequantize(self, node: Node) -> None:
        """A DQ of a constant, reading operands of its own (``own_parameter``). An int8 one
        that several nodes read is written once per reader, each copy with copies of the
        operands: onnxruntime would give each reader a DQ of its own sharing the operands
        (its EnsureUniqueDQForNodeUnit), on which its s8 -> u8 weight rewrite then fails."""
        out, attrs = node.outputs[0], dict(node.attrs)
        self.emit(node, node.op, _trimmed([self.own_parameter(v) for v in node.inputs]),
                  [out.name], attrs)
        if node.inputs[0].dtype != "i8":
            return
        for reader in out.users[1:]:
            operands = ["" if v is None else self.constant(v.data, v.name) for v in node.inputs]
            copy = self.fresh(f"{out.name}/{reader.name}")
            self.emit(node, node.op, _trimmed(operands), [copy], attrs, role=reader.name)
            self.per_reader[(out.name, id(reader))] = copy

    def own_parameter(self, value: Value | None) -> str:
        """The name of a weight DQ's operand (the integer constant, its scale or zero point),
        copied into an initializer of its own when other nodes read it too: onnxruntime
        rewrites each weight's operands in place (its s8 -> u8 weight conversion under
        ``session.x64quantprecision``) and fails on an initializer two weights share (what
        common-subexpression elimination makes of equal zero points, or of equal quantized
        constants such as GELU's 0.5 and 1.0)."""
        if value is None or not value.is_constant or len(value.users) < 2:
            return self.name_of(value)
        return self.constant(value.data, value.name)

    def requantize(self, node: Node) -> None:
        """Requantize(x, s_x, z_x, s_y, z_y) as DequantizeLinear(x, s_x, z_x) and
        QuantizeLinear(., s_y, z_y), each with the node's axis."""
        x, x_scale, x_zero, y_scale, y_zero = (self.name_of(v, node) for v in node.inputs)
        axis = {"axis": node.attrs["axis"]} if "axis" in node.attrs else {}
        real = self.fresh(f"{node.outputs[0].name}/dequantized")
        self.emit(node, qdq.DEQUANTIZE, [x, x_scale, x_zero], [real], axis, role="dequantize")
        self.emit(node, qdq.QUANTIZE, [real, y_scale, y_zero], [node.outputs[0].name], axis,
                  role="quantize")

    def integer_global_max_pool(self, node: Node) -> None:
        """GlobalMaxPool of integers as ReduceMax over the spatial axes, keeping them."""
        x = node.inputs[0]
        axes = self.constant(np.arange(2, len(x.shape), dtype=np.int64), f"{node.name}/axes")
        self.emit(node, "ReduceMax", [self.name_of(x, node), axes], [node.outputs[0].name],
                  {"keepdims": 1})

    def observe(self, node: Node) -> None:
        observed, out = node.inputs[0], node.outputs[0]
        if out.is_graph_output:
            self.emit(node, "Identity", [self.name_of(observed, node)], [out.name], {})
        else:
            self.alias[out.name] = self.name_of(observed, node)

    def unfuse(self, node: Node, inputs: list[str], out: str, attrs: dict) -> None:
        """A fused Conv/ConvTranspose/Gemm/MatMul as the op, then the Add of Conv's residual
        or MatMul's bias, then the activation: the order the fused kernel applies them in."""
        activation = attrs.pop("activation", "")
        params = tuple(attrs.pop("activation_params", ()))
        tail = []  # (op, role, operands after the running value, attributes)
        extra_at = {"Conv": 3, "MatMul": 2}.get(node.op)
        if extra_at is not None and len(inputs) > extra_at and inputs[extra_at]:
            role = "residual" if node.op == "Conv" else "bias"
            tail.append(("Add", role, [inputs.pop(extra_at)], {}))
        if activation:
            tail.append(self.activation(node, activation, params))
        current = self.fresh(f"{out}/{node.op.lower()}") if tail else out
        self.emit(node, node.op, _trimmed(inputs), [current], attrs)
        for k, (op, role, operands, step_attrs) in enumerate(tail):
            result = out if k == len(tail) - 1 else self.fresh(f"{out}/{role}")
            self.emit(node, op, [current, *operands], [result], step_attrs, role=role)
            current = result

    def activation(self, node: Node, name: str, params: tuple) -> tuple[str, str, list, dict]:
        """The standalone op of a fused activation: Clip's bounds become constants of the
        output's dtype, the other ops' params their float attributes."""
        if name == "Clip":
            dtype = node.outputs[0].dtype.np
            bounds = [self.constant(np.array(p, dtype), f"{node.name}/clip.{which}")
                      for p, which in zip(params, ("min", "max"), strict=True)]
            return "Clip", "clip", bounds, {}
        attrs = dict(zip(ACTIVATIONS[name], (float(p) for p in params), strict=True))
        return name, name.lower(), [], attrs


def _runnable_padding(node: Node, attrs: dict) -> dict:
    """``attrs`` with a SAME ``auto_pad`` onnxruntime refuses (dilations, or a negative total
    padding before the spec's clamp) replaced by the explicit pads the spec computes; other
    attributes as given. Only for static spatial sizes and without ``ceil_mode`` (which would
    change the output length of explicit pads)."""
    if (node.op not in WINDOWED_OPS or attrs.get("auto_pad") not in ("SAME_UPPER", "SAME_LOWER")
            or attrs.get("ceil_mode", 0)):
        return attrs
    spatial = node.inputs[0].shape[2:]
    kernel = tuple(attrs.get("kernel_shape") or node.inputs[1].shape[2:])
    if not all(isinstance(d, int) for d in (*spatial, *kernel)):
        return attrs
    strides = tuple(attrs.get("strides") or (1,) * len(spatial))
    dilations = tuple(attrs.get("dilations") or (1,) * len(spatial))
    negative = any((-(-n // st) - 1) * st + (k - 1) * d + 1 < n
                   for n, k, st, d in zip(spatial, kernel, strides, dilations))
    if not negative and all(d == 1 for d in dilations):
        return attrs
    win = conv_window(node.op, spatial, kernel, strides, dilations, (), attrs["auto_pad"])
    return {**{k: v for k, v in attrs.items() if k != "auto_pad"},
            "pads": (*win.begin, *win.pad_end)}


def _fused(node: Node) -> bool:
    """Whether ``node`` uses a qcompiler extension (an activation, Conv's Z, MatMul's bias)."""
    extensions = node.opdef.extensions
    if node.attrs.get("activation"):
        return True
    names = node.opdef.input_names
    return any(v is not None and names[k] in extensions for k, v in enumerate(node.inputs))


def _trimmed(inputs: list[str]) -> list[str]:
    while inputs and not inputs[-1]:
        inputs.pop()
    return inputs


def _attributes(node: Node, op: str, attrs: dict) -> list[onnx.AttributeProto]:
    """The ONNX attributes of ``attrs`` (of op ``op``, typed by its declaration); unset ones
    (None) and the fused-form extensions are left out."""
    opdef = ops.get(op)
    out = []
    for key, value in attrs.items():
        if value is None or key in opdef.extensions:
            continue
        kind = opdef.attr_kinds.get(key)
        if kind == "tensor":
            out.append(helper.make_attribute(key, numpy_helper.from_array(np.asarray(value))))
        elif kind in ("ints", "floats"):
            out.append(helper.make_attribute(key, list(value), attr_type=_ATTR_TYPES[kind]))
        elif kind in _ATTR_TYPES:
            out.append(helper.make_attribute(key, value, attr_type=_ATTR_TYPES[kind]))
        else:
            raise ExportError(f"{node.describe()}: attribute {key!r} = {value!r} has no known "
                              f"ONNX type")
    return out

