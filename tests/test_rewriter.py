"""The pattern rewriter: what patterns match, the reason behind every refusal, apply_rules, and
the bookkeeping of Rewriter.finish (erasure, names, verification)."""

from __future__ import annotations

import numpy as np
import pytest

import qcompiler as qc
from qcompiler.errors import RewriteError
from qcompiler.graph import Graph
from qcompiler.rewriter import (
    ANY,
    Const,
    Match,
    Op,
    Opt,
    Refusal,
    Rewriter,
    Rule,
    Var,
    apply_rules,
    match,
)


def nothing(rw: Rewriter, m: Match) -> None:
    """A rewrite for rules that are only matched, never applied."""


def rule(pattern: Op, check=None) -> Rule:
    return Rule("r", pattern, nothing, check)


def refusal(pattern: Op, g: Graph, node: str, check=None) -> str:
    """The reason ``pattern`` refuses to match at ``node``."""
    found = match(rule(pattern, check), g, g.node(node))
    assert isinstance(found, Refusal), f"{pattern!r} matched at {node!r}"
    assert found.rule == "r" and found.node == g.node(node).describe()
    return found.reason


def matched(pattern: Op, g: Graph, node: str) -> Match:
    found = match(rule(pattern), g, g.node(node))
    assert isinstance(found, Match), found
    return found


# x * Clip(x + 3, 0, 6) / 6 as exporters write HardSwish, once with the operands the usual way
# round and once with every commutative operand swapped; plus a few nodes for other patterns.
GRAPH = """graph g(%x: f32[2,4], %y: f32[2,4]) {
  %three: f32[] = const dense<[3.0]>
  %zero: f32[] = const dense<[0.0]>
  %six: f32[] = const dense<[6.0]>
  %sixth: f32[] = const dense<[0.16666667]>
  %almost_three: f32[] = const dense<[3.0000002]>
  %three_point_one: f32[] = const dense<[3.1]>
  %i3: i64[] = const dense<[3]>
  %w: f32[4,4] = const dense<[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
                               0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]>
  %b: f32[4] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %a1: f32[2,4] = Add(%x, %three) @add1
  %c1: f32[2,4] = Clip(%a1, %zero, %six) @clip1
  %m1: f32[2,4] = Mul(%x, %c1) @mul1
  %a2: f32[2,4] = Add(%three, %x) @add2
  %c2: f32[2,4] = Clip(%a2, %zero, %six) @clip2
  %m2: f32[2,4] = Mul(%c2, %x) @mul2
  %m3: f32[2,4] = Mul(%y, %c1) @mul3
  %a3: f32[2,4] = Add(%x, %almost_three) @add3
  %a4: f32[2,4] = Add(%x, %three_point_one) @add4
  %s1: f32[2,4] = Mul(%m1, %sixth) @scale
  %r: f32[2,4] = Relu(%m2) @relu
  %sg: f32[2,4] = Sigmoid(%m2) @sigmoid
  %g1: f32[2,4] = Gemm(%x, %w, %b) {transB = 1} @gemm
  %g2: f32[2,4] = Gemm(%x, %w) @gemm_nobias
  %sq: f32[2,4] = Mul(%r, %r) @square
  %d: f32[2,4], %mask: bool[2,4] = Dropout(%sq) @dropout
  %t: f32[2,4] = Relu(%d) @dropout_relu
  return %s1, %m3, %a3, %a4, %sg, %g1, %g2, %m2, %t
}
"""


@pytest.fixture
def g() -> Graph:
    return qc.parse(GRAPH)


def hard_swish(commutative: bool = True) -> Op:
    return Op("Mul", Var("x"),
              Op("Clip", Op("Add", Var("x"), Const("three", value=3.0), commutative=commutative),
                 Const(value=0.0), Const(value=6.0), name="clip"),
              commutative=commutative, name="mul")


# -- matching -----------------------------------------------------------------------------------


def test_op_type_tuples(g):
    pattern = Op(("Relu", "Sigmoid"), Var("x"), name="act")
    assert matched(pattern, g, "relu")["act"] is g.node("relu")
    assert matched(pattern, g, "sigmoid")["x"] is g.value("m2")
    assert "Mul 'mul1' is not Relu or Sigmoid" in refusal(pattern, g, "mul1")
    inner = Op("Mul", Op(("Conv", "Gemm"), ANY, ANY), ANY)
    assert "operand 0 of Mul 'mul1' %x is a graph input, not the output of Conv or Gemm" in \
        refusal(inner, g, "mul1")


def test_commutative_matching_tries_both_orders(g):
    m1, m2 = matched(hard_swish(), g, "mul1"), matched(hard_swish(), g, "mul2")
    assert m1["x"] is m2["x"] is g.value("x")
    assert m1["clip"] is g.node("clip1") and m2["clip"] is g.node("clip2")
    assert m1["three"] is m2["three"] is g.value("three")
    assert [n.name for n in m2.nodes] == ["add2", "clip2", "mul2"]
    # without commutative=True only the operand order as written matches
    assert isinstance(match(rule(hard_swish(False)), g, g.node("mul1")), Match)
    assert refusal(hard_swish(False), g, "mul2") == (
        "operand 1 of Mul 'mul2' %x is a graph input, not the output of Clip")


def test_bindings_and_nodes_are_rolled_back_after_a_failed_order():
    g = qc.parse("""graph g(%a: f32[4]) {
  %r1: f32[4] = Relu(%a) @r1
  %r2: f32[4] = Relu(%r1) @r2
  %m: f32[4] = Mul(%r1, %r2) @m
  return %m
}
""")
    # order (0, 1) matches Relu r1 (x = %a), then fails: operand 1 is %r2, not %a; order
    # (1, 0) matches Relu r2 (x = %r1) and operand 0 is %r1.
    m = matched(Op("Mul", Op("Relu", Var("x"), name="relu"), Var("x"), commutative=True,
                   name="mul"), g, "m")
    assert m["relu"] is g.node("r2") and m["x"] is g.value("r1")
    assert [n.name for n in m.nodes] == ["r2", "m"]
    assert set(m.bindings) == {"relu", "x", "mul"}


def test_a_later_disagreement_backtracks_into_an_earlier_commutative_op():
    g = qc.parse("""graph g(%x: f32[4], %y: f32[4]) {
  %s: f32[4] = Add(%y, %x) @s
  %m: f32[4] = Mul(%s, %x) @m
  return %m
}
""")
    # (a + b) * a: Add's first order binds a = %y, which the Mul's second operand refuses;
    # the search goes back and tries Add's other order (a = %x, b = %y)
    m = matched(Op("Mul", Op("Add", Var("a"), Var("b"), commutative=True), Var("a")), g, "m")
    assert m["a"] is g.value("x") and m["b"] is g.value("y")
    reason = refusal(Op("Mul", Op("Add", Var("a"), Var("a"), commutative=True), ANY), g, "m")
    assert "'a' is already %" in reason


def test_a_check_refusal_makes_the_search_try_the_other_order():
    g = qc.parse("""graph g(%x: f32[4]) {
  %r1: f32[4] = Relu(%x) @first
  %r2: f32[4] = Relu(%x) @second
  %a: f32[4] = Add(%r1, %r2) @add
  return %a
}
""")
    pattern = Op("Add", Op("Relu", ANY, name="relu"), Var("other"), commutative=True)

    def not_first(m: Match) -> str | None:
        return "it is the first relu" if m["relu"].name == "first" else None

    found = match(rule(pattern, not_first), g, g.node("add"))
    assert isinstance(found, Match)
    assert found["relu"] is g.node("second") and found["other"] is g.value("r1")
    assert found.nodes == [g.node("second"), g.node("add")]
    assert refusal(pattern, g, "add", lambda m: "never") == "never"


def test_a_repeated_var_must_bind_the_same_value(g):
    # mul3 is y * Clip(x + 3): the two x's differ, in either order
    reason = refusal(hard_swish(), g, "mul3")
    assert "'x' is already %" in reason
    assert "Mul 'mul3'" in reason or "Add 'add1'" in reason
    square = Op("Mul", Var("v"), Var("v"))
    assert matched(square, g, "square")["v"] is g.value("r")
    assert "operand 1 of Mul 'mul1' is %c1 but 'v' is already %x" in refusal(square, g, "mul1")


def test_const_with_a_value_and_a_tolerance(g):
    three = Op("Add", ANY, Const("c", value=3.0))
    assert matched(three, g, "add1")["c"] is g.value("three")
    assert matched(three, g, "add3")["c"] is g.value("almost_three")  # within rtol 1e-6
    reason = refusal(three, g, "add4")
    assert "operand 1 of Add 'add4' %three_point_one is [3.1], not 3" in reason
    assert "not 3" in refusal(Op("Add", ANY, Const(value=3.0, rtol=1e-9)), g, "add3")
    # 1/6 in float32 is 0.16666667: it matches 1/6 within the default tolerance
    assert isinstance(match(rule(Op("Mul", ANY, Const(value=1 / 6))), g, g.node("scale")),
                      Match)
    assert "operand 0 of Add 'add1' %x is an input, not a constant" in \
        refusal(Op("Add", Const(), ANY), g, "add1")
    assert "%c1 comes from Clip 'clip1', not a constant" in \
        refusal(Op("Mul", ANY, Const()), g, "mul1")


def test_const_value_matches_integer_constants():
    g = qc.parse("""graph g(%x: i64[3]) {
  %three: i64[] = const dense<[3]>
  %four: i64[3] = const dense<[4, 4, 4]>
  %a: i64[3] = Add(%x, %three) @a
  %b: i64[3] = Add(%x, %four) @b
  return %a, %b
}
""")
    assert matched(Op("Add", ANY, Const("c", value=3)), g, "a")["c"] is g.value("three")
    assert matched(Op("Add", ANY, Const(value=4)), g, "b")
    assert "%four is [4, 4, 4], not 3" in refusal(Op("Add", ANY, Const(value=3)), g, "b")


def test_const_value_needs_every_element_equal():
    g = qc.parse("""graph g(%x: f32[2]) {
  %c: f32[2] = const dense<[6.0, 5.0]>
  %e: f32[0] = const dense<[]>
  %a: f32[2] = Mul(%x, %c) @a
  %b: f32[2] = Add(%x, %c) @b
  return %a, %b
}
""")
    assert "%c is [6., 5.], not 6" in refusal(Op("Mul", ANY, Const(value=6.0)), g, "a")


def test_one_use_refusal_names_every_reader_and_the_graph_outputs(g):
    pattern = Op(("Relu", "Sigmoid"), Op("Mul", ANY, ANY, one_use=True))
    reason = refusal(pattern, g, "relu")
    assert reason == ("%m2 (output of Mul 'mul2') has 3 readers (Relu 'relu', Sigmoid 'sigmoid', "
                      "the graph outputs); the rewrite needs it to have one")
    # a single reader that reads the value twice is not "one use" either
    reason = refusal(Op("Mul", Op("Relu", ANY, one_use=True), ANY), g, "square")
    assert reason.startswith("%r (output of Relu 'relu') has 2 readers (Mul 'square' twice)")
    assert matched(Op("Mul", Op("Mul", ANY, ANY, one_use=True), Const()), g, "scale")


def test_attrs_constraints_by_value_and_by_predicate(g):
    gemm = Op("Gemm", ANY, ANY, Opt(ANY), attrs={"transB": 1}, name="gemm")
    assert matched(gemm, g, "gemm")["gemm"] is g.node("gemm")
    assert refusal(gemm, g, "gemm_nobias") == "Gemm 'gemm_nobias' has transB=0, not 1"
    # defaults count: alpha is 1.0 on both even though neither spells it
    by_default = Op("Gemm", ANY, ANY, Opt(ANY), attrs={"alpha": 1.0, "transA": 0})
    assert matched(by_default, g, "gemm_nobias")
    predicate = Op("Gemm", ANY, ANY, ..., attrs={"transB": lambda v: v in (0, 1)})
    assert matched(predicate, g, "gemm") and matched(predicate, g, "gemm_nobias")
    picky = Op("Gemm", ANY, ANY, ..., attrs={"beta": lambda v: v > 1})
    assert refusal(picky, g, "gemm") == ("Gemm 'gemm' has beta=1.0, which the pattern's "
                                         "predicate refuses")


def test_attrs_compare_lists_and_tuples_alike():
    g = qc.parse("""graph g(%x: f32[1,2,3,3]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %c: f32[1,2,3,3] = Conv(%x, %w) {kernel_shape = [1, 1]} @conv
  return %c
}
""")
    assert matched(Op("Conv", ANY, ANY, attrs={"kernel_shape": [1, 1], "group": 1}),
                   g, "conv")
    assert "kernel_shape=(1, 1), not [3, 3]" in refusal(
        Op("Conv", ANY, ANY, attrs={"kernel_shape": [3, 3]}), g, "conv")


def test_operand_count_mismatch_and_rest(g):
    two = Op("Gemm", ANY, ANY)
    assert "Gemm 'gemm' has 3 operands, the pattern expects 2" in refusal(two, g, "gemm")
    assert matched(two, g, "gemm_nobias")
    assert matched(Op("Gemm", ANY, ANY, ...), g, "gemm")
    assert matched(Op("Gemm", ANY, ...), g, "gemm_nobias")


def test_absent_operands(g):
    three = Op("Gemm", ANY, ANY, Var("c"))
    assert "operand 2 of Gemm 'gemm_nobias' is absent" in refusal(three, g, "gemm_nobias")
    assert "operand 2 of Gemm 'gemm_nobias' is absent" in \
        refusal(Op("Gemm", ANY, ANY, Const()), g, "gemm_nobias")
    assert "operand 2 of Gemm 'gemm_nobias' is absent, not the output of Relu" in \
        refusal(Op("Gemm", ANY, ANY, Op("Relu", ANY)), g, "gemm_nobias")
    optional = Op("Gemm", ANY, ANY, Opt(Const("c")))
    assert matched(optional, g, "gemm_nobias").bindings == {"c": None}
    assert matched(optional, g, "gemm")["c"] is g.value("b")
    no_c = Op("Gemm", ANY, ANY, None)
    assert matched(no_c, g, "gemm_nobias")
    assert "operand 2 of Gemm 'gemm' is present, the pattern expects none" in \
        refusal(no_c, g, "gemm")


def test_every_kind_of_refusal_reads_as_a_reason(g):
    cases = [
        (Op("Conv", ANY, ANY), "mul1", ["Mul 'mul1'", "is not Conv"]),
        (Op("Mul", Op("Clip", ANY, ANY, ANY), ANY), "mul1",
         ["operand 0 of Mul 'mul1'", "%x", "graph input", "not the output of Clip"]),
        (Op("Mul", ANY, Op("Relu", ANY)), "mul1",
         ["operand 1 of Mul 'mul1'", "%c1", "comes from Clip 'clip1'", "not Relu"]),
        (Op("Clip", Op("Add", ANY, ANY), Op("Relu", ANY), ANY), "clip1",
         ["%zero", "is a constant", "not the output of Relu"]),
        (Op("Relu", Op("Dropout", ANY, ANY)), "dropout_relu",
         ["operand 1 of Dropout 'dropout'", "absent"]),
        (Op("Relu", Op("Mul", ANY, ANY, one_use=True)), "relu",
         ["%m2", "readers", "the rewrite needs it to have one"]),
        (Op("Gemm", ANY, ANY, ANY, attrs={"transB": 1}), "gemm_nobias", ["transB=0"]),
        (Op("Gemm", ANY, ANY), "gemm", ["3 operands", "expects 2"]),
        (Op("Gemm", ANY, ANY, ANY), "gemm_nobias", ["operand 2", "absent"]),
        (Op("Add", ANY, Const(value=3.0)), "add4", ["[3.1]", "not 3"]),
        (Op("Mul", Var("v"), Var("v")), "mul1", ["'v' is already %x"]),
    ]
    for pattern, node, words in cases:
        reason = refusal(pattern, g, node)
        for word in words:
            assert word in reason, (word, reason)


def test_not_the_first_output():
    g = qc.parse("""graph g(%x: f32[3]) {
  %d: f32[3], %mask: bool[3] = Dropout(%x) @dropout
  %n: bool[3] = Identity(%mask) @not
  return %n, %d
}
""")
    assert "%mask is not the first output of Dropout 'dropout'" in \
        refusal(Op("Identity", Op("Dropout", ANY)), g, "not")


def test_check_reasons_are_refusals(g):
    def check(m: Match) -> str | None:
        return None if m["x"].name == "y" else f"x is %{m['x'].name}"

    pattern = Op("Relu", Var("x"))
    assert refusal(pattern, g, "relu", check) == "x is %m2"
    found = match(rule(Op("Mul", Var("x"), ANY), check), g, g.node("mul3"))
    assert isinstance(found, Match)


# -- apply_rules --------------------------------------------------------------------------------


def neg_chain(n: int) -> Graph:
    lines = [f"  %n{i}: f32[3] = Neg(%n{i - 1}) @neg{i}" for i in range(1, n + 1)]
    return qc.parse("graph g(%n0: f32[3]) {\n" + "\n".join(lines) + f"\n  return %n{n}\n}}\n")


DOUBLE_NEG = Rule("double-neg", Op("Neg", Op("Neg", Var("x"), one_use=True)),
                  lambda rw, m: rw.replace(m.root.outputs[0], m["x"]))


def test_apply_rules_counts_how_often_each_rule_fired():
    g = neg_chain(5)
    assert apply_rules(g, [DOUBLE_NEG]) == {"double-neg": 2}
    assert [n.op for n in g.nodes] == ["Neg"]
    g.verify()
    assert apply_rules(g, [DOUBLE_NEG]) == {}


def sub_self(rw: Rewriter, m: Match) -> None:
    zeros = np.zeros(m.root.outputs[0].shape, np.float32)
    rw.replace(m.root.outputs[0], rw.constant(zeros, "zeros"))


SUB_SELF = Rule("sub-self", Op("Sub", Var("v"), Var("v")), sub_self)
LATE = """graph g(%x: f32[3]) {
  %n1: f32[3] = Neg(%x) @n1
  %n2: f32[3] = Neg(%n1) @n2
  %s: f32[3] = Sub(%n1, %n1) @s
  %out: f32[3] = Add(%n2, %s) @out
  return %out
}
"""


def test_apply_rules_reaches_a_fixpoint_over_several_sweeps():
    # double-neg refuses n2 in the first sweep (n1 has other readers); sub-self then removes
    # those readers, and the second sweep folds the Negs.
    g = qc.parse(LATE)
    assert apply_rules(g, [DOUBLE_NEG, SUB_SELF]) == {"sub-self": 1, "double-neg": 1}
    g.verify()
    assert [n.name for n in g.nodes] == ["out"]
    assert [v.name for v in g.node("out").inputs] == ["x", "s"]  # the constant took its name


def test_refusals_overcome_later_are_not_reported():
    g = qc.parse(LATE)
    refusals: list[Refusal] = []
    apply_rules(g, [DOUBLE_NEG, SUB_SELF], refusals=refusals)
    assert all("'n2'" not in r.node or r.rule != "double-neg" for r in refusals), refusals
    assert [r.node for r in refusals if r.rule == "double-neg"] == ["Neg node 'n1' -> %n1"]


def test_apply_rules_records_each_refusal_once():
    g = neg_chain(3)
    refusals: list[Refusal] = []
    no_fire = Rule("never", Op("Neg", Op("Relu", ANY)), nothing)
    apply_rules(g, [no_fire, DOUBLE_NEG], refusals=refusals)
    assert len(refusals) == len(set(refusals))
    assert {r.rule for r in refusals} == {"never", "double-neg"}
    first, third = [r for r in refusals if r.rule == "double-neg"]
    assert first.node == "Neg node 'neg1' -> %n1" and third.node == "Neg node 'neg3' -> %n3"
    assert "%n0 is a graph input, not the output of Neg" in first.reason
    assert str(first) == f"double-neg: Neg node 'neg1' -> %n1: {first.reason}"


def test_rules_that_undo_each_other_raise():
    g = qc.parse("""graph g(%x: f32[3]) {
  %s: f32[3] = Sigmoid(%x) @act
  return %s
}
""")

    def swap(op: str):
        return lambda rw, m: rw.replace(m.root.outputs[0], rw.add(op, [m["x"]]))

    ping = Rule("to-tanh", Op("Sigmoid", Var("x")), swap("Tanh"))
    pong = Rule("to-sigmoid", Op("Tanh", Var("x")), swap("Sigmoid"))
    with pytest.raises(RewriteError, match="rules to-tanh, to-sigmoid still fired after 5 "
                                           "sweeps; two rules probably undo each other"):
        apply_rules(g, [ping, pong], max_sweeps=5)


def test_a_failing_rewrite_is_a_rewrite_error_naming_rule_and_node():
    g = neg_chain(2)

    def broken(rw: Rewriter, m: Match) -> None:
        rw.add("Relu", [m["x"], m["x"]])

    with pytest.raises(RewriteError) as info:
        apply_rules(g, [Rule("broken", DOUBLE_NEG.pattern, broken)])
    assert info.value.rule == "broken" and info.value.node == "neg2"
    assert "rule 'broken' on Neg node 'neg2' -> %n2" in str(info.value)


# -- Rewriter.finish ----------------------------------------------------------------------------


FOLDABLE = """graph g(%x: f32[2,3]) {
  %w: f32[3,2] = const dense<[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]>
  %shared: f32[2] = const dense<[1.0, 1.0]>
  %two: f32[2] = const dense<[2.0, 2.0]>
  %mm: f32[2,2] = MatMul(%x, %w) @"layer/matmul"
  %scaled: f32[2,2] = Mul(%mm, %two) @"layer/scale"
  %out: f32[2,2] = Add(%scaled, %shared) @"layer/bias"
  %other: f32[2,2] = Add(%x, %x) @other
  %o2: f32[2] = Mul(%shared, %shared) @keeps_shared
  return %out, %o2
}
""".replace("%other: f32[2,2] = Add(%x, %x) @other\n", "")


def scale_into_weights(rw: Rewriter, m: Match) -> None:
    w = m.const("w") * m.const("s")
    rw.replace(m.root.outputs[0], rw.add("MatMul", [m["x"], rw.constant(w, "w")]))


SCALE_RULE = Rule("scale-into-weights",
                  Op("Mul", Op("MatMul", Var("x"), Const("w"), one_use=True), Const("s"),
                     name="mul"),
                  scale_into_weights)


def test_finish_erases_dead_matched_nodes_and_their_private_constants():
    g = qc.parse(FOLDABLE)
    assert apply_rules(g, [SCALE_RULE]) == {"scale-into-weights": 1}
    g.verify()
    assert [n.name for n in g.nodes] == ["layer/scale", "layer/bias", "keeps_shared"]
    new = g.node("layer/scale")
    assert new.op == "MatMul"  # the new node took the root's name
    assert new.outputs[0].name == "scaled"  # and its output the replaced value's name
    assert set(g.constants) == {"w", "shared"}  # %two and the old %w are gone; w reused
    np.testing.assert_array_equal(g.value("w").data, [[2, 4], [6, 8], [10, 12]])
    assert g.node("layer/bias").inputs[0] is new.outputs[0]


def test_finish_keeps_matched_nodes_that_are_still_read():
    text = FOLDABLE.replace("return %out, %o2", "return %out, %o2, %mm")
    g = qc.parse(text)
    loose = Rule("scale-into-weights",
                 Op("Mul", Op("MatMul", Var("x"), Const("w")), Const("s")), scale_into_weights)
    assert apply_rules(g, [loose]) == {"scale-into-weights": 1}
    g.verify()
    assert [n.op for n in g.nodes] == ["MatMul", "MatMul", "Add", "Mul"]
    assert g.node("layer/matmul").outputs[0].is_graph_output
    assert g.value("w").data[0, 1] == 2.0  # the old weight keeps its name and data
    (new_w,) = [name for name in g.constants if name not in ("w", "shared")]
    assert new_w.startswith("w")


def test_finish_gives_a_graph_output_name_to_the_new_value():
    g = qc.parse(FOLDABLE.replace("return %out, %o2", "return %scaled, %o2").replace(
        "  %out: f32[2,2] = Add(%scaled, %shared) @\"layer/bias\"\n", ""))
    assert apply_rules(g, [SCALE_RULE]) == {"scale-into-weights": 1}
    g.verify()
    assert [v.name for v in g.outputs] == ["scaled", "o2"]
    assert g.outputs[0].producer is g.node("layer/scale")


def test_finish_renames_an_existing_value_that_takes_over_a_graph_output():
    g = qc.parse("""graph g(%x: f32[3]) {
  %r: f32[3] = Relu(%x) @relu
  %y: f32[3] = Identity(%r) @id
  return %y
}
""")
    drop = Rule("drop", Op("Identity", Var("x")),
                lambda rw, m: rw.replace(m.root.outputs[0], m["x"]))
    assert apply_rules(g, [drop]) == {"drop": 1}
    g.verify()
    assert [n.name for n in g.nodes] == ["relu"] and g.outputs[0].name == "y"
    assert g.outputs[0].producer is g.node("relu")


def test_finish_gives_a_graph_output_name_to_a_new_constant():
    g = qc.parse("""graph g(%x: f32[3]) {
  %s: f32[3] = Sub(%x, %x) @s
  return %s
}
""")
    assert apply_rules(g, [SUB_SELF]) == {"sub-self": 1}
    g.verify()
    assert g.nodes == [] and list(g.constants) == ["s"] and g.outputs == [g.value("s")]


def test_finish_refuses_to_turn_a_graph_output_into_a_graph_input():
    g = qc.parse("""graph g(%x: f32[3]) {
  %y: f32[3] = Identity(%x) @id
  return %y
}
""")
    drop = Rule("drop", Op("Identity", Var("x")),
                lambda rw, m: rw.replace(m.root.outputs[0], m["x"]))
    with pytest.raises(RewriteError, match="graph output %y would become graph input %x"):
        apply_rules(g, [drop])


def test_names_stay_fresh_while_the_old_nodes_exist():
    g = qc.parse(FOLDABLE)

    def rewrite(rw: Rewriter, m: Match) -> None:
        # while the rewrite runs, the root still holds its name: the new node gets another one
        out = rw.add("Relu", [m["x"]])
        assert out.producer.name != "layer/scale"
        rw.replace(m.root.outputs[0], rw.add("MatMul", [out, rw.constant(m.const("w"), "w")],
                                             name="renamed"))

    apply_rules(g, [Rule("two-nodes", SCALE_RULE.pattern, rewrite)])
    g.verify()
    names = [n.name for n in g.nodes]
    assert names[:2] == ["layer/scale", "renamed"]
