"""``qc.quantize`` and the ``quantize`` pass: the QDQ form per the numerics contract (what
``QuantConfig(lower=False)`` returns; integer lowering is in test_lower_int.py), the digits
model's accuracy, shared parameters, int32 biases (and raised weight scales where a bias would
overflow), exclusions and overrides, and the parameters onnxruntime's quantize_static chooses
from the same data as an oracle.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from hypothesis import given, settings
from hypothesis import strategies as st

import qcompiler as qc
from qcompiler import qdq, quant_math
from qcompiler.demo import ort_quantize_static
from qcompiler.errors import ConfigError, QuantizationError
from qcompiler.quant_ops import ARITHMETIC, DATA_MOVEMENT, FLOAT_REASONS, WEIGHTED
from qcompiler.testing import graphs, inputs

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits_convnet.onnx"
DATA = dict(np.load(ROOT / "examples" / "digits.npz"))


@pytest.fixture(scope="module")
def digits() -> qc.Graph:
    return qc.load_onnx(MODEL)


@pytest.fixture(scope="module")
def quantized(digits: qc.Graph) -> qc.Graph:
    return qdq_quantize(digits, [DATA["calib_x"]], progress=False)


def qdq_quantize(graph: qc.Graph, calib, config: qc.QuantConfig | None = None,
                 **options) -> qc.Graph:
    """``qc.quantize`` stopping at the QDQ form (``lower=False``)."""
    return qc.quantize(graph, calib, replace(config or qc.QuantConfig(), lower=False), **options)


def accuracy(graph: qc.Graph, x: np.ndarray, y: np.ndarray) -> float:
    logits = qc.compile(graph).run({"image": x})["logits"]
    return float((logits.argmax(1) == y).mean())


def weight_dqs(graph: qc.Graph) -> list[tuple[qc.Node, qc.Node]]:
    """(weighted node, the DQ of its weight) for every weighted node reading a DQ weight."""
    out = []
    for node in graph.nodes:
        if node.op in WEIGHTED and node.inputs[1].producer is not None:
            dq = node.inputs[1].producer
            if dq.op == qdq.DEQUANTIZE and dq.inputs[0].is_constant:
                out.append((node, dq))
    return out


def input_params(node: qc.Node) -> qc.QuantParams:
    """The parameters of the activation a node reads (through its DQ)."""
    dq = node.inputs[0].producer
    assert dq is not None and dq.op == qdq.DEQUANTIZE, node.describe()
    return qdq.params_of(dq)


# -- the digits model --------------------------------------------------------------------------

def test_default_int8_accuracy_within_0_3_points_of_float(digits, quantized):
    x, y = DATA["test_x"], DATA["test_y"]
    float_acc = accuracy(qc.optimize(digits), x, y)
    int8_acc = accuracy(quantized, x, y)
    assert int8_acc >= float_acc - 0.003, (float_acc, int8_acc)


def test_every_quantizable_node_reads_and_writes_quantized_values(quantized):
    quantized.verify()
    assert qdq.problems(quantized) == []
    weighted = [n for n in quantized.nodes if n.op in WEIGHTED]
    assert len(weighted) == 5 and len(weight_dqs(quantized)) == 5
    for node in weighted:
        assert input_params(node).dtype == qc.DType.I8
        (user,) = [u for u in node.outputs[0].users]
        assert user.op == qdq.QUANTIZE
    # the graph's input and output stay float, as the signature requires
    assert quantized.inputs[0].dtype == qc.DType.F32
    assert quantized.outputs[0].dtype == qc.DType.F32


def test_weights_are_int8_symmetric_per_channel_in_minus_127_127(quantized):
    for _, dq in weight_dqs(quantized):
        w = dq.inputs[0]
        params = w.type.quant
        assert w.dtype == qc.DType.I8 and params.axis == 0  # Conv's M, Gemm's N (transB=1)
        assert set(params.zero_point) == {0}
        assert len(params.scale) == w.shape[params.axis]
        assert w.data.min() >= -127 and w.data.max() <= 127
        # every channel uses its full range: the largest |q| of each channel is 127
        moved = np.moveaxis(w.data, params.axis, 0).reshape(w.shape[params.axis], -1)
        assert (np.abs(moved).max(axis=1) == 127).all()


def test_biases_are_int32_at_input_scale_times_weight_scale(quantized):
    checked = 0
    for node, dq in weight_dqs(quantized):
        bias_dq = node.inputs[2].producer
        assert bias_dq.op == qdq.DEQUANTIZE
        b = bias_dq.inputs[0]
        assert b.dtype == qc.DType.I32 and set(b.type.quant.zero_point) == {0}
        s_in = input_params(node).scale[0]
        s_w = np.asarray(dq.inputs[0].type.quant.scale)
        want = np.float32(s_in) * s_w.astype(np.float32)
        np.testing.assert_array_equal(np.asarray(b.type.quant.scale, np.float32), want)
        checked += 1
    assert checked == 5


def test_max_pool_and_flatten_share_their_input_parameters(quantized):
    for op in ("MaxPool", "Flatten"):
        (node,) = quantized.find_nodes(op)
        src = node.inputs[0]
        out_q = [u for u in node.outputs[0].users if u.op == qdq.QUANTIZE]
        if src.producer.op == qdq.DEQUANTIZE:  # still in QDQ around the op
            assert qdq.same_params(qdq.params_of(src.producer), qdq.params_of(out_q[0]))
        else:  # cancel-qdq moved the op onto the integer tensor: one type, one parameter set
            assert src.type.quant is not None and node.outputs[0].type.quant == src.type.quant


def test_the_given_graph_is_left_as_it_was(digits):
    before = digits.copy()
    qdq_quantize(digits, [DATA["calib_x"][:32]], progress=False)
    assert digits == before


# -- onnxruntime's quantize_static as an oracle for the parameters -----------------------------

def _ort_layers(model: onnx.ModelProto) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """For each Conv/Gemm of an onnxruntime QDQ model: (scale, zero point) of its input DQ and
    output Q, and (integers, scale, zero point) of its weight and bias DQs."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    made = {out: node for node in model.graph.node for out in node.output}
    read = {name: node for node in model.graph.node for name in node.input}

    def params(node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
        return inits[node.input[1]].reshape(-1), inits[node.input[2]].reshape(-1)

    layers = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            w, b = made[node.input[1]], made[node.input[2]]
            layers[node.name] = {"input": params(made[node.input[0]]),
                                 "output": params(read[node.output[0]]),
                                 "weight": (inits[w.input[0]], *params(w)),
                                 "bias": (inits[b.input[0]], *params(b))}
    return layers


def _our_layers(graph: qc.Graph) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """The same as ``_ort_layers`` for a graph ``qc.quantize`` made."""
    def params(node: qc.Node) -> tuple[np.ndarray, np.ndarray]:
        p = qdq.params_of(node)
        return np.asarray(p.scale, np.float32), np.asarray(p.zero_point)

    layers = {}
    for node in graph.nodes:
        if node.op in ("Conv", "Gemm"):
            w, b = node.inputs[1].producer, node.inputs[2].producer
            (q,) = [u for u in node.outputs[0].users if u.op == qdq.QUANTIZE]
            layers[node.name] = {"input": params(node.inputs[0].producer), "output": params(q),
                                 "weight": (w.inputs[0].data, *params(w)),
                                 "bias": (b.inputs[0].data, *params(b))}
    return layers


@pytest.mark.parametrize("per_channel", [True, False])
def test_minmax_parameters_match_onnxruntime(digits, per_channel):
    """Every layer's input and output activation parameters, its int8 weights and int32 biases
    with their scales, as onnxruntime's quantize_static chooses them on the same data."""
    calib = DATA["calib_x"]
    q = qdq_quantize(digits, [calib], qc.QuantConfig(calibration="minmax",
                                                    per_channel=per_channel), progress=False)
    theirs = _ort_layers(ort_quantize_static(MODEL, "image", calib, method="MinMax",
                                             per_channel=per_channel))
    ours = _our_layers(q)
    assert sorted(ours) == sorted(theirs) == ["conv1_conv", "conv2_conv", "conv3_conv", "fc1",
                                              "fc2"]
    for name, layer in ours.items():
        for role, (*data, scale, zero) in layer.items():
            *their_data, their_scale, their_zero = theirs[name][role]
            where = f"{name} {role}"
            # Both fold BatchNorm in float32, in different orders, so weights and calibrated
            # ranges differ in the last bits: scales measured at most 2.9e-7 apart (relative),
            # the int8 weights equal, and one int32 bias (of 32, conv3 per tensor, whose input
            # scale is one ulp apart) 1 apart.
            for a, b in zip(data, their_data):
                off = 1 if role == "bias" else 0
                np.testing.assert_array_less(np.abs(a.astype(np.int64) - b), off + 1,
                                             err_msg=where)
            np.testing.assert_array_equal(zero, their_zero, err_msg=where)
            np.testing.assert_allclose(scale, their_scale, rtol=1e-6, err_msg=where)


# -- biases that would overflow int32 ----------------------------------------------------------

GEMM_BIG_BIAS = """
graph gemm_big_bias(%x: f32[4,2]) {
  %w: f32[3,2] = const dense<[[0.5, -0.25], [1.0, 0.125], [0.001, -0.002]]>
  %b: f32[3] = const dense<[1000000.0, -2.5, 0.25]>
  %y: f32[4,3] = Gemm(%x, %w, %b) {transB = 1} @gemm
  return %y
}
"""


def test_a_bias_that_would_overflow_raises_the_weight_scale_never_clips():
    g = qc.parse(GEMM_BIG_BIAS)
    x = np.random.default_rng(0).uniform(-1e-3, 1e-3, (4, 2)).astype(np.float32)
    q = qdq_quantize(g, [x], progress=False)
    (gemm,) = q.find_nodes("Gemm")
    w_params = gemm.inputs[1].producer.inputs[0].type.quant
    bias = gemm.inputs[2].producer.inputs[0]
    s_in = input_params(gemm).scale[0]
    # a channel whose bias would need more than BIAS_LIMIT steps at s_in * max|w| / 127 gets a
    # larger weight scale (channels 0 and 2 here); the others keep max|w| / 127
    natural = np.abs(g.constants["w"].data).max(axis=1).astype(np.float64) / 127
    steps = np.abs([1e6, -2.5, 0.25]) / (s_in * natural)
    raised = steps > quant_math.BIAS_LIMIT
    assert raised.tolist() == [True, False, True]
    scale = np.asarray(w_params.scale)
    assert (scale[raised] > natural[raised]).all()
    np.testing.assert_allclose(scale[~raised], natural[~raised], rtol=1e-7)
    assert np.abs(bias.data.astype(np.int64)).max() <= quant_math.BIAS_LIMIT
    restored = bias.data.astype(np.float64) * np.asarray(bias.type.quant.scale)
    np.testing.assert_allclose(restored, [1e6, -2.5, 0.25],
                               atol=float(np.max(bias.type.quant.scale)))
    assert s_in > 0


# -- config: exclusions, overrides, granularity ------------------------------------------------

def test_an_excluded_layer_stays_float_and_says_why(digits):
    cfg = qc.QuantConfig(exclude_layers=["fc2"])
    q = qdq_quantize(digits, [DATA["calib_x"]], cfg, progress=False)
    fc2 = q.node("fc2")
    assert fc2.inputs[1].is_constant and fc2.inputs[1].dtype == qc.DType.F32
    assert [n.name for n, _ in weight_dqs(q)] == ["conv1_conv", "conv2_conv", "conv3_conv",
                                                  "fc1"]


def test_quantize_pass_records_why_nodes_stay_float(digits):
    from qcompiler.passes.quantize import Quantize

    from qcompiler.calibration import calibrate

    g = qc.optimize(digits)
    cal = calibrate(g, [DATA["calib_x"][:64]], progress=False)
    p = Quantize(qc.QuantConfig(exclude_op_types=["Gemm"]), cal)
    result = p.run(g.copy())
    why = "excluded by config: exclude_op_types 'Gemm'"
    assert p.skipped == {"fc1": why, "fc2": why}
    assert any("fc1: left in float" in note for note in result.notes)


def test_overrides_fix_a_tensor_range(digits):
    cfg = qc.QuantConfig(overrides={"image": (-1.0, 3.0)})
    q = qdq_quantize(digits, [DATA["calib_x"][:32]], cfg, progress=False)
    (qnode,) = [n for n in q.nodes if n.op == qdq.QUANTIZE and n.inputs[0].name == "image"]
    assert qdq.same_params(qdq.params_of(qnode), quant_math.params_from_range(-1.0, 3.0))


def test_an_override_of_a_missing_tensor_is_an_error(digits):
    with pytest.raises(ConfigError, match="no_such_tensor"):
        qdq_quantize(digits, [DATA["calib_x"][:8]],
                    qc.QuantConfig(overrides={"no_such_tensor": (0.0, 1.0)}), progress=False)


def test_per_tensor_weights_have_one_scale(digits):
    q = qdq_quantize(digits, [DATA["calib_x"][:64]], qc.QuantConfig(per_channel=False),
                    progress=False)
    for _, dq in weight_dqs(q):
        assert dq.inputs[0].type.quant.axis is None


def test_quantize_without_calibration_says_what_is_missing(digits):
    from qcompiler.passes.quantize import Quantize

    with pytest.raises(QuantizationError, match="%image .a graph input. has no calibrated range"):
        Quantize(qc.QuantConfig(), {}).run(qc.optimize(digits))
    with pytest.raises(qc.PassError, match="pass 'quantize' failed: %image"):
        qc.PassManager([Quantize(qc.QuantConfig(), {})]).run(qc.optimize(digits))


# -- other architectures -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet_bottleneck", "mobilenetv2_block", "mobilenetv3_block",
                                  "inception_block"])
def test_building_blocks_quantize_and_stay_close_to_float(name):
    model = zoo.BUILDING_BLOCKS[name]()
    g = qc.from_onnx(model)
    rng = np.random.default_rng(1)
    shape = [d if isinstance(d, int) else 2 for d in g.inputs[0].shape]
    calib = [rng.normal(0, 1, shape).astype(np.float32) for _ in range(4)]
    q = qdq_quantize(g, calib, progress=False)
    q.verify()
    assert weight_dqs(q), "nothing was quantized"
    x = rng.normal(0, 1, shape).astype(np.float32)
    ref = qc.compile(qc.optimize(g)).run({g.inputs[0].name: x})
    out = qc.compile(q).run({g.inputs[0].name: x})
    for key, want in ref.items():
        noise = np.sum((want - out[key]) ** 2)
        # measured 35.8, 35.1, 31.9 and 37.5 dB (random weights, 4 calibration batches of 2)
        assert 10 * np.log10(np.sum(want**2) / noise) > 28, name


def test_config_is_replaceable_like_a_dataclass():
    cfg = replace(qc.QuantConfig(), per_channel=False)
    assert not cfg.per_channel


# -- random graphs -----------------------------------------------------------------------------

# What quantization treats differently (weighted, arithmetic, data-movement ops) and some float
# ops it leaves alone (ConvTranspose, Sigmoid), with values read twice (multi_use).
QUANT_BUILDERS = ["conv", "conv_bn", "gemm", "matmul", "relu", "residual_add", "add", "mul",
                  "add_const", "mul_const", "concat", "flatten", "reshape", "transpose",
                  "global_average_pool", "max_pool", "average_pool", "conv_transpose", "sigmoid",
                  "multi_use"]


def test_random_graphs_quantize_to_a_consistent_qdq_form():
    """Every quantizable node reads only DQ outputs (or int8 tensors it moves), every Q's type
    carries the parameters it applies, the signature is kept, and the QDQ graph runs; over the
    examples, each kind of node must have been quantized."""
    fired: Counter[str] = Counter()

    # at least 80 examples, also under the bounded CI profile: over 30, GlobalAveragePool (a
    # rank-4 builder among 20) can be missed
    @settings(deadline=None, max_examples=max(80, settings.default.max_examples))
    @given(graph=graphs(builders=QUANT_BUILDERS, min_steps=2, max_steps=7), data=st.data())
    def check(graph, data):
        feeds = data.draw(inputs(graph))
        q = qdq_quantize(graph, [feeds], progress=False)
        q.verify()
        assert qdq.problems(q) == []
        assert [(v.name, v.type) for v in q.inputs] == [(v.name, v.type) for v in graph.inputs]
        assert [v.name for v in q.outputs] == [v.name for v in graph.outputs]
        for node in q.nodes:
            if node.op in WEIGHTED:
                fired["weighted"] += 1
                for k in (0, 1):
                    src = node.inputs[k].producer
                    assert src is not None and src.op == qdq.DEQUANTIZE, node.describe()
            elif node.op in ARITHMETIC:
                fired[node.op] += 1
                for value in node.inputs:
                    assert value is not None and value.producer.op == qdq.DEQUANTIZE
            elif node.op in DATA_MOVEMENT and node.inputs[0].type.quant is not None:
                fired["moved onto integers"] += 1
        out = qc.compile(q).run(feeds)
        assert all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")

    check()
    assert {"weighted", "Add", "Mul", "GlobalAveragePool", "moved onto integers"} <= set(fired), \
        fired


def test_the_reasons_for_float_nodes_travel_with_the_graph(digits):
    q = qdq_quantize(digits, [DATA["calib_x"][:32]], qc.QuantConfig(exclude_layers=["fc2"]),
                    progress=False)
    assert q.metadata[FLOAT_REASONS] == {"fc2": "excluded by config: exclude_layers 'fc2'"}
    assert q.copy().metadata == q.metadata
    report = qc.compare(digits, q, [DATA["test_x"][:64]])
    assert "exclude_layers 'fc2'" in str(report)


@pytest.mark.parametrize("exclusion", [{"exclude_op_types": ["MaxPool"]},
                                       {"exclude_layers": ["pool2"]}])
def test_an_excluded_data_movement_op_stays_float_after_cancel_qdq(digits, exclusion):
    """cancel-qdq moves DQs below data-movement ops; not below one the config keeps in float."""
    q = qdq_quantize(digits, [DATA["calib_x"][:32]], qc.QuantConfig(**exclusion), progress=False)
    (pool,) = q.find_nodes("MaxPool")
    assert "pool2" in q.metadata[FLOAT_REASONS]
    assert pool.inputs[0].dtype == qc.DType.F32 and pool.outputs[0].dtype == qc.DType.F32
    assert pool.inputs[0].producer.op == qdq.DEQUANTIZE


SPLIT = """
graph split(%a: f32[N,4]) {
  %w: f32[6,4] = const dense<[[0.5, -0.25, 1, 2], [1, 0.125, 3, 1], [0.001, -0.002, 1, 1],
                              [1, 1, 1, 1], [2, 2, 2, 2], [-5, 1, 1, 1]]>
  %y: f32[N,6] = Gemm(%a, %w) {transB = 1} @gemm
  %p: f32[N,3], %r: f32[N,3] = Split(%y) {axis = 1, num_outputs = 2} @split
  %o: f32[N,3] = Add(%p, %r) @add
  return %o
}
"""


def test_every_output_of_a_split_shares_its_input_parameters():
    g = qc.parse(SPLIT)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    q = qdq_quantize(g, [x], progress=False)
    (split,) = q.find_nodes("Split")
    assert split.inputs[0].type.quant is not None  # cancel-qdq moved it onto the integers
    assert [v.type.quant for v in split.outputs] == [split.inputs[0].type.quant] * 2
    assert not q.find_nodes("Requantize")


def test_quantizing_an_already_quantized_graph_is_an_error(quantized):
    """A QDQ graph (ours, or onnxruntime's quantize_static output) is lowered with qc.lower,
    not quantized a second time on top of its Q/DQ nodes."""
    with pytest.raises(QuantizationError, match="graph 'digits_convnet' is already quantized: "
                                                "QuantizeLinear node 'image.q'.*qc.lower"):
        qdq_quantize(quantized, [DATA["calib_x"][:32]], progress=False)


SOFTMAX_TAIL = """
graph tail(%x: f32[N,2]) {
  %w: f32[3,2] = const dense<[[0.5, -0.25], [1.0, 0.125], [0.25, -0.5]]>
  %y: f32[N,3] = Gemm(%x, %w) {transB = 1} @gemm
  %p: f32[N,3] = Softmax(%y) {axis = 1} @softmax
  %l: f32[N,3] = Log(%p) @log
  return %l
}
"""


@pytest.mark.parametrize("tensor", ["w", "p"])
def test_an_override_of_a_tensor_that_is_not_a_quantized_activation_is_an_error(tensor):
    """A weight is quantized from its own values, and a tensor only float ops read and write
    is not quantized: an override of either would be ignored."""
    g = qc.parse(SOFTMAX_TAIL)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    with pytest.raises(ConfigError, match=f"override.*'{tensor}'.*not a quantized activation"):
        qdq_quantize(g, [x], qc.QuantConfig(overrides={tensor: (-1.0, 1.0)}), progress=False)


def test_a_per_axis_override_of_an_activation_is_an_error():
    """Activations are quantized per tensor: the int32 bias of the Gemm reading %x is at
    s_in * s_w, which needs one input scale."""
    g = qc.parse(SOFTMAX_TAIL)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    params = qc.QuantParams((0.01, 0.02), (0, 0), qc.DType.I8, axis=1)
    with pytest.raises(ConfigError, match="override of 'x' .* per axis, but activations are "
                                          "quantized per tensor"):
        qdq_quantize(g, [x], qc.QuantConfig(overrides={"x": params}), progress=False)


GEMM_ALPHA_BETA = """
graph gemm_alpha_beta(%x: f32[N,2]) {
  %w: f32[3,2] = const dense<[[0.5, -0.25], [1.0, 0.125], [0.25, -0.5]]>
  %b: f32[3] = const dense<[0.5, -2.5, 0.25]>
  %y: f32[N,3] = Gemm(%x, %w, %b) {alpha = 4.0, beta = 0.5, transB = 1} @gemm
  return %y
}
"""


def test_gemm_alpha_and_beta_go_into_the_quantized_weight_and_bias():
    """The int8 weight and the int32 bias are what the product and the sum use: alpha folded
    into B (its scale is max|alpha * w| / 127), beta into C (at s_in * s_w)."""
    g = qc.parse(GEMM_ALPHA_BETA)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    q = qdq_quantize(g, [x], progress=False)
    (gemm,) = q.find_nodes("Gemm")
    assert gemm.attrs.get("alpha", 1.0) == 1.0 and gemm.attrs.get("beta", 1.0) == 1.0
    w_params = gemm.inputs[1].producer.inputs[0].type.quant
    np.testing.assert_allclose(w_params.scale, np.array([0.5, 1.0, 0.5]) * 4 / 127, rtol=1e-6)
    bias = gemm.inputs[2].producer.inputs[0]
    restored = bias.data * np.asarray(bias.type.quant.scale)
    np.testing.assert_allclose(restored, [0.25, -1.25, 0.125],
                               atol=float(np.max(bias.type.quant.scale)) / 2)
    out = qc.compile(q).run({"x": x})["y"]
    ref = qc.compile(g).run({"x": x})["y"]
    assert np.max(np.abs(out - ref)) < 0.02 * np.max(np.abs(ref))  # measured 0.48%
