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


def test_show_after_passes_with_explain_timing_and_ir_dumps(capsys):
    assert cli.main(["show", MODEL, "--passes", "canonicalize,fold-bn,fuse{activations=clip}",
                     "--explain", "--timing", "--print-ir-after", "fold-bn"]) == 0
    captured = capsys.readouterr()
    assert "BatchNormalization" not in captured.out
    assert captured.out.count(" = Relu(") == 4  # Relu fusion was not asked for
    assert "// ----- IR after fold-bn (round 1) -----" in captured.err
    assert "fold-into-producer x3" in captured.err  # the timing table
    assert "fuse-relu" not in captured.err


def test_explain_names_the_reason(tmp_path, capsys):
    # conv1's output gets a second reader, so fold-bn must refuse to fold conv1_bnorm.
    import onnx
    from onnx import helper

    model = onnx.load(MODEL)
    model.graph.node.append(helper.make_node("Relu", ["conv1_c"], ["side"], name="side"))
    model.graph.output.append(helper.make_empty_tensor_value_info("side"))
    path = tmp_path / "two_readers.onnx"
    onnx.save(model, path)
    assert cli.main(["show", str(path), "--passes", "fold-bn", "--explain"]) == 0
    err = capsys.readouterr().err
    assert ("// fold-bn: fold-into-producer: BatchNormalization node 'conv1_bnorm'" in err)
    assert "has 2 readers (BatchNormalization 'conv1_bnorm', Relu 'side')" in err


def test_passes_lists_registered_passes_and_options(capsys):
    assert cli.main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("canonicalize", "fold-bn", "fuse"):
        assert out.count(f"\n{name} ") + out.startswith(f"{name} ") == 1
    assert "activations=relu,clip,leakyrelu,hardsigmoid,hardswish" in out


def test_compile_runs_the_float_pipeline_unless_told_not_to(tmp_path):
    import json

    for passes, bn in (("canonicalize,fold-bn,fuse", False), ("none", True)):
        folder = tmp_path / passes.replace(",", "_")
        assert cli.main(["compile", MODEL, "-o", str(folder), "--passes", passes]) == 0
        source = (folder / "model.py").read_text()
        assert ("BatchNormalization" in source) is bn, passes
        assert json.loads((folder / "manifest.json").read_text())


def test_a_bad_pipeline_is_one_line(capsys):
    assert cli.main(["show", MODEL, "--passes", "fold_bn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcompiler: error: PipelineError: unknown pass 'fold_bn'; "
                          "did you mean 'fold-bn'?")
