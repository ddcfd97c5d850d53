"""Layer origins: every node remembers the user layers it came from, rewrites merge them, the
text form round-trips them, errors name them; and Graph equality is structural."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.types import TensorType

DIGITS = str(resources.files("qcompiler.examples") / "digits_convnet.onnx")


def test_the_digits_pipeline_keeps_every_user_layer():
    g = qc.optimize(qc.load_onnx(DIGITS))
    assert {n.name: n.origins for n in g.nodes} == {
        "conv1_conv": ("conv1_conv", "conv1_bnorm", "conv1_relu"),
        "conv2_conv": ("conv2_conv", "conv2_bnorm", "conv2_relu"),
        "pool2": ("pool2",),
        "conv3_conv": ("conv3_conv", "conv3_bnorm", "conv3_relu"),
        "flatten": ("flatten",),
        "fc1": ("fc1", "fc1_relu"),
        "fc2": ("fc2",),
    }
    imported = qc.load_onnx(DIGITS)
    layers = {n.name for n in imported.nodes}
    assert {o for n in g.nodes for o in n.origins} == layers


def test_origins_print_and_parse_back():
    g = qc.optimize(qc.load_onnx(DIGITS))
    text = str(g)
    assert ("@conv1_conv from [conv1_conv, conv1_bnorm, conv1_relu]\n" in text)
    assert "@pool2\n" in text  # a node that is only itself prints no list
    again = qc.parse(text, g.constant_arrays())
    assert again == g
    assert again.node("fc1").origins == ("fc1", "fc1_relu")


def test_odd_layer_names_round_trip():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2,)))
    r = g.add_node("Relu", [x], name="relu", origins=["model/block 1/relu:0", "7", "relu"])
    g.set_outputs(r.outputs)
    text = g.to_text()
    assert 'from ["model/block 1/relu:0", 7, relu]' in text
    assert qc.parse(text) == g


def test_an_empty_origin_list_is_a_parse_error():
    with pytest.raises(qc.ParseError, match="empty list of layers"):
        qc.parse("graph g(%x: f32[2]) {\n  %r: f32[2] = Relu(%x) @r from []\n  return %r\n}\n")


def test_errors_name_the_merged_layers():
    g = qc.optimize(qc.load_onnx(DIGITS))
    conv = g.node("conv2_conv")
    assert conv.describe() == ("Conv node 'conv2_conv' (layers conv2_conv, conv2_bnorm, "
                               "conv2_relu) -> %conv2_out")
    conv.outputs[0].type = TensorType("f32", ("N", 24, 9, 9))
    with pytest.raises(qc.VerificationError, match=r"Conv node 'conv2_conv' \(layers conv2_conv, "
                                                   r"conv2_bnorm, conv2_relu\)"):
        g.verify()


def test_replacing_a_value_merges_the_replaced_producer_into_the_new_one():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2,)))
    a = g.add_node("Relu", [x], name="a").outputs[0]
    b = g.add_node("Relu", [x], name="b").outputs[0]
    g.set_outputs([g.add_node("Add", [a, b], name="add").outputs[0]])
    g.replace_all_uses_with(b, a)
    assert g.node("a").origins == ("a", "b")
    g.erase(g.node("b"))
    g.verify()


def test_a_copy_keeps_origins():
    g = qc.optimize(qc.load_onnx(DIGITS))
    assert [n.origins for n in g.copy().nodes] == [n.origins for n in g.nodes]


# -- structural equality ------------------------------------------------------------------------


def relu_graph(**attrs) -> Graph:
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2, 3)))
    c = g.add_constant(np.arange(3, dtype=np.float32), "c")
    s = g.add_node("Softmax", [x], attrs, name="soft").outputs[0]
    g.set_outputs([g.add_node("Add", [s, c], name="add").outputs[0]])
    return g


def test_equal_graphs_are_equal_and_any_difference_counts():
    assert relu_graph() == relu_graph()
    assert relu_graph(axis=0) != relu_graph(axis=1)
    assert relu_graph(axis=1) != relu_graph()  # an explicit attribute is not a default one
    other = relu_graph()
    other.node("add").merge_origins(["bias"])
    assert other != relu_graph()
    other = relu_graph()
    other.constants["c"].data = np.array([0, 1, 3], np.float32)
    assert other != relu_graph()
    other = relu_graph()
    other.rename_node(other.node("soft"), "softmax")
    assert other != relu_graph()


def test_equality_compares_attributes_by_content():
    g1, g2 = Graph("g"), Graph("g")
    for g, pads in ((g1, [0, 0]), (g2, (0, 0))):
        x = g.add_input("x", TensorType("f32", (1, 1, 4)))
        g.set_outputs(g.add_node("MaxPool", [x], {"kernel_shape": [2], "pads": pads},
                                 name="p").outputs)
    assert g1 == g2  # a list and a tuple of the same ints are the same attribute


def test_run_time_errors_name_the_layers_of_a_fused_node():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", ("N", 2)))
    y = g.add_input("y", TensorType("f32", ("M", 2)))
    g.set_outputs(g.add_node("Add", [x, y], name="block1/add", outputs=["s"],
                             origins=["block1/add", "block1/bias", "block1/relu"]).outputs)
    feeds = {"x": np.zeros((2, 2), np.float32), "y": np.zeros((3, 2), np.float32)}
    layers = r"Add node 'block1/add' \(layers block1/add, block1/bias, block1/relu\) -> %s failed"
    with pytest.raises(qc.ExecutionError, match=layers + r" with operands x: float32\[2, 2\]"):
        qc.compile(g).run(feeds)
    with pytest.raises(qc.ExecutionError, match=layers + r" with operands %x: float32\[2, 2\]"):
        qc.Interpreter(g).run(feeds)


def test_a_node_inserted_after_a_value_does_not_take_its_layer():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2,)))
    r = g.add_node("Relu", [x], name="relu").outputs[0]
    g.set_outputs([r])
    neg = g.add_node("Neg", [r], name="neg")
    g.replace_all_uses_with(r, neg.outputs[0], exclude={neg})
    assert neg.origins == ("neg",) and g.node("relu").origins == ("relu",)
