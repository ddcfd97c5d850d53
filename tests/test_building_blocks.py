"""The zoo's building blocks import, compile with the numpy backend and match onnxruntime,
with a static batch and with a symbolic one run at batch 2 and 3."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import zoo
from ort_helpers import run_model

import qcompiler as qc

# Largest |ours - onnxruntime| allowed, relative to max|onnxruntime| of the output. Measured
# worst over the blocks at batch 1, 2 and 3: 6.9e-7 (resnet_style); the others 1.5e-7 to 4.3e-7.
PEAK_TOL = 4e-6


def feeds_for(model: onnx.ModelProto, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def assert_matches_ort(model: onnx.ModelProto, exe: qc.Executable, batch: int) -> None:
    feeds = feeds_for(model, batch, seed=batch)
    got = exe.run(feeds)
    for vi, ref in zip(model.graph.output, run_model(model, feeds), strict=True):
        assert got[vi.name].shape == ref.shape
        np.testing.assert_allclose(got[vi.name], ref, rtol=0,
                                   atol=PEAK_TOL * np.abs(ref).max(), err_msg=vi.name)


@pytest.mark.parametrize("name", sorted(zoo.BUILDING_BLOCKS))
def test_static_batch_matches_onnxruntime(name: str) -> None:
    model = zoo.BUILDING_BLOCKS[name](batch=1)
    exe = qc.compile(qc.from_onnx(model), backend="numpy")
    assert_matches_ort(model, exe, batch=1)


@pytest.mark.parametrize("name", sorted(zoo.BUILDING_BLOCKS))
def test_symbolic_batch_matches_onnxruntime(name: str) -> None:
    model = zoo.BUILDING_BLOCKS[name](batch="N")
    graph = qc.from_onnx(model)
    assert graph.inputs[0].shape[0] == "N"
    assert all(isinstance(d, int) for d in graph.inputs[0].shape[1:])
    exe = qc.compile(graph, backend="numpy")
    for batch in (2, 3):
        assert_matches_ort(model, exe, batch)


@pytest.mark.parametrize("name", sorted(zoo.BUILDING_BLOCKS))
def test_models_are_deterministic_and_valid(name: str) -> None:
    build = zoo.BUILDING_BLOCKS[name]
    a, b = build(seed=3), build(seed=3)
    onnx.checker.check_model(a, full_check=True)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != build(seed=4).SerializeToString()
    assert all(node.name for node in a.graph.node)


def test_zoo_keeps_the_exporter_idioms() -> None:
    v3 = qc.from_onnx(zoo.mobilenetv3_block()).op_counts()
    assert v3["BatchNormalization"] == 3 and v3["HardSigmoid"] == 1
    assert v3["Clip"] == 2 and v3["Div"] == 2  # HardSwish stays decomposed
    v2 = qc.from_onnx(zoo.mobilenetv2_block())
    depthwise = v2.node("depthwise.conv")
    assert depthwise.attrs["group"] == depthwise.outputs[0].shape[1]
    assert all(len(n.inputs) == 3 for n in v2.find_nodes("Clip"))
    inception = qc.from_onnx(zoo.inception_block()).op_counts()
    assert inception["Concat"] == 1 and inception["MaxPool"] == 1
    resnet = qc.from_onnx(zoo.resnet_style(bottleneck=True, depths=(1, 1))).op_counts()
    assert resnet["Add"] == 2 and resnet["Gemm"] == 1 and resnet["Flatten"] == 1
