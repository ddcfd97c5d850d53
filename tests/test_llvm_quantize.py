"""The LLVM backend's QuantizeLinear and DequantizeLinear kernels are bit-exact with the numpy
kernels (``qcompiler/ops/quant.py``): per tensor and per axis on every axis of ranks 1 to 5,
int8/uint8 (and int32 codes to dequantize), inputs at the rounding ties, at both saturation ends,
NaN, infinities and -0.0; on this CPU and baseline x86-64, one and two threads, guard bytes
around every buffer. onnx.reference is a second oracle on the inputs where ONNX defines the
result."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from llvm_harness import assert_native_exact
from onnx.reference import ReferenceEvaluator
from ort_helpers import node_model
from qcompiler.backends.llvm.kernels.quantize import CHUNK, LONG_ROW

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.types import TensorType

EXAMPLES = max(12, settings.default.max_examples // 3)
CODES = {"i8": np.int8, "u8": np.uint8, "i32": np.int32}


@st.composite
def layouts(draw, codes=("i8", "u8")) -> tuple:
    """(shape, axis or None for per tensor, code dtype, with a zero point, seed)."""
    rank = draw(st.sampled_from(range(1, 6)))
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank)))
    axis = draw(st.one_of(st.none(), st.sampled_from(range(-rank, rank))))
    return (shape, axis, draw(st.sampled_from(codes)), draw(st.booleans()),
            draw(st.integers(0, 2**16)))


def form(shape: tuple, axis: int | None) -> str:
    """How the kernel walks this layout (what the feature counts record)."""
    if axis is None or shape[axis] == 1:
        return "chunks" if np.prod(shape) > CHUNK else "chunk"
    inner = int(np.prod(shape[axis % len(shape) + 1:]))
    return "rows" if inner >= LONG_ROW else "elements"


def parameters(rng, shape, axis, code, with_zero):
    """Scales (powers of two for half the channels, so that ties are exact) and zero points
    (both ends of the dtype included)."""
    n = 1 if axis is None else shape[axis]
    scale = np.where(rng.random(n) < 0.5, 2.0 ** rng.integers(-8, 5, n),
                     2.0 ** rng.uniform(-12, 6, n)).astype(np.float32)
    info = np.iinfo(CODES[code])
    zero = rng.integers(info.min, info.max, n, endpoint=True)
    zero[: min(n, 2)] = [info.min, info.max][: min(n, 2)]
    zero = zero.astype(CODES[code]) if with_zero else None
    if axis is None:
        scale = scale.reshape(())
        zero = None if zero is None else zero.reshape(())
    return scale, zero


def graph(op: str, shape, axis, code, scale, zero) -> Graph:
    g = Graph(op)
    x = g.add_input("x", TensorType("f32" if op == "QuantizeLinear" else code, shape))
    inputs = [x, g.add_constant(scale, "scale")]
    if zero is not None:
        inputs.append(g.add_constant(zero, "zero"))
    attrs = {} if axis is None else {"axis": axis}
    if op == "QuantizeLinear" and zero is None:
        attrs["output_dtype"] = 3 if code == "i8" else 2  # ONNX's INT8 and UINT8
    node = g.add_node(op, inputs, attrs)
    g.set_outputs([node.outputs[0]])
    return g


def along(param: np.ndarray, shape: tuple, axis: int | None) -> np.ndarray:
    if axis is None:
        return param
    view = [1] * len(shape)
    view[axis] = param.size
    return param.reshape(view)


def floats(rng, shape, axis, scale) -> tuple[np.ndarray, np.ndarray]:
    """Two inputs: one mixing ties (k + 0.5 times the scale), values past both saturation
    ends, zeros of both signs, NaN and infinities; one of plain normal values."""
    step = np.broadcast_to(along(scale, shape, axis), shape)
    kind = rng.integers(0, 4, shape)
    ties = (rng.integers(-300, 300, shape) + np.float32(0.5)) * step
    wide = rng.normal(size=shape).astype(np.float32) * step * np.float32(400)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 3e38, -3e38, 1e-45], np.float32)
    picks = special[rng.integers(0, special.size, shape)]
    x = np.select([kind == 0, kind == 1, kind == 2], [ties, wide, picks],
                  rng.normal(size=shape) * step * 3).astype(np.float32)
    flat = x.reshape(-1)
    flat[: min(flat.size, special.size)] = special[: flat.size]
    return x, (rng.normal(size=shape) * 50).astype(np.float32)


def test_quantize_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(layouts())
    @example(((3, 41, 67), None, "i8", True, 1))  # several chunks
    @example(((2, 3, 5), -1, "u8", True, 2))  # per axis, short rows
    @example(((4, 3, 1, 17), 1, "i8", False, 3))  # per axis, a row per channel
    @example(((2, 1, 3, 2, 5), 4, "u8", False, 4))  # rank 5, the last axis
    @example(((3, 2, 4, 5, 2), -2, "i8", True, 5))
    @example(((3, 2, 4, 5), 2, "u8", True, 6))
    @example(((7,), None, "u8", False, 7))  # one chunk, rank 1
    @example(((5, 3), 0, "i8", True, 8))  # the first axis
    def check(layout):
        shape, axis, code, with_zero, seed = layout
        rng = np.random.default_rng(seed)
        scale, zero = parameters(rng, shape, axis, code, with_zero)
        g = graph("QuantizeLinear", shape, axis, code, scale, zero)
        feeds = floats(rng, shape, axis, scale)
        assert assert_native_exact(g, [{"x": x} for x in feeds]) == 6
        y = qc.compile(g)(feeds[0])
        info = np.iinfo(CODES[code])
        with np.errstate(invalid="ignore", over="ignore"):
            quotient = feeds[0] / np.broadcast_to(along(scale, shape, axis), shape) % 1
        seen.update([form(shape, axis), code, f"rank{len(shape)}",
                     "zero point" if with_zero else "no zero point"])
        seen.update({"tie": (quotient == 0.5).any(), "NaN": np.isnan(feeds[0]).any(),
                     "low end": (y == info.min).any(), "high end": (y == info.max).any(),
                     "-0.0": np.signbit(feeds[0][feeds[0] == 0]).any()})
        if axis is not None:
            seen[f"axis {axis % len(shape)}"] += 1

    check()
    for feature in ("chunk", "chunks", "rows", "elements", "i8", "u8", "tie", "NaN", "-0.0",
                    "low end", "high end", "zero point", "no zero point",
                    *(f"rank{r}" for r in range(1, 6)), *(f"axis {a}" for a in range(5))):
        assert seen[feature] > 0, (feature, seen)


def test_dequantize_is_exact():
    seen = Counter()

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(layouts(("i8", "u8", "i32")))
    @example(((5, 1000), None, "i32", True, 1))  # several chunks; int64 differences
    @example(((3, 16), 1, "u8", True, 2))
    @example(((6, 2, 17), 1, "i8", True, 3))
    @example(((2, 1, 3, 2, 5), -1, "i32", False, 4))  # rank 5, the last axis
    @example(((3, 2, 4, 5, 2), -2, "u8", True, 5))
    @example(((3, 2, 4, 5), 2, "i8", False, 6))
    @example(((7,), None, "u8", False, 7))  # one chunk, rank 1
    @example(((5, 3), 0, "i8", True, 8))  # the first axis
    def check(layout):
        shape, axis, code, with_zero, seed = layout
        rng = np.random.default_rng(seed)
        scale, zero = parameters(rng, shape, axis, code, with_zero)
        if code == "i32":
            scale = scale * np.float32(2.0 ** rng.integers(-40, 60))
            scale.reshape(-1)[0] = 2.0 ** 100  # big differences overflow to inf
        g = graph("DequantizeLinear", shape, axis, code, scale, zero)
        info = np.iinfo(CODES[code])
        x = rng.integers(info.min, info.max, shape, endpoint=True).astype(CODES[code])
        flat = x.reshape(-1)
        flat[: min(flat.size, 2)] = [info.min, info.max][: flat.size]
        assert assert_native_exact(g, [{"x": x}]) == 3
        y = qc.compile(g)(x)
        seen.update([form(shape, axis), code, "zero point" if with_zero else "no zero point",
                     f"rank{len(shape)}"])
        seen["inf"] += bool(np.isinf(y).any())
        if axis is not None:
            seen[f"axis {axis % len(shape)}"] += 1

    check()
    for feature in ("chunk", "chunks", "rows", "elements", "i8", "u8", "i32", "zero point",
                    "no zero point", "inf", *(f"rank{r}" for r in range(1, 6)),
                    *(f"axis {a}" for a in range(5))):
        assert seen[feature] > 0, (feature, seen)


def test_onnx_reference_agrees():
    """A second oracle: onnx.reference, on finite inputs whose quotients stay inside int32
    (where ONNX's reference itself casts NaN and overflow in an undefined way)."""
    seen = Counter()

    @settings(max_examples=max(8, EXAMPLES // 2), deadline=None)
    @given(layouts())
    def check(layout):
        shape, axis, code, _, seed = layout
        rng = np.random.default_rng(seed)
        scale, zero = parameters(rng, shape, axis, code, True)
        x = floats(rng, shape, axis, scale)[0]
        x = np.where(np.isfinite(x) & (np.abs(x) < 1e6), x, np.float32(-0.0))
        attrs = {} if axis is None else {"axis": axis}
        for op, feed in (("QuantizeLinear", x), ("DequantizeLinear", None)):
            g = graph(op, shape, axis, code, scale, zero)
            exe = qc.compile(g, backend="llvm")
            assert not exe.fallbacks()
            if feed is None:
                info = np.iinfo(CODES[code])
                feed = rng.integers(info.min, info.max, shape, endpoint=True).astype(CODES[code])
            model = node_model(op, [feed, scale, zero], attrs, constant_inputs=(1, 2))
            want = ReferenceEvaluator(model).run(None, {"in0": feed})[0]
            np.testing.assert_array_equal(exe(feed), want)
            seen[op] += 1

    check()
    assert seen["QuantizeLinear"] > 0 and seen["DequantizeLinear"] > 0
