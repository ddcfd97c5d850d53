"""``quantize-dynamic``: dynamic and weight-only quantization of the weighted ops.

Dynamic (the default), for each Gemm and MatMul whose weight (input 1) is a float constant::

    x ──DynamicQuantizeLinear──> (x_q: u8, s, z) ──DQ──> f32 ──┐
    w_q: i8 constant {quant} ─────────────────────────DQ──> f32 ──> Gemm / MatMul (float)

The weight is quantized once (``quant_math.quantize_weight``, per channel by default); the
activation is quantized at every run from its own range with ONNX DynamicQuantizeLinear
semantics (uint8, scale and zero point from ``[min(x, 0), max(x, 0)]``), as onnxruntime's
``quantize_dynamic`` does. The op then computes in float on the dequantized values, which is
the integer op's result up to float32 rounding; a bias stays float.

Weight-only (``weight_only=true``): every Conv, Gemm and MatMul (``quant_ops.WEIGHTED``) with a
constant float weight reads it as an int8 constant through a DequantizeLinear, and computes in
float. Constant folding never folds a DQ, so the weights stay int8 in saved executables and
ONNX exports (a quarter of the float bytes).

A weight or an activation read by several ops is quantized once. Candidates left in float (a
weight that is not an f32 constant, an activation that is not f32, a node a ``QuantConfig``
excludes) are listed with the reason in the pass's notes (``PassManager(..., explain=True)``).

``dynamic_pass(config)`` is the pass for a ``QuantConfig`` of mode "dynamic" or "weight_only"
(what ``qc.quantize`` runs): its weight options, and its exclusions, resolved on the graph the
pass runs on. ``overrides`` and ``bias_correction`` need calibration: a config with them is
refused rather than quietly run without them. Dynamic activations are uint8 whatever
``activation_dtype`` says, as DynamicQuantizeLinear (and onnxruntime's ``quantize_dynamic``)
makes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qcompiler import qdq
from qcompiler.config import QuantConfig
from qcompiler.errors import ConfigError, PipelineError
from qcompiler.graph import Graph, Node, Value
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.quant_math import quantize_weight
from qcompiler.quant_ops import WEIGHTED, weight_axis

DYNAMIC_OPS = frozenset({"Gemm", "MatMul"})
DYNAMIC_QUANTIZE = "DynamicQuantizeLinear"
WEIGHT_DTYPES = ("i8", "u8")


@register_pass
@dataclass
class QuantizeDynamic(Pass):
    """Int8 weights read through DQ; activations of Gemm/MatMul quantized at run time (unless
    ``weight_only``, which covers every weighted op and keeps float activations)."""

    name = "quantize-dynamic"
    weight_only: bool = False
    per_channel: bool = True
    symmetric: bool = True
    weight_dtype: str = "i8"
    reduce_range: bool = False
    config: QuantConfig | None = field(default=None, repr=False)  # its exclusions apply

    def __post_init__(self) -> None:
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise PipelineError(f"quantize-dynamic: weight_dtype must be one of "
                                f"{', '.join(WEIGHT_DTYPES)}, got {self.weight_dtype!r}")

    @property
    def op_types(self) -> frozenset[str]:
        return WEIGHTED if self.weight_only else DYNAMIC_OPS

    def refusal(self, node: Node, excluded: dict[Node, str]) -> str | None:
        """Why a candidate op stays float (None when it is quantized)."""
        if node in excluded:
            return f"excluded by the config ({excluded[node]})"
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if weight is None or not weight.is_constant:
            return "its weight is not a constant"
        if weight.dtype != "f32":  # a DequantizeLinear of an int8 weight gives f32
            return f"its weight %{weight.name} is {weight.dtype}, not f32"
        if not self.weight_only and node.inputs[0].dtype != "f32":
            return (f"its input %{node.inputs[0].name} is {node.inputs[0].dtype}; "
                    f"DynamicQuantizeLinear quantizes f32")
        return None

    def excluded(self, graph: Graph) -> dict[Node, str]:
        return self.config.excluded(graph) if self.config is not None else {}

    def explain(self, graph: Graph) -> list[str]:
        excluded = self.excluded(graph)
        return [f"{node.describe()} stays float: {reason}" for node in graph.nodes
                if node.op in self.op_types and (reason := self.refusal(node, excluded))]

    def run(self, graph: Graph) -> PassResult:
        notes = self.explain(graph)
        excluded = self.excluded(graph)
        weights: dict[tuple[int, int | None], Value] = {}
        activations: dict[int, Value] = {}
        stats = {"weights": 0, "activations": 0}
        for node in list(graph.nodes):
            if node.op not in self.op_types or self.refusal(node, excluded):
                continue
            weight = node.inputs[1]
            key = (id(weight), self._axis(node, weight))
            if key not in weights:
                weights[key] = self._weight(graph, node, weight)
                stats["weights"] += 1
            node.set_input(1, weights[key])
            if not weight.uses and not weight.is_graph_output:
                graph.erase_constant(weight)
            if self.weight_only:
                continue
            x = node.inputs[0]
            if id(x) not in activations:
                activations[id(x)] = _dynamic_dequantized(graph, x, node)
                stats["activations"] += 1
            node.set_input(0, activations[id(x)])
        return PassResult(graph, stats["weights"] > 0, {k: v for k, v in stats.items() if v},
                          notes)

    def _axis(self, node: Node, weight: Value) -> int | None:
        """The weight's output-channel axis when quantized per channel (a matrix or more),
        else None (per tensor)."""
        rank = len(weight.shape)
        if not self.per_channel or rank < 2:
            return None
        return weight_axis(node.op, node.attrs) % rank

    def _weight(self, graph: Graph, node: Node, weight: Value) -> Value:
        """The int8 (or uint8) constant of ``weight`` read through a DQ placed before ``node``."""
        axis = self._axis(node, weight)
        q, params = quantize_weight(weight.data, axis=axis or 0, dtype=self.weight_dtype,
                                    symmetric=self.symmetric, per_channel=axis is not None,
                                    reduce_range=self.reduce_range, name=weight.name)
        constant = qdq.add_quantized_constant(graph, q, params, f"{weight.name}.quantized")
        return qdq.add_dequantize(graph, constant, before=node, origins=node.origins,
                                  name=f"{weight.name}.dq")


def _dynamic_dequantized(graph: Graph, x: Value, reader: Node) -> Value:
    """``x`` quantized at run time by DynamicQuantizeLinear and dequantized, before ``reader``."""
    quantize = graph.add_node(DYNAMIC_QUANTIZE, [x], name=f"{x.name}.dynamic_q", outputs=[
        f"{x.name}.q", f"{x.name}.scale", f"{x.name}.zero_point"], before=reader,
        origins=reader.origins)
    dequantize = graph.add_node(qdq.DEQUANTIZE, list(quantize.outputs), name=f"{x.name}.dq",
                                before=reader, origins=reader.origins)
    return dequantize.outputs[0]


MODES = ("dynamic", "weight_only")


def dynamic_pass(config: QuantConfig) -> QuantizeDynamic:
    """The ``quantize-dynamic`` pass a ``QuantConfig`` of mode "dynamic" or "weight_only" asks
    for: its weight dtype, symmetry, granularity and ``reduce_range``, and its exclusions."""
    if config.mode not in MODES:
        raise ConfigError(f"dynamic_pass needs a config of mode {' or '.join(MODES)}, got "
                          f"mode={config.mode!r}")
    unapplied = ([f"overrides ({', '.join(map(repr, config.overrides))})"]
                 if config.overrides else []) + (["bias_correction=True"]
                                                 if config.bias_correction else [])
    if unapplied:
        raise ConfigError(f"mode={config.mode!r} does not calibrate, so "
                          f"{' and '.join(unapplied)} would not apply: use mode='static', or "
                          f"leave {'them' if len(unapplied) > 1 else 'it'} out")
    return QuantizeDynamic(weight_only=config.mode == "weight_only",
                           per_channel=config.per_channel, symmetric=config.weight_symmetric,
                           weight_dtype=config.weight_dtype, reduce_range=config.reduce_range,
                           config=config)
