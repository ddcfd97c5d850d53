"""The onnx package's "light" classic CNNs (AlexNet, DenseNet-121, Inception v1/v2, ResNet-50,
ShuffleNet, SqueezeNet, VGG-19, ZFNet-512) with random weights, for tests and benchmarks.

They are opset-9 Caffe2 exports whose weights are made by ConstantOfShape, so every class score
is equal: ``randomized`` gives them random weights of a sensible scale first, so a wrong kernel
cannot hide behind a uniform output and a benchmark times real arithmetic.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def randomized(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The model with every ConstantOfShape weight replaced by random values of a stable scale:
    He-normal conv/gemm weights, BatchNorm scale and variance near 1, small biases. The new
    initializers are listed as graph inputs too, as IR version 3 requires, and the shapes only
    ConstantOfShape read are dropped: the result passes ``onnx.checker``."""
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
    used = {name for node in keep for name in node.input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    initializers = [t for t in out.graph.initializer if t.name in used] + fresh
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers)
    listed = [i for i in out.graph.input if i.name in used or i.name not in inits]
    listed += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in fresh]
    del out.graph.input[:]
    out.graph.input.extend(listed)
    return out


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """``light_<name>.onnx`` (``"resnet50"``, ``"vgg19"``...) with random weights."""
    return randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")), seed)
