"""fold-bn: golden IR-text cases (tests/golden/fold-bn), hypothesis-drawn graphs that must compute
the same before and after, the demo model, explanations and "fired N times" on the zoo."""

from __future__ import annotations

from importlib import resources

import golden
import numpy as np
import pytest
import zoo
from hypothesis import given
from hypothesis import strategies as st
from qcompiler.passes.fold_bn import FoldBatchNorm

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.pass_manager import PassManager
from qcompiler.testing import graphs, pass_property, rule_names
from qcompiler.types import TensorType

EXAMPLES = resources.files("qcompiler.examples")


@golden.parametrize("fold-bn")
def test_golden(path):
    golden.check(path)


# -- property tests -------------------------------------------------------------------------------

FOLDABLE = ["conv_bn", "conv_transpose_bn", "gemm_bn", "matmul_bn", "bn", "multi_use", "relu"]

# every rule of fold-bn (read from the pass: a new rule is required at once) fires at least once
test_fold_bn_keeps_the_numbers = pass_property("fold-bn", graphs(builders=FOLDABLE),
                                               must_fire=rule_names("fold-bn"))

# a Conv/Gemm/MatMul and a BN as separate steps, so a second reader can come between them
test_fold_bn_keeps_the_numbers_with_shared_producers = pass_property(
    "fold-bn", graphs(builders=["conv", "conv_transpose", "gemm", "matmul", "bn", "multi_use"]))

test_canonicalize_then_fold_bn_keeps_the_numbers = pass_property(
    "canonicalize,fold-bn", graphs(builders=FOLDABLE + ["identity", "dropout", "duplicate"]))


@st.composite
def producer_bn(draw) -> Graph:
    """What qcompiler.testing's builders leave out: ConvTranspose with 1 < group < channels,
    Gemm with beta != 1 also without C, and with a full [batch, M] C; then a BN on the
    producer, sometimes with a second reader of the producer's output."""
    g = Graph("producer_bn")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["ConvTranspose", "Gemm"]))
    attrs: dict = {}
    if kind == "ConvTranspose":
        group = draw(st.sampled_from([2, 3]))
        cin, per_group = group * draw(st.integers(1, 2)), draw(st.integers(1, 3))
        x = g.add_input("x", TensorType("f32", (draw(st.integers(1, 2)), cin, 3, 3)))
        attrs = {"group": group, "strides": (draw(st.integers(1, 2)),) * 2}
        w = rng.normal(0, 0.5, (cin, per_group, 2, 2))
        c = None if draw(st.booleans()) else rng.normal(0, 0.5, group * per_group)
    else:
        batch, k, m = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
        x = g.add_input("x", TensorType("f32", (batch, k)))
        trans_b = draw(st.booleans())
        attrs = {"transB": int(trans_b), "alpha": draw(st.sampled_from([1.0, 0.5])),
                 "beta": draw(st.sampled_from([1.0, 0.5, 2.0]))}
        w = rng.normal(0, 0.5, (m, k) if trans_b else (k, m))
        c_shape = draw(st.sampled_from([None, (), (m,), (1, m), (batch, m)]))
        c = None if c_shape is None else rng.normal(0, 0.5, c_shape)
    operands = [x, g.add_constant(w.astype(np.float32), "w")]
    if c is not None:
        operands.append(g.add_constant(np.asarray(c, np.float32), "c"))
    y = g.add_node(kind, operands, attrs, name="producer").outputs[0]
    channels = y.shape[1]
    params = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.5, channels),
              rng.normal(0, 0.5, channels), rng.uniform(0.1, 2.0, channels)]
    bn = g.add_node("BatchNormalization",
                    [y, *(g.add_constant(p.astype(np.float32), n)
                          for p, n in zip(params, ["gamma", "beta", "mean", "var"]))],
                    {"epsilon": draw(st.sampled_from([1e-5, 1e-3]))}, name="bn").outputs[0]
    outputs = [bn]
    if draw(st.booleans()):
        outputs.append(g.add_node("Relu", [y], name="side").outputs[0])
    g.set_outputs(outputs)
    return g


@given(producer_bn(), st.integers(0, 2**32 - 1))
def test_fold_bn_keeps_the_numbers_of_grouped_conv_transpose_and_gemm_beta(g, seed):
    result = PassManager("fold-bn").run(g)
    folded = len(g.outputs) == 1
    assert result.stats == {f"fold-bn: {'fold-into-producer' if folded else 'scale-shift'}": 1}
    golden.assert_same_outputs(g, result.graph, seed)


# -- the demo model -------------------------------------------------------------------------------


def test_digits_convnet_folds_every_batchnorm_and_keeps_its_outputs():
    g = qc.load_onnx(str(EXAMPLES / "digits_convnet.onnx"))
    assert g.op_counts()["BatchNormalization"] == 3
    result = PassManager("canonicalize,fold-bn").run(g)
    assert "BatchNormalization" not in result.graph.op_counts()
    assert result.stats["fold-bn: fold-into-producer"] == 3
    with np.load(str(EXAMPLES / "digits.npz")) as data:
        images = data["test_x"]
    ref = qc.compile(g, backend="numpy").run({"image": images})["logits"]
    out = qc.compile(result.graph, backend="numpy").run({"image": images})["logits"]
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


# -- explanations ---------------------------------------------------------------------------------


def two_readers() -> Graph:
    return qc.parse(golden.load(golden.ROOT / "fold-bn" / "conv_two_readers.ir").source)


REASON = ("fold-into-producer: BatchNormalization node 'bn' -> %z: %y (output of Conv 'conv') "
          "has 2 readers (Relu 'side', BatchNormalization 'bn'); the rewrite needs it to have one")


def test_explain_names_the_second_reader():
    g = two_readers()
    assert FoldBatchNorm().explain(g) == [REASON]
    assert g.op_counts()["BatchNormalization"] == 1  # explain works on a copy
    pm = PassManager("fold-bn", explain=True)
    result = pm.run(g)
    assert pm.explanations == {"fold-bn": [REASON]}
    assert result.stats == {"fold-bn: scale-shift": 1}
    assert result.graph.op_counts() == {"Conv": 1, "Relu": 1, "Mul": 1, "Add": 1}


def test_explain_names_a_graph_output_reader_and_the_channel_axis():
    g = qc.parse(golden.load(golden.ROOT / "fold-bn" / "conv.ir").source.replace(
        "return %z", "return %z, %y"))
    (reason,) = FoldBatchNorm().explain(g)
    assert "%y (output of Conv 'conv') has 2 readers (BatchNormalization 'bn', the graph " \
           "outputs)" in reason
    g = qc.parse(golden.load(golden.ROOT / "fold-bn" / "matmul_rank3_not_folded.ir").source)
    assert FoldBatchNorm().explain(g) == [
        "fold-into-producer: BatchNormalization node 'bn' -> %z: BatchNormalization 'bn' "
        "normalizes axis 1 of %y [2, 3, 2], but MatMul 'matmul' has its output channels on "
        "axis 2"]


def test_explain_is_quiet_about_bns_with_no_producer_to_fold_into():
    g = qc.parse(golden.load(golden.ROOT / "fold-bn" / "standalone_after_relu.ir").source)
    assert FoldBatchNorm().explain(g) == []
    assert any("comes from Relu 'relu', not Conv or ConvTranspose or Gemm or MatMul" in r
               for r in FoldBatchNorm().explain(g, verbose=True))


def test_explain_names_non_constant_weights():
    g = qc.parse("""graph g(%x: f32[2,3], %w: f32[3,2]) {
  %gamma: f32[2] = const dense<[1.0, 1.0]>
  %beta: f32[2] = const dense<[0.0, 0.0]>
  %y: f32[2,2] = MatMul(%x, %w) @matmul
  %z: f32[2,2] = BatchNormalization(%y, %gamma, %beta, %beta, %gamma) @bn
  return %z
}
""")
    assert FoldBatchNorm().explain(g) == [
        "fold-into-producer: BatchNormalization node 'bn' -> %z: the weights %w of MatMul "
        "'matmul' are not a constant"]


# -- fired N times on the zoo -------------------------------------------------------------------


@pytest.mark.parametrize("model", [
    zoo.resnet_bottleneck, zoo.mobilenetv2_block, zoo.mobilenetv3_block, zoo.paddle2onnx_style,
    lambda: zoo.resnet_style(depths=(1, 1), image_size=16),
], ids=["resnet_bottleneck", "mobilenetv2_block", "mobilenetv3_block", "paddle2onnx_style",
        "resnet_style"])
def test_every_batchnorm_of_the_zoo_folds(model):
    g = qc.from_onnx(model())
    count = g.op_counts()["BatchNormalization"]
    assert count >= 1
    result = PassManager("canonicalize,fold-bn").run(g)
    assert result.stats["fold-bn: fold-into-producer"] == count
    assert "fold-bn: scale-shift" not in result.stats
    assert "BatchNormalization" not in result.graph.op_counts()
    assert len(result.graph.nodes) == len(g.nodes) - count
    golden.assert_same_outputs(g, result.graph)


def test_fired_n_times_on_resnet_bottleneck_and_mobilenetv2():
    result = PassManager("fold-bn").run(qc.from_onnx(zoo.resnet_bottleneck()))
    assert result.stats == {"fold-bn: fold-into-producer": 3}
    result = PassManager("fold-bn").run(qc.from_onnx(zoo.mobilenetv2_block()))
    assert result.stats == {"fold-bn: fold-into-producer": 3}
    names = [n.name for n in result.graph.nodes if n.op == "Conv"]
    assert names == ["expand.conv", "depthwise.conv", "project.conv"]
