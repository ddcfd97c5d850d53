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
from ort_helpers import run_model

import qcompiler as qc
from qcompiler.testing.light_models import LIGHT, randomized

# Largest |ours - onnxruntime| on the class scores, relative to their max|onnxruntime|.
# Measured worst: 1.3e-6 (VGG-19), then 1.0e-6 (ZFNet-512) and 9.2e-7 (AlexNet).
SCORES_TOL = 7e-6
# Largest |our softmax - a float64 softmax of our scores| (probabilities, so absolute).
# Measured worst: 5.0e-8 (Inception v1).
SOFTMAX_TOL = 2.5e-7

MODELS = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT) if f.endswith(".onnx"))


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
