"""Safe mutation: refused edits name both values and change nothing, failed rewrites leave the
graph as it was, passes keep the graph's signature, and verify() catches what slipped past."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from test_ir import chain

import qcompiler as qc
from qcompiler.errors import IRError, PassError, RewriteError, ShapeInferenceError
from qcompiler.graph import Graph
from qcompiler.pass_manager import (
    PASSES,
    Pass,
    PassManager,
    PassResult,
    available_passes,
    register_pass,
)
from qcompiler.rewriter import Match, Op, Refusal, RewritePass, Rewriter, Rule, Var, apply_rules
from qcompiler.rewriter import match as match_rule
from qcompiler.types import QuantParams, TensorType


def renamed(g: Graph, name: str) -> Graph:
    g.name = name
    return g


# -- replace_all_uses_with ------------------------------------------------------------------------


def test_replace_refuses_a_value_from_another_graph_and_changes_nothing():
    g, other = chain(), renamed(chain(), "other")
    before = g.copy()
    with pytest.raises(IRError, match=r"cannot replace %relu by %relu: %relu belongs to another "
                                      r"graph, not 'chain'"):
        g.replace_all_uses_with(g.value("relu"), other.value("relu"))
    assert g == before
    g.verify()


def test_replace_refuses_another_type_unless_told():
    g = chain()
    narrow = g.add_node("Cast", [g.value("relu")], {"to": 6}, name="cast").outputs[0]
    before = g.copy()
    with pytest.raises(IRError, match=r"cannot replace %add: f32\[N,4\] by %cast: i32\[N,4\]: "
                                      r"the types differ \(pass retype=True"):
        g.replace_all_uses_with(g.value("add"), narrow)
    assert g == before


def test_replace_refuses_another_shape_and_another_quantization():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2, 3)))
    y = g.add_input("y", TensorType("f32", (3, 2)))
    q1 = g.add_input("q1", TensorType("i8", (2,), QuantParams(0.5, 0)))
    q2 = g.add_input("q2", TensorType("i8", (2,), QuantParams(0.25, 0)))
    g.set_outputs([g.add_node("Relu", [x]).outputs[0], g.add_node("Neg", [q1]).outputs[0]])
    with pytest.raises(IRError, match="the types differ"):
        g.replace_all_uses_with(x, y)
    with pytest.raises(IRError, match="the types differ"):
        g.replace_all_uses_with(q1, q2)


def test_replace_with_retype_is_allowed():
    g = chain()
    wide = g.add_node("Unsqueeze", [g.value("relu"), g.add_constant(np.array([0]))],
                      name="unsq").outputs[0]
    g.replace_all_uses_with(g.value("mul"), wide, retype=True)
    assert g.outputs == [wide]


def test_replace_refuses_a_value_computed_from_a_reader_it_would_redirect():
    g = chain()
    y = g.value("relu")
    absolute = g.add_node("Abs", [y], name="abs").outputs[0]
    before = g.copy()
    with pytest.raises(IRError, match=r"cannot replace %relu by %abs: %abs depends on Abs node "
                                      r"'abs' -> %abs, which reads %relu; the graph would get a "
                                      r"cycle"):
        g.replace_all_uses_with(y, absolute)
    assert g == before
    g.verify()
    # indirectly too: Neg(Abs(relu)) also depends on a reader of %relu
    neg = g.add_node("Neg", [absolute], name="neg").outputs[0]
    with pytest.raises(IRError, match="depends on Abs node 'abs'"):
        g.replace_all_uses_with(y, neg)


def test_replace_excluding_the_new_reader_inserts_after_a_value():
    g = chain()
    y = g.value("relu")
    neg = g.add_node("Neg", [y], name="neg", after=g.node("relu"))
    g.replace_all_uses_with(y, neg.outputs[0], exclude={neg})
    assert neg.inputs == (y,) and y.users == [neg]
    assert g.node("mul").inputs[0] is neg.outputs[0]
    g.verify()


def test_rewriter_replace_by_a_value_of_the_replaced_one_is_a_rewrite_error():
    g = chain()
    before = g.copy()
    wrap = Rule("wrap", Op("Relu", Var("x")),
                lambda rw, m: rw.replace(m.root.outputs[0], rw.add("Abs", [m.root.outputs[0]])))
    with pytest.raises(RewriteError, match="rule 'wrap' on Relu node 'relu'.*depends on Abs"):
        apply_rules(g, [wrap])
    assert g == before
    g.verify()


def test_replace_with_constant_takes_a_refinement_and_refuses_another_shape():
    g = chain()
    before = g.copy()
    with pytest.raises(IRError, match=r"cannot replace %relu: f32\[N,4\] by a constant of "
                                      r"shape \[2, 3\]"):
        g.replace_with_constant(g.value("relu"), np.zeros((2, 3), np.float32))
    assert g == before
    const = g.replace_with_constant(g.value("relu"), np.zeros((2, 4), np.float32))
    assert const.shape == (2, 4) and g.node("mul").inputs[0] is const


# -- add_node validates before it mutates ---------------------------------------------------------


def _failing_add_nodes(g: Graph, other: Graph) -> list:
    relu = g.node("relu")
    return [
        lambda: g.add_node("Add", [g.value("relu"), other.value("relu")], name="bad"),
        lambda: g.add_node("Relu", [g.value("relu")], name="bad", before=other.node("relu")),
        lambda: g.add_node("Relu", [g.value("relu")], name="bad", before=relu, after=relu),
        lambda: g.add_node("Relu", [g.value("relu")], name="bad",
                           types=[TensorType("f32", (1,))] * 2),
        lambda: g.add_node("Conv", [g.value("relu"), g.value("c")], name="bad",
                           outputs=["fresh"], before=relu),
        lambda: g.add_node("Relu", [g.value("relu")], name="bad", outputs=2),
        lambda: g.add_node("NoSuchOp", [g.value("relu")], name="bad"),
        lambda: g.add_node("Relu", [np.zeros(4, np.float32)], name="bad"),
        lambda: g.add_node("Relu", [g.value("relu")], [("alpha", 1.0)], name="bad"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_a_refused_add_node_leaves_the_graph_exactly_as_it_was(case):
    g, other = chain(), renamed(chain(), "other")
    before = g.copy()
    uses = {v.name: list(v.uses) for v in g.values()}
    with pytest.raises(qc.QCompilerError):
        _failing_add_nodes(g, other)[case]()
    assert g == before
    assert {v.name: list(v.uses) for v in g.values()} == uses
    assert not g.has_value("fresh") and "bad" not in g._node_names
    g.verify()


def test_add_node_inference_error_is_a_shape_inference_error():
    g = chain()
    with pytest.raises(ShapeInferenceError):
        g.add_node("Conv", [g.value("relu"), g.value("c")], name="bad")


# -- rule checks and failed rewrites ---------------------------------------------------------------


def test_a_check_returning_an_empty_string_refuses():
    g = chain()
    found = match_rule(Rule("r", Op("Relu", Var("x")), lambda rw, m: None, lambda m: ""),
                       g, g.node("relu"))
    assert isinstance(found, Refusal)
    assert found.reason == "the rule's check refused (no reason given)"
    found = match_rule(Rule("r", Op("Relu", Var("x")), lambda rw, m: None, lambda m: None),
                       g, g.node("relu"))
    assert isinstance(found, Match)


def _add_then_fail(rw: Rewriter, m: Match) -> None:
    rw.replace(m.root.outputs[0], rw.add("Abs", [m["x"]]))
    raise ValueError("half-way")


def test_apply_rules_leaves_the_graph_untouched_when_a_rewrite_fails():
    g = chain()
    neg_relu = Rule("relu-to-abs", Op("Relu", Var("x")),
                    lambda rw, m: rw.replace(m.root.outputs[0], rw.add("Abs", [m["x"]])))
    broken = Rule("broken", Op("Mul", Var("a"), Var("b")), _add_then_fail)
    before = g.copy()
    with pytest.raises(RewriteError, match="rule 'broken' crashed on Mul node 'mul'"):
        apply_rules(g, [neg_relu, broken])
    assert g == before  # the successful relu-to-abs rewrite is undone as well
    g.verify()


@dataclass
class TwoPhases(RewritePass):
    name = "two-phases"

    def phases(self) -> list[list[Rule]]:
        return [[Rule("relu-to-abs", Op("Relu", Var("x")),
                      lambda rw, m: rw.replace(m.root.outputs[0], rw.add("Abs", [m["x"]])))],
                [Rule("broken", Op("Mul", Var("a"), Var("b")), _add_then_fail)]]


def test_rewrite_pass_run_undoes_earlier_phases_when_a_later_one_fails():
    g = chain()
    before = g.copy()
    with pytest.raises(RewriteError):
        TwoPhases().run(g)
    assert g == before
    g.verify()


def test_transaction_rolls_back_direct_edits():
    g = chain()
    before = g.copy()
    with pytest.raises(RuntimeError), g.transaction():
        g.replace_all_uses_with(g.value("relu"), g.value("add"))
        g.erase(g.node("relu"))
        raise RuntimeError("stop")
    assert g == before
    g.verify()
    assert all(n.graph is g for n in g.nodes) and all(v.graph is g for v in g.values())


def test_a_nested_transaction_is_a_savepoint():
    g = chain()
    with g.transaction():
        g.add_node("Neg", [g.value("mul")], name="outer")
        after_outer = g.copy()
        with pytest.raises(RewriteError), g.transaction():
            g.add_node("Neg", [g.value("mul")], name="inner")
            raise RewriteError("inner fails")
        assert g == after_outer  # the inner block undid only its own edit
    assert [n.name for n in g.nodes][-1] == "outer"


def test_apply_rules_inside_an_open_transaction_still_rolls_back_its_rewrites():
    g = chain()
    neg_relu = Rule("relu-to-abs", Op("Relu", Var("x")),
                    lambda rw, m: rw.replace(m.root.outputs[0], rw.add("Abs", [m["x"]])))
    broken = Rule("broken", Op("Mul", Var("a"), Var("b")), _add_then_fail)
    with g.transaction():
        before = g.copy()
        with pytest.raises(RewriteError):
            apply_rules(g, [neg_relu, broken])
        assert g == before
    g.verify()


# -- the pass manager keeps the signature ------------------------------------------------------


@dataclass
class RenameOutput(Pass):
    name = "rename-output"

    def run(self, graph: Graph) -> PassResult:
        graph.rename_value(graph.outputs[0], "renamed")
        return PassResult(graph, True)


@dataclass
class WidenOutput(Pass):
    name = "widen-output"

    def run(self, graph: Graph) -> PassResult:
        old = graph.outputs[0]
        cast = graph.add_node("Cast", [old], {"to": 6}, name="cast").outputs[0]
        graph.replace_all_uses_with(old, cast, retype=True, exclude={cast.producer})
        graph.rename_value(old, "pre")
        graph.rename_value(cast, "mul")
        return PassResult(graph, True)


@dataclass
class DropInput(Pass):
    name = "drop-input"

    def run(self, graph: Graph) -> PassResult:
        graph.inputs.append(graph.add_input("extra", TensorType("f32", (1,))))
        graph.inputs.pop()
        graph.inputs.insert(0, graph.inputs.pop())
        return PassResult(graph, True)


@pytest.fixture
def signature_passes():
    available_passes()  # load the built-in passes before taking the snapshot
    saved = dict(PASSES)
    for cls in (RenameOutput, WidenOutput, DropInput):
        register_pass(cls)
    yield
    PASSES.clear()
    PASSES.update(saved)


@pytest.mark.parametrize("pipeline, message", [
    ("rename-output", r"pass 'rename-output' changed the graph's signature: its outputs were "
                      r"%mul, now %renamed"),
    ("widen-output", r"pass 'widen-output' changed the graph's signature: output %mul was "
                     r"f32\[N,4\], now i32\[N,4\]"),
    ("drop-input", r"pass 'drop-input' changed the graph's signature: its inputs were %x, now "
                   r"%extra, %x"),
])
def test_pass_manager_names_a_pass_that_changed_the_signature(signature_passes, pipeline,
                                                              message):
    g = chain()
    before = g.copy()
    with pytest.raises(PassError, match=message) as info:
        PassManager(pipeline).run(g)
    assert info.value.pass_name == pipeline
    assert g == before


def test_an_unknown_output_dimension_may_become_known():
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2, 3, 4)))
    one = g.add_constant(np.array([1]), "one")
    ends = g.add_node("Add", [one, one], name="ends").outputs[0]
    start, axis = g.add_constant(np.array([0]), "start"), g.add_constant(np.array([2]), "axis")
    g.set_outputs(g.add_node("Slice", [x, start, ends, axis], name="y").outputs)
    assert g.outputs[0].shape == (2, 3, "?")
    refined = PassManager("canonicalize").run(g).graph
    assert refined.outputs[0].name == "y" and refined.outputs[0].shape == (2, 3, 2)


# -- verify --------------------------------------------------------------------------------------


def test_verify_finds_per_channel_params_of_the_wrong_length():
    g = Graph("g")
    w = g.add_constant(np.zeros((4, 2), np.int8), "w",
                       QuantParams([0.1, 0.2, 0.3], [0, 0, 0], axis=0))
    g.set_outputs([w])
    with pytest.raises(qc.VerificationError, match=r"%w: 3 per-channel scales for axis 0 of "
                                                   r"size 4"):
        g.verify()


def test_an_invalid_quantized_dtype_is_a_verify_problem_not_a_numpy_error():
    params = QuantParams(0.5, 0, dtype="f32")
    assert params.problems() == ["quantized dtype must be an integer type, not f32"]
    g = Graph("g")
    x = g.add_input("x", TensorType("f32", (2,), params))
    g.set_outputs([x])
    with pytest.raises(qc.VerificationError,
                       match="%x: quantized dtype must be an integer type, not f32"):
        g.verify()


def test_set_input_and_set_outputs_refuse_foreign_values():
    g, other = chain(), renamed(chain(), "other")
    before, other_before = g.copy(), other.copy()
    with pytest.raises(IRError, match="operand %relu belongs to another graph, not 'chain'"):
        g.node("mul").set_input(0, other.value("relu"))
    with pytest.raises(IRError, match="graph output %relu belongs to another graph"):
        g.set_outputs([other.value("relu")])
    assert g == before and other == other_before
    assert [(n.name, i) for n, i in other.value("relu").uses] == [("mul", 0)]


def test_verify_names_a_node_reading_its_own_output():
    g = chain()
    relu = g.node("relu")
    relu._set_input(0, relu.outputs[0])  # what set_input and replace_all_uses_with refuse
    with pytest.raises(qc.VerificationError,
                       match=r"Relu node 'relu' -> %relu reads its own output %relu"):
        g.verify()
