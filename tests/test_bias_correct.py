"""The ``bias-correct`` pass: the mean output error of each corrected layer, on the data it was
corrected on (to the bias's quantization step) and on held-out data; accuracy on the
depthwise-separable model; biases added, re-quantized, or kept float; refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from qcompiler.passes.bias_correct import (
    BiasCorrect,
    correct_biases,
    layer_means,
    quantized_layers,
)
from qcompiler.passes.quantize import Quantize

import qcompiler as qc
from qcompiler import qdq, quant_math
from qcompiler.calibration import calibrate
from qcompiler.errors import ConfigError, QuantizationError
from qcompiler.pass_manager import PassManager
from qcompiler.ptq import FLOAT_PIPELINE

ROOT = Path(__file__).resolve().parents[1]
DIGITS = np.load(ROOT / "examples" / "digits.npz")
DWSEP = ROOT / "tests" / "data" / "models" / "digits_dwsep.onnx"
PER_TENSOR = qc.QuantConfig(per_channel=False, calibration="minmax")


def float_and_quantized(graph: qc.Graph, calib, config: qc.QuantConfig = PER_TENSOR):
    """The float graph quantization starts from and its QDQ form (before cancel-qdq), as
    ``qc.quantize`` hands them to bias correction."""
    reference = PassManager(FLOAT_PIPELINE).run(graph).graph
    calibration = calibrate(reference, calib, progress=False)
    return reference, PassManager([Quantize(config, calibration)]).run(reference).graph


def mean_errors(q: qc.Graph, reference: qc.Graph, names, batches) -> dict[str, np.ndarray]:
    """Per layer: the mean per-channel error (quantized - float) of its pre-activation output."""
    got, want = layer_means(q, names, batches), layer_means(reference, names, batches)
    return {name: got[name] - want[name] for name in names}


def bias_step(node: qc.Node) -> np.ndarray:
    """The float value of one integer step of ``node``'s int32 bias, per channel."""
    return np.asarray(qdq.params_of(node.inputs[2].producer).scale, dtype=np.float64)


# -- small graphs, one layer of each kind ---------------------------------------------------------

# Output channels whose ranges differ 50-fold: per-tensor rounding leaves the small ones with a
# few levels, so their mean error is many bias steps.
UNEVEN = np.array([5.0, 0.1, 1.0, 0.2])


def layer_graph(kind: str) -> tuple[qc.Graph, list[np.ndarray]]:
    """One weighted layer of ``kind`` and a Relu, and a data set in [0, 1] (as images or the
    output of a Relu are: inputs with a mean away from zero turn weight rounding into an output
    offset)."""
    rng = np.random.default_rng(KINDS.index(kind))
    if kind.startswith("conv"):
        group = 2 if kind == "conv_grouped" else 1
        w = rng.normal(0, 1, (4, 4 // group, 3, 3)) * UNEVEN[:, None, None, None]
        bias = "" if kind == "conv_no_bias" else ", %b"
        text = f"""graph g(%x: f32[N,4,6,6]) {{
  %w: f32[4,{4 // group},3,3] = const @w
  %b: f32[4] = const @b
  %y: f32[N,4,6,6] = Conv(%x, %w{bias}) {{group = {group}, pads = [1, 1, 1, 1]}} @layer
  %r: f32[N,4,6,6] = Relu(%y) @relu
  return %r
}}"""
        shape = (8, 4, 6, 6)
    else:
        trans = kind == "gemm_beta"
        w = rng.normal(0, 1, (5, 4)) * UNEVEN[None, :]
        op = ("Gemm(%x, %w, %b) {beta = 0.5, transB = 1}" if trans
              else "MatMul(%x, %w, %b)" if kind == "matmul" else "Gemm(%x, %w, %b)")
        w = w.T.copy() if trans else w
        text = f"""graph g(%x: f32[N,5]) {{
  %w: f32[{list(w.shape)[0]},{list(w.shape)[1]}] = const @w
  %b: f32[4] = const @b
  %y: f32[N,4] = {op} @layer
  %r: f32[N,4] = Relu(%y) @relu
  return %r
}}"""
        shape = (16, 5)
    constants = {"w": w.astype(np.float32), "b": rng.normal(0, 0.5, 4).astype(np.float32)}
    data = [rng.uniform(0, 1, shape).astype(np.float32) for _ in range(4)]
    return qc.parse(text, constants=constants), data


KINDS = ["conv", "conv_grouped", "conv_no_bias", "gemm", "gemm_beta", "matmul"]


@pytest.mark.parametrize("kind", KINDS)
def test_mean_error_is_cancelled_to_the_bias_step(kind):
    graph, data = layer_graph(kind)
    reference, q = float_and_quantized(graph, data)
    feeds = [{"x": x} for x in data]
    before = mean_errors(q, reference, ["layer"], feeds)["layer"]
    corrections = correct_biases(q, reference, data)
    q.verify()
    after = mean_errors(q, reference, ["layer"], feeds)["layer"]
    node = q.node("layer")
    assert node.inputs[2].producer.op == qdq.DEQUANTIZE and node.inputs[2].producer.inputs[
        0].dtype.value == "i32"
    # the first layer reads the same (quantized) input before and after: what is left of the
    # mean error is the rounding of the new bias to its int32 step (beta times it for a Gemm)
    beta = float(node.attrs.get("beta", 1.0))
    assert np.all(np.abs(after) <= beta * bias_step(node) / 2 * (1 + 1e-6) + 1e-7), (
        after, bias_step(node))
    assert np.abs(before).max() > 100 * np.abs(after).max()  # measured: 180 to 1400 times
    assert corrections == {"layer": pytest.approx(float(np.abs(before).max()), rel=1e-6)}


def test_bias_is_requantized_at_input_times_weight_scale():
    graph, data = layer_graph("conv_no_bias")
    reference, q = float_and_quantized(graph, data)
    correct_biases(q, reference, data)
    node = q.node("layer")
    s_in = qdq.params_of(node.inputs[0].producer).scale[0]
    s_w = qdq.params_of(node.inputs[1].producer).scale
    bias_params = qdq.params_of(node.inputs[2].producer)
    assert bias_params.scale == pytest.approx([np.float32(s_in) * np.float32(s) for s in s_w])
    assert bias_params.zero_point == (0,) and node.inputs[2].producer.inputs[0].type.quant


def test_a_bias_that_outgrows_int32_raises_the_weight_scale():
    """A bias already at the int32 limit, pushed further by its correction: the weight scale is
    raised (never the bias clipped), the weights quantized again from the float graph, and the
    error of the new weights corrected too."""
    graph, data = layer_graph("gemm")
    reference, q = float_and_quantized(graph, data)
    feeds = [{"x": x} for x in data]
    error = mean_errors(q, reference, ["layer"], feeds)["layer"]
    node = q.node("layer")
    bias_dq = node.inputs[2].producer
    params = bias_dq.inputs[0].type.quant
    at_limit = (-np.sign(error) * quant_math.BIAS_LIMIT).astype(np.int32)
    bias_dq.set_input(0, qdq.add_quantized_constant(q, at_limit, params, "b.at_limit"))
    w_before = qdq.params_of(node.inputs[1].producer)
    reference.node("layer").set_input(2, reference.add_constant(
        quant_math.dequantize(at_limit, params).astype(np.float32), "b.float"))
    correct_biases(q, reference, data)
    q.verify()
    node = q.node("layer")
    w_after = qdq.params_of(node.inputs[1].producer)
    assert w_after.scale[0] > w_before.scale[0]
    np.testing.assert_array_equal(node.inputs[1].producer.inputs[0].data, quant_math.quantize(
        reference.node("layer").inputs[1].data, node.inputs[1].producer.inputs[0].type.quant))
    assert np.abs(node.inputs[2].producer.inputs[0].data).max() <= quant_math.BIAS_LIMIT
    # outputs near 2^30 bias steps are beyond float32's 24 bits: the mean error is resolved to
    # the float32 spacing of the bias (1/64 here), not to a bias step
    after = mean_errors(q, reference, ["layer"], feeds)["layer"]
    bias = quant_math.dequantize(node.inputs[2].producer.inputs[0].data,
                                 qdq.params_of(node.inputs[2].producer))
    assert np.all(np.abs(after) <= bias_step(node) / 2 + np.spacing(np.abs(bias).astype(
        np.float32))), (after, bias_step(node))


def test_a_float_bias_on_a_float_input_stays_float():
    """Weight-only quantization: int8 weights, float activations and bias."""
    graph, data = layer_graph("conv")
    reference = PassManager(FLOAT_PIPELINE).run(graph).graph
    q = reference.copy()
    node = q.node("layer")
    wq, params = quant_math.quantize_weight(node.inputs[1].data, axis=0, per_channel=False)
    const = qdq.add_quantized_constant(q, wq, params, "w.q")
    node.set_input(1, qdq.add_dequantize(q, const, before=node))
    feeds = [{"x": x} for x in data]
    before = mean_errors(q, reference, ["layer"], feeds)["layer"]
    correct_biases(q, reference, data)
    after = mean_errors(q, reference, ["layer"], feeds)["layer"]
    assert q.node("layer").inputs[2].dtype.value == "f32"
    # float32 rounding of the new bias and of the sums: measured 3.6e-8 (0.17 before)
    assert np.abs(after).max() < 2e-7 and np.abs(before).max() > 0.1


# -- the depthwise-separable model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dwsep() -> qc.Graph:
    return qc.load_onnx(DWSEP)


def test_dwsep_mean_errors_go_down_on_held_out_data(dwsep):
    reference, q = float_and_quantized(dwsep, DIGITS["calib_x"])
    names = [n.name for n in quantized_layers(q, reference)[0]]
    assert len(names) == 8  # the stem, 3 depthwise, 3 pointwise convs and the classifier
    held_out = [{"image": DIGITS["test_x"]}]
    before = mean_errors(q, reference, names, held_out)
    corrected = q.copy()
    result = PassManager([BiasCorrect(reference, DIGITS["calib_x"])]).run(corrected)
    assert result.stats == {"bias-correct: layers": 8}
    after = mean_errors(result.graph, reference, names, held_out)
    # measured, mean over channels of |error| per layer on test_x: every layer goes down (the
    # stem 0.0039 -> below 0.00005, the classifier 1.56 -> 0.12), the sum 3.76 -> 0.22
    for name in names:
        assert np.abs(after[name]).mean() < np.abs(before[name]).mean(), name
    total_before = sum(np.abs(e).mean() for e in before.values())
    total_after = sum(np.abs(e).mean() for e in after.values())
    assert total_after < total_before / 10, (total_before, total_after)


def accuracy(graph: qc.Graph) -> float:
    logits = qc.Interpreter(graph).run({"image": DIGITS["test_x"]})["logits"]
    return float((logits.argmax(1) == DIGITS["test_y"]).mean())


def test_dwsep_per_tensor_accuracy_improves(dwsep):
    """Measured on test_x (541 images), float 0.982: per-tensor weights and min/max calibration
    give 0.706 naive, 0.921 with bias correction, 0.980 with equalization, 0.983 with both."""
    calib = DIGITS["calib_x"]
    naive = accuracy(qc.quantize(dwsep, calib, PER_TENSOR, progress=False))
    corrected = accuracy(qc.quantize(dwsep, calib, replace(PER_TENSOR, bias_correction=True),
                                     progress=False))
    both = accuracy(qc.quantize(dwsep, calib, replace(
        PER_TENSOR, equalize=True, bias_correction=True), progress=False))
    assert naive < 0.75 and corrected > 0.9 and both > 0.975, (naive, corrected, both)


# -- refusals -------------------------------------------------------------------------------------


def test_float_layers_are_left_alone_with_a_reason(dwsep):
    config = qc.QuantConfig(per_channel=False, exclude_op_types=["Gemm"])
    reference, q = float_and_quantized(dwsep, DIGITS["calib_x"][:32], config)
    layers, notes = quantized_layers(q, reference)
    assert len(layers) == 7 and len(notes) == 1
    assert "Gemm '/fc/Gemm'" in notes[0] and "not the DequantizeLinear" in notes[0]
    pm = PassManager([BiasCorrect(reference, DIGITS["calib_x"][:32])], explain=True)
    assert pm.run(q).stats == {"bias-correct: layers": 7}
    assert pm.explanations["bias-correct"] == notes


def test_a_layer_missing_from_the_float_graph_is_an_error():
    graph, data = layer_graph("conv")
    reference, q = float_and_quantized(graph, data)
    q.rename_node(q.node("layer"), "renamed")
    with pytest.raises(QuantizationError, match="has no Conv named 'renamed'"):
        correct_biases(q, reference, data)


def test_the_pass_needs_its_float_graph_and_data():
    graph, data = layer_graph("conv")
    with pytest.raises(ConfigError, match="needs the float graph and calibration data"):
        BiasCorrect().run(graph)
