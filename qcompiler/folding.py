"""Constant folding and dead-code elimination: plain functions over the ``Graph`` API.

``fold_constants`` walks the nodes in order. It first re-infers each node's output types from
its operands as they are now and refines what the graph stores (an unknown ``?`` dimension that
inference now knows takes its value; shape-like contents, ``Value.sym``, likewise): once an
earlier fold has made an operand constant, a reader such as ``Slice(x, 0, Add(1, 1))`` knows its
shape, and so does everything downstream, so stored types never know less than inference. It
then replaces the outputs of a node whose operands are all constants (evaluated by the
``Interpreter``, the one way qcompiler runs nodes) or whose integer contents are already known
(the ``Shape -> Gather -> Concat`` chains of exported models) by constants that keep the
original tensor names (``fold_node``, which the ONNX importer also calls on each node it adds,
so the nodes after it see constant operands). ``eliminate_dead_code`` then removes what nobody
reads. All only use the graph's mutation helpers, so use-lists stay exact.

Size: a fold must not turn a few bytes of model into a huge constant (``Expand(0.5, [8192,
8192])`` is 256 MiB). A result folds when it is at most ``limit`` bytes (``FOLD_LIMIT``, 64 KiB,
by default; None: no limit) or at most ``FOLD_GROWTH`` (4) times the bytes of its operands
(a transposed or reshaped weight, or an int8 or f16 weight widened to f32, still folds);
otherwise the op stays and computes its result at run time. Shape-like integer contents always
fold.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ExecutionError, IRError
from .graph import Graph, Node, Value
from .interpreter import Interpreter
from .ops._schema import UNKNOWN, Out
from .types import TensorType

# Ops never folded even when their inputs are constant: DequantizeLinear of int8 weights is how
# a QDQ model says "this weight is quantized" (folding it would throw that away), and random
# ops must draw anew on every run.
NEVER_FOLD = frozenset({"DequantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform",
                        "RandomUniformLike", "Bernoulli", "Multinomial"})

FOLD_LIMIT = 64 * 1024
"""Bytes up to which a computed result always folds (the default of ``fold_constants``)."""

FOLD_GROWTH = 4
"""A larger result folds when it is at most this many times the bytes of its operands."""


def fold_constants(graph: Graph, limit: int | None = FOLD_LIMIT) -> int:
    """Refine stored types from inference and replace computable node outputs by constants
    (results above ``limit`` bytes only when not much larger than their operands; ``limit``
    None folds every size); return the number of nodes folded."""
    interpreter = Interpreter(graph)
    folded = 0
    for node in list(graph.nodes):
        refine_types(graph, node)
        if fold_node(graph, node, interpreter, limit) is not None:
            folded += 1
    return folded


def fold_node(graph: Graph, node: Node, interpreter: Interpreter,
              limit: int | None = FOLD_LIMIT, *, unread: bool = False
              ) -> list[Value | None] | None:
    """Replace ``node`` by constants when its outputs can be computed now (by
    ``interpreter``) and are small enough under ``limit`` (as ``fold_constants``); return
    them, one per output, else None (the node stays).

    Each constant takes its output's name. Outputs nobody reads are dropped (None), unless
    ``unread``: an importer folds a node as soon as it is added, before its readers exist, so
    that they see its contents (a Squeeze whose axes are ``Add(a, b)`` of two initializers)."""
    arrays = _known_outputs(node, interpreter, limit)
    if arrays is None:
        return None
    replaced: list[Value | None] = []
    for value, array in zip(node.outputs, arrays, strict=True):
        kept = unread or value.uses or value.is_graph_output
        replaced.append(graph.replace_with_constant(value, array) if kept else None)
    names = [value.name for value in node.outputs]
    graph.erase(node)
    for name, const in zip(names, replaced, strict=True):
        if const is not None:
            graph.rename_value(const, name)
    return replaced


def refine_types(graph: Graph, node: Node) -> int:
    """Give ``node``'s outputs what inference knows now and their stored types do not (unknown
    dimensions and shape-like contents); return how many outputs changed. A disagreement is left
    for ``verify`` to report."""
    changed = 0
    for value, out in zip(node.outputs, graph._infer(node, len(node.outputs)), strict=True):
        if _refine(value, out):
            changed += 1
    return changed


def _refine(value: Value, out: Out) -> bool:
    before = (value.type, value.sym)
    if out.dtype == value.dtype.value and len(out.shape) == value.type.rank:
        shape = tuple(o if s == UNKNOWN else s for s, o in zip(value.shape, out.shape))
        value.type = TensorType(value.dtype, shape, value.type.quant)
    if out.sym is not None:
        if value.sym is None:
            value.sym = out.sym
        elif len(value.sym) == len(out.sym):
            value.sym = tuple(o if s == UNKNOWN else s for s, o in zip(value.sym, out.sym))
    return (value.type, value.sym) != before


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


def _known_outputs(node: Node, interpreter: Interpreter,
                   limit: int | None) -> list[np.ndarray] | None:
    """The outputs of ``node`` as arrays when they can be computed now and are small enough to
    keep as constants, else None."""
    if any(v.type.quant is not None for v in node.outputs):
        return None
    from_sym = [_sym_array(v) for v in node.outputs]
    if all(a is not None for a in from_sym):
        return from_sym  # type: ignore[return-value]
    if node.op in NEVER_FOLD or not all(v.is_constant for v in node.inputs if v is not None):
        return None
    operand_bytes = sum(v.data.nbytes for v in node.inputs if v is not None)
    if all(v.type.is_static for v in node.outputs):  # too big: known before computing it
        predicted = sum(math.prod(v.shape) * v.dtype.np.itemsize for v in node.outputs)
        if not _small_enough(predicted, operand_bytes, limit):
            return None
    try:
        results = interpreter.run_node(node, [None if v is None else v.data
                                              for v in node.inputs])
    except ExecutionError as exc:  # a kernel failing on constants fails at run time too
        raise ExecutionError(f"constant folding: {exc}") from exc
    for value, out in zip(node.outputs, results, strict=True):
        if value.type.is_static and tuple(out.shape) != value.shape:
            raise IRError(f"constant folding {node.describe()}: its kernel gave shape "
                          f"{list(out.shape)} for %{value.name}, inference said {value.type}")
    if not _small_enough(sum(r.nbytes for r in results), operand_bytes, limit):
        return None
    return results


def _small_enough(result_bytes: int, operand_bytes: int, limit: int | None) -> bool:
    return (limit is None or result_bytes <= limit
            or result_bytes <= FOLD_GROWTH * operand_bytes)


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
