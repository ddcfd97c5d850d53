"""End to end: the embedded demo model compiles, matches onnxruntime and keeps its accuracy."""

from importlib import resources

import numpy as np
import onnx
import pytest
from ort_helpers import run_model

import qcompiler as qc
from qcompiler import cli

EXAMPLES = resources.files("qcompiler.examples")
# Largest |difference| in the logits allowed, relative to their max|reference|. Measured: 4.2e-7
# against onnxruntime, 3.6e-7 between the imported and the canonicalize,fold-bn,fuse graphs.
PEAK_TOL = 2e-6


@pytest.fixture(scope="module")
def digits():
    with np.load(str(EXAMPLES / "digits.npz")) as data:
        return {k: data[k] for k in data.files}


def test_digits_convnet_matches_onnxruntime_and_its_accuracy(digits):
    path = str(EXAMPLES / "digits_convnet.onnx")
    exe = qc.compile(qc.load_onnx(path), backend="numpy")
    logits = exe.run({"image": digits["test_x"]})["logits"]
    (expected,) = run_model(onnx.load(path), {"image": digits["test_x"]})
    np.testing.assert_allclose(logits, expected, rtol=0, atol=PEAK_TOL * np.abs(expected).max())
    accuracy = float((logits.argmax(1) == digits["test_y"]).mean())
    assert round(accuracy, 3) == 0.980


def test_float_pipeline_removes_every_batchnorm_and_standalone_relu(digits):
    g = qc.load_onnx(str(EXAMPLES / "digits_convnet.onnx"))
    assert g.op_counts() == {"Conv": 3, "BatchNormalization": 3, "Relu": 4, "MaxPool": 1,
                             "Flatten": 1, "Gemm": 2}
    pm = qc.PassManager("canonicalize,fold-bn,fuse")
    result = pm.run(g)
    assert result.graph.op_counts() == {"Conv": 3, "MaxPool": 1, "Flatten": 1, "Gemm": 2}
    assert result.stats == {"fold-bn: fold-into-producer": 3, "fuse: fuse-relu": 4}
    fused = {n.name: n.attrs.get("activation") for n in result.graph.nodes}
    assert fused == {"conv1_conv": "Relu", "conv2_conv": "Relu", "pool2": None,
                     "conv3_conv": "Relu", "flatten": None, "fc1": "Relu", "fc2": None}
    ref = qc.compile(g).run({"image": digits["test_x"]})["logits"]
    out = qc.compile(result.graph).run({"image": digits["test_x"]})["logits"]
    assert np.max(np.abs(out - ref)) <= PEAK_TOL * np.max(np.abs(ref))
    assert round(float((out.argmax(1) == digits["test_y"]).mean()), 3) == 0.980


def test_demo_command_reports_accuracy(capsys):
    assert cli.main(["demo", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "passes canonicalize,fold-bn,fuse: 14 -> 7 nodes" in out
    assert "numpy backend (fp32)  accuracy 0.980" in out
    assert "onnxruntime (fp32)    accuracy 0.980" in out
    assert "numpy backend / onnxruntime =" in out
    # the int8 section: our default quantization on the numpy and llvm backends next to
    # quantize_static's in both sessions
    int8 = [line for line in out.splitlines() if " int8 " in line and "accuracy" in line]
    assert len(int8) == 4 and "default session" in int8[2] and "x64quantprecision=1" in int8[3]
    assert int8[0].startswith("  qcompiler int8       accuracy 0.980   agreement with fp32 1.000")
    assert int8[1].startswith("  llvm backend int8    accuracy 0.980   agreement with fp32 1.000")
    assert int8[1].endswith("(bit-exact with the numpy backend: yes)")
    ours, native, default, exact = (float(line.split("logits SQNR ")[1].split()[0])
                                    for line in int8)
    assert native == ours
    assert ours >= exact - 0.5 and exact > default  # measured 37.6, 37.5 and 19.9 dB
    assert "fully integer between the input Quantize and the output Dequantize" in out
    (native_nodes,) = [line for line in out.splitlines() if line.startswith("  llvm backend: ")]
    assert "all 9 nodes native" in native_nodes or "of 9 nodes on numpy kernels: " in native_nodes
    (times,) = [line for line in out.splitlines() if "relative to the fp32 numpy backend" in line]
    for runner in ("numpy backend int8", "llvm backend int8", "onnxruntime fp32",
                   "onnxruntime int8 (default", "onnxruntime int8 (x64quantprecision=1)"):
        assert runner in times
    (llvm,) = [line for line in out.splitlines() if line.startswith("  llvm backend int8 time")]
    assert llvm.count("x, / onnxruntime ") == 2  # against onnxruntime fp32 and both int8 sessions
