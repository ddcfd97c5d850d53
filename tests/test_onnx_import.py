"""ONNX import: older-opset idioms against onnxruntime, constants, symbolic shapes, shape-subgraph
folding, and every load/unsupported error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
import zoo
from onnx import TensorProto, helper, numpy_helper
from ort_helpers import onnx_type, run_model

import qcompiler as qc
from qcompiler.folding import eliminate_dead_code, fold_constants

RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict[str, Any], outputs: Sequence[str],
               opset: int, inits: dict[str, np.ndarray] | None = None,
               ir_version: int | None = None) -> onnx.ModelProto:
    """``inputs`` maps names to arrays (their dtype and shape) or to (elem_type, shape)."""
    infos = []
    for name, spec in inputs.items():
        elem, shape = ((onnx_type(spec.dtype), spec.shape) if isinstance(spec, np.ndarray)
                       else spec)
        infos.append(helper.make_tensor_value_info(name, elem, shape))
    graph = helper.make_graph(
        list(nodes), "g", infos, [helper.ValueInfoProto(name=o) for o in outputs],
        initializer=[numpy_helper.from_array(a, n) for n, a in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version or min(model.ir_version, 7 if opset <= 12 else 10)
    return model


def check_against_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                      input_shapes: dict | None = None) -> qc.Graph:
    """Import, compile with the numpy backend, and compare every output with onnxruntime."""
    graph = qc.from_onnx(model, input_shapes)
    got = qc.compile(graph, backend="numpy").run(feeds)
    for vi, ref in zip(model.graph.output, run_model(model, feeds), strict=True):
        assert got[vi.name].shape == ref.shape, vi.name
        np.testing.assert_allclose(got[vi.name], ref, rtol=1e-5, atol=1e-6, err_msg=vi.name)
    return graph


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], name: str | None = None,
         **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=name or f"{op.lower()}_node",
                            **attrs)


# -- older-opset idioms, each checked against onnxruntime running the original model --------------

X4 = f32(2, 3, 4, 5)
IMG = f32(1, 2, 4, 6)
SCALES2 = np.array([1, 1, 2, 2], np.float32)

IDIOMS: dict[str, tuple[int, list, dict, list, dict]] = {
    # id: (opset, nodes, inputs, outputs, initializers)
    "clip-min-max-attrs-9": (9, [node("Clip", ["x"], ["y"], min=-0.5, max=0.5)],
                             {"x": X4}, ["y"], {}),
    "clip-max-attr-only-9": (9, [node("Clip", ["x"], ["y"], max=0.2)], {"x": X4}, ["y"], {}),
    "clip-max-input-only-12": (12, [node("Clip", ["x", "", "hi"], ["y"])], {"x": X4}, ["y"],
                               {"hi": np.array(0.3, np.float32)}),
    "squeeze-unsqueeze-axes-attr-11": (
        11, [node("Unsqueeze", ["x"], ["u"], axes=[0, 3]), node("Squeeze", ["u"], ["y"], axes=[0])],
        {"x": X4}, ["y"], {}),
    "split-attr-11": (11, [node("Split", ["x"], ["a", "b"], axis=1, split=[1, 2])], {"x": X4},
                      ["a", "b"], {}),
    "split-equal-11": (11, [node("Split", ["x"], ["a", "b"], axis=3)], {"x": f32(2, 3, 4, 6)},
                       ["a", "b"], {}),
    "split-equal-13": (13, [node("Split", ["x"], ["a", "b", "c"], axis=1)], {"x": X4},
                       ["a", "b", "c"], {}),
    "reduce-axes-attr-11": (
        11, [node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
             node("ReduceSum", ["m"], ["y"], axes=[-1])], {"x": X4}, ["y"], {}),
    "reduce-axes-attr-13": (13, [node("ReduceMax", ["x"], ["y"], axes=[2, 3])], {"x": X4}, ["y"],
                            {}),
    "reduce-all-axes-11": (11, [node("ReduceMean", ["x"], ["y"], keepdims=0)], {"x": X4}, ["y"],
                           {}),
    "pad-attrs-10": (10, [node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 2, 1], value=1.5)],
                     {"x": X4}, ["y"], {}),
    "pad-reflect-attrs-10": (10, [node("Pad", ["x"], ["y"], mode="reflect",
                                       pads=[0, 0, 1, 2, 0, 0, 2, 1])], {"x": X4}, ["y"], {}),
    "slice-attrs-9": (9, [node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[2, 3])],
                      {"x": X4}, ["y"], {}),
    "upsample-nearest-9": (9, [node("Upsample", ["x", "s"], ["y"], mode="nearest")],
                           {"x": IMG}, ["y"], {"s": SCALES2}),
    "upsample-linear-9": (9, [node("Upsample", ["x", "s"], ["y"], mode="linear")],
                          {"x": IMG}, ["y"], {"s": SCALES2}),
    "resize-nearest-10": (10, [node("Resize", ["x", "s"], ["y"], mode="nearest")],
                          {"x": IMG}, ["y"], {"s": np.array([1, 1, 1.5, 2], np.float32)}),
    "resize-nearest-shrink-10": (10, [node("Resize", ["x", "s"], ["y"])], {"x": IMG}, ["y"],
                                 {"s": np.array([1, 1, 0.5, 0.6], np.float32)}),
    "resize-linear-10": (10, [node("Resize", ["x", "s"], ["y"], mode="linear")], {"x": IMG},
                         ["y"], {"s": SCALES2}),
    "resize-empty-roi-scales-11": (
        11, [node("Resize", ["x", "roi", "scales", "sizes"], ["y"], mode="linear")], {"x": IMG},
        ["y"], {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
                "sizes": np.array([1, 2, 7, 9], np.int64)}),
    "resize-empty-roi-name-13": (
        13, [node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], {"x": IMG}, ["y"],
        {"scales": SCALES2}),
    "batchnorm-9": (9, [node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])],
                    {"x": X4}, ["y"], {"g": np.array([1, 2, 0.5], np.float32),
                                       "b": np.array([0, 1, -1], np.float32),
                                       "m": np.array([0.1, 0.2, 0.3], np.float32),
                                       "v": np.array([1, 2, 3], np.float32)}),
    "dropout-ratio-attr-mask-unused-10": (
        10, [node("Dropout", ["x"], ["d", "mask"], ratio=0.3), node("Relu", ["d"], ["y"])],
        {"x": X4}, ["y"], {}),
    "dropout-training-false-12": (
        12, [node("Dropout", ["x", "r", "t"], ["y"])], {"x": X4}, ["y"],
        {"r": np.array(0.5, np.float32), "t": np.array(False)}),
    "identity-and-dropout-output-9": (
        9, [node("Identity", ["x"], ["i"]), node("Dropout", ["i"], ["y"])], {"x": X4}, ["y"], {}),
    "softmax-axis1-rank4-11": (11, [node("Softmax", ["x"], ["y"], axis=1)], {"x": X4}, ["y"], {}),
    "softmax-default-axis-rank3-9": (9, [node("Softmax", ["x"], ["y"])], {"x": f32(2, 3, 4)},
                                     ["y"], {}),
    "softmax-axis0-11": (11, [node("Softmax", ["x"], ["y"], axis=0)], {"x": f32(3, 4)}, ["y"], {}),
    "logsoftmax-axis2-rank4-9": (9, [node("LogSoftmax", ["x"], ["y"], axis=2)], {"x": X4}, ["y"],
                                 {}),
    "softmax-last-axis-11": (11, [node("Softmax", ["x"], ["y"], axis=-1)], {"x": X4}, ["y"], {}),
    "gemm-without-c-11": (11, [node("Gemm", ["a", "w"], ["y"], transB=1, alpha=0.5)],
                          {"a": f32(3, 4)}, ["y"], {"w": f32(5, 4)}),
    "cast-to-code-9": (9, [node("Cast", ["x"], ["i"], to=TensorProto.INT32),
                           node("Cast", ["i"], ["y"], "back", to=TensorProto.FLOAT)],
                       {"x": X4 * 3}, ["y"], {}),
    "maxpool-indices-unused-12": (
        12, [node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], strides=[2, 2])],
        {"x": X4}, ["y"], {}),
}


@pytest.mark.parametrize("case", sorted(IDIOMS))
def test_older_opset_idiom_matches_onnxruntime(case: str) -> None:
    opset, nodes, inputs, outputs, inits = IDIOMS[case]
    model = make_model(nodes, inputs, outputs, opset, inits)
    graph = check_against_ort(model, dict(inputs))
    assert [v.name for v in graph.outputs] == outputs
    for n in graph.nodes:  # opset-21 form: the attributes that became inputs are gone
        assert not {"min", "max", "pads", "value", "starts", "split", "scales"} & set(n.attrs)
        assert not (n.op in ("Squeeze", "Unsqueeze", "ReduceMean", "ReduceSum", "ReduceMax")
                    and "axes" in n.attrs)
    assert "Upsample" not in graph.op_counts()


def test_translations_use_opset21_forms() -> None:
    ops_of = {}
    for case in ("clip-max-attr-only-9", "split-equal-11", "softmax-axis1-rank4-11",
                 "softmax-last-axis-11", "upsample-nearest-9", "resize-nearest-shrink-10",
                 "maxpool-indices-unused-12",
                 "dropout-ratio-attr-mask-unused-10", "resize-empty-roi-scales-11"):
        opset, nodes, inputs, outputs, inits = IDIOMS[case]
        ops_of[case] = qc.from_onnx(make_model(nodes, inputs, outputs, opset, inits))
    clip = ops_of["clip-max-attr-only-9"].nodes[0]
    assert clip.inputs[1] is None and float(clip.inputs[2].data) == pytest.approx(0.2)
    assert ops_of["split-equal-11"].nodes[0].attrs["num_outputs"] == 2
    coerced = ops_of["softmax-axis1-rank4-11"]
    assert coerced.op_counts() == {"Flatten": 1, "Softmax": 1, "Reshape": 1}
    assert coerced.find_nodes("Softmax")[0].name == "softmax_node"
    assert ops_of["softmax-last-axis-11"].op_counts() == {"Softmax": 1}
    up = ops_of["upsample-nearest-9"].nodes[0]
    assert (up.op, up.attrs["coordinate_transformation_mode"], up.attrs["nearest_mode"]) == (
        "Resize", "asymmetric", "floor")
    assert ops_of["resize-nearest-shrink-10"].nodes[0].attrs["nearest_mode"] == "ceil"
    for case in ("maxpool-indices-unused-12",
                 "dropout-ratio-attr-mask-unused-10"):
        assert all(len(n.outputs) == 1 for n in ops_of[case].nodes), case
    dropout = ops_of["dropout-ratio-attr-mask-unused-10"].node("dropout_node")
    assert dropout.op == "Dropout" and float(dropout.inputs[1].data) == pytest.approx(0.3)
    resize = ops_of["resize-empty-roi-scales-11"].nodes[0]
    assert resize.inputs[1] is None and resize.inputs[2] is None


def test_coerced_softmax_keeps_a_symbolic_batch() -> None:
    model = make_model([node("Softmax", ["x"], ["y"], axis=1)],
                       {"x": (TensorProto.FLOAT, ["N", 3, 4])}, ["y"], 11)
    graph = qc.from_onnx(model)
    assert graph.outputs[0].shape == ("N", 3, 4)
    exe = qc.compile(graph, backend="numpy")
    for batch in (1, 3):
        x = f32(batch, 3, 4)
        np.testing.assert_allclose(exe.run({"x": x})["y"], run_model(model, {"x": x})[0],
                                   rtol=1e-5, atol=1e-6)


# -- constants ----------------------------------------------------------------------------------


def test_constant_node_forms_become_graph_constants() -> None:
    nodes = [
        helper.make_node("Constant", [], ["t"], value=numpy_helper.from_array(
            np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))),
        helper.make_node("Constant", [], ["f"], value_float=0.5),
        helper.make_node("Constant", [], ["fs"], value_floats=[1.0, -1.0, 2.0, 0.0]),
        helper.make_node("Constant", [], ["i"], value_int=3),
        helper.make_node("Constant", [], ["is"], value_ints=[2, -1]),
        node("Mul", ["x", "f"], ["a"]),
        helper.make_node("Add", ["a", "t"], ["b"], name="add_t"),
        helper.make_node("Add", ["b", "fs"], ["c"], name="add_fs"),
        helper.make_node("Reshape", ["c", "is"], ["y"], name="reshape"),
        helper.make_node("Cast", ["i"], ["k"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["y", "k"], ["z"], name="scale"),
    ]
    model = make_model(nodes, {"x": f32(3, 4)}, ["z"], 13)
    graph = check_against_ort(model, {"x": f32(3, 4)})
    assert "Constant" not in graph.op_counts() and "Cast" not in graph.op_counts()
    assert graph.value("f").data.dtype == np.float32 and graph.value("f").shape == ()
    assert graph.value("fs").shape == (4,)
    assert graph.value("k").is_constant  # Cast of a constant int folded under its ONNX name
    assert graph.node("reshape").outputs[0].shape == (2, 6)


def test_initializers_listed_as_inputs_are_constants() -> None:
    w = f32(4, 2)
    model = make_model([node("MatMul", ["x", "w"], ["y"])],
                       {"x": f32(3, 4), "w": w}, ["y"], 9, {"w": w}, ir_version=3)
    graph = check_against_ort(model, {"x": f32(3, 4)})
    assert [v.name for v in graph.inputs] == ["x"]
    np.testing.assert_array_equal(graph.value("w").data, w)


def test_names_are_kept() -> None:
    model = zoo.resnet_bottleneck()
    graph = qc.from_onnx(model)
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["y"]
    assert {n.name for n in graph.nodes} == {n.name for n in model.graph.node}
    assert graph.node("conv2.conv").inputs[1].name == "conv2.conv.weight"
    unnamed = make_model([helper.make_node("Relu", ["x"], ["r"]),
                          helper.make_node("Neg", ["r"], ["y"])], {"x": f32(2)}, ["y"], 13)
    assert [n.name for n in qc.from_onnx(unnamed).nodes] == ["Relu_0", "Neg_1"]


# -- symbolic dimensions and input_shapes -------------------------------------------------------


def sym_model(x_shape: list, y_shape: list) -> onnx.ModelProto:
    return make_model([node("Add", ["x", "y"], ["z"])],
                      {"x": (TensorProto.FLOAT, x_shape), "y": (TensorProto.FLOAT, y_shape)},
                      ["z"], 13)


def test_symbolic_and_missing_dims() -> None:
    model = sym_model(["batch", 4], [None, 4])
    graph = qc.from_onnx(model)
    x, y = graph.inputs
    assert x.shape == ("batch", 4)
    assert isinstance(y.shape[0], str) and y.shape[0] not in ("batch", "?") and y.shape[1] == 4
    out = qc.compile(graph, backend="numpy").run({"x": f32(2, 4), "y": f32(2, 4)})
    assert out["z"].shape == (2, 4)


def test_input_shapes_fix_dynamic_dims() -> None:
    model = sym_model(["N", 4], ["N", 4])
    graph = qc.from_onnx(model, input_shapes={"x": [3, 4]})
    assert [v.shape for v in graph.inputs] == [(3, 4), (3, 4)]  # y shares the symbol N
    renamed = qc.from_onnx(model, input_shapes={"x": ["B", 4], "y": ["B", 4]})
    assert renamed.outputs[0].shape == ("B", 4)


@pytest.mark.parametrize("shapes, error, words", [
    ({"x": [3, 4, 1]}, qc.InputShapeError, ["'x'", "rank 3", "rank 2"]),
    ({"x": [3, 5]}, qc.InputShapeError, ["'x'", "dimension 1", "fixed at 4"]),
    ({"x": [3, 4], "y": [2, 4]}, qc.InputShapeError, ["'y'", "'N'", "3"]),
    ({"image": [1, 4]}, qc.UnknownInputError, ["'image'", "x, y"]),
])
def test_input_shapes_errors_name_the_input(shapes: dict, error: type, words: list) -> None:
    with pytest.raises(error) as info:
        qc.from_onnx(sym_model(["N", 4], ["N", 4]), input_shapes=shapes)
    for word in words:
        assert word in str(info.value)


# -- shape subgraphs ----------------------------------------------------------------------------

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat"}


def test_static_shape_subgraph_folds_away() -> None:
    graph = qc.from_onnx(zoo.reshape_shape_subgraph(batch=2))
    assert not SHAPE_OPS & set(graph.op_counts())
    reshape = graph.node("view")
    assert reshape.outputs[0].shape == (2, 128)
    np.testing.assert_array_equal(reshape.inputs[1].data, [2, -1])
    assert reshape.inputs[1].name == "concat"  # the folded constant keeps its tensor name


def test_input_shapes_make_the_shape_subgraph_static() -> None:
    graph = qc.from_onnx(zoo.reshape_shape_subgraph(), input_shapes={"x": [3, 8, 4, 4]})
    assert not SHAPE_OPS & set(graph.op_counts())
    assert graph.outputs[0].shape == (3, 10)


def test_symbolic_shape_subgraph_gives_a_static_feature_dim() -> None:
    graph = qc.from_onnx(zoo.reshape_shape_subgraph())
    assert graph.node("view").outputs[0].shape == ("N", 128)
    assert graph.outputs[0].shape == ("N", 10)
    assert "Shape" in graph.op_counts()  # the batch is only known at run time


def test_fold_constants_and_dead_code_directly() -> None:
    nodes = [node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm"),
             helper.make_node("Neg", ["x"], ["unused"], name="dead")]
    model = make_model(nodes, {"x": f32(2, 3)}, ["y"], 13, {"w": f32(4, 3), "spare": f32(2)})
    graph = qc.from_onnx(model)
    assert graph.op_counts() == {"MatMul": 1} and set(graph.constants) == {"wt"}
    assert fold_constants(graph) == 0 and eliminate_dead_code(graph) == 0
    check_against_ort(model, {"x": f32(2, 3)})


def test_model_local_functions_are_inlined() -> None:
    relu6 = helper.make_function(
        "local", "Relu6", ["a"], ["b"],
        [helper.make_node("Constant", [], ["lo"], value_float=0.0),
         helper.make_node("Constant", [], ["hi"], value_float=6.0),
         helper.make_node("Clip", ["a", "lo", "hi"], ["b"])],
        [helper.make_opsetid("", 13)])
    model = make_model([node("Mul", ["x", "k"], ["m"]),
                        helper.make_node("Relu6", ["m"], ["y"], name="act", domain="local")],
                       {"x": X4}, ["y"], 13, {"k": np.array(4, np.float32)})
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(relu6)
    graph = check_against_ort(model, {"x": X4})
    assert graph.op_counts() == {"Mul": 1, "Clip": 1}


def test_qdq_weights_stay_quantized() -> None:
    """DequantizeLinear of constant int8 weights is not folded: it marks them as quantized."""
    w = RNG.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    nodes = [node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             node("DequantizeLinear", ["xq", "s", "z"], ["xd"], "dq_x"),
             node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], "dq_w", axis=0),
             node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]
    inits = {"s": np.array(0.05, np.float32), "z": np.array(3, np.int8), "w": w,
             "ws": np.array([0.01, 0.02, 0.03, 0.04], np.float32), "wz": np.zeros(4, np.int8)}
    graph = check_against_ort(make_model(nodes, {"x": f32(1, 2, 5, 5)}, ["y"], 13, inits),
                              {"x": f32(1, 2, 5, 5)})
    assert graph.op_counts()["DequantizeLinear"] == 2
    assert graph.node("dq_w").inputs[0].data.dtype == np.int8


# -- load errors --------------------------------------------------------------------------------


def test_load_onnx_reads_files_and_external_data(tmp_path) -> None:
    model = zoo.resnet_bottleneck()
    onnx.save(model, tmp_path / "plain.onnx")
    onnx.save(zoo.resnet_bottleneck(), tmp_path / "external.onnx", save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    plain = qc.load_onnx(tmp_path / "plain.onnx")
    assert plain == qc.load_onnx(str(tmp_path / "external.onnx"))
    assert plain == qc.from_onnx(model)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(qc.ModelLoadError, match="weights.bin"):
        qc.load_onnx(tmp_path / "external.onnx")


def test_truncated_file(tmp_path) -> None:
    data = zoo.resnet_style(depths=(1, 1)).SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(qc.ModelLoadError, match="truncated"):
        qc.load_onnx(path)


@pytest.mark.parametrize("content", [
    bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)),
    b"\xff\xff\xff\xff garbage",
    b"graph main(%x: f32[1]) { return %x }\n",
    b"",
])
def test_corrupt_or_foreign_bytes(tmp_path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(qc.ModelLoadError, match="not"):
        qc.load_onnx(path)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(qc.ModelLoadError, match="no such file"):
        qc.load_onnx(tmp_path / "nope.onnx")
    with pytest.raises(qc.ModelLoadError, match="not a file"):
        qc.load_onnx(tmp_path)


def test_undefined_tensor_is_a_load_error() -> None:
    model = make_model([node("Add", ["x", "ghost"], ["y"])], {"x": f32(2)}, ["y"], 13)
    with pytest.raises(qc.ModelLoadError, match="'ghost'"):
        qc.from_onnx(model)


# -- unsupported models -------------------------------------------------------------------------


def test_every_unsupported_op_is_listed_in_one_error() -> None:
    nodes = [
        helper.make_node("LSTM", ["x", "w", "r"], ["h1"], name="lstm_a", hidden_size=2),
        helper.make_node("LSTM", ["x", "w", "r"], ["h2"], name="lstm_b", hidden_size=2),
        helper.make_node("Det", ["sq"], ["det"]),
        helper.make_node("FusedConv", ["x", "w"], ["fc"], name="fused", domain="com.microsoft"),
        node("Relu", ["d"], ["y"]),
    ]
    model = make_model(nodes, {"x": f32(1, 2, 3), "sq": f32(3, 3),
                               "d": (TensorProto.DOUBLE, [2])}, ["h1", "h2", "det", "fc", "y"],
                       13, {"w": f32(1, 8, 3), "r": f32(1, 8, 2),
                            "w64": np.zeros(2, np.float64)})
    with pytest.raises(qc.UnsupportedModelError) as info:
        qc.from_onnx(model)
    err = info.value
    assert err.unsupported["LSTM"] == ["lstm_a", "lstm_b"]
    assert err.unsupported["Det"] == ["Det_2"]
    assert err.unsupported["dtype double"] == ["w64", "d"]
    assert [k for k in err.unsupported if "com.microsoft" in k] == [
        "com.microsoft.FusedConv (domain 'com.microsoft')"]
    message = str(err)
    for word in ("LSTM: lstm_a, lstm_b", "Det: Det_2", "dtype double: w64, d", "FusedConv",
                 "supported dtypes: f32"):
        assert word in message


@pytest.mark.parametrize("opset", [8, 22])
def test_opset_outside_range(opset: int) -> None:
    model = make_model([node("Relu", ["x"], ["y"])], {"x": f32(2)}, ["y"], opset)
    with pytest.raises(qc.UnsupportedModelError, match="supports opsets 9 to 21") as info:
        qc.from_onnx(model)
    assert f"opset {opset}" in str(info.value)


@pytest.mark.parametrize("opset, nodes, inits, feature", [
    (13, [node("Dropout", ["x"], ["d", "mask"]), node("Not", ["mask"], ["y"])], {},
     "Dropout (training mask output used)"),
    (13, [node("Dropout", ["x", "r", "t"], ["y"])],
     {"r": np.array(0.5, np.float32), "t": np.array(True)}, "Dropout (training mode)"),
    (15, [node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], training_mode=1)],
     {"s": np.ones(3, np.float32)}, "BatchNormalization (training mode)"),
    (9, [node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y", "m", "v", "sm", "sv"])],
     {"s": np.ones(3, np.float32)}, "BatchNormalization (training mode)"),
])
def test_training_only_features_are_unsupported(opset: int, nodes: list, inits: dict,
                                                feature: str) -> None:
    model = make_model(nodes, {"x": X4}, ["y"], opset, inits)
    with pytest.raises(qc.UnsupportedModelError) as info:
        qc.from_onnx(model)
    assert feature in info.value.unsupported, info.value.unsupported


def test_shape_errors_name_the_node() -> None:
    model = make_model([helper.make_node("Add", ["x", "y"], ["z"], name="bad_add")],
                       {"x": f32(2, 3), "y": f32(4)}, ["z"], 13)
    with pytest.raises(qc.ShapeInferenceError, match="bad_add"):
        qc.from_onnx(model)


def test_from_onnx_needs_a_model_proto() -> None:
    with pytest.raises(TypeError, match="ModelProto"):
        qc.from_onnx(b"not a model")  # type: ignore[arg-type]


def test_unsupported_attribute_values_name_the_node() -> None:
    model = make_model([node("Resize", ["x", "", "scales"], ["y"], name="upsample_cubic",
                             mode="cubic")],
                       {"x": X4}, ["y"], 13, {"scales": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(qc.UnsupportedModelError, match="upsample_cubic.*mode 'cubic'") as info:
        qc.from_onnx(model)
    assert info.value.unsupported == {"Resize": ["upsample_cubic"]}


# -- what third-party exporters and corrupted files hand us -------------------------------------


def with_dims(model: onnx.ModelProto, name: str, dims: Sequence[int]) -> onnx.ModelProto:
    """``model`` with the dimensions of graph input or output ``name`` set to ``dims`` as
    ``dim_value``s, negative ones included (helper.make_tensor_value_info refuses those)."""
    infos = [*model.graph.input, *model.graph.output]
    shape = next(vi for vi in infos if vi.name == name).type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add().dim_value = d
    return model


def paddle_style_model() -> onnx.ModelProto:
    """What paddle2onnx writes: the dynamic batch is ``dim_value: -1`` on input and output."""
    nodes = [node("Conv", ["x", "w", "b"], ["c"], "conv2d_0", pads=[1, 1, 1, 1]),
             node("Relu", ["c"], ["r"], "relu_0"),
             node("GlobalAveragePool", ["r"], ["p"], "pool2d_0"),
             node("Flatten", ["p"], ["f"], "flatten_0"),
             node("Gemm", ["f", "fc_w"], ["y"], "linear_0", transB=1)]
    model = make_model(nodes, {"x": (TensorProto.FLOAT, [1, 3, 8, 8])}, ["y"], 13,
                       {"w": f32(4, 3, 3, 3), "b": f32(4), "fc_w": f32(5, 4)})
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return with_dims(with_dims(model, "x", [-1, 3, 8, 8]), "y", [-1, 5])


def test_negative_dims_are_dynamic_like_in_onnxruntime() -> None:
    model = paddle_style_model()
    graph = qc.from_onnx(model)
    batch = graph.inputs[0].shape[0]
    assert isinstance(batch, str) and graph.inputs[0].shape[1:] == (3, 8, 8)
    assert graph.outputs[0].shape == (batch, 5)
    exe = qc.compile(graph, backend="numpy")
    for n in (1, 3, 0):
        x = f32(n, 3, 8, 8)
        got, ref = exe.run({"x": x})["y"], run_model(model, {"x": x})[0]
        assert got.shape == ref.shape == (n, 5)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    fixed = qc.from_onnx(model, input_shapes={"x": [2, 3, 8, 8]})
    assert fixed.inputs[0].shape == (2, 3, 8, 8) and fixed.outputs[0].shape == (2, 5)


def test_a_zero_dim_value_is_a_genuine_empty_dimension() -> None:
    """onnxruntime takes ``dim_value: 0`` as a fixed size 0 (it refuses a batch of 1), and so do
    we; an unset dimension is what ONNX spells as unknown."""
    model = with_dims(make_model([node("Relu", ["x"], ["y"])], {"x": f32(1, 3)}, ["y"], 13),
                      "x", [0, 3])
    graph = qc.from_onnx(model)
    assert graph.inputs[0].shape == (0, 3)
    x = f32(0, 3)
    got = qc.compile(graph, backend="numpy").run({"x": x})["y"]
    assert got.shape == run_model(model, {"x": x})[0].shape == (0, 3)
    with pytest.raises(Exception, match="dimensions"):
        run_model(model, {"x": f32(1, 3)})


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose output ``y`` is declared f32[2, 3], which onnx's checker insists on."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]))
    return model


def rejected_by_onnx(model: onnx.ModelProto) -> None:
    """onnx's checker and onnxruntime both refuse the model."""
    model = checkable(model)
    with pytest.raises(onnx.checker.ValidationError, match="SSA"):
        onnx.checker.check_model(model)
    with pytest.raises(Exception, match="Duplicate definition"):
        run_model(model, {"x": f32(2, 3)})


DOUBLE_WRITERS = {
    "two-nodes": ([node("Relu", ["x"], ["y"], "relu_a"), node("Neg", ["x"], ["y"], "neg_b")], {},
                  ["'relu_a'", "'neg_b'", "'y'"]),
    "shadows-an-input": ([node("Relu", ["x"], ["x"], "relu_a"), node("Neg", ["x"], ["y"], "neg_b")],
                         {}, ["'relu_a'", "graph input 'x'"]),
    "shadows-an-initializer": ([node("Relu", ["x"], ["w"], "relu_a"),
                                node("Add", ["x", "w"], ["y"], "add_b")],
                               {"w": f32(2, 3)}, ["'relu_a'", "initializer 'w'"]),
    "one-node-twice": ([node("Split", ["x", "s"], ["y", "y"], "split_a", axis=0)],
                       {"s": np.array([1, 1], np.int64)}, ["'split_a'", "'y'"]),
}


@pytest.mark.parametrize("case", sorted(DOUBLE_WRITERS))
def test_a_tensor_written_twice_is_a_load_error(case: str) -> None:
    nodes, inits, words = DOUBLE_WRITERS[case]
    model = make_model(nodes, {"x": f32(2, 3)}, ["y"], 13, inits)
    rejected_by_onnx(model)
    with pytest.raises(qc.ModelLoadError) as info:
        qc.from_onnx(model)
    for word in words:
        assert word in str(info.value)


def test_a_graph_input_listed_twice_is_a_load_error() -> None:
    model = make_model([node("Relu", ["x"], ["y"])], {"x": f32(2, 3)}, ["y"], 13)
    model.graph.input.append(model.graph.input[0])
    with pytest.raises(onnx.checker.ValidationError, match="SSA"):
        onnx.checker.check_model(checkable(model))
    with pytest.raises(qc.ModelLoadError, match="graph input 'x' is listed twice"):
        qc.from_onnx(model)


def test_text_that_is_not_utf8_is_reported_escaped(tmp_path) -> None:
    """Protobuf hands back a string field that is not UTF-8 as bytes; the error shows it."""
    model = make_model([node("Qqqq", ["x"], ["y"], "weird_node")], {"x": f32(2)}, ["y"], 13)
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(model.SerializeToString().replace(b"Qqqq", b"Q\xff\xfeq"))
    assert isinstance(onnx.load(str(path)).graph.node[0].op_type, bytes)
    with pytest.raises(qc.ModelLoadError) as info:
        qc.load_onnx(path)
    assert "'Q\\xff\\xfeq'" in str(info.value) and "weird_node" in str(info.value)


@pytest.mark.parametrize("opset, op_type, scales", [
    (10, "Resize", [1, 1, 2, 0.5]),
    (10, "Resize", [1, 1, 0.6, 1.5]),
    (10, "Resize", [1, 0.5, 3, 0.7]),
    (10, "Resize", [1, 1, 1, 0.4]),
    (9, "Upsample", [1, 1, 3, 1.5]),  # onnxruntime refuses an Upsample scale below 1
])
def test_upsample_nearest_mode_is_chosen_per_axis(opset: int, op_type: str,
                                                  scales: list) -> None:
    """Resize-10 and Upsample: onnxruntime floors the source pixel on the axes it enlarges and
    ceils it on those it shrinks, axis by axis; nearest resizing is exact, so are we."""
    x = f32(1, 4, 7, 9)
    model = make_model([node(op_type, ["x", "s"], ["y"], mode="nearest")], {"x": x}, ["y"],
                       opset, {"s": np.array(scales, np.float32)})
    got = qc.compile(qc.from_onnx(model), backend="numpy").run({"x": x})["y"]
    np.testing.assert_array_equal(got, run_model(model, {"x": x})[0])


def test_a_tensor_attribute_that_does_not_match_its_dims_is_a_load_error() -> None:
    value = numpy_helper.from_array(np.zeros(3, np.float32), "v")
    value.dims[:] = [33]  # the data holds 3 values, the dims promise 33
    model = make_model([node("Constant", [], ["c"], "broken_const", value=value),
                        node("Add", ["x", "c"], ["y"])], {"x": f32(3)}, ["y"], 13)
    with pytest.raises(qc.ModelLoadError) as info:
        qc.from_onnx(model)
    assert "'broken_const'" in str(info.value) and "value" in str(info.value)


@pytest.mark.parametrize("inputs, outputs, words", [
    (["x", "", "s"], [], ["Resize node 'resize_node'", "0 outputs", "1 to 1"]),
    (["x", "", "s", "", "x"], ["y"], ["Resize node 'resize_node'", "5 inputs", "1 to 4"]),
])
def test_a_node_with_the_wrong_number_of_operands_is_a_load_error(inputs: list, outputs: list,
                                                                 words: list) -> None:
    """Counted against the op's ONNX schema, as onnx's checker counts them."""
    model = make_model([node("Resize", inputs, outputs)], {"x": X4}, ["y"], 13,
                       {"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(qc.ModelLoadError) as info:
        qc.from_onnx(model)
    for word in words:
        assert word in str(info.value)


def test_an_attribute_of_the_wrong_type_is_a_load_error() -> None:
    """ONNX Gather's axis is an INT; a file saying FLOATS is malformed (onnx's checker agrees)."""
    model = make_model([node("Gather", ["x", "i"], ["y"], "gather_node", axis=0)],
                       {"x": f32(4, 3)}, ["y"], 13, {"i": np.array([0, 2], np.int64)})
    model.graph.node[0].attribute[0].type = onnx.AttributeProto.FLOATS
    with pytest.raises(onnx.checker.ValidationError, match="axis"):
        onnx.checker.check_model(checkable(model))
    with pytest.raises(qc.ModelLoadError) as info:
        qc.from_onnx(model)
    for word in ("Gather node 'gather_node'", "'axis'", "floats", "int"):
        assert word in str(info.value)


def test_from_onnx_given_a_path_points_to_load_onnx():
    with pytest.raises(TypeError, match=r"qc\.load_onnx"):
        qc.from_onnx("model.onnx")
