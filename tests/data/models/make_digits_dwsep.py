"""Train and export ``digits_dwsep.onnx``, a MobileNet-style depthwise-separable CNN on the digits
(run by hand, not by tests; the ``.onnx`` beside this script is committed).

The model is the one quantization tests and benchmarks use where per-tensor weights hurt: a
depthwise conv with its BatchNorm folded in has very uneven per-channel weight ranges, so one
scale for the whole tensor rounds its small channels to a few levels. That is the case
cross-layer equalization (``equalize``) and bias correction (``bias-correct``) exist for.

    image [N,1,8,8]
    stem     Conv 3x3 1->16, BatchNorm, ReLU
    block1   depthwise Conv 3x3 (16), BatchNorm, ReLU; pointwise Conv 1x1 16->32, BatchNorm, ReLU
    block2   depthwise Conv 3x3 stride 2 (32), ...;     pointwise 32->64, ...          -> 4x4
    block3   depthwise Conv 3x3 (64), ...;               pointwise 64->64, ...
    GlobalAveragePool, Flatten, Gemm 64->10 -> logits [N,10]

BatchNormalization nodes are left unfused (exported without constant folding, in eval mode),
the batch dimension is dynamic, opset 13. ReLU rather than ReLU6 after every conv, as AIMET's
equalization also turns ReLU6 into ReLU: the cap of a ReLU6 cannot move with a per-channel scale.

Data: the training images are scikit-learn's ``load_digits`` (scaled to [0, 1]) minus every image
that appears in ``examples/digits.npz`` (its ``calib_x`` and ``test_x``), so the test split is
unseen and the calibration data is not training data: 1000 training images.

Training (fixed seeds, one CPU thread, deterministic): Adam, learning rate 3e-3 with a cosine
schedule, 40 epochs, batch 32, random shifts of the images by up to one pixel. Weight decay 1e-4
on the stem, the pointwise convs and the classifier; none on the depthwise convs and the
BatchNorms, as in MobileNet training recipes.

Trained this way the model alone does not show the problem: its folded depthwise ranges differ by
a factor 3 at most and per-tensor int8 loses nothing. Real MobileNets are not that tidy: because
``relu(a x) = a relu(x)`` for ``a > 0``, training leaves each channel's scale free between a
BatchNorm and the next conv, and the trained values end up spread over orders of magnitude. The
script makes that explicit and exact: after training, each depthwise BatchNorm's gamma and beta
are multiplied per channel by ``a_c = 2^u``, ``u`` uniform in [-4, 4] (seeded), and the pointwise
weights reading channel ``c`` divided by ``a_c``. The float function is unchanged (largest logit
change 3.8e-6); the BatchNorm gammas now spread widely, as in real MobileNets.

Measured after export (digits.npz ``test_x``, 541 images): float accuracy 0.982; ratio of the
largest to the smallest output-channel weight range (max |w|) of the BN-folded depthwise convs:
72, 357, 351 (block1..3). ``qc.quantize`` with min/max calibration on ``calib_x`` gives 0.706
with per-tensor weights, 0.935 per channel; with ``equalize`` and ``bias-correct`` 0.983 (the
README has the table).

Environment (outside the repository, as for tests/data/exported/make_fixtures.py)::

    python3.11 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install onnx onnxscript scikit-learn \
        /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl

Made with torch 2.13.0+cpu, onnx 1.23.2, scikit-learn 1.9.1. From the repository root::

    /tmp/venv-torch/bin/python tests/data/models/make_digits_dwsep.py
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = HERE / "digits_dwsep.onnx"
SEED = 0
EPOCHS = 40
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
SPREAD = 4.0


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout), relu=nn.ReLU()))


class DigitsDWSep(nn.Module):
    """Stem conv, three depthwise-separable blocks, global average pool, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_relu(1, 16, 3)
        self.blocks = nn.Sequential(OrderedDict(
            (f"block{i}", nn.Sequential(OrderedDict(
                dw=conv_bn_relu(cin, cin, 3, stride, groups=cin), pw=conv_bn_relu(cin, cout, 1))))
            for i, (cin, cout, stride) in enumerate(((16, 32, 1), (32, 64, 2), (64, 64, 1)), 1)))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))

    def depthwise(self) -> list[nn.Sequential]:
        return [block.dw for block in self.blocks]


def training_set(npz: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray]:
    """load_digits without any image of the calibration or test split."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    held_out = {x.tobytes() for key in ("calib_x", "test_x") for x in npz[key]}
    keep = np.array([x.tobytes() not in held_out for x in images])
    return images[keep], digits.target[keep].astype(np.int64)


def shifted(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zero fill)."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def train(model: DigitsDWSep, x: np.ndarray, y: np.ndarray) -> None:
    gen = torch.Generator().manual_seed(SEED)
    no_decay = [p for b in model.depthwise() for p in b.parameters()]
    no_decay += [p for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                 for p in m.parameters() if all(p is not q for q in no_decay)]
    decay = [p for p in model.parameters() if all(p is not q for q in no_decay)]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": WEIGHT_DECAY},
                            {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(xs), generator=gen)
        for i in range(0, len(xs), BATCH):
            idx = order[i:i + BATCH]
            loss = nn.functional.cross_entropy(model(shifted(xs[idx], gen)), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def spread_channel_scales(model: DigitsDWSep, gen: torch.Generator) -> None:
    """Rescale each depthwise output channel c by a_c (log-uniform in 2^-SPREAD..2^SPREAD) and
    the pointwise weights reading it by 1/a_c: the same function, since relu(a x) = a relu(x)."""
    for block in model.blocks:
        bn, pw = block.dw.bn, block.pw.conv
        a = 2.0 ** ((torch.rand(bn.num_features, generator=gen) * 2 - 1) * SPREAD)
        bn.weight.mul_(a)
        bn.bias.mul_(a)
        pw.weight.div_(a[None, :, None, None])


def folded_range_ratios(model: DigitsDWSep) -> list[float]:
    """max/min over output channels of max|w| of each depthwise conv with its BatchNorm folded."""
    ratios = []
    for conv, bn, _ in model.depthwise():
        s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        r = (conv.weight * s[:, None, None, None]).abs().amax(dim=(1, 2, 3))
        ratios.append(float(r.max() / r.min()))
    return ratios


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # the same float results on any machine, and fast on a small net
    npz = np.load(ROOT / "examples" / "digits.npz")
    x, y = training_set(npz)
    model = DigitsDWSep()
    train(model, x, y)
    test_x = torch.from_numpy(npz["test_x"])
    with torch.no_grad():
        logits = model(test_x).numpy()
        trained = folded_range_ratios(model)
        spread_channel_scales(model, torch.Generator().manual_seed(SEED + 1))
        change = float(np.abs(model(test_x).numpy() - logits).max())
        ratios = folded_range_ratios(model)
    print(f"largest change of a logit by the rescaling: {change:.2g}")
    accuracy = float((logits.argmax(1) == npz["test_y"]).mean())
    print(f"trained on {len(x)} images; float accuracy on test_x: {accuracy:.3f}")
    for label, values in (("as trained", trained), ("rescaled", ratios)):
        print(f"depthwise folded per-channel range ratios, {label}:",
              ", ".join(f"{r:.0f}" for r in values))
    torch.onnx.export(model, (torch.from_numpy(npz["calib_x"][:2]),), str(OUT), dynamo=False,
                      opset_version=13, do_constant_folding=False,
                      training=torch.onnx.TrainingMode.EVAL,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load(str(OUT))
    onnx.checker.check_model(proto)
    print(f"wrote {OUT.name} ({OUT.stat().st_size / 1024:.1f} KiB, "
          f"{sum(n.op_type == 'BatchNormalization' for n in proto.graph.node)} BatchNorms)")


if __name__ == "__main__":
    main()
