"""Comparisons, boolean logic, IsNaN and IsInf against onnxruntime, compared exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from op_check import check_op, refuse

from qcompiler.errors import ShapeInferenceError
from qcompiler.types import DType

COMPARISONS = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]
DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.int32, np.int64]


@st.composite
def pair(draw, dtype):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4))
    if np.dtype(dtype).kind == "f":
        # few distinct values so that equal elements are common
        elements = st.sampled_from([-1.5, -0.0, 0.0, 0.5, 2.0, np.inf, -np.inf, np.nan])
    elif np.dtype(dtype).kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.sampled_from([int(info.min), -1 if info.min else 0, 0, 1, int(info.max)])
    return [draw(hnp.arrays(dtype, s, elements=elements)) for s in shapes.input_shapes]


@pytest.mark.parametrize("op", COMPARISONS)
@given(dtype=st.sampled_from(DTYPES), data=st.data())
def test_comparisons(op, dtype, data):
    check_op(op, data.draw(pair(dtype)))


def test_equal_on_bool():
    check_op("Equal", [np.array([True, False, True]), np.array([True, True, False])])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@given(data=st.data())
def test_binary_logic(op, data):
    check_op(op, data.draw(pair(np.bool_)))


@given(x=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)))
def test_not(x):
    check_op("Not", [x])


SPECIAL = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 65504.0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_is_nan_and_is_inf(dtype):
    x = SPECIAL.astype(dtype)
    check_op("IsNaN", [x])
    for neg in (0, 1):
        for pos in (0, 1):
            check_op("IsInf", [x], {"detect_negative": neg, "detect_positive": pos})


@pytest.mark.parametrize(("op", "operands", "message"), [
    ("Less", [(DType.F32, (2,)), (DType.I32, (2,))], "share one dtype"),
    ("And", [(DType.BOOL, (2,)), (DType.I8, (2,))], "operand 1 must be bool"),
    ("Not", [(DType.F32, (2,))], "must be bool"),
    ("IsNaN", [(DType.I32, (2,))], "must be a float tensor"),
    ("Equal", [(DType.F32, (2,)), (DType.F32, (3,))], "do not broadcast"),
])
def test_inference_errors(op, operands, message):
    refuse(op, operands, {}, ShapeInferenceError, message)
