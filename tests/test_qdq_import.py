"""Pre-quantized QDQ models import into the IR: onnxruntime's ``quantize_static`` output on the
digits model (per tensor and per channel, int8 and uint8 activations) loads with every Q output
and every DQ'd constant typed with its parameters, runs on the numpy backend with onnxruntime's
accuracy, and goes through the pipeline like any graph.

What ``quantize_static`` (QuantFormat.QDQ, onnxruntime 1.32) writes, and how each is imported:
default-domain QuantizeLinear/DequantizeLinear at opset 13; int8 weights and BatchNorm gammas,
int32 biases and BatchNorm betas (zero point 0, per channel along axis 0 for biases of
per-channel weights) read by DQ nodes; a [1] scale beside a scalar zero point for the BatchNorm
beta (per tensor: imported as scalars); no QLinear or ``com.microsoft`` op. A ``com.microsoft``
Q/DQ (its ``UseQDQContribOps`` option) is refused, naming the domain and the nodes. A QAT
export's QuantizeLinear of a float weight is folded at import into a typed int8 constant.
"""

from __future__ import annotations

import functools
import re
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

import qcompiler as qc
from qcompiler import qdq
from qcompiler.demo import ort_session

EXAMPLES = resources.files("qcompiler.examples")
MODEL = str(EXAMPLES / "digits_convnet.onnx")
with np.load(str(EXAMPLES / "digits.npz")) as _data:
    DATA = dict(_data)
CALIB_BATCH = 32

# (per_channel, activation type): the four schemes of quantize_static tested here
SCHEMES = [(False, "u8"), (False, "i8"), (True, "u8"), (True, "i8")]
_QUANT_TYPES = {"u8": QuantType.QUInt8, "i8": QuantType.QInt8}


class _DigitsCalibration(CalibrationDataReader):
    """The digits calibration images in batches, as quantize_static reads them."""

    def __init__(self) -> None:
        x = DATA["calib_x"]
        self.batches = iter([{"image": x[k:k + CALIB_BATCH]}
                             for k in range(0, len(x), CALIB_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@functools.cache
def quantized_digits(per_channel: bool, activations: str) -> onnx.ModelProto:
    """onnxruntime's quantize_static QDQ model of the digits convnet (int8 weights,
    MinMax calibration on the digits calibration set)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "digits.qdq.onnx"
        quantize_static(MODEL, str(out), _DigitsCalibration(),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=_QUANT_TYPES[activations],
                        weight_type=QuantType.QInt8)
        return onnx.load(str(out))


def precise_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime with its graph rewrites (QDQ -> QLinear ops) but the exact u8u8 integer
    kernels: ``session.x64quantprecision`` avoids the int16 saturation of its default u8s8
    path on x86 machines without VNNI (see DESIGN.md)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def accuracy(logits: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == DATA["test_y"]).mean())


def _scheme_id(scheme: tuple[bool, str]) -> str:
    return f"{'per_channel' if scheme[0] else 'per_tensor'}-{scheme[1]}"


@pytest.mark.parametrize("scheme", SCHEMES, ids=_scheme_id)
def test_q_outputs_and_dequantized_constants_carry_their_parameters(
        scheme: tuple[bool, str]) -> None:
    model = quantized_digits(*scheme)
    g = qc.from_onnx(model)
    quantize = g.find_nodes(qdq.QUANTIZE)
    dequantize = g.find_nodes(qdq.DEQUANTIZE)
    assert len(quantize) == sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    assert len(dequantize) == sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    for node in quantize:
        params = qdq.params_of(node)
        assert params is not None and params.axis is None, node.describe()
        assert node.outputs[0].dtype == scheme[1]
        assert qdq.same_params(node.outputs[0].type.quant, params), node.describe()
    per_channel = []
    for node in dequantize:
        source = node.inputs[0]
        assert qdq.same_params(source.type.quant, qdq.params_of(node)), node.describe()
        if source.is_constant:
            assert source.type.quant is not None, node.describe()
            per_channel.append(source.type.quant.axis is not None)
    weights = [n for n in dequantize if n.inputs[0].is_constant and n.inputs[0].dtype == "i8"
               and len(n.inputs[0].shape) >= 2]
    biases = [n for n in dequantize if n.inputs[0].dtype == "i32"]
    assert len(weights) == 5 and len(biases) == 8  # 3 convs + 2 gemms; their biases + 3 BN betas
    assert all((w.inputs[0].type.quant.axis == 0) == scheme[0] for w in weights)
    assert any(per_channel) == scheme[0]
    assert qdq.problems(g) == []


@pytest.mark.parametrize("scheme", SCHEMES, ids=_scheme_id)
def test_runs_with_the_accuracy_it_has_in_onnxruntime(scheme: tuple[bool, str]) -> None:
    """The numpy backend simulates the QDQ graph in float; onnxruntime runs it as written
    and, with its QDQ rewrites, on exact integer kernels: measured identical logits (the
    float DQ -> op -> Q chain and the integer kernels round alike here). onnxruntime's
    default session on this AVX2 machine (no VNNI) saturates int16 pair sums and differs."""
    model = quantized_digits(*scheme)
    x = DATA["test_x"]
    ours = qc.compile(qc.from_onnx(model)).run({"image": x})["logits"]
    as_written = ort_session(model, optimize=False).run(None, {"image": x})[0]
    precise = precise_session(model).run(None, {"image": x})[0]
    default = ort_session(model).run(None, {"image": x})[0]
    step = qdq.params_of(qc.from_onnx(model).outputs[0].producer).scale[0]
    print(f"\n{_scheme_id(scheme)}: accuracy ours {accuracy(ours):.4f}, onnxruntime as written "
          f"{accuracy(as_written):.4f}, x64quantprecision {accuracy(precise):.4f}, default "
          f"{accuracy(default):.4f}; top-1 agreement with the default "
          f"{float((ours.argmax(1) == default.argmax(1)).mean()):.4f}, max |diff| "
          f"{np.abs(ours - default).max() / step:.1f} steps")
    np.testing.assert_array_equal(ours, as_written)
    np.testing.assert_array_equal(ours, precise)
    assert accuracy(ours) == accuracy(precise) > 0.97


@pytest.mark.parametrize("scheme", SCHEMES, ids=_scheme_id)
def test_canonicalize_then_cancel_qdq_apply_and_keep_the_outputs(
        scheme: tuple[bool, str]) -> None:
    """The pipeline runs on the imported graph like on our own QDQ graphs: cancel-qdq moves
    the MaxPool's and the Flatten's DQ below them and cancels the DQ -> Q pairs left (their
    parameters are equal), and the outputs stay bit-identical."""
    g = qc.from_onnx(quantized_digits(*scheme))
    result = qc.PassManager("canonicalize,cancel-qdq").run(g)
    assert result.stats["cancel-qdq: propagate-dq"] == 2
    assert result.stats["cancel-qdq: cancel-dq-q"] == 2
    x = DATA["test_x"]
    np.testing.assert_array_equal(qc.compile(result.graph).run({"image": x})["logits"],
                                  qc.compile(g).run({"image": x})["logits"])
    assert qdq.problems(result.graph) == []
    assert len(result.graph.find_nodes(qdq.QUANTIZE)) == len(g.find_nodes(qdq.QUANTIZE)) - 2


def test_a_one_element_scale_is_imported_as_a_scalar() -> None:
    """quantize_static writes the BatchNorm beta's DQ with a [1] scale and a scalar zero
    point; onnxruntime reads it per tensor, and so do we."""
    model = quantized_digits(False, "i8")
    init = {t.name: t for t in model.graph.initializer}
    shapes = [(tuple(init[n.input[1]].dims), tuple(init[n.input[2]].dims))
              for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert ((1,), ()) in shapes  # what the case is about is in the model
    g = qc.from_onnx(model)
    for node in g.find_nodes(qdq.DEQUANTIZE):
        assert node.inputs[1].shape == node.inputs[2].shape, node.describe()


def test_contrib_domain_qdq_is_refused_naming_the_domain() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])
    inits = [onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             onnx.numpy_helper.from_array(np.array(0, np.uint8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q_node",
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq_node",
                              domain="com.microsoft")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13),
                                             helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(qc.UnsupportedModelError, match="com.microsoft") as info:
        qc.from_onnx(model)
    assert "q_node" in str(info.value) and "dq_node" in str(info.value)


def _qat_style_model() -> onnx.ModelProto:
    """What QAT exporters write: float weights quantized by a QuantizeLinear in the graph,
    per channel along axis 0, next to an activation Q -> DQ."""
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(a, name) for name, a in (
        ("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
        ("w_scale", np.array([0.02, 0.01, 0.03, 0.015], np.float32)),
        ("w_zero", np.zeros(4, np.int8)),
        ("x_scale", np.array(0.05, np.float32)), ("x_zero", np.array(3, np.int8)))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"],
                              name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["wq"], name="qw",
                              axis=0),
             helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"],
                              name="dqw", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "qat", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                     ["N", 3, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_qat_style_weight_quantizer_becomes_a_typed_int8_constant() -> None:
    model = _qat_style_model()
    g = qc.from_onnx(model)
    weight = g.node("dqw").inputs[0]
    assert weight.is_constant and weight.dtype == "i8"
    assert qdq.same_params(weight.type.quant, qdq.params_of(g.node("dqw")))
    assert weight.type.quant.axis == 0
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 5)).astype(np.float32)
    ours = qc.compile(g).run({"x": x})["y"]
    theirs = ort_session(model, optimize=False).run(None, {"x": x})[0]
    # float32 summation order only: measured 2.1e-7 of the output's peak
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * np.abs(theirs).max())


def test_the_quantized_operator_format_is_refused_with_the_qdq_alternative() -> None:
    """quantize_static's QOperator format writes QLinearConv and the contrib QGemm: refused,
    every node named, with the QDQ format suggested."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "digits.qop.onnx"
        quantize_static(MODEL, str(out), _DigitsCalibration(),
                        quant_format=QuantFormat.QOperator)
        model = onnx.load(str(out))
    with pytest.raises(qc.UnsupportedModelError, match="QuantFormat.QDQ") as info:
        qc.from_onnx(model)
    assert set(info.value.unsupported) == {"QLinearConv",
                                           "com.microsoft.QGemm (domain 'com.microsoft')"}
    assert info.value.unsupported["QLinearConv"] == [
        "conv1_conv_quant", "conv2_conv_quant", "conv3_conv_quant"]


def test_quantize_dynamic_output_is_refused_pointing_to_dynamic_mode(tmp_path: Path) -> None:
    """quantize_dynamic writes ConvInteger and MatMulInteger and has no QDQ format: the
    refusal names every node and says how to get the same model here."""
    out = tmp_path / "digits.dynamic.onnx"
    quantize_dynamic(MODEL, str(out), weight_type=QuantType.QInt8)
    with pytest.raises(qc.UnsupportedModelError, match=re.escape(
            "qc.QuantConfig(mode='dynamic')")) as info:
        qc.load_onnx(out)
    assert info.value.unsupported == {
        "ConvInteger": ["conv1_conv_quant", "conv2_conv_quant", "conv3_conv_quant"],
        "MatMulInteger": ["fc1_MatMul_quant", "fc2_MatMul_quant"]}
