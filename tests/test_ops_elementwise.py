"""Elementwise ops: kernels and inferred types against onnxruntime on hypothesis-drawn inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from op_check import check_op, infer, run_kernel

from qcompiler.errors import ShapeInferenceError
from qcompiler.graph import Graph
from qcompiler.types import DType, TensorType

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)


def floats(dtype=np.float32, lo=-8.0, hi=8.0):
    return st.floats(lo, hi, width=np.dtype(dtype).itemsize * 8, allow_nan=False,
                     allow_infinity=False)


def ints(dtype, lo=None, hi=None):
    info = np.iinfo(dtype)
    return st.integers(info.min if lo is None else lo, info.max if hi is None else hi)


def array(dtype, shape, elements=None):
    if elements is None:
        info = None if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
        elements = floats(dtype) if info is None else ints(dtype, max(info.min, -100), 100)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def operands(draw, n, dtype, elements=None):
    """``n`` arrays of mutually broadcastable shapes."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=4,
                                                    max_side=4))
    return [draw(array(dtype, s, elements)) for s in shapes.input_shapes]


BINARY_DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.int32, np.int64]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@given(dtype=st.sampled_from(BINARY_DTYPES), full_range=st.booleans(), data=st.data())
def test_binary_arithmetic(op, dtype, full_range, data):
    """Broadcasting arithmetic; integers wrap, integer Div truncates toward zero."""
    is_int = np.dtype(dtype).kind in "iu"
    a, b = data.draw(operands(2, dtype, ints(dtype) if is_int and full_range else None))
    if op == "Div":
        small = (b == 0) if is_int else (np.abs(b) < 0.25)
        b = np.where(small, dtype(3), b).astype(dtype)
        if np.dtype(dtype).kind == "i":  # INT_MIN / -1 overflows (onnxruntime traps)
            a = np.where(a == np.iinfo(dtype).min, dtype(0), a).astype(dtype)
    check_op(op, [a, b])


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 6, -6, 0], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3, -5], np.int32)
    out = check_op("Div", [a, b])[0]
    np.testing.assert_array_equal(out, [3, -3, -3, 3, 2, -2, 0])
    big = np.array([2**62 + 1, -(2**62) - 3], np.int64)
    out = run_kernel("Div", [big, np.array([3, 7], np.int64)], {})[0]
    assert out.tolist() == [(2**62 + 1) // 3, -((2**62 + 3) // 7)]  # exact, no float round trip


UNARY = {
    "Relu": {}, "Sigmoid": {}, "HardSwish": {}, "Tanh": {}, "Neg": {}, "Abs": {}, "Erf": {},
    "Exp": {}, "Log": {}, "Sqrt": {},
    "LeakyRelu": {"alpha": st.floats(0, 1)},
    "HardSigmoid": {"alpha": st.floats(0.01, 1), "beta": st.floats(-1, 1)},
    "Elu": {"alpha": st.floats(0.1, 2)},
    "Selu": {"alpha": st.floats(0.1, 2), "gamma": st.floats(0.5, 2)},
    "Softplus": {}, "Softsign": {},
    "Gelu": {"approximate": st.sampled_from(["none", "tanh"])},
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(shape=SHAPES, data=st.data())
def test_unary_float(op, shape, data):
    lo = 2.0**-10 if op in ("Log", "Sqrt") else -10.0
    x = data.draw(array(np.float32, shape, floats(np.float32, lo, 10.0)))
    attrs = {k: data.draw(v) for k, v in UNARY[op].items()}
    check_op(op, [x], attrs)


@pytest.mark.parametrize("op", ["Relu", "Neg", "Abs"])
@given(dtype=st.sampled_from([np.int8, np.int32]), shape=SHAPES, data=st.data())
def test_unary_integer(op, dtype, shape, data):
    check_op(op, [data.draw(array(dtype, shape, ints(dtype)))])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # -inf * 0 in Gelu, HardSwish
def test_unary_special_values():
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0, 100.0, -100.0, np.inf, -np.inf],
                 np.float32)
    for op in ("Sigmoid", "Tanh", "Erf", "Gelu", "Elu", "Selu", "Softplus", "Softsign",
               "HardSwish", "Relu"):
        check_op(op, [x])


def test_erf_is_accurate_and_vectorised():
    from qcompiler.ops.elementwise import _erf_erfc

    x = np.concatenate([np.linspace(-7, 7, 200_001), [0.46875, -0.46875, 4.0, -4.0, 30.0]])
    erf, erfc = _erf_erfc(x)
    assert np.max(np.abs(erf - [math.erf(v) for v in x])) < 1e-15
    ref = np.array([math.erfc(v) for v in x[:-1]])
    assert np.max(np.abs(erfc[:-1] - ref) / ref) < 1e-14  # relative, deep into the tail
    assert erfc[-1] == 0
    out = run_kernel("Erf", [np.array([np.nan, np.inf, -np.inf], np.float32)], {})[0]
    assert np.isnan(out[0]) and out[1] == 1 and out[2] == -1 and out.dtype == np.float32
    assert run_kernel("Erf", [x.astype(np.float16)], {})[0].dtype == np.float16


@given(shape=SHAPES, data=st.data())
def test_clip(shape, data):
    x = data.draw(array(np.float32, shape))
    lo, hi = (data.draw(st.none() | floats().map(np.float32)) for _ in range(2))
    bounds = [None if v is None else np.array(v, np.float32) for v in (lo, hi)]
    const = data.draw(st.booleans())
    check_op("Clip", [x, *bounds], constant_inputs=[1, 2] if const else [])


@given(dtype=st.sampled_from([np.int8, np.uint8, np.int32, np.int64]), shape=SHAPES,
       data=st.data())
def test_clip_integer(dtype, shape, data):
    # onnxruntime 1.31 mis-clips int64 data or bounds beyond the int32 range (a bound of 2**31
    # clamps every element to it; Clip(2**31, 0, 1) gives 0), so int64 draws stay within int32.
    elements = ints(np.int32) if dtype is np.int64 else ints(dtype)
    x = data.draw(array(dtype, shape, elements))
    lo, hi = (np.array(data.draw(elements), dtype) for _ in range(2))
    check_op("Clip", [x, lo, hi])


@st.composite
def prelu_operands(draw):
    x_shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    k = draw(st.integers(0, len(x_shape)))
    slope_shape = tuple(draw(st.sampled_from([1, d])) for d in x_shape[len(x_shape) - k:])
    return draw(array(np.float32, x_shape)), draw(array(np.float32, slope_shape))


@given(prelu_operands())
def test_prelu(operands):
    check_op("PRelu", list(operands))


def test_prelu_slope_broadcasts_one_way_only():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (3, 1)))
    slope = g.add_input("s", TensorType(DType.F32, (3, 4)))
    with pytest.raises(ShapeInferenceError, match="does not broadcast to X"):
        g.add_node("PRelu", [x, slope])
    x2 = g.add_input("x2", TensorType(DType.F32, (2, 3, 4)))
    assert g.add_node("PRelu", [x2, slope]).outputs[0].shape == (2, 3, 4)


@given(data=st.data())
def test_pow_float(data):
    x, y = data.draw(operands(2, np.float32))
    x = np.asarray(np.abs(x) + np.float32(0.5))  # positive base for fractional exponents
    y = np.asarray(np.clip(y, -4, 4), np.float32)
    check_op("Pow", [x, y])


@given(base=st.sampled_from([np.float32, np.int32, np.int64]),
       exponent=st.sampled_from([np.int32, np.int64]), data=st.data())
def test_pow_integer_exponent(base, exponent, data):
    """Integer exponents, negative bases; integer bases truncate (2 ** -1 == 0)."""
    x, y = data.draw(operands(2, base, ints(np.int8, -6, 6)))
    x = np.where(x == 0, base(1), x).astype(base)  # 0 ** -k is undefined for integers
    check_op("Pow", [x, y.astype(exponent)])


def test_pow_type_and_shape():
    x = np.array([[2.0], [3.0]], np.float32)
    y = np.array([1, 2, 3], np.int64)
    out = check_op("Pow", [x, y])[0]
    assert out.shape == (2, 3) and out.dtype == np.float32
    out = check_op("Pow", [np.array([2, 3, -2, 7], np.int32), np.array([-1, 2, 3, 0], np.int32)])
    assert out[0].tolist() == [0, 9, -8, 1]


@pytest.mark.parametrize("op", ["Sum", "Min", "Max"])
@given(n=st.integers(1, 4), dtype=st.sampled_from([np.float32, np.int32, np.int64, np.uint8]),
       data=st.data())
def test_variadic(op, n, dtype, data):
    assume(op != "Sum" or np.dtype(dtype).kind == "f")  # onnxruntime's Sum is float only
    xs = data.draw(operands(n, dtype))
    outs = check_op(op, xs)
    if n == 1:
        assert outs[0] is not xs[0]


def test_min_max_propagate_nan():
    a = np.array([np.nan, 1.0, 2.0], np.float32)
    b = np.array([1.0, np.nan, 3.0], np.float32)
    for op in ("Min", "Max"):
        out = check_op(op, [a, b])[0]
        assert np.isnan(out[:2]).all()


@given(dtype=st.sampled_from([np.float32, np.int64, np.uint8]), data=st.data())
def test_where(dtype, data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=4))
    c_shape, x_shape, y_shape = shapes.input_shapes
    cond = data.draw(hnp.arrays(np.bool_, c_shape))
    check_op("Where", [cond, data.draw(array(dtype, x_shape)), data.draw(array(dtype, y_shape))])


# -- inference: errors and known shape-tensor contents ------------------------------------------


def _graph_with(*types):
    g = Graph()
    return g, [g.add_input(f"x{i}", TensorType(*t)) for i, t in enumerate(types)]


def test_inference_errors_name_the_problem():
    g, (a, b) = _graph_with((DType.F32, (2, 3)), (DType.F32, (4,)))
    with pytest.raises(ShapeInferenceError, match="do not broadcast"):
        g.add_node("Add", [a, b], name="bad_add")
    g, (a, b) = _graph_with((DType.F32, (2, 3)), (DType.I32, (3,)))
    with pytest.raises(ShapeInferenceError, match="share one dtype"):
        g.add_node("Mul", [a, b])
    g, (a, b) = _graph_with((DType.F32, (2, 3)), (DType.F32, (2,)))
    with pytest.raises(ShapeInferenceError, match="min must be a scalar"):
        g.add_node("Clip", [a, b])
    g, (c, a, b) = _graph_with((DType.F32, (3,)), (DType.F32, (3,)), (DType.F32, (3,)))
    with pytest.raises(ShapeInferenceError, match="condition must be bool"):
        g.add_node("Where", [c, a, b])


def test_symbolic_shapes_broadcast():
    g, (a, b) = _graph_with((DType.F32, ("N", 1, 4)), (DType.F32, (3, 1)))
    assert g.add_node("Add", [a, b]).outputs[0].shape == ("N", 3, 4)
    g, (a, b, c) = _graph_with((DType.F32, ("N", 4)), (DType.F32, (4,)), (DType.F32, (1, 1)))
    assert g.add_node("Max", [a, b, c]).outputs[0].shape == ("N", 4)


def test_arithmetic_folds_shape_contents():
    g, (x,) = _graph_with((DType.F32, ("N", 6, 4)))
    shape = g.add_node("Shape", [x]).outputs[0]
    divisor = g.add_constant(np.array([1, -4, 3], np.int64))
    q = g.add_node("Div", [g.add_node("Mul", [shape, g.add_constant(np.array(2, np.int64))])
                          .outputs[0], divisor]).outputs[0]
    assert q.sym is None  # 2*N is not an int, so nothing folds
    known = g.add_node("Slice", [shape, *(g.add_constant(np.array([v], np.int64))
                                          for v in (1, 3))]).outputs[0]
    assert known.sym == (6, 4)
    q = g.add_node("Div", [known, g.add_constant(np.array([-4, 3], np.int64))]).outputs[0]
    assert q.sym == (-1, 1)  # truncation toward zero, not floor
    zero = g.add_node("Div", [known, g.add_constant(np.array([0, 1], np.int64))]).outputs[0]
    assert zero.sym is None  # division by zero is not folded
    scalar = g.add_input("s", TensorType(DType.F32, ()))
    empty = g.add_node("Shape", [scalar]).outputs[0]
    assert empty.sym == ()
    plus = g.add_node("Add", [empty, g.add_node("Shape", [x], {"end": 1}).outputs[0]])
    assert plus.outputs[0].shape == (0,) and plus.outputs[0].sym == ()  # () + ("N",) is ()
    plus = g.add_node("Add", [empty, g.add_constant(np.array([1], np.int64))]).outputs[0]
    assert plus.shape == (0,)


@pytest.mark.parametrize("fmod", [0, 1])
@given(dtype=st.sampled_from([np.int8, np.uint8, np.int32, np.int64]), data=st.data())
def test_mod_integer(fmod, dtype, data):
    """fmod=0 takes the divisor's sign, fmod=1 the dividend's; divisors are never 0."""
    a, b = data.draw(operands(2, dtype, ints(dtype)))
    b = np.where(b == 0, dtype(3), b).astype(dtype)
    if np.dtype(dtype).kind == "i":  # INT_MIN % -1 traps in C
        a = np.where(a == np.iinfo(dtype).min, dtype(0), a).astype(dtype)
    check_op("Mod", [a, b], {"fmod": fmod})


@given(dtype=st.sampled_from([np.float32, np.float16]), data=st.data())
def test_mod_float(dtype, data):
    a, b = data.draw(operands(2, dtype))
    b = np.where(np.abs(b) < 0.25, dtype(1.5), b).astype(dtype)
    check_op("Mod", [a, b], {"fmod": 1})


def test_mod_signs():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([3, 3, -3, -3], np.int32)
    np.testing.assert_array_equal(check_op("Mod", [a, b])[0], [1, 2, -2, -1])
    np.testing.assert_array_equal(check_op("Mod", [a, b], {"fmod": 1})[0], [1, -1, 1, -1])


def test_float_mod_needs_fmod():
    with pytest.raises(ShapeInferenceError, match="need fmod=1"):
        infer("Mod", [np.ones(2, np.float32)] * 2, {})


@given(x=hnp.arrays(np.float32, SHAPES, elements=floats(lo=-8, hi=8).filter(lambda v: v != 0)))
def test_reciprocal(x):
    check_op("Reciprocal", [x])
