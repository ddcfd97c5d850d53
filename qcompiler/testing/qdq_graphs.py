"""``qdq_graphs()``: random graphs in the QDQ form, for testing passes that rewrite Q/DQ nodes.

Each graph starts from a float32 NCHW input (and sometimes a pre-quantized int8/uint8 input)
and grows by random steps, built with the ``qcompiler.qdq`` helpers so that types and
constants agree: Q and DQ; DQ -> Q pairs with equal or different parameters; DQ -> Relu/Clip
-> Q where the Q's zero point sits at the dtype's minimum or elsewhere and the Clip bounds
quantize to the saturation limits, half a step (a tie) next to them or farther off; DQ ->
data-movement op (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Split, Resize,
MaxPool with and without padding, GlobalMaxPool) -> Q or float; Concat of DQs with equal or
different parameters; Conv, Add and Sigmoid in float between DQ and Q; Q -> DQ islands read
by float ops. Parameters are int8 or uint8, per tensor or along the channel axis, with scales
that are powers of two (inputs on ``inputs()``'s 0.5 grid then give exact ties) or arbitrary,
and small enough that inputs in [-4, 4] saturate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis
import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from .. import qdq
from ..graph import Graph, Value
from ..types import DType, QuantParams, TensorType

QDQ_DTYPES = (DType.I8, DType.U8)
POWER_OF_TWO_SCALES = tuple(2.0 ** e for e in range(-6, 2))
ZERO_POINTS = ("qmin", "middle", "qmax", "any")
MOVES = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split", "Resize",
         "MaxPool", "GlobalMaxPool")
STEPS = ("requantize", "activation", "move", "concat", "float", "island", "quantize",
         "dequantize")


def qdq_params(*, dtype: DType | None = None, channels: int | None = None,
               zero: str | None = None) -> SearchStrategy[QuantParams]:
    """QuantParams for a Q/DQ pair: ``dtype`` i8 or u8, per tensor or (when ``channels`` is
    given, half the time) along axis 1, zero points at the dtype's minimum, its middle (0 or
    128), its maximum or anywhere (``zero`` picks one of ``ZERO_POINTS``)."""
    return _qdq_params(dtype, channels, zero)


@st.composite
def _qdq_params(draw: Callable[..., Any], dtype: DType | None, channels: int | None,
                zero: str | None) -> QuantParams:
    qtype = dtype or draw(st.sampled_from(QDQ_DTYPES), label="dtype")
    n = channels if channels is not None and draw(st.booleans(), label="per axis") else 1
    info = np.iinfo(qtype.np)
    kind = zero or draw(st.sampled_from(ZERO_POINTS), label="zero point")
    scales, zeros = [], []
    for _ in range(n):
        scales.append(draw(st.sampled_from(POWER_OF_TWO_SCALES)
                           | st.floats(2.0 ** -10, 1.0, width=32), label="scale"))
        zeros.append({"qmin": int(info.min), "qmax": int(info.max),
                      "middle": 0 if qtype == DType.I8 else 128}.get(kind) if kind != "any"
                     else draw(st.integers(int(info.min), int(info.max)), label="zero"))
    return qdq.exact_params(QuantParams(tuple(scales), tuple(zeros), qtype,
                                        1 if n > 1 else None))


def qdq_graphs(*, max_steps: int = 6, islands: bool = True,
               steps: tuple[str, ...] = STEPS) -> SearchStrategy[Graph]:
    """Random verified graphs in the QDQ form (see the module docstring); ``steps`` names the
    kinds of step to draw from (``STEPS``); ``islands=False`` leaves out Q -> DQ islands."""
    chosen = tuple(s for s in steps if islands or s != "island")
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown or not chosen:
        raise ValueError(f"unknown or no steps {unknown}; choose from {', '.join(STEPS)}")
    return _qdq_graphs(max_steps, chosen)


class _Builder:
    """The graph being drawn: its float values and its quantized (integer, typed) values."""

    def __init__(self, graph: Graph, draw: Callable[..., Any]):
        self.graph = graph
        self.draw = draw
        self.floats: list[Value] = []
        self.quantized: list[Value] = []

    def pick(self, values: list[Value], label: str) -> Value:
        """The newest value half the time (chains), else any."""
        if self.draw(st.booleans(), label=f"newest {label}"):
            return values[-1]
        return self.draw(st.sampled_from(values), label=label)

    def params(self, value: Value, **kw: Any) -> QuantParams:
        channels = value.shape[1] if len(value.shape) >= 2 else None
        return self.draw(qdq_params(channels=channels, **kw), label="params")

    def node(self, op: str, inputs: list[Value | None], attrs: dict | None = None,
             outputs: int | None = None) -> list[Value]:
        made = self.graph.add_node(op, inputs, attrs, outputs=outputs).outputs
        self.floats.extend(v for v in made if v.dtype == DType.F32)
        return list(made)

    def quantize(self, value: Value, params: QuantParams | None = None) -> Value:
        q = qdq.add_quantize(self.graph, value, params or self.params(value))
        self.quantized.append(q)
        return q

    def dequantize(self, q: Value) -> Value:
        real = qdq.add_dequantize(self.graph, q)
        self.floats.append(real)
        return real

    def maybe_quantize(self, value: Value, like: QuantParams) -> None:
        """Quantize ``value`` with ``like``'s parameters, new ones, or not at all."""
        how = self.draw(st.sampled_from(["same", "new", "float"]), label="then")
        fits = like.axis is None or (len(value.shape) > like.axis
                                     and value.shape[like.axis] == len(like.scale))
        if how == "same" and fits:
            self.quantize(value, like)
        elif how != "float":
            self.quantize(value)

    def const(self, data: Any) -> Value:
        return self.graph.add_constant(np.asarray(data), self.graph.fresh_name("c"))


def _requantize(b: _Builder) -> None:
    q = b.pick(b.quantized, "quantized")
    real = b.dequantize(q)
    same = b.draw(st.booleans(), label="equal parameters")
    b.quantize(real, q.type.quant if same else None)


# Offsets, in steps, of a Clip bound from the value quantizing to the dtype's end: inside
# half a step (absorbed), a tie (absorbed or not, by the parity of the end), beyond.
_NEAR_OFFSETS = (None, 0.0, 0.25, -0.25, 0.5, -0.5)
_ALL_OFFSETS = (*_NEAR_OFFSETS, 1.0, -3.0, 3.0)


def _clip_bound(b: _Builder, params: QuantParams, limit: str, near: bool) -> float | None:
    """A Clip bound quantizing to the dtype's ``limit`` end or beside it (``near``: at most
    half a step off, on the side that still saturates), or absent."""
    sign = 1.0 if limit == "low" else -1.0
    offsets = [o if o is None else sign * abs(o) for o in _NEAR_OFFSETS] if near \
        else _ALL_OFFSETS
    offset = b.draw(st.sampled_from(offsets), label=f"{limit} offset")
    if offset is None:
        return None
    info = np.iinfo(params.dtype.np)
    end = int(info.min) if limit == "low" else int(info.max)
    scale, zero = params.scale[0], params.zero_point[0]
    return float(np.float32(scale * (end - zero + offset)))


def _activation(b: _Builder) -> None:
    q = b.pick(b.quantized, "quantized")
    real = b.dequantize(q)
    near = b.draw(st.booleans(), label="at the limits")
    relu = b.draw(st.booleans(), label="relu")
    zero = "qmin" if near and relu else b.draw(st.sampled_from(ZERO_POINTS), label="zero")
    after = b.params(real, zero=zero)
    if relu:
        act = b.node("Relu", [real])[0]
    else:
        lo, hi = _clip_bound(b, after, "low", near), _clip_bound(b, after, "high", near)
        if lo is not None and hi is not None and lo > hi:
            lo, hi = hi, lo
        bounds = [b.const(np.float32(v)) if v is not None else None for v in (lo, hi)]
        while bounds and bounds[-1] is None:
            bounds.pop()
        act = b.node("Clip", [real, *bounds])[0]
    b.quantize(act, after)


def _move_attrs(b: _Builder, op: str, x: Value) -> tuple[list[Value | None], dict, int] | None:
    """Operands after x, attributes and output count of a data-movement op on ``x``."""
    shape, rank = x.shape, len(x.shape)
    draw = b.draw
    if rank < 2:
        return None
    if op == "Reshape":
        return [b.const(np.array([shape[0], -1], np.int64))], {}, 1
    if op == "Flatten":
        return [], {"axis": draw(st.integers(0, rank))}, 1
    if op == "Transpose":
        return [], {"perm": list(draw(st.permutations(range(rank))))}, 1
    if op == "Unsqueeze":
        return [b.const(np.array([draw(st.integers(0, rank))], np.int64))], {}, 1
    if op == "Squeeze":
        ones = [a for a, d in enumerate(shape) if d == 1]
        return ([b.const(np.array([draw(st.sampled_from(ones))], np.int64))], {}, 1) if ones \
            else None
    axis = draw(st.integers(0, rank - 1), label="axis")
    if op == "Slice":
        size = shape[axis]
        start = draw(st.integers(0, size - 1))
        return [b.const(np.array([start], np.int64)), b.const(np.array([size], np.int64)),
                b.const(np.array([axis], np.int64))], {}, 1
    if op == "Split":
        if shape[axis] < 2:
            return None
        first = draw(st.integers(1, shape[axis] - 1))
        return [b.const(np.array([first, shape[axis] - first], np.int64))], {"axis": axis}, 2
    if rank != 4:
        return None
    if op == "Resize":
        return [None, b.const(np.array([1, 1, 2, 1.5], np.float32))], {"mode": "nearest"}, 1
    if op == "GlobalMaxPool":
        return [], {}, 1
    kernel = [draw(st.integers(1, min(3, d))) for d in shape[2:]]
    pads = [draw(st.integers(0, k)) for k in kernel] * 2  # a pad of k: a window of padding only
    return [], {"kernel_shape": kernel, "pads": pads, "ceil_mode": draw(st.integers(0, 1))}, 1


def _move(b: _Builder) -> None:
    q = b.pick(b.quantized, "quantized")
    real = b.dequantize(q)
    op = b.draw(st.sampled_from(MOVES), label="move")
    spec = _move_attrs(b, op, real)
    if spec is None:
        return
    operands, attrs, n = spec
    outs = b.node(op, [real, *operands], attrs, outputs=n)
    b.maybe_quantize(b.draw(st.sampled_from(outs), label="output"), q.type.quant)


def _concat(b: _Builder) -> None:
    q = b.pick(b.quantized, "quantized")
    parts = [b.dequantize(q)]
    for _ in range(b.draw(st.integers(1, 2), label="more inputs")):
        same_shape = [v for v in b.floats if v.shape == q.shape]
        source = b.draw(st.sampled_from(same_shape), label="source")
        same = b.draw(st.booleans(), label="equal parameters")
        parts.append(b.dequantize(b.quantize(source, q.type.quant if same else None)))
    axis = b.draw(st.integers(0, len(q.shape) - 1), label="axis")
    out = b.node("Concat", parts, {"axis": axis})[0]
    b.maybe_quantize(out, q.type.quant)


def _float(b: _Builder) -> None:
    q = b.pick(b.quantized, "quantized")
    real = b.dequantize(q)
    kind = b.draw(st.sampled_from(["Conv", "Add", "Sigmoid"]), label="float op")
    if kind == "Conv" and len(real.shape) == 4:
        c = real.shape[1]
        weight = np.random.default_rng(c).normal(0, 0.5, (c, c, 1, 1)).astype(np.float32)
        out = b.node("Conv", [real, b.const(weight)])[0]
    elif kind == "Add":
        out = b.node("Add", [real, b.pick([v for v in b.floats if v.shape == real.shape],
                                           "addend")])[0]
    else:
        out = b.node("Sigmoid", [real])[0]
    b.maybe_quantize(out, q.type.quant)


def _island(b: _Builder) -> None:
    x = b.pick(b.floats, "float")
    real = b.dequantize(b.quantize(x))
    b.node(b.draw(st.sampled_from(["Sigmoid", "Tanh", "Relu"]), label="island reader"), [real])


def _quantize(b: _Builder) -> None:
    b.quantize(b.pick(b.floats, "float"))


def _dequantize(b: _Builder) -> None:
    b.dequantize(b.pick(b.quantized, "quantized"))


_STEP_BUILDERS = {"requantize": _requantize, "activation": _activation, "move": _move,
                  "concat": _concat, "float": _float, "island": _island, "quantize": _quantize,
                  "dequantize": _dequantize}


@st.composite
def _qdq_graphs(draw: Callable[..., Any], max_steps: int, steps: tuple[str, ...]) -> Graph:
    graph = Graph("qdq")
    b = _Builder(graph, draw)
    shape = (draw(st.integers(1, 2), label="batch"), draw(st.integers(1, 3), label="channels"),
             draw(st.integers(1, 4), label="height"), draw(st.integers(1, 4), label="width"))
    x = graph.add_input("x", TensorType(DType.F32, shape))
    b.floats.append(x)
    if draw(st.booleans(), label="quantized input"):
        params = b.params(x)
        b.quantized.append(graph.add_input("xq", TensorType(params.dtype, shape, params)))
    else:
        b.quantize(x)
    for _ in range(draw(st.integers(1, max_steps), label="steps")):
        _STEP_BUILDERS[draw(st.sampled_from(steps), label="step")](b)
    made = [v for v in b.floats + b.quantized if v.producer is not None]
    hypothesis.assume(made)
    outputs = [made[-1]] + draw(st.lists(st.sampled_from(made), max_size=2, unique_by=id),
                                label="extra outputs")
    graph.set_outputs(list({id(v): v for v in outputs}.values()))
    graph.verify()
    return graph
