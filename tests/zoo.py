"""Small ONNX models built with ``onnx.helper``, for tests, benchmarks and examples.

Each function returns an ``onnx.ModelProto`` that passes ``onnx.checker``, with deterministic
random weights drawn from ``seed``. ``batch`` is the first input dimension: an int, or a symbol
name (``"N"``) for a dynamic batch. The blocks reproduce what real exporters emit (BatchNorm left
unfused, ReLU6 as Clip with min/max inputs, HardSwish decomposed into Add/Clip/Mul/Div, the
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chain of ``x.view(x.size(0), -1)``), so
the importer and the passes see the idioms they must handle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8

Batch = int | str


class _Net:
    """Accumulates nodes and initializers; every node is named and so is its first output."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
             group: int = 1, bias: bool = False) -> str:
        fan_in = cin // group * k * k
        w = self.rng.normal(0, np.sqrt(2 / fan_in), (cout, cin // group, k, k))
        inputs = [x, self.init(f"{name}.weight", w.astype(np.float32))]
        if bias:
            inputs.append(self.init(f"{name}.bias",
                                    self.rng.normal(0, 0.1, cout).astype(np.float32)))
        return self.node("Conv", inputs, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int, name: str, gain: float = 1.0) -> str:
        params = {
            "scale": gain * self.rng.uniform(0.5, 1.5, c),
            "bias": self.rng.normal(0, 0.1, c),
            "mean": self.rng.normal(0, 0.1, c),
            "var": self.rng.uniform(0.5, 1.5, c),
        }
        inputs = [x] + [self.init(f"{name}.{k}", v.astype(np.float32)) for k, v in params.items()]
        return self.node("BatchNormalization", inputs, name, epsilon=1e-5)

    def conv_bn(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
                group: int = 1, act: str | None = "relu", gain: float = 1.0) -> str:
        """Conv without bias, then an unfused BatchNormalization (``gain`` scales its gamma;
        residual branches use a small one so activations stay O(1) through deep stacks)."""
        y = self.conv(x, cin, cout, k, f"{name}.conv", stride, group)
        y = self.bn(y, cout, f"{name}.bn", gain)
        if act == "relu":
            y = self.node("Relu", [y], f"{name}.relu")
        elif act == "relu6":
            y = self.relu6(y, f"{name}.relu6")
        elif act == "hardswish":
            y = self.hardswish(y, f"{name}.hardswish")
        return y

    def scalar(self, name: str, value: float) -> str:
        return self.init(name, np.array(value, dtype=np.float32))

    def relu6(self, x: str, name: str) -> str:
        return self.node("Clip", [x, self.scalar(f"{name}.min", 0.0),
                                  self.scalar(f"{name}.max", 6.0)], name)

    def hardswish(self, x: str, name: str) -> str:
        """x * Clip(x + 3, 0, 6) / 6, as exporters spell HardSwish without the fused op."""
        shifted = self.node("Add", [x, self.scalar(f"{name}.three", 3.0)], f"{name}.add")
        clipped = self.relu6(shifted, f"{name}.clip")
        prod = self.node("Mul", [x, clipped], f"{name}.mul")
        return self.node("Div", [prod, self.scalar(f"{name}.six", 6.0)], f"{name}.div")

    def hardsigmoid(self, x: str, name: str, alpha: float, beta: float,
                    decomposed: bool = False) -> str:
        """HardSigmoid, or ``Clip(x * alpha + beta, 0, 1)`` as paddle2onnx writes it for opsets
        without the op's preferred form (Mul, Add and Clip nodes)."""
        if not decomposed:
            return self.node("HardSigmoid", [x], name, alpha=alpha, beta=beta)
        scaled = self.node("Mul", [x, self.scalar(f"{name}.alpha", alpha)], f"{name}.mul")
        shifted = self.node("Add", [scaled, self.scalar(f"{name}.beta", beta)], f"{name}.add")
        return self.node("Clip", [shifted, self.scalar(f"{name}.min", 0.0),
                                  self.scalar(f"{name}.max", 1.0)], name)

    def linear(self, x: str, cin: int, cout: int, name: str) -> str:
        w = self.rng.normal(0, np.sqrt(1 / cin), (cout, cin)).astype(np.float32)
        b = self.rng.normal(0, 0.1, cout).astype(np.float32)
        return self.node("Gemm", [x, self.init(f"{name}.weight", w), self.init(f"{name}.bias", b)],
                         name, transB=1)

    def model(self, name: str, inputs: Sequence[tuple[str, Sequence[Batch]]],
              outputs: Sequence[tuple[str, Sequence[Batch]]],
              opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="qcompiler-tests.zoo", ir_version=IR_VERSION)
        onnx.checker.check_model(model, full_check=True)
        return model


def resnet_bottleneck(batch: Batch = 1, channels: int = 32, size: int = 16,
                      seed: int = 0) -> onnx.ModelProto:
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand (each Conv + BatchNorm), residual Add,
    Relu. Input ``x``: [batch, channels, size, size]."""
    net = _Net(seed)
    mid = channels // 4
    y = net.conv_bn("x", channels, mid, 1, "conv1")
    y = net.conv_bn(y, mid, mid, 3, "conv2")
    y = net.conv_bn(y, mid, channels, 1, "conv3", act=None)
    y = net.node("Add", [y, "x"], "add")
    net.node("Relu", [y], "y")
    shape = [batch, channels, size, size]
    return net.model("resnet_bottleneck", [("x", shape)], [("y", shape)])


def mobilenetv2_block(batch: Batch = 1, channels: int = 16, size: int = 16, expand: int = 6,
                      seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 inverted residual: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project,
    residual Add. ReLU6 is Clip with min/max inputs, as PyTorch exports it."""
    net = _Net(seed)
    hidden = channels * expand
    y = net.conv_bn("x", channels, hidden, 1, "expand", act="relu6")
    y = net.conv_bn(y, hidden, hidden, 3, "depthwise", group=hidden, act="relu6")
    y = net.conv_bn(y, hidden, channels, 1, "project", act=None)
    net.node("Add", [y, "x"], "y")
    shape = [batch, channels, size, size]
    return net.model("mobilenetv2_block", [("x", shape)], [("y", shape)])


def mobilenetv3_block(batch: Batch = 1, channels: int = 16, size: int = 16, expand: int = 4,
                      seed: int = 0, hardsigmoid: str = "op") -> onnx.ModelProto:
    """MobileNetV3 bottleneck as paddle2onnx emits it: Conv without bias and an unfused
    BatchNormalization, HardSwish spelled x * Clip(x + 3, 0, 6) / 6, squeeze-excite
    (GlobalAveragePool, Conv, Relu, Conv, HardSigmoid, Mul), residual Add. With
    ``hardsigmoid="decomposed"`` the squeeze-excite gate is ``Clip(x * 0.1666666716337204 +
    0.5, 0, 1)`` (Mul, Add, Clip), as paddle2onnx writes hardsigmoid for older opsets."""
    if hardsigmoid not in ("op", "decomposed"):
        raise ValueError(f"hardsigmoid must be 'op' or 'decomposed', not {hardsigmoid!r}")
    net = _Net(seed)
    hidden = channels * expand
    y = net.conv_bn("x", channels, hidden, 1, "expand", act="hardswish")
    y = net.conv_bn(y, hidden, hidden, 3, "depthwise", group=hidden, act="hardswish")
    pooled = net.node("GlobalAveragePool", [y], "se.pool")
    s = net.conv(pooled, hidden, hidden // 4, 1, "se.reduce", bias=True)
    s = net.node("Relu", [s], "se.relu")
    s = net.conv(s, hidden // 4, hidden, 1, "se.expand", bias=True)
    s = net.hardsigmoid(s, "se.hardsigmoid", 1 / 6, 0.5, decomposed=hardsigmoid == "decomposed")
    y = net.node("Mul", [y, s], "se.scale")
    y = net.conv_bn(y, hidden, channels, 1, "project", act=None)
    net.node("Add", [y, "x"], "y")
    shape = [batch, channels, size, size]
    return net.model("mobilenetv3_block", [("x", shape)], [("y", shape)])


def inception_block(batch: Batch = 1, channels: int = 32, size: int = 16,
                    seed: int = 0) -> onnx.ModelProto:
    """Inception module: 1x1, 1x1->3x3, 1x1->5x5 and maxpool->1x1 branches joined by Concat."""
    net = _Net(seed)

    def conv_relu(x: str, cin: int, cout: int, k: int, name: str) -> str:
        return net.node("Relu", [net.conv(x, cin, cout, k, f"{name}.conv", bias=True)],
                        f"{name}.relu")

    b1 = conv_relu("x", channels, 16, 1, "branch1x1")
    b2 = conv_relu(conv_relu("x", channels, 16, 1, "branch3x3.reduce"), 16, 24, 3, "branch3x3")
    b3 = conv_relu(conv_relu("x", channels, 8, 1, "branch5x5.reduce"), 8, 8, 5, "branch5x5")
    pooled = net.node("MaxPool", ["x"], "branch_pool.pool", kernel_shape=[3, 3],
                      strides=[1, 1], pads=[1, 1, 1, 1])
    b4 = conv_relu(pooled, channels, 8, 1, "branch_pool")
    net.node("Concat", [b1, b2, b3, b4], "y", axis=1)
    return net.model("inception_block", [("x", [batch, channels, size, size])],
                     [("y", [batch, 56, size, size])])


def reshape_shape_subgraph(batch: Batch = "N", channels: int = 8, size: int = 4,
                           classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """Conv + Relu, then ``x.view(x.size(0), -1)`` as PyTorch exports it (Shape, Gather,
    Unsqueeze, Concat with -1, Reshape), then a Gemm classifier. Symbolic batch by default."""
    net = _Net(seed)
    y = net.node("Relu", [net.conv("x", channels, channels, 3, "conv", bias=True)], "relu")
    shape = net.node("Shape", [y], "shape")
    dim0 = net.node("Gather", [shape, net.init("index0", np.array(0, dtype=np.int64))],
                    "gather", axis=0)
    dim0 = net.node("Unsqueeze", [dim0, net.init("axes0", np.array([0], dtype=np.int64))],
                    "unsqueeze")
    target = net.node("Concat", [dim0, net.init("minus_one", np.array([-1], dtype=np.int64))],
                      "concat", axis=0)
    flat = net.node("Reshape", [y, target], "view")
    net.linear(flat, channels * size * size, classes, "logits")
    return net.model("reshape_shape_subgraph", [("x", [batch, channels, size, size])],
                     [("logits", [batch, classes])])


def resnet_style(depths: Sequence[int] = (2, 2, 2, 2), width: int = 16,
                 bottleneck: bool = False, image_size: int = 64, classes: int = 10,
                 batch: Batch = 1, seed: int = 0) -> onnx.ModelProto:
    """A small ResNet: 7x7/2 stem conv + BatchNorm + Relu + 3x3/2 MaxPool, stages of basic (or
    bottleneck) residual blocks doubling the width and halving the resolution, then
    GlobalAveragePool, Flatten and a Gemm classifier. Input ``image``: [batch, 3, S, S]."""
    net = _Net(seed)
    y = net.conv_bn("image", 3, width, 7, "stem", stride=2)
    y = net.node("MaxPool", [y], "stem.pool", kernel_shape=[3, 3], strides=[2, 2],
                 pads=[1, 1, 1, 1])
    expansion = 4 if bottleneck else 1
    cin = width
    for stage, depth in enumerate(depths):
        planes = width * 2**stage
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"layer{stage + 1}.{block}"
            cout = planes * expansion
            if bottleneck:
                z = net.conv_bn(y, cin, planes, 1, f"{name}.conv1")
                z = net.conv_bn(z, planes, planes, 3, f"{name}.conv2", stride=stride)
                z = net.conv_bn(z, planes, cout, 1, f"{name}.conv3", act=None, gain=0.3)
            else:
                z = net.conv_bn(y, cin, planes, 3, f"{name}.conv1", stride=stride)
                z = net.conv_bn(z, planes, cout, 3, f"{name}.conv2", act=None, gain=0.3)
            shortcut = y
            if stride != 1 or cin != cout:
                shortcut = net.conv_bn(y, cin, cout, 1, f"{name}.downsample", stride=stride,
                                       act=None, gain=0.5)
            y = net.node("Relu", [net.node("Add", [z, shortcut], f"{name}.add")],
                         f"{name}.relu")
            cin = cout
    y = net.node("GlobalAveragePool", [y], "avgpool")
    y = net.node("Flatten", [y], "flatten", axis=1)
    net.linear(y, cin, classes, "logits")
    return net.model("resnet_style", [("image", [batch, 3, image_size, image_size])],
                     [("logits", [batch, classes])])


def tf2onnx_style(batch: Batch = 1, size: int = 16, classes: int = 10,
                  seed: int = 0) -> onnx.ModelProto:
    """A small NHWC classifier spelled the way tf2onnx exports Keras models (opset 13): an NHWC
    input transposed to NCHW, convs with auto_pad SAME_UPPER and their bias as a separate Add,
    ReLU6 as Clip with min/max inputs, a depthwise conv, the transpose back to NHWC, ReduceMean
    over H and W (axes as an attribute), a Dense layer as MatMul + Add, and Softmax.
    Input ``input_1``: [batch, size, size, 3]."""
    net = _Net(seed)
    y = net.node("Transpose", ["input_1"], "model/conv1/Conv2D__6", perm=[0, 3, 1, 2])

    def conv(x: str, cin: int, cout: int, stride: int, name: str, group: int = 1) -> str:
        k = 3
        w = net.rng.normal(0, np.sqrt(2 / (cin // group * k * k)), (cout, cin // group, k, k))
        y = net.node("Conv", [x, net.init(f"{name}/kernel", w.astype(np.float32))],
                     f"{name}/Conv2D", kernel_shape=[k, k], strides=[stride, stride],
                     auto_pad="SAME_UPPER", group=group)
        b = net.rng.normal(0, 0.1, (1, cout, 1, 1)).astype(np.float32)
        return net.node("Add", [y, net.init(f"{name}/bias", b)], f"{name}/BiasAdd")

    y = net.relu6(conv(y, 3, 16, 2, "model/conv1"), "model/conv1/Relu6")
    y = net.relu6(conv(y, 16, 16, 1, "model/dw", group=16), "model/dw/Relu6")
    y = net.node("Relu", [conv(y, 16, 32, 2, "model/conv2")], "model/conv2/Relu")
    y = net.node("Transpose", [y], "model/conv2/Relu__20", perm=[0, 2, 3, 1])
    y = net.node("ReduceMean", [y], "model/gap/Mean", axes=[1, 2], keepdims=0)
    w = net.rng.normal(0, np.sqrt(1 / 32), (32, classes)).astype(np.float32)
    y = net.node("MatMul", [y, net.init("model/dense/MatMul/ReadVariableOp", w)],
                 "model/dense/MatMul")
    b = net.rng.normal(0, 0.1, classes).astype(np.float32)
    y = net.node("Add", [y, net.init("model/dense/BiasAdd/ReadVariableOp", b)],
                 "model/dense/BiasAdd")
    net.node("Softmax", [y], "dense", axis=-1)
    return net.model("tf2onnx_style", [("input_1", [batch, size, size, 3])],
                     [("dense", [batch, classes])])


def paddle2onnx_style(batch: Batch = 1, channels: int = 8, size: int = 16, classes: int = 10,
                      seed: int = 0) -> onnx.ModelProto:
    """A MobileNetV3-like head the way paddle2onnx exports it at opset 11: Conv + unfused
    BatchNormalization, HardSwish decomposed, a squeeze-excite with HardSigmoid, Flatten, and a
    Linear layer as MatMul + Add. Input ``x``: [batch, channels, size, size]."""
    net = _Net(seed)
    y = net.conv_bn("x", channels, 32, 3, "conv2d_0", stride=2, act="hardswish")
    pooled = net.node("GlobalAveragePool", [y], "pool2d_0")
    s = net.conv(pooled, 32, 8, 1, "conv2d_1", bias=True)
    s = net.node("Relu", [s], "relu_0")
    s = net.conv(s, 8, 32, 1, "conv2d_2", bias=True)
    s = net.node("HardSigmoid", [s], "hard_sigmoid_0", alpha=0.2, beta=0.5)
    y = net.node("Mul", [y, s], "elementwise_mul_0")
    y = net.node("GlobalAveragePool", [y], "pool2d_1")
    y = net.node("Flatten", [y], "flatten_0", axis=1)
    w = net.rng.normal(0, np.sqrt(1 / 32), (32, classes)).astype(np.float32)
    y = net.node("MatMul", [y, net.init("linear_0.w_0", w)], "linear_0")
    b = net.rng.normal(0, 0.1, classes).astype(np.float32)
    net.node("Add", [y, net.init("linear_0.b_0", b)], "save_infer_model/scale_0")
    return net.model("paddle2onnx_style", [("x", [batch, channels, size, size])],
                     [("save_infer_model/scale_0", [batch, classes])], opset=11)


BUILDING_BLOCKS = {
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenetv2_block": mobilenetv2_block,
    "mobilenetv3_block": mobilenetv3_block,
    "inception_block": inception_block,
    "reshape_shape_subgraph": reshape_shape_subgraph,
    "resnet_style": resnet_style,
    "tf2onnx_style": tf2onnx_style,
    "paddle2onnx_style": paddle2onnx_style,
}
