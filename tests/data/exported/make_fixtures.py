"""Regenerate the ONNX fixtures in this folder with the real exporters (run by hand, not by tests).

The ``.onnx`` files beside this script are committed; tests/test_exported_models.py only reads
them, so nothing here is needed at test time. Each exporter lives in its own throwaway virtual
environment outside the repository (never in the project's .venv), made with Python 3.11::

    python3.11 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install onnx onnxscript \
        /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    python3.11 -m venv /tmp/venv-tf
    /tmp/venv-tf/bin/pip install tensorflow-cpu tf2onnx
    python3.11 -m venv /tmp/venv-paddle
    /tmp/venv-paddle/bin/pip install paddlepaddle paddle2onnx onnx_graphsurgeon sympy

(paddle.onnx.export folds constants with Polygraphy, which otherwise pip-installs
onnx_graphsurgeon and sympy by itself on first use.) The fixtures were made with torch
2.13.0+cpu, onnxscript 0.7.2, onnx 1.23.2; tensorflow-cpu 2.21.0, keras 3.15.1, tf2onnx 1.17.0;
paddlepaddle 3.3.1, paddle2onnx 2.1.0, polygraphy 0.53.6. Then, from the
repository root, one command per exporter::

    /tmp/venv-torch/bin/python tests/data/exported/make_fixtures.py torch
    /tmp/venv-tf/bin/python tests/data/exported/make_fixtures.py tf
    /tmp/venv-paddle/bin/python tests/data/exported/make_fixtures.py paddle

Every model is small (a few channels, 16x16 or smaller inputs), has random weights from a fixed
seed and is exported with a dynamic batch dimension. BatchNorm statistics are randomised too, so
that an exporter or importer that drops or mis-folds a BatchNorm shows up in the outputs. The
torch and paddle exports are byte-for-byte reproducible; tf2onnx's are not (a few of its own
helper constants and nodes are numbered differently from run to run, the weights are the same).
After regenerating, update ``EXPECTED`` in tests/test_exported_models.py if the file list or the
node names it checks changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0


def _report(path: Path) -> None:
    print(f"wrote {path.name} ({path.stat().st_size / 1024:.1f} KiB)")


# -- PyTorch ---------------------------------------------------------------------------------------


def _torch_models() -> dict:
    """name -> (module, example input, input name, output name) for the PyTorch fixtures."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    def randomise_bn(module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c) * 0.1)
                m.running_var.copy_(torch.rand(c) + 0.5)
                m.weight.data.copy_(torch.rand(c) + 0.5)
                m.bias.data.copy_(torch.randn(c) * 0.1)

    class SmallCNN(nn.Module):
        """Conv+BN+ReLU twice with MaxPool, ``x.view(x.size(0), -1)``, Linear."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(F.relu(self.bn1(self.conv1(x))))
            x = self.pool(F.relu(self.bn2(self.conv2(x))))
            x = x.view(x.size(0), -1)
            return self.fc(x)

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int, r: int = 4) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1 = nn.Conv2d(c, c // r, 1)
            self.relu = nn.ReLU()
            self.fc2 = nn.Conv2d(c // r, c, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))

    class MobileNetV3Block(nn.Module):
        """Stem conv + Hardswish, inverted residual (expand, depthwise + ReLU6,
        squeeze-excite with Hardsigmoid, project), pooled head with nn.Flatten and a
        BatchNorm1d after a Linear (which no exporter can fold into a Conv)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                                      nn.BatchNorm2d(8), nn.Hardswish())
            self.expand = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16),
                                        nn.Hardswish())
            self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16,
                                                     bias=False),
                                           nn.BatchNorm2d(16), nn.ReLU6())
            self.se = SqueezeExcite(16)
            self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 12),
                                      nn.BatchNorm1d(12), nn.Hardswish(), nn.Linear(12, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.project(self.se(self.depthwise(self.expand(x))))
            return self.head(x)

    class UpsampleConcat(nn.Module):
        """F.interpolate (nearest by scale, bilinear to a size), torch.cat, a residual add,
        AdaptiveAvgPool2d(1) and torch.flatten."""

        def __init__(self) -> None:
            super().__init__()
            self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.lateral = nn.Conv2d(4, 8, 1)
            self.fuse = nn.Conv2d(24, 8, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = F.relu(self.down(x))                                       # N, 8, 6, 6
            up_nearest = F.interpolate(d, scale_factor=2.0, mode="nearest")
            up_bilinear = F.interpolate(d, size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
            lat = self.lateral(x)
            y = F.relu(self.fuse(torch.cat([up_nearest, up_bilinear, lat], dim=1)))
            y = y + lat
            return self.fc(torch.flatten(self.pool(y), 1))

    class MLPBlock(nn.Module):
        """A transformer-style MLP on N x tokens x features: Linear, LayerNorm, GELU (exact
        and tanh), residual, softmax over the last axis."""

        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(16, 32)
            self.norm1 = nn.LayerNorm(32)
            self.fc2 = nn.Linear(32, 16)
            self.norm2 = nn.LayerNorm(16)
            self.head = nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.gelu(self.norm1(self.fc1(x)))
            x = self.norm2(x + F.gelu(self.fc2(h), approximate="tanh"))
            return torch.softmax(self.head(x), dim=-1)

    def make(cls: type[nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(SEED)
        model = cls()
        with torch.no_grad():
            randomise_bn(model)
        return model.eval(), torch.randn(*shape)

    return {
        "cnn": (*make(SmallCNN, (2, 3, 16, 16)), "image", "logits"),
        "mobilenetv3_block": (*make(MobileNetV3Block, (2, 3, 16, 16)), "image", "logits"),
        "upsample_concat": (*make(UpsampleConcat, (2, 4, 12, 12)), "image", "logits"),
        "mlp_layernorm_gelu": (*make(MLPBlock, (2, 6, 16)), "tokens", "probs"),
    }


def export_torch() -> None:
    import torch

    models = _torch_models()

    def legacy(name: str, opset: int, suffix: str = "", **options: object) -> None:
        """The TorchScript exporter, as most deployed models were exported."""
        model, x, in_name, out_name = models[name]
        path = HERE / f"torch_{name}{suffix}_opset{opset}.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                          input_names=[in_name], output_names=[out_name],
                          dynamic_axes={in_name: {0: "batch"}, out_name: {0: "batch"}},
                          **options)
        _report(path)

    def dynamo(name: str, opset: int) -> None:
        """The torch.export-based exporter (the default since PyTorch 2.9)."""
        model, x, in_name, out_name = models[name]
        path = HERE / f"torch_dynamo_{name}_opset{opset}.onnx"
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset,
                                    input_names=[in_name], output_names=[out_name],
                                    dynamic_shapes=({0: batch},), external_data=False)
        program.save(str(path), external_data=False)
        _report(path)

    for name in models:
        for opset in (13, 17):
            legacy(name, opset)
    # In eval mode the exporter folds each BatchNorm into the Conv before it; without constant
    # folding it keeps them (and the view's shape chain stays unfolded too).
    legacy("cnn", 13, "_unfolded", do_constant_folding=False)
    for name in models:
        dynamo(name, 18)
    dynamo("mlp_layernorm_gelu", 20)  # opset 20 has Gelu


# -- TensorFlow ------------------------------------------------------------------------------------


def export_tf() -> None:
    import keras
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    def randomise(model: keras.Model) -> None:
        """Random BatchNorm statistics and Dense/Conv biases (Keras starts them at 0 and 1,
        which the converter's optimizer could then drop)."""
        rng = np.random.default_rng(SEED)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                c = layer.gamma.shape[0]
                layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                                   rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)])
            elif getattr(layer, "use_bias", False):
                weights = layer.get_weights()
                weights[-1] = rng.normal(0, 0.1, weights[-1].shape)
                layer.set_weights(weights)

    def mobilenet_style() -> keras.Model:
        """NHWC MobileNet-style stack: Conv2D 'same' + BN + ReLU6, a stride-2 'same'
        DepthwiseConv2D (asymmetric padding) + BN + ReLU6, pointwise conv with a residual
        add, GlobalAveragePooling2D, Dense, softmax."""
        layers = keras.layers
        inp = keras.Input((16, 16, 3), name="image")
        x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inp)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.ReLU(6.0, name="stem_relu6")(x)
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                   name="dw_conv")(x)
        x = layers.BatchNormalization(name="dw_bn")(x)
        x = layers.ReLU(6.0, name="dw_relu6")(x)
        y = layers.Conv2D(8, 1, padding="same", name="pw_conv")(x)
        y = layers.BatchNormalization(name="pw_bn")(y)
        x = layers.Add(name="residual")([x, y])
        x = layers.GlobalAveragePooling2D(name="gap")(x)
        x = layers.Dense(10, name="fc")(x)
        out = layers.Softmax(name="probs")(x)
        return keras.Model(inp, out, name="tf_mobilenet")

    def cnn_flatten() -> keras.Model:
        """Conv2D 'valid' + ReLU, MaxPooling2D 'same' on an odd size, Flatten (NHWC order),
        Dense + ReLU, Dense."""
        layers = keras.layers
        inp = keras.Input((15, 15, 3), name="image")
        x = layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)         # 13x13
        x = layers.MaxPooling2D(2, padding="same", name="pool1")(x)           # 7x7
        x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(16, activation="relu", name="fc1")(x)
        out = layers.Dense(10, name="logits")(x)
        return keras.Model(inp, out, name="tf_cnn")

    for name, build, size in (("mobilenet_style", mobilenet_style, 16),
                              ("cnn_flatten", cnn_flatten, 15)):
        keras.utils.set_random_seed(SEED)
        model = build()
        randomise(model)
        path = HERE / f"tf_{name}_opset13.onnx"
        spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="image"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=13,
                                   output_path=str(path))
        _report(path)


# -- PaddlePaddle ----------------------------------------------------------------------------------


def export_paddle() -> None:
    import paddle
    import paddle.nn.functional as F  # noqa: N812
    from paddle import nn

    class PaddleNet(nn.Layer):
        """Conv2D + BatchNorm + Hardswish, a depthwise conv + BN + ReLU6 with a Hardsigmoid
        squeeze-excite, nearest upsampling and concat, AdaptiveAvgPool2D, flatten, Linear."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
            self.bn1 = nn.BatchNorm2D(8)
            self.act1 = nn.Hardswish()
            self.dw = nn.Conv2D(8, 8, 3, stride=2, padding=1, groups=8, bias_attr=False)
            self.bn2 = nn.BatchNorm2D(8)
            self.act2 = nn.ReLU6()
            self.se_pool = nn.AdaptiveAvgPool2D(1)
            self.se_fc = nn.Conv2D(8, 8, 1)
            self.se_gate = nn.Hardsigmoid()
            self.conv3 = nn.Conv2D(16, 16, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: paddle.Tensor) -> paddle.Tensor:
            x = self.act1(self.bn1(self.conv1(x)))
            d = self.act2(self.bn2(self.dw(x)))
            d = d * self.se_gate(self.se_fc(self.se_pool(d)))
            # paddle2onnx 2.1.0 cannot convert a scale_factor ("the 0th elementwise MUST be
            # ir::FloatAttribute") and exits the process: give the size instead.
            up = F.interpolate(d, size=[16, 16], mode="nearest")
            x = F.relu(self.conv3(paddle.concat([x, up], axis=1)))
            return self.fc(paddle.flatten(self.pool(x), 1))

    paddle.seed(SEED)
    model = PaddleNet()
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            c = layer.weight.shape[0]
            layer._mean.set_value(paddle.randn([c]) * 0.1)
            layer._variance.set_value(paddle.rand([c]) + 0.5)
            layer.weight.set_value(paddle.rand([c]) + 0.5)
            layer.bias.set_value(paddle.randn([c]) * 0.1)
    model.eval()
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "image")]
    for opset in (11, 13):
        path = HERE / f"paddle_cnn_opset{opset}.onnx"
        path.unlink(missing_ok=True)
        paddle.onnx.export(model, str(path.with_suffix("")), input_spec=spec,
                           opset_version=opset)
        if not path.exists():
            raise SystemExit(f"paddle2onnx did not write {path.name}: see its log above")
        _report(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("exporter", choices=("torch", "tf", "paddle"))
    args = parser.parse_args(argv)
    {"torch": export_torch, "tf": export_tf, "paddle": export_paddle}[args.exporter]()


if __name__ == "__main__":
    sys.exit(main())
