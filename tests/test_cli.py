"""The command line: show, compile, run, and errors reported without a traceback."""

from importlib import resources

import numpy as np

from qcompiler import cli

MODEL = str(resources.files("qcompiler.examples") / "digits_convnet.onnx")


def test_show_prints_the_ir(capsys):
    assert cli.main(["show", MODEL, "--input-shape", "image=2,1,8,8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("graph digits_convnet(%image: f32[2,1,8,8]) {")
    assert "BatchNormalization(" in out and "@conv1_w" in out


def test_compile_then_run(tmp_path, capsys):
    folder = tmp_path / "digits.qcx"
    assert cli.main(["compile", MODEL, "-o", str(folder)]) == 0
    x = np.zeros((3, 1, 8, 8), np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    assert cli.main(["run", str(folder), str(tmp_path / "in.npz"),
                     "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert out["logits"].shape == (3, 10)


def test_errors_are_reported_as_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert cli.main(["show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcompiler: error: ModelLoadError:")
    assert "Traceback" not in err
