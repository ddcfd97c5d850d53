"""The ops that move integer tensors without rescaling them (MaxPool, GlobalMaxPool, Reshape,
Flatten, Transpose, Squeeze, Unsqueeze, Slice, Concat, Split, Pad with the zero point as its
constant, Resize in nearest mode) accept int8 and uint8 and give exactly what the peer gives on
the same codes: onnxruntime, or onnx.reference for GlobalMaxPool (ONNX allows it on floats only,
so onnxruntime refuses it on integers). Inferred dtypes and shapes are checked too
(``op_check``)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator
from op_check import assert_outputs_equal, check_op, infer, run_kernel
from ort_helpers import node_model

I64 = np.int64
DTYPES = [np.int8, np.uint8]


def codes(dtype, shape, seed=0) -> np.ndarray:
    """Codes over the whole range of ``dtype``, both limits included."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True)
    flat = x.reshape(-1)
    flat[:2] = info.min, info.max
    return x.astype(dtype)


def zero_point(dtype) -> np.ndarray:
    return np.array(-3 if dtype is np.int8 else 131, dtype)


# op -> (inputs from a dtype, attrs, constant input indices, number of outputs)
CASES = {
    "MaxPool": (lambda t: [codes(t, (2, 3, 7, 6))],
                {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1],
                 "ceil_mode": 1}, (), 1),
    "MaxPool-dilated": (lambda t: [codes(t, (1, 2, 9))],
                        {"kernel_shape": [3], "dilations": [2], "pads": [2, 1]},
                        (), 1),
    "Reshape": (lambda t: [codes(t, (2, 3, 4)), np.array([4, -1, 3], I64)], {}, (1,), 1),
    "Flatten": (lambda t: [codes(t, (2, 3, 4, 5))], {"axis": 2}, (), 1),
    "Transpose": (lambda t: [codes(t, (2, 3, 4))], {"perm": [2, 0, 1]}, (), 1),
    "Squeeze": (lambda t: [codes(t, (1, 3, 1, 4)), np.array([0, 2], I64)], {}, (1,), 1),
    "Unsqueeze": (lambda t: [codes(t, (3, 4)), np.array([0, 3], I64)], {}, (1,), 1),
    "Slice": (lambda t: [codes(t, (5, 6, 7)), np.array([1, -1], I64), np.array([4, -7], I64),
                         np.array([0, 2], I64), np.array([2, -2], I64)], {}, (1, 2, 3, 4), 1),
    "Concat": (lambda t: [codes(t, (2, 3, 4), 1), codes(t, (2, 1, 4), 2),
                          codes(t, (2, 2, 4), 3)], {"axis": 1}, (), 1),
    "Split": (lambda t: [codes(t, (6, 5)), np.array([2, 3], I64)], {"axis": 1}, (1,), 2),
    "Pad": (lambda t: [codes(t, (2, 3, 4)), np.array([0, 1, 2, 0, 2, 1], I64), zero_point(t)],
            {"mode": "constant"}, (1, 2), 1),
    "Pad-edge": (lambda t: [codes(t, (3, 4)), np.array([1, 2, 2, 1], I64)], {"mode": "edge"},
                 (1,), 1),
    "Resize-scales": (lambda t: [codes(t, (1, 2, 3, 4)), None,
                                 np.array([1, 1, 2, 1.5], np.float32)],
                      {"mode": "nearest"}, (2,), 1),
    "Resize-sizes": (lambda t: [codes(t, (1, 2, 5, 4)), None, None,
                                np.array([1, 2, 3, 7], I64)],
                     {"mode": "nearest", "nearest_mode": "floor",
                      "coordinate_transformation_mode": "asymmetric"}, (3,), 1),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_onnxruntime_exactly_on_integer_codes(case, dtype):
    make, attrs, constants, n_outputs = CASES[case]
    outs = check_op(case.split("-")[0], make(dtype), attrs, n_outputs=n_outputs,
                    constant_inputs=constants)
    assert all(o.dtype == dtype for o in outs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_global_max_pool_matches_onnx_reference(dtype):
    """ONNX's GlobalMaxPool schema allows float types only and onnxruntime refuses an int8/uint8
    one as an invalid model, so the peer here is onnx.reference (MaxPool, which ONNX allows on
    int8/uint8, gives the same)."""
    x = codes(dtype, (2, 3, 5, 4))
    model = node_model("GlobalMaxPool", [x])
    with pytest.raises(Exception, match="Type 'tensor\\(u?int8\\)' of input parameter"):
        check_op("GlobalMaxPool", [x])
    (want,) = ReferenceEvaluator(model).run(None, {"in0": x})
    (got,) = run_kernel("GlobalMaxPool", [x], {})
    (inferred,) = infer("GlobalMaxPool", [x], {})
    assert got.dtype == want.dtype == dtype and inferred.shape == got.shape == want.shape
    assert_outputs_equal("GlobalMaxPool", {}, got, want, 0, 0, "GlobalMaxPool")
    (as_max_pool,) = check_op("MaxPool", [x], {"kernel_shape": [5, 4]})
    np.testing.assert_array_equal(got, as_max_pool)


def test_pad_constant_is_the_zero_point_not_zero():
    """A uint8 tensor padded with its zero point 131: the pads read 131, i.e. real 0."""
    x = codes(np.uint8, (1, 3))
    (y,) = run_kernel("Pad", [x, np.array([0, 2, 0, 1], I64), zero_point(np.uint8)],
                      {"mode": "constant"})
    assert y[0, :2].tolist() == [131, 131] and y[0, -1] == 131


def test_onnx_reference_agrees_with_onnxruntime_on_the_cases():
    """The two peers agree on every case above, so either would do as the oracle."""
    for case, (make, attrs, constants, n_outputs) in sorted(CASES.items()):
        for dtype in DTYPES:
            inputs = make(dtype)
            op_type = case.split("-")[0]
            model = node_model(op_type, inputs, attrs, n_outputs, constant_inputs=constants)
            feeds = {f"in{i}": a for i, a in enumerate(inputs)
                     if a is not None and i not in constants}
            got = ReferenceEvaluator(model).run(None, feeds)
            want = run_kernel(op_type, inputs, attrs, n_outputs)
            for g, w in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w, err_msg=f"{case} {dtype.__name__}")

