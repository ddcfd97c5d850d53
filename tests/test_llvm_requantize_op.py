"""The LLVM backend's Requantize kernel, bit for bit with its numpy kernel (guard bytes around
every buffer, this CPU and baseline x86-64, one and two threads): every 8-bit code through a
grid of per-channel scales, hypothesis over dtypes (int8, uint8, int32 in and out), per-tensor
and per-axis parameters, both roundings, scale ratios aimed at ties, saturation, M > 1 and
flushed multipliers (counted from the values before rounding and clamping)."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from llvm_harness import assert_native_exact
from qcompiler.backends.llvm import bound
from qcompiler.backends.llvm.runtime import Program
from qcompiler.backends.llvm.target import host
from test_int_elementwise import assert_reached
from test_llvm_elementwise import kernel_assembly

from qcompiler.graph import Graph, Value
from qcompiler.ops import fixed_point
from qcompiler.types import TensorType

EXAMPLES = 6 if os.environ.get("CI") else 30  # per input dtype
TYPES = {np.int8: "i8", np.uint8: "u8", np.int32: "i32"}
ROUNDINGS = ("float", "fixed_point")
# scale ratios: ties (powers of two), M > 1, flushed (< 2^-32), near 1, any
RATIOS = st.sampled_from([
    st.sampled_from([0.5, 0.25, 2.0**-7]),
    st.sampled_from([3.0, 100.0, 2.0**20]),
    st.sampled_from([2.0**-34, 1e-12]),
    st.sampled_from([1.0, 1 - 2.0**-20]),
    st.floats(1e-4, 10.0),
]).flatmap(lambda group: group)


def requantize_node(g: Graph, x: Value, params: list[np.ndarray], axis: int,
                    rounding: str) -> Value:
    """A Requantize node of ``x`` with constant (x_scale, x_zp, y_scale, y_zp)."""
    constants = [g.add_constant(p) for p in params]
    return g.add_node("Requantize", [x, *constants], {"axis": axis,
                                                       "rounding": rounding}).outputs[0]


def count_features(x: np.ndarray, params: list[np.ndarray], axis: int, stats: Counter) -> None:
    """Count exact ties of both roundings, both saturation ends and flushed multipliers in
    the values the kernel rounds and clamps."""
    x_scale, x_zp, y_scale, y_zp = params

    def along(p: np.ndarray) -> np.ndarray:
        shape = [1] * x.ndim
        if p.size > 1:
            shape[axis] = p.size
        return p.reshape(shape if p.size > 1 else ())

    diff = x.astype(np.int64) - along(x_zp).astype(np.int64)
    with np.errstate(all="ignore"):
        quotient = diff.astype(np.float32) * along(x_scale) / along(y_scale)
    stats["tie float"] += int(np.sum(np.abs(quotient - np.trunc(quotient)) == 0.5))
    ratio = np.broadcast_to(along(x_scale).astype(np.float64) / along(y_scale), diff.shape)
    pairs = {float(m): fixed_point.fixed_point_multiplier(float(m)) for m in np.unique(ratio)}
    m0 = np.vectorize(lambda m: pairs[float(m)][0], otypes=[np.int64])(ratio)
    shift = np.vectorize(lambda m: pairs[float(m)][1], otypes=[np.int64])(ratio)
    stats["flushed"] += int(np.sum(m0 == 0))
    stats["M > 1"] += int(np.sum(ratio > 1))
    rounds = shift > 0
    product = diff * m0
    stats["tie fixed_point"] += int(np.sum(rounds & (product % np.left_shift(1, shift) ==
                                                     np.left_shift(1, np.maximum(shift - 1, 0)))))
    info = np.iinfo(y_zp.dtype)
    y = np.rint(quotient).astype(np.float64) + along(y_zp)
    stats["saturated low"] += int(np.sum(y < info.min))
    stats["saturated high"] += int(np.sum(y > info.max))


@st.composite
def cases(draw, tx) -> tuple:
    """(x, parameters, axis, roundings) for codes of dtype ``tx``: per tensor or per axis,
    int32 codes with a nonzero zero point only for the float rounding (the numpy kernel
    refuses the fixed-point one when x - x_zp leaves int32)."""
    ty = draw(st.sampled_from(list(TYPES)))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis]
    per_x, per_y = draw(st.booleans()), draw(st.booleans())
    size = lambda per: channels if per else 1  # noqa: E731
    ratios = np.array([draw(RATIOS) for _ in range(max(size(per_x), size(per_y)))])
    y_scale = np.float32(draw(st.sampled_from([0.05, 1.0, 0.3])))
    x_scale = (ratios[:size(per_x)] * y_scale).astype(np.float32)
    y_scale = np.full(size(per_y), y_scale, np.float32) * np.float32(
        draw(st.sampled_from([1.0, 2.0])))
    xi, yi = np.iinfo(tx), np.iinfo(ty)
    x_zp = np.array([draw(st.sampled_from([0, int(xi.min), int(xi.max), 3]))
                     for _ in range(size(per_x))]).astype(tx)
    y_zp = np.array([draw(st.sampled_from([0, int(yi.min), int(yi.max), 5]))
                     for _ in range(size(per_y))]).astype(ty)
    reshape = (lambda p: p.reshape(())) if draw(st.booleans()) else (lambda p: p)
    params = [reshape(p) if p.size == 1 else p for p in (x_scale, x_zp, y_scale, y_zp)]
    params = [params[0], params[1].reshape(params[0].shape), params[2],
              params[3].reshape(params[2].shape)]
    low, high = (-1000, 1000) if tx == np.int32 else (int(xi.min), int(xi.max))
    x = draw(st.sampled_from([
        np.random.default_rng(draw(st.integers(0, 99))).integers(low, high, shape,
                                                                   endpoint=True),
        np.resize([int(xi.min), int(xi.max), 0, 1, -1, 2, 3], shape)])).astype(tx)
    roundings = ROUNDINGS if tx != np.int32 or not np.any(params[1]) else ("float",)
    return x, params, axis, roundings, per_x or per_y


def explicit(tx, ty, channels: int) -> tuple:
    """A case every run checks, whatever hypothesis draws: [2, channels, 9] codes (their
    limits and small values, centred on both sides of 0), scale ratios 0.5 (ties), 300
    (saturation at both ends) and 2^-34 (flushed), per tensor or along axis 1."""
    x = np.resize([int(np.iinfo(tx).min), int(np.iinfo(tx).max), 0, 1, 3, 5],
                  (2, channels, 9)).astype(tx)
    ratios = np.resize([0.5, 300.0, 2.0**-34], channels).astype(np.float32)
    x_zp = np.full(channels, 3 if tx == np.uint8 else 0, tx)
    params = [ratios * np.float32(0.1), x_zp, np.float32(0.1), ty(0)]
    return x, params, 1, ROUNDINGS, channels > 1


@pytest.mark.parametrize("tx", list(TYPES))
def test_requantize_is_exact(tx):
    """Both roundings of drawn cases; they hit ties of both, both saturation ends, flushed
    multipliers, M > 1, per-tensor and per-axis parameters and every output dtype."""
    stats = Counter()

    @settings(max_examples=EXAMPLES)
    @given(case=cases(tx))
    @example(case=explicit(tx, np.int32, 1))
    @example(case=explicit(tx, np.uint8, 3))
    @example(case=explicit(tx, np.int8, 3))
    def check(case):
        x, params, axis, roundings, per_axis = case
        g = Graph("requantize")
        vx = g.add_input("x", TensorType(TYPES[tx], x.shape))
        g.set_outputs([requantize_node(g, vx, params, axis, r) for r in roundings])
        assert assert_native_exact(g, [{"x": x}]) == 3
        count_features(x, params, axis, stats)
        stats["per axis" if per_axis else "per tensor"] += 1
        stats[f"{params[3].dtype.name} out"] += 1

    check()
    assert_reached(stats, "tie float", "tie fixed_point", "saturated low", "saturated high",
                   "flushed", "M > 1", "per axis", "per tensor", "int8 out", "uint8 out",
                   "int32 out")


@pytest.mark.parametrize("tx, ty", [(np.int8, np.uint8), (np.uint8, np.int8)])
def test_every_code_through_a_grid_of_channel_scales(tx, ty):
    """Every 8-bit code (rows) against 12 channels of scale ratios (ties, M > 1, flushed,
    near 1, any) and zero points, both roundings."""
    ratios = np.array([0.5, 0.25, 1.5, 3.0, 200.0, 2.0**-33, 1e-10, 1.0, 1 - 2.0**-20, 0.0123,
                       0.777, 1 / 3])
    info, out = np.iinfo(tx), np.iinfo(ty)
    x = np.repeat(np.arange(info.min, info.max + 1), len(ratios)).reshape(256, -1).astype(tx)
    y_scale = np.linspace(0.01, 2, len(ratios)).astype(np.float32)
    params = [(ratios * y_scale).astype(np.float32),
              np.resize([info.min, 0, info.max, 7], len(ratios)).astype(tx), y_scale,
              np.resize([out.max, 0, out.min, 9, 100], len(ratios)).astype(ty)]
    g = Graph("codes")
    vx = g.add_input("x", TensorType(TYPES[tx], x.shape))
    g.set_outputs([requantize_node(g, vx, params, -1, r) for r in ROUNDINGS])
    assert assert_native_exact(g, [{"x": x}]) == 3


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # the numpy kernel's, meant
def test_zero_and_infinite_quotients_in_float():
    """A zero y_scale makes infinite quotients (saturated) and 0/0 (NaN: the lowest code),
    as the numpy kernel gives."""
    g = Graph("zeros")
    vx = g.add_input("x", TensorType("i8", (2, 3)))
    params = [np.array([0.5, 0.0], np.float32), np.zeros(2, np.int8),
              np.array([0.0, 1.0], np.float32), np.array([3, 4], np.int8)]
    g.set_outputs([requantize_node(g, vx, params, 0, "float")])
    x = np.array([[-5, 0, 5], [1, 2, 3]], np.int8)
    assert assert_native_exact(g, [{"x": x}]) == 3


def test_int32_codes_with_a_zero_point_in_fixed_point_run_their_numpy_kernel():
    g = Graph("wide")
    vx = g.add_input("x", TensorType("i32", (4,)))
    params = [np.float32(0.5), np.int32(7), np.float32(1.0), np.int8(0)]
    g.set_outputs([requantize_node(g, vx, params, 0, "fixed_point")])
    program = Program(bound(g, ((4,),)), host())
    (fallback,) = program.fallbacks
    assert "nonzero zero point" in fallback.reason
    program.close()


@pytest.mark.skipif(not host().has("avx2"), reason="the host has no AVX2")
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_the_inner_loop_is_vectorised_with_avx2(rounding):
    g = Graph("wide")
    vx = g.add_input("x", TensorType("u8", (1, 8, 16, 16)))
    params = [np.linspace(0.01, 0.1, 8).astype(np.float32), np.full(8, 128, np.uint8),
              np.float32(0.05), np.int8(-3)]
    g.set_outputs([requantize_node(g, vx, params, 1, rounding)])
    program = Program(bound(g, ((1, 8, 16, 16),)), host())
    assert not program.fallbacks
    assert "ymm" in kernel_assembly(program, "requantize")
    program.close()
