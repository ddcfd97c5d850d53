"""The LLVM backend's IntAdd and IntMul kernels, bit for bit with their numpy kernels (guard
bytes around every buffer, this CPU and baseline x86-64, one and two threads): hypothesis over
broadcasting forms, odd shapes, dtypes, zero points, clamps and multipliers aimed at ties and
saturation (counted through the contract oracle of test_int_elementwise), and every pair of
8-bit codes through both ops for a grid of multipliers."""

from __future__ import annotations

import os
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
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
    oracle_binary,
    zero_points,
)

from qcompiler.graph import Graph, Value
from qcompiler.types import TensorType

# every example compiles four programs (two targets, one and two threads): few examples
EXAMPLES = 12 if os.environ.get("CI") else 60
CODE_TYPES = {np.int8: "i8", np.uint8: "u8"}


def binary_node(g: Graph, op: str, a: Value, b: Value, zps: tuple, multipliers: list[float],
                y_dtype, rounding: str, qmin=None, qmax=None) -> Value:
    """An IntAdd (two multipliers) or IntMul (one) node of ``a`` and ``b``."""
    a_zp, b_zp, y_zp = zps
    constants = [a.dtype.np.type(a_zp), b.dtype.np.type(b_zp), *map(np.float64, multipliers),
                 y_dtype(y_zp)]
    node = g.add_node(op, [a, b, *(g.add_constant(c) for c in constants)],
                      {"rounding": rounding, "qmin": qmin, "qmax": qmax})
    return node.outputs[0]


@st.composite
def broadcast_shapes(draw) -> tuple[str, tuple, tuple]:
    """(form, a's shape, b's shape): the same shape, per channel ([N, C, 1, 1] against
    [N, C, H, W], either way round), a scalar, or any numpy broadcasting."""
    form = draw(st.sampled_from(["same", "per channel", "scalar", "any"]))
    full = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 9)),
            draw(st.integers(1, 13)))
    if form == "same":
        shapes = (full, full)
    elif form == "per channel":
        shapes = (full, (*full[:2], 1, 1))
    elif form == "scalar":
        shapes = (full, draw(st.sampled_from([(), (1,), (1, 1, 1, 1)])))
    else:
        drawn = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=7))
        shapes = drawn.input_shapes
    return form, *(shapes[::-1] if draw(st.booleans()) else shapes)


@st.composite
def binary_cases(draw) -> tuple:
    """(form, a, b, (a, b, y dtypes), zero points, multipliers per op, qmin, qmax)."""
    form, a_shape, b_shape = draw(broadcast_shapes())
    dtypes = tuple(draw(st.sampled_from(DTYPES)) for _ in range(3))
    zps = tuple(draw(zero_points(t)) for t in dtypes)
    a = draw(codes(dtypes[0], a_shape, zps[0]))
    b = draw(codes(dtypes[1], b_shape, zps[1]))
    multipliers = {"IntAdd": [draw(MULTIPLIERS), draw(MULTIPLIERS)],
                   "IntMul": [draw(MULTIPLIERS)]}
    return (form, a, b, dtypes, zps, multipliers, *draw(clamps(dtypes[2])))


def _explicit(form: str, a_shape: tuple, b_shape: tuple, multipliers: tuple,
              clamp: tuple = (None, None)) -> tuple:
    """A case of ``form`` that every run checks, whatever hypothesis draws."""
    rng = np.random.default_rng(len(a_shape) + len(b_shape))
    a = rng.integers(-128, 128, a_shape).astype(np.int8)
    b = rng.integers(0, 256, b_shape).astype(np.uint8)
    return (form, a, b, (np.int8, np.uint8, np.int8), (-3, 130, 1),
            {"IntAdd": list(multipliers[:2]), "IntMul": [multipliers[2]]}, *clamp)


# every form, ties (0.5, 2^-7), M > 1, saturation and flushed multipliers, whatever is drawn
EXPLICIT = [_explicit("per channel", (2, 5, 7, 9), (2, 5, 1, 1), (0.5, 1.5, 2.0**-7)),
            _explicit("scalar", (), (3, 4, 5, 11), (2.0**-33, 3.0, 2.0**-40), (-20, 20)),
            _explicit("same", (3, 5, 7), (3, 5, 7), (0.25, 0.75, 0.01)),
            _explicit("any", (4, 1, 6), (5, 1), (1.0, 1.0, 1.0))]


def test_binary_ops_are_exact():
    """IntAdd and IntMul, both roundings, in one graph per drawn case; the cases hit ties,
    both saturation ends, clamps, M > 1, flushed multipliers and every broadcasting form (the
    explicit examples reach each of them, so the count does not hang on what is drawn)."""
    stats = Counter()

    @settings(max_examples=EXAMPLES)
    @given(case=binary_cases())
    def check(case):
        form, a, b, (ta, tb, ty), zps, multipliers, qmin, qmax = case
        g = Graph("binary")
        va = g.add_input("a", TensorType(CODE_TYPES[ta], a.shape))
        vb = g.add_input("b", TensorType(CODE_TYPES[tb], b.shape))
        outputs = []
        for op, ms in multipliers.items():
            for rounding in ROUNDINGS:
                outputs.append(binary_node(g, op, va, vb, zps, ms, ty, rounding, qmin, qmax))
                oracle_binary(op, a, b, zps[0], zps[1], ms, np.asarray(ty(zps[2])), rounding,
                              qmin, qmax, stats)
        g.set_outputs(outputs)
        assert assert_native_exact(g, [{"a": a, "b": b}]) == 3
        all_ms = sum(multipliers.values(), [])
        stats[form] += 1
        stats["M > 1"] += max(all_ms) > 1
        stats["M < 2^-32"] += min(all_ms) < 2.0**-32
        stats["clamped"] += qmin is not None or qmax is not None

    for case in EXPLICIT:
        check = example(case=case)(check)
    check()
    assert_reached(stats, "tie fixed_point", "tie float", "saturated low", "saturated high",
                   "M > 1", "M < 2^-32", "clamped", "same", "per channel", "scalar", "any")


# multipliers (IntAdd's two, IntMul's one) for the exhaustive check: ties (0.5, 0.25, 2^-7),
# M > 1, M0 near 2^31, flushed, any; IntMul's 2^-15 to 2^-18 straddle the shift beyond which
# every product rounds to 0
GRID = [(0.5, 0.25, 2.0**-7), (3.0, 1.5, 3 / 64), (1 - 2.0**-24, 1 / 255, 2.0**-15),
        (2.0**-33, 2.0**-20, 2.0**-16), (0.0123, 0.0456, 2.0**-18), (0.7, 0.2, 2.0**-40),
        (1.0, 1.0, 0.0123 / 64)]


@pytest.mark.parametrize("ta, tb, ty", [(np.int8, np.uint8, np.uint8),
                                        (np.uint8, np.int8, np.int8)])
def test_every_pair_of_codes(ta, tb, ty):
    """Every (a, b) code pair, as a column against a row (broadcast both ways) and as two
    whole 256 x 256 tensors, through both ops, both roundings and every multiplier pair."""
    ia, ib = np.iinfo(ta), np.iinfo(tb)
    column = np.arange(ia.min, ia.max + 1).astype(ta).reshape(256, 1)
    row = np.arange(ib.min, ib.max + 1).astype(tb).reshape(1, 256)
    g = Graph("pairs")
    vc = g.add_input("a", TensorType(CODE_TYPES[ta], (256, 1)))
    vr = g.add_input("b", TensorType(CODE_TYPES[tb], (1, 256)))
    va = g.add_input("a_full", TensorType(CODE_TYPES[ta], (256, 256)))
    vb = g.add_input("b_full", TensorType(CODE_TYPES[tb], (256, 256)))
    zps = (int(ia.min) + 3, int(ib.max) - 7, int(np.iinfo(ty).min) + 100)
    outputs = []
    for k, (m_a, m_b, m_mul) in enumerate(GRID):
        for rounding in ROUNDINGS:
            a, b = (vc, vr) if k % 2 else (va, vb)
            outputs.append(binary_node(g, "IntAdd", a, b, zps, [m_a, m_b], ty, rounding))
            outputs.append(binary_node(g, "IntMul", b, a, (zps[1], zps[0], zps[2]),
                                       [m_mul], ty, rounding))
    g.set_outputs(outputs)
    full_a, full_b = np.broadcast_arrays(column, row)
    feeds = {"a": column, "b": row, "a_full": np.ascontiguousarray(full_a),
             "b_full": np.ascontiguousarray(full_b)}
    assert assert_native_exact(g, [feeds]) == 3


def kernel_assembly(program: Program, base: str) -> str:
    """The assembly of the program's first kernel function named ``qc_<base>_...``."""
    text = program.assembly()
    start = re.search(rf"^qc_{base}_\w+:$", text, re.MULTILINE).end()
    return text[start:text.index(".Lfunc_end", start)]


@pytest.mark.skipif(not host().has("avx2"), reason="the host has no AVX2")
@pytest.mark.parametrize("op", ["IntAdd", "IntMul"])
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_the_inner_loop_is_vectorised_with_avx2(op, rounding):
    g = Graph("wide")
    a = g.add_input("a", TensorType("i8", (1, 8, 16, 16)))
    b = g.add_input("b", TensorType("u8", (1, 8, 1, 1)))
    ms = [0.5, 0.25] if op == "IntAdd" else [0.01]
    g.set_outputs([binary_node(g, op, a, b, (1, 2, 3), ms, np.int8, rounding)])
    program = Program(bound(g, ((1, 8, 16, 16), (1, 8, 1, 1))), host())
    assert not program.fallbacks
    assert "ymm" in kernel_assembly(program, op.lower())
    program.close()


def test_a_huge_float_multiplier_runs_its_numpy_kernel():
    """A float32 multiplier of 2^64 or more could make inf - inf: left to numpy, and said."""
    g = Graph("huge")
    a = g.add_input("a", TensorType("i8", (3,)))
    g.set_outputs([binary_node(g, "IntAdd", a, a, (0, 0, 0), [2.0**70, 1.0], np.int8,
                               "float")])
    program = Program(bound(g, ((3,),)), host())
    (fallback,) = program.fallbacks
    assert "2^64" in fallback.reason
    program.close()
