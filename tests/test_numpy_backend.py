"""The numpy backend: generated source, running, saving, loading, and errors at the boundary."""

import os
import subprocess
import sys

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


def test_save_load_and_standalone_run(tmp_path):
    exe = qc.compile(small_graph())
    folder = tmp_path / "small.qcx"
    exe.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "constants.npz", "manifest.json", "model.py", "qc_ops"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    loaded = qc.load(folder)
    assert loaded.source == exe.source
    for k, v in exe.run({"input.1": x}).items():
        np.testing.assert_array_equal(loaded.run({"input.1": x})[k], v)
    # the saved folder runs with numpy alone: no qcompiler on the path
    np.savez(tmp_path / "in.npz", **{"input.1": x})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    inp, outp, model = (str(p) for p in (tmp_path / "in.npz", tmp_path / "out.npz",
                                         folder / "model.py"))
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    assert not name.startswith('qcompiler'), name\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            f"sys.argv = ['model.py', {inp!r}, {outp!r}]\n"
            f"exec(compile(open({model!r}).read(), {model!r}, 'exec'), "
            f"{{'__name__': '__main__', '__file__': {model!r}}})\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["/layer1/Relu"], reference(x)[0])


def test_save_replaces_an_existing_folder_and_leaves_no_partial(tmp_path):
    exe = qc.compile(small_graph())
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "stale.txt").write_text("old")
    exe.save(folder)
    assert not (folder / "stale.txt").exists()
    assert not (tmp_path / "m.partial").exists()


def test_load_rejects_a_folder_that_is_not_a_saved_model(tmp_path):
    with pytest.raises(qc.BackendError, match="no manifest.json"):
        qc.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(qc.BackendError, match="unknown saved format"):
        qc.load(tmp_path)


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


def test_unknown_backend():
    with pytest.raises(qc.BackendError, match="unknown backend 'tpu'"):
        qc.compile(small_graph(), backend="tpu")


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
    exe.save(tmp_path / "m")
    np.testing.assert_array_equal(qc.load(tmp_path / "m").run({"x": x})["z"], out)
