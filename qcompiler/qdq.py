"""The QDQ form: how quantized values are spelled in the IR, and the helpers that build it.

A quantized activation is the output of a ``QuantizeLinear`` whose scale and zero point are
constants; its ``TensorType`` carries the same parameters as ``QuantParams``, so "this value is
int8 with scale s" can be read off the type. A quantized weight or bias is an integer constant
whose type carries its ``QuantParams`` and which a ``DequantizeLinear`` turns back into float.
Every pass that inserts, moves or removes Q/DQ nodes builds them here, so the constants and the
types never disagree (``problems`` checks that they agree).

    x ──Q(s, z)──> x_q: i8 {quant}  ──DQ(s, z)──> f32 ──> Conv ...
    w_q: i8[C,...] {quant axis 0}   ──DQ(s[c], 0, axis=0)──> f32 ──┘
"""

from __future__ import annotations

import numpy as np

from .errors import IRError
from .graph import Graph, Node, Value
from .types import DType, QuantParams, TensorType

QUANTIZE = "QuantizeLinear"
DEQUANTIZE = "DequantizeLinear"


def scale_array(params: QuantParams) -> np.ndarray:
    """The scale as the float32 array a Q/DQ node reads: a scalar per tensor, 1-D per axis."""
    scale = np.asarray(params.scale, dtype=np.float32)
    return scale.reshape(()) if params.axis is None else scale


def zero_point_array(params: QuantParams) -> np.ndarray:
    """The zero point as the array a Q/DQ node reads, of the quantized dtype."""
    zero = np.asarray(params.zero_point, dtype=params.dtype.np)
    return zero.reshape(()) if params.axis is None else zero


def exact_params(params: QuantParams) -> QuantParams:
    """``params`` with each scale rounded to float32, the precision Q/DQ nodes compute in, so a
    type's parameters equal the constants the nodes read."""
    scale = tuple(float(s) for s in np.asarray(params.scale, dtype=np.float32))
    return QuantParams(scale, params.zero_point, params.dtype, params.axis, params.qmin,
                       params.qmax)


def _attrs(params: QuantParams) -> dict:
    return {} if params.axis is None else {"axis": params.axis}


def _operands(graph: Graph, params: QuantParams, base: str) -> tuple[Value, Value]:
    scale = graph.add_constant(scale_array(params), f"{base}.scale")
    zero = graph.add_constant(zero_point_array(params), f"{base}.zero_point")
    return scale, zero


def quantized_type(value: Value, params: QuantParams) -> TensorType:
    return TensorType(params.dtype, value.shape, exact_params(params))


def add_quantize(graph: Graph, value: Value, params: QuantParams, *, after: Node | None = None,
                 before: Node | None = None, origins=None, name: str | None = None) -> Value:
    """A ``QuantizeLinear`` of ``value`` (inserted after ``after`` / before ``before``, at the end
    by default); returns its typed output. No use of ``value`` is redirected."""
    params = exact_params(params)
    base = name or f"{value.name}.q"
    scale, zero = _operands(graph, params, base)
    node = graph.add_node(QUANTIZE, [value, scale, zero], _attrs(params), name=base,
                          after=after, before=before, types=[quantized_type(value, params)],
                          origins=origins)
    return node.outputs[0]


def add_dequantize(graph: Graph, q: Value, *, after: Node | None = None,
                   before: Node | None = None, origins=None, name: str | None = None) -> Value:
    """A ``DequantizeLinear`` of the quantized value ``q`` (its type must carry parameters)."""
    params = q.type.quant
    if params is None:
        raise IRError(f"%{q.name} ({q.type}) carries no quantization parameters to dequantize "
                      f"with")
    base = name or f"{q.name}.dq"
    made_by = q.producer
    if made_by is not None and made_by.op == QUANTIZE and same_params(params_of(made_by), params):
        scale, zero = made_by.inputs[1], made_by.inputs[2]  # read the Q node's own constants
    else:
        scale, zero = _operands(graph, params, base)
    node = graph.add_node(DEQUANTIZE, [q, scale, zero], _attrs(params), name=base, after=after,
                          before=before, origins=origins)
    return node.outputs[0]


def insert_qdq(graph: Graph, value: Value, params: QuantParams) -> tuple[Value, Value]:
    """Quantize and dequantize ``value`` right after it is made, and make every reader of
    ``value`` read the dequantized copy instead; returns ``(quantized, dequantized)``.

    The two nodes stand for the producer's layers (or the input's name for a graph input).
    A graph output moves to the dequantized copy, which takes its name (the float value is
    renamed ``NAME.float``), so the graph's signature is unchanged.
    """
    producer = value.producer
    name = value.name
    origins = producer.origins if producer is not None else (name,)
    output = value.is_graph_output
    if output:  # the graph's output keeps its name: it is the dequantized copy now
        graph.rename_value(value, graph.fresh_name(f"{name}.float"))
    # right after the producer; a graph input's pair goes first
    first = {"before": graph.nodes[0]} if producer is None and graph.nodes else {}
    q = add_quantize(graph, value, params, after=producer, origins=origins, name=f"{name}.q",
                     **first)
    dq = add_dequantize(graph, q, after=q.producer if not first else None, origins=origins,
                        name=f"{name}.dq", **first)
    graph.replace_all_uses_with(value, dq, exclude={q.producer})
    if output:
        graph.rename_value(dq, name)
    return q, dq


def add_quantized_constant(graph: Graph, data: np.ndarray, params: QuantParams,
                           name: str) -> Value:
    """An integer constant holding ``data`` (already quantized) typed with ``params``."""
    params = exact_params(params)
    array = np.asarray(data)
    if array.dtype != params.dtype.np:
        raise IRError(f"constant {name!r} is {array.dtype}, but its parameters are "
                      f"{params.dtype}")
    return graph.add_constant(array.astype(params.dtype.np, copy=False), name, params)


def params_of(node: Node) -> QuantParams | None:
    """The parameters a Q or DQ node applies, read from its constant operands; None when a
    scale or zero point is not a constant (dynamic quantization) or the node is another op."""
    if node.op not in (QUANTIZE, DEQUANTIZE):
        return None
    scale = node.inputs[1]
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    if scale is None or not scale.is_constant or (zero is not None and not zero.is_constant):
        return None
    if zero is not None:
        dtype = zero.dtype
        zero_data = zero.data
    else:
        dtype = node.outputs[0].dtype if node.op == QUANTIZE else node.inputs[0].dtype
        zero_data = np.zeros(scale.data.shape, dtype.np)
    axis = None
    if scale.data.size > 1:  # a 1-element scale means per tensor, as in the QuantizeLinear op
        axis = int(node.attrs.get("axis", 1)) % len(node.inputs[0].shape)
    return QuantParams(tuple(float(s) for s in scale.data.reshape(-1)),
                       tuple(int(z) for z in zero_data.reshape(-1)), DType(dtype), axis)


def same_params(a: QuantParams | None, b: QuantParams | None) -> bool:
    """Whether two parameter sets map integers to the same reals (qmin/qmax aside)."""
    if a is None or b is None:
        return False
    a, b = exact_params(a), exact_params(b)
    return (a.dtype == b.dtype and a.axis == b.axis and a.scale == b.scale
            and a.zero_point == b.zero_point)


def annotate(graph: Graph) -> int:
    """Give each Q output and each constant a DQ reads the parameters its node applies (used
    after importing a QDQ model); returns how many types changed. A constant read by two DQ
    nodes with different parameters is left as it is."""
    changed = 0
    for node in graph.nodes:
        params = params_of(node)
        if params is None:
            continue
        target = node.outputs[0] if node.op == QUANTIZE else node.inputs[0]
        if node.op == DEQUANTIZE and not target.is_constant:
            continue
        if target.type.quant is not None and not same_params(target.type.quant, params):
            continue
        if target.type.quant is None:
            target.type = TensorType(target.dtype, target.shape, exact_params(params))
            changed += 1
    return changed


def problems(graph: Graph) -> list[str]:
    """Q outputs whose type's parameters differ from the constants their node applies."""
    out = []
    for node in graph.find_nodes(QUANTIZE):
        params = params_of(node)
        have = node.outputs[0].type.quant
        if params is not None and have is not None and not same_params(params, have):
            out.append(f"{node.describe()}: %{node.outputs[0].name} is typed {have} but the "
                       f"node applies {params}")
    return out
