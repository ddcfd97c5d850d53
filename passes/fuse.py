"""``fuse``: fold what follows a Conv, ConvTranspose, Gemm or MatMul into it.

Four phases, each run to a fixpoint before the next:

1. ``decomposed``: the spellings exporters use for HardSigmoid and HardSwish become those ops:
   ``Clip(x * a + b, 0, 1)``, ``Clip(x / d + b, 0, 1)`` and ``Clip(x + 3, 0, 6) / 6`` (the
   h_sigmoid of MobileNetV3 ports) are ``HardSigmoid``; ``x * Clip(x + 3, 0, 6) / 6`` (in its
   operand orders, with ``* 1/6`` for ``/ 6``, the division applied to the product, to the Clip
   or to x) and ``x * HardSigmoid(x)`` with alpha 1/6 and beta 0.5 are ``HardSwish``.
2. ``bias`` and ``scale``: Add/Sub (bias) and Mul/Div (scale) of a per-channel constant after a
   producer whose output nothing else reads go into its weights and bias.
3. ``residual``: ``Add(Conv(...), z)`` becomes a Conv with the residual input ``Z``.
4. ``activations``: Relu, Clip (ReLU6), LeakyRelu, HardSigmoid and HardSwish after a producer
   become its ``activation`` attribute (applied after the bias and the residual).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qcompiler import ops
from qcompiler.graph import Node
from qcompiler.pass_manager import register_pass
from qcompiler.rewriter import ANY, Const, Match, Op, Opt, RewritePass, Rewriter, Rule, Var, short

from .affine import (
    PRODUCERS,
    fold_affine,
    has_residual,
    output_problem,
    per_channel,
    producer_problem,
)

# option spelling -> the activation op (those a fused producer can carry)
ACTIVATIONS = {name.lower(): name for name in ops.ACTIVATIONS}


def _producer(name: str = "producer", ops: tuple[str, ...] = PRODUCERS) -> Op:
    return Op(ops, ANY, ANY, ..., name=name, one_use=True)


def _scalar(m: Match, *names: str) -> str | None:
    for name in names:
        if m.const(name).size != 1:
            return f"%{m[name].name} has shape {list(m[name].shape)}, not a scalar"
    return None


def _same_shape(m: Match, x: str = "x") -> str | None:
    """The decomposed form must not broadcast its input to a bigger shape."""
    out = m.root.outputs[0]
    if out.shape != m[x].shape:
        return f"%{out.name} {list(out.shape)} is broadcast from %{m[x].name} {list(m[x].shape)}"
    return None


# -- phase 1: decomposed activations --------------------------------------------------------


def _hard_sigmoid_check(m: Match) -> str | None:
    problem = _scalar(m, *(k for k in ("alpha", "divisor", "beta") if k in m.bindings))
    if problem:
        return problem
    if "divisor" in m.bindings and m.const("divisor").reshape(-1)[0] == 0:
        return f"%{m['divisor'].name} is zero: x / 0 is not a HardSigmoid slope"
    return _same_shape(m)


def _hard_sigmoid(rw: Rewriter, m: Match) -> None:
    alpha = (float(m.const("alpha").reshape(-1)[0]) if "alpha" in m.bindings
             else 1.0 / float(m.const("divisor").reshape(-1)[0]))
    beta = float(m.const("beta").reshape(-1)[0])
    rw.replace(m.root.outputs[0], rw.add("HardSigmoid", [m["x"]], {"alpha": alpha, "beta": beta}))


def _hard_sigmoid_sixth(rw: Rewriter, m: Match) -> None:
    """relu6(x + 3) / 6 = Clip(x / 6 + 0.5, 0, 1)."""
    rw.replace(m.root.outputs[0], rw.add("HardSigmoid", [m["x"]], {"alpha": 1 / 6, "beta": 0.5}))


def _clip01(inner: Op) -> Op:
    return Op("Clip", Op("Add", inner, Const("beta"), commutative=True),
              Const(value=0.0), Const(value=1.0))


_RELU6_OF_X_PLUS_3 = Op("Clip", Op("Add", Var("x"), Const(value=3.0), commutative=True),
                        Const(value=0.0), Const(value=6.0))
_SIXTH = Const(value=1.0 / 6.0)
_SIX = Const(value=6.0)


def _sixths(p: Op | Var) -> list[tuple[str, Op]]:
    """``p / 6`` and ``p * 1/6``, the two ways exporters divide by six."""
    return [("div", Op("Div", p, _SIX)), ("mul", Op("Mul", p, _SIXTH, commutative=True))]


# Clip(x * a + b, 0, 1), Clip(x / d + b, 0, 1) and relu6(x + 3) / 6 (h_sigmoid).
HARD_SIGMOID_RULES = [
    Rule("hardsigmoid-form", _clip01(Op("Mul", Var("x"), Const("alpha"), commutative=True)),
         _hard_sigmoid, _hard_sigmoid_check),
    Rule("hardsigmoid-div-form", _clip01(Op("Div", Var("x"), Const("divisor"))),
         _hard_sigmoid, _hard_sigmoid_check),
    *(Rule(f"hardsigmoid-{kind}-relu6", scaled, _hard_sigmoid_sixth, _same_shape)
      for kind, scaled in _sixths(_RELU6_OF_X_PLUS_3)),
]


def _hard_swish(rw: Rewriter, m: Match) -> None:
    rw.replace(m.root.outputs[0], rw.add("HardSwish", [m["x"]]))


def _hard_sigmoid_is_sixth(m: Match) -> str | None:
    attrs = m["hs"].opdef.full_attrs(m["hs"].attrs)
    if not (np.isclose(attrs["alpha"], 1 / 6, rtol=1e-6, atol=0) and attrs["beta"] == 0.5):
        return (f"{short(m['hs'])} has alpha={attrs['alpha']:g} beta={attrs['beta']:g}; "
                "HardSwish needs 1/6 and 0.5")
    return _same_shape(m)


# x * relu6(x + 3) / 6 with the division on the product or on x; with the division on
# relu6(x + 3) it is x * HardSigmoid(x) once the h_sigmoid rules above have run.
HARD_SWISH_RULES = [
    *(Rule(f"hardswish-{kind}-product", scaled, _hard_swish, _same_shape)
      for kind, scaled in _sixths(Op("Mul", Var("x"), _RELU6_OF_X_PLUS_3, commutative=True))),
    *(Rule(f"hardswish-{kind}-x", Op("Mul", scaled, _RELU6_OF_X_PLUS_3, commutative=True),
           _hard_swish, _same_shape)
      for kind, scaled in _sixths(Var("x"))),
    Rule("hardswish-hardsigmoid-form",  # x * HardSigmoid(x), how torch exports HardSwish < 14
         Op("Mul", Var("x"), Op("HardSigmoid", Var("x"), name="hs"), commutative=True),
         _hard_swish, _hard_sigmoid_is_sixth),
]


# -- phase 2: constants into the producer ----------------------------------------------------


Affine = tuple[np.ndarray | None, np.ndarray | None]
_SMALLEST_DIVISOR = 1.0 / float(np.finfo(np.float32).max)  # below it, 1/c overflows float32


def _reciprocal(c: np.ndarray) -> Affine | str:
    """``y / c`` as ``y * (1 / c)``, refused (before any 1/0 is computed) when ``c`` has a zero
    or an element so small (a float32 subnormal) that its reciprocal overflows float32."""
    if not np.all(c):
        return "has a zero: dividing by it is not a scale"
    if np.any(np.abs(c) < _SMALLEST_DIVISOR):
        return "has an element whose reciprocal overflows float32: dividing by it is not a scale"
    return 1.0 / c, None


# y op c as the per-channel map y * scale + shift, or why it is not one
AFFINE_MAPS: dict[str, Callable[[np.ndarray], Affine | str]] = {
    "Add": lambda c: (None, c),
    "Sub": lambda c: (None, -c),
    "Mul": lambda c: (c, None),
    "Div": _reciprocal,
}


def _affine_map(m: Match) -> Affine | str:
    """The matched op's (scale, shift) per output channel of the producer, or why not."""
    producer = m["producer"]
    problem = producer_problem(producer)
    if problem:
        return problem
    vector = per_channel(producer, m["c"])
    if isinstance(vector, str):
        return vector
    found = AFFINE_MAPS[m.root.op](vector)
    return f"%{m['c'].name} {found}" if isinstance(found, str) else found


def _affine_check(m: Match) -> str | None:
    found = _affine_map(m)
    return found if isinstance(found, str) else None


def _affine(rw: Rewriter, m: Match) -> None:
    found = _affine_map(m)
    assert not isinstance(found, str)
    rw.replace(m.root.outputs[0], fold_affine(rw, m["producer"], *found))


def _affine_rule(op: str, commutative: bool) -> Rule:
    name = {"Add": "bias-add", "Sub": "bias-sub", "Mul": "scale-mul", "Div": "scale-div"}[op]
    return Rule(name, Op(op, _producer(), Const("c"), commutative=commutative), _affine,
                _affine_check)


BIAS_RULES = [_affine_rule("Add", True), _affine_rule("Sub", False)]
SCALE_RULES = [_affine_rule("Mul", True), _affine_rule("Div", False)]


# -- phase 3: residual add ---------------------------------------------------------------------


def _residual_check(m: Match) -> str | None:
    conv, z = m["conv"], m["z"]
    problem = output_problem(conv)
    if problem:
        return f"{problem}, which would have to come after the Add"
    if has_residual(conv):
        return f"{short(conv)} already adds a residual"
    out = conv.outputs[0]
    if z.type.shape != out.shape or z.dtype != out.dtype:
        return (f"the other operand %{z.name} is {z.type}, the Add would broadcast it against "
                f"%{out.name} {out.type}")
    return None


def _residual(rw: Rewriter, m: Match) -> None:
    conv = m["conv"]
    inputs = (list(conv.inputs) + [None, None])[:3] + [m["z"]]
    rw.replace(m.root.outputs[0], rw.add("Conv", inputs, dict(conv.attrs), name=conv.name))


RESIDUAL = Rule("residual-add",
                Op("Add", _producer("conv", ("Conv",)), Var("z"), commutative=True),
                _residual, _residual_check)


# -- phase 4: activations ----------------------------------------------------------------------


def _activation_params(node: Node, m: Match) -> tuple[float, ...]:
    """The fused activation's params: Clip's bounds (inputs), the others' float attributes."""
    if node.op == "Clip":
        lo, hi = m.get("min"), m.get("max")
        return (float(lo.data.reshape(-1)[0]) if lo is not None else -np.inf,
                float(hi.data.reshape(-1)[0]) if hi is not None else np.inf)
    attrs = node.opdef.full_attrs(node.attrs)
    return tuple(float(attrs[p]) for p in ops.ACTIVATIONS[node.op])


def _activation_check(m: Match) -> str | None:
    problem = output_problem(m["producer"])
    if problem:
        return problem
    for key in ("min", "max"):
        bound = m.get(key)
        if bound is not None and bound.data.size != 1:
            return f"the Clip bound %{bound.name} is not a scalar"
    return None


def _activation(rw: Rewriter, m: Match) -> None:
    producer, act = m["producer"], m.root
    attrs = dict(producer.attrs, activation=act.op)
    params = _activation_params(act, m)
    if params:
        attrs["activation_params"] = params
    rw.replace(act.outputs[0],
               rw.add(producer.op, list(producer.inputs), attrs, name=producer.name))


def _activation_rule(op: str) -> Rule:
    operands = [Opt(Const("min")), Opt(Const("max"))] if op == "Clip" else []
    return Rule(f"fuse-{op.lower()}", Op(op, _producer(), *operands), _activation,
                _activation_check)


@register_pass
@dataclass
class Fuse(RewritePass):
    """Bias adds, per-channel scales, residual adds and activations into their producer."""

    name = "fuse"
    activations: tuple[str, ...] = tuple(ACTIVATIONS)
    decomposed: bool = True
    bias: bool = True
    scale: bool = True
    residual: bool = True

    def __post_init__(self) -> None:
        names = tuple(a.lower().replace("_", "") for a in self.activations)
        unknown = [a for a, n in zip(self.activations, names) if n not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"unknown activation(s) {', '.join(unknown)} (fuse knows "
                             f"{', '.join(ACTIVATIONS)})")
        self.activations = names

    def phases(self) -> list[list[Rule]]:
        phases = []
        if self.decomposed:
            phases.append([*HARD_SIGMOID_RULES, *HARD_SWISH_RULES])
        constants = (BIAS_RULES if self.bias else []) + (SCALE_RULES if self.scale else [])
        if constants:
            phases.append(constants)
        if self.residual:
            phases.append([RESIDUAL])
        if self.activations:
            phases.append([_activation_rule(ACTIVATIONS[a]) for a in self.activations])
        return phases
