"""The per-layer quantization report: ``qc.compare(float_graph, quantized_graph, data)``.

For every user layer (named by ``node.origins``: a fused node is one row naming all its layers)
the report measures how far the quantized graph's value is from the float graph's at that
layer's output, two ways:

- **cumulative**: the quantized graph run end to end, so every layer upstream adds its error;
- **layer alone**: the layer's quantized nodes fed the float graph's values, so only this
  layer's own quantization counts. "The layer quantized" includes the Q -> DQ its inputs pass
  through, the DQ of its weights and bias, and the Q (-> DQ) of its output.

Each is an SQNR, ``10 log10(sum f^2 / sum (q - f)^2)`` in dB (higher is better), and the largest
absolute error, accumulated batch by batch: the report keeps four numbers per layer and way,
never the activations of earlier batches. Rows are sorted worst first (lowest layer-alone SQNR,
then lowest cumulative SQNR). The report also lists every op the quantized graph computes in
float, with the reason.

How layers are matched: the float graph is first brought to the fused form the quantizer starts
from (``qc.optimize``: canonicalize, fold-bn, fuse, which keep values and origins); each of its
nodes is a layer (nodes sharing an origin name are one), and a quantized node belongs to the
layer its origins name, so a quantized graph that fused ``conv, bn, relu`` or kept them apart
(as onnxruntime's QDQ models do) lines up. A layer's value is the output of its last node; in
the quantized graph, the value after the Q -> DQ (or the Q alone) that quantizes that output,
dequantized when it is an integer tensor, since that is what the next layer reads.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from . import ops, qdq
from .errors import ReportError
from .graph import Graph, Node, Value
from .interpreter import Interpreter
from .quant_ops import FLOAT_REASONS, QUANTIZABLE
from .types import QuantParams

if TYPE_CHECKING:
    from .config import QuantConfig

# Nodes that only carry quantization (or observe), not a user's computation: they belong to the
# layer whose value they quantize. Requantize is what cancel-qdq makes of a DQ -> Q pair;
# DynamicQuantizeLinear quantizes an activation at run time (dynamic quantization).
PLUMBING = frozenset({qdq.QUANTIZE, qdq.DEQUANTIZE, "Requantize", "DynamicQuantizeLinear",
                      "Observe"})


Data = Iterable[Mapping[str, np.ndarray]] | Iterable[np.ndarray] | str | Path


# -- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorStats:
    """The error of a layer's quantized value against float over every element of every batch:
    mean signal power (f^2), mean noise power ((q - f)^2) and the largest |q - f|."""

    elements: int = 0
    signal_power: float = 0.0
    noise_power: float = 0.0
    max_abs_error: float = 0.0

    @property
    def sqnr_db(self) -> float:
        """``10 log10(signal / noise)``: +inf when there is no error, -inf when there is error
        but no signal."""
        if self.noise_power == 0.0:
            return math.inf
        if self.signal_power == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal_power / self.noise_power)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``sqnr_db`` is null when infinite (the powers tell which infinity)."""
        sqnr = self.sqnr_db
        return {"sqnr_db": sqnr if math.isfinite(sqnr) else None,
                "max_abs_error": self.max_abs_error, "signal_power": self.signal_power,
                "noise_power": self.noise_power, "elements": self.elements}

    @classmethod
    def between(cls, reference: np.ndarray, result: np.ndarray) -> ErrorStats:
        """The error of ``result`` against ``reference`` (one array each)."""
        sums = _Accumulator()
        sums.add(reference, result)
        return sums.result()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorStats:
        return cls(int(d["elements"]), float(d["signal_power"]), float(d["noise_power"]),
                   float(d["max_abs_error"]))


@dataclass(frozen=True)
class LayerError:
    """One row: a user layer (all its origin names), the ops computing it in the quantized
    graph, whether they are quantized, and its error cumulative and alone."""

    layers: tuple[str, ...]
    ops: tuple[str, ...]
    quantized: bool
    cumulative: ErrorStats
    alone: ErrorStats

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "ops": list(self.ops), "quantized": self.quantized,
                "cumulative": self.cumulative.to_dict(), "layer_alone": self.alone.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerError:
        return cls(tuple(d["layers"]), tuple(d["ops"]), bool(d["quantized"]),
                   ErrorStats.from_dict(d["cumulative"]), ErrorStats.from_dict(d["layer_alone"]))


@dataclass(frozen=True)
class FloatOp:
    """A node of the quantized graph that computes in float, and why."""

    node: str
    op: str
    layers: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "layers": list(self.layers),
                "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FloatOp:
        return cls(d["node"], d["op"], tuple(d["layers"]), d["reason"])


@dataclass(frozen=True)
class QuantizationReport:
    """What ``qc.compare`` returns: ``layers`` worst first, ``float_ops`` in graph order,
    ``batches`` the number of data batches measured. ``print(report)`` shows a table;
    ``to_json()`` / ``from_json()`` and ``to_dict()`` / ``from_dict()`` are for tools."""

    layers: tuple[LayerError, ...]
    float_ops: tuple[FloatOp, ...] = ()
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "layers": [row.to_dict() for row in self.layers],
                "float_ops": [op.to_dict() for op in self.float_ops]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantizationReport:
        return cls(tuple(LayerError.from_dict(r) for r in d["layers"]),
                   tuple(FloatOp.from_dict(f) for f in d["float_ops"]), int(d["batches"]))

    @classmethod
    def from_json(cls, text: str) -> QuantizationReport:
        return cls.from_dict(json.loads(text))

    def __str__(self) -> str:
        head = ("layer", "op", "computed", "alone SQNR dB", "alone max err", "cumul. SQNR dB",
                "cumul. max err")
        rows = [(", ".join(r.layers), "+".join(r.ops), "quantized" if r.quantized else "float",
                 _db(r.alone), _err(r.alone), _db(r.cumulative), _err(r.cumulative))
                for r in self.layers]
        lines = [f"Quantization error per layer, worst first, over {self.batches} batch(es) "
                 f"(SQNR: higher is better)", ""]
        lines += _table(head, rows, right_from=3)
        lines.append("")
        if self.float_ops:
            lines.append(f"Ops left in float ({len(self.float_ops)}):")
            lines += ["  " + line for line in _table(
                ("node", "op", "layers", "reason"),
                [(f.node, f.op, ", ".join(f.layers), f.reason) for f in self.float_ops])]
        else:
            lines.append("No op is left in float.")
        return "\n".join(lines)


def _db(stats: ErrorStats) -> str:
    sqnr = stats.sqnr_db
    return f"{sqnr:.1f}" if math.isfinite(sqnr) else ("inf" if sqnr > 0 else "-inf")


def _err(stats: ErrorStats) -> str:
    return f"{stats.max_abs_error:.4g}"


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]], right_from: int | None = None,
           ) -> list[str]:
    """Fixed-width columns, two spaces apart; columns from ``right_from`` on right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(head, *rows)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.rjust(w) if right_from is not None and k >= right_from
                         else cell.ljust(w)
                         for k, (cell, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), line(tuple("-" * w for w in widths)), *map(line, rows)]


# -- layers and their sums -------------------------------------------------------------------------


class _Accumulator:
    """Sums of f^2 and (q - f)^2, the element count and the largest |q - f|, in float64."""

    def __init__(self) -> None:
        self.elements = 0
        self.signal = 0.0
        self.noise = 0.0
        self.max_error = 0.0

    def add(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        f = np.asarray(reference, dtype=np.float64)
        error = np.asarray(quantized, dtype=np.float64) - f
        self.elements += f.size
        self.signal += float(np.sum(f * f))
        self.noise += float(np.sum(error * error))
        if error.size:
            self.max_error = max(self.max_error, float(np.max(np.abs(error))))

    def result(self) -> ErrorStats:
        n = max(self.elements, 1)
        return ErrorStats(self.elements, self.signal / n, self.noise / n, self.max_error)


@dataclass(eq=False)
class _Layer:
    """One user layer of both graphs, and what measuring it needs."""

    names: tuple[str, ...]
    q_nodes: list[Node]
    f_nodes: list[Node]
    # compared outputs: (float-graph value, observed quantized-graph value, params to
    # dequantize the observed value with when it is an integer tensor)
    compared: list[tuple[Value, Value, QuantParams | None]] = field(default_factory=list)
    alone_nodes: list[Node] = field(default_factory=list)
    boundary: list[tuple[Value, Value]] = field(default_factory=list)  # (quantized, float)
    cumulative: _Accumulator = field(default_factory=_Accumulator)
    alone: _Accumulator = field(default_factory=_Accumulator)

    @property
    def q_last(self) -> Node:
        return self.q_nodes[-1]

    @property
    def f_last(self) -> Node:
        return self.f_nodes[-1]


# -- matching the two graphs' layers ---------------------------------------------------------------


def _layer_nodes(graph: Graph) -> list[Node]:
    return [node for node in graph.nodes if node.op not in PLUMBING]


def _match(float_graph: Graph, quantized: Graph) -> list[_Layer]:
    """The layers of ``quantized`` with their float counterparts, in the quantized graph's
    order; raises ``ReportError`` when the graphs do not correspond.

    Float nodes sharing an origin name are one layer. A quantized node belongs to the float
    layer its origins name; when they name several (a rewrite that moved a DQ below a MaxPool
    gives the MaxPool the DQ's origins, those of the layer upstream), to the last of them in
    the float graph, since the upstream names come from the values it reads.
    """
    _check_signatures(float_graph, quantized)
    f_nodes = _layer_nodes(float_graph)
    names = nx.utils.UnionFind()
    for node in f_nodes:
        names.union(*node.origins)
    groups: dict[str, list[Node]] = {}
    for node in f_nodes:
        groups.setdefault(names[node.origins[0]], []).append(node)
    known = {name for node in f_nodes for name in node.origins}
    position = {id(node): k for k, node in enumerate(float_graph.nodes)}
    layers: dict[str, _Layer] = {}
    for node in _layer_nodes(quantized):
        roots = {names[name] for name in node.origins if name in known}
        if not roots:
            raise ReportError(
                f"{node.describe()} of quantized graph {quantized.name!r} has no counterpart "
                f"in float graph {float_graph.name!r}: no node there comes from layer(s) "
                f"{', '.join(node.origins)}; compare a quantized graph with the float graph "
                f"it was made from")
        root = max(roots, key=lambda r: position[id(groups[r][-1])])
        if root not in layers:
            layer_names = tuple(dict.fromkeys(n for f in groups[root] for n in f.origins))
            layers[root] = _Layer(layer_names, [], groups[root])
        layers[root].q_nodes.append(node)
    ordered = list(layers.values())
    for layer in ordered:
        _pair_outputs(layer)
    owner = {node: layer for layer in ordered for node in layer.q_nodes}
    for layer in ordered:
        _isolate(layer, owner, float_graph)
    return ordered


def _check_signatures(float_graph: Graph, quantized: Graph) -> None:
    f_inputs = {v.name: v for v in float_graph.inputs}
    q_inputs = {v.name: v for v in quantized.inputs}
    if set(f_inputs) != set(q_inputs):
        raise ReportError(f"the graphs have different inputs: float graph "
                          f"{float_graph.name!r} takes {sorted(f_inputs)}, quantized graph "
                          f"{quantized.name!r} takes {sorted(q_inputs)}")
    for name, fv in f_inputs.items():
        qv = q_inputs[name]
        if fv.dtype != qv.dtype or not _same_shape(fv, qv):
            raise ReportError(f"input %{name} is {fv.type} in float graph "
                              f"{float_graph.name!r} but {qv.type} in quantized graph "
                              f"{quantized.name!r}")


def _same_shape(a: Value, b: Value) -> bool:
    """Same rank, and equal wherever both dimensions are known numbers."""
    return len(a.shape) == len(b.shape) and all(
        x == y for x, y in zip(a.shape, b.shape) if isinstance(x, int) and isinstance(y, int))


def _pair_outputs(layer: _Layer) -> None:
    """Pair the last float node's outputs with the last quantized node's; the float ones are
    compared, at the value the quantized graph's next layer reads."""
    f_last, q_last = layer.f_last, layer.q_last
    if len(f_last.outputs) != len(q_last.outputs) or not all(
            _same_shape(f, q) for f, q in zip(f_last.outputs, q_last.outputs)):
        raise ReportError(
            f"layer(s) {', '.join(layer.names)} do not correspond: the float graph's "
            f"{f_last.describe()} gives {_types(f_last)} but the quantized graph's "
            f"{q_last.describe()} gives {_types(q_last)}")
    for f, q in zip(f_last.outputs, q_last.outputs):
        if f.dtype.is_float:
            layer.compared.append((f, *_observed(q)))


def _types(node: Node) -> str:
    return ", ".join(f"%{v.name}: {v.type}" for v in node.outputs)


def _observed(value: Value) -> tuple[Value, QuantParams | None]:
    """Where the quantized graph's value of a layer output is read, and the parameters to
    dequantize it with when it is an integer tensor there."""
    if value.dtype.is_integer and value.type.quant is not None:
        return value, value.type.quant
    for user in value.users:
        if user.op == qdq.QUANTIZE and qdq.params_of(user) is not None:
            quantized = user.outputs[0]
            for reader in quantized.users:
                if reader.op == qdq.DEQUANTIZE:
                    return reader.outputs[0], None
            return quantized, qdq.params_of(user)
    return value, None


def _isolate(layer: _Layer, owner: Mapping[Node, _Layer], float_graph: Graph) -> None:
    """The quantized nodes that compute ``layer`` alone (its nodes, the Q/DQ chains feeding
    them back to another layer's output or a graph input, and the Q/DQ of its output), and the
    float-graph value each boundary value is fed."""
    nodes = set(layer.q_nodes)
    for _, observed, _ in layer.compared:
        chain = observed.producer
        while chain is not None and chain not in nodes and chain.op in PLUMBING:
            nodes.add(chain)
            chain = chain.inputs[0].producer
    pending = [v for node in nodes for v in node.inputs]
    boundary: dict[Value, Value] = {}
    while pending:
        value = pending.pop()
        if value is None or value.is_constant or value in boundary:
            continue
        producer = value.producer
        if producer is None:
            boundary[value] = float_graph.value(value.name)  # a graph input (same names)
        elif producer in nodes:
            continue
        elif producer.op in PLUMBING:
            nodes.add(producer)
            pending.extend(producer.inputs)
        else:
            boundary[value] = _float_counterpart(value, owner[producer], layer)
    layer.alone_nodes = [node for node in layer.q_last.graph.nodes if node in nodes]
    layer.boundary = list(boundary.items())


def _float_counterpart(value: Value, upstream: _Layer, reader: _Layer) -> Value:
    if value.producer is not upstream.q_last:
        raise ReportError(
            f"layer(s) {', '.join(reader.names)} read %{value.name}, an inner value of layer(s) "
            f"{', '.join(upstream.names)} that the float graph does not compute, so the layer "
            f"cannot be measured alone")
    return upstream.f_last.outputs[upstream.q_last.outputs.index(value)]


# -- float ops ----------------------------------------------------------------------------------


def _float_ops(quantized: Graph, excluded: Mapping[str, str]) -> list[FloatOp]:
    """Every node of ``quantized`` that computes a float result in float, with the reason the
    quantize pass recorded (``graph.metadata[FLOAT_REASONS]``), else the config's exclusion
    (``excluded``: node name -> reason), else the reason read off the graph."""
    recorded = quantized.metadata.get(FLOAT_REASONS, {})
    out = []
    for node in _layer_nodes(quantized):
        if not any(v.dtype.is_float for v in node.outputs):
            continue
        reason = recorded.get(node.name)
        if reason is None and node.name in excluded and not _is_quantized(node):
            reason = f"excluded by config: {excluded[node.name]}"
        reason = reason or _inferred_reason(node)
        if reason is not None:
            out.append(FloatOp(node.name, node.op, node.origins, reason))
    return out


def _inferred_reason(node: Node) -> str | None:
    """Why ``node`` is float, or None when Q/DQ surround it (or its weights are quantized)."""
    if node.op not in QUANTIZABLE:
        return f"{node.op} is not quantizable (no role in qcompiler/quant_ops.py)"
    if _is_quantized(node):
        return None
    return "not quantized (no reason recorded in the graph)"


def _is_quantized(node: Node) -> bool:
    """Reads a quantized weight, or reads quantized activations and writes only quantized
    values."""
    writes = all(v.type.quant is not None or any(u.op == qdq.QUANTIZE for u in v.users)
                 for v in node.outputs if v.dtype.is_float or v.type.quant is not None)
    sources = [_quantized_source(v) for v in node.inputs]
    return (any(s is not None and s.is_constant for s in sources)
            or writes and any(s is not None and not s.is_constant for s in sources))


def _quantized_source(value: Value | None) -> Value | None:
    """The integer value ``value`` is (or is the dequantized copy of), if it is one."""
    if value is None:
        return None
    if value.producer is not None and value.producer.op == qdq.DEQUANTIZE:
        return value.producer.inputs[0]
    return value if value.dtype.is_integer and value.type.quant is not None else None


# -- measuring ----------------------------------------------------------------------------------


def _dequantize(array: np.ndarray, params: QuantParams | None) -> np.ndarray:
    if params is None:
        return array
    return ops.get(qdq.DEQUANTIZE).kernel(array, qdq.scale_array(params),
                                          qdq.zero_point_array(params), axis=params.axis or 0)


def _fed(array: np.ndarray, value: Value) -> np.ndarray:
    """The float graph's ``array`` as the quantized graph's ``value`` holds it: quantized with
    the value's parameters when the quantized graph keeps it as an integer tensor."""
    if array.dtype == value.dtype.np:
        return array
    params = value.type.quant
    if params is None or not value.dtype.is_integer:
        raise ReportError(f"%{value.name} is {value.type} in the quantized graph but "
                          f"{array.dtype} in the float graph, with no parameters to quantize by")
    return ops.get(qdq.QUANTIZE).kernel(array, qdq.scale_array(params),
                                        qdq.zero_point_array(params), axis=params.axis or 0)


def _measure_alone(layer: _Layer, runner: Interpreter,
                   float_values: Mapping[Value, np.ndarray]) -> None:
    env = {q: _fed(float_values[f], q) for q, f in layer.boundary}
    for node in layer.alone_nodes:
        operands = [None if v is None else v.data if v.is_constant else env[v]
                    for v in node.inputs]
        env.update(zip(node.outputs, runner.run_node(node, operands)))
    for reference, observed, params in layer.compared:
        layer.alone.add(float_values[reference], _dequantize(env[observed], params))


def _measure_batch(layers: list[_Layer], float_graph: Graph, quantized: Graph,
                   feeds: Mapping[str, np.ndarray]) -> None:
    """One batch: the float graph run keeping each layer's output (the only activations the
    report holds, one batch's worth), each layer alone, then the quantized graph run with a
    hook comparing each layer's value as it is made."""
    needed = {f for layer in layers for f, _, _ in layer.compared}
    needed |= {f for layer in layers for _, f in layer.boundary}
    float_run = Interpreter(float_graph, keep=[v.name for v in needed])
    float_run.run(feeds)
    float_values = {v: float_run.value(v) for v in needed}
    runner = Interpreter(quantized)
    for layer in layers:
        _measure_alone(layer, runner, float_values)
    watched: dict[Value, list[tuple[_Layer, Value, QuantParams | None]]] = {}
    for layer in layers:
        for reference, observed, params in layer.compared:
            watched.setdefault(observed, []).append((layer, reference, params))

    def compare(interp: Interpreter, node: Node, outputs: list[np.ndarray]) -> None:
        for value, array in zip(node.outputs, outputs):
            for layer, reference, params in watched.get(value, ()):
                layer.cumulative.add(float_values[reference], _dequantize(array, params))

    Interpreter(quantized, after=compare).run(feeds)


def compare(float_graph: Graph, quantized_graph: Graph, data: Data, *,
            config: QuantConfig | None = None,
            progress: bool | None = None) -> QuantizationReport:
    """Per-layer error of ``quantized_graph`` against ``float_graph`` on ``data``.

    ``data`` is what calibration takes: an iterable of ``{input name: array}`` dicts, of arrays
    for a single-input model, or the path of an ``.npz`` file keyed by input name. It is read
    once, batch by batch, with a progress bar on a terminal (``progress`` forces it on or off).
    ``config``, the config the graph was quantized with, names the exclusions that left ops in
    float, and with ``equalize`` set the float graph is equalized the same way first. Raises
    ``ReportError`` when the graphs do not correspond and ``CalibrationError`` (or an
    ``InputError``) for data the float graph cannot take.
    """
    from tqdm import tqdm

    from .calibration import calibration_batches

    for name, graph in (("float_graph", float_graph), ("quantized_graph", quantized_graph)):
        if not isinstance(graph, Graph):
            raise ReportError(f"compare: {name} must be a qc.Graph, got {type(graph).__name__}")
    from .api import DEFAULT_FLOAT_PIPELINE, optimize

    # the fused form the quantizer starts from: same values and origins, and the layers of a
    # quantized graph whose BatchNorms were folded (by us or another tool) line up with it;
    # equalized too when the config asked for it, as equalization rescales the channels
    # between layers
    equalize = config is not None and config.equalize
    reference = optimize(float_graph, DEFAULT_FLOAT_PIPELINE + (",equalize" if equalize else ""))
    layers = _match(reference, quantized_graph)
    measured = [layer for layer in layers if layer.compared]
    if not measured:
        raise ReportError(f"graphs {float_graph.name!r} and {quantized_graph.name!r} have no "
                          f"layer with a float output in common")
    show = sys.stderr.isatty() if progress is None else progress
    batches = 0
    for feeds in tqdm(calibration_batches(reference, data), desc="compare", unit="batch",
                      disable=not show):
        _measure_batch(measured, reference, quantized_graph, feeds)
        batches += 1
    order = {layer: k for k, layer in enumerate(measured)}
    rows = sorted(measured, key=lambda layer: (layer.alone.result().sqnr_db,
                                               layer.cumulative.result().sqnr_db, order[layer]))
    excluded = {} if config is None else {
        node.name: why for node, why in config.excluded(reference).items()}
    float_ops = {f.node: f for f in _float_ops(quantized_graph, excluded)}
    return QuantizationReport(
        tuple(LayerError(layer.names, tuple(n.op for n in layer.q_nodes),
                         not any(n.name in float_ops for n in layer.q_nodes),
                         layer.cumulative.result(), layer.alone.result()) for layer in rows),
        tuple(float_ops.values()), batches)
