"""Models exported by the real exporters import, compile with the numpy backend and match
onnxruntime at batch 1 and 3.

The fixtures in tests/data/exported/ were written by PyTorch's TorchScript exporter (opsets 13 and
17) and its torch.export-based ("dynamo") exporter (opsets 18 and 20), by tf2onnx from Keras
models (NHWC, opset 13) and by paddle2onnx (opsets 11 and 13), each with a dynamic batch; see
tests/data/exported/make_fixtures.py, which is run by hand and not needed here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import pytest
from ort_helpers import run_model

import qcompiler as qc

DATA = Path(__file__).parent / "data" / "exported"
# Largest |ours - onnxruntime| allowed, relative to max|onnxruntime| of the output. Measured
# worst over the 18 fixtures at batch 1 and 3: 8.8e-7 (torch_cnn_opset13/17); most are 2e-8 to
# 2.3e-7. Float32 summation order (BLAS, CPU) accounts for it: a wrong kernel is far above.
PEAK_TOL = 5e-6


class Fixture(NamedTuple):
    names: tuple[str, ...]  # the exporter's node (or weight) names the IR must keep
    flatten: str | None = None  # node flattening N x C x H x W features to N x F, if any


_TORCH_CNN = Fixture(("/conv1/Conv", "/pool/MaxPool", "/conv2/Conv", "/Reshape", "/fc/Gemm",
                      "fc.weight"), flatten="/Reshape")
_TORCH_MOBILENET = ("/stem/stem.0/Conv", "/depthwise/depthwise.0/Conv",
                    "/depthwise/depthwise.2/Clip", "/se/pool/GlobalAveragePool",
                    "/se/gate/HardSigmoid", "/se/Mul", "/head/head.3/BatchNormalization",
                    "/head/head.5/Gemm", "se.fc1.weight", "head.3.running_mean")
_TORCH_UPSAMPLE = Fixture(("/down/Conv", "/Resize", "/Resize_1", "/Concat_2", "/fuse/Conv",
                           "/Add", "/pool/GlobalAveragePool", "/fc/Gemm", "fuse.weight"),
                          flatten="/Flatten")
_TORCH_MLP = ("/fc1/MatMul", "/fc1/Add", "/Erf", "/Tanh", "/head/MatMul", "/Softmax",
              "norm1.weight")
_PADDLE = Fixture(("Conv.0", "BatchNormalization.0", "HardSigmoid.0", "Clip.0", "Resize.0",
                   "Concat.1", "MatMul.0", "conv2d_0.w_0", "batch_norm2d_0.w_1"),
                  flatten="Reshape.2")

# Every fixture the folder must hold: a missing or extra file fails test_fixture_set.
EXPECTED: dict[str, Fixture] = {
    "torch_cnn_opset13.onnx": _TORCH_CNN,
    "torch_cnn_opset17.onnx": _TORCH_CNN,
    "torch_cnn_unfolded_opset13.onnx": Fixture(
        (*_TORCH_CNN.names, "/bn1/BatchNormalization", "/bn2/BatchNormalization",
         "bn1.running_mean"), flatten="/Reshape"),
    "torch_mobilenetv3_block_opset13.onnx": Fixture(
        (*_TORCH_MOBILENET, "/stem/stem.2/HardSigmoid", "/stem/stem.2/Mul"),
        flatten="/head/head.1/Flatten"),
    "torch_mobilenetv3_block_opset17.onnx": Fixture(
        (*_TORCH_MOBILENET, "/stem/stem.2/HardSwish", "/head/head.4/HardSwish"),
        flatten="/head/head.1/Flatten"),
    "torch_upsample_concat_opset13.onnx": _TORCH_UPSAMPLE,
    "torch_upsample_concat_opset17.onnx": _TORCH_UPSAMPLE,
    "torch_mlp_layernorm_gelu_opset13.onnx": Fixture(
        (*_TORCH_MLP, "/norm1/ReduceMean", "/norm1/Sqrt", "/norm2/Div")),
    "torch_mlp_layernorm_gelu_opset17.onnx": Fixture(
        (*_TORCH_MLP, "/norm1/LayerNormalization", "/norm2/LayerNormalization")),
    # The dynamo exporter names nodes after the aten ops; module names survive in the weights.
    "torch_dynamo_cnn_opset18.onnx": Fixture(
        ("node_Conv_29", "node_max_pool2d", "node_Reshape_33", "node_linear", "conv1.weight",
         "fc.weight"), flatten="node_Reshape_33"),
    "torch_dynamo_mobilenetv3_block_opset18.onnx": Fixture(
        ("node_Conv_78", "node_hardsigmoid", "node_mul_37", "node_add_85", "node_Gemm_88",
         "stem.0.weight", "se.fc1.weight", "head.5.weight"), flatten="node_Reshape_87"),
    "torch_dynamo_upsample_concat_opset18.onnx": Fixture(
        ("node_upsample_nearest2d", "node_upsample_bilinear2d", "node_cat", "node_add_40",
         "node_linear", "fuse.weight"), flatten="node_Reshape_16"),
    "torch_dynamo_mlp_layernorm_gelu_opset18.onnx": Fixture(
        ("node_linear", "node_layer_norm", "node_Erf_4", "node_Tanh_18", "node_layer_norm_1",
         "node_softmax", "norm1.weight", "head.bias")),
    "torch_dynamo_mlp_layernorm_gelu_opset20.onnx": Fixture(
        ("node_linear", "node_layer_norm", "node_gelu", "node_gelu_1", "node_softmax",
         "norm1.weight", "head.bias")),
    "tf_mobilenet_style_opset13.onnx": Fixture(
        ("tf_mobilenet_1/stem_relu6_1/Relu6", "tf_mobilenet_1/dw_conv_1/depthwise",
         "tf_mobilenet_1/dw_bn_1/batchnorm/mul_1", "tf_mobilenet_1/dw_relu6_1/Relu6",
         "tf_mobilenet_1/pw_conv_1/BiasAdd", "tf_mobilenet_1/residual_1/Add",
         "tf_mobilenet_1/gap_1/Mean", "tf_mobilenet_1/fc_1/MatMul",
         "tf_mobilenet_1/probs_1/Softmax")),
    "tf_cnn_flatten_opset13.onnx": Fixture(
        ("tf_cnn_1/conv1_1/BiasAdd", "tf_cnn_1/pool1_1/MaxPool2d", "tf_cnn_1/conv2_1/Relu",
         "tf_cnn_1/flatten_1/Reshape", "tf_cnn_1/fc1_1/MatMul", "tf_cnn_1/logits_1/BiasAdd",
         "tf_cnn_1/fc1_1/Cast/ReadVariableOp:0"), flatten="tf_cnn_1/flatten_1/Reshape"),
    "paddle_cnn_opset11.onnx": _PADDLE,
    "paddle_cnn_opset13.onnx": _PADDLE,
}

# ONNX ops that always compute on the activations in these models: each such node must come
# through import under the exporter's name.
_LAYER_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "LayerNormalization", "MaxPool",
              "GlobalAveragePool", "Resize", "Softmax", "Gelu", "HardSwish", "HardSigmoid",
              "Relu", "Clip", "Erf", "Tanh", "Reshape", "Flatten", "Transpose"}


def test_fixture_set() -> None:
    found = sorted(p.name for p in DATA.glob("*.onnx"))
    assert len(found) == len(EXPECTED) == 18
    assert found == sorted(EXPECTED)


def _batch_feeds(model: onnx.ModelProto, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs of each graph input's shape and dtype, symbolic dims set to ``batch``."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 4, dims).astype(dtype)
    return feeds


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_matches_onnxruntime(name: str) -> None:
    path = DATA / name
    model = onnx.load(str(path))
    exe = qc.compile(qc.load_onnx(path), backend="numpy")
    for batch in (1, 3):
        feeds = _batch_feeds(model, batch, seed=batch)
        got = exe.run(feeds)
        for vi, ref in zip(model.graph.output, run_model(model, feeds), strict=True):
            out = got[vi.name]
            assert out.shape == ref.shape, (vi.name, batch)
            assert out.dtype == ref.dtype, (vi.name, batch)
            np.testing.assert_allclose(out, ref, rtol=0, atol=PEAK_TOL * np.abs(ref).max(),
                                       err_msg=f"{name}: output {vi.name}, batch {batch}")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_saved_and_reloaded_gives_the_same_outputs(name: str, tmp_path: Path) -> None:
    """Exporter tensor names ("onnx::Conv_68", "/conv1/Conv_output_0") survive the .npz and
    the generated source of a saved model."""
    path = DATA / name
    exe = qc.compile(qc.load_onnx(path), backend="numpy")
    exe.save(tmp_path / "model.qcx")
    loaded = qc.load(tmp_path / "model.qcx")
    feeds = _batch_feeds(onnx.load(str(path)), 2, seed=7)
    expected, got = exe.run(feeds), loaded.run(feeds)
    assert list(got) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_keeps_the_exporter_names(name: str) -> None:
    model = onnx.load(str(DATA / name))
    graph = qc.load_onnx(DATA / name)
    ir_names = {node.name for node in graph.nodes}
    onnx_names = {node.name for node in model.graph.node}
    # Nothing renamed: each IR node is an exporter node (or a helper named "<node>/<what>").
    invented = [n for n in ir_names
                if n not in onnx_names and not any(n.startswith(f"{o}/") for o in onnx_names)]
    assert not invented, f"IR nodes with names the exporter did not give: {invented}"
    lost = [node.name for node in model.graph.node
            if node.op_type in _LAYER_OPS and node.name not in ir_names]
    assert not lost, f"layers lost their names or vanished: {lost}"
    missing = [n for n in EXPECTED[name].names if n not in ir_names and n not in graph.constants]
    assert not missing, f"exporter names not in the IR: {missing}"


@pytest.mark.parametrize("name", sorted(n for n, f in EXPECTED.items() if f.flatten))
def test_flatten_has_static_features(name: str) -> None:
    """x.view(x.size(0), -1), torch.flatten, Keras Flatten and paddle.flatten with a symbolic
    batch: whatever shape arithmetic the exporter wrote, the features are a known size."""
    graph = qc.load_onnx(DATA / name)
    node = graph.node(EXPECTED[name].flatten)
    assert node.op in ("Reshape", "Flatten")
    (batch, *features) = node.inputs[0].shape
    assert isinstance(batch, str)
    assert all(isinstance(d, int) for d in features)
    out = node.outputs[0].shape
    assert len(out) == 2 and out[1] == math.prod(features), (
        f"{node.name}: {list(node.inputs[0].shape)} -> {list(out)}, expected "
        f"[{batch}, {math.prod(features)}]")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_outputs_keep_the_batch_symbol(name: str) -> None:
    """Every output is batch-major: its first dimension is the input's batch symbol and the
    others are static, as the exporter declared them."""
    graph = qc.load_onnx(DATA / name)
    (image,) = graph.inputs
    batch = image.shape[0]
    assert isinstance(batch, str) and all(isinstance(d, int) for d in image.shape[1:])
    for out in graph.outputs:
        assert out.shape[0] == batch and all(isinstance(d, int) for d in out.shape[1:]), (
            f"output {out.name} is {list(out.shape)}; its first dim should be {batch!r}")
