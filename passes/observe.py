"""``insert-observers``: an ``Observe`` node after every float activation, for calibration.

An activation is a float graph input or node output that a node reads or that is a graph
output; constants are weights, not activations. Each node reading an activation is rewired to
read its Observe node's output, which is the same array, so the graph computes what it did
before. A value only the graph outputs read gets an Observe node nothing reads: the graph's
output names stay as they were. The pass is idempotent (an observed value is not observed
twice), and ``strip_observers`` undoes it.

Run it after ``canonicalize``: dead-code elimination drops an Observe node that nothing reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from qcompiler.graph import Graph, Node, Value
from qcompiler.ops.observe import OBSERVE
from qcompiler.pass_manager import Pass, PassResult, register_pass


def observed_value(node: Node) -> Value:
    """The activation an Observe node observes."""
    return node.inputs[0]


def is_observed(value: Value) -> bool:
    """Whether ``value`` is an Observe node's input or output."""
    made_by = value.producer
    return (made_by is not None and made_by.op == OBSERVE) or any(
        user.op == OBSERVE for user in value.users)


def activations(graph: Graph) -> list[Value]:
    """The float values calibration observes: graph inputs and node outputs (not constants)
    that a node or the graph outputs read, in graph order."""
    candidates = [*graph.inputs, *(v for node in graph.nodes for v in node.outputs)]
    return [v for v in candidates
            if v.dtype.is_float and not v.is_constant and (v.uses or v.is_graph_output)]


def observe(graph: Graph, value: Value) -> Node:
    """Put an Observe node after ``value`` and make every node that reads ``value`` read the
    Observe node's output instead (graph outputs keep reading ``value``)."""
    made_by = value.producer
    origins = made_by.origins if made_by is not None else (value.name,)
    anchor = {"after": made_by} if made_by is not None else (
        {"before": graph.nodes[0]} if graph.nodes else {})
    readers = value.users
    node = graph.add_node(OBSERVE, [value], name=f"{value.name}.observe",
                          outputs=[f"{value.name}.observed"], origins=origins, **anchor)
    for reader in readers:
        reader.replace_input(value, node.outputs[0])
    return node


def insert_observers(graph: Graph) -> int:
    """Observe every activation of ``graph`` not observed yet; returns how many were added."""
    todo = [v for v in activations(graph) if not is_observed(v)]
    for value in todo:
        observe(graph, value)
    return len(todo)


def strip_observers(graph: Graph) -> int:
    """Remove every Observe node, rewiring its readers back to the value it observes; returns
    how many were removed."""
    nodes = graph.find_nodes(OBSERVE)
    for node in nodes:
        graph.replace_all_uses_with(node.outputs[0], observed_value(node))
        graph.erase(node)
    return len(nodes)


@register_pass
@dataclass
class InsertObservers(Pass):
    """An Observe node after every float activation (graph inputs and node outputs)."""

    name = "insert-observers"

    def run(self, graph: Graph) -> PassResult:
        added = insert_observers(graph)
        return PassResult(graph, bool(added), {"observers": added} if added else {})
