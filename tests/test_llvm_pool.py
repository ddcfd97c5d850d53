"""The LLVM backend's pooling kernels (IntAveragePool, IntGlobalAveragePool, MaxPool and
GlobalMaxPool on int8/uint8 codes), bit for bit with their numpy kernels (guard bytes around
every buffer, this CPU and baseline x86-64, one and two threads), on hypothesis-drawn 1-D and
2-D windows: kernels 1 to 7, strides, dilations, pads, auto_pad, ceil_mode and
count_include_pad, both roundings, clamps, multipliers aimed at ties and saturation (counted
through the contract oracles of test_int_elementwise)."""

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
from test_int_elementwise import (
    DTYPES,
    MULTIPLIERS,
    ROUNDINGS,
    assert_reached,
    clamps,
    codes,
    oracle_global_pool,
    oracle_pool,
    zero_points,
)
from test_llvm_elementwise import CODE_TYPES, kernel_assembly

from qcompiler.graph import Graph
from qcompiler.types import TensorType

# every example compiles four programs (two targets, one and two threads): few examples
EXAMPLES = 10 if os.environ.get("CI") else 50


@st.composite
def windows(draw) -> tuple[tuple, dict]:
    """(x shape, pool attributes): 1-D or 2-D, kernels 1 to 7, every attribute drawn; rows
    sometimes wide enough for whole vectors of output columns."""
    nsp = draw(st.integers(1, 2))
    auto_pad = draw(st.sampled_from(["NOTSET"] * 4 + ["SAME_UPPER", "SAME_LOWER", "VALID"]))
    kernel = [draw(st.integers(1, 7)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.sampled_from([1, 1, 2])) for _ in range(nsp)]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    pads = [draw(st.integers(0, s - 1)) for s in spans * 2] if auto_pad == "NOTSET" else []
    wide = draw(st.booleans())
    sizes = []
    for i, span in enumerate(spans):
        extra = draw(st.integers(0, 70 if wide and i == nsp - 1 else 5))
        padded = pads[i] + pads[nsp + i] if pads else 0
        sizes.append(max(1, extra + (0 if auto_pad.startswith("SAME") else span - padded)))
    attrs = {"kernel_shape": tuple(kernel), "strides": tuple(strides),
             "dilations": tuple(dilations), "auto_pad": auto_pad,
             "ceil_mode": draw(st.integers(0, 1))}
    if pads:
        attrs["pads"] = tuple(pads)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return shape, attrs


@st.composite
def pool_cases(draw) -> tuple:
    """(x, window attributes, count_include_pad, x_zp, y_zp, multiplier, qmin, qmax)."""
    shape, window = draw(windows())
    tx, ty = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    x_zp, y_zp = draw(zero_points(tx)), ty(draw(zero_points(ty)))
    x = draw(codes(tx, shape, x_zp))
    multiplier = draw(MULTIPLIERS)
    qmin, qmax = draw(clamps(ty))
    return x, window, draw(st.integers(0, 1)), x_zp, y_zp, multiplier, qmin, qmax


# every run checks these cases, whatever hypothesis draws: a 1 x 7 window whose count (7,
# pads included; 6 in the ceil_mode window) turns the multiplier 3.5 into 0.5 per code, so
# every odd sum is a tie and the sums saturate both ends; and a 1-D window
EXPLICIT = [(np.random.default_rng(7).integers(-128, 128, (1, 2, 3, 20)).astype(np.int8),
             {"kernel_shape": (1, 7), "strides": (1, 2), "dilations": (1, 1),
              "pads": (0, 3, 0, 3), "auto_pad": "NOTSET", "ceil_mode": 1},
             1, -1, np.uint8(128), 3.5, None, 250),
            (np.arange(13, dtype=np.uint8).reshape(1, 1, 13) * 19,
             {"kernel_shape": (3,), "strides": (2,), "dilations": (1,), "pads": (1, 1),
              "auto_pad": "NOTSET", "ceil_mode": 0},
             0, 100, np.int8(0), 0.77, None, None)]


def test_pools_are_exact():
    """IntAveragePool (both roundings), MaxPool and the global pools of one drawn input, in
    one graph per case; the cases hit ties, both saturation ends, clamps, windows that count
    fewer codes than the kernel, ceil_mode, count_include_pad and kernels of 1 and 7."""
    stats = Counter()

    @settings(max_examples=EXAMPLES)
    @given(case=pool_cases())
    def check(case):
        x, window, include_pad, x_zp, y_zp, multiplier, qmin, qmax = case
        g = Graph("pools")
        vx = g.add_input("x", TensorType(CODE_TYPES[x.dtype.type], x.shape))
        params = [g.add_constant(x.dtype.type(x_zp)), g.add_constant(np.float64(multiplier)),
                  g.add_constant(y_zp)]
        outputs = []
        for rounding in ROUNDINGS:
            rescale = {"rounding": rounding, "qmin": qmin, "qmax": qmax}
            average = {**window, **rescale, "count_include_pad": include_pad}
            outputs.append(g.add_node("IntAveragePool", [vx, *params], average).outputs[0])
            outputs.append(g.add_node("IntGlobalAveragePool", [vx, *params],
                                      rescale).outputs[0])
            oracle_pool(x, x_zp, multiplier, np.asarray(y_zp), average, stats)
            oracle_global_pool(x, x_zp, multiplier, np.asarray(y_zp), rounding, qmin, qmax,
                               stats)
        outputs.append(g.add_node("MaxPool", [vx], window).outputs[0])
        outputs.append(g.add_node("GlobalMaxPool", [vx]).outputs[0])
        g.set_outputs(outputs)
        assert assert_native_exact(g, [{"x": x}]) == 3
        stats["ceil_mode"] += window["ceil_mode"]
        stats["count_include_pad"] += include_pad
        stats["kernel 1"] += 1 in window["kernel_shape"]
        stats["kernel 7"] += 7 in window["kernel_shape"]
        stats["stride > 1"] += max(window["strides"]) > 1
        stats["clamped"] += qmin is not None or qmax is not None
        stats[f"{x.ndim - 2}-D"] += 1

    for case in EXPLICIT:
        check = example(case=case)(check)
    check()
    assert_reached(stats, "tie fixed_point", "tie float", "saturated low", "saturated high",
                   "count below kernel", "ceil_mode", "count_include_pad", "kernel 1",
                   "kernel 7", "stride > 1", "clamped", "1-D", "2-D")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_large_plane_split_by_rows(dtype):
    """A [1, 2, 30, 70] input (rows of several vectors, two planes over two threads), every
    code, a 3 x 3 stride-2 window with pads as in ResNet's stem and a 7 x 7 global pool."""
    info = np.iinfo(dtype)
    x = np.resize(np.arange(info.min, info.max + 1), (1, 2, 30, 70)).astype(dtype)
    g = Graph("stem")
    vx = g.add_input("x", TensorType(CODE_TYPES[dtype], x.shape))
    window = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    params = [g.add_constant(dtype(info.min + 9)), g.add_constant(np.float64(0.37)),
              g.add_constant(np.int8(-5))]
    g.set_outputs([g.add_node("MaxPool", [vx], window).outputs[0],
                   g.add_node("IntAveragePool", [vx, *params], window).outputs[0],
                   g.add_node("IntGlobalAveragePool", [vx, *params]).outputs[0]])
    assert assert_native_exact(g, [{"x": x}]) == 3


@pytest.mark.skipif(not host().has("avx2"), reason="the host has no AVX2")
@pytest.mark.parametrize("op", ["IntAveragePool", "MaxPool"])
def test_the_window_loop_is_vectorised_with_avx2(op):
    g = Graph("wide")
    x = g.add_input("x", TensorType("u8", (1, 4, 16, 64)))
    window = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}
    if op == "MaxPool":
        node = g.add_node(op, [x], window)
    else:
        node = g.add_node(op, [x, g.add_constant(np.uint8(3)), g.add_constant(np.float64(0.5)),
                               g.add_constant(np.uint8(7))], window)
    g.set_outputs([node.outputs[0]])
    program = Program(bound(g, ((1, 4, 16, 64),)), host())
    assert not program.fallbacks
    assert "ymm" in kernel_assembly(program, "int_average_pool" if op != "MaxPool"
                                    else "max_pool")
    program.close()


def test_three_spatial_axes_run_their_numpy_kernel():
    g = Graph("cube")
    x = g.add_input("x", TensorType("i8", (1, 1, 3, 3, 3)))
    g.set_outputs([g.add_node("MaxPool", [x], {"kernel_shape": (2, 2, 2)}).outputs[0]])
    program = Program(bound(g, ((1, 1, 3, 3, 3),)), host())
    (fallback,) = program.fallbacks
    assert "3 spatial axes" in fallback.reason
    program.close()
