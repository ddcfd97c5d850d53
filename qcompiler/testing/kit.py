"""What builders work with: ``GraphKit`` (the graph being drawn, hypothesis' ``draw``, a seeded
numpy generator, helpers that add nodes and constants and track magnitude bounds), ``Builder``
and the registry ``BUILDERS`` that ``register_builder`` fills."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..graph import Graph, Value
from ..interpreter import Interpreter
from ..types import DType

F32 = np.float32
INPUT_BOUND = 4.0  # |value| assumed for graph inputs when tracking magnitude bounds
MUL_LIMIT = 1e6  # ``mul`` only multiplies values whose bounds' product stays below this
MAX_DIM = 16  # channel / feature / spatial sizes builders grow a value to, at most
MAX_ELEMENTS = 4096  # per-sample elements of a value a growing builder still accepts
_BOOLEANS = st.booleans()


@functools.cache
def _indices(n: int) -> SearchStrategy[int]:
    if n < 1:
        raise ValueError("cannot choose from an empty sequence")
    return st.integers(0, n - 1)


# ---------------------------------------------------------------------------------------------
# The builder registry and the kit builders work with.


class GraphKit:
    """What a builder sees while a graph is drawn: the graph, hypothesis' ``draw``, a numpy
    generator seeded by hypothesis for the current step (fill weights from ``kit.rng``, never
    draw arrays element by element), and helpers that create nodes and constants.

    Every node goes through ``kit.node`` so that the kit can track, for each float value, an
    upper bound of its magnitude (``kit.bound``) when the graph inputs lie in [-4, 4]; builders
    that multiply values use it to keep results finite and O(1).
    """

    def __init__(self, graph: Graph, draw: Callable[..., Any]):
        self.graph = graph
        self._draw = draw
        self.rng = np.random.default_rng(0)
        self._values: list[Value] = []
        self._bounds: dict[int, float] = {}
        self.kept: list[Value] = []

    def draw(self, strategy: SearchStrategy, label: str | None = None) -> Any:
        """Draw from a hypothesis strategy (shrinkable; use it for every structural choice)."""
        return self._draw(strategy) if label is None else self._draw(strategy, label=label)

    def coin(self) -> bool:
        return self.draw(_BOOLEANS)

    def choice(self, options: Sequence[Any]) -> Any:
        """One of ``options``; hypothesis shrinks towards the first."""
        return options[self.draw(_indices(len(options)))]

    # -- values ---------------------------------------------------------------------------------

    def values(self, accept: Callable[[Value], bool] | None = None) -> list[Value]:
        """The float values that builders may read (graph inputs and node outputs), newest
        first, optionally filtered by ``accept``."""
        vals = list(reversed(self._values))
        return [v for v in vals if accept is None or accept(v)]

    def bound(self, value: Value) -> float:
        """An upper bound of ``|value|`` for graph inputs in [-4, 4]."""
        if value.is_constant:
            return _max_abs(value.data)
        return self._bounds.get(id(value), math.inf)

    def keep(self, value: Value) -> None:
        """Make ``value`` a graph output of the finished graph."""
        if all(v is not value for v in self.kept):
            self.kept.append(value)

    def _offer(self, value: Value, bound: float) -> None:
        self._bounds[id(value)] = bound
        if value.dtype == DType.F32:
            self._values.append(value)

    def _promote(self, value: Value) -> None:
        """Make ``value`` the newest candidate (what the next step most likely reads)."""
        for k, v in enumerate(self._values):
            if v is value:
                del self._values[k]
                break
        self._values.append(value)

    # -- building -------------------------------------------------------------------------------

    def node(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
             *, name: str | None = None, outputs: int | None = None) -> Value:
        """Add a node (type inference from the op registry checks it) and return its first
        output."""
        node = self.graph.add_node(op, list(inputs), attrs, name=name, outputs=outputs)
        bound = _bound(self, node)
        for out in node.outputs:
            self._offer(out, bound)
        return node.outputs[0]

    def const(self, data: Any, name: str = "const") -> Value:
        """A constant; float data becomes float32, other dtypes stay as they are."""
        array = np.asarray(data)
        if array.dtype.kind == "f":
            array = array.astype(F32)
        return self.graph.add_constant(array, name)

    def ints(self, values: Any, name: str = "const") -> Value:
        """An int64 constant (shapes, axes, indices)."""
        return self.graph.add_constant(np.asarray(values, dtype=np.int64), name)

    def weight(self, shape: Sequence[int], fan_in: int, name: str = "weight") -> Value:
        """A float32 constant ~ N(0, 1/fan_in): keeps activations O(1) through linear layers."""
        std = 1.0 / math.sqrt(max(1, fan_in))
        return self.const(self.rng.normal(0.0, std, tuple(shape)), name)

    def maybe(self, attrs: dict[str, Any], key: str, value: Any, default: Any) -> None:
        """Set ``attrs[key]``, leaving it out (half the time) when it equals the default, so
        both spellings occur. The spelling is not worth a shrinkable choice: ``rng`` picks."""
        if value != default or self.rng.random() < 0.5:
            attrs[key] = value


@dataclass(frozen=True)
class Builder:
    """A named way of growing a graph: ``build(kit, x)`` adds nodes reading value ``x`` and
    returns the value the graph continues from (or None to decline). ``ranks`` are the ranks of
    ``x`` it handles (None: any) and ``accepts(kit, x)`` can refuse a value further."""

    name: str
    build: Callable[[GraphKit, Value], Value | None]
    ranks: frozenset[int] | None = None
    accepts: Callable[[GraphKit, Value], bool] | None = None
    doc: str = ""

    def applies(self, kit: GraphKit, value: Value) -> bool:
        if value.dtype != DType.F32 or not value.type.rank:
            return False
        if self.ranks is not None and value.type.rank not in self.ranks:
            return False
        return self.accepts is None or bool(self.accepts(kit, value))


BUILDERS: dict[str, Builder] = {}


def register_builder(
    name: str, *, ranks: Collection[int] | None = None,
    accepts: Callable[[GraphKit, Value], bool] | None = None, replace: bool = False,
) -> Callable[[Callable[[GraphKit, Value], Value | None]],
              Callable[[GraphKit, Value], Value | None]]:
    """Register the decorated ``build(kit, x) -> Value | None`` as builder ``name``::

        @register_builder("swish", ranks=(2, 3, 4))
        def swish(kit: GraphKit, x: Value) -> Value:
            return kit.node("Mul", [x, kit.node("Sigmoid", [x])])

        graphs(builders=["conv", "swish"])

    Draw every choice with ``kit.draw``/``kit.choice``/``kit.coin`` and fill arrays from
    ``kit.rng``; create nodes with ``kit.node`` and constants with ``kit.const``. The builder
    must only create valid nodes for the ``x`` it gets (restrict ``ranks``, or refuse values in
    ``accepts``). ``replace=True`` overrides an existing builder of that name.
    """

    def register(build: Callable[[GraphKit, Value], Value | None]):
        if name in BUILDERS and not replace:
            raise ValueError(f"builder {name!r} is already registered (pass replace=True)")
        BUILDERS[name] = Builder(name, build, None if ranks is None else frozenset(ranks),
                                 accepts, (build.__doc__ or "").strip())
        return build

    return register


# ---------------------------------------------------------------------------------------------
# Magnitude bounds: interval-style upper bounds of |value|, per op.

_UNIT_OPS = {"Sigmoid", "Tanh", "Softmax", "HardSigmoid"}


def _max_abs(array: np.ndarray) -> float:
    if array.dtype.kind not in "fiu" or array.size == 0:
        return 0.0
    return float(np.max(np.abs(array.astype(np.float64))))


def _bound(kit: GraphKit, node: Any) -> float:
    """Upper bound of the magnitude of ``node``'s outputs from the bounds of its inputs."""
    ins = node.inputs
    present = [v for v in ins if v is not None]
    if present and all(v.is_constant for v in present):
        first = Interpreter(kit.graph).run_node(node, [None if v is None else v.data
                                                       for v in ins])[0]
        return _max_abs(first)

    def b(i: int) -> float:
        return kit.bound(ins[i]) if i < len(ins) and ins[i] is not None else 0.0

    def data(i: int) -> np.ndarray | None:
        return ins[i].data if i < len(ins) and ins[i] is not None else None

    op = node.op
    if op in _UNIT_OPS:
        return 1.0
    if op in ("Add", "Sub"):
        return b(0) + b(1)
    if op == "Mul":
        return b(0) * b(1)
    if op == "Div":
        d = data(1)
        low = float(np.min(np.abs(d))) if d is not None and d.size else 0.0
        return b(0) / low if low > 0 else math.inf
    if op == "Clip":
        lo, hi = data(1), data(2)
        if lo is not None and hi is not None:
            return min(b(0), max(_max_abs(lo), _max_abs(hi)))
        return max(b(0), b(1), b(2))
    if op == "LeakyRelu":
        return b(0) * max(1.0, abs(node.attrs.get("alpha", 0.01)))
    w = data(1)
    if op in ("Conv", "Gemm", "MatMul") and w is None:
        return math.inf
    if op == "Conv":
        return b(0) * float(np.abs(w).reshape(w.shape[0], -1).sum(axis=1).max()) + b(2)
    if op == "ConvTranspose":
        g = node.attrs.get("group", 1)
        per = np.abs(w).reshape(g, w.shape[0] // g, w.shape[1], -1).sum(axis=(1, 3))
        return b(0) * float(per.max()) + b(2)
    if op == "Gemm":
        wt = w.T if node.attrs.get("transB", 0) else w
        alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
        return abs(alpha) * b(0) * float(np.abs(wt).sum(axis=0).max()) + abs(beta) * b(2)
    if op == "MatMul":
        return b(0) * float(np.abs(w).sum(axis=-2).max())
    if op == "BatchNormalization":
        scale, shift, mean, var = (ins[i].data.astype(np.float64) for i in range(1, 5))
        s = np.abs(scale) / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
        return float(np.max(s * (b(0) + np.abs(mean)) + np.abs(shift)))
    return max((kit.bound(v) for v in present if v.dtype.is_float), default=0.0)


