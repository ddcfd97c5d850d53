"""QuantizeLinear and DequantizeLinear against onnxruntime: ties, saturation, per-axis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from op_check import check_op, refuse, run_kernel

from qcompiler.errors import ShapeInferenceError, UnsupportedModelError
from qcompiler.graph import Graph
from qcompiler.types import DType, TensorType

QTYPES = [np.int8, np.uint8]
SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)


@st.composite
def scales(draw, n):
    """``n`` positive float32 scales: powers of two (exact ties) or arbitrary."""
    exact = st.integers(-8, 4).map(lambda e: 2.0**e)
    loose = st.floats(2.0**-10, 10.0, width=32)
    return np.array(draw(st.lists(exact | loose, min_size=n, max_size=n)), np.float32)


@st.composite
def quant_params(draw, x_shape, dtype):
    """(scale, zero point, attrs): per tensor (0-D or [1]) or along a drawn axis."""
    info = np.iinfo(dtype)
    per_axis = draw(st.booleans())
    attrs = {}
    if per_axis:
        axis = draw(st.integers(-len(x_shape), len(x_shape) - 1))
        attrs["axis"] = axis
        n = x_shape[axis]
        shape = (n,)
    else:
        n = 1
        shape = draw(st.sampled_from([(), (1,)]))
        if draw(st.booleans()):
            attrs["axis"] = draw(st.integers(-len(x_shape), len(x_shape) - 1))  # ignored
    scale = draw(scales(n)).reshape(shape)
    zero = np.array(draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=n,
                                  max_size=n)), dtype).reshape(shape)
    return scale, zero, attrs


@st.composite
def quantize_case(draw):
    dtype = draw(st.sampled_from(QTYPES))
    x_shape = draw(SHAPES)
    scale, zero, attrs = draw(quant_params(x_shape, dtype))
    axis = attrs.get("axis", 1) % len(x_shape)
    per = scale.reshape([-1 if a == axis and scale.size > 1 else 1 for a in range(len(x_shape))])
    # x = scale * (k + f): f = 0.5 gives exact ties when the scale is a power of two; k runs
    # past both ends of the integer range so that saturation is exercised
    k = draw(hnp.arrays(np.int64, x_shape, elements=st.integers(-300, 300)))
    f = draw(hnp.arrays(np.float64, x_shape, elements=st.sampled_from([0.0, 0.5, -0.5, 0.25])
                        | st.floats(-1, 1)))
    x = ((k + f) * per.astype(np.float64)).astype(np.float32)
    return x, scale, zero, attrs


@given(quantize_case(), st.booleans())
def test_quantize(case, const_params):
    x, scale, zero, attrs = case
    check_op("QuantizeLinear", [x, scale, zero], attrs,
             constant_inputs=[1, 2] if const_params else [])


@given(quantize_case())
def test_quantize_default_zero_point_is_uint8(case):
    x, scale, _, attrs = case
    out = check_op("QuantizeLinear", [x, scale], attrs, constant_inputs=[1])[0]
    assert out.dtype == np.uint8


@pytest.mark.parametrize("code,dtype", [(2, np.uint8), (3, np.int8)])
def test_quantize_output_dtype_attribute(code, dtype):
    x = np.array([-300.0, -1.5, -0.5, 0.5, 1.5, 2.5, 300.0], np.float32)
    out = check_op("QuantizeLinear", [x, np.array(1.0, np.float32)], {"output_dtype": code})[0]
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", QTYPES)
def test_quantize_ties_round_half_to_even_and_saturate(dtype):
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 1e6, -1e6, np.inf, -np.inf], np.float32)
    zero = np.array(10 if dtype is np.uint8 else 0, dtype)
    out = check_op("QuantizeLinear", [x, np.array(1.0, np.float32), zero])[0]
    z = int(zero)
    info = np.iinfo(dtype)
    expect = [z + v for v in (0, 2, 2, 0, -2, -2)] + [info.max, info.min, info.max, info.min]
    assert out.tolist() == expect
    nan = check_op("QuantizeLinear", [np.array([np.nan], np.float32), np.array(1.0, np.float32),
                                      zero])[0]
    assert nan.tolist() == [info.min]  # as onnxruntime does


def test_quantize_int32_through_the_zero_point():
    """onnxruntime has no int32 QuantizeLinear; check the kernel against exact arithmetic."""
    x = np.array([0.5, 1.5, -2.5, 3e9, -3e9, 123456.75], np.float32)
    zero = np.array(7, np.int32)
    out = run_kernel("QuantizeLinear", [x, np.array(0.5, np.float32), zero], {})[0]
    assert out.dtype == np.int32
    assert out.tolist() == [8, 10, 2, 2**31 - 1, -(2**31), 246921]
    g = Graph()
    v = g.add_input("x", TensorType(DType.F32, (6,)))
    node = g.add_node("QuantizeLinear", [v, g.add_constant(np.float32(0.5)), g.add_constant(zero)])
    assert node.outputs[0].dtype == DType.I32


@st.composite
def dequantize_case(draw):
    dtype = draw(st.sampled_from([np.int8, np.uint8, np.int32]))
    x_shape = draw(SHAPES)
    info = np.iinfo(dtype)
    x = draw(hnp.arrays(dtype, x_shape, elements=st.integers(int(info.min), int(info.max))))
    scale, zero, attrs = draw(quant_params(x_shape, dtype))
    if dtype is np.int32:
        zero = np.zeros_like(zero)  # ONNX: an int32 zero point must be 0
    with_zero = draw(st.booleans())
    return [x, scale, zero] if with_zero else [x, scale], attrs


@given(dequantize_case(), st.booleans())
def test_dequantize(case, const_params):
    inputs, attrs = case
    check_op("DequantizeLinear", inputs, attrs, rtol=0, atol=0,
             constant_inputs=[1, 2] if const_params else [])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_dequantize_extremes_per_axis(dtype, axis):
    info = np.iinfo(dtype)
    x = np.array([[info.min, info.max, 0], [info.max, info.min, 1]], dtype)
    n = x.shape[axis]
    scale = np.array([0.5, 3.0, 1e-3][:n], np.float32)
    zero = np.array([info.min, info.max, 7][:n], dtype)
    out = check_op("DequantizeLinear", [x, scale, zero], {"axis": axis}, rtol=0, atol=0)[0]
    shape = [1, 1]
    shape[axis] = n
    expect = (x.astype(np.int64) - zero.reshape(shape)).astype(np.float32) * scale.reshape(shape)
    np.testing.assert_array_equal(out, expect)


def test_quantize_dequantize_round_trip_is_exact_on_the_grid():
    q = np.arange(-128, 128, dtype=np.int8).reshape(2, 128)
    scale = np.array([0.1, 0.37], np.float32)
    zero = np.array([-3, 5], np.int8)
    x = check_op("DequantizeLinear", [q, scale, zero], {"axis": 0})[0]
    back = check_op("QuantizeLinear", [x, scale, zero], {"axis": 0})[0]
    expect = np.clip(q.astype(np.int32), -128, 127)
    np.testing.assert_array_equal(back[back != -128], expect[back != -128])


def _errors():
    f32, u8 = DType.F32, DType.U8
    return [
        ("QuantizeLinear", [(f32, (2, 3)), np.float32([1, 2])], {}, "2 scales for axis 1"),
        ("QuantizeLinear", [(f32, (3,)), np.float32(1), np.uint8(0)], {"output_dtype": 3},
         "output_dtype=3"),
        ("QuantizeLinear", [(u8, (3,)), np.float32(1)], {}, "x must be one of"),
        ("QuantizeLinear", [(f32, (3,)), np.float32([1, 1, 1]), np.uint8(0)], {"axis": 0},
         "zero point shape"),
        ("DequantizeLinear", [(u8, (2, 3)), np.float32(1), np.int8(0)], {}, "zero point is i8"),
        ("DequantizeLinear", [(f32, (2, 3)), np.float32(1)], {}, "x must be one of"),
        ("DequantizeLinear", [(u8, (2, 3)), np.float32([1, 2, 3])], {"axis": 2}, "out of range"),
        ("DequantizeLinear", [(u8, ()), np.float32([1, 2])], {"axis": 0}, "rank 0"),
    ]


def _unsupported():
    f32, u8 = DType.F32, DType.U8
    return [
        ("QuantizeLinear", [(f32, (2, 3)), np.float32(1)], {"block_size": 2}, "block_size=2"),
        ("QuantizeLinear", [(f32, (2, 4)), np.ones((2, 2), np.float32)], {}, "blocked"),
        ("QuantizeLinear", [(f32, (3,)), np.float32(1)], {"output_dtype": 7},
         "cannot quantize to i64"),
        ("DequantizeLinear", [(u8, (2, 3)), np.float32(1)], {"block_size": 1}, "not supported"),
    ]


@pytest.mark.parametrize(("op_type", "inputs", "attrs", "message"), _errors(),
                         ids=[f"{e[0]}-{e[3]}" for e in _errors()])
def test_inference_errors(op_type, inputs, attrs, message):
    refuse(op_type, inputs, attrs, ShapeInferenceError, message)


@pytest.mark.parametrize(("op_type", "inputs", "attrs", "message"), _unsupported(),
                         ids=[f"{e[0]}-{e[3]}" for e in _unsupported()])
def test_unsupported_features_are_named(op_type, inputs, attrs, message):
    refuse(op_type, inputs, attrs, UnsupportedModelError, message)


# -- Requantize: QuantizeLinear(DequantizeLinear(x)) as one integer op --------------------------

# (x scale, x zero point, y scale, y zero point) per tensor: equal parameters, ratios of two
# (ties on every odd input), a ratio of a half, large ratios (saturation at both ends), and
# arbitrary float32 scales.
REQUANT_PARAMS = [
    (0.5, 0, 0.5, 0), (0.5, 0, 1.0, 0), (0.25, -3, 0.125, 7), (1.0, 10, 2.0, -10),
    (0.0625, 0, 4.0, 0), (3.0, 5, 0.01, -128), (0.1, -128, 0.37, 127), (1e-3, 17, 0.7, 3),
    (0.0372, 1, 0.0372, 2), (7.0, 0, 0.013, 0),
]


def _requant_case(x_dtype, y_dtype, xs, xz, ys, yz):
    """Every x of x_dtype, with its parameters shifted into the zero-point range of each type."""
    xi, yi = np.iinfo(x_dtype), np.iinfo(y_dtype)
    shift_x = 128 if x_dtype is np.uint8 else 0
    shift_y = 128 if y_dtype is np.uint8 else 0
    x = np.arange(xi.min, xi.max + 1).astype(x_dtype)
    return [x, np.array(xs, np.float32), np.array(np.clip(xz + shift_x, xi.min, xi.max), x_dtype),
            np.array(ys, np.float32), np.array(np.clip(yz + shift_y, yi.min, yi.max), y_dtype)]


def _composition(inputs, attrs):
    """The DQ -> Q pair the op stands for, run as a graph by the Interpreter."""
    from qcompiler import Interpreter

    g = Graph("dq_q")
    x = g.add_input("x", TensorType(DType.from_numpy(inputs[0].dtype), inputs[0].shape))
    c = [g.add_constant(a, f"c{k}") for k, a in enumerate(inputs[1:])]
    real = g.add_node("DequantizeLinear", [x, c[0], c[1]], attrs).outputs[0]
    q = g.add_node("QuantizeLinear", [real, c[2], c[3]], attrs).outputs[0]
    g.set_outputs([q])
    return Interpreter(g).run({"x": inputs[0]})[q.name]


@pytest.mark.parametrize("x_dtype", QTYPES)
@pytest.mark.parametrize("y_dtype", QTYPES)
@pytest.mark.parametrize("params", REQUANT_PARAMS, ids=str)
def test_requantize_every_input_equals_the_composition(x_dtype, y_dtype, params):
    inputs = _requant_case(x_dtype, y_dtype, *params)
    out = check_op("Requantize", inputs, {})[0]  # onnxruntime runs DequantizeLinear -> Q
    assert out.dtype == y_dtype
    np.testing.assert_array_equal(out, _composition(inputs, {}))


@pytest.mark.parametrize("x_dtype", QTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_requantize_per_axis_every_input(x_dtype, axis):
    """Per-axis input parameters, per-axis output parameters, and both, along one axis."""
    info = np.iinfo(x_dtype)
    x = np.arange(info.min, info.max + 1).astype(x_dtype).reshape(4, 64)
    x = np.stack([x, x[::-1]], axis=2).reshape(4, 8, 8, 2)
    n = x.shape[axis]
    rng = np.random.default_rng(n)
    x_scale = rng.uniform(0.01, 1.0, n).astype(np.float32)
    y_scale = np.float32(2.0) ** rng.integers(-6, 3, n).astype(np.float32)
    x_zero = rng.integers(info.min, info.max, n, endpoint=True).astype(x_dtype)
    y_zero = rng.integers(-128, 127, n, endpoint=True).astype(np.int8)
    for inputs in ([x, x_scale, x_zero, np.array(0.1, np.float32), np.array(-3, np.int8)],
                   [x, np.array(0.3, np.float32), x_zero[:1].reshape(()), y_scale, y_zero],
                   [x, x_scale, x_zero, y_scale, y_zero]):
        out = check_op("Requantize", inputs, {"axis": axis})[0]
        np.testing.assert_array_equal(out, _composition(inputs, {"axis": axis}))


def test_requantize_text_form_round_trip():
    import qcompiler as qc

    g = Graph("rq")
    x = g.add_input("x", TensorType(DType.I8, ("N", 3)))
    node = g.add_node("Requantize", [x, g.add_constant(np.float32(0.5)),
                                     g.add_constant(np.int8(1)),
                                     g.add_constant(np.float32([1, 2, 3])),
                                     g.add_constant(np.uint8([0, 1, 2]))], {"axis": 1})
    g.set_outputs(node.outputs)
    assert node.outputs[0].type == TensorType(DType.U8, ("N", 3))
    text = g.to_text(inline_constants=True)
    assert 'Requantize(' in text
    assert qc.parse(text) == g


def _requantize_errors():
    i8, f32 = DType.I8, DType.F32
    return [
        ([(f32, (3,)), np.float32(1), np.int8(0), np.float32(1), np.int8(0)], {},
         ShapeInferenceError, "x must be one of"),
        ([(i8, (3,)), np.float32(1), np.uint8(0), np.float32(1), np.int8(0)], {},
         ShapeInferenceError, "x_zero_point is u8 but x is i8"),
        ([(i8, (3,)), np.float16(1), np.int8(0), np.float32(1), np.int8(0)], {},
         ShapeInferenceError, "computes in float32"),
        ([(i8, (2, 3)), np.float32(1), np.int8(0), np.float32([1, 2]), np.int8([0, 0])], {},
         ShapeInferenceError, "2 scales for axis 1"),
        ([(i8, (3,)), np.float32(1), np.int8(0), np.float32(1), np.int8(0)],
         {"rounding": "nearest_up"}, UnsupportedModelError, "rounding='nearest_up'"),
    ]


@pytest.mark.parametrize(("inputs", "attrs", "error", "message"), _requantize_errors(),
                         ids=[e[3] for e in _requantize_errors()])
def test_requantize_inference_errors(inputs, attrs, error, message):
    refuse("Requantize", inputs, attrs, error, message)
