"""What stays float in a quantized graph: ``Graph.float_islands()``.

A float node is one that computes on float tensors between the boundaries (QuantizeLinear,
DequantizeLinear, DynamicQuantizeLinear): a non-constant float operand or result. Float nodes
joined by the values they pass each other form an island. Each island carries, per node, why
it stays float: the reason the quantize or lower-int pass recorded
(``graph.metadata[FLOAT_REASONS]``), else what the graph shows: an op without an integer form,
one in QDQ form (it reads dequantized values; ``qc.lower`` would make it an integer op), one
quantized at run time or in its weights only, or one not quantized at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from . import qdq
from .quant_ops import FLOAT_REASONS, QUANTIZABLE

BOUNDARIES = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_SHAPE_ONLY = frozenset({"Shape", "Size"})  # they read a float tensor's shape, not its data


@dataclass(frozen=True)
class FloatIsland:
    """Connected float nodes (in graph order) and, per node name, why it is float."""

    nodes: tuple
    reasons: dict[str, str]

    def __str__(self) -> str:
        return "; ".join(f"{n.name} ({n.op}, layer {', '.join(n.origins)}): "
                         f"{self.reasons[n.name]}" for n in self.nodes)


def _is_float(node) -> bool:
    if node.op in BOUNDARIES:
        return False
    outputs = any(v.dtype.is_float for v in node.outputs)
    inputs = node.op not in _SHAPE_ONLY and any(
        v is not None and not v.is_constant and v.dtype.is_float for v in node.inputs)
    return outputs or inputs


def _reason(node, recorded: dict[str, str]) -> str:
    if node.name in recorded:
        return recorded[node.name]
    if node.op not in QUANTIZABLE:
        return f"{node.op} has no integer form"
    dqs = [v.producer for v in node.inputs if v is not None and v.producer is not None
           and v.producer.op == qdq.DEQUANTIZE]
    activations = [dq for dq in dqs if not dq.inputs[0].is_constant]
    if any(qdq.params_of(dq) is None for dq in activations):
        return "quantized at run time (dynamic quantization): its scales are not constants"
    if activations:
        return "in QDQ form: reads dequantized values, not lowered to an integer op (qc.lower)"
    if dqs:
        return "only its weights are quantized; its activations stay float"
    return "not quantized"


def float_islands(graph) -> list[FloatIsland]:
    """The float islands of ``graph`` in graph order (empty: integer from input Q to output
    DQ)."""
    floats = [n for n in graph.nodes if _is_float(n)]
    links = nx.Graph()
    links.add_nodes_from(id(n) for n in floats)
    members = {id(n) for n in floats}
    for node in floats:
        for value in node.inputs:
            if value is not None and value.producer is not None \
                    and id(value.producer) in members:
                links.add_edge(id(value.producer), id(node))
    order = {id(n): k for k, n in enumerate(graph.nodes)}
    by_id = {id(n): n for n in floats}
    recorded = graph.metadata.get(FLOAT_REASONS, {})
    islands = []
    for component in nx.connected_components(links):
        nodes = tuple(sorted((by_id[i] for i in component), key=lambda n: order[id(n)]))
        islands.append(FloatIsland(nodes, {n.name: _reason(n, recorded) for n in nodes}))
    return sorted(islands, key=lambda island: order[id(island.nodes[0])])
