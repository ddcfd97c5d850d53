"""The ``fuse`` pass: golden IR-text cases (tests/golden/fuse), hypothesis properties (same
outputs before and after, idempotence), the exporter-style zoo models, options and explanations.
"""

from __future__ import annotations

import warnings

import golden
import numpy as np
import pytest
import zoo
from hypothesis import given
from hypothesis import strategies as st
from qcompiler.passes.fuse import Fuse

import qcompiler as qc
from qcompiler.errors import PipelineError
from qcompiler.graph import Graph
from qcompiler.pass_manager import PassManager
from qcompiler.testing import assert_equivalent, graphs, pass_property, rule_names

PIPELINE = "canonicalize,fold-bn,fuse"
FUSE_BUILDERS = [
    "conv", "conv_transpose", "gemm", "matmul", "bias_add", "conv_mul_const", "add_const",
    "mul_const", "sub_const", "div_const", "residual_add", "relu", "clip", "leaky_relu",
    "hard_sigmoid", "hard_swish", "hard_swish_decomposed", "hard_sigmoid_decomposed",
    "multi_use", "conv_bn", "bn", "flatten", "global_average_pool", "producer_chain",
]
fuse_graphs = graphs(builders=FUSE_BUILDERS, min_steps=3, max_steps=10)
SIXTHS = [1 / 6, 0.16666667, 0.1666666716337204]  # as torch, as printed, as paddle writes it


# Folding and fusing round differently from the separate ops: over 600 drawn graphs (fuse on
# the builders, on producer chains and on one chain per post-op, and the whole pipeline) the
# worst difference was 2.8e-7 * max(1, max|ref|); the bound is 7 times that.
TOL = 2e-6


def assert_close(before: Graph, after: Graph, feeds: dict[str, np.ndarray]) -> None:
    """Same outputs: ``max|a - b| <= TOL * max(1, max|ref|)`` for every output."""
    assert_equivalent(before, after, feeds, rtol=TOL, atol=TOL)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.normal(0.0, 1.0, v.shape).astype(v.dtype.np) for v in graph.inputs}


def fused(graph: Graph, pipeline: str = "fuse") -> qc.PassResult:
    return PassManager(pipeline).run(graph)


def fuse_stats(stats: dict[str, int]) -> dict[str, int]:
    """The ``fuse`` entries of a pipeline's stats, without the pass prefix."""
    return {k.removeprefix("fuse: "): v for k, v in stats.items() if k.startswith("fuse: ")}


# -- golden IR text ------------------------------------------------------------------------------


@golden.parametrize("fuse")
def test_golden(path):
    golden.check(path)


# -- a local strategy: one producer and a chain of what fuse folds into it ----------------------
#
# qcompiler.testing.graphs() rarely puts a Gemm with C and beta != 1, a grouped ConvTranspose or
# x * HardSigmoid(x) right before the ops fuse looks for; these graphs always do.

POST_OPS = ["add", "sub", "mul", "div", "residual", "relu", "relu6", "clip_min", "clip_max",
            "leaky_relu", "hard_sigmoid", "hard_swish", "hswish_div", "hswish_mul_sixth",
            "hswish_clip_div", "hswish_clip_mul", "hswish_sixth_x", "hswish_hardsigmoid",
            "hsigmoid_mul",
            "hsigmoid_div", "hsigmoid_relu6"]


class _Chain:
    def __init__(self, draw, rng: np.random.Generator):
        self.draw, self.rng, self.g = draw, rng, Graph("chain")

    def const(self, data, name: str = "c"):
        return self.g.add_constant(np.asarray(data, np.float32), name)

    def node(self, op: str, inputs, attrs=None, name: str = "n"):
        return self.g.add_node(op, inputs, attrs, name=self.g.fresh_node_name(name)).outputs[0]

    def binary(self, op: str, a, b, name: str):
        """``op(a, b)``, commutative ops in either operand order."""
        if op in ("Add", "Mul") and self.draw(st.booleans()):
            a, b = b, a
        return self.node(op, [a, b], name=name)

    def weight(self, *shape: int):
        return self.const(self.rng.normal(0, 1 / np.sqrt(max(1, np.prod(shape[1:]))), shape), "w")

    def relu6(self, x, name: str):
        return self.node("Clip", [self.binary("Add", x, self.const(3.0), f"{name}.add"),
                                  self.const(0.0), self.const(6.0)], name=f"{name}.clip")

    def sixth(self, x, name: str):
        if self.draw(st.booleans()):
            return self.node("Div", [x, self.const(6.0)], name=f"{name}.div")
        return self.binary("Mul", x, self.const(self.draw(st.sampled_from(SIXTHS))), name)


def _producer(c: _Chain, kind: str):
    draw = c.draw
    if kind in ("conv", "conv_transpose"):
        group, cg, mg = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        size = draw(st.integers(k, 5))
        x = c.g.add_input(c.g.fresh_name("x"), qc.TensorType(
            "f32", (draw(st.integers(1, 2)), group * cg, size, size)))
        if kind == "conv":
            inputs = [x, c.weight(group * mg, cg, k, k)]
        else:
            inputs = [x, c.weight(group * cg, mg, k, k)]
        if draw(st.booleans()):
            inputs.append(c.const(c.rng.normal(0, 0.5, group * mg), "b"))
        attrs = {"group": group, "strides": (stride, stride), "pads": (k // 2,) * 4}
        op = "Conv" if kind == "conv" else "ConvTranspose"
        return c.node(op, inputs, attrs, name=kind)
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    if kind == "matmul":
        batch = draw(st.sampled_from([(), (2,)]))
        x = c.g.add_input(c.g.fresh_name("x"), qc.TensorType("f32", (*batch, m, k)))
        w_batch = draw(st.sampled_from([(), (1,), batch])) if batch else ()
        return c.node("MatMul", [x, c.weight(*w_batch, k, n)], name="matmul")
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    x = c.g.add_input(c.g.fresh_name("x"), qc.TensorType("f32", (k, m) if trans_a else (m, k)))
    inputs = [x, c.weight(n, k) if trans_b else c.weight(k, n)]
    c_shape = draw(st.sampled_from([None, (), (n,), (1, n), (m, n), (m, 1)]))
    if c_shape is not None:
        inputs.append(c.const(c.rng.normal(0, 0.5, c_shape), "c"))
    attrs = {"transA": int(trans_a), "transB": int(trans_b),
             "alpha": draw(st.sampled_from([1.0, 0.5, 2.0])),
             "beta": draw(st.sampled_from([1.0, 0.5, -1.0]))}
    return c.node("Gemm", inputs, attrs, name="gemm")


def _post_op(c: _Chain, y, op: str):
    draw, rank = c.draw, len(y.shape)
    channels = y.shape[1] if rank == 4 else y.shape[-1]  # convs are 2-D here, products not
    if op in ("add", "sub", "mul", "div"):
        if rank == 4:
            shape = draw(st.sampled_from([(), (1,), (channels, 1, 1), (1, channels, 1, 1)]))
        else:
            shape = draw(st.sampled_from([(), (1,), (channels,), (1,) * (rank - 1) + (channels,)]))
        data = c.rng.normal(0, 1, shape) if op in ("add", "sub") else \
            c.rng.uniform(0.5, 2, shape) * c.rng.choice([-1, 1], shape)
        const = c.const(data, op)
        if op in ("sub", "div"):
            return c.node(op.capitalize(), [y, const], name=op)
        return c.binary(op.capitalize(), y, const, op)
    if op == "residual":
        z = c.g.value("z") if c.g.has_value("z") else None
        if z is None or z.shape != y.shape:
            z = c.g.add_input(c.g.fresh_name("z"), y.type)
        return c.binary("Add", y, z, "residual")
    if op == "relu6":
        return c.node("Clip", [y, c.const(0.0), c.const(6.0)], name="relu6")
    if op == "clip_min":
        return c.node("Clip", [y, c.const(draw(st.sampled_from([-1.0, 0.0, 0.5])))], name="clip")
    if op == "clip_max":
        return c.node("Clip", [y, None, c.const(1.5)], name="clip")
    if op == "leaky_relu":
        return c.node("LeakyRelu", [y], {"alpha": draw(st.sampled_from([0.01, 0.2, -0.5]))},
                      name="leaky")
    if op == "hard_sigmoid":
        return c.node("HardSigmoid", [y], {"alpha": draw(st.sampled_from([0.2, 1 / 6])),
                                           "beta": 0.5}, name="hardsigmoid")
    if op in ("relu", "hard_swish"):
        return c.node({"relu": "Relu", "hard_swish": "HardSwish"}[op], [y], name=op)
    if op == "hswish_div" or op == "hswish_mul_sixth":
        return c.sixth(c.binary("Mul", y, c.relu6(y, "hswish"), "hswish.mul"), "hswish")
    if op in ("hswish_clip_div", "hswish_clip_mul"):
        return c.binary("Mul", y, c.sixth(c.relu6(y, "hswish"), "hswish"), "hswish.mul")
    if op == "hswish_sixth_x":  # (x / 6) * relu6(x + 3)
        return c.binary("Mul", c.sixth(y, "hswish"), c.relu6(y, "hswish"), "hswish.mul")
    if op == "hswish_hardsigmoid":
        alpha = draw(st.sampled_from([*SIXTHS, 0.2]))
        gate = c.node("HardSigmoid", [y], {"alpha": alpha, "beta": 0.5}, name="hardsigmoid")
        return c.binary("Mul", y, gate, "hswish.mul")
    if op == "hsigmoid_relu6":
        return c.sixth(c.relu6(y, "hsigmoid"), "hsigmoid")
    if op == "hsigmoid_mul":
        alpha = c.const(draw(st.sampled_from([*SIXTHS, 0.2, -0.5])))
        scaled = c.binary("Mul", y, alpha, "hsigmoid.mul")
    else:
        scaled = c.node("Div", [y, c.const(draw(st.sampled_from([6.0, 5.0, -2.0])))],
                        name="hsigmoid.div")
    shifted = c.binary("Add", scaled, c.const(0.5), "hsigmoid.add")
    return c.node("Clip", [shifted, c.const(0.0), c.const(1.0)], name="hsigmoid")


@st.composite
def producer_chains(draw) -> Graph:
    """A Conv, ConvTranspose, Gemm or MatMul followed by 1-4 ops fuse may fold into it (bias
    and scale constants, a residual Add, activations, decomposed HardSwish and HardSigmoid),
    sometimes with an intermediate value kept as a graph output."""
    c = _Chain(draw, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    values = [_producer(c, draw(st.sampled_from(["conv", "conv_transpose", "gemm", "matmul"])))]
    for op in draw(st.lists(st.sampled_from(POST_OPS), min_size=1, max_size=4)):
        values.append(_post_op(c, values[-1], op))
    outputs = [values[-1]]
    if len(values) > 1 and draw(st.booleans()):
        outputs.append(values[draw(st.integers(0, len(values) - 2))])
    c.g.set_outputs(outputs)
    c.g.verify()
    return c.g


@st.composite
def every_op_chains(draw) -> Graph:
    """One graph holding a producer chain for every op of ``POST_OPS``, each starting with that
    op and going on with 0-2 drawn ones: every rule of fuse has a candidate in every example,
    so requiring each rule to fire does not depend on luck."""
    c = _Chain(draw, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    ends = []
    for first in POST_OPS:
        kinds = ["conv", "conv_transpose", "gemm", "matmul"]
        y = _post_op(c, _producer(c, draw(st.sampled_from(kinds))), first)
        for op in draw(st.lists(st.sampled_from(POST_OPS), max_size=2)):
            y = _post_op(c, y, op)
        ends.append(y)
    c.g.set_outputs(ends)
    c.g.verify()
    return c.g


# -- properties ----------------------------------------------------------------------------------


def keeps_outputs(pipeline: str, strategy=fuse_graphs, must_fire=True):
    return pass_property(pipeline, strategy, rtol=TOL, atol=TOL, must_fire=must_fire)


test_fuse_keeps_outputs = keeps_outputs("fuse")
# every rule of fuse (read from the pass: a new rule is required at once) fires at least once
test_fuse_keeps_outputs_and_fires_every_rule = keeps_outputs(
    "fuse", every_op_chains(), must_fire=rule_names("fuse"))
test_pipeline_keeps_outputs = keeps_outputs(PIPELINE)
test_fuse_keeps_outputs_of_producer_chains = keeps_outputs("fuse", producer_chains())


@given(st.one_of(fuse_graphs, producer_chains()))
def test_fuse_is_idempotent(graph):
    once = fused(graph).graph
    once.verify()
    again = fused(once)
    assert not again.changed, f"the second fuse fired {again.stats} on\n{once}"
    assert again.graph == once


# -- exporter-style models -----------------------------------------------------------------------


def run_model(model, pipeline: str = PIPELINE, seed: int = 0) -> tuple[Graph, qc.PassResult]:
    """Import, run ``pipeline`` and check the outputs against the imported graph."""
    graph = qc.from_onnx(model)
    result = PassManager(pipeline).run(graph)
    result.graph.verify()
    assert_close(graph, result.graph, random_feeds(graph, seed))
    return graph, result


@pytest.mark.parametrize("hardsigmoid", ["op", "decomposed"])
@pytest.mark.parametrize("batch", [1, 3])
def test_mobilenetv3_block(hardsigmoid, batch):
    """paddle2onnx's MobileNetV3 block (unfused BN, decomposed HardSwish, squeeze-excite with a
    HardSigmoid op or paddle's Clip(x * 0.1666666716337204 + 0.5, 0, 1), residual) becomes
    five Convs carrying their activations, the pool and the excite Mul."""
    model = zoo.mobilenetv3_block(batch=batch, hardsigmoid=hardsigmoid)
    _, result = run_model(model, seed=batch)
    g = result.graph
    assert g.op_counts() == {"Conv": 5, "GlobalAveragePool": 1, "Mul": 1}
    acts = {n.name: (n.attrs.get("activation", ""), tuple(n.attrs.get("activation_params", ())))
            for n in g.find_nodes("Conv")}
    sixth = float(np.float32(1 / 6))
    assert acts == {
        "expand.conv": ("HardSwish", ()),
        "depthwise.conv": ("HardSwish", ()),
        "se.reduce": ("Relu", ()),
        "se.expand": ("HardSigmoid", (sixth, 0.5)),
        "project.conv": ("", ()),
    }
    project = g.node("project.conv")
    assert len(project.inputs) == 4 and project.inputs[3] is g.inputs[0]  # Z = the block input
    assert [v.name for v in g.outputs] == ["y"]
    expected = {"hardswish-div-product": 2, "residual-add": 1, "fuse-hardswish": 2, "fuse-relu": 1,
                "fuse-hardsigmoid": 1}
    if hardsigmoid == "decomposed":
        expected["hardsigmoid-form"] = 1
    assert fuse_stats(result.stats) == expected


GONE = ("BatchNormalization", "Relu", "Clip", "HardSigmoid", "HardSwish")

MODELS = {
    "paddle2onnx_style": (zoo.paddle2onnx_style, {
        "Conv": 3, "GlobalAveragePool": 2, "Mul": 1, "Flatten": 1, "MatMul": 1}),
    "tf2onnx_style": (zoo.tf2onnx_style, {
        "Transpose": 2, "Conv": 3, "ReduceMean": 1, "MatMul": 1, "Softmax": 1}),
    "resnet_style": (zoo.resnet_style, {
        "Conv": 20, "MaxPool": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}),
    "mobilenetv2_block": (zoo.mobilenetv2_block, {"Conv": 3}),
    "resnet_bottleneck": (zoo.resnet_bottleneck, {"Conv": 3}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_exporter_models(name):
    """The pipeline leaves no BatchNormalization, activation or bias Add in these models."""
    build, counts = MODELS[name]
    _, result = run_model(build(batch=2))
    after = result.graph
    assert after.op_counts() == counts
    assert not any(after.find_nodes(op) for op in GONE)
    assert not [n for n in after.find_nodes("Add") if any(v.is_constant for v in n.inputs)]


def test_stats_tf2onnx_style():
    """tf2onnx writes each conv bias and the Dense bias as a separate Add."""
    before, result = run_model(zoo.tf2onnx_style())
    assert fuse_stats(result.stats) == {"bias-add": 4, "fuse-clip": 2, "fuse-relu": 1}
    dense = result.graph.node("model/dense/MatMul")  # the MatMul took the Add's constant as is
    np.testing.assert_array_equal(dense.inputs[2].data,
                                  before.value("model/dense/BiasAdd/ReadVariableOp").data)


def test_stats_paddle2onnx_style():
    _, result = run_model(zoo.paddle2onnx_style())
    assert fuse_stats(result.stats) == {"hardswish-div-product": 1, "bias-add": 1,
                                        "fuse-hardswish": 1, "fuse-relu": 1,
                                        "fuse-hardsigmoid": 1}
    gate = result.graph.node("conv2d_2")
    assert gate.attrs["activation"] == "HardSigmoid"
    assert gate.attrs["activation_params"] == (float(np.float32(0.2)), 0.5)


def test_stats_resnet_style():
    _, result = run_model(zoo.resnet_style())
    assert fuse_stats(result.stats) == {"residual-add": 8, "fuse-relu": 17}
    assert result.stats["fold-bn: fold-into-producer"] == 20


# -- options -------------------------------------------------------------------------------------

# conv, Mul(scale), Add(bias), decomposed HardSwish, conv2 + residual, Relu, conv3, ReLU6
OPTIONS_GRAPH = """
graph g(%x: f32[1,2,2,2]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %s: f32[2,1,1] = const dense<[2.0, 0.5]>
  %b: f32[2,1,1] = const dense<[0.5, -1.5]>
  %three: f32[] = const dense<[3.0]>
  %zero: f32[] = const dense<[0.0]>
  %six: f32[] = const dense<[6.0]>
  %y: f32[1,2,2,2] = Conv(%x, %w) @conv
  %m: f32[1,2,2,2] = Mul(%y, %s) @scale
  %a: f32[1,2,2,2] = Add(%m, %b) @bias
  %a3: f32[1,2,2,2] = Add(%a, %three) @hswish.add
  %c: f32[1,2,2,2] = Clip(%a3, %zero, %six) @hswish.clip
  %p: f32[1,2,2,2] = Mul(%a, %c) @hswish.mul
  %h: f32[1,2,2,2] = Div(%p, %six) @hswish.div
  %y2: f32[1,2,2,2] = Conv(%h, %w) @conv2
  %r: f32[1,2,2,2] = Add(%y2, %h) @residual
  %o: f32[1,2,2,2] = Relu(%r) @relu
  %y3: f32[1,2,2,2] = Conv(%o, %w) @conv3
  %out: f32[1,2,2,2] = Clip(%y3, %zero, %six) @relu6
  return %out
}
"""
ALL_RULES = {"scale-mul": 1, "bias-add": 1, "hardswish-div-product": 1, "residual-add": 1,
             "fuse-hardswish": 1, "fuse-relu": 1, "fuse-clip": 1}


@pytest.mark.parametrize("pipeline, fired, counts", [
    ("fuse", ALL_RULES, {"Conv": 3}),
    ("fuse{activations=relu,clip}",
     {k: v for k, v in ALL_RULES.items() if k != "fuse-hardswish"},
     {"Conv": 3, "HardSwish": 1}),
    ("fuse{activations=relu}",
     {"scale-mul": 1, "bias-add": 1, "hardswish-div-product": 1, "residual-add": 1, "fuse-relu": 1},
     {"Conv": 3, "HardSwish": 1, "Clip": 1}),
    ("fuse{residual=false}",
     {k: v for k, v in ALL_RULES.items() if k not in ("residual-add", "fuse-relu")},
     {"Conv": 3, "Add": 1, "Relu": 1}),
    ("fuse{decomposed=false bias=false scale=false}",
     {"residual-add": 1, "fuse-relu": 1, "fuse-clip": 1},
     {"Conv": 3, "Mul": 2, "Add": 2, "Clip": 1, "Div": 1}),
    ("fuse{activations=}",
     {"scale-mul": 1, "bias-add": 1, "hardswish-div-product": 1, "residual-add": 1},
     {"Conv": 3, "HardSwish": 1, "Relu": 1, "Clip": 1}),
])
def test_options_change_what_fires(pipeline, fired, counts):
    graph = qc.parse(OPTIONS_GRAPH)
    result = fused(graph, pipeline)
    assert fuse_stats(result.stats) == fired
    assert result.graph.op_counts() == counts
    assert_close(graph, result.graph, random_feeds(graph))


def test_option_spelling():
    """Activation names are case- and underscore-insensitive and print back normalized."""
    (p,) = PassManager("fuse{activations=Relu,hard_swish,LeakyRelu}").passes
    assert p.activations == ("relu", "hardswish", "leakyrelu")
    assert str(p) == "fuse{activations=relu,hardswish,leakyrelu}"
    assert str(PassManager("fuse{residual=false}").passes[0]) == "fuse{residual=false}"


def test_unknown_activation_is_a_pipeline_error():
    with pytest.raises(PipelineError, match="gelu") as info:
        PassManager("fuse{activations=relu,gelu}")
    assert "hardswish" in str(info.value)  # the message lists what fuse knows


# -- explanations --------------------------------------------------------------------------------

TWO_READERS = """
graph g(%x: f32[1,2,2,2]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %y: f32[1,2,2,2] = Conv(%x, %w) @conv
  %r: f32[1,2,2,2] = Relu(%y) @relu
  %s: f32[1,2,2,2] = Sigmoid(%y) @sigmoid
  %t: f32[1,2,2,2] = Relu(%s) @relu2
  return %r, %t
}
"""
READERS_REASON = ("fuse-relu: Relu node 'relu' -> %r: %y (output of Conv 'conv') has 2 readers "
                  "(Relu 'relu', Sigmoid 'sigmoid'); the rewrite needs it to have one")


def test_explain_in_the_pass_manager():
    graph = qc.parse(TWO_READERS)
    pm = PassManager("fuse", explain=True)
    result = pm.run(graph)
    assert not result.changed
    assert pm.explanations == {"fuse": [READERS_REASON]}


def test_explain_verbose_adds_structural_mismatches():
    graph = qc.parse(TWO_READERS)
    before = graph.copy()
    assert Fuse().explain(graph) == [READERS_REASON]
    verbose = Fuse().explain(graph, verbose=True)
    assert READERS_REASON in verbose
    assert any(line.startswith("fuse-relu: Relu node 'relu2'") and
               "comes from Sigmoid 'sigmoid', not Conv or ConvTranspose or Gemm or MatMul" in line
               for line in verbose), verbose
    assert graph == before  # explain works on a copy


def test_explain_names_the_refused_constant():
    graph = qc.parse(golden.load(golden.ROOT / "fuse" / "refuse_bias_varies_spatially.ir").source)
    assert Fuse().explain(graph) == [
        "bias-add: Add node 'add' -> %z: %b [1, 1, 2, 2] varies along axis 2 of %y [1, 2, 2, 2], "
        "not only along its channels",
        "residual-add: Add node 'add' -> %z: the other operand %b is f32[1,1,2,2], the Add "
        "would broadcast it against %y f32[1,2,2,2]",
    ]


# -- the residual's same-shape guard ---------------------------------------------------------------


@pytest.mark.parametrize("conv_batch, other_shape", [
    (1, ("N", 2, 2, 2)),  # the Add broadcasts the conv's output over the other's batch
    ("N", (1, 2, 2, 2)),  # the Add broadcasts the other operand over the conv's batch
    (1, (2, 1, 1)),  # a per-channel tensor, rank 3
    (1, (1, 2, 1, 1)),  # a per-channel tensor, rank 4
])
def test_a_broadcasting_residual_add_is_not_fused(conv_batch, other_shape):
    """Z is added to the conv's output without broadcasting, so the Add's other operand must
    have exactly the conv's output shape; a broadcasting Add stays, with the reason."""
    g = Graph("g")
    x = g.add_input("x", qc.TensorType("f32", (conv_batch, 2, 2, 2)))
    s = g.add_input("s", qc.TensorType("f32", other_shape))
    w = g.add_constant(np.arange(1.0, 5.0, dtype=np.float32).reshape(2, 2, 1, 1), "w")
    y = g.add_node("Conv", [x, w], name="conv").outputs[0]
    g.set_outputs([g.add_node("Add", [y, s], name="add").outputs[0]])
    result = fused(g)
    assert "fuse: residual-add" not in result.stats
    assert result.graph.op_counts() == {"Conv": 1, "Add": 1}
    assert any(note.startswith("residual-add: ") and "would broadcast" in note
               for note in Fuse().explain(g)), Fuse().explain(g)
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.normal(size=[3 if d == "N" else d for d in v.shape]).astype(np.float32)
             for v in g.inputs}
    assert_equivalent(g, result.graph, feeds, rtol=0, atol=0)


# -- constants with zeros: no numpy warning, a fold or a refusal ----------------------------------

ZERO_SCALES = """
graph g(%x: f32[1,2,2,2]) {
  %w: f32[2,2,1,1] = const dense<[1.0, 2.0, 3.0, 4.0]>
  %c: f32[2,1,1] = const dense<[2.0, 0.0]>
  %y: f32[1,2,2,2] = Conv(%x, %w) @conv
  %z: f32[1,2,2,2] = OP(%y, %c) @scale
  return %z
}
"""


@pytest.mark.parametrize("op, fires", [("Mul", True), ("Div", False)])
def test_a_zero_in_a_scale_raises_no_numpy_warning(op, fires):
    """Paddle exports multiply and divide conv outputs by per-channel constants that contain 0:
    a Mul by 0 folds (that channel's weights become 0), a Div by 0 is refused; neither may
    compute 1/0 on the way."""
    graph = qc.parse(ZERO_SCALES.replace("OP", op))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        result = fused(graph)
        notes = Fuse().explain(graph)
    assert fuse_stats(result.stats) == ({"scale-mul": 1} if fires else {})
    if not fires:
        assert notes == ["scale-div: Div node 'scale' -> %z: %c has a zero: dividing by it is "
                         "not a scale"]
        with np.errstate(divide="ignore", invalid="ignore"):
            assert_equivalent(graph, result.graph, random_feeds(graph))
    else:
        # scales of 2 and 0 are exact in float: the folded conv gives the same numbers
        assert_equivalent(graph, result.graph, random_feeds(graph), rtol=0, atol=0)


def test_a_divisor_whose_reciprocal_overflows_is_refused():
    graph = qc.parse(ZERO_SCALES.replace("OP", "Div").replace("0.0]", "1e-45]"))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        assert not fused(graph).changed
        assert Fuse().explain(graph) == [
            "scale-div: Div node 'scale' -> %z: %c has an element whose reciprocal overflows "
            "float32: dividing by it is not a scale"]
