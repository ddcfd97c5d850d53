"""Constant folding and dead-code elimination: plain functions over the ``Graph`` API.

``fold_constants`` evaluates every node whose inputs are all constants with the op's numpy
reference kernel, and every node whose outputs' contents are already known as integers
(``Value.sym``: the ``Shape -> Gather -> Concat`` chains of exported models), replacing the
outputs by constants that keep the original tensor names. ``eliminate_dead_code`` then removes
what nobody reads. Both only use the graph's mutation helpers, so use-lists stay exact.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ExecutionError, IRError
from .graph import Graph, Node, Value

# Ops never folded even when their inputs are constant: DequantizeLinear of int8 weights is how
# a QDQ model says "this weight is quantized" (folding it would throw that away), and random
# ops must draw anew on every run.
NEVER_FOLD = frozenset({"DequantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike", "Bernoulli", "Multinomial"})


def fold_constants(graph: Graph) -> int:
    """Replace computable node outputs by constants; return the number of nodes folded."""
    folded = 0
    for node in list(graph.nodes):
        arrays = _known_outputs(node)
        if arrays is None:
            continue
        replaced = []
        for value, array in zip(node.outputs, arrays, strict=True):
            if value.uses or value.is_graph_output:
                replaced.append((value.name, graph.replace_with_constant(value, array)))
        graph.erase(node)
        for name, const in replaced:
            graph.rename_value(const, name)
        folded += 1
    return folded


def eliminate_dead_code(graph: Graph) -> int:
    """Remove nodes and constants whose values nobody reads; return how many were removed."""
    removed = 0
    for node in reversed(list(graph.nodes)):
        if not any(v.uses or v.is_graph_output for v in node.outputs):
            graph.erase(node)
            removed += 1
    for value in list(graph.constants.values()):
        if not value.uses and not value.is_graph_output:
            graph.erase_constant(value)
            removed += 1
    return removed


def _known_outputs(node: Node) -> list[np.ndarray] | None:
    """The outputs of ``node`` as arrays when they can be computed now, else None."""
    if any(v.type.quant is not None for v in node.outputs):
        return None
    from_sym = [_sym_array(v) for v in node.outputs]
    if all(a is not None for a in from_sym):
        return from_sym  # type: ignore[return-value]
    if node.op in NEVER_FOLD or not all(v.is_constant for v in node.inputs if v is not None):
        return None
    opdef = node.opdef
    try:
        result = opdef.kernel(*[None if v is None else v.data for v in node.inputs],
                              **opdef.full_attrs(node.attrs))
    except Exception as exc:  # a kernel failing on constants fails at run time too: say where
        raise ExecutionError(f"constant folding {node.describe()} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    results = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(results) < len(node.outputs):
        raise IRError(f"constant folding {node.describe()}: its kernel returned {len(results)} "
                      f"output(s) for {len(node.outputs)}")
    arrays = []
    for value, out in zip(node.outputs, results[:len(node.outputs)], strict=True):
        out = np.asarray(out)
        if value.type.is_static and tuple(out.shape) != value.shape:
            raise IRError(f"constant folding {node.describe()}: its kernel gave shape "
                          f"{list(out.shape)} for %{value.name}, inference said {value.type}")
        arrays.append(out)
    return arrays


def _sym_array(value: Value) -> np.ndarray | None:
    """The known integer contents of a shape-like value as an array of its type, else None."""
    sym = value.sym
    if sym is None or not all(isinstance(d, (int, np.integer)) for d in sym):
        return None
    if not value.dtype.is_integer or not value.type.is_static:
        return None
    if math.prod(value.shape) != len(sym):
        return None
    return np.array(sym, dtype=value.dtype.np).reshape(value.shape)
