"""The Interpreter: a graph run node by node on the op registry's kernels, with hooks that read
values, replace them and stop early; values freed after their last reader; typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import zoo
from hypothesis import given
from hypothesis import strategies as st

import qcompiler as qc
from qcompiler.graph import Graph, Node
from qcompiler.interpreter import STOP, Interpreter
from qcompiler.testing import graphs, inputs
from qcompiler.types import TensorType


def chain(length: int, shape: tuple = (2, 3)) -> Graph:
    """x -> Neg -> Neg -> ... (``length`` nodes named n0, n1, ...) -> output."""
    g = Graph("chain")
    v = g.add_input("x", TensorType("f32", shape))
    for k in range(length):
        v = g.add_node("Neg", [v], name=f"n{k}").outputs[0]
    g.set_outputs([v])
    return g


def x23() -> np.ndarray:
    return np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.parametrize("model", [zoo.resnet_bottleneck, zoo.mobilenetv3_block,
                                   zoo.reshape_shape_subgraph, zoo.tf2onnx_style])
def test_gives_what_the_numpy_backend_gives_bit_for_bit(model):
    g = qc.from_onnx(model())
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal([d if isinstance(d, int) else 2 for d in v.shape])
             .astype(np.float32) for v in g.inputs}
    expected = qc.compile(g, backend="numpy").run(feeds)
    got = Interpreter(g).run(feeds)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


@given(st.data())
def test_gives_what_the_numpy_backend_gives_on_drawn_graphs(data):
    g = data.draw(graphs(batch=st.sampled_from([1, 2, "N"])), label="graph")
    feeds = data.draw(inputs(g), label="feeds")
    expected = qc.compile(g, backend="numpy").run(feeds)
    got = Interpreter(g).run(feeds)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_hooks_see_every_node_in_order_with_its_operands_and_results():
    g = chain(3)
    seen = []

    def before(interp, node, inputs):
        seen.append(("before", node.name, [a.copy() for a in inputs]))

    def after(interp, node, outputs):
        seen.append(("after", node.name, [a.copy() for a in outputs]))

    out = Interpreter(g, before=before, after=after).run({"x": x23()})
    assert [(k, n) for k, n, _ in seen] == [("before", "n0"), ("after", "n0"), ("before", "n1"),
                                           ("after", "n1"), ("before", "n2"), ("after", "n2")]
    np.testing.assert_array_equal(seen[0][2][0], x23())
    np.testing.assert_array_equal(seen[1][2][0], -x23())
    np.testing.assert_array_equal(seen[3][2][0], x23())
    np.testing.assert_array_equal(out["n2"], -x23())


def test_a_replaced_value_is_what_later_nodes_read():
    def clamp_n0(interp, node, outputs):
        if node.name == "n0":
            interp.replace(node.outputs[0], np.ones((2, 3), np.float32))

    out = Interpreter(chain(3), after=clamp_n0).run({"x": x23()})
    np.testing.assert_array_equal(out["n2"], np.ones((2, 3), np.float32))


def test_a_before_hook_can_replace_an_operand_and_a_constant():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (3,)))
    w = g.add_constant(np.array([1, 2, 3], np.float32), "w")
    g.set_outputs([g.add_node("Mul", [x, w], name="mul").outputs[0]])

    def double_weight(interp, node, inputs):
        interp.replace(w, np.array([2, 4, 6], np.float32))

    out = Interpreter(g, before=double_weight).run({"x": np.ones(3, np.float32)})
    np.testing.assert_array_equal(out["mul"], [2, 4, 6])
    assert w.data.tolist() == [1, 2, 3]  # the graph's constant is untouched


def test_replace_takes_a_name_and_refuses_an_array_of_another_type():
    def replace(array):
        def hook(interp, node, outputs):
            if node.name == "n0":
                interp.replace("n0", array)
        return hook

    out = Interpreter(chain(3), after=replace(np.zeros((2, 3), np.float32))).run({"x": x23()})
    np.testing.assert_array_equal(out["n2"], np.zeros((2, 3), np.float32))
    for bad, shown in [(np.zeros((2, 3), np.int64), r"int64\[2, 3\]"),
                       (np.zeros((3, 2), np.float32), r"float32\[3, 2\]")]:
        with pytest.raises(qc.IRError, match=r"cannot replace %n0: f32\[2,3\] by an array of "
                                             + shown):
            Interpreter(chain(3), after=replace(bad)).run({"x": x23()})


@pytest.mark.parametrize("keep", [None, 1, 2.5])
def test_keep_of_another_kind_is_refused(keep):
    with pytest.raises(qc.IRError, match="keep must be True, False, a value name or names"):
        Interpreter(chain(2), keep=keep)


def test_a_hook_returning_stop_ends_the_run_with_what_was_computed():
    ran = []

    def stop_at_n1(interp, node, outputs):
        ran.append(node.name)
        return STOP if node.name == "n1" else None

    interp = Interpreter(chain(4), after=stop_at_n1)
    out = interp.run({"x": x23()})
    assert ran == ["n0", "n1"]
    assert interp.stopped_at is not None and interp.stopped_at.name == "n1"
    np.testing.assert_array_equal(out["n1"], x23())
    assert "n3" not in out


def test_a_before_hook_returning_stop_does_not_run_the_node():
    ran = []
    interp = Interpreter(chain(3), before=lambda i, n, a: STOP if n.name == "n1" else None,
                         after=lambda i, n, a: ran.append(n.name))
    out = interp.run({"x": x23()})
    assert ran == ["n0"] and interp.stopped_at.name == "n1"
    np.testing.assert_array_equal(out["n0"], -x23())
    assert "n1" not in out


def test_stop_after_a_named_node():
    interp = Interpreter(chain(5), stop_after="n2")
    out = interp.run({"x": x23()})
    np.testing.assert_array_equal(out["n2"], -x23())
    assert "n4" not in out


def test_stop_after_an_unknown_node_is_refused():
    with pytest.raises(qc.IRError, match="no node named 'nope'"):
        Interpreter(chain(2), stop_after="nope")


class Peak(Interpreter):
    """Counts the arrays held while each node runs (subclass style: override run_node)."""

    peak = 0

    def run_node(self, node: Node, inputs: list) -> list[np.ndarray]:
        self.peak = max(self.peak, len(self.held))
        return super().run_node(node, inputs)


def test_values_are_freed_after_their_last_reader():
    interp = Peak(chain(50))
    interp.run({"x": x23()})
    assert interp.peak <= 2
    assert set(interp.held) == {"n49"}


def test_keep_holds_every_value_or_the_named_ones():
    interp = Peak(chain(10), keep=True)
    interp.run({"x": x23()})
    assert interp.peak == 10 and len(interp.held) == 11
    np.testing.assert_array_equal(interp.value("n4"), -x23())
    interp = Interpreter(chain(10), keep="n3")
    interp.run({"x": x23()})
    assert set(interp.held) == {"n3", "n9"}
    np.testing.assert_array_equal(interp.value(interp.graph.value("n3")), x23())
    with pytest.raises(qc.IRError, match="freed after its last reader"):
        interp.value("n4")
    with pytest.raises(qc.IRError, match="no value %nope"):
        Interpreter(chain(2), keep=["nope"])


def test_a_subclass_overriding_run_node_replaces_results():
    class Zeroing(Interpreter):
        def run_node(self, node, inputs):
            return [np.zeros_like(a) for a in super().run_node(node, inputs)]

    np.testing.assert_array_equal(Zeroing(chain(2)).run({"x": x23()})["n1"], np.zeros((2, 3)))


def test_outputs_that_are_inputs_or_constants():
    g = Graph("passthrough")
    x = g.add_input("x", TensorType("f32", (2, 3)))
    c = g.add_constant(np.float32(4), "c")
    g.set_outputs([x, c])
    out = Interpreter(g).run({"x": x23()})
    np.testing.assert_array_equal(out["x"], x23())
    assert out["c"] == np.float32(4)


def test_inputs_are_checked_like_executable_run():
    g = chain(1)
    interp = Interpreter(g)
    with pytest.raises(qc.MissingInputError, match="'x'"):
        interp.run({})
    with pytest.raises(qc.UnknownInputError, match="'y'"):
        interp.run({"x": x23(), "y": x23()})
    with pytest.raises(qc.InputDTypeError, match="must be f32"):
        interp.run({"x": x23().astype(np.int64)})
    with pytest.raises(qc.InputShapeError, match="must have shape"):
        interp.run({"x": np.zeros((9, 9), np.float32)})


def test_exported_from_the_package():
    assert qc.Interpreter is Interpreter
