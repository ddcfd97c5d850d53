"""The command line: show, compile, run, and errors reported without a traceback."""

import io
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import qcompiler as qc
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
    assert folder.is_file()
    x = np.zeros((3, 1, 8, 8), np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    assert cli.main(["run", str(folder), str(tmp_path / "in.npz"),
                     "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert out["logits"].shape == (3, 10)


def test_compile_int8_for_the_llvm_backend_then_run(tmp_path, capsys):
    data = resources.files("qcompiler.examples") / "digits.npz"
    with np.load(data) as d:
        np.savez(tmp_path / "calib.npz", image=d["calib_x"][:64])
        x = d["test_x"][:9]
    saved = tmp_path / "digits.qcx"
    assert cli.main(["compile", MODEL, "-o", str(saved), "--calib", str(tmp_path / "calib.npz"),
                     "--backend", "llvm", "--threads", "2"]) == 0
    assert "with the llvm backend" in capsys.readouterr().out
    np.savez(tmp_path / "in.npz", image=x)
    assert cli.main(["run", str(saved), str(tmp_path / "in.npz"),
                     "-o", str(tmp_path / "out.npz")]) == 0
    exe = qc.load(saved)
    assert exe.backend == "llvm" and exe.options == {"threads": 2}
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["logits"], qc.compile(exe.graph)(x))


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


def test_a_bad_pipeline_is_one_line(capsys):
    assert cli.main(["show", MODEL, "--passes", "fold_bn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcompiler: error: PipelineError: unknown pass 'fold_bn'; "
                          "did you mean 'fold-bn'?")


def test_compile_runs_the_float_pipeline_unless_told_not_to(tmp_path):
    for passes, bn in (("canonicalize,fold-bn,fuse", False), ("none", True)):
        folder = tmp_path / passes.replace(",", "_")
        qcx = tmp_path / f"{folder.name}.qcx"
        assert cli.main(["compile", MODEL, "-o", str(qcx), "--emit-python", str(folder),
                         "--passes", passes]) == 0
        source = (folder / "model.py").read_text()
        assert ("BatchNormalization" in source) is bn, passes
        assert ("BatchNormalization" in qc.load(qcx).graph.op_counts()) is bn


def test_emit_python_writes_a_program_that_runs_with_numpy_alone(tmp_path, capsys):
    folder = tmp_path / "digits"
    assert cli.main(["compile", MODEL, "--emit-python", str(folder)]) == 0
    x = np.zeros((2, 1, 8, 8), np.float32)
    np.savez(tmp_path / "in.npz", image=x)
    done = subprocess.run([sys.executable, str(folder / "model.py"), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        assert out["logits"].shape == (2, 10)


def one_line_error(capsys, code: int, expected: str) -> str:
    """The stderr of a failed command: one line, no traceback, naming the problem."""
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    return err


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "digits.qcx"
    qc.compile(qc.load_onnx(MODEL)).save(path)
    return path


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        buffer = io.BytesIO()  # np.savez(path) would add ".npz" to a name without it
        np.savez(buffer, **content)
        path.write_bytes(buffer.getvalue())
    else:
        path.mkdir()
    return path


IMAGE = np.zeros((1, 1, 8, 8), np.float32)
BAD_INPUTS = {
    "text-file": (b"image=0", "InputFileError: cannot read inputs from", "not a readable .npz"),
    "truncated-npz": (None, "InputFileError", "not a readable .npz"),
    "directory": ("dir", "InputFileError", "it is a directory"),
    "wrong-key": ({"img": IMAGE}, "UnknownInputError", "unknown input(s) 'img'"),
    "missing-key": ({}, "MissingInputError", "input 'image' (f32[N,1,8,8]) is missing"),
    "wrong-dtype": ({"image": IMAGE.astype(np.int64)}, "InputDTypeError", "got int64"),
    "wrong-shape": ({"image": np.zeros((9, 9), np.float32)}, "InputShapeError", "rank 4"),
    "pickled": ({"image": np.array([{}], object)}, "InputFileError", "allow_pickle"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_run_with_bad_inputs_is_one_line_naming_the_error(saved, tmp_path, capsys, case):
    content, kind, message = BAD_INPUTS[case]
    inputs = tmp_path / "in.npz"
    if content is None:
        np.savez(inputs, image=IMAGE)
        inputs.write_bytes(inputs.read_bytes()[:-30])
    else:
        write(inputs, content)
    err = one_line_error(capsys, cli.main(["run", str(saved), str(inputs)]), message)
    assert err.startswith(f"qcompiler: error: {kind.split(':')[0]}")


BAD_SAVED = {
    "missing": (None, "no such file"),
    "directory": ("dir", "it is a directory"),
    "onnx": (Path(MODEL).read_bytes(), "qc.load_onnx"),
    "npz": ({"image": IMAGE}, "zip archive"),
    "truncated": ("truncate", "truncated"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAVED))
def test_run_of_a_bad_saved_file_is_one_line(saved, tmp_path, capsys, case):
    content, message = BAD_SAVED[case]
    path = tmp_path / "other.qcx"
    if content == "truncate":
        path.write_bytes(saved.read_bytes()[:-10])
    elif content is not None:
        write(path, content)
    np.savez(tmp_path / "in.npz", image=IMAGE)
    err = one_line_error(capsys, cli.main(["run", str(path), str(tmp_path / "in.npz")]),
                         message)
    assert err.startswith("qcompiler: error: ModelLoadError: cannot load")


@pytest.mark.parametrize("argv, message", [
    (["demo", "--repeats", "0"], "argument --repeats: must be a whole number >= 1, got '0'"),
    (["demo", "--repeats", "-3"], "must be a whole number >= 1, got '-3'"),
    (["demo", "--repeats", "many"], "got 'many'"),
    (["compile", MODEL, "-o", "x.qcx", "--backend", "tpu"], "invalid choice: 'tpu' (choose "
                                                            "from 'llvm', 'numpy')"),
    (["compile", MODEL, "-o", "x.qcx", "--threads", "2"], "BackendError: the numpy backend "
                                                          "has no option(s) threads"),
    (["compile", MODEL, "-o", "x.qcx", "--backend", "llvm", "--threads", "0"],
     "threads must be a whole number >= 1, got 0"),
    (["show", MODEL, "--input-shape", "image=-1,1,8,8"], "dimension '-1' is neither"),
    (["show", MODEL, "--input-shape", "image"], "is not NAME=D0,D1,..."),
    (["compile", MODEL], "say where to write"),
    (["run"], "the following arguments are required"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_nonsense_options_are_refused_in_one_line(capsys, argv, message):
    try:
        code = cli.main(argv)
    except SystemExit as exit:
        code = exit.code
    one_line_error(capsys, code, message)


@pytest.mark.parametrize("argv, message", [
    (["demo", "--data", "missing.npz"], "InputFileError: cannot read inputs from 'missing.npz'"
                                        ": no such file"),
    (["show", "missing.onnx"], "ModelLoadError"),
    (["show", "."], "ModelLoadError: cannot load '.': it is not a file"),
    (["compile", MODEL, "-o", "/nonexistent/folder/m.qcx"], "SaveError: cannot save to"),
])
def test_missing_files_are_one_line(capsys, argv, message):
    one_line_error(capsys, cli.main(argv), message)


def test_a_wrong_demo_data_file_says_which_arrays_it_needs(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", x=IMAGE)
    code = cli.main(["demo", "--data", str(tmp_path / "d.npz")])
    one_line_error(capsys, code, "has no test_x or test_y array (it holds: x)")


def test_demo_labels_that_do_not_fit_the_images_are_one_line(tmp_path, capsys):
    images = np.zeros((5, 1, 8, 8), np.float32)
    np.savez(tmp_path / "d.npz", test_x=images, test_y=np.zeros(3, np.int64))
    code = cli.main(["demo", "--data", str(tmp_path / "d.npz")])
    one_line_error(capsys, code, "test_y must hold one integer label per test image (5), it is "
                                 "int64[3]")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(qc.ModelLoadError):
        cli.main(["--debug", "run", str(tmp_path / "missing.qcx"), "in.npz"])
    with pytest.raises(qc.ModelLoadError):
        cli.main(["run", "--debug", str(tmp_path / "missing.qcx"), "in.npz"])


def test_the_installed_command_reports_an_error_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "qcompiler.cli", "run", str(tmp_path),
                           str(tmp_path / "in.npz")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("qcompiler: error: ModelLoadError:")
    assert done.stderr.count("\n") == 1


def test_an_internal_error_is_one_line_too(monkeypatch, capsys, tmp_path):
    def broken(path):
        raise RuntimeError("something qcompiler did not expect")

    monkeypatch.setattr(qc.api, "load", broken)
    code = cli.main(["run", "m.qcx", "in.npz"])
    assert code == 3
    one_line_error(capsys, code, "internal error: RuntimeError: something qcompiler did not "
                                 "expect (this is a bug in qcompiler; --debug shows the traceback)")


def test_run_writes_exactly_the_file_it_names(tmp_path, capsys, saved):
    np.savez(tmp_path / "in.npz", image=np.zeros((2, 1, 8, 8), np.float32))
    out = tmp_path / "outfile"  # no .npz suffix: written as given, and said so
    assert cli.main(["run", str(saved), str(tmp_path / "in.npz"), "-o", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.qcx", "in.npz", "outfile"]
    with np.load(out) as data:
        assert data["logits"].shape == (2, 10)


def test_run_into_a_directory_is_one_line_and_writes_nothing(tmp_path, capsys, saved):
    np.savez(tmp_path / "in.npz", image=np.zeros((2, 1, 8, 8), np.float32))
    target = tmp_path / "adir"
    target.mkdir()
    code = cli.main(["run", str(saved), str(tmp_path / "in.npz"), "-o", str(target)])
    one_line_error(capsys, code, f"cannot write {str(target)!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "digits.qcx", "in.npz"]
    assert list(target.iterdir()) == []


def test_compile_with_calib_writes_a_quantized_executable(tmp_path, capsys):
    calib = tmp_path / "calib.npz"
    with np.load(Path(MODEL).with_name("digits.npz")) as data:
        np.savez(calib, image=data["calib_x"][:64])
    out = tmp_path / "q.qcx"
    assert cli.main(["compile", MODEL, "-o", str(out), "--calib", str(calib)]) == 0
    printed = capsys.readouterr().out
    assert "compiled quantized" in printed
    assert "quantized: integer ops from the input Quantize to the output Dequantize" in printed
    saved = qc.load(out).graph
    assert saved.find_nodes("QuantizeLinear") and saved.find_nodes("IntConv")
    assert saved.float_islands() == []


def test_compile_with_calib_lists_the_float_islands(tmp_path, capsys):
    calib = tmp_path / "calib.npz"
    with np.load(Path(MODEL).with_name("digits.npz")) as data:
        np.savez(calib, image=data["calib_x"][:64])
    config = tmp_path / "q.toml"
    config.write_text('exclude_layers = ["fc2"]\n')
    out = tmp_path / "q.qcx"
    assert cli.main(["compile", MODEL, "-o", str(out), "--calib", str(calib),
                     "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "quantized: integer ops but for 1 float island(s):" in printed
    assert "fc2 (Gemm, layer fc2): excluded by config: exclude_layers 'fc2'" in printed


@pytest.mark.parametrize("config, calib, message", [
    ('{"calibraton": "minmax"}', "calib", "c.json': unknown config key(s) 'calibraton' (did "
                                          "you mean 'calibration'?)"),
    ('{"exclude_layers": ["conv9"]}', "calib", "ConfigError: exclusion(s) matching nothing in "
                                               "graph 'digits_convnet': layer 'conv9'"),
    ('{"per_channel": false}', None, "CalibrationError: static quantization of graph "
                                     "'digits_convnet' needs calibration data"),
    (None, "nan", "CalibrationError: calibration input 'image' holds NaN in sample 3"),
    (None, "missing", "CalibrationError: cannot read inputs from"),
])
def test_quantizing_compile_errors_are_one_line_and_write_nothing(tmp_path, capsys, config,
                                                                   calib, message):
    with np.load(Path(MODEL).with_name("digits.npz")) as data:
        x = data["calib_x"][:8].copy()
    x[3, 0, 2, 2] = np.nan if calib == "nan" else x[3, 0, 2, 2]
    np.savez(tmp_path / f"{calib}.npz", image=x)
    argv = ["compile", MODEL, "-o", str(tmp_path / "q.qcx")]
    if config is not None:
        (tmp_path / "c.json").write_text(config)
        argv += ["--config", str(tmp_path / "c.json")]
    if calib is not None:
        argv += ["--calib", str(tmp_path / f"{calib}.npz") if calib != "missing"
                 else str(tmp_path / "none.npz")]
    one_line_error(capsys, cli.main(argv), message)
    assert not (tmp_path / "q.qcx").exists()
