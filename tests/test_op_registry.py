"""The op registry: every op the foundation promises is there, and every registered op is
checked against onnxruntime here at least once (the family test files go deeper)."""

import re

import numpy as np
import op_check
import pytest
from onnx import helper
from op_check import EXACT_OPS, check_op, is_exact, refuse

import qcompiler as qc
from qcompiler import ops
from qcompiler.types import DType

REQUIRED = """
Conv ConvTranspose BatchNormalization Gemm MatMul Add Sub Mul Div Relu Clip LeakyRelu Sigmoid
HardSigmoid HardSwish Tanh Softmax MaxPool AveragePool GlobalAveragePool Flatten Reshape
Transpose Concat Split Squeeze Unsqueeze Pad Identity Dropout Sum ReduceMean Resize Shape Gather
Slice Cast ConstantOfShape Constant QuantizeLinear DequantizeLinear LRN PRelu Elu Exp Log Sqrt
Pow Neg Abs Min Max ReduceSum ReduceMax LogSoftmax InstanceNormalization LayerNormalization Erf
Gelu Tile Expand Where
""".split()

rng = np.random.default_rng(0)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def pos(*shape):
    return rng.uniform(0.5, 2.0, shape).astype(np.float32)


def i64(*values):
    return np.array(values, np.int64)


def i32(*shape):
    return rng.integers(-5, 5, shape).astype(np.int32)


def bools(*shape):
    return rng.integers(0, 2, shape).astype(np.bool_)


X = f32(2, 3, 6, 6)
C3 = pos(3)
# op -> (inputs, attrs, indices of inputs that are constants)
EXAMPLES = {
    "Abs": ([f32(4)], {}, ()),
    "Add": ([f32(2, 3), f32(3)], {}, ()),
    "And": ([bools(2, 3), bools(3)], {}, ()),
    "ArgMax": ([f32(3, 4, 5)], {"axis": 1, "keepdims": 0}, ()),
    "ArgMin": ([i32(3, 4)], {"axis": -1, "select_last_index": 1}, ()),
    "AveragePool": ([X], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, ()),
    "BatchNormalization": ([X, C3, f32(3), f32(3), C3], {}, ()),
    "Cast": ([f32(5)], {"to": 7}, ()),
    "CastLike": ([f32(5) * 9, np.zeros(0, np.int8)], {}, ()),
    "Clip": ([f32(6), np.float32(-0.5), np.float32(0.5)], {}, (1, 2)),
    "Concat": ([f32(2, 3), f32(2, 1)], {"axis": 1}, ()),
    "Constant": ([], {"value": helper.make_tensor("v", 1, [2], [1.5, -2.0])}, ()),
    "ConstantOfShape": ([i64(2, 3)], {"value": helper.make_tensor("v", 1, [1], [0.25])}, (0,)),
    "Conv": ([X, f32(4, 3, 3, 3), f32(4)], {"pads": [1, 1, 1, 1]}, ()),
    "ConvTranspose": ([X, f32(3, 2, 3, 3)], {"strides": [2, 2]}, ()),
    "DequantizeLinear": ([np.arange(-4, 4, dtype=np.int8), np.float32(0.5), np.int8(1)], {}, ()),
    "Div": ([f32(3), pos(3)], {}, ()),
    "Dropout": ([f32(4)], {}, ()),
    "DynamicQuantizeLinear": ([f32(8) * 3], {}, ()),
    "Einsum": ([f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}, ()),
    "Elu": ([f32(5)], {"alpha": 0.5}, ()),
    "Equal": ([i32(2, 3), i32(3)], {}, ()),
    "Erf": ([f32(5)], {}, ()),
    "Exp": ([f32(5)], {}, ()),
    "Expand": ([f32(3, 1), i64(2, 3, 4)], {}, (1,)),
    "Flatten": ([X], {"axis": 2}, ()),
    "Gather": ([f32(4, 3), i64(3, 0, -1)], {"axis": 0}, (1,)),
    "Gelu": ([f32(5)], {}, ()),
    "Gemm": ([f32(2, 3), f32(4, 3), f32(4)], {"transB": 1, "alpha": 0.5}, ()),
    "GlobalAveragePool": ([X], {}, ()),
    "GlobalMaxPool": ([X], {}, ()),
    "GridSample": ([X, rng.uniform(-1.2, 1.2, (2, 4, 5, 2)).astype(np.float32)],
                   {"padding_mode": "border"}, ()),
    "Greater": ([f32(2, 3), f32(2, 1)], {}, ()),
    "GreaterOrEqual": ([i32(4), i32(4)], {}, ()),
    "HardSigmoid": ([f32(5)], {}, ()),
    "HardSwish": ([f32(5) * 4], {}, ()),
    "Identity": ([f32(3)], {}, ()),
    "InstanceNormalization": ([X, C3, f32(3)], {}, ()),
    "IsInf": ([np.array([1, np.inf, -np.inf, np.nan], np.float32)], {"detect_negative": 0}, ()),
    "IsNaN": ([np.array([1, np.inf, np.nan], np.float32)], {}, ()),
    "LRN": ([X], {"size": 3}, ()),
    "LayerNormalization": ([f32(2, 5), pos(5), f32(5)], {}, ()),
    "LeakyRelu": ([f32(5)], {"alpha": 0.1}, ()),
    "Less": ([f32(4), f32(1)], {}, ()),
    "LessOrEqual": ([i32(3, 2), i32(3, 1)], {}, ()),
    "Log": ([pos(5)], {}, ()),
    "LogSoftmax": ([f32(2, 5)], {}, ()),
    "MatMul": ([f32(2, 3, 4), f32(4, 5)], {}, ()),
    "Max": ([f32(3), f32(2, 3)], {}, ()),
    "MaxPool": ([X], {"kernel_shape": [2, 2], "strides": [2, 2]}, ()),
    "Min": ([f32(3), f32(2, 3)], {}, ()),
    "Mod": ([i32(3, 4), np.array([3, -2, 5, 7], np.int32)], {}, ()),
    "Mul": ([f32(2, 3), f32(3)], {}, ()),
    "Neg": ([f32(4)], {}, ()),
    "Not": ([bools(4)], {}, ()),
    "Or": ([bools(4), bools(4)], {}, ()),
    "PRelu": ([X, f32(3, 1, 1)], {}, ()),
    "Pad": ([f32(2, 3), i64(0, 1, 1, 2)], {}, (1,)),
    "Pow": ([pos(4), f32(4)], {}, ()),
    "QuantizeLinear": ([f32(8) * 3, np.float32(0.1), np.uint8(128)], {}, ()),
    "Range": ([np.array(1, np.int64), np.array(9, np.int64), np.array(3, np.int64)], {}, (0, 1, 2)),
    "Reciprocal": ([pos(5)], {}, ()),
    "ReduceMax": ([f32(2, 3, 4), i64(1)], {}, (1,)),
    "ReduceMean": ([f32(2, 3, 4), i64(0, 2)], {"keepdims": 0}, (1,)),
    "ReduceSum": ([f32(2, 3, 4), i64(-1)], {}, (1,)),
    "Relu": ([f32(5)], {}, ()),
    "Requantize": ([np.arange(-128, 128, dtype=np.int8), np.float32(0.05), np.int8(3),
                    np.float32(0.125), np.uint8(120)], {}, ()),
    "Reshape": ([X, i64(0, -1)], {}, (1,)),
    "Resize": ([X, None, np.array([1, 1, 2, 1.5], np.float32)], {"mode": "linear"}, (2,)),
    "Selu": ([f32(5)], {}, ()),
    "Shape": ([X], {"start": 1}, ()),
    "Sigmoid": ([f32(5)], {}, ()),
    "Size": ([X], {}, ()),
    "Slice": ([f32(5, 4), i64(1), i64(4), i64(0), i64(2)], {}, (1, 2, 3, 4)),
    "Softmax": ([f32(2, 5)], {"axis": 0}, ()),
    "Softplus": ([f32(5)], {}, ()),
    "Softsign": ([f32(5)], {}, ()),
    "Split": ([f32(6, 2), i64(2, 4)], {"axis": 0}, (1,)),
    "Sqrt": ([pos(5)], {}, ()),
    "Squeeze": ([f32(3, 1, 2), i64(1)], {}, (1,)),
    "Sub": ([f32(2, 3), f32(2, 1)], {}, ()),
    "Sum": ([f32(3), f32(2, 3), f32(1)], {}, ()),
    "Tanh": ([f32(5)], {}, ()),
    "Tile": ([f32(2, 3), i64(2, 1)], {}, (1,)),
    "Transpose": ([X], {"perm": [0, 2, 3, 1]}, ()),
    "Trilu": ([f32(2, 4, 5), np.array(1, np.int64)], {"upper": 0}, ()),
    "Unsqueeze": ([f32(3, 2), i64(0, 3)], {}, (1,)),
    "Where": ([f32(4) > 0, f32(4), f32(4)], {}, ()),
    "Xor": ([bools(2, 2), bools(2, 1)], {}, ()),
}
N_OUTPUTS = {"Split": 2, "DynamicQuantizeLinear": 3}


def test_the_promised_ops_are_registered():
    assert sorted(set(REQUIRED) - set(ops.OPS)) == []


NOT_ONNX = {"Observe", "LookupTable",  # qcompiler's own ops, tested in their own files
            "IntConv", "IntMatMul", "IntAdd", "IntMul", "IntAveragePool",
            "IntGlobalAveragePool"}


def test_every_registered_op_has_an_example():
    assert sorted((set(ops.OPS) - NOT_ONNX) ^ set(EXAMPLES)) == []


@pytest.mark.parametrize("op_type", sorted(EXAMPLES))
def test_op_matches_onnxruntime(op_type):
    inputs, attrs, constants = EXAMPLES[op_type]
    inputs = [np.asarray(a) if a is not None else None for a in inputs]
    check_op(op_type, inputs, attrs, n_outputs=N_OUTPUTS.get(op_type, 1),
             constant_inputs=constants)


def test_unknown_op_is_a_qcompiler_error_with_a_suggestion():
    with pytest.raises(qc.UnknownOpError, match="'Relux' is not registered; did you mean 'Relu'"):
        ops.get("Relux")
    with pytest.raises(KeyError):  # old ``except KeyError`` code keeps working
        ops.get("NoSuchOp")
    with pytest.raises(qc.QCompilerError, match="see qcompiler.ops.names"):
        ops.get("NoSuchOp")


@pytest.mark.parametrize(("op_type", "attrs", "message"), [
    ("Transpose", {"perm": "abc"}, "attribute 'perm' must be a list of ints, got str 'abc'"),
    ("Flatten", {"axis": 1.5}, "attribute 'axis' must be an int, got float 1.5"),
    ("LeakyRelu", {"alpha": "x"}, "attribute 'alpha' must be a float, got str 'x'"),
    ("Gelu", {"approximate": 1}, "attribute 'approximate' must be a string, got int 1"),
    ("Transpose", {"perm": (0, 1.0)}, "'perm' must be a list of ints, got tuple"),
])
def test_wrong_typed_attribute_names_node_attribute_and_type(op_type, attrs, message):
    refuse(op_type, [(DType.F32, (2, 3))], attrs, qc.ShapeInferenceError, re.escape(message))


def test_every_attribute_has_a_known_type():
    kinds = {"int", "float", "string", "ints", "floats", "tensor"}
    assert {(d.name, k) for d in ops.OPS.values() for k in d.attrs
            if d.attr_kinds[k] not in kinds} == set()


def test_exact_ops_are_declared():
    data_movement = """Reshape Transpose Slice Gather Concat Split Pad Tile Expand Squeeze
    Unsqueeze Flatten Identity Cast MaxPool Relu Clip Min Max Where Equal Less Greater Not
    And Or Xor""".split()
    assert sorted(set(data_movement) - EXACT_OPS) == []
    assert sorted(EXACT_OPS - set(ops.OPS)) == []
    assert is_exact("Resize", {"mode": "nearest"}) and is_exact("Resize", {})
    assert not is_exact("Resize", {"mode": "linear"}) and not is_exact("Conv")


def _one_ulp_off(monkeypatch):
    """Make the kernels' float outputs one unit in the last place larger."""
    real = op_check.run_kernel

    def nudged(*args, **kwargs):
        return [np.nextafter(a, np.inf).astype(a.dtype) if a.dtype.kind == "f" else a
                for a in map(np.asarray, real(*args, **kwargs))]

    monkeypatch.setattr(op_check, "run_kernel", nudged)


EXACT_FLOAT_EXAMPLES = sorted(
    op for op, (inputs, attrs, _) in EXAMPLES.items()
    if is_exact(op, attrs) and op_check.run_kernel(
        op, [np.asarray(a) if a is not None else None for a in inputs], attrs)[0].dtype.kind
    == "f")


@pytest.mark.parametrize("op_type", EXACT_FLOAT_EXAMPLES + ["Resize-nearest"])
def test_exact_ops_are_compared_exactly(op_type, monkeypatch):
    """One ulp off fails the comparison of an exact op: no tolerance hides it."""
    if op_type == "Resize-nearest":
        op_type, (inputs, attrs, constants) = "Resize", (
            [X, None, np.array([1, 1, 2, 0.5], np.float32)], {"mode": "nearest"}, (2,))
    else:
        inputs, attrs, constants = EXAMPLES[op_type]
    inputs = [np.asarray(a) if a is not None else None for a in inputs]
    check_op(op_type, inputs, attrs, n_outputs=N_OUTPUTS.get(op_type, 1),
             constant_inputs=constants)
    _one_ulp_off(monkeypatch)
    with pytest.raises(AssertionError, match="Mismatch|not equal"):
        check_op(op_type, inputs, attrs, n_outputs=N_OUTPUTS.get(op_type, 1),
                 constant_inputs=constants)


def test_wrong_typed_attribute_in_an_onnx_file():
    x = helper.make_tensor_value_info("x", 1, [2, 3])
    y = helper.make_tensor_value_info("y", 1, [3, 2])
    node = helper.make_node("Transpose", ["x"], ["y"], name="tr1", perm="abc")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 21)])
    # the importer checks attribute types against the ONNX schema before building the node
    with pytest.raises(qc.ModelLoadError,
                       match="Transpose node 'tr1': attribute 'perm' is string, but ONNX "
                             "Transpose-21 declares it ints"):
        qc.from_onnx(model)
