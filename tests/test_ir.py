"""The IR's contracts: SSA use-lists kept by the mutation helpers, and verify() catching breaks."""

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.types import QuantParams, TensorType


def chain() -> Graph:
    g = Graph("chain")
    x = g.add_input("x", TensorType("f32", ("N", 4)))
    c = g.add_constant(np.ones(4, np.float32), "c")
    a = g.add_node("Add", [x, c], name="add").outputs[0]
    r = g.add_node("Relu", [a], name="relu").outputs[0]
    m = g.add_node("Mul", [r, a], name="mul").outputs[0]
    g.set_outputs([m])
    return g


def test_use_lists_follow_construction():
    g = chain()
    add, relu, mul = g.nodes
    a = add.outputs[0]
    assert [(n.name, i) for n, i in a.uses] == [("relu", 0), ("mul", 1)]
    assert a.users == [relu, mul]
    assert g.inputs[0].uses == [(add, 0)]
    g.verify()


def test_set_input_and_replace_all_uses_with_keep_use_lists():
    g = chain()
    add, relu, mul = g.nodes
    x = g.inputs[0]
    mul.set_input(1, x)
    assert add.outputs[0].uses == [(relu, 0)]
    assert (mul, 1) in x.uses
    g.replace_all_uses_with(relu.outputs[0], x)
    assert relu.outputs[0].uses == []
    g.erase(relu)
    g.verify()
    assert [n.name for n in g.nodes] == ["add", "mul"]


def test_replace_all_uses_with_updates_graph_outputs():
    g = chain()
    mul = g.nodes[-1]
    neg = g.add_node("Neg", [mul.outputs[0]], name="neg")
    g.replace_all_uses_with(mul.outputs[0], neg.outputs[0], exclude={neg})
    assert g.outputs == [neg.outputs[0]]
    assert neg.inputs == (mul.outputs[0],)
    g.verify()


def test_erase_refuses_a_node_that_is_still_read():
    g = chain()
    with pytest.raises(qc.IRError, match="still read by Relu node 'relu'"):
        g.erase(g.nodes[0])
    g.verify()


def test_insert_before_keeps_topological_order():
    g = chain()
    add, relu, mul = g.nodes
    neg = g.insert_before(relu, "Neg", [add.outputs[0]], name="neg")
    relu.set_input(0, neg.outputs[0])
    assert [n.name for n in g.nodes] == ["add", "neg", "relu", "mul"]
    g.verify()


def test_toposort_repairs_order_and_detects_cycles():
    g = chain()
    g.nodes.reverse()
    with pytest.raises(qc.VerificationError, match="before it is defined"):
        g.verify()
    g.toposort()
    assert [n.name for n in g.nodes] == ["add", "relu", "mul"]
    g.verify()
    add = g.nodes[0]
    with pytest.raises(qc.IRError, match="computed from this node's output"):
        add.set_input(0, g.nodes[-1].outputs[0])  # set_input refuses to make the cycle ...
    add._set_input(0, g.nodes[-1].outputs[0])  # ... which toposort still finds if forced
    with pytest.raises(qc.IRError, match="cycle"):
        g.toposort()


def test_add_node_infers_types_with_symbols():
    g = chain()
    assert str(g.nodes[-1].outputs[0].type) == "f32[N,4]"


def test_shape_inference_error_names_the_node():
    g = Graph()
    x = g.add_input("x", TensorType("f32", (2, 3)))
    y = g.add_input("y", TensorType("f32", (4,)))
    with pytest.raises(qc.ShapeInferenceError, match="Add node 'my_layer'.*do not broadcast"):
        g.add_node("Add", [x, y], name="my_layer")
    assert g.nodes == [] and x.uses == [] and y.uses == []


def test_verify_lists_every_problem():
    g = chain()
    add, relu, mul = g.nodes
    relu.outputs[0].type = TensorType("f32", ("N", 5))
    add.outputs[0].uses.append((mul, 0))
    with pytest.raises(qc.VerificationError) as info:
        g.verify()
    problems = info.value.problems
    assert any("relu" in p and "f32[N,5]" in p for p in problems)
    assert any("use-list of %add is out of date" in p for p in problems)


def test_verify_checks_quantization_parameters():
    g = Graph()
    g.add_input("q", TensorType("i8", (4,), QuantParams(0.1, 200, "i8")))
    with pytest.raises(qc.VerificationError, match="zero point 200 is outside"):
        g.verify()


def test_unknown_attribute_is_an_error():
    g = Graph()
    x = g.add_input("x", TensorType("f32", (2,)))
    with pytest.raises(qc.ShapeInferenceError, match="no attribute.*beta"):
        g.add_node("Relu", [x], {"beta": 1.0}, name="r")


def test_copy_is_deep_and_equal():
    g = chain()
    h = g.copy()
    assert h == g
    h.nodes[1].attrs["x"] = 1
    assert h != g


def test_to_networkx_has_one_edge_per_operand():
    g = chain()
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == 3
    assert nxg.number_of_edges() == 3  # add->relu, relu->mul, add->mul


def test_replace_input_insert_after_and_graph_input_queries():
    g = chain()
    add, relu, mul = g.nodes
    x = g.inputs[0]
    assert x.is_graph_input and not add.outputs[0].is_graph_input
    assert mul.outputs[0].is_graph_output
    neg = g.insert_after(relu, "Neg", [relu.outputs[0]], name="neg")
    assert [n.name for n in g.nodes] == ["add", "relu", "neg", "mul"]
    mul.replace_input(relu.outputs[0], neg.outputs[0])
    assert relu.outputs[0].users == [neg] and mul.inputs[0] is neg.outputs[0]
    g.verify()


def test_infer_types_refreshes_types_after_an_attribute_edit():
    g = Graph()
    x = g.add_input("x", TensorType("f32", ("N", 3, 4)))
    flat = g.add_node("Flatten", [x], {"axis": 1}, name="flat")
    g.set_outputs(flat.outputs)
    assert str(flat.outputs[0].type) == "f32[N,12]"
    flat.attrs["axis"] = 2
    with pytest.raises(qc.VerificationError, match="flat"):
        g.verify()
    g.infer_types()
    assert str(flat.outputs[0].type) == "f32[?,4]"
    g.verify()


def test_dead_after_is_the_last_reader_or_the_producer():
    g = chain()  # add(x, c) -> relu -> mul(relu, add); mul is the output
    unread = g.add_node("Neg", [g.value("relu")], name="unread")
    g.add_input("spare", TensorType("f32", (1,)))
    dead = {i: [v.name for v in vs] for i, vs in g.dead_after().items()}
    assert dead == {-1: ["spare"], 0: ["x"], 2: ["add"], 3: ["relu", "unread"]}
    assert unread.outputs[0].name == "unread"
    kept = {i: [v.name for v in vs] for i, vs in g.dead_after([g.value("add")]).items()}
    assert kept == {-1: ["spare"], 0: ["x"], 3: ["relu", "unread"]}
