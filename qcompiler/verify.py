"""The invariants behind ``Graph.verify()``: SSA, use-lists, order, types and quantization."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import ops
from .errors import ShapeInferenceError, UnsupportedModelError
from .ops._schema import UNKNOWN

if TYPE_CHECKING:
    from .graph import Graph, Value


def graph_problems(g: Graph) -> list[str]:
    """Every broken invariant of ``g``, one readable line each (empty when ``g`` is valid)."""
    problems: list[str] = []
    defined: set[int] = set()
    expected_uses: dict[int, list[tuple[int, int]]] = {}
    owners: dict[int, Value] = {}

    def define(value: Value, where: str) -> None:
        if id(value) in defined:
            problems.append(f"%{value.name} is defined twice ({where})")
        defined.add(id(value))
        owners[id(value)] = value
        if g._names.get(value.name) is not value:
            problems.append(f"%{value.name} ({where}) is not registered under its name")
        if value.graph is not g:
            problems.append(f"%{value.name} ({where}) does not point back to its graph")
        if value.type.quant is not None:
            for p in value.type.quant.problems():
                problems.append(f"%{value.name}: {p}")
            q = value.type.quant
            if value.dtype.is_integer and q.dtype != value.dtype:
                problems.append(f"%{value.name} is {value.dtype} but its quantization is {q.dtype}")
            if q.axis is not None and not -value.type.rank <= q.axis < value.type.rank:
                problems.append(f"%{value.name}: quantization axis {q.axis} is out of range")
            elif q.axis is not None:
                size = value.shape[q.axis]
                if isinstance(size, int) and size != len(q.scale):
                    problems.append(f"%{value.name}: {len(q.scale)} per-channel scales for "
                                    f"axis {q.axis} of size {size}")

    for value in g.inputs:
        define(value, "graph input")
        if value.producer is not None or value.data is not None:
            problems.append(f"graph input %{value.name} has a producer or data")
    for name, value in g.constants.items():
        define(value, "constant")
        if name != value.name:
            problems.append(f"constant registered as {name!r} is named %{value.name}")
        if value.data is None:
            problems.append(f"constant %{value.name} has no data")
        elif (value.data.dtype != value.dtype.np or tuple(value.data.shape) != value.shape):
            problems.append(
                f"constant %{value.name} is typed {value.type} but holds "
                f"{value.data.dtype}{list(value.data.shape)}")

    node_names: set[str] = set()
    for node in g.nodes:
        where = node.describe()
        if node.name in node_names:
            problems.append(f"node name {node.name!r} is used twice")
        node_names.add(node.name)
        if node.graph is not g:
            problems.append(f"{where} does not point back to its graph")
        for index, value in enumerate(node.inputs):
            if value is None:
                continue
            if any(value is out for out in node.outputs):
                problems.append(f"{where} reads its own output %{value.name}")
            elif id(value) not in defined:
                problems.append(f"{where} reads %{value.name} before it is defined "
                                f"(or it is not in the graph)")
            expected_uses.setdefault(id(value), []).append((id(node), index))
        for value in node.outputs:
            define(value, where)
            if value.producer is not node:
                problems.append(f"%{value.name} does not name {where} as its producer")
        try:
            opdef = ops.get(node.op)
        except KeyError:
            problems.append(f"{where}: op {node.op!r} is not registered")
            continue
        try:
            inferred = g._infer(node, len(node.outputs))
        except (ShapeInferenceError, UnsupportedModelError) as exc:
            problems.append(str(exc))
            continue
        for value, out in zip(node.outputs, inferred):
            if value.dtype.value != out.dtype or not _shape_agrees(value.shape, out.shape):
                problems.append(
                    f"{where}: %{value.name} is typed {value.type} but {opdef.name} gives "
                    f"{out.dtype}[{','.join(map(str, out.shape))}]")

    for value in g.outputs:
        if id(value) not in defined:
            problems.append(f"graph output %{value.name} is not defined in the graph")

    for vid, value in owners.items():
        actual = sorted((id(n), i) for n, i in value.uses)
        if actual != sorted(expected_uses.get(vid, [])):
            problems.append(f"use-list of %{value.name} is out of date")
    return problems


def _shape_agrees(stored: tuple, inferred: tuple) -> bool:
    """A stored shape agrees with inference when every dim matches or inference knows less."""
    if len(stored) != len(inferred):
        return False
    return all(a == b or b == UNKNOWN for a, b in zip(stored, inferred))


