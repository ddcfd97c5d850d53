"""The numpy backend: generated source, running, the standalone export, and errors at the
boundary."""

import linecache
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.types import TensorType


def small_graph() -> Graph:
    g = Graph("small")
    x = g.add_input("input.1", TensorType("f32", ("N", 3)))
    c = g.add_constant(np.array([1.0, -2.0, 3.0], np.float32), "bias")
    a = g.add_node("Add", [x, c], name="/layer1/Add").outputs[0]
    r = g.add_node("Relu", [a], name="/layer1/Relu").outputs[0]
    t = g.add_node("Tanh", [a], name="tanh").outputs[0]
    g.set_outputs([r, t])
    return g


def reference(x):
    a = x + np.array([1.0, -2.0, 3.0], np.float32)
    return np.maximum(a, 0), np.tanh(a)


def test_source_is_one_statement_per_op_named_after_layers():
    exe = qc.compile(small_graph(), backend="numpy")
    src = exe.source
    assert "layer1_Add = K.Add(input_1, C['bias'])" in src
    assert "layer1_Relu = K.Relu(layer1_Add)" in src
    assert "# /layer1/Relu" not in src  # the output carries the node's name already
    assert sum(line.strip().startswith(("layer1", "tanh")) for line in src.splitlines()) == 3


def test_run_and_call():
    exe = qc.compile(small_graph())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    out = exe.run({"input.1": x})
    relu, tanh = reference(x)
    np.testing.assert_array_equal(out["/layer1/Relu"], relu)
    np.testing.assert_array_equal(out["tanh"], tanh)
    r, t = exe(x)
    np.testing.assert_array_equal(r, relu)


def run_standalone(model: Path, inputs: Path, outputs: Path) -> subprocess.CompletedProcess:
    """Run an exported model.py with qcompiler unimportable: it must need numpy alone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    assert not name.startswith('qcompiler'), name\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"sys.argv = ['model.py', {str(inputs)!r}, {str(outputs)!r}]\n"
            f"exec(compile(open({str(model)!r}).read(), {str(model)!r}, 'exec'), "
            f"{{'__name__': '__main__', '__file__': {str(model)!r}}})\n")
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=inputs.parent,
                          capture_output=True, text=True)


def test_export_python_runs_with_numpy_alone(tmp_path):
    exe = qc.compile(small_graph())
    folder = exe.export_python(tmp_path / "small")
    assert sorted(p.name for p in folder.iterdir()) == [
        "constants.npz", "input_check.py", "model.py", "qc_ops"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    np.savez(tmp_path / "in.npz", **{"input.1": x})
    done = run_standalone(folder / "model.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        for name, value in exe.run({"input.1": x}).items():
            np.testing.assert_array_equal(out[name], value)


STANDALONE_REFUSALS = {
    "int64": ({"input.1": np.zeros((2, 3), np.int64)}, "must be f32 (float32), got int64"),
    "9x9": ({"input.1": np.zeros((9, 9), np.float32)}, "dimension 1 is 9, not 3"),
    "rank": ({"input.1": np.zeros(3, np.float32)}, "must have rank 2"),
    "unknown": ({"image": np.zeros((2, 3), np.float32)}, "unknown input(s) 'image'"),
    "missing": ({}, "input 'input.1' (f32[N,3]) is missing"),
    "not-npz": (None, "not a readable .npz file"),
}


@pytest.mark.parametrize("case", sorted(STANDALONE_REFUSALS))
def test_the_exported_program_checks_its_inputs_like_run(tmp_path, case):
    feeds, message = STANDALONE_REFUSALS[case]
    exe = qc.compile(small_graph())
    folder = exe.export_python(tmp_path / "small")
    inputs = tmp_path / "in.npz"
    if feeds is None:
        inputs.write_text("not an npz")
    else:
        np.savez(inputs, **feeds)
        with pytest.raises(qc.InputError) as info:
            exe.run(feeds)
        assert message in str(info.value)  # the same words as Executable.run
    done = run_standalone(folder / "model.py", inputs, tmp_path / "out.npz")
    assert done.returncode != 0 and not (tmp_path / "out.npz").exists()
    assert done.stderr.startswith("model.py: error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_export_replaces_an_earlier_export_but_never_a_users_files(tmp_path):
    exe = qc.compile(small_graph())
    folder = tmp_path / "m"
    exe.export_python(folder)
    exe.export_python(folder)  # again: an earlier export is replaced
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(qc.SaveError, match="not an earlier export.*notes.txt"):
        exe.export_python(folder)
    assert (folder / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(qc.SaveError, match="it is a file"):
        exe.export_python(tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m"]


def test_input_errors_say_what_was_expected():
    exe = qc.compile(small_graph())
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(qc.MissingInputError, match=r"input 'input.1' \(f32\[N,3\]\) is missing"):
        exe.run({})
    with pytest.raises(qc.UnknownInputError, match="unknown input.*'image'.*inputs are: input.1"):
        exe.run({"input.1": x, "image": x})
    with pytest.raises(qc.InputShapeError, match=r"dimension 1 is 4, not 3"):
        exe.run({"input.1": np.zeros((2, 4), np.float32)})
    with pytest.raises(qc.InputShapeError, match="must have rank 2"):
        exe.run({"input.1": np.zeros(3, np.float32)})
    with pytest.raises(qc.InputDTypeError, match="must be f32 .* got float64"):
        exe.run({"input.1": x.astype(np.float64)})
    with pytest.raises(qc.MissingInputError, match="takes 1 input"):
        exe(x, x)


def test_inconsistent_symbolic_dimensions_are_an_input_error():
    g = Graph("two")
    a = g.add_input("a", TensorType("f32", ("N", 2)))
    b = g.add_input("b", TensorType("f32", ("N", 2)))
    g.set_outputs([g.add_node("Add", [a, b], name="add").outputs[0]])
    exe = qc.compile(g)
    with pytest.raises(qc.InputShapeError, match="'b' has N=3 .* but input 'a' has N=2"):
        exe.run({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})


def test_a_failing_kernel_names_the_node_and_operands():
    g = Graph("bad")
    a = g.add_input("a", TensorType("f32", ("N", 2)))
    b = g.add_input("b", TensorType("f32", ("M", 2)))
    s = g.add_node("Add", [a, b], name="my_layer/add").outputs[0]
    g.set_outputs([g.add_node("Relu", [s], name="relu").outputs[0]])
    exe = qc.compile(g)
    with pytest.raises(qc.ExecutionError,
                       match=r"Add node 'my_layer/add' .* operands a: float32\[2, 2\], "
                             r"b: float32\[3, 2\]: ValueError"):
        exe.run({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})


def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(qc.BackendError, match="unknown backend 'tpu'; the registered backends "
                                              "are: llvm, numpy"):
        qc.compile(small_graph(), backend="tpu")


def test_compiling_what_is_not_a_graph_is_a_backend_error():
    with pytest.raises(qc.BackendError, match=r"takes a qc.Graph, got str \(a path\? .*"
                                              r"qc.load_onnx"):
        qc.compile("model.onnx")
    with pytest.raises(qc.BackendError, match="takes a qc.Graph, got dict"):
        qc.compile({})


def test_feeds_that_are_not_a_mapping_or_not_rectangular_are_input_errors():
    exe = qc.compile(small_graph())
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(qc.InputError, match="must be a mapping from input name to array, got "
                                            "list; the model's inputs are: input.1"):
        exe.run([x])
    with pytest.raises(qc.InputShapeError, match=r"'input.1' must be f32\[N,3\], got a list "
                                                 "that is not a rectangular array"):
        exe.run({"input.1": [[1.0, 2.0, 3.0], [4.0, 5.0]]})
    with pytest.raises(qc.InputDTypeError, match="got object"):
        exe.run({"input.1": None})
    out = exe.run({"input.1": [[1.0, 2.0, 3.0]]})  # a rectangular list of floats is fine
    np.testing.assert_array_equal(out["/layer1/Relu"], [[2.0, 0.0, 6.0]])


def test_names_reach_the_source_only_as_ascii_identifiers_literals_or_one_line_comments():
    g = Graph('x"""\nimport os\n"""')
    x = g.add_input("x", TensorType("f32", (2,)))
    a = g.add_node("Relu", [x], name="\ufb01").outputs[0]  # the "fi" ligature: Python reads
    b = g.add_node("Neg", [a], name="fi").outputs[0]        # both names as the same variable
    c = g.add_node("Add", [a, b], name="add\nimport os", outputs=["sum"]).outputs[0]
    g.set_outputs([c])
    exe = qc.compile(g)
    assert not any(line.startswith("import") for line in exe.source.splitlines())
    out = exe.run({"x": np.array([1.0, -2.0], np.float32)})
    np.testing.assert_array_equal(out["sum"], [0.0, 0.0])


def test_generated_source_lines_are_released_with_the_executable():
    g = small_graph()
    g.name = "lines_released"  # a source of its own: no other test's executable shares it
    exe = qc.compile(g)
    assert exe.source.splitlines(True) == linecache.getlines(exe._filename)
    again = qc.compile(g)
    assert again._filename == exe._filename  # one name per source, however often compiled
    del exe
    assert linecache.getlines(again._filename)
    filename = again._filename
    del again
    assert filename not in linecache.cache


def test_graph_output_that_is_an_input_or_constant():
    g = Graph("passthrough")
    x = g.add_input("x", TensorType("f32", (2,)))
    c = g.add_constant(np.ones(2, np.float32), "c")
    g.set_outputs([x, c])
    out = qc.compile(g).run({"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(out["c"], np.ones(2, np.float32))


def test_non_finite_float_attributes_in_generated_code(tmp_path):
    g = qc.parse("""graph t(%x: f32[1,2,1,1]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %y: f32[1,2,1,1] = Conv(%x, %w) {activation = "Clip", activation_params = [-inf, 5.0]} @c
  %z: f32[1,2,1,1] = Conv(%y, %w) {activation = "Clip", activation_params = [0.5, inf]} @d
  return %z
}""")
    x = np.array([1.0, -1.0], np.float32).reshape(1, 2, 1, 1)
    exe = qc.compile(g)
    assert "float('-inf')" in exe.source and "float('inf')" in exe.source
    out = exe.run({"x": x})["z"]  # y = min(conv, 5) = [-1, -1]; z = max(conv(y), 0.5)
    np.testing.assert_array_equal(out.reshape(-1), [0.5, 0.5])
    exe.save(tmp_path / "m.qcx")
    np.testing.assert_array_equal(qc.load(tmp_path / "m.qcx").run({"x": x})["z"], out)


def constants_named(*names: str) -> Graph:
    """y = x + c0 + c1 + ... with constants of the given (awkward) names."""
    g = Graph("named")
    y = g.add_input("x", TensorType("f32", (2,)))
    for k, name in enumerate(names):
        c = g.add_constant(np.full(2, k + 1, np.float32), name)
        y = g.add_node("Add", [y, c], name=f"add{k}").outputs[0]
    g.set_outputs([y])
    return g


def test_export_keeps_constants_whatever_their_names(tmp_path):
    exe = qc.compile(constants_named("file", "allow_pickle", "a/b", "x.npy"))
    folder = exe.export_python(tmp_path / "named")
    x = np.zeros(2, np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    done = run_standalone(folder / "model.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out[exe.outputs[0]], np.full(2, 10, np.float32))


def test_export_to_dot_means_the_current_folder(tmp_path, monkeypatch):
    target = tmp_path / "here"
    target.mkdir()
    monkeypatch.chdir(target)
    folder = qc.compile(small_graph()).export_python(".")
    assert folder == target and (target / "model.py").exists()


def test_a_tensor_attribute_never_shadows_a_constant_of_the_same_name():
    g = Graph("g")
    shape = g.add_constant(np.array([3]), "shape")
    k = g.add_node("ConstantOfShape", [shape], {"value": np.array([7], np.int64)}, name="k")
    c = g.add_constant(np.array([100, 200, 300]), "k.value")
    g.set_outputs([g.add_node("Add", [k.outputs[0], c], name="add").outputs[0]])
    expected = qc.Interpreter(g).run({})
    np.testing.assert_array_equal(expected["add"], [107, 207, 307])
    np.testing.assert_array_equal(qc.compile(g).run({})["add"], expected["add"])
