"""Dynamic and weight-only quantization: the DynamicQuantizeLinear kernel against onnxruntime and
onnx.reference (exactly, every halfway case included), and the ``quantize-dynamic`` pass against
onnxruntime's ``quantize_dynamic`` and against float."""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import test_qdq_import as qdq_models
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization import QuantType, quantize_dynamic
from qcompiler.passes.dynamic import dynamic_pass
from test_exported_models import DATA as EXPORTED
from test_exported_models import _batch_feeds

import qcompiler as qc
from qcompiler import qdq, quant_math
from qcompiler.demo import ort_session
from qcompiler.onnx_export import to_onnx
from qcompiler.ops.quant_dynamic import dynamic_quantize_linear
from qcompiler.quant_ops import WEIGHTED
from qcompiler.types import TensorType

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
             np.array([1e-30, -1e-30], np.float32), np.array([1e30, -3e29], np.float32),
             np.array([1e-45], np.float32), np.array([1e-45, 0, -0.0, 1e-45], np.float32),
             np.array([-1e-45, 0], np.float32), np.array([2e-45, -1e-45], np.float32)]
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
        with np.errstate(divide="ignore", invalid="ignore"):  # the edge cases' zero scales
            steps = x / ours[1]
            halfway += int(np.sum(np.abs(steps - np.floor(steps)) == 0.5))
    assert halfway >= 255 * (256 + 2)  # every halfway value (and zero point) was exercised


def test_dynamic_quantize_linear_matches_onnx_reference() -> None:
    """onnx.reference gives the all-zero tensor the scale 1/255 where onnxruntime gives 1.0
    (y and the zero point are 0 either way); everything else is the same, exactly."""
    reference = ReferenceEvaluator(_dynamic_quantize_model())
    compared = 0
    for x in halfway_cases() + edge_cases():
        ours = dynamic_quantize_linear(x)
        with np.errstate(divide="ignore", invalid="ignore"):  # the reference divides by a zero
            theirs = reference.run(None, {"x": x})            # scale on the edge cases
        if not x.any():
            np.testing.assert_array_equal(ours[0], theirs[0])
            assert ours[1] == 1.0 and theirs[1] == np.float32(1 / 255)
            continue
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        compared += 1
    assert compared == 255 + 108


# -- the quantize-dynamic pass --------------------------------------------------------------------

MLPS = ["torch_mlp_layernorm_gelu_opset17", "torch_dynamo_mlp_layernorm_gelu_opset18"]
# |ours - onnxruntime| / max|output| against quantize_dynamic's model run with exact integer
# kernels: measured 2.2e-7 (per tensor) and 1.5e-7 (per channel), float32 rounding only.
ORT_TOL = 1e-6
# |dynamic - float| / max|output| on the MLPs (batch 8): measured 9.0e-3 (per tensor) and
# 5.3e-3 (per channel): what 8-bit activations and weights cost.
FLOAT_TOL = {False: 1.2e-2, True: 7e-3}


def _mlp(name: str) -> tuple[Path, qc.Graph, dict[str, np.ndarray]]:
    path = EXPORTED / f"{name}.onnx"
    return path, qc.load_onnx(path), _batch_feeds(onnx.load(str(path)), 8, seed=0)


@functools.cache
def ort_dynamic(name: str, per_channel: bool) -> onnx.ModelProto:
    """onnxruntime's quantize_dynamic of a fixture's Gemm and MatMul ops (int8 weights)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "dynamic.onnx"
        quantize_dynamic(str(EXPORTED / f"{name}.onnx"), str(out), weight_type=QuantType.QInt8,
                         per_channel=per_channel, op_types_to_quantize=["MatMul", "Gemm"])
        return onnx.load(str(out))


def _peak(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("name", MLPS)
def test_dynamic_mode_matches_onnxruntime_quantize_dynamic(name: str, per_channel: bool) -> None:
    _, g, feeds = _mlp(name)
    float_out = qc.compile(g).run(feeds)[g.outputs[0].name]
    reference = ort_dynamic(name, per_channel)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {n.op_type
                                                          for n in reference.graph.node}
    theirs = qdq_models.precise_session(reference).run(None, feeds)[0]
    default = ort_session(reference).run(None, feeds)[0]
    for graph in (g, qc.optimize(g)):
        result = qc.PassManager(f"quantize-dynamic{{per_channel={str(per_channel).lower()}}}"
                                ).run(graph)
        assert result.stats == {"quantize-dynamic: weights": 3,
                                "quantize-dynamic: activations": 3}
        ours = qc.compile(result.graph).run(feeds)[g.outputs[0].name]
        print(f"\n{name} per_channel={per_channel}: vs onnxruntime (exact kernels) "
              f"{_peak(ours, theirs):.1e}, vs float {_peak(ours, float_out):.1e}; onnxruntime's "
              f"default session vs float {_peak(default, float_out):.1e}")
        assert _peak(ours, theirs) <= ORT_TOL
        assert _peak(ours, float_out) <= FLOAT_TOL[per_channel]


def _weighted_dqs(g: qc.Graph) -> list[qc.Node]:
    return [n for n in g.nodes if n.op in WEIGHTED and n.inputs[1].producer is not None
            and n.inputs[1].producer.op == "DequantizeLinear"]


@pytest.mark.parametrize("name", MLPS)
def test_a_dynamic_graph_exports_and_runs_in_onnxruntime(name: str, tmp_path: Path) -> None:
    """As written: float32 rounding apart (measured 1.5e-7). onnxruntime's own rewrites turn
    DQ + MatMul into its integer kernels, which agree as closely with exact kernels; its
    default session is printed (on AVX2 without VNNI its u8s8 kernels saturate)."""
    _, g, feeds = _mlp(name)
    q = qc.PassManager("quantize-dynamic").run(g).graph
    ours = qc.compile(q).run(feeds)[g.outputs[0].name]
    qc.export_onnx(q, tmp_path / "dynamic.onnx")
    model = onnx.load(str(tmp_path / "dynamic.onnx"))
    assert sum(n.op_type == "DynamicQuantizeLinear" for n in model.graph.node) == 3
    for session in (ort_session(model, optimize=False), qdq_models.precise_session(model)):
        assert _peak(session.run(None, feeds)[0], ours) <= ORT_TOL
    default = ort_session(model).run(None, feeds)[0]  # its u8s8 kernels saturate on AVX2
    print(f"\n{name}: onnxruntime's default session vs ours {_peak(default, ours):.1e}")


def test_weight_only_quantizes_every_weighted_op_and_keeps_int8_weights(tmp_path: Path) -> None:
    """On the digits model (3 convs, 2 gemms): every weight is int8 behind a DQ, in the IR
    after canonicalize (DQ is never folded), in a saved executable and in the exported file;
    accuracy is float's
    (measured: 0.9797 both, top-1 agreement 1.0, max logit change 0.8% of the peak)."""
    g = qc.optimize(qc.load_onnx(qdq_models.MODEL))
    result = qc.PassManager("quantize-dynamic{weight_only=true},canonicalize").run(g)
    q = result.graph
    assert len(_weighted_dqs(q)) == 5 == sum(n.op in WEIGHTED for n in q.nodes)
    assert not q.find_nodes("DynamicQuantizeLinear")
    for node in _weighted_dqs(q):
        weight = node.inputs[1].producer.inputs[0]
        assert weight.is_constant and weight.dtype == "i8" and weight.type.quant.axis == 0
    x = qdq_models.DATA["test_x"]
    float_out = qc.compile(g).run({"image": x})["logits"]
    ours = qc.compile(q).run({"image": x})["logits"]
    assert qdq_models.accuracy(ours) == qdq_models.accuracy(float_out)
    assert _peak(ours, float_out) <= 1e-2
    qc.compile(q).save(tmp_path / "weight_only.qcx")
    saved = qc.load(tmp_path / "weight_only.qcx")
    np.testing.assert_array_equal(saved.run({"image": x})["logits"], ours)
    assert sorted(v.dtype.value for v in saved.graph.constants.values()
                  if len(v.shape) >= 2) == ["i8"] * 5
    path = tmp_path / "weight_only.onnx"
    qc.export_onnx(q, path)
    model = onnx.load(str(path))
    matrices = [t for t in model.graph.initializer if len(t.dims) >= 2]
    assert len(matrices) == 5 and all(t.data_type == TensorProto.INT8 for t in matrices)
    for rewrites in (False, True):
        assert _peak(ort_session(model, optimize=rewrites).run(None, {"image": x})[0],
                     ours) <= ORT_TOL


def test_options_reach_the_pass_and_a_bad_one_is_refused() -> None:
    _, g, feeds = _mlp(MLPS[0])
    floats = {n.name: n.inputs[1].data for n in g.nodes if n.op in WEIGHTED}
    q = qc.PassManager("quantize-dynamic{weight_only=true per_channel=false weight_dtype=u8 "
                       "symmetric=false reduce_range=true}").run(g).graph
    assert {n.name for n in _weighted_dqs(q)} == set(floats) and len(floats) == 3
    for node in _weighted_dqs(q):
        params = node.inputs[1].producer.inputs[0].type.quant
        _, expected = quant_math.quantize_weight(floats[node.name], axis=0, dtype="u8",
                                                 symmetric=False, per_channel=False,
                                                 reduce_range=True)
        assert (params.qmin, params.qmax) == (0, 127) and qdq.same_params(params, expected)
    with pytest.raises(qc.PipelineError, match="weight_dtype"):
        qc.PassManager("quantize-dynamic{weight_dtype=i32}")


def _two_readers() -> qc.Graph:
    """x read by two MatMuls with constant weights and by one whose weight is x itself."""
    rng = np.random.default_rng(0)
    g = qc.Graph("shared")
    x = g.add_input("x", TensorType("f32", (8, 8)))
    w = g.add_constant(rng.normal(size=(8, 8)).astype(np.float32), "w")
    a = g.add_node("MatMul", [x, w], name="a").outputs[0]
    b = g.add_node("MatMul", [x, w], name="b").outputs[0]
    t = g.add_node("Transpose", [x], {"perm": (1, 0)}, name="t").outputs[0]
    c = g.add_node("MatMul", [x, t], name="c").outputs[0]
    s = g.add_node("Add", [a, b], name="s").outputs[0]
    g.set_outputs([g.add_node("Add", [s, c], name="out").outputs[0]])
    return g


def test_a_shared_weight_and_activation_are_quantized_once_and_refusals_are_explained() -> None:
    pm = qc.PassManager("quantize-dynamic", explain=True)
    result = pm.run(_two_readers())
    assert result.stats == {"quantize-dynamic: weights": 1, "quantize-dynamic: activations": 1}
    q = result.graph
    assert len(q.find_nodes("DynamicQuantizeLinear")) == 1
    assert q.node("c").inputs[0].name == "x"  # left in float
    assert pm.explanations["quantize-dynamic"] == [
        f"{q.node('c').describe()} stays float: its weight is not a constant"]
    x = np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)
    float_out = qc.compile(_two_readers()).run({"x": x})["out"]
    assert _peak(qc.compile(q).run({"x": x})["out"], float_out) <= 8e-3  # measured 6.8e-3


@pytest.mark.parametrize("weight_only", [False, True])
def test_a_shared_weight_exports_and_runs_on_exact_int8_kernels(weight_only: bool) -> None:
    """Two MatMuls read one int8 weight's DQ: onnxruntime would give each a DQ of its own
    sharing the constant, which its ``session.x64quantprecision`` weight rewrite refuses; the
    export writes a DQ per reader with its own operands (float32 rounding apart: measured
    7.0e-8 of the peak)."""
    q = qc.PassManager(f"quantize-dynamic{{weight_only={str(weight_only).lower()}}}").run(
        _two_readers()).graph
    model = to_onnx(q)
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and n.input[0].startswith("w.")]
    assert len(dequantize) == 2 and len({n.input[0] for n in dequantize}) == 2
    x = np.random.default_rng(1).normal(size=(8, 8)).astype(np.float32)
    ours = qc.compile(q).run({"x": x})["out"]
    for session in (ort_session(model, optimize=False), ort_session(model, exact_int8=True)):
        assert _peak(session.run(None, {"x": x})[0], ours) <= ORT_TOL
    np.testing.assert_array_equal(qc.compile(qc.from_onnx(model)).run({"x": x})["out"], ours)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qc_quantize_in_dynamic_mode_matches_onnxruntime(per_channel: bool) -> None:
    """``QuantConfig(mode="dynamic")`` runs this pass (no calibration data needed); the
    config's default int8 activations become uint8, as DynamicQuantizeLinear makes them."""
    name = MLPS[0]
    _, g, feeds = _mlp(name)
    q = qc.quantize(g, None, qc.QuantConfig(mode="dynamic", per_channel=per_channel))
    assert len(q.find_nodes("DynamicQuantizeLinear")) == 3
    ours = qc.compile(q).run(feeds)[g.outputs[0].name]
    theirs = qdq_models.precise_session(ort_dynamic(name, per_channel)).run(None, feeds)[0]
    assert _peak(ours, theirs) <= ORT_TOL


def test_qc_quantize_in_weight_only_mode_honours_the_config_exclusions() -> None:
    g = qc.load_onnx(qdq_models.MODEL)
    config = qc.QuantConfig(mode="weight_only", exclude_layers=["fc2"], per_channel=False)
    q = qc.quantize(g, None, config)
    quantized = {n.name for n in _weighted_dqs(q)}
    assert quantized == {"conv1_conv", "conv2_conv", "conv3_conv", "fc1"}
    for node in _weighted_dqs(q):
        assert node.inputs[1].producer.inputs[0].type.quant.axis is None
    assert q.node("fc2").inputs[1].is_constant
    pm = qc.PassManager([dynamic_pass(config)], explain=True)
    pm.run(qc.optimize(g))
    assert pm.explanations["quantize-dynamic"] == [
        f"{q.node('fc2').describe()} stays float: excluded by the config (exclude_layers "
        f"'fc2')"]
    with pytest.raises(qc.ConfigError, match="mode"):
        dynamic_pass(qc.QuantConfig())


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_calibration_options_are_refused_not_ignored_without_calibration(mode: str) -> None:
    g = qc.load_onnx(qdq_models.MODEL)
    for options, named in (({"bias_correction": True}, "bias_correction=True"),
                           ({"overrides": {"image": (0.0, 1.0)}}, "overrides ('image')")):
        with pytest.raises(qc.ConfigError, match=re.escape(named)):
            qc.quantize(g, None, qc.QuantConfig(mode=mode, **options))


@pytest.mark.parametrize("mode", ["dynamic", "weight_only"])
def test_a_half_precision_weight_stays_float_with_the_reason(mode: str) -> None:
    """A DequantizeLinear of an int8 weight gives f32, which an f16 MatMul cannot read."""
    g = qc.Graph("half")
    x = g.add_input("x", TensorType("f16", (2, 8)))
    w = g.add_constant(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float16), "w")
    g.set_outputs([g.add_node("MatMul", [x, w], name="mm").outputs[0]])
    pm = qc.PassManager([dynamic_pass(qc.QuantConfig(mode=mode))], explain=True)
    assert [n.op for n in pm.run(g).graph.nodes] == ["MatMul"]
    assert pm.explanations["quantize-dynamic"] == [
        f"{g.node('mm').describe()} stays float: its weight %w is f16, not f32"]
