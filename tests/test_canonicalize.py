"""canonicalize: golden IR-text cases (tests/golden/canonicalize), hypothesis-drawn graphs that
must compute the same before and after, options, explanations and the zoo's shape idioms."""

from __future__ import annotations

import golden
import numpy as np
import zoo
from hypothesis import strategies as st
from qcompiler.passes.canonicalize import Canonicalize

import qcompiler as qc
from qcompiler.pass_manager import PassManager
from qcompiler.testing import graphs, pass_property


@golden.parametrize("canonicalize")
def test_golden(path):
    golden.check(path)


CLEANUP = ["identity", "dropout", "duplicate", "constant_subexpression", "shape_subgraph",
           "multi_use", "relu", "conv", "reshape", "transpose"]

test_canonicalize_keeps_the_numbers = pass_property("canonicalize", graphs(builders=CLEANUP))

# a dynamic batch: the shape subgraphs cannot fold to constants, their Reshape targets can
test_canonicalize_keeps_the_numbers_on_a_dynamic_batch = pass_property(
    "canonicalize", graphs(builders=CLEANUP, batch=st.sampled_from([1, "N"])))


def test_options_turn_parts_off():
    text = golden.load(golden.ROOT / "canonicalize" / "cse.ir").source
    g = qc.parse(text)
    assert PassManager("canonicalize{cse=false}").run(g).graph.op_counts() == {
        "Relu": 3, "Add": 1, "Mul": 2, "LeakyRelu": 2, "Sub": 1}
    assert PassManager("canonicalize").run(g).graph.op_counts() == {
        "Relu": 2, "Add": 1, "Mul": 1, "LeakyRelu": 1, "Sub": 1}
    folding = qc.parse(golden.load(golden.ROOT / "canonicalize" / "constant_subexpression.ir")
                       .source)
    kept = PassManager("canonicalize{fold=false}").run(folding).graph
    assert [n.name for n in kept.nodes] == ["scale", "shift", "mul", "add"]
    ids = qc.parse(golden.load(golden.ROOT / "canonicalize" / "identity_removal.ir").source)
    assert PassManager("canonicalize{identities=false}").run(ids).graph.op_counts() == {
        "Relu": 1, "Identity": 2, "Neg": 1}
    dead = qc.parse(golden.load(golden.ROOT / "canonicalize" / "dce.ir").source)
    result = PassManager("canonicalize{dce=false}").run(dead)
    assert not result.changed and len(result.graph.nodes) == 4


def test_stats_count_what_was_done():
    g = qc.parse(golden.load(golden.ROOT / "canonicalize" / "cse.ir").source)
    assert PassManager("canonicalize").run(g).stats == {"canonicalize: cse": 4}
    g = qc.parse(golden.load(golden.ROOT / "canonicalize" / "dropout_removal.ir").source)
    assert PassManager("canonicalize").run(g).stats == {
        "canonicalize: remove-dropout": 2, "canonicalize: folded": 1, "canonicalize: dead": 1}


def test_cse_keeps_apart_nodes_whose_attributes_differ():
    g = qc.parse(golden.load(golden.ROOT / "canonicalize" / "cse_attributes.ir").source)
    result = PassManager("canonicalize").run(g)
    assert result.stats == {"canonicalize: cse": 1}
    assert result.graph.op_counts() == {"Conv": 2, "LeakyRelu": 2, "Flatten": 1, "Softmax": 2,
                                        "Add": 2, "Sub": 1}
    axes = {n.name: n.opdef.full_attrs(n.attrs)["axis"]
            for n in result.graph.find_nodes("Softmax")}
    assert axes == {"soft1": 0, "soft2": -1}


def test_notes_explain_what_stayed():
    g = qc.parse(golden.load(golden.ROOT / "canonicalize" /
                             "identity_kept_between_graph_names.ir").source)
    notes = Canonicalize().run(g.copy()).notes
    assert ("remove-identity: Identity node 'passthrough' -> %y: %y is a graph output and %x "
            "is a graph input; the node keeps both names apart") in notes
    assert any("Identity node 'alias'" in n and "%r is a graph output" in n for n in notes)
    g = qc.parse(golden.load(golden.ROOT / "canonicalize" / "cse.ir").source)
    pm = PassManager("canonicalize", explain=True)
    pm.run(g)
    (note,) = pm.explanations["canonicalize"]
    assert note == ("cse: Relu node 'relu3' -> %r3: it repeats Relu node 'relu1' (layers relu1, "
                    "relu2) -> %r1 but its output is a graph output with a name of its own")


def test_a_reshape_target_that_is_not_the_inputs_dimension_stays():
    g = qc.parse("""graph g(%x: f32[N,4], %y: f32[M,4]) {
  %minus_one: i64[1] = const dense<[-1]>
  %shape: i64[2] = Shape(%y) @shape
  %target: i64[3] = Concat(%shape, %minus_one) {axis = 0} @target
  %r: f32[M,4,"?"] = Reshape(%x, %target) @reshape
  return %r
}
""")
    pm = PassManager("canonicalize", explain=True)
    result = pm.run(g)
    assert not result.changed
    assert pm.explanations["canonicalize"] == [
        "static-reshape: Reshape node 'reshape' -> %r: entry 0 of its target %target is M, "
        "which is not dimension 0 of %x ['N', 4]"]


def test_the_zoo_view_idiom_leaves_no_shape_ops_on_a_dynamic_batch():
    g = qc.from_onnx(zoo.reshape_shape_subgraph())
    result = PassManager("canonicalize").run(g)
    assert result.graph.op_counts() == {"Conv": 1, "Relu": 1, "Reshape": 1, "Gemm": 1}
    x = np.random.default_rng(0).normal(size=(3, 8, 4, 4)).astype(np.float32)
    golden.assert_same_outputs(g, result.graph)
    ref = qc.compile(g).run({"x": x})["logits"]
    np.testing.assert_allclose(qc.compile(result.graph).run({"x": x})["logits"], ref,
                               rtol=1e-6, atol=1e-6)


def test_canonicalize_is_idempotent_on_the_zoo():
    for model in (zoo.resnet_bottleneck(), zoo.mobilenetv3_block(), zoo.tf2onnx_style(),
                  zoo.reshape_shape_subgraph(), zoo.paddle2onnx_style()):
        once = PassManager("canonicalize").run(qc.from_onnx(model)).graph
        again = PassManager("canonicalize").run(once)
        assert not again.changed and again.graph == once


def test_a_variadic_sum_becomes_the_add_chain_it_computes_bit_for_bit():
    rng = np.random.default_rng(0)
    for count in (1, 2, 3, 5):
        g = qc.Graph("sum")
        shapes = [(2, 3), (3,), (1, 3), (2, 1), (2, 3)][:count]
        xs = [g.add_input(f"x{k}", qc.TensorType(qc.DType.F32, s)) for k, s in enumerate(shapes)]
        total = g.add_node("Sum", xs, name="total").outputs[0]
        g.set_outputs([g.add_node("Relu", [total], name="relu").outputs[0]])
        result = PassManager("canonicalize").run(g.copy())
        ops = result.graph.op_counts()
        assert "Sum" not in ops and ops.get("Add", 0) == count - 1, ops
        assert result.stats == {"canonicalize: sum-to-add": 1}
        feeds = {f"x{k}": (rng.standard_normal(s) * 10.0 ** rng.integers(-3, 4, s))
                 .astype(np.float32) for k, s in enumerate(shapes)}
        np.testing.assert_array_equal(qc.compile(g).run(feeds)["relu"],
                                      qc.compile(result.graph).run(feeds)["relu"])
