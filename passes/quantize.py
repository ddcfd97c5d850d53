"""``quantize``: insert Q/DQ pairs per a ``QuantConfig`` and calibrated ranges (the QDQ form).

Which nodes are quantized: every node whose op has a role in ``qcompiler.quant_ops`` (weighted,
arithmetic, table, data movement) and that the config does not exclude. Which values get a
Q -> DQ pair: every float activation that such a node reads (its data operands) or writes.
Their parameters:

- an activation's from its calibrated range (``TensorStats.range`` with the config's method),
  or from the config's override for that tensor;
- values that must share parameters share one set, made from the union of their ranges: the
  input and output of a data-movement op (Reshape, Flatten, Transpose, MaxPool...), and every
  input of a Concat with its output;
- a weight's per output channel (or per tensor), symmetric by default, as an integer constant
  read by a DQ; a constant operand of an arithmetic op per tensor from its own range;
- a bias's as int32 at ``s_in * s_w[c]``, zero point 0; where a bias would overflow int32 the
  weight scale of that channel is raised (``quant_math.quantize_bias``), never clipped.

Nodes that stay float are recorded with their reason in ``Quantize.skipped``, in the graph's
``metadata[FLOAT_REASONS]`` (which ``qc.compare`` reads) and in the ``PassResult`` notes:
excluded by the config, an op quantization has no role for, or a float16 tensor. A MatMul
whose second operand is computed at run time has both operands quantized as activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx
import numpy as np

from qcompiler import qdq, quant_math
from qcompiler.config import QuantConfig
from qcompiler.errors import ConfigError, QuantizationError
from qcompiler.graph import Graph, Node, Value
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.quant_ops import (
    ARITHMETIC,
    DATA_MOVEMENT,
    FLOAT_REASONS,
    QUANTIZABLE,
    TABLE,
    WEIGHTED,
    data_inputs,
    weight_axis,
)
from qcompiler.types import DType, QuantParams

# Operand positions of a weighted op that are activations (X, and Conv's residual Z).
_WEIGHTED_ACTIVATIONS = {"Conv": (0, 3), "Gemm": (0,), "MatMul": (0,)}
_OBSERVE = "Observe"


@register_pass
@dataclass
class Quantize(Pass):
    """Insert Q/DQ around the quantizable nodes of a calibrated float graph."""

    name: ClassVar[str] = "quantize"
    config: QuantConfig = field(default_factory=QuantConfig)
    calibration: Mapping[str, Any] = field(default_factory=dict)

    def run(self, graph: Graph) -> PassResult:
        if any(node.op == _OBSERVE for node in graph.nodes):
            from qcompiler.calibration import strip_observers

            strip_observers(graph)
        chosen, activations = self._plan(graph)
        by_name = self._activation_params(graph, chosen, activations)
        # keyed by value: inserting Q/DQ renames a graph output's float value
        params = {id(value): by_name[value.name] for value in activations}
        for value in activations:  # graph order: inputs first, then node by node
            qdq.insert_qdq(graph, value, params[id(value)])
        weights = 0
        for node in chosen:
            if node.op in WEIGHTED and node.inputs[1].is_constant:
                self._quantize_weights(graph, node, params[id(_source(node.inputs[0]))])
                weights += 1
            elif node.op in ARITHMETIC:
                self._quantize_constant_operands(graph, node)
        for value in list(graph.constants.values()):
            if not value.uses and not value.is_graph_output:
                graph.erase_constant(value)
        graph.metadata[FLOAT_REASONS] = dict(self.skipped)
        notes = [f"{name}: left in float ({why})" for name, why in self.skipped.items()]
        return PassResult(graph, bool(activations or weights),
                          {"activations": len(activations), "weights": weights,
                           "float": len(self.skipped)}, notes)

    # -- choosing what to quantize -------------------------------------------------------------

    def _plan(self, graph: Graph) -> tuple[list[Node], list[Value]]:
        """The nodes to quantize and the activations they read or write; ``ConfigError`` for
        an override of a tensor that is not one of those activations (it would be ignored)."""
        excluded = self.config.excluded(graph)
        self.skipped: dict[str, str] = {}  # node name -> why it stays float
        chosen = [node for node in graph.nodes if self._quantizable(node, excluded)]
        activations = _activations(chosen)
        self.config.check_overrides(graph)
        names = {v.name for v in activations}
        unused = [name for name in self.config.overrides if name not in names]
        if unused:
            raise ConfigError(f"override(s) for {', '.join(map(repr, unused))} in graph "
                              f"{graph.name!r}: not a quantized activation (a weight is "
                              f"quantized from its own values; a tensor only float ops read "
                              f"and write is not quantized); the quantized activations are "
                              f"{', '.join(map(repr, sorted(names)))}")
        per_axis = [name for name, value in self.config.overrides.items()
                    if isinstance(value, QuantParams) and value.axis is not None]
        if per_axis:
            raise ConfigError(f"override of {per_axis[0]!r} in graph {graph.name!r}: "
                              f"{self.config.overrides[per_axis[0]]} is per axis, but "
                              f"activations are quantized per tensor (a weighted op's int32 "
                              f"bias is at s_in * s_w, one input scale)")
        return chosen, activations

    def check(self, graph: Graph) -> None:
        """The config's errors on ``graph`` (exclusions, overrides), before calibration."""
        self._plan(graph)

    def _quantizable(self, node: Node, excluded: Mapping[Node, str]) -> bool:
        if node in excluded:
            self.skipped[node.name] = f"excluded by config: {excluded[node]}"
            return False
        if node.op not in QUANTIZABLE:
            if any(v.dtype.is_float for v in node.outputs):
                self.skipped[node.name] = f"{node.op} has no integer form"
            return False
        if any(v is not None and v.dtype == DType.F16 for v in (*node.inputs, *node.outputs)):
            self.skipped[node.name] = "float16 tensors are not quantized"
            return False
        if node.op in DATA_MOVEMENT:
            return all(node.inputs[i] is not None and node.inputs[i].dtype.is_float
                       for i in data_inputs(node.op, len(node.inputs)))
        if node.op in TABLE:
            if not all(v is None or v.is_constant for v in node.inputs[1:]):
                self.skipped[node.name] = (f"{node.op} reads an operand computed at run time "
                                           f"besides its input (a table needs constants)")
                return False
            return node.inputs[0].dtype.is_float
        return True

    def _activation_params(self, graph: Graph, chosen: list[Node],
                           activations: list[Value]) -> dict[str, QuantParams]:
        """One parameter set per group of values that must share parameters."""
        names = [v.name for v in activations]  # graph order: errors name the first value
        groups = nx.utils.UnionFind(names)
        known = set(names)
        for node in chosen:
            if node.op in DATA_MOVEMENT:  # every output (a Split has several) with every input
                members = [v.name for v in node.outputs if v.name in known]
                members += [_source(node.inputs[i]).name
                            for i in data_inputs(node.op, len(node.inputs))]
                groups.union(*members)
        params: dict[str, QuantParams] = {}
        for members in groups.to_sets():
            chosen_params = self._group_params(graph, sorted(members))
            for name in members:
                params[name] = chosen_params
        return params

    def _group_params(self, graph: Graph, members: list[str]) -> QuantParams:
        cfg = self.config
        fixed = {name: cfg.overrides[name] for name in members if name in cfg.overrides}
        if len({repr(v) for v in fixed.values()}) > 1:
            raise ConfigError(f"tensors {sorted(fixed)} must share quantization parameters "
                              f"(a data-movement op or a Concat joins them) but their overrides "
                              f"differ")
        if fixed:
            override = next(iter(fixed.values()))
            if isinstance(override, QuantParams):
                return override
            lo, hi = override
        else:
            lo, hi = np.inf, -np.inf
            for name in members:
                stats = self.calibration.get(name)
                if stats is None:
                    raise QuantizationError(
                        f"%{name} ({_layers(graph, name)}) has no calibrated range; calibrate "
                        f"the graph the quantize pass runs on (qc.quantize does)")
                a, b = stats.range(cfg.calibration, dtype=cfg.activation_dtype,
                                   symmetric=cfg.activation_symmetric,
                                   **cfg.calibration_options)
                lo, hi = min(lo, float(a)), max(hi, float(b))
        return quant_math.params_from_range(lo, hi, dtype=cfg.activation_dtype,
                                            symmetric=cfg.activation_symmetric)

    # -- weights, biases and constant operands -------------------------------------------------

    def _quantize_weights(self, graph: Graph, node: Node, input_params: QuantParams) -> None:
        cfg = self.config
        weight = node.inputs[1]
        axis = weight_axis(node.op, node.attrs) % weight.data.ndim
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        quantized_bias = (bias is not None and bias.is_constant
                          and _per_channel_bias(bias, weight, axis))
        # Gemm's alpha and beta go into the weight and the bias, so the int8 weight and the
        # int32 bias (at s_in * s_w) are what the product and the sum really use
        w, b = weight.data, bias.data if quantized_bias else None
        if node.op == "Gemm":
            w = _scaled(w, node.attrs, "alpha")
            if quantized_bias:
                b = _scaled(b, node.attrs, "beta")
        wq, wparams = quant_math.quantize_weight(
            w, axis=axis, dtype=cfg.weight_dtype, symmetric=cfg.weight_symmetric,
            per_channel=cfg.per_channel, reduce_range=cfg.reduce_range)
        if quantized_bias:
            bq, bparams, raised = quant_math.quantize_bias(
                b.reshape(-1), input_params.scale[0], wparams)
            if raised != wparams:
                wparams = raised
                wq = quant_math.quantize(w, wparams)
            # 1-D whatever the float bias's shape (Gemm's C may be [1, N] or a scalar for N = 1):
            # it broadcasts the same, and per-channel parameters need the channel axis
            self._replace_operand(graph, node, 2, bq.reshape(-1), bparams, "bias")
        self._replace_operand(graph, node, 1, wq, wparams, "weight")

    def _quantize_constant_operands(self, graph: Graph, node: Node) -> None:
        cfg = self.config
        for k, value in enumerate(node.inputs):
            if value is None or not value.is_constant or not value.dtype.is_float:
                continue
            data = value.data
            params = quant_math.params_from_range(float(data.min(initial=0.0)),
                                                  float(data.max(initial=0.0)),
                                                  dtype=cfg.weight_dtype,
                                                  symmetric=cfg.weight_symmetric)
            self._replace_operand(graph, node, k, quant_math.quantize(data, params), params,
                                  f"in{k}")

    @staticmethod
    def _replace_operand(graph: Graph, node: Node, index: int, data: np.ndarray,
                         params: QuantParams, role: str) -> None:
        """Make operand ``index`` of ``node`` the DQ of the integer constant ``data``."""
        const = qdq.add_quantized_constant(graph, data, params, f"{node.name}.{role}.q")
        dq = qdq.add_dequantize(graph, const, before=node, origins=node.origins,
                                name=f"{node.name}.{role}.dq")
        node.set_input(index, dq)


def _activations(chosen: list[Node]) -> list[Value]:
    """The float activations the chosen nodes read or write, each once, in graph order."""
    seen: dict[str, Value] = {}
    for node in chosen:
        if node.op in WEIGHTED:
            positions = [i for i in _WEIGHTED_ACTIVATIONS[node.op] if i < len(node.inputs)]
            if not node.inputs[1].is_constant:
                positions.append(1)  # a MatMul of two activations
        elif node.op in DATA_MOVEMENT:
            positions = list(data_inputs(node.op, len(node.inputs)))
        elif node.op in TABLE:
            positions = [0]
        else:
            positions = range(len(node.inputs))
        for i in positions:
            value = node.inputs[i]
            if value is not None and not value.is_constant and value.dtype.is_float:
                seen.setdefault(value.name, value)
        for value in node.outputs:
            if value.dtype.is_float and (value.uses or value.is_graph_output):
                seen.setdefault(value.name, value)
    order = {id(node): k for k, node in enumerate(chosen[0].graph.nodes)} if chosen else {}
    return sorted(seen.values(),
                  key=lambda v: -1 if v.producer is None else order[id(v.producer)])


def _source(value: Value) -> Value:
    """The float value a (possibly already inserted) DQ stands for."""
    producer = value.producer
    if producer is not None and producer.op == qdq.DEQUANTIZE:
        q = producer.inputs[0].producer
        if q is not None and q.op == qdq.QUANTIZE:
            return q.inputs[0]
    return value


def _scaled(data: np.ndarray, attrs: dict, key: str) -> np.ndarray:
    """``data`` times the node's ``key`` attribute (in float32, as the op computes), which
    becomes 1: Gemm's ``alpha`` folded into B, ``beta`` into C."""
    factor = float(attrs.get(key, 1.0))
    if factor == 1.0:
        return data
    attrs[key] = 1.0
    return (data * np.float32(factor)).astype(data.dtype)


def _per_channel_bias(bias: Value, weight: Value, axis: int) -> bool:
    return bias.data.size == weight.data.shape[axis] and bias.dtype.is_float


def _layers(graph: Graph, name: str) -> str:
    producer = graph.value(name).producer
    if producer is None:
        return "a graph input"
    return "layer " + ", ".join(producer.origins)
