"""``qc.export_onnx``: float and QDQ graphs written as ONNX that onnxruntime runs.

Float models (the zoo, the digits model, as imported and after the float passes) agree with the
numpy backend within float tolerance; fused forms are written with standard ops and read back
bit-exact; QDQ graphs agree with our simulation of them within one quantization step at the
output; imported graphs survive the round trip unchanged; the file is written atomically.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
import test_qdq_import as qdq_models
import zoo
from hypothesis import assume, given
from hypothesis import strategies as st
from test_exported_models import DATA as EXPORTED
from test_exported_models import _batch_feeds

import qcompiler as qc
from qcompiler import ops, qdq, quant_math
from qcompiler.demo import ort_session
from qcompiler.onnx_export import EXPORT_OPSET, ORIGINS_KEY, to_onnx
from qcompiler.quant_ops import DATA_MOVEMENT, WEIGHTED, weight_axis
from qcompiler.testing import graphs, inputs, qdq_graphs, run_graph
from qcompiler.types import TensorType

EXAMPLES = resources.files("qcompiler.examples")
# Largest |ours - onnxruntime| allowed, relative to max|onnxruntime| of the output: measured
# worst over these models, imported and fused, onnxruntime with and without its graph
# rewrites: 5.6e-7 (float32 summation order). A wrong or missing op is far above it.
PEAK_TOL = 2e-6

ZOO = ["resnet_bottleneck", "mobilenetv2_block", "mobilenetv3_block", "inception_block",
       "reshape_shape_subgraph", "resnet_style", "tf2onnx_style", "paddle2onnx_style"]


def _model(name: str) -> onnx.ModelProto:
    if name == "digits":
        return onnx.load(str(EXAMPLES / "digits_convnet.onnx"))
    return getattr(zoo, name)(batch="N") if name != "resnet_style" else zoo.resnet_style()


def _exported(graph: qc.Graph, tmp_path: Path, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    qc.export_onnx(graph, path)
    return path


def _peak_error(ours: dict[str, np.ndarray], theirs: list[np.ndarray],
                graph: qc.Graph) -> float:
    return max(float(np.abs(ref - ours[v.name]).max() / max(np.abs(ref).max(), 1e-30))
               for v, ref in zip(graph.outputs, theirs, strict=True))


@pytest.mark.parametrize("name", [*ZOO, "digits"])
def test_float_models_run_in_onnxruntime_as_in_the_numpy_backend(name: str,
                                                                  tmp_path: Path) -> None:
    imported = qc.from_onnx(_model(name))
    for kind, graph in (("imported", imported), ("fused", qc.optimize(imported))):
        path = _exported(graph, tmp_path, f"{kind}.onnx")
        feeds = _batch_feeds(onnx.load(str(path)), 2, seed=0)
        ours = qc.compile(graph).run(feeds)
        for rewrites in (False, True):
            theirs = ort_session(path, optimize=rewrites).run(None, feeds)
            error = _peak_error(ours, theirs, graph)
            assert error <= PEAK_TOL, (name, kind, rewrites, error)


@pytest.mark.parametrize("name", [*ZOO, "digits"])
def test_an_imported_graph_survives_the_round_trip_unchanged(name: str, tmp_path: Path) -> None:
    graph = qc.from_onnx(_model(name))
    assert qc.load_onnx(_exported(graph, tmp_path)) == graph


@pytest.mark.parametrize("name", [*ZOO, "digits"])
def test_a_fused_graph_reads_back_bit_exact_and_fuses_again(name: str, tmp_path: Path) -> None:
    fused = qc.optimize(qc.from_onnx(_model(name)))
    back = qc.load_onnx(_exported(fused, tmp_path))
    feeds = _batch_feeds(onnx.load(str(tmp_path / "model.onnx")), 2, seed=1)
    ours, again = qc.compile(fused).run(feeds), qc.compile(back).run(feeds)
    for value in fused.outputs:
        np.testing.assert_array_equal(again[value.name], ours[value.name])
    assert _layers(qc.optimize(back)) == _layers(fused)


def _layers(g: qc.Graph) -> list[tuple[str, str, tuple[str, ...]]]:
    """Each node's name, op and origins (the user layers it computes)."""
    return [(n.name, n.op, n.origins) for n in g.nodes]


def _const(g: qc.Graph, rng: np.random.Generator, shape: tuple[int, ...], name: str):
    return g.add_constant(rng.normal(0, 0.5, shape).astype(np.float32), name)


def fused_forms() -> qc.Graph:
    """Every fused form: Conv with an activation, with Z and an activation, with Z alone;
    ConvTranspose, Gemm and MatMul (with its bias) with activations; MatMul with a bias alone.
    Each fused node stands for several user layers (its origins)."""
    rng = np.random.default_rng(0)
    g = qc.Graph("fused_forms")
    x = g.add_input("x", TensorType("f32", ("N", 3, 6, 6)))
    same = {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}

    def add(op, inputs, attrs, name):
        layers = (name, f"{name}_bn", f"{name}_act")
        return g.add_node(op, inputs, attrs, name=name, origins=layers).outputs[0]

    y = add("Conv", [x, _const(g, rng, (4, 3, 3, 3), "w1"), _const(g, rng, (4,), "b1")],
            {**same, "activation": "Relu"}, "conv_relu")
    y = add("Conv", [y, _const(g, rng, (4, 4, 3, 3), "w2"), _const(g, rng, (4,), "b2"), y],
            {**same, "activation": "Clip", "activation_params": (0.0, 6.0)}, "conv_res_relu6")
    y = add("Conv", [y, _const(g, rng, (4, 4, 3, 3), "w3"), None, y], same, "conv_res")
    y = add("ConvTranspose", [y, _const(g, rng, (4, 2, 1, 1), "wt"),
                              _const(g, rng, (2,), "bt")],
            {"activation": "HardSigmoid", "activation_params": (0.2, 0.5)}, "deconv_hsig")
    y = g.add_node("Flatten", [y], {"axis": 1}, name="flatten").outputs[0]
    y = add("Gemm", [y, _const(g, rng, (16, 72), "wg"), _const(g, rng, (16,), "bg")],
            {"transB": 1, "activation": "LeakyRelu", "activation_params": (0.1,)}, "gemm_leaky")
    y = add("MatMul", [y, _const(g, rng, (16, 8), "wm"), _const(g, rng, (8,), "bm")],
            {"activation": "HardSwish"}, "matmul_hswish")
    y = add("MatMul", [y, _const(g, rng, (8, 5), "wo"), _const(g, rng, (5,), "bo")], {},
            "matmul_bias")
    g.set_outputs([y])
    g.verify()
    return g


def test_fused_forms_are_written_with_standard_ops(tmp_path: Path) -> None:
    g = fused_forms()
    path = _exported(g, tmp_path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    written = [(n.name, n.op_type) for n in model.graph.node]
    assert written == [
        ("conv_relu", "Conv"), ("conv_relu/relu", "Relu"),
        ("conv_res_relu6", "Conv"), ("conv_res_relu6/residual", "Add"),
        ("conv_res_relu6/clip", "Clip"),
        ("conv_res", "Conv"), ("conv_res/residual", "Add"),
        ("deconv_hsig", "ConvTranspose"), ("deconv_hsig/hardsigmoid", "HardSigmoid"),
        ("flatten", "Flatten"),
        ("gemm_leaky", "Gemm"), ("gemm_leaky/leakyrelu", "LeakyRelu"),
        ("matmul_hswish", "MatMul"), ("matmul_hswish/bias", "Add"),
        ("matmul_hswish/hardswish", "HardSwish"),
        ("matmul_bias", "MatMul"), ("matmul_bias/bias", "Add"),
    ]
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in model.graph.node}
    assert attrs["gemm_leaky/leakyrelu"] == {"alpha": pytest.approx(0.1)}
    assert attrs["deconv_hsig/hardsigmoid"] == {"alpha": pytest.approx(0.2),
                                                "beta": pytest.approx(0.5)}
    x = np.random.default_rng(1).normal(0, 2, (3, 3, 6, 6)).astype(np.float32)
    ours = qc.compile(g).run({"x": x})
    for rewrites in (False, True):
        theirs = ort_session(path, optimize=rewrites).run(None, {"x": x})
        assert _peak_error(ours, theirs, g) <= PEAK_TOL
    back = qc.load_onnx(path)
    np.testing.assert_array_equal(qc.compile(back).run({"x": x})["matmul_bias"],
                                  ours["matmul_bias"])
    assert _layers(qc.optimize(back)) == _layers(g)


def test_every_node_records_the_user_layers_it_computes() -> None:
    model = to_onnx(fused_forms())
    for node in model.graph.node:
        layer = node.name.split("/")[0]
        expected = [layer] if layer == "flatten" else [layer, f"{layer}_bn", f"{layer}_act"]
        meta = {p.key: p.value for p in node.metadata_props}
        assert json.loads(meta[ORIGINS_KEY]) == expected, node.name
        assert node.doc_string == f"qcompiler layers: {', '.join(expected)}"
    assert model.opset_import[0].version == EXPORT_OPSET == 21
    assert model.producer_name == "qcompiler"
    split = qc.from_onnx(model).node("conv_res_relu6/clip")
    assert split.origins == ("conv_res_relu6", "conv_res_relu6_bn", "conv_res_relu6_act")


@pytest.mark.parametrize("recorded", ["not json", "[]", '["a", 3]', '{"a": 1}'])
def test_malformed_recorded_origins_are_a_load_error(recorded: str) -> None:
    model = to_onnx(fused_forms())
    entry = model.graph.node[0].metadata_props[0]
    entry.value = recorded
    with pytest.raises(qc.ModelLoadError, match="conv_relu.*JSON list of layer names"):
        qc.from_onnx(model)


def test_symbolic_dims_become_dim_params_and_unknown_ones_stay_unknown() -> None:
    g = qc.Graph("dims")
    x = g.add_input("x", TensorType("f32", ("batch", "?", 4)))
    g.set_outputs([g.add_node("Relu", [x], name="relu").outputs[0]])
    model = to_onnx(g)
    for info in (model.graph.input[0], model.graph.output[0]):
        dims = info.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert not dims[1].HasField("dim_param") and not dims[1].HasField("dim_value")
        assert dims[2].dim_value == 4
    out = ort_session(model).run(None, {"x": np.full((2, 3, 4), -1, np.float32)})[0]
    np.testing.assert_array_equal(out, np.zeros((2, 3, 4), np.float32))


@pytest.fixture
def foreign_op():
    """A registered op ONNX has no spelling for (removed again after the test)."""

    @ops.op("NotInOnnx", ["x"], ["y"], infer=lambda ctx: [ops.Out(ctx.dtype(0), ctx.shape(0))])
    def not_in_onnx(x):
        return x

    yield "NotInOnnx"
    del ops.OPS["NotInOnnx"]


def test_an_op_onnx_lacks_is_refused_and_nothing_is_written(foreign_op: str,
                                                            tmp_path: Path) -> None:
    g = qc.Graph("foreign")
    x = g.add_input("x", TensorType("f32", (2,)))
    node = g.add_node(foreign_op, [x], name="custom", origins=("user_layer",))
    g.set_outputs([node.outputs[0]])
    target = tmp_path / "model.onnx"
    target.write_bytes(b"earlier export")
    with pytest.raises(qc.ExportError, match="NotInOnnx") as info:
        qc.export_onnx(g, target)
    assert "custom" in str(info.value) and "user_layer" in str(info.value)
    assert info.value.unsupported == {"NotInOnnx": ["custom"]}
    assert isinstance(info.value, qc.SaveError)
    assert target.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_directory_or_a_missing_folder_is_a_save_error(tmp_path: Path) -> None:
    g = qc.from_onnx(_model("digits"))
    with pytest.raises(qc.SaveError, match="directory"):
        qc.export_onnx(g, tmp_path)
    for folder in (f"{tmp_path}/exports/", f"{tmp_path}/model.onnx/"):  # not there yet
        with pytest.raises(qc.SaveError, match="names a directory"):
            qc.export_onnx(g, folder)
    with pytest.raises(qc.SaveError, match="nothing was written"):
        qc.export_onnx(g, tmp_path / "missing" / "model.onnx")
    with pytest.raises(qc.ExportError, match="qc.Graph"):
        qc.export_onnx(_model("digits"), tmp_path / "model.onnx")  # type: ignore[arg-type]
    with pytest.raises(qc.SaveError, match="file path"):
        qc.export_onnx(g, 3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"earlier export")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(qc.SaveError, match="No space left"):
        qc.export_onnx(qc.from_onnx(_model("digits")), target)
    assert target.read_bytes() == b"earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


# -- QDQ graphs -----------------------------------------------------------------------------------


def _steps_apart(ours: np.ndarray, theirs: np.ndarray, step: float) -> np.ndarray:
    return np.abs(ours.astype(np.float64) - theirs) / step


def _within_one_step_in_onnxruntime(graph: qc.Graph, model: onnx.ModelProto, label: str) -> None:
    """The exported ``model`` of QDQ ``graph`` on the digits test images: onnxruntime as
    written and with its QDQ rewrites on exact integer kernels is within one output step of
    our simulation, with the same accuracy; its default AVX2 session is only printed."""
    x = qdq_models.DATA["test_x"]
    ours = qc.compile(graph).run({"image": x})[graph.outputs[0].name]
    step = qdq.params_of(graph.outputs[0].producer).scale[0]
    sessions = (("as written", ort_session(model, optimize=False), True),
                ("rewritten, exact kernels", qdq_models.precise_session(model), True),
                ("default", ort_session(model), False))
    for who, session, checked in sessions:
        theirs = session.run(None, {"image": x})[0]
        apart = _steps_apart(ours, theirs, step)
        print(f"\n{label}, onnxruntime {who}: outputs differing "
              f"{float((apart > 0).mean()):.4%}, max {apart.max():.2f} steps; accuracy ours "
              f"{qdq_models.accuracy(ours):.4f}, onnxruntime {qdq_models.accuracy(theirs):.4f}")
        if checked:
            assert apart.max() <= 1 + 1e-4
            assert qdq_models.accuracy(theirs) == qdq_models.accuracy(ours)


@pytest.mark.parametrize("scheme", qdq_models.SCHEMES, ids=qdq_models._scheme_id)
def test_an_imported_qdq_graph_exports_and_runs_as_we_simulate_it(
        scheme: tuple[bool, str], tmp_path: Path) -> None:
    """onnxruntime's quantize_static model, imported then exported: onnxruntime runs it as
    written and with its QDQ rewrites (exact integer kernels) within one output step of the
    numpy simulation; it is the same graph when read back."""
    g = qc.from_onnx(qdq_models.quantized_digits(*scheme))
    path = _exported(g, tmp_path)
    assert qc.load_onnx(path) == g
    model = onnx.load(str(path))
    x = qdq_models.DATA["test_x"]
    ours = qc.compile(g).run({"image": x})["logits"]
    step = qdq.params_of(g.outputs[0].producer).scale[0]
    for who, session in (("as written", ort_session(model, optimize=False)),
                         ("rewritten", qdq_models.precise_session(model))):
        apart = _steps_apart(ours, session.run(None, {"image": x})[0], step)
        print(f"\n{qdq_models._scheme_id(scheme)}, onnxruntime {who}: outputs differing "
              f"{float((apart > 0).mean()):.4%}, max {apart.max():.2f} steps")
        assert apart.max() <= 1 + 1e-4


def _calibrated_ranges(g: qc.Graph, x: np.ndarray) -> dict[str, tuple[float, float]]:
    ranges = {g.inputs[0].name: (float(x.min()), float(x.max()))}

    def record(interp: qc.Interpreter, node: qc.Node, outputs: list[np.ndarray]) -> None:
        for value, array in zip(node.outputs, outputs):
            ranges[value.name] = (float(array.min()), float(array.max()))

    qc.Interpreter(g, after=record).run({g.inputs[0].name: x})
    return ranges


def qdq_digits(per_channel: bool, activations: str) -> qc.Graph:
    """The fused digits model in QDQ form, built with qcompiler.qdq and quant_math: Q/DQ on
    every Conv/Gemm input and output (min/max over the calibration images), int8 symmetric
    weights and int32 biases at ``s_in * s_w`` read through DQ."""
    g = qc.optimize(qc.load_onnx(qdq_models.MODEL))
    ranges = _calibrated_ranges(g, qdq_models.DATA["calib_x"])
    weighted = [n for n in g.nodes if n.op in WEIGHTED]
    activations_of = {v.name: v for n in weighted for v in (n.inputs[0], n.outputs[0])}
    for value in activations_of.values():
        qdq.insert_qdq(g, value, quant_math.params_from_range(*ranges[value.name],
                                                              dtype=activations))
    for node in weighted:
        w, b = node.inputs[1], node.inputs[2]
        _, w_params = quant_math.quantize_weight(w.data, axis=weight_axis(node.op, node.attrs),
                                                 per_channel=per_channel)
        s_in = qdq.params_of(node.inputs[0].producer).scale[0]
        q_b, b_params, w_params = quant_math.quantize_bias(b.data, s_in, w_params)
        for position, data, params in ((1, quant_math.quantize(w.data, w_params), w_params),
                                       (2, q_b, b_params)):
            name = f"{node.inputs[position].name}.quantized"
            constant = qdq.add_quantized_constant(g, data, params, name)
            node.set_input(position, qdq.add_dequantize(g, constant, before=node))
    g = qc.PassManager("canonicalize").run(g).graph
    assert qdq.problems(g) == []
    return g


@pytest.mark.parametrize("scheme", qdq_models.SCHEMES, ids=qdq_models._scheme_id)
def test_a_qdq_graph_we_build_runs_in_onnxruntime_within_one_output_step(
        scheme: tuple[bool, str], tmp_path: Path) -> None:
    """Our QDQ digits model exported: onnxruntime as written, and with its QDQ rewrites on
    exact integer kernels, within one step of the output's quantization of the numpy
    simulation (mismatch rate printed; onnxruntime's default AVX2 session printed too)."""
    g = qdq_digits(*scheme)
    path = _exported(g, tmp_path)
    back = qc.load_onnx(path)
    assert _layers(qc.optimize(back)) == _layers(g) and qdq.problems(back) == []
    _within_one_step_in_onnxruntime(g, onnx.load(str(path)), qdq_models._scheme_id(scheme))


# -- ops of the quantization pipeline that ONNX spells otherwise -----------------------------------


def test_observers_are_dropped_and_an_observed_output_keeps_its_name(tmp_path: Path) -> None:
    g = qc.PassManager("canonicalize,insert-observers").run(
        qc.load_onnx(qdq_models.MODEL)).graph
    observers = len(g.find_nodes("Observe"))
    assert observers >= 10
    model = onnx.load(str(_exported(g, tmp_path)))
    assert {n.op_type for n in model.graph.node}.isdisjoint({"Observe", "Identity"})
    x = qdq_models.DATA["test_x"][:16]
    ours = qc.compile(g).run({"image": x})["logits"]
    assert _peak_error({"logits": ours}, ort_session(model).run(None, {"image": x}),
                       g) <= PEAK_TOL

    h = qc.Graph("observed_output")
    value = h.add_input("x", TensorType("f32", (3,)))
    h.set_outputs([h.add_node("Observe", [value], name="watch").outputs[0]])
    model = to_onnx(h)
    assert [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node] == [
        ("Identity", ["x"], ["watch"])]


def _requantize_graph(per_axis: bool) -> qc.Graph:
    """Requantize of an int8 input [256, 2]: per tensor, or with per-axis output scales."""
    g = qc.Graph("requantize")
    x = g.add_input("x", TensorType("i8", (256, 2)))
    out_scale = np.array([0.37, 0.052], np.float32) if per_axis else np.array(0.37, np.float32)
    out_zero = np.array([3, -7], np.int8) if per_axis else np.array(-5, np.int8)
    operands = [x, g.add_constant(np.array(0.1, np.float32), "x_scale"),
                g.add_constant(np.array(2, np.int8), "x_zero"),
                g.add_constant(out_scale, "y_scale"), g.add_constant(out_zero, "y_zero")]
    g.set_outputs([g.add_node("Requantize", operands, {"axis": 1}, name="rq").outputs[0]])
    return g


@pytest.mark.parametrize("per_axis", [False, True])
def test_requantize_is_written_as_dq_then_q_bit_exact(per_axis: bool) -> None:
    g = _requantize_graph(per_axis)
    model = to_onnx(g)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "QuantizeLinear"]
    x = np.repeat(np.arange(-128, 128, dtype=np.int8)[:, None], 2, axis=1)  # every int8
    ours = qc.compile(g).run({"x": x})["rq"]
    for rewrites in (False, True):
        np.testing.assert_array_equal(ort_session(model, optimize=rewrites).run(
            None, {"x": x})[0], ours)


@pytest.mark.parametrize(("op", "attrs"), [
    ("Conv", {"dilations": (2, 3), "auto_pad": "SAME_UPPER"}),
    ("Conv", {"dilations": (2, 1), "strides": (2, 2), "auto_pad": "SAME_LOWER"}),
    ("MaxPool", {"kernel_shape": (1, 1), "strides": (4, 3), "auto_pad": "SAME_UPPER"}),
    ("MaxPool", {"kernel_shape": (3, 2), "dilations": (2, 2), "auto_pad": "SAME_LOWER"}),
    ("AveragePool", {"kernel_shape": (1, 2), "strides": (4, 3), "auto_pad": "SAME_UPPER"}),
])
def test_same_padding_onnxruntime_refuses_is_written_as_explicit_pads(op: str,
                                                                     attrs: dict) -> None:
    """onnxruntime refuses dilated SAME windows and SAME padding that comes out negative
    before the spec clamps it at 0: the exporter writes the pads the spec computes."""
    rng = np.random.default_rng(0)
    g = qc.Graph("same")
    x = g.add_input("x", TensorType("f32", (2, 3, 7, 5)))
    operands = [x]
    if op == "Conv":
        attrs = {**attrs, "kernel_shape": (3, 2)}
        operands.append(g.add_constant(rng.normal(size=(4, 3, 3, 2)).astype(np.float32), "w"))
    g.set_outputs([g.add_node(op, operands, attrs, name="window").outputs[0]])
    model = to_onnx(g)
    written = {a.name for a in model.graph.node[0].attribute}
    assert "auto_pad" not in written and "pads" in written
    feed = rng.normal(size=(2, 3, 7, 5)).astype(np.float32)
    ours = qc.compile(g).run({"x": feed})["window"]
    theirs = ort_session(model).run(None, {"x": feed})[0]
    assert theirs.shape == ours.shape
    assert _float_error(ours, theirs) <= 1e-6


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_an_integer_global_max_pool_is_written_as_reduce_max_bit_exact(dtype: type) -> None:
    """cancel-qdq moves a DQ below GlobalMaxPool; ONNX's GlobalMaxPool takes floats only."""
    g = qc.Graph("pool")
    x = g.add_input("x", TensorType(qc.DType.from_numpy(dtype), (2, 4, 8, 16)))
    g.set_outputs([g.add_node("GlobalMaxPool", [x], name="pool").outputs[0]])
    model = to_onnx(g)
    assert [n.op_type for n in model.graph.node] == ["ReduceMax"]
    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)  # every value, shuffled
    x = np.random.default_rng(0).permutation(np.tile(values, 4)).reshape(2, 4, 8, 16)
    np.testing.assert_array_equal(ort_session(model).run(None, {"x": x})[0],
                                  qc.compile(g).run({"x": x})["pool"])


def test_requantize_with_another_rounding_is_refused() -> None:
    g = _requantize_graph(False)
    node = g.node("rq")
    node.attrs["rounding"] = "fixed_point"
    with pytest.raises(qc.ExportError, match="Requantize"):
        to_onnx(g)


def test_a_cancelled_qdq_graph_exports_and_runs_within_one_output_step(tmp_path: Path) -> None:
    g = qc.PassManager("canonicalize,cancel-qdq").run(qdq_digits(True, "i8")).graph
    model = onnx.load(str(_exported(g, tmp_path)))
    x = qdq_models.DATA["test_x"]
    ours = qc.compile(g).run({"image": x})[g.outputs[0].name]
    step = qdq.params_of(g.outputs[0].producer).scale[0]
    for session in (ort_session(model, optimize=False), qdq_models.precise_session(model)):
        apart = _steps_apart(ours, session.run(None, {"image": x})[0], step)
        assert apart.max() <= 1 + 1e-4


@pytest.mark.parametrize("scheme", qdq_models.SCHEMES, ids=qdq_models._scheme_id)
def test_the_output_of_qc_quantize_exports_and_runs_within_one_output_step(
        scheme: tuple[bool, str], tmp_path: Path) -> None:
    config = qc.QuantConfig(per_channel=scheme[0], activation_dtype=scheme[1], lower=False)
    q = qc.quantize(qc.load_onnx(qdq_models.MODEL), qdq_models.DATA["calib_x"], config,
                    progress=False)
    path = _exported(q, tmp_path)
    assert _layers(qc.optimize(qc.load_onnx(path))) == _layers(q)
    _within_one_step_in_onnxruntime(q, onnx.load(str(path)),
                                    f"qc.quantize {qdq_models._scheme_id(scheme)}")


# -- random graphs --------------------------------------------------------------------------------


def _onnxruntime_runs(g: qc.Graph) -> bool:
    """Whether onnxruntime runs the graph as the spec says: it refuses pooling pads not
    smaller than the kernel, and its SAME ConvTranspose output is narrower than the spec's
    (see qcompiler/ops/nn.py), though both are valid ONNX."""
    for node in g.nodes:
        if node.op == "ConvTranspose" and str(node.attrs.get("auto_pad", "")).startswith("SAME"):
            return False
        kernel = tuple(node.attrs.get("kernel_shape", ()))
        if node.op.endswith("Pool") and any(p >= k for p, k in zip(node.attrs.get("pads", ()),
                                                                      kernel + kernel)):
            return False
    return True


def _exported_runs_as_simulated(g: qc.Graph, feeds: dict[str, np.ndarray]) -> None:
    """``g`` exported runs in onnxruntime (as written) as the Interpreter runs ``g``: integer
    outputs equal, float ones within ``_float_error`` 1e-6; read back, it computes ``g``'s
    outputs bit for bit."""
    model = to_onnx(g)
    ours = run_graph(g, feeds)
    theirs = ort_session(model, optimize=False).run(None, feeds)
    for value, ref in zip(g.outputs, theirs, strict=True):
        got = ours[value.name]
        assert got.shape == ref.shape and got.dtype == ref.dtype, value.name
        if value.dtype.is_integer:
            np.testing.assert_array_equal(got, ref, err_msg=value.name)
        else:
            assert _float_error(got, ref) <= 1e-6, value.name
    again = run_graph(qc.from_onnx(model), feeds)
    for value in g.outputs:
        np.testing.assert_array_equal(again[value.name], ours[value.name])


def _float_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max|got - ref| relative to the output's peak magnitude, or absolute below a peak of 1
    (an output near zero after cancellation keeps the rounding of larger intermediates)."""
    peak = max(float(np.abs(ref).max(initial=0.0)), 1.0)
    return float(np.abs(got - ref).max(initial=0.0)) / peak


def _uses_extension(g: qc.Graph) -> bool:
    """Whether a node of ``g`` is in a fused form (an activation, Conv's Z, MatMul's bias)."""
    return any(n.attrs.get("activation") or (n.op == "Conv" and len(n.inputs) > 3)
               or (n.op == "MatMul" and len(n.inputs) > 2) for n in g.nodes)


# the builders of graphs that the float passes turn into fused forms
FUSIBLE = ["conv", "conv_bn", "conv_transpose", "gemm", "matmul", "bias_add", "residual_add",
           "relu", "clip", "leaky_relu", "hard_sigmoid", "hard_swish", "hard_swish_decomposed"]


def test_random_float_graphs_export_run_in_onnxruntime_and_read_back_bit_exact() -> None:
    """Graphs of every builder as drawn, and fused graphs: onnxruntime (as written) within float
    tolerance (measured worst over 150 graphs: 2.5e-7 of the output's peak, or absolute below a
    peak of 1), and the graph read back computes bit-exact what the original does."""
    seen = {"graphs": 0, "fused forms": 0}

    def check_one(g: qc.Graph, feeds: dict[str, np.ndarray]) -> None:
        _exported_runs_as_simulated(g, feeds)
        seen["graphs"] += 1
        seen["fused forms"] += _uses_extension(g)

    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        drawn, fused = data.draw(graphs()), qc.optimize(data.draw(graphs(FUSIBLE, min_steps=3)))
        for g in (drawn, fused):
            if _onnxruntime_runs(g):
                check_one(g, data.draw(inputs(g)))

    check()
    assert seen["graphs"] >= 20 and seen["fused forms"] >= 5, seen


def test_random_qdq_graphs_export_and_run_in_onnxruntime_as_we_simulate_them() -> None:
    """QDQ graphs (before and after cancel-qdq, so Requantize and integer data movement
    appear): integer outputs equal onnxruntime's exactly, float outputs (Sigmoid and Tanh of
    dequantized values) within float tolerance (measured over 400 graphs: integer outputs
    always equal, float ones at most 1.4e-7 of the peak apart); read back bit-exact."""
    seen = {"graphs": 0, "Requantize": 0, "integer data movement": 0}

    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        g = data.draw(qdq_graphs())
        if data.draw(st.booleans()):
            g = qc.PassManager("cancel-qdq").run(g).graph
        assume(_onnxruntime_runs(g))
        _exported_runs_as_simulated(g, data.draw(inputs(g)))
        seen["graphs"] += 1
        seen["Requantize"] += bool(g.find_nodes("Requantize"))
        seen["integer data movement"] += any(
            n.op in DATA_MOVEMENT and n.inputs[0].dtype.is_integer for n in g.nodes)

    check()
    assert seen["graphs"] >= 10 and all(seen.values()), seen


def test_a_quantized_constant_two_dqs_share_runs_on_exact_int8_kernels(tmp_path: Path) -> None:
    """qc.quantize's MLP (LayerNorm, GELU) shares GELU's quantized 0.5 and 1.0 between DQ
    nodes; onnxruntime's ``session.x64quantprecision`` rewrites each weight's integer constant
    in place and refuses a shared one, so the export gives each DQ its own (measured: 7.2e-8 of
    the peak apart, float32 rounding); the originals the copies replace are not written."""
    source = EXPORTED / "torch_mlp_layernorm_gelu_opset17.onnx"
    model = onnx.load(str(source))
    calib = [_batch_feeds(model, 2, seed=k) for k in range(3)]
    q = qc.quantize(qc.load_onnx(source), calib, qc.QuantConfig(lower=False), progress=False)
    shared = [v for v in q.constants.values() if v.type.quant is not None
              and sum(u.op == qdq.DEQUANTIZE for u in v.users) > 1]
    assert shared  # what the case is about is in the graph
    path = _exported(q, tmp_path)
    written = onnx.load(str(path))
    read = {name for node in written.graph.node for name in node.input}
    assert [t.name for t in written.graph.initializer if t.name not in read] == []
    feeds = _batch_feeds(model, 4, seed=7)
    ours = qc.compile(q).run(feeds)
    for session in (ort_session(path, optimize=False), qdq_models.precise_session(written)):
        assert _peak_error(ours, session.run(None, feeds), q) <= PEAK_TOL
