"""The ``equalize`` pass: float outputs kept on drawn graphs (counting that it fired), ranges
evened out on the depthwise-separable model, and each refusal with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qcompiler.passes.equalize import Equalize, check, find_pair, scales

import qcompiler as qc
from qcompiler.graph import Value
from qcompiler.pass_manager import PassManager
from qcompiler.testing import (
    BUILDERS,
    GraphKit,
    assert_equivalent,
    graphs,
    pass_property,
    register_builder,
)

DATA = Path(__file__).resolve().parent / "data" / "models"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Equalization rescales weights in float64 and rounds them to float32 once, so the outputs move
# by float rounding only. Over 109 drawn graphs it changed (the strategies of the two properties
# below) the worst difference was 2.5e-7 * max(1, max|ref|), on the dwsep model's logits
# 4.6e-7; the bound is 4 times that.
TOL = 2e-6


def fused(strategy):
    """Graphs drawn by ``strategy`` after fold-bn and fuse, the graphs equalize is meant for."""
    return strategy.map(lambda g: PassManager("fold-bn,fuse").run(g).graph)


CONV_CHAINS = fused(graphs(builders=["conv_bn", "conv", "relu", "leaky_relu", "clip",
                                     "max_pool", "average_pool"], min_steps=2, max_steps=6))


@register_builder("conv_to_linear", ranks=(4,), accepts=lambda kit, x: BUILDERS["conv"].applies(
    kit, x))
def _conv_to_linear(kit: GraphKit, x: Value) -> Value:
    """Conv, maybe Relu and MaxPool, then GlobalAveragePool and/or a flatten (Flatten, Reshape
    to [N, -1]), then Gemm or MatMul: the classifier heads equalize reaches through."""
    y = BUILDERS["conv"].build(kit, x)
    for name in ("relu", "max_pool"):
        if kit.coin() and BUILDERS[name].applies(kit, y):
            y = BUILDERS[name].build(kit, y)
    if kit.coin():
        y = kit.node("GlobalAveragePool", [y], name="gap")
    if kit.coin():
        y = kit.node("Flatten", [y], name="flatten")
    else:
        y = kit.node("Reshape", [y, kit.ints([0, -1], "shape")], name="reshape")
    return BUILDERS[kit.choice(["gemm", "matmul"])].build(kit, y)


CONV_TO_LINEAR = fused(graphs(builders=["conv_to_linear", "conv", "relu"], max_steps=3))

test_equalize_keeps_conv_chains = pass_property(
    "equalize", CONV_CHAINS, rtol=TOL, atol=TOL, must_fire=["equalize: conv-conv"])
test_equalize_keeps_conv_to_linear = pass_property(
    "equalize", CONV_TO_LINEAR, rtol=TOL, atol=TOL, must_fire=["equalize: conv-gemm"])


# -- the depthwise-separable model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dwsep() -> qc.Graph:
    return qc.optimize(qc.load_onnx(DATA / "digits_dwsep.onnx"))


def range_ratios(graph: qc.Graph) -> dict[str, float]:
    """Per Conv: largest over smallest output-channel weight range (max |w|)."""
    out = {}
    for node in graph.find_nodes("Conv"):
        w = node.inputs[1].data
        r = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        out[node.name] = float(r.max() / r.min())
    return out


def test_dwsep_ranges_even_out_and_outputs_stay(dwsep):
    result = PassManager("equalize").run(dwsep)
    assert result.stats == {"equalize: conv-conv": 6, "equalize: conv-gemm": 1}
    before, after = range_ratios(dwsep), range_ratios(result.graph)
    depthwise = [n.name for n in dwsep.find_nodes("Conv") if n.attrs.get("group", 1) > 1]
    assert len(depthwise) == 3
    # measured: the depthwise convs' ratios go from 72, 357, 351 to 1.36, 1.46, 1.60, and no
    # conv of the model is above 1.6 afterwards (the stem 3.8 and pointwise 15, 6.1, 4.3 before)
    for name in depthwise:
        assert before[name] > 70 and after[name] < 1.7, (name, before, after)
    assert max(after.values()) < 1.7
    x = np.load(EXAMPLES / "digits.npz")["test_x"]
    assert_equivalent(dwsep, result.graph, {"image": x}, rtol=TOL, atol=TOL)


def test_one_pair_gets_equal_ranges_on_both_sides():
    g = chain("Relu")
    result = PassManager("equalize").run(g)
    a, b = result.graph.node("a"), result.graph.node("b")
    r1 = np.abs(a.inputs[1].data).reshape(4, -1).max(axis=1)
    r2 = np.abs(b.inputs[1].data).transpose(1, 0, 2, 3).reshape(4, -1).max(axis=1)
    # each side is one float64 product rounded to float32: at most 2 float32 steps apart
    # (measured: equal)
    np.testing.assert_allclose(r1, r2, rtol=2 * float(np.finfo(np.float32).eps))
    assert_equivalent(g, result.graph, feeds(g), rtol=TOL, atol=TOL)


def test_scales_formula_and_dead_channels():
    r1, r2 = np.array([4.0, 1.0, 0.0, 2.0]), np.array([1.0, 4.0, 3.0, 0.0])
    np.testing.assert_allclose(scales(r1, r2), [2.0, 0.5, 1.0, 1.0])


def test_grouped_second_layer_scales_the_right_input_channels():
    g = chain("Relu", second_group=2)
    result = PassManager("equalize").run(g)
    assert result.stats == {"equalize: conv-conv": 1}
    assert_equivalent(g, result.graph, feeds(g), rtol=TOL, atol=TOL)


# -- refusals -------------------------------------------------------------------------------------


def chain(activation: str, params: str = "", *, extra_reader: bool = False,
          second_group: int = 1) -> qc.Graph:
    """Conv 'a' (2 -> 4 channels, uneven ranges) with ``activation`` fused, then Conv 'b'."""
    rng = np.random.default_rng(0)
    wa = rng.normal(0, 1, (4, 2, 3, 3)) * np.array([8.0, 0.1, 1.0, 3.0])[:, None, None, None]
    wb = rng.normal(0, 1, (6, 4 // second_group, 1, 1))
    act = f'activation = "{activation}", ' if activation else ""
    act += f"activation_params = [{params}], " if params else ""
    text = f"""graph g(%x: f32[2,2,5,5]) {{
  %wa: f32[4,2,3,3] = const @wa
  %ba: f32[4] = const @ba
  %wb: f32[6,{4 // second_group},1,1] = const @wb
  %y: f32[2,4,5,5] = Conv(%x, %wa, %ba) {{{act}pads = [1, 1, 1, 1]}} @a
  %z: f32[2,6,5,5] = Conv(%y, %wb) {{group = {second_group}}} @b
  return %z{", %y" if extra_reader else ""}
}}"""
    return qc.parse(text, constants={"wa": wa.astype(np.float32), "wb": wb.astype(np.float32),
                                     "ba": rng.normal(0, 1, 4).astype(np.float32)})


def feeds(g: qc.Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {v.name: rng.normal(0, 1, v.shape).astype(np.float32) for v in g.inputs}


@pytest.mark.parametrize("activation, params", [("", ""), ("Relu", ""), ("LeakyRelu", "0.1"),
                                                ("Clip", "0.0, inf")])
def test_positive_homogeneous_activations_are_equalized(activation, params):
    g = chain(activation, params)
    assert check(g.node("a")) is None
    result = PassManager("equalize").run(g)
    assert result.stats == {"equalize: conv-conv": 1}
    assert_equivalent(g, result.graph, feeds(g), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("activation, params, reason", [
    ("Clip", "0.0, 6.0", "Clip(0, 6): its bounds would have to move with each channel's scale"),
    ("HardSwish", "", "HardSwish, which is not positive-homogeneous"),
    ("HardSigmoid", "0.2, 0.5", "HardSigmoid, which is not positive-homogeneous"),
])
def test_activations_that_do_not_commute_are_refused(activation, params, reason):
    g = chain(activation, params)
    assert reason in check(g.node("a"))
    result = PassManager("equalize").run(g)
    assert not result.changed and result.graph == g
    assert any(reason in note for note in Equalize().explain(g))


def test_a_second_reader_is_refused():
    g = chain("Relu", extra_reader=True)
    assert "is a graph output" in find_pair(g.node("a"))
    assert not PassManager("equalize").run(g).changed


def test_the_last_conv_is_explained():
    g = chain("Relu")
    assert "is a graph output" in check(g.node("b"))
    pm = PassManager("equalize", explain=True)
    pm.run(g)
    notes = pm.explanations["equalize"]
    assert len(notes) == 1 and "node 'b'" in notes[0] and "graph output" in notes[0]


def test_residual_and_non_constant_weights_are_refused():
    rng = np.random.default_rng(0)
    text = """graph g(%x: f32[1,2,4,4], %w: f32[2,2,1,1]) {
  %w2: f32[2,2,1,1] = const @w2
  %y: f32[1,2,4,4] = Conv(%x, %w2, none, %x) {activation = "Relu"} @res
  %z: f32[1,2,4,4] = Conv(%y, %w) @dyn
  %u: f32[1,2,4,4] = Conv(%z, %w2) @last
  return %u
}"""
    g = qc.parse(text, constants={"w2": rng.normal(0, 1, (2, 2, 1, 1)).astype(np.float32)})
    assert "adds a residual" in check(g.node("res"))
    assert "weights of Conv 'dyn' are not a constant" in check(g.node("dyn"))
    assert not PassManager("equalize").run(g).changed
