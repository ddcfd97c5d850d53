"""The LLVM backend's memory plan: every intermediate tensor of a run at an offset in one arena,
tensors whose lifetimes overlap never sharing a byte.

A value lives from the step that writes it (graph inputs: before the first step) to the last
step that reads it (graph outputs: to the end). Two values interfere when their lifetimes
overlap; the interference graph (networkx) is coloured with offsets, largest value first, each
at the lowest aligned offset where it overlaps no interfering value already placed (the
greedy-by-size strategy of TFLite's arena planner). Constants are not in the arena. Sizes must
be known: a symbolic dimension is bound to a number first (``sizes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from qcompiler.errors import BackendError
from qcompiler.graph import Graph, Value

ALIGNMENT = 64  # bytes: a cache line, and every vector load's alignment


@dataclass(frozen=True)
class Plan:
    """Where each value lives in the arena: ``offsets[name]`` in bytes, ``size`` the arena's
    bytes; ``lifetimes[name] = (first step, last step)``."""

    offsets: dict[str, int]
    nbytes: dict[str, int]
    lifetimes: dict[str, tuple[int, int]]
    size: int

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of values that are live at the same time and share bytes (none, if the plan
        is right)."""
        names = sorted(self.offsets)
        bad = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if _meet(self.lifetimes[a], self.lifetimes[b]) and _meet(
                        (self.offsets[a], self.offsets[a] + self.nbytes[a] - 1),
                        (self.offsets[b], self.offsets[b] + self.nbytes[b] - 1)):
                    bad.append((a, b))
        return bad


def _meet(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _nbytes(value: Value, sizes: dict[str, int]) -> int:
    count = 1
    for dim in value.shape:
        size = dim if isinstance(dim, int) else sizes.get(dim)
        if size is None:
            raise BackendError(f"%{value.name} has the dimension {dim!r}, whose size is not "
                               f"given; the memory plan needs every size")
        count *= size
    return max(count * value.dtype.np.itemsize, 1)


def lifetimes(graph: Graph) -> dict[Value, tuple[int, int]]:
    """First and last step (node index) of every non-constant value of ``graph``."""
    end = len(graph.nodes)
    life: dict[Value, list[int]] = {v: [-1, -1] for v in graph.inputs}
    for step, node in enumerate(graph.nodes):
        for value in node.inputs:
            if value is not None and not value.is_constant:
                life[value][1] = max(life[value][1], step)
        for value in node.outputs:
            life[value] = [step, step]
    for value in graph.outputs:
        if not value.is_constant:
            life[value][1] = end
    return {value: (first, last) for value, (first, last) in life.items()}


def plan(graph: Graph, sizes: dict[str, int] | None = None,
         alignment: int = ALIGNMENT) -> Plan:
    """The arena plan of ``graph`` run node by node in its order; ``sizes`` binds symbolic
    dimensions (``{"N": 64}``)."""
    life = lifetimes(graph)
    return place({v.name: (_nbytes(v, sizes or {}), span) for v, span in life.items()},
                 alignment)


def place(items: dict[str, tuple[int, tuple[int, int]]], alignment: int = ALIGNMENT) -> Plan:
    """Offsets for named blocks ``{name: (nbytes, (first step, last step))}``: blocks whose
    step spans meet never share a byte."""
    life = {name: span for name, (_, span) in items.items()}
    nbytes = {name: max(int(size), 1) for name, (size, _) in items.items()}
    interference = nx.Graph()
    interference.add_nodes_from(life)
    by_start = sorted(life.items(), key=lambda item: (item[1][0], item[0]))
    for i, (a, span_a) in enumerate(by_start):
        for b, span_b in by_start[i + 1:]:
            if span_b[0] > span_a[1]:
                break
            interference.add_edge(a, b)
    offsets: dict[str, int] = {}
    for name in sorted(nbytes, key=lambda n: (-nbytes[n], n)):
        taken = sorted((offsets[other], offsets[other] + nbytes[other])
                       for other in interference[name] if other in offsets)
        offset = 0
        for start, stop in taken:
            if offset + nbytes[name] <= start:
                break
            offset = max(offset, _aligned(stop, alignment))
        offsets[name] = offset
    size = max((offsets[n] + nbytes[n] for n in offsets), default=0)
    return Plan(offsets, nbytes, life, size)


def _aligned(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment
