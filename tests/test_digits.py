"""End to end: the embedded demo model compiles, matches onnxruntime and keeps its accuracy."""

from importlib import resources

import numpy as np
import onnx
import pytest
from ort_helpers import run_model

import qcompiler as qc
from qcompiler import cli

EXAMPLES = resources.files("qcompiler.examples")


@pytest.fixture(scope="module")
def digits():
    with np.load(str(EXAMPLES / "digits.npz")) as data:
        return {k: data[k] for k in data.files}


def test_digits_convnet_matches_onnxruntime_and_its_accuracy(digits):
    path = str(EXAMPLES / "digits_convnet.onnx")
    exe = qc.compile(qc.load_onnx(path), backend="numpy")
    logits = exe.run({"image": digits["test_x"]})["logits"]
    (expected,) = run_model(onnx.load(path), {"image": digits["test_x"]})
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    accuracy = float((logits.argmax(1) == digits["test_y"]).mean())
    assert round(accuracy, 3) == 0.980


def test_demo_command_reports_accuracy(capsys):
    assert cli.main(["demo", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "numpy backend (fp32)  accuracy 0.980" in out
    assert "onnxruntime (fp32)    accuracy 0.980" in out
    assert "numpy backend / onnxruntime =" in out
