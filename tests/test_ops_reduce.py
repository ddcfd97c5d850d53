"""ReduceSum, ReduceMean, ReduceMax against onnxruntime: axes, keepdims, noop_with_empty_axes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from op_check import check_op, run_kernel

from qcompiler.errors import ShapeInferenceError, UnsupportedModelError
from qcompiler.graph import Graph
from qcompiler.ops._schema import UNKNOWN
from qcompiler.types import DType, TensorType

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax"]
# onnxruntime has no int8/uint8 ReduceSum or ReduceMean
DTYPES = {"ReduceSum": [np.float32, np.int32, np.int64],
          "ReduceMean": [np.float32, np.int32, np.int64],
          "ReduceMax": [np.float32, np.int8, np.uint8, np.int32, np.int64]}


def elements(dtype):
    if np.dtype(dtype).kind == "f":
        # multiples of 1/8: float32 sums of a few dozen of them are exact in any order, so the
        # comparison does not depend on onnxruntime's summation order
        return st.integers(-128, 128).map(lambda k: k / 8)
    info = np.iinfo(dtype)
    return st.integers(max(int(info.min), -1000), min(int(info.max), 1000))


@st.composite
def reduce_case(draw, op):
    dtype = draw(st.sampled_from(DTYPES[op]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    x = draw(hnp.arrays(dtype, shape, elements=elements(dtype)))
    attrs = {"keepdims": draw(st.integers(0, 1))}
    if draw(st.booleans()):
        attrs["noop_with_empty_axes"] = draw(st.integers(0, 1))
    kind = draw(st.sampled_from(["absent", "empty", "some"] if shape else ["absent", "empty"]))
    if kind == "absent":
        return op, [x], attrs
    axes = []
    if kind == "some":
        axes = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                             max_size=len(shape) + 1))
    return op, [x, np.array(axes, np.int64)], attrs


@pytest.mark.parametrize("op_type", REDUCE_OPS)
@given(data=st.data())
def test_reduce(op_type, data):
    op, inputs, attrs = data.draw(reduce_case(op_type))
    check_op(op, inputs, attrs, constant_inputs=[1])


def test_integer_mean_truncates_toward_zero():
    x = np.array([[3, 4], [-3, -4], [5, 6], [-5, -6], [1, 0], [-1, 0]], np.int32)
    out = check_op("ReduceMean", [x, np.array([1], np.int64)], {"keepdims": 0},
                   constant_inputs=[1])[0]
    assert out.tolist() == [3, -3, 5, -5, 0, 0]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_empty_reductions(op, dtype):
    """Max gives the lowest value (-inf), Sum 0, Mean 0 (as onnxruntime does)."""
    x = np.zeros((0, 3), dtype)
    check_op(op, [x, np.array([0], np.int64)], {"keepdims": 0}, constant_inputs=[1])
    check_op(op, [x, np.array([1], np.int64)], {"keepdims": 1}, constant_inputs=[1])


def test_float32_sums_are_accurate():
    """The reference accumulates in float64 and rounds once (onnxruntime's float32 running sum
    is off by 1e-5 relative here, so this is not compared with it)."""
    x = np.full(10_001, 0.1, np.float32)
    for op, n in (("ReduceSum", 10_001), ("ReduceMean", 1)):
        out = run_kernel(op, [x], {"keepdims": 0})[0]
        assert out.dtype == np.float32
        assert out == np.float32(n * np.float64(np.float32(0.1)))


def test_inference():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 3, 4)))
    axes = g.add_input("axes", TensorType(DType.I64, (1,)))

    def shape(op, inputs, **attrs):
        return g.add_node(op, inputs, attrs).outputs[0].shape

    assert shape("ReduceMean", [x, g.add_constant(np.array([-1, 1], np.int64))]) == ("N", 1, 1)
    assert shape("ReduceSum", [x, g.add_constant(np.array([0], np.int64))], keepdims=0) == (3, 4)
    assert shape("ReduceMax", [x], keepdims=0) == ()
    empty = g.add_constant(np.zeros(0, np.int64))
    assert shape("ReduceMax", [x, empty], noop_with_empty_axes=1) == ("N", 3, 4)
    assert shape("ReduceMax", [x, empty]) == (1, 1, 1)
    assert shape("ReduceSum", [x, axes]) == (UNKNOWN,) * 3
    with pytest.raises(UnsupportedModelError, match="axes must be known"):
        g.add_node("ReduceSum", [x, axes], {"keepdims": 0})
    with pytest.raises(ShapeInferenceError, match="axis 3 is out of range"):
        g.add_node("ReduceMean", [x, g.add_constant(np.array([3], np.int64))])
    with pytest.raises(ShapeInferenceError, match="out of range for rank 0"):
        s = g.add_input("s", TensorType(DType.F32, ()))
        g.add_node("ReduceMean", [s, g.add_constant(np.array([0], np.int64))])
    with pytest.raises(ShapeInferenceError, match="no attribute"):
        g.add_node("ReduceMean", [x], {"axes": (0,)})  # the pre-opset-18 form is the importer's


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@given(dtype=st.sampled_from([np.float32, np.int8, np.uint8, np.int32, np.int64]),
       keepdims=st.integers(0, 1), last=st.integers(0, 1), data=st.data())
def test_arg_reduce(op, dtype, keepdims, last, data):
    """Few distinct values, so ties are common and select_last_index matters."""
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    x = data.draw(hnp.arrays(dtype, shape, elements=st.sampled_from([0, 1, 2])))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    check_op(op, [x], {"axis": axis, "keepdims": keepdims, "select_last_index": last})


def test_arg_reduce_ties_pick_first_or_last():
    x = np.array([[1, 3, 3, 0], [2, 2, 1, 1]], np.float32)
    np.testing.assert_array_equal(check_op("ArgMax", [x], {"axis": 1})[0], [[1], [0]])
    np.testing.assert_array_equal(
        check_op("ArgMax", [x], {"axis": 1, "select_last_index": 1, "keepdims": 0})[0], [2, 1])
    np.testing.assert_array_equal(
        check_op("ArgMin", [x], {"axis": 1, "select_last_index": 1, "keepdims": 0})[0], [3, 3])
