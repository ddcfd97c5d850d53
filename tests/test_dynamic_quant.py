"""Dynamic and weight-only quantization: the DynamicQuantizeLinear kernel against onnxruntime and
onnx.reference (exactly, every halfway case included), and the ``quantize-dynamic`` pass against
onnxruntime's ``quantize_dynamic`` and against float."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from qcompiler.demo import ort_session
from qcompiler.ops.quant_dynamic import dynamic_quantize_linear

STEP = np.float32(1 / 16)  # a power of two: x / scale is exact, so halfway values are exact


def _dynamic_quantize_model() -> onnx.ModelProto:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "scale", "zero_point"])
    outs = [helper.make_tensor_value_info(name, code, None) for name, code in
            (("y", TensorProto.UINT8), ("scale", TensorProto.FLOAT),
             ("zero_point", TensorProto.UINT8))]
    graph = helper.make_graph([node], "dql", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n"])], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def halfway_cases() -> list[np.ndarray]:
    """For every zero point 0..254: a tensor whose range gives scale 1/16 and an unrounded zero
    point of exactly j + 0.5, holding every value x with x / scale exactly halfway between two
    integers inside that range (256 values, the range's ends among them, which come first
    again)."""
    cases = []
    for j in range(255):
        lo, hi = -(j + 0.5) * STEP, (254.5 - j) * STEP
        halves = (np.arange(-j - 1, 256 - j, dtype=np.float32) + np.float32(0.5)) * STEP
        cases.append(np.concatenate([[lo, hi], halves[(halves >= lo) & (halves <= hi)]])
                     .astype(np.float32))
    return cases


def edge_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    cases = [np.zeros(5, np.float32), np.array([3.0], np.float32), np.array([-2.0], np.float32),
             np.array([1e-30, -1e-30], np.float32), np.array([1e30, -3e29], np.float32)]
    for _ in range(100):
        size = int(rng.integers(1, 300))
        cases.append((rng.normal(0, rng.uniform(0.01, 100), size) + rng.normal())
                     .astype(np.float32))
    return cases


def test_dynamic_quantize_linear_matches_onnxruntime_exactly() -> None:
    session = ort_session(_dynamic_quantize_model())
    halfway = 0
    for x in halfway_cases() + edge_cases():
        ours = dynamic_quantize_linear(x)
        theirs = session.run(None, {"x": x})
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b, err_msg=str(x[:8]))
        scale = ours[1]
        halfway += int(np.sum(np.abs(x / scale - np.floor(x / scale)) == 0.5))
    assert halfway >= 255 * (256 + 2)  # every halfway value (and zero point) was exercised


def test_dynamic_quantize_linear_matches_onnx_reference() -> None:
    """onnx.reference gives the all-zero tensor the scale 1/255 where onnxruntime gives 1.0
    (y and the zero point are 0 either way); everything else is the same, exactly."""
    reference = ReferenceEvaluator(_dynamic_quantize_model())
    compared = 0
    for x in halfway_cases() + edge_cases():
        ours = dynamic_quantize_linear(x)
        theirs = reference.run(None, {"x": x})
        if not x.any():
            np.testing.assert_array_equal(ours[0], theirs[0])
            assert ours[1] == 1.0 and theirs[1] == np.float32(1 / 255)
            continue
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        compared += 1
    assert compared == 255 + 104
