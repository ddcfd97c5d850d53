"""Property-testing kit: hypothesis strategies for graphs, inputs and quantization parameters, and
the equivalence checks that qcompiler's own pass tests use, for testing your passes the same way.

    from qcompiler.testing import graphs, pass_property

    test_fold_bn = pass_property("fold-bn", graphs(builders=["conv", "conv_bn", "bn", "relu"]))

``graphs()`` draws random well-typed float32 graphs: one or two graph inputs, then a few random
*builders*, each of which takes an existing value that suits it and adds one or a few nodes
(``conv_bn`` adds a Conv and the BatchNormalization after it, ``hard_swish_decomposed`` the
Add/Clip/Mul/Div chain exporters write). Builders live in ``BUILDERS``; pick the structures your
pass cares about by name, or register your own with ``@register_builder``. ``inputs(graph)``
draws feeds for a graph, ``assert_equivalent`` compares two graphs' outputs (float tolerance or
quantization steps), and ``pass_property`` turns a pipeline into a ready-made hypothesis test.

hypothesis is a test extra: ``import qcompiler`` never imports it, this module does.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import hypothesis
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "qcompiler.testing needs hypothesis, which is a test extra: "
        "pip install qcompiler[test]"
    ) from exc

from . import ops
from .graph import Graph, Value
from .types import DType, QuantParams, TensorType

__all__ = [
    "BUILDERS", "Builder", "GraphKit", "assert_equivalent", "graphs", "inputs", "pass_property",
    "quant_params", "register_builder", "run_graph",
]

F32 = np.float32
INPUT_BOUND = 4.0  # |value| assumed for graph inputs when tracking magnitude bounds
MUL_LIMIT = 1e6  # ``mul`` only multiplies values whose bounds' product stays below this
MAX_DIM = 16  # channel / feature / spatial sizes builders grow a value to, at most
MAX_ELEMENTS = 4096  # per-sample elements of a value a growing builder still accepts
_SEEDS = st.integers(0, 2**32 - 1)
_BATCH, _CHANNELS, _SPATIAL = st.integers(1, 3), st.integers(1, 6), st.integers(1, 8)
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
        opdef = ops.get(node.op)
        result = opdef.kernel(*[None if v is None else v.data for v in ins],
                              **opdef.full_attrs(node.attrs))
        first = result[0] if isinstance(result, tuple) else result
        return _max_abs(np.asarray(first))

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


# ---------------------------------------------------------------------------------------------
# graphs()


def graphs(
    builders: Iterable[str] | None = None,
    *,
    min_steps: int = 1,
    max_steps: int = 6,
    batch: SearchStrategy = _BATCH,
    channels: SearchStrategy = _CHANNELS,
    spatial: SearchStrategy = _SPATIAL,
    max_inputs: int = 2,
    max_extra_outputs: int = 2,
) -> SearchStrategy[Graph]:
    """Random well-typed float32 graphs made of the named builders (all of ``BUILDERS`` when
    None); every result passes ``graph.verify()``.

    A graph starts from 1 to ``max_inputs`` graph inputs (rank 4 NCHW with ``channels`` and
    ``spatial`` sizes; sometimes rank 2 ``[batch, features]`` or rank 3, when a chosen builder
    handles those ranks), then applies ``min_steps`` to ``max_steps`` builders, each to an
    existing value it suits (most often the newest). Its outputs are the last value produced,
    the values builders asked to keep, and sometimes one or two intermediate values, so some
    values are read both by nodes and as graph outputs. ``batch`` may also draw a symbol name
    (``st.just("N")``) for a dynamic batch dimension; ``inputs()`` binds it to a size.
    """
    if isinstance(builders, str):
        raise TypeError("builders must be a list of builder names, not a string")
    names = list(BUILDERS) if builders is None else list(builders)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown builder(s) {', '.join(map(repr, unknown))}; registered: "
                       f"{', '.join(sorted(BUILDERS))}")
    if not names:
        raise ValueError("graphs() needs at least one builder")
    if not 0 <= min_steps <= max_steps:
        raise ValueError(f"need 0 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    return _graphs(tuple(names), min_steps, max_steps, batch, channels, spatial,
                   max(1, max_inputs), max_extra_outputs)


def _input_ranks(chosen: Sequence[Builder]) -> list[int]:
    """Ranks of graph inputs worth drawing for these builders, rank 4 first."""
    handled: set[int] = set()
    for b in chosen:
        handled |= set(b.ranks) if b.ranks is not None else {2, 3, 4}
    ranks = [r for r in (4, 2, 3) if r in handled]
    return ranks or sorted(r for r in handled if r >= 1)[:1] or [4]


def _input_shape(draw: Callable[..., Any], rank: int, batch: Any, channels: SearchStrategy,
                 spatial: SearchStrategy) -> tuple:
    if rank == 1:
        return (draw(st.integers(1, MAX_DIM)),)
    if rank == 2:
        return (batch, draw(st.integers(1, MAX_DIM)))
    nsp = rank - 2
    sizes = [draw(spatial) for _ in range(nsp)]
    if nsp > 2:  # keep rank-5 inputs small
        sizes = [min(s, 4) for s in sizes]
    return (batch, draw(channels), *sizes)


@st.composite
def _graphs(draw: Callable[..., Any], names: tuple[str, ...], min_steps: int, max_steps: int,
            batch: SearchStrategy, channels: SearchStrategy, spatial: SearchStrategy,
            max_inputs: int, max_extra_outputs: int) -> Graph:
    chosen = [BUILDERS[n] for n in names]
    graph = Graph("random")
    kit = GraphKit(graph, draw)
    ranks = _input_ranks(chosen)
    n_batch = draw(batch, label="batch")
    first = _input_shape(draw, draw(st.sampled_from(ranks)), n_batch, channels, spatial)
    x = graph.add_input("x0", TensorType(DType.F32, first))
    kit._offer(x, INPUT_BOUND)
    for k in range(1, draw(st.integers(1, max_inputs), label="inputs")):
        if draw(st.booleans()):
            shape = first
        else:
            rank = draw(st.sampled_from(ranks[1:] + ranks[:1]))
            shape = _input_shape(draw, rank, n_batch, channels, spatial)
        kit._offer(graph.add_input(f"x{k}", TensorType(DType.F32, shape)), INPUT_BOUND)

    last: Value | None = None
    for _ in range(draw(st.integers(min_steps, max_steps), label="steps")):
        candidates = kit.values()
        usable = [b for b in chosen if any(b.applies(kit, v) for v in candidates)]
        if not usable:
            break
        builder = draw(st.sampled_from(usable), label="builder")
        value = draw(st.sampled_from([v for v in candidates if builder.applies(kit, v)]))
        kit.rng = np.random.default_rng(draw(_SEEDS))
        result = builder.build(kit, value)
        if result is not None:
            last = result
            kit._promote(result)
    hypothesis.assume(graph.nodes)

    outputs: list[Value] = []
    for v in ([last] if last is not None and not last.is_graph_input else []) + kit.kept:
        if all(v is not o for o in outputs):
            outputs.append(v)
    extra = [v for v in kit.values() if v.producer is not None
             and all(v is not o for o in outputs)]
    if extra and max_extra_outputs:
        outputs += draw(st.lists(st.sampled_from(extra), max_size=max_extra_outputs,
                                 unique_by=id), label="extra outputs")
    if not outputs:
        outputs = [kit.values(lambda v: v.producer is not None)[0]]
    graph.set_outputs(outputs)
    graph.verify()
    return graph


# ---------------------------------------------------------------------------------------------
# Shape helpers for builders.


def _static_tail(x: Value) -> bool:
    """Every dimension but the batch (first) one is a known int."""
    return all(isinstance(d, int) for d in x.shape[1:])


def _per_sample(x: Value) -> int:
    return math.prod(d for d in x.shape[1:] if isinstance(d, int))


def _channels_ok(x: Value) -> bool:
    return x.type.rank >= 2 and isinstance(x.shape[1], int)


def _spatial_ok(x: Value) -> bool:
    """A conv/pool input: static channels and spatial sizes, small enough to grow."""
    return _static_tail(x) and x.shape[1] <= 4 * MAX_DIM and _per_sample(x) <= MAX_ELEMENTS


def _last_ok(x: Value) -> bool:
    return isinstance(x.shape[-1], int) and x.shape[-1] <= 4 * MAX_DIM


def _channel_shape(x: Value, leading_one: bool) -> tuple[int, ...]:
    """Shape of a per-channel constant broadcasting along axis 1: [C,1,..] or [1,C,1,..]; for
    a rank-2 value (features last) it is [F]."""
    if x.type.rank == 2:
        return (1, x.shape[1]) if leading_one else (x.shape[1],)
    tail = (1,) * (x.type.rank - 2)
    return (1, x.shape[1], *tail) if leading_one else (x.shape[1], *tail)


def _signed(rng: np.random.Generator, shape: Sequence[int], lo: float = 0.5,
            hi: float = 2.0) -> np.ndarray:
    """Values with |v| in [lo, hi] and random signs: safe multipliers and divisors."""
    return rng.uniform(lo, hi, tuple(shape)) * rng.choice([-1.0, 1.0], tuple(shape))


def _attrs_window(kit: GraphKit, attrs: dict[str, Any], kernel: list[int], strides: list[int],
                  dilations: list[int], pads: list[int], auto_pad: str) -> None:
    n = len(kernel)
    if kit.rng.random() < 0.5:
        attrs["kernel_shape"] = tuple(kernel)
    kit.maybe(attrs, "strides", tuple(strides), (1,) * n)
    kit.maybe(attrs, "dilations", tuple(dilations), (1,) * n)
    if auto_pad == "NOTSET":
        kit.maybe(attrs, "pads", tuple(pads), (0,) * (2 * n))
        kit.maybe(attrs, "auto_pad", "NOTSET", "NOTSET")
    else:
        attrs["auto_pad"] = auto_pad


def _conv(kit: GraphKit, x: Value, *, same_shape: bool = False, bias: bool | None = None,
          weight: Callable[[tuple[int, ...], int], Value] | None = None) -> Value:
    """A random Conv on ``x`` (dense, grouped or depthwise; kernel 1-3, stride 1-2, dilation
    1-2, pads or auto_pad). ``same_shape``: stride 1 and "same" padding with as many output as
    input channels, so the output can be added to ``x``. ``weight(shape, fan_in)`` makes the
    weight operand (default: a constant ~ N(0, 1/fan_in))."""
    c, sizes = x.shape[1], list(x.shape[2:])
    n = len(sizes)
    if same_shape:
        group = kit.choice([1, c])
        m = c
        kernel = [kit.choice([3, 1]) for _ in sizes]
        dilations = [kit.choice([1, 2]) for _ in sizes]
        strides = [1] * n
        auto_pad = kit.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER"])
        pads = [d * (k - 1) // 2 for k, d in zip(kernel, dilations)] * 2
    else:
        kind = kit.choice(["dense", "depthwise", "grouped"])
        divisors = [g for g in range(2, c) if c % g == 0]
        if kind == "depthwise":
            group, m = c, c * kit.draw(st.integers(1, 2))
        elif kind == "grouped" and divisors:
            group = kit.choice(divisors)
            m = group * kit.draw(st.integers(1, max(1, 8 // group)))
        else:
            group, m = 1, kit.draw(st.integers(1, 8))
        auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER",
                               "VALID"])
        kernel, strides, dilations, begin, end = [], [], [], [], []
        for size in sizes:
            k, d = kit.draw(st.integers(1, 3)), kit.draw(st.integers(1, 2))
            b, e = 0, 0
            if auto_pad == "NOTSET":
                b, e = kit.draw(st.integers(0, 2)), kit.draw(st.integers(0, 2))
            if not auto_pad.startswith("SAME"):  # the window must fit the padded input
                if (k - 1) * d + 1 > size + b + e:
                    d = 1
                k = min(k, size + b + e)
            kernel.append(k)
            dilations.append(d)
            strides.append(kit.draw(st.integers(1, 2)))
            begin.append(b)
            end.append(e)
        pads = begin + end
    attrs: dict[str, Any] = {}
    _attrs_window(kit, attrs, kernel, strides, dilations, pads, auto_pad)
    kit.maybe(attrs, "group", group, 1)
    shape, fan_in = (m, c // group, *kernel), c // group * math.prod(kernel)
    w = weight(shape, fan_in) if weight else kit.weight(shape, fan_in, "conv.weight")
    operands = [x, w]
    if bias is None:
        bias = kit.coin()
    if bias:
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, m), "conv.bias"))
    return kit.node("Conv", operands, attrs, name="conv")


def _conv_transpose(kit: GraphKit, x: Value) -> Value:
    """A random ConvTranspose: kernel 1-3, stride 1-2 (2 only on small inputs), dilation 1-2,
    output_padding below the stride, pads or auto_pad; dense or depthwise."""
    c, sizes = x.shape[1], list(x.shape[2:])
    group = kit.choice([1, c])
    per_group = kit.draw(st.integers(1, 2 if group > 1 else 8))
    auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    kernel, strides, dilations, begin, end, adjust = [], [], [], [], [], []
    for size in sizes:
        k, d = kit.draw(st.integers(1, 3)), kit.draw(st.integers(1, 2))
        s = kit.draw(st.integers(1, 2)) if size <= 8 else 1
        a = kit.draw(st.integers(0, s - 1))
        full = (size - 1) * s + (k - 1) * d + 1 + a
        b = kit.draw(st.integers(0, min(2, full - 1))) if auto_pad == "NOTSET" else 0
        e = kit.draw(st.integers(0, min(2, full - 1 - b))) if auto_pad == "NOTSET" else 0
        kernel.append(k)
        strides.append(s)
        dilations.append(d)
        begin.append(b)
        end.append(e)
        adjust.append(a)
    attrs: dict[str, Any] = {}
    _attrs_window(kit, attrs, kernel, strides, dilations, begin + end, auto_pad)
    kit.maybe(attrs, "group", group, 1)
    kit.maybe(attrs, "output_padding", tuple(adjust), (0,) * len(sizes))
    fan_in = max(1, c // group * math.prod(kernel) // math.prod(strides))
    w = kit.weight((c, per_group, *kernel), fan_in, "convt.weight")
    operands = [x, w]
    if kit.coin():
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, per_group * group), "convt.bias"))
    return kit.node("ConvTranspose", operands, attrs, name="convt")


def _gemm(kit: GraphKit, x: Value, *, with_c: bool | None = None) -> Value:
    """Gemm on a rank-2 ``x`` [N, K]: random transA (through a Transpose), transB, alpha/beta,
    C absent, [M], [1, M] or a scalar."""
    k = x.shape[1]
    m = kit.draw(st.integers(1, 8))
    a = x
    attrs: dict[str, Any] = {}
    if kit.coin():
        a = kit.node("Transpose", [x], {"perm": (1, 0)}, name="transpose")
        attrs["transA"] = 1
    trans_b = kit.coin()
    kit.maybe(attrs, "transB", int(trans_b), 0)
    w = kit.weight((m, k) if trans_b else (k, m), k, "gemm.weight")
    operands = [a, w]
    if with_c if with_c is not None else kit.coin():
        shape = kit.choice([(m,), (1, m), ()])
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, shape), "gemm.bias"))
        kit.maybe(attrs, "beta", kit.draw(st.sampled_from([1.0, 0.5, 2.0])), 1.0)
    kit.maybe(attrs, "alpha", kit.draw(st.sampled_from([1.0, 0.5, 2.0, 0.75])), 1.0)
    return kit.node("Gemm", operands, attrs, name="gemm")


def _matmul(kit: GraphKit, x: Value) -> Value:
    """MatMul of ``x`` [..., K] by a constant [K, M]."""
    k = x.shape[-1]
    m = kit.draw(st.integers(1, 8))
    return kit.node("MatMul", [x, kit.weight((k, m), k, "matmul.weight")], name="matmul")


def _batch_norm(kit: GraphKit, x: Value) -> Value:
    """Inference BatchNormalization over axis 1 with gamma, var ~ U(0.5, 1.5)."""
    c = x.shape[1]
    rng = kit.rng
    params = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.5, c), rng.normal(0.0, 0.5, c),
              rng.uniform(0.5, 1.5, c)]
    names = ["bn.scale", "bn.bias", "bn.mean", "bn.var"]
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "epsilon", kit.choice([1e-5, 1e-3]), 1e-5)
    return kit.node("BatchNormalization",
                    [x, *(kit.const(p, n) for p, n in zip(params, names))], attrs, name="bn")


def _scalar(kit: GraphKit, value: float, name: str) -> Value:
    """A float32 scalar constant, shaped [] or (as some exporters write it) [1]."""
    return kit.const(np.full(kit.choice([(), (1,)]), value, F32), name)


def _clip(kit: GraphKit, x: Value, lo: float | None, hi: float | None) -> Value:
    operands = [x, None if lo is None else _scalar(kit, lo, "clip.min")]
    if hi is not None:
        operands.append(_scalar(kit, hi, "clip.max"))
    while operands[-1] is None:
        operands.pop()
    return kit.node("Clip", operands, name="clip")


def _binary(kit: GraphKit, op: str, a: Value, b: Value, name: str, swap: bool | None = None
            ) -> Value:
    """``op(a, b)``, or ``op(b, a)`` when ``swap`` (drawn when None; for commutative ops)."""
    if swap if swap is not None else kit.coin():
        a, b = b, a
    return kit.node(op, [a, b], name=name)


def _producer(kit: GraphKit, x: Value) -> tuple[str, Value]:
    """A Conv, Gemm (without C) or MatMul applicable to ``x``; (op, output)."""
    options = []
    if x.type.rank >= 3 and _spatial_ok(x):
        options.append("Conv")
    if x.type.rank == 2 and _last_ok(x):
        options.append("Gemm")
    if x.type.rank in (2, 3) and _last_ok(x):
        options.append("MatMul")
    op = kit.choice(options)
    if op == "Conv":
        return op, _conv(kit, x, bias=False)
    if op == "Gemm":
        return op, _gemm(kit, x, with_c=False)
    return op, _matmul(kit, x)


def _has_producer(kit: GraphKit, x: Value) -> bool:
    return ((x.type.rank >= 3 and _spatial_ok(x))
            or (x.type.rank in (2, 3) and _last_ok(x)))


# ---------------------------------------------------------------------------------------------
# The builders. Each adds valid nodes for the value it gets and returns the value to go on from.

_CONV_RANKS = (3, 4, 5)
_ANY = None


def _conv_accepts(kit: GraphKit, x: Value) -> bool:
    return _spatial_ok(x)


def _convt_accepts(kit: GraphKit, x: Value) -> bool:
    return _spatial_ok(x) and all(s <= MAX_DIM for s in x.shape[2:]) \
        and x.shape[1] <= MAX_DIM


def _linear_accepts(kit: GraphKit, x: Value) -> bool:
    return _last_ok(x)


def _bn_accepts(kit: GraphKit, x: Value) -> bool:
    return _channels_ok(x) and x.shape[1] <= 4 * MAX_DIM


@register_builder("conv", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv(kit: GraphKit, x: Value) -> Value:
    """Conv: kernel 1-3, stride 1-2, pads, dilation 1-2, groups incl. depthwise, +-bias."""
    return _conv(kit, x)


@register_builder("conv_transpose", ranks=_CONV_RANKS, accepts=_convt_accepts)
def _b_conv_transpose(kit: GraphKit, x: Value) -> Value:
    """ConvTranspose with random geometry."""
    return _conv_transpose(kit, x)


@register_builder("gemm", ranks=(2,), accepts=_linear_accepts)
def _b_gemm(kit: GraphKit, x: Value) -> Value:
    """Gemm with random transA/transB, +-C, alpha/beta."""
    return _gemm(kit, x)


@register_builder("matmul", ranks=(2, 3), accepts=_linear_accepts)
def _b_matmul(kit: GraphKit, x: Value) -> Value:
    """MatMul of a rank-2 or rank-3 value by a constant matrix."""
    return _matmul(kit, x)


@register_builder("flatten", ranks=(2, 3, 4, 5))
def _b_flatten(kit: GraphKit, x: Value) -> Value:
    """Flatten to rank 2 at an axis >= 1 (sometimes written negative)."""
    rank = x.type.rank
    axis = kit.draw(st.integers(1, rank - 1))
    if kit.coin():
        axis -= rank
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "axis", axis, 1)
    return kit.node("Flatten", [x], attrs, name="flatten")


@register_builder("global_average_pool", ranks=_CONV_RANKS)
def _b_global_average_pool(kit: GraphKit, x: Value) -> Value:
    """GlobalAveragePool, then (usually) Flatten or Squeeze down to rank 2."""
    y = kit.node("GlobalAveragePool", [x], name="gap")
    how = kit.choice(["flatten", "squeeze", "keep"])
    if how == "flatten":
        return kit.node("Flatten", [y], name="flatten")
    if how == "squeeze":
        axes = kit.ints(list(range(2, x.type.rank)), "squeeze.axes")
        return kit.node("Squeeze", [y, axes], name="squeeze")
    return y


def _pool(kit: GraphKit, x: Value, op: str) -> Value:
    attrs: dict[str, Any] = {}
    kernel, strides, dilations, begin, end = [], [], [], [], []
    for size in x.shape[2:]:
        k = kit.draw(st.integers(1, 3))
        d = kit.draw(st.integers(1, 2)) if op == "MaxPool" else 1
        if (k - 1) * d + 1 > size:
            d = 1
        k = min(k, size)
        kernel.append(k)
        dilations.append(d)
        strides.append(kit.draw(st.integers(1, 2)))
        begin.append(kit.draw(st.integers(0, k - 1)))
        end.append(kit.draw(st.integers(0, k - 1)))
    auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "VALID"])
    _attrs_window(kit, attrs, kernel, strides, dilations, begin + end, auto_pad)
    attrs["kernel_shape"] = tuple(kernel)
    kit.maybe(attrs, "ceil_mode", int(kit.coin()), 0)
    if op == "AveragePool":
        kit.maybe(attrs, "count_include_pad", int(kit.coin()), 0)
    return kit.node(op, [x], attrs, name=op.lower())


@register_builder("max_pool", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_max_pool(kit: GraphKit, x: Value) -> Value:
    """MaxPool: kernel 1-3, stride 1-2, dilation 1-2, pads below the kernel, ceil_mode."""
    return _pool(kit, x, "MaxPool")


@register_builder("average_pool", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_average_pool(kit: GraphKit, x: Value) -> Value:
    """AveragePool: kernel 1-3, stride 1-2, pads, ceil_mode, count_include_pad."""
    return _pool(kit, x, "AveragePool")


@register_builder("bn", ranks=(2, 3, 4, 5), accepts=_bn_accepts)
def _b_bn(kit: GraphKit, x: Value) -> Value:
    """BatchNormalization with constant parameters."""
    return _batch_norm(kit, x)


@register_builder("conv_bn", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv_bn(kit: GraphKit, x: Value) -> Value:
    """Conv immediately followed by BatchNormalization."""
    return _batch_norm(kit, _conv(kit, x))


@register_builder("conv_transpose_bn", ranks=_CONV_RANKS, accepts=_convt_accepts)
def _b_conv_transpose_bn(kit: GraphKit, x: Value) -> Value:
    """ConvTranspose immediately followed by BatchNormalization."""
    return _batch_norm(kit, _conv_transpose(kit, x))


@register_builder("gemm_bn", ranks=(2,), accepts=_linear_accepts)
def _b_gemm_bn(kit: GraphKit, x: Value) -> Value:
    """Gemm immediately followed by BatchNormalization (over its output features)."""
    return _batch_norm(kit, _gemm(kit, x))


@register_builder("matmul_bn", ranks=(2, 3), accepts=_linear_accepts)
def _b_matmul_bn(kit: GraphKit, x: Value) -> Value:
    """MatMul immediately followed by BatchNormalization. On a rank-3 value BN normalizes axis
    1 (rows), which a fold must refuse: it is not the MatMul's output-feature axis."""
    return _batch_norm(kit, _matmul(kit, x))


# -- activations -------------------------------------------------------------------------------


@register_builder("relu")
def _b_relu(kit: GraphKit, x: Value) -> Value:
    """Relu."""
    return kit.node("Relu", [x], name="relu")


@register_builder("clip")
def _b_clip(kit: GraphKit, x: Value) -> Value:
    """Clip with constant bounds: ReLU6 (0, 6), random (lo < hi), min only, or max only."""
    kind = kit.choice(["relu6", "random", "min", "max"])
    if kind == "relu6":
        return _clip(kit, x, 0.0, 6.0)
    lo = float(F32(kit.draw(st.floats(-3.0, 1.0))))
    if kind == "min":
        return _clip(kit, x, lo, None)
    hi = float(F32(lo + kit.draw(st.floats(0.0, 4.0))))
    return _clip(kit, x, None, hi) if kind == "max" else _clip(kit, x, lo, hi)


@register_builder("leaky_relu")
def _b_leaky_relu(kit: GraphKit, x: Value) -> Value:
    """LeakyRelu with the default or a drawn slope."""
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "alpha", kit.choice([0.01, 0.1, 0.2, 0.3]), 0.01)
    return kit.node("LeakyRelu", [x], attrs, name="leaky_relu")


@register_builder("hard_sigmoid")
def _b_hard_sigmoid(kit: GraphKit, x: Value) -> Value:
    """HardSigmoid with the ONNX defaults, PyTorch's (1/6, 0.5) or drawn alpha/beta."""
    alpha, beta = kit.choice([(0.2, 0.5), (1 / 6, 0.5),
                              (kit.draw(st.floats(0.1, 0.5)), kit.draw(st.floats(0.3, 0.7)))])
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "alpha", float(F32(alpha)), 0.2)
    kit.maybe(attrs, "beta", float(F32(beta)), 0.5)
    return kit.node("HardSigmoid", [x], attrs, name="hard_sigmoid")


@register_builder("hard_swish")
def _b_hard_swish(kit: GraphKit, x: Value) -> Value:
    """HardSwish."""
    return kit.node("HardSwish", [x], name="hard_swish")


@register_builder("sigmoid")
def _b_sigmoid(kit: GraphKit, x: Value) -> Value:
    """Sigmoid."""
    return kit.node("Sigmoid", [x], name="sigmoid")


@register_builder("tanh")
def _b_tanh(kit: GraphKit, x: Value) -> Value:
    """Tanh."""
    return kit.node("Tanh", [x], name="tanh")


SIXTH = 0.16666667  # 1/6 as exporters print it (the same float32 as 1/6)
PADDLE_SIXTH = 0.1666666716337204  # paddle's hardsigmoid slope (float32(1/6) as a double)


def _divide_by_six(kit: GraphKit, x: Value, name: str) -> Value:
    """x / 6 as Div by 6 or as Mul by 0.16666667 (either operand order)."""
    if kit.coin():
        return kit.node("Div", [x, _scalar(kit, 6.0, f"{name}.six")], name=f"{name}.div")
    return _binary(kit, "Mul", x, _scalar(kit, SIXTH, f"{name}.sixth"), f"{name}.mul")


@register_builder("hard_swish_decomposed")
def _b_hard_swish_decomposed(kit: GraphKit, x: Value) -> Value:
    """x * Clip(x + 3, 0, 6) / 6 as exporters write it: Add and Mul operands in either order,
    Div by 6 or Mul by 1/6, the division after the product or applied to x or to the Clip
    before it."""
    shifted = _binary(kit, "Add", x, _scalar(kit, 3.0, "hswish.three"), "hswish.add")
    clipped = _clip(kit, shifted, 0.0, 6.0)
    where = kit.choice(["after", "clip", "x"])
    if where == "after":
        return _divide_by_six(kit, _binary(kit, "Mul", x, clipped, "hswish.mul"), "hswish")
    if where == "clip":
        return _binary(kit, "Mul", x, _divide_by_six(kit, clipped, "hswish"), "hswish.mul")
    return _binary(kit, "Mul", _divide_by_six(kit, x, "hswish"), clipped, "hswish.mul")


@register_builder("hard_sigmoid_decomposed")
def _b_hard_sigmoid_decomposed(kit: GraphKit, x: Value) -> Value:
    """Clip(x / 6 + 0.5, 0, 1), Clip(x * 0.16666667 + 0.5, 0, 1) or Clip(x * alpha + beta, 0,
    1) with paddle's alpha 0.1666666716337204, torch's 1/6 or ONNX's 0.2; Add operands in
    either order."""
    form = kit.choice(["div", "mul", "alpha"])
    if form == "div":
        scaled = kit.node("Div", [x, _scalar(kit, 6.0, "hsig.six")], name="hsig.div")
    else:
        alpha = SIXTH if form == "mul" else kit.choice([PADDLE_SIXTH, 1 / 6, 0.2])
        scaled = _binary(kit, "Mul", x, _scalar(kit, alpha, "hsig.alpha"), "hsig.mul")
    shifted = _binary(kit, "Add", scaled, _scalar(kit, 0.5, "hsig.beta"), "hsig.add")
    return _clip(kit, shifted, 0.0, 1.0)


# -- constant arithmetic -------------------------------------------------------------------------


def _operand_shape(kit: GraphKit, x: Value) -> tuple[int, ...]:
    """Shape of a constant operand for ``x``: scalar, per channel or full shape."""
    kinds = ["scalar"]
    if _channels_ok(x):
        kinds.append("channel")
    if x.type.rank == 3 and isinstance(x.shape[-1], int):
        kinds.append("last")
    kinds.append("full")
    kind = kit.choice(kinds)
    if kind == "scalar":
        return kit.choice([(), (1,)])
    if kind == "channel":
        return _channel_shape(x, kit.coin())
    if kind == "last":
        return (x.shape[-1],)
    return tuple(d if isinstance(d, int) else 1 for d in x.shape)


def _const_arith(kit: GraphKit, x: Value, op: str) -> Value:
    shape = _operand_shape(kit, x)
    if op in ("Add", "Sub"):
        data = kit.rng.normal(0.0, 1.0, shape)
    else:
        data = _signed(kit.rng, shape)
    c = kit.const(data, f"{op.lower()}.const")
    if op == "Div":
        return kit.node("Div", [x, c], name="div")
    return _binary(kit, op, x, c, op.lower())


def _const_arith_builder(op: str, doc: str) -> Callable[[GraphKit, Value], Value]:
    def build(kit: GraphKit, x: Value) -> Value:
        return _const_arith(kit, x, op)

    build.__doc__ = doc
    return build


for _op, _doc in (
    ("Add", "Add of a scalar, per-channel or full-shape constant (either operand order)."),
    ("Mul", "Mul by a scalar, per-channel or full-shape constant with |c| in [0.5, 2]."),
    ("Sub", "x - c or c - x with a scalar, per-channel or full-shape constant."),
    ("Div", "x / c with |c| in [0.5, 2], scalar, per channel or full shape."),
):
    register_builder(f"{_op.lower()}_const")(_const_arith_builder(_op, _doc))


@register_builder("bias_add", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _has_producer(kit, x))
def _b_bias_add(kit: GraphKit, x: Value) -> Value:
    """Conv/Gemm/MatMul immediately followed by Add of a per-channel (Conv: [M,1,1] or
    [1,M,1,1]) or last-dim ([M] or [1, M]) constant, operands in either order."""
    op, y = _producer(kit, x)
    m = y.shape[1] if op == "Conv" else y.shape[-1]
    if op == "Conv":
        shape = _channel_shape(y, kit.coin())
    else:
        shape = kit.choice([(m,), (1, m)])
    bias = kit.const(kit.rng.normal(0.0, 0.5, shape), "bias")
    return _binary(kit, "Add", y, bias, "bias_add")


@register_builder("conv_mul_const", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv_mul_const(kit: GraphKit, x: Value) -> Value:
    """Conv followed by a per-channel Mul (either operand order)."""
    y = _conv(kit, x)
    c = kit.const(_signed(kit.rng, _channel_shape(y, kit.coin())), "mul.const")
    return _binary(kit, "Mul", y, c, "mul")


# -- two-value ops -------------------------------------------------------------------------------


def _same_shape_values(kit: GraphKit, x: Value) -> list[Value]:
    return [v for v in kit.values() if v.shape == x.shape]


@register_builder("residual_add", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_residual_add(kit: GraphKit, x: Value) -> Value:
    """Conv (same shape out) then Add with an existing value of that shape (often ``x``),
    operands in either order, sometimes followed by Relu."""
    y = _conv(kit, x, same_shape=True)
    others = [v for v in _same_shape_values(kit, x) if v is not y]
    partner = kit.choice(others)
    out = _binary(kit, "Add", y, partner, "residual")
    return kit.node("Relu", [out], name="relu") if kit.coin() else out


def _broadcastable(a: tuple, b: tuple) -> bool:
    for da, db in zip(reversed(a), reversed(b)):
        if da != db and da != 1 and db != 1:
            return False
        if da != db and (not isinstance(da, int) or not isinstance(db, int)):
            return False
    return True


def _partners(kit: GraphKit, x: Value, limit: float | None) -> list[Value]:
    """Values broadcasting with ``x`` (others first, ``x`` itself last), small enough and, with
    ``limit``, with ``bound(x) * bound(v) <= limit``."""
    out = []
    for v in kit.values():
        if not _broadcastable(x.shape, v.shape):
            continue
        if limit is not None and kit.bound(x) * kit.bound(v) > limit:
            continue
        size = max(_per_sample(x), _per_sample(v))
        if size <= MAX_ELEMENTS:
            out.append(v)
    return sorted(out, key=lambda v: v is x)


@register_builder("add", accepts=lambda kit, x: bool(_partners(kit, x, None)))
def _b_add(kit: GraphKit, x: Value) -> Value:
    """Add of two existing values of broadcast-compatible shapes."""
    return _binary(kit, "Add", x, kit.choice(_partners(kit, x, None)), "add")


@register_builder("mul", accepts=lambda kit, x: bool(_partners(kit, x, MUL_LIMIT)))
def _b_mul(kit: GraphKit, x: Value) -> Value:
    """Mul of two existing values of broadcast-compatible shapes (magnitudes kept bounded)."""
    return _binary(kit, "Mul", x, kit.choice(_partners(kit, x, MUL_LIMIT)), "mul")


def _concat_partners(kit: GraphKit, x: Value) -> list[tuple[Value, int]]:
    out = []
    for v in kit.values():
        if v.type.rank != x.type.rank:
            continue
        for axis in range(1, x.type.rank):
            a, b = x.shape[axis], v.shape[axis]
            rest_equal = all(p == q for k, (p, q) in enumerate(zip(x.shape, v.shape))
                             if k != axis)
            if (rest_equal and isinstance(a, int) and isinstance(b, int) and a + b <= 4 * MAX_DIM
                    and _per_sample(x) + _per_sample(v) <= MAX_ELEMENTS):
                out.append((v, axis))
    return sorted(out, key=lambda pair: pair[0] is x)


@register_builder("concat", ranks=(2, 3, 4, 5),
                  accepts=lambda kit, x: bool(_concat_partners(kit, x)))
def _b_concat(kit: GraphKit, x: Value) -> Value:
    """Concat of ``x`` and a value matching it on every axis but the concat axis (>= 1)."""
    partner, axis = kit.choice(_concat_partners(kit, x))
    operands = [x, partner] if kit.coin() else [partner, x]
    if kit.coin():
        axis -= x.type.rank
    return kit.node("Concat", operands, {"axis": axis}, name="concat")


# -- cleanup fodder ------------------------------------------------------------------------------


@register_builder("identity")
def _b_identity(kit: GraphKit, x: Value) -> Value:
    """Identity."""
    return kit.node("Identity", [x], name="identity")


@register_builder("dropout")
def _b_dropout(kit: GraphKit, x: Value) -> Value:
    """Inference-mode Dropout: bare, with a ratio, with training_mode = false; sometimes with
    its (unused) mask output."""
    operands: list[Value | None] = [x]
    form = kit.choice(["bare", "ratio", "training_mode"])
    if form != "bare":
        operands.append(kit.const(np.array(kit.choice([0.5, 0.1, 0.0]), F32), "dropout.ratio"))
    if form == "training_mode":
        operands.append(kit.const(np.array(False), "dropout.training_mode"))
    return kit.node("Dropout", operands, name="dropout", outputs=kit.choice([1, 2]))


def _unary_node(kit: GraphKit, x: Value) -> Value:
    """A random op reading ``x`` (Relu, Sigmoid, LeakyRelu, Mul or Add of a constant,
    Transpose, Conv), for builders that repeat it."""
    choices = ["Relu", "Sigmoid", "LeakyRelu", "Mul", "Add", "Transpose"]
    if x.type.rank >= 3 and _spatial_ok(x):
        choices.append("Conv")
    op = kit.choice(choices)
    if op == "Conv":
        return _conv(kit, x)
    operands: list[Value | None] = [x]
    attrs: dict[str, Any] = {}
    if op == "LeakyRelu":
        attrs["alpha"] = kit.choice([0.1, 0.2])
    elif op in ("Mul", "Add"):
        data = _signed(kit.rng, _operand_shape(kit, x))
        operands.append(kit.const(data, f"{op.lower()}.const"))
    elif op == "Transpose":
        attrs["perm"] = tuple(kit.draw(st.permutations(range(x.type.rank))))
    return kit.node(op, operands, attrs, name=op.lower())


@register_builder("duplicate")
def _b_duplicate(kit: GraphKit, x: Value) -> Value:
    """The same op with the same operands and attributes applied twice to ``x`` (for CSE); the
    two results are added, concatenated, or one of them is kept as a graph output."""
    first = _unary_node(kit, x)
    node = first.producer
    second = kit.node(node.op, node.inputs, dict(node.attrs), name=node.op.lower())
    how = kit.choice(["add", "keep", "concat"])
    if how == "add":
        return kit.node("Add", [first, second], name="add")
    if how == "concat" and first.type.rank >= 2 and _static_tail(first) \
            and first.shape[1] <= MAX_DIM:
        return kit.node("Concat", [first, second], {"axis": 1}, name="concat")
    kit.keep(second)
    return first


def _constant_operand(kit: GraphKit, shape: tuple[int, ...]) -> Value:
    """A value computed from constants only: arithmetic on two constants, a Reshape or a
    Transpose of one."""
    rng = kit.rng
    form = kit.choice(["Mul", "Add", "Sub", "Div", "Reshape", "Transpose"])
    if form in ("Mul", "Add", "Sub", "Div"):
        a = kit.const(_signed(rng, shape), "cse.a")
        b = kit.const(_signed(rng, kit.choice([shape, ()])), "cse.b")
        return kit.node(form, [a, b], name=f"const_{form.lower()}")
    size = math.prod(shape)
    if form == "Reshape" or len(shape) < 2:
        flat = kit.const(_signed(rng, (size,)), "cse.flat")
        return kit.node("Reshape", [flat, kit.ints(shape, "cse.shape")], name="const_reshape")
    perm = tuple(reversed(range(len(shape))))
    src = kit.const(_signed(rng, tuple(shape[p] for p in perm)), "cse.t")
    return kit.node("Transpose", [src], {"perm": perm}, name="const_transpose")


@register_builder("constant_subexpression")
def _b_constant_subexpression(kit: GraphKit, x: Value) -> Value:
    """An op whose inputs are all constants feeding an op on ``x``: Add/Mul of ``x`` and a
    computed constant, or a Conv whose weight is Mul(W, per-channel scale)."""
    if x.type.rank >= 3 and _spatial_ok(x) and kit.coin():

        def scaled_weight(shape: tuple[int, ...], fan_in: int) -> Value:
            scale = _signed(kit.rng, (shape[0],) + (1,) * (len(shape) - 1))
            w = kit.weight(shape, fan_in, "conv.weight")
            return kit.node("Mul", [w, kit.const(scale, "cse.scale")], name="const_mul")

        return _conv(kit, x, weight=scaled_weight)
    c = _constant_operand(kit, _operand_shape(kit, x))
    return _binary(kit, kit.choice(["Add", "Mul"]), x, c, "use_const")


@register_builder("shape_subgraph", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _static_tail(x))
def _b_shape_subgraph(kit: GraphKit, x: Value) -> Value:
    """``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the result
    then reshaped back (by Shape(x) or a second Concat) or flattened, or left at rank 2."""
    shape = kit.node("Shape", [x], name="shape")
    n = kit.node("Gather", [shape, kit.ints(0, "gather.index")], {"axis": 0}, name="gather")
    n1 = kit.node("Unsqueeze", [n, kit.ints([0], "unsqueeze.axes")], name="unsqueeze")
    target = kit.node("Concat", [n1, kit.ints([-1], "concat.rest")], {"axis": 0},
                      name="concat")
    flat = kit.node("Reshape", [x, target], name="reshape")
    after = kit.choice(["shape", "concat", "flatten", "none"])
    if after == "shape":
        return kit.node("Reshape", [flat, shape], name="reshape")
    if after == "concat":
        back = kit.node("Concat", [n1, kit.ints(x.shape[1:], "concat.dims")], {"axis": 0},
                        name="concat")
        return kit.node("Reshape", [flat, back], name="reshape")
    if after == "flatten":
        return kit.node("Flatten", [flat], name="flatten")
    return flat


@register_builder("multi_use")
def _b_multi_use(kit: GraphKit, x: Value) -> Value:
    """Give ``x`` a second reader (Relu, Sigmoid or Abs of it) that is also a graph output; the
    graph goes on from ``x``, so ``x`` ends up with two users."""
    op = kit.choice(["Relu", "Sigmoid", "Abs"])
    kit.keep(kit.node(op, [x], name=op.lower()))
    return x


# -- tensor ops ----------------------------------------------------------------------------------


@register_builder("transpose")
def _b_transpose(kit: GraphKit, x: Value) -> Value:
    """Transpose by a drawn permutation (sometimes ``perm`` omitted: reversed axes)."""
    if x.type.rank >= 2 and kit.draw(st.integers(0, 4)) == 0:
        return kit.node("Transpose", [x], name="transpose")
    perm = tuple(kit.draw(st.permutations(range(x.type.rank))))
    return kit.node("Transpose", [x], {"perm": perm}, name="transpose")


@register_builder("reshape", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _static_tail(x))
def _b_reshape(kit: GraphKit, x: Value) -> Value:
    """Reshape keeping the batch dimension (0, -1 or its size) and refactoring the rest into
    1-3 dims (one sometimes written -1)."""
    rest = _per_sample(x)
    dims: list[int] = []
    remaining = rest
    for _ in range(kit.draw(st.integers(1, 3)) - 1):
        f = kit.choice([d for d in range(1, remaining + 1) if remaining % d == 0])
        dims.append(f)
        remaining //= f
    dims.append(remaining)
    first = [0, -1] + ([x.shape[0]] if isinstance(x.shape[0], int) else [])
    lead = kit.choice(first)
    if lead != -1 and kit.coin():
        dims[kit.draw(st.integers(0, len(dims) - 1))] = -1
    return kit.node("Reshape", [x, kit.ints([lead, *dims], "reshape.shape")], name="reshape")


@register_builder("softmax")
def _b_softmax(kit: GraphKit, x: Value) -> Value:
    """Softmax over a drawn axis (-1 most often)."""
    rank = x.type.rank
    axis = kit.choice([-1, *range(rank), *range(-rank, -1)])
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "axis", axis, -1)
    return kit.node("Softmax", [x], attrs, name="softmax")


# ---------------------------------------------------------------------------------------------
# inputs() and quant_params()

DISTRIBUTIONS = ("normal", "uniform", "grid", "zeros")


def inputs(graph: Graph, *, low: float = -4.0,
           high: float = 4.0) -> SearchStrategy[dict[str, np.ndarray]]:
    """Feeds for every input of ``graph``, with its shape and dtype, values in [low, high].

    Each input draws a distribution (normal, uniform, a 0.5 grid so that ties and exact zeros
    occur, or all zeros) and a seed; symbolic dimensions are bound to sizes 1-3, the same size
    for the same symbol across inputs.
    """
    if not low <= high:
        raise ValueError(f"need low <= high, got {low}, {high}")
    specs = [(v.name, v.dtype, v.shape) for v in graph.inputs]
    symbols = sorted({d for _, _, shape in specs for d in shape if not isinstance(d, int)})
    return _inputs(tuple(specs), tuple(symbols), float(low), float(high))


@st.composite
def _inputs(draw: Callable[..., Any], specs: tuple, symbols: tuple, low: float,
            high: float) -> dict[str, np.ndarray]:
    sizes = {s: draw(st.integers(1, 3), label=f"size of {s}") for s in symbols}
    feeds = {}
    for name, dtype, shape in specs:
        dims = tuple(d if isinstance(d, int) else sizes[d] for d in shape)
        kind = draw(st.sampled_from(DISTRIBUTIONS), label=f"{name} distribution")
        rng = np.random.default_rng(draw(_SEEDS))
        feeds[name] = _fill(rng, kind, dims, DType(dtype), low, high)
    return feeds


def _fill(rng: np.random.Generator, kind: str, dims: tuple, dtype: DType, low: float,
          high: float) -> np.ndarray:
    if dtype == DType.BOOL:
        return rng.random(dims) < 0.5 if kind != "zeros" else np.zeros(dims, bool)
    if dtype.is_integer:
        info = np.iinfo(dtype.np)
        lo, hi = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
        if kind == "zeros" or lo > hi:
            return np.clip(np.zeros(dims, np.int64), lo, max(lo, hi)).astype(dtype.np)
        return rng.integers(lo, hi, dims, endpoint=True).astype(dtype.np)
    if kind == "zeros":
        data = np.clip(np.zeros(dims), low, high)
    elif kind == "uniform":
        data = rng.uniform(low, high, dims)
    elif kind == "normal":
        mid, spread = (low + high) / 2, (high - low) / 6
        data = np.clip(rng.normal(mid, spread, dims), low, high)
    else:
        steps = rng.integers(math.ceil(2 * low), math.floor(2 * high), dims, endpoint=True) \
            if math.ceil(2 * low) <= math.floor(2 * high) else np.full(dims, 2 * low)
        data = steps / 2
    return np.asarray(data, dtype=dtype.np)


def quant_params(
    *,
    dtype: DType | str | None = None,
    per_channel: bool | None = None,
    channels: int | SearchStrategy[int] | None = None,
    symmetric: bool | None = None,
    axis: int | None = None,
) -> SearchStrategy[QuantParams]:
    """Valid ``QuantParams`` (``problems()`` is empty): int8 or uint8, per tensor or per
    channel (``axis``, drawn 0 or 1 when None, and ``channels`` scales, 1-8 when None),
    symmetric (zero point 0 and range [-127, 127] for int8; zero point 128 for uint8) or
    asymmetric (any zero point in range, sometimes a reduced 7-bit range); scales log-uniform in
    [1e-4, 1e2]. Each argument left None is drawn.
    """
    return _quant_params(None if dtype is None else DType(dtype), per_channel, channels,
                         symmetric, axis)


@st.composite
def _quant_params(draw: Callable[..., Any], dtype: DType | None, per_channel: bool | None,
                  channels: int | SearchStrategy[int] | None, symmetric: bool | None,
                  axis: int | None) -> QuantParams:
    qtype = dtype or draw(st.sampled_from([DType.I8, DType.U8]))
    if not qtype.is_integer or qtype.np.itemsize != 1:
        raise ValueError(f"quant_params: dtype must be i8 or u8, got {qtype}")
    channel = per_channel if per_channel is not None else draw(st.booleans())
    sym = symmetric if symmetric is not None else draw(st.booleans())
    if not channel:
        n = 1
    elif isinstance(channels, int):
        n = channels
    else:
        n = draw(channels if channels is not None else st.integers(1, 8))
    exp_lo = draw(st.floats(-4.0, 2.0))
    exp_hi = draw(st.floats(exp_lo, 2.0)) if n > 1 else exp_lo
    rng = np.random.default_rng(draw(_SEEDS))
    exps = rng.uniform(exp_lo, exp_hi, n)
    exps[0] = exp_lo
    scales = np.clip(10.0 ** exps, 1e-4, 1e2)
    info = np.iinfo(qtype.np)
    if sym:
        qmin, qmax = (-127, 127) if qtype == DType.I8 else (0, 255)
        zeros = np.full(n, 0 if qtype == DType.I8 else 128)
    else:
        reduced = draw(st.integers(0, 3)) == 0
        qmin, qmax = (int(info.min), int(info.max))
        if reduced:
            qmin, qmax = (-64, 63) if qtype == DType.I8 else (0, 127)
        z0 = draw(st.integers(qmin, qmax))
        zeros = rng.integers(qmin, qmax, n, endpoint=True)
        zeros[0] = z0
    ax = None if not channel else (axis if axis is not None else draw(st.sampled_from([1, 0])))
    return QuantParams(tuple(float(s) for s in scales), tuple(int(z) for z in zeros), qtype, ax,
                       qmin, qmax)


# ---------------------------------------------------------------------------------------------
# Running and comparing graphs.


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``inputs`` with the numpy backend (the reference); {output: array}."""
    from .api import compile

    return compile(graph, backend="numpy").run(dict(inputs))


def _scale_array(params: QuantParams, shape: tuple[int, ...]) -> np.ndarray:
    """The QuantParams scale broadcast to an output of ``shape`` (per channel along axis)."""
    scale = np.asarray(params.scale, dtype=np.float64)
    if params.axis is None:
        return scale.reshape(())
    axis = params.axis % len(shape)
    view = [1] * len(shape)
    view[axis] = scale.size
    return scale.reshape(view)


def _compare(name: str, a: np.ndarray, b: np.ndarray, tol: np.ndarray | float, how: str
             ) -> str | None:
    """None when every |a - b| <= tol (equal NaN positions and equal infinities are fine),
    else a message naming the worst element."""
    if a.dtype.kind in "iub":
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
    else:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    tol_full = np.broadcast_to(np.asarray(tol, dtype=np.float64), diff.shape)
    bad = diff > tol_full
    if not bad.any():
        return None
    excess = np.where(bad, diff - tol_full, -np.inf)
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape) if diff.ndim else ()
    index = tuple(int(i) for i in worst)
    count, total = int(bad.sum()), diff.size
    return (f"output {name!r}: max |g1 - g2| = {float(diff[index]):.6g} > tolerance "
            f"{float(tol_full[index]):.6g} ({how}); worst at index {index}: "
            f"g1 = {a[index].item()!r}, g2 = {b[index].item()!r}; {count}/{total} elements "
            f"({100.0 * count / total:.3g}%) out of tolerance")


def assert_equivalent(
    g1: Graph,
    g2: Graph,
    inputs: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    steps: float | None = None,
    scale: float | np.ndarray | None = None,
) -> None:
    """Run both graphs on ``inputs`` and check that they give the same outputs, by name.

    Both must have the same output names, and each output the same shape and dtype. Float
    outputs must satisfy ``max|a - b| <= max(atol, rtol * max|reference|)`` where the
    reference is g1's output: the tolerance is relative to the tensor's largest magnitude, not
    to each element, so a correct rewrite whose rounding shows up as cancellation near zero does
    not fail, and ``atol`` is its floor for outputs near zero everywhere. Integer and bool
    outputs must be equal (unless ``steps``). Equal NaN positions are fine; a NaN on one side
    only fails.

    ``steps=k`` gives the tolerance in quantization steps instead: integer (quantized) outputs
    may differ by k, float outputs by ``k * scale``, with ``scale`` given or else taken from the
    QuantParams of the output's type in g2 (per-channel scales broadcast along their axis).

    Raises AssertionError naming the output, the max difference, the tolerance, the worst
    element (index and both values) and the fraction of elements out of tolerance.
    """
    names1 = [v.name for v in g1.outputs]
    names2 = [v.name for v in g2.outputs]
    if sorted(names1) != sorted(names2):
        missing = [n for n in names1 if n not in names2]
        extra = [n for n in names2 if n not in names1]
        raise AssertionError(
            f"the graphs have different outputs: g1 has {names1}, g2 has {names2}"
            + (f"; missing from g2: {missing}" if missing else "")
            + (f"; only in g2: {extra}" if extra else ""))
    out1, out2 = run_graph(g1, inputs), run_graph(g2, inputs)
    types2 = {v.name: v.type for v in g2.outputs}
    failures = []
    for name in names1:
        a, b = np.asarray(out1[name]), np.asarray(out2[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            failures.append(f"output {name!r}: g1 gives {a.dtype}{list(a.shape)} but g2 gives "
                            f"{b.dtype}{list(b.shape)}")
            continue
        if steps is not None and a.dtype.kind in "iu":
            tol: np.ndarray | float = float(steps)
            how = f"{steps} quantization step(s)"
        elif steps is not None and a.dtype.kind == "f":
            step = _step_scale(name, scale, types2[name], a.shape)
            tol = steps * step
            how = f"{steps} step(s) x scale"
        elif a.dtype.kind == "f":
            finite = np.abs(a[np.isfinite(a)].astype(np.float64))
            peak = float(finite.max()) if finite.size else 0.0
            tol = max(atol, rtol * peak)
            how = f"max(atol {atol:g}, rtol {rtol:g} * max|g1| {peak:.6g})"
        else:
            tol, how = 0.0, "exact"
        message = _compare(name, a, b, tol, how)
        if message:
            failures.append(message)
    if failures:
        raise AssertionError("\n".join(failures))


def _step_scale(name: str, scale: float | np.ndarray | None, type2: TensorType,
                shape: tuple[int, ...]) -> np.ndarray:
    if scale is not None:
        return np.asarray(scale, dtype=np.float64)
    if type2.quant is None:
        raise ValueError(
            f"assert_equivalent(steps=...): output {name!r} is float and its type in g2 ({type2}) "
            f"has no QuantParams to take the step size from; pass scale=")
    return _scale_array(type2.quant, shape)


# ---------------------------------------------------------------------------------------------
# pass_property()


def pass_property(
    pipeline: Any,
    graphs: SearchStrategy[Graph] | None = None,
    *,
    inputs: Callable[[Graph], SearchStrategy[Mapping[str, np.ndarray]]] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    steps: float | None = None,
    settings: hypothesis.settings | None = None,
) -> Callable[[], None]:
    """A hypothesis test that a pipeline keeps the numbers: assign it to a ``test_*`` name.

        test_fold_bn = pass_property("fold-bn", graphs(builders=["conv", "conv_bn", "bn"]))

    Each example draws a graph (from ``graphs``, default ``graphs()``) and feeds for it (from
    ``inputs(graph)``, default ``qcompiler.testing.inputs``), runs
    ``PassManager(pipeline).run(graph)``, checks the result verifies and that the pass left its
    input graph unchanged, and calls ``assert_equivalent(before, after, feeds, rtol=, atol=,
    steps=)`` where ``before`` is a copy taken before the pass. ``pipeline`` is anything
    ``PassManager`` takes (a pipeline string, or a list of names / Pass objects) or one Pass.
    The active hypothesis profile applies unless ``settings`` is given. Every example records
    whether the pass changed the graph (``hypothesis.event``), so
    ``pytest --hypothesis-show-statistics`` tells how often it fired.
    """
    graph_strategy = graphs if graphs is not None else _default_graphs()
    make_inputs = inputs if inputs is not None else _default_inputs
    label = _pipeline_label(pipeline)
    caller = sys._getframe(1)

    @hypothesis.given(st.data())
    def run(data: st.DataObject) -> None:
        from .pass_manager import PassManager

        graph = data.draw(graph_strategy, label="graph")
        before = graph.copy()
        feeds = data.draw(make_inputs(before), label="inputs")
        result = PassManager(pipeline).run(graph)
        hypothesis.event(f"{label}: " + ("changed the graph" if result.changed
                                         else "left the graph unchanged"))
        assert graph == before, (
            f"{label} mutated the graph it was given (PassManager must work on a copy)")
        result.graph.verify()
        assert_equivalent(before, result.graph, feeds, rtol=rtol, atol=atol, steps=steps)

    run.__name__ = run.__qualname__ = f"pass_property[{label}]"
    run.__module__ = caller.f_globals.get("__name__", __name__)
    # Distinguish the example-database entries of tests made by this one function.
    run.hypothesis.inner_test._hypothesis_internal_add_digest = (
        f"{label}@{caller.f_code.co_filename}:{caller.f_lineno}".encode())
    return settings(run) if settings is not None else run


def _pipeline_label(pipeline: Any) -> str:
    """How events and test names spell a pipeline: its string, or its passes joined by ','."""
    if isinstance(pipeline, str):
        return pipeline
    items = pipeline if isinstance(pipeline, (list, tuple)) else [pipeline]
    names = [getattr(item, "name", item.__name__) if isinstance(item, type) else str(item)
             for item in items]
    return ",".join(names)


_default_graphs = graphs
_default_inputs = inputs
