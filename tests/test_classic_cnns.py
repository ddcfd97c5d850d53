"""Classic CNN architectures import, compile and match onnxruntime.

The onnx package ships "light" versions of AlexNet, DenseNet-121, Inception v1/v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19 and ZFNet-512 (opset 9, Caffe2 exports: initializers listed as
graph inputs, weights made by ConstantOfShape, LRN, Dropout, coerce-to-2D Softmax). Their weights
are constants, which makes every class score equal; the test gives them random weights of a
sensible scale first, so a wrong kernel cannot hide behind a uniform output.

Random weights without matching BatchNorm statistics let activations grow with depth (ResNet-50's
class scores reach 1e4), where float32 summation order alone moves a saturated softmax. So the
scores before the softmax are compared with onnxruntime relative to their scale, and our softmax
output is checked against a float64 softmax of our own scores.
"""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from ort_helpers import run_model

import qcompiler as qc

# Largest |ours - onnxruntime| on the class scores, relative to their max|onnxruntime|.
# Measured worst: 1.3e-6 (VGG-19), then 1.0e-6 (ZFNet-512) and 9.2e-7 (AlexNet).
SCORES_TOL = 7e-6
# Largest |our softmax - a float64 softmax of our scores| (probabilities, so absolute).
# Measured worst: 5.0e-8 (Inception v1).
SOFTMAX_TOL = 2.5e-7

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT) if f.endswith(".onnx"))


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The model with every ConstantOfShape weight replaced by random values of a stable scale:
    He-normal conv/gemm weights, BatchNorm scale and variance near 1, small biases."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 20, np.float32)  # tiled: VGG's 100M-weight layers stay cheap
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    role: dict[str, str] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if node.op_type in ("Conv", "Gemm") and i == 1:
                role[name] = "weight"
            elif node.op_type == "BatchNormalization" and i in (1, 4):
                role[name] = "positive"
    keep, fresh = [], []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]])
        kind = role.get(node.output[0], "small")
        noise = np.resize(np.roll(pool, len(fresh) * 7919), shape)
        if kind == "weight":
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            data = noise * np.float32(np.sqrt(2.0 / fan_in))
        elif kind == "positive":
            data = np.float32(1) + np.float32(0.25) * np.tanh(noise)
        else:
            data = noise * np.float32(0.1)
        fresh.append(numpy_helper.from_array(data, node.output[0]))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.initializer.extend(fresh)
    return out


def with_scores_output(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """The model also returning the input of its final Softmax (its class scores), if any."""
    last = model.graph.node[-1]
    if last.op_type != "Softmax":
        return model, None
    model.graph.output.append(onnx.ValueInfoProto(name=last.input[0]))
    return model, last.input[0]


def softmax64(scores: np.ndarray) -> np.ndarray:
    """Opset-9 Softmax (axis 1, coerced to 2-D) in float64."""
    flat = scores.reshape(scores.shape[0], -1).astype(np.float64)
    e = np.exp(flat - flat.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).reshape(scores.shape)


@pytest.mark.parametrize("name", MODELS)
def test_classic_cnn_matches_onnxruntime(name):
    model, scores = with_scores_output(
        randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))))
    g = qc.from_onnx(model)
    assert len(g.inputs) == 1  # the weights listed as graph inputs became constants
    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    feeds = {g.inputs[0].name: x}
    ours = qc.compile(g, backend="numpy").run(feeds)
    theirs = dict(zip([o.name for o in model.graph.output], run_model(model, feeds)))
    compared = scores or model.graph.output[0].name
    ref = theirs[compared]
    assert np.ptp(ref) > 1e-3 * np.abs(ref).max()  # random weights: the scores differ
    np.testing.assert_allclose(ours[compared], ref, rtol=0,
                               atol=SCORES_TOL * np.abs(ref).max())
    if scores is not None:
        probs = ours[model.graph.output[0].name]
        np.testing.assert_allclose(probs, softmax64(ours[scores]), rtol=0, atol=SOFTMAX_TOL)
