"""Constant folding (qcompiler/folding.py), as the importer and ``canonicalize`` use it: results
much larger than their inputs stay ops, shape-like integers always fold, and stored types learn
what inference learns once operands become constants (so verification agrees with itself)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import zoo
from onnx import TensorProto, helper, numpy_helper
from op_check import ir_attrs
from ort_helpers import session
from qcompiler.passes.canonicalize import Canonicalize
from test_op_registry import EXAMPLES, N_OUTPUTS

import qcompiler as qc
from qcompiler.folding import FOLD_LIMIT, fold_constants
from qcompiler.graph import Graph
from qcompiler.pass_manager import PassManager
from qcompiler.types import DType, TensorType


def onnx_model(nodes, inputs, inits, rank: int, opset: int = 17) -> onnx.ModelProto:
    """A model of ``nodes`` whose output ``y`` is f32 of ``rank`` dimensions, sizes unnamed."""
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)
    graph = helper.make_graph(nodes, "m", inputs, [output],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def expand_model(side: int) -> onnx.ModelProto:
    """y = x + Expand(0.5, [side, side]): a few bytes that expand to side * side floats."""
    return onnx_model(
        [helper.make_node("Expand", ["half", "shape"], ["big"]),
         helper.make_node("Add", ["x", "big"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        {"half": np.array(0.5, np.float32), "shape": np.array([side, side], np.int64)}, 2)


def constant_bytes(g: Graph) -> int:
    return sum(v.data.nbytes for v in g.constants.values())


# -- the size cap ---------------------------------------------------------------------------------


def test_a_huge_expand_of_a_small_constant_stays_an_op(tmp_path):
    path = tmp_path / "expand.onnx"
    onnx.save(expand_model(8192), str(path))
    assert path.stat().st_size < 200
    g = qc.load_onnx(path)
    assert g.op_counts() == {"Expand": 1, "Add": 1}
    assert constant_bytes(g) < 100
    g = Canonicalize().run(g).graph
    assert g.op_counts() == {"Expand": 1, "Add": 1} and constant_bytes(g) < 100


def test_the_kept_expand_still_computes_what_onnxruntime_computes():
    model = expand_model(256)  # 256 KiB: above the cap, so kept
    g = qc.from_onnx(model)
    assert "Expand" in g.op_counts()
    x = np.array([1.25], np.float32)
    expected = session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(qc.compile(g).run({"x": x})["y"], expected)
    np.testing.assert_array_equal(qc.Interpreter(g).run({"x": x})["y"], expected)


EXPAND_IR = """graph g(%x: f32[1]) {
  %half: f32[] = const dense<[0.5]>
  %shape: i64[2] = const dense<[128, 256]>
  %big: f32[128,256] = Expand(%half, %shape) @expand
  %y: f32[128,256] = Add(%x, %big) @add
  return %y
}"""


def test_the_cap_is_an_option_of_canonicalize():
    g = qc.parse(EXPAND_IR)  # 128 KiB of result from 20 bytes of operands
    assert PassManager("canonicalize").run(g).graph.op_counts() == {"Expand": 1, "Add": 1}
    for limit in ("200000", "none"):
        folded = PassManager(f"canonicalize{{fold_limit={limit}}}").run(g).graph
        assert folded.op_counts() == {"Add": 1}
        assert folded.constants["big"].data.shape == (128, 256)


def test_the_cap_is_an_argument_of_fold_constants():
    g = qc.parse(EXPAND_IR)
    assert fold_constants(g) == 0
    assert fold_constants(g, limit=1 << 20) == 1


def test_small_results_and_results_no_bigger_than_their_inputs_fold():
    g = qc.parse("""graph g(%x: f32[64,512]) {
  %w: f32[512,64] = const @w
  %four: f32[] = const dense<[4.0]>
  %shape: i64[1] = const dense<[1024]>
  %wt: f32[64,512] = Transpose(%w) {perm = [1, 0]} @transpose
  %row: f32[1024] = Expand(%four, %shape) @row
  %s: f32[64,512] = Add(%x, %wt) @add
  return %s, %row
}""", constants={"w": np.ones((512, 64), np.float32)})
    assert FOLD_LIMIT < 512 * 64 * 4  # the transposed weight is above the cap, folded anyway
    out = Canonicalize().run(g).graph
    assert out.op_counts() == {"Add": 1}


def test_shape_like_integers_fold_whatever_the_cap():
    model = zoo.reshape_shape_subgraph(batch=1)
    g = Canonicalize(fold_limit=0).run(qc.from_onnx(model)).graph
    assert not {"Shape", "Gather", "Concat", "Unsqueeze"} & set(g.op_counts())


# -- inference agrees with itself before and after folding ----------------------------------------


def slice_model(computed: tuple[str, ...]) -> onnx.ModelProto:
    """y = x[0:2, ..., 0:2] on axis 2 of f32[2,3,4], with the operands named in ``computed``
    (of starts, ends, axes, steps) built by ``Add(half, half)`` as exporters do."""
    values = {"starts": 0, "ends": 2, "axes": 2, "steps": 1}
    nodes, inits = [], {}
    for name, v in values.items():
        if name in computed:
            half = np.array([v // 2], np.int64)
            inits[f"{name}_a"] = half
            inits[f"{name}_b"] = np.array([v - v // 2], np.int64)
            nodes.append(helper.make_node("Add", [f"{name}_a", f"{name}_b"], [name]))
        else:
            inits[name] = np.array([v], np.int64)
    nodes.append(helper.make_node("Slice", ["x", *values], ["y"]))
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                      inits, 3)


@pytest.mark.parametrize("computed", [("ends",), ("starts", "ends", "axes", "steps")])
def test_a_slice_reading_a_constant_subgraph_loads_verifies_and_runs(tmp_path, computed):
    model = slice_model(computed)
    path = tmp_path / "slice.onnx"
    onnx.save(model, str(path))
    g = qc.load_onnx(path)
    g.verify()
    assert g.outputs[0].type == TensorType("f32", (2, 3, 2))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    expected = session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(qc.compile(g).run({"x": x})["y"], expected)
    np.testing.assert_array_equal(qc.Interpreter(g).run({"x": x})["y"], expected)


# Ops whose output rank depends on the contents of their ``axes`` operand.
AXES_OPS = {"Squeeze": ([2, 1, 3, 1], [1, 3]), "Unsqueeze": ([2, 3], [0, 3]),
            "ReduceMean": ([2, 3, 4, 5], [1, 3]), "ReduceSum": ([2, 3, 4, 5], [3, 0]),
            "ReduceMax": ([2, 3, 4, 5], [2, 1])}


def axes_model(op_type: str, source: str) -> onnx.ModelProto:
    """``op_type`` (keepdims=0 for a reduction) on f32 ``x`` with its ``axes`` computed from
    initializers as exporters write them: ``Add(a, b)``, or ``Concat(Add(a0, b0), c)``."""
    shape, axes = AXES_OPS[op_type]
    first, second = np.array(axes[:1], np.int64), np.array(axes[1:], np.int64)
    if source == "add":
        inits = {"a": np.array(axes, np.int64) - 1, "b": np.ones(len(axes), np.int64)}
        nodes = [helper.make_node("Add", ["a", "b"], ["axes"])]
    else:
        inits = {"a0": first - 2, "b0": np.full(1, 2, np.int64), "c": second}
        nodes = [helper.make_node("Add", ["a0", "b0"], ["head"]),
                 helper.make_node("Concat", ["head", "c"], ["axes"], axis=0)]
    attrs = {"keepdims": 0} if op_type.startswith("Reduce") else {}
    nodes.append(helper.make_node(op_type, ["x", "axes"], ["y"], **attrs))
    rank = len(shape) + (len(axes) if op_type == "Unsqueeze" else -len(axes))
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      inits, rank, opset=18)


@pytest.mark.parametrize("source", ["add", "concat"])
@pytest.mark.parametrize("op_type", sorted(AXES_OPS))
def test_axes_from_a_constant_subgraph_load_verify_and_run(tmp_path, op_type, source):
    model = axes_model(op_type, source)
    path = tmp_path / "axes.onnx"
    onnx.save(model, str(path))
    g = qc.load_onnx(path)
    g.verify()
    shape = AXES_OPS[op_type][0]
    # small integers: every sum is exact, so any summation order gives the same result
    x = (np.arange(np.prod(shape)) % 11 - 5).astype(np.float32).reshape(shape)
    expected = session(model).run(None, {"x": x})[0]
    assert g.outputs[0].type == TensorType("f32", expected.shape)
    np.testing.assert_array_equal(qc.compile(g).run({"x": x})["y"], expected)


def test_a_result_above_the_cap_stays_an_op_while_importing():
    """Folding while importing keeps the cap: Expand(0.5, Add(shape, 0)) of 256 KiB stays an op
    and still computes what onnxruntime computes."""
    model = onnx_model(
        [helper.make_node("Add", ["shape_a", "shape_b"], ["shape"]),
         helper.make_node("Expand", ["half", "shape"], ["big"]),
         helper.make_node("Add", ["x", "big"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        {"half": np.array(0.5, np.float32), "shape_a": np.array([255, 255], np.int64),
         "shape_b": np.ones(2, np.int64)}, 2)
    g = qc.from_onnx(model)
    assert g.op_counts() == {"Expand": 1, "Add": 1}
    assert g.outputs[0].type == TensorType("f32", (256, 256))
    x = np.array([1.25], np.float32)
    expected = session(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(qc.compile(g).run({"x": x})["y"], expected)


def hide(g: Graph, array: np.ndarray, how: str, name: str):
    """A constant operand that inference cannot see through until canonicalize runs."""
    const = g.add_constant(array, name)
    if how == "identity" or array.dtype == np.bool_:
        return g.add_node("Identity", [const], name=f"{name}_id").outputs[0]
    zero = g.add_constant(np.zeros((), array.dtype), f"{name}_zero")
    return g.add_node("Add", [const, zero], name=f"{name}_add0").outputs[0]


def op_graph(op_type: str, constants: tuple, how: str | None) -> Graph:
    """The registry example of ``op_type`` with operands ``constants`` constant: visible
    (``how`` None) or hidden behind ``how``."""
    inputs, attrs, _ = EXAMPLES[op_type]
    g = Graph(op_type)
    operands = []
    for i, a in enumerate(inputs):
        if a is None:
            operands.append(None)
            continue
        a = np.asarray(a)
        if i not in constants:
            operands.append(g.add_input(f"in{i}", TensorType(DType.from_numpy(a.dtype), a.shape)))
        elif how is None:
            operands.append(g.add_constant(a, f"in{i}"))
        else:
            operands.append(hide(g, a, how, f"in{i}"))
    node = g.add_node(op_type, operands, ir_attrs(attrs), name="op",
                      outputs=[f"out{k}" for k in range(N_OUTPUTS.get(op_type, 1))])
    g.set_outputs(node.outputs)
    g.verify()
    return g


# Ops whose output rank depends on an operand's contents: the IR has no type of unknown rank, so
# a node is refused when it is built with those contents hidden (an Identity still shows them).
# The importer never builds such a node: it folds each operand as soon as it is added
# (test_axes_from_a_constant_subgraph_load_verify_and_run).
RANK_FROM_CONTENTS = {"ReduceMean", "Squeeze", "Unsqueeze"}


@pytest.mark.parametrize("how", ["identity", "add0"])
@pytest.mark.parametrize("which", ["constants", "all"])
@pytest.mark.parametrize("op_type", sorted(EXAMPLES))
def test_inference_agrees_before_and_after_folding(op_type, which, how):
    inputs, _, example_constants = EXAMPLES[op_type]
    constants = tuple(range(len(inputs))) if which == "all" else tuple(example_constants)
    visible = op_graph(op_type, constants, None)
    if op_type in RANK_FROM_CONTENTS and how == "add0":
        with pytest.raises((qc.ShapeInferenceError, qc.UnsupportedModelError),
                           match="must be known at compile time"):
            op_graph(op_type, constants, how)
        return
    hidden = Canonicalize().run(op_graph(op_type, constants, how)).graph
    hidden.verify()
    assert [v.type for v in hidden.outputs] == [v.type for v in visible.outputs]
