"""A custom pass from start to finish: define it, register it, run it, explain it, and
property-test it. docs/writing-a-pass.md walks through this file.

    .venv/bin/python examples/custom_pass.py

The pass, ``remove-neutral``, deletes elementwise ops that do nothing: ``x + 0``, ``x - 0``,
``x * 1`` and ``x / 1`` (exporters leave them behind when a scale or an offset is folded to its
neutral value). It refuses when the constant would broadcast ``x`` to a bigger shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import qcompiler as qc
from qcompiler import testing  # hypothesis strategies and equivalence checks (a test extra)
from qcompiler.graph import Value
from qcompiler.rewriter import Const, Match, Op, RewritePass, Rewriter, Rule, Var

NEUTRAL = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}


# 1. The rule: a pattern, a check that says why it refuses, and a rewrite.


def keeps_shape(m: Match) -> str | None:
    """Refuse (with a reason) when dropping the op would change a type or lose a name."""
    out, x = m.root.outputs[0], m["x"]
    if out.type != x.type:
        return f"%{out.name} is {out.type} but %{x.name} is {x.type}: the constant broadcasts"
    if out.is_graph_output and (x.is_graph_input or x.is_graph_output):
        return f"%{out.name} and %{x.name} are both named by the graph's signature"
    return None


def forward_input(rw: Rewriter, m: Match) -> None:
    """Readers of the op's output read ``x`` instead; the op, now dead, is erased."""
    rw.replace(m.root.outputs[0], m["x"])


def neutral_rule(op: str) -> Rule:
    commutative = op in ("Add", "Mul")  # 0 - x and 1 / x are not neutral
    pattern = Op(op, Var("x"), Const("c", value=NEUTRAL[op]), commutative=commutative)
    return Rule(f"neutral-{op.lower()}", pattern, forward_input, keeps_shape)


# 2. The pass: a dataclass whose fields are its options, registered by name.


@qc.register_pass
@dataclass
class RemoveNeutral(RewritePass):
    """x + 0, x - 0, x * 1 and x / 1 replaced by x."""

    name = "remove-neutral"
    ops: tuple[str, ...] = tuple(NEUTRAL)

    def phases(self) -> list[list[Rule]]:
        return [[neutral_rule(op) for op in self.ops]]


# 3. Run it in a pipeline, with the IR printed after it and the refusals explained.

MODEL = """graph scaled(%x: f32[1,3]) {
  %one: f32[] = const dense<[1.0]>
  %zeros: f32[2,3] = const dense<[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]>
  %zero: f32[3] = const dense<[0.0, 0.0, 0.0]>
  %scaled: f32[1,3] = Mul(%one, %x) @scale
  %shifted: f32[1,3] = Add(%scaled, %zero) @shift
  %act: f32[1,3] = Relu(%shifted) @relu
  %wide: f32[2,3] = Add(%act, %zeros) @broadcast
  return %act, %wide
}"""


def run_pipeline() -> qc.Graph:
    g = qc.parse(MODEL)
    pm = qc.PassManager("remove-neutral{ops=Add,Mul},canonicalize", explain=True)
    result = pm.run(g)
    print(result.graph)
    print(pm.report())
    for note in pm.explanations["remove-neutral"]:
        print("explain:", note)
    assert result.graph.op_counts() == {"Relu": 1, "Add": 1}  # the broadcasting Add stays
    x = {"x": np.array([[-1.0, 0.5, 2.0]], np.float32)}
    testing.assert_equivalent(g, result.graph, x)
    return result.graph


# 4. Property-test it: random graphs that contain neutral ops, before == after.

@testing.register_builder("neutral", ranks=(2, 3, 4))
def neutral(kit: testing.GraphKit, x: Value) -> Value:
    """x op c with a neutral constant c, sometimes of a shape that broadcasts x."""
    op = kit.choice(sorted(NEUTRAL))
    shape = kit.choice([(), (1,), x.shape[-1:], (2,) + tuple(x.shape)])
    c = kit.const(np.full(shape, NEUTRAL[op]), "neutral")
    operands = [c, x] if op in ("Add", "Mul") and kit.coin() else [x, c]
    return kit.node(op, operands)


test_remove_neutral = testing.pass_property(
    "remove-neutral",
    testing.graphs(builders=["neutral", "conv", "relu", "multi_use"], min_steps=3, max_steps=8),
    must_fire=testing.rule_names("remove-neutral"))  # each rule fires, or the test fails


if __name__ == "__main__":
    run_pipeline()
    test_remove_neutral()  # a hypothesis test: raises with a minimal failing graph if wrong
    print(test_remove_neutral.firing.summary())
    print("property test passed")
