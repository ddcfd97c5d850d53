"""``lower-int`` and ``qc.quantize``'s integer result: the digits model and the test blocks run
in integers from their input Quantize to their output Dequantize, every integer layer agrees
with the QDQ simulation of the same layer within one quantization step, accumulators that could
overflow are caught at compile time, and what stays float is listed with its reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qcompiler.passes.lower_int import LowerInt
from test_classic_cnns import LIGHT, randomized

import qcompiler as qc
from qcompiler import qdq, quant_ops
from qcompiler.demo import ort_quantize_static
from qcompiler.interpreter import Interpreter
from qcompiler.islands import BOUNDARIES
from qcompiler.quant_ops import FLOAT_REASONS
from qcompiler.testing import graphs, inputs

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits_convnet.onnx"
DATA = dict(np.load(ROOT / "examples" / "digits.npz"))
INTEGER_OPS = quant_ops.INTEGER_OPS | {"Requantize"}


@pytest.fixture(scope="module")
def digits() -> qc.Graph:
    return qc.load_onnx(MODEL)


@pytest.fixture(scope="module", params=["fixed_point", "float"])
def pair(request, digits) -> tuple[qc.Graph, qc.Graph]:
    """(QDQ graph, its lowering) of the digits model with the given rounding."""
    calib = [DATA["calib_x"]]
    simulated = qc.quantize(digits, calib, qc.QuantConfig(lower=False), progress=False)
    lowered = qc.quantize(digits, calib, qc.QuantConfig(rounding=request.param), progress=False)
    return simulated, lowered


def accuracy(graph: qc.Graph, x: np.ndarray, y: np.ndarray) -> float:
    logits = qc.compile(graph).run({"image": x})["logits"]
    return float((logits.argmax(1) == y).mean())


def every_value(graph: qc.Graph, feeds: dict) -> dict[str, np.ndarray]:
    """Every value ``graph`` computes on ``feeds``, by name (the Interpreter's after hook)."""
    seen: dict[str, np.ndarray] = {}

    def keep(interp, node, outputs):
        seen.update((v.name, a) for v, a in zip(node.outputs, outputs))

    seen.update(feeds)
    Interpreter(graph, after=keep).run(feeds)
    return seen


def integer_layers_against_simulation(simulated: qc.Graph, lowered: qc.Graph,
                                      feeds: dict) -> Counter:
    """Run each integer op of ``lowered`` alone on the integer values the QDQ graph computed
    for its inputs, and compare its output with the QDQ graph's quantized output of the same
    name: at most one step apart. Returns per op: layers, outputs, outputs that differ."""
    reference = every_value(simulated, feeds)
    interp = Interpreter(lowered)
    counts: Counter = Counter()
    for node in lowered.nodes:
        if node.op not in INTEGER_OPS - {"Requantize"}:
            continue
        operands = [None if v is None else v.data if v.is_constant else reference[v.name]
                    for v in node.inputs]
        (got,) = interp.run_node(node, operands)
        want = reference[node.outputs[0].name]
        assert got.dtype == want.dtype and got.shape == want.shape, node.describe()
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= 1, f"{node.describe()}: {int(diff.max())} steps from the QDQ layer"
        counts[node.op, "layers"] += 1
        counts[node.op, "outputs"] += diff.size
        counts[node.op, "differ"] += int(np.count_nonzero(diff))
    return counts


def report(counts: Counter, what: str) -> None:
    for op in sorted({op for op, _ in counts}):
        print(f"{what}: {op} x{counts[op, 'layers']}: {counts[op, 'differ']}/"
              f"{counts[op, 'outputs']} outputs one step from the QDQ simulation")


# -- the digits model ------------------------------------------------------------------------------


def test_digits_is_fully_integer_between_its_input_quantize_and_output_dequantize(pair):
    _, lowered = pair
    assert lowered.float_islands() == []
    ops = lowered.op_counts()
    assert ops["IntConv"] == 3 and ops["IntMatMul"] == 2, ops
    assert not {"Conv", "Gemm", "MatMul"} & set(ops), ops
    boundaries = [n for n in lowered.nodes if n.op in BOUNDARIES]
    assert [n.op for n in boundaries] == ["QuantizeLinear", "DequantizeLinear"]
    assert boundaries[0].inputs[0] is lowered.inputs[0]
    assert boundaries[1].outputs[0] is lowered.outputs[0]


def test_digits_integer_accuracy_within_0_3_points_of_float(digits, pair):
    _, lowered = pair
    x, y = DATA["test_x"], DATA["test_y"]
    fp32 = accuracy(digits, x, y)
    int8 = accuracy(lowered, x, y)
    print(f"digits test accuracy: fp32 {fp32:.4f}, integer {int8:.4f}")
    assert int8 >= fp32 - 0.003


def test_every_digits_integer_layer_is_within_one_step_of_its_qdq_simulation(pair):
    simulated, lowered = pair
    counts = integer_layers_against_simulation(simulated, lowered, {"image": DATA["test_x"]})
    report(counts, f"digits ({lowered.nodes[1].attrs.get('rounding')})")
    assert counts["IntConv", "layers"] == 3 and counts["IntMatMul", "layers"] == 2


def test_the_integer_graph_keeps_the_qdq_value_names_and_layers(pair):
    simulated, lowered = pair
    names = {n.outputs[0].name for n in simulated.nodes if n.op == qdq.QUANTIZE}
    for node in lowered.nodes:
        if node.op in INTEGER_OPS:
            assert node.outputs[0].name in names, node.describe()
            assert node.outputs[0].type.quant is not None
    conv = next(n for n in lowered.nodes if n.op == "IntConv")
    assert conv.origins == ("conv1_conv", "conv1_bnorm", "conv1_relu")


def test_lower_false_keeps_the_qdq_form(pair):
    simulated, _ = pair
    ops = simulated.op_counts()
    assert ops["Conv"] == 3 and "IntConv" not in ops
    reasons = {n.op: island.reasons[n.name] for island in simulated.float_islands()
               for n in island.nodes}
    assert set(reasons) == {"Conv", "Gemm"}, reasons
    assert all(why.startswith("in QDQ form") and "qc.lower" in why for why in reasons.values())


def test_a_float_graph_and_a_dynamic_one_say_they_are_not_quantized(digits):
    floats = {n.op: island.reasons[n.name] for island in digits.float_islands()
              for n in island.nodes}
    assert floats["Conv"] == "not quantized" and floats["BatchNormalization"] == (
        "BatchNormalization has no integer form")
    # weight-only quantizes every Conv/Gemm/MatMul's weights; dynamic, Gemm/MatMul's
    for mode, why, ops in (("weight_only", "only its weights are quantized", ("Conv", "Gemm")),
                           ("dynamic", "quantized at run time", ("Gemm",))):
        q = qc.quantize(digits, config=qc.QuantConfig(mode=mode), progress=False)
        reasons = {island.reasons[n.name] for island in q.float_islands()
                   for n in island.nodes if n.op in ops}
        assert reasons and all(r.startswith(why) for r in reasons), (mode, reasons)


def test_the_rounding_option_reaches_every_integer_op(pair, request):
    _, lowered = pair
    roundings = {n.attrs["rounding"] for n in lowered.nodes if "rounding" in n.attrs}
    assert roundings == {request.node.callspec.params["pair"]}


def test_an_unknown_rounding_is_a_config_error():
    with pytest.raises(qc.ConfigError, match="rounding"):
        qc.QuantConfig(rounding="nearest")


def test_fused_relu_becomes_the_output_clamp(digits):
    """With symmetric activations a ReLU's output zero point is 0, not the dtype's minimum, so
    only the clamp keeps negative values out: qmin is the zero point."""
    calib = [DATA["calib_x"]]
    config = qc.QuantConfig(activation_symmetric=True)
    lowered = qc.quantize(digits, calib, config, progress=False)
    simulated = qc.quantize(digits, calib, replace(config, lower=False), progress=False)
    relus = [n for n in lowered.nodes if n.op in ("IntConv", "IntMatMul") and n.name != "fc2"]
    assert len(relus) == 4
    for node in relus:
        zero = node.outputs[0].type.quant.zero_point[0]
        assert zero == 0 and node.attrs["qmin"] == zero and node.attrs["qmax"] == 127
    assert "qmin" not in lowered.node("fc2").attrs  # no activation: the dtype's range
    counts = integer_layers_against_simulation(simulated, lowered, {"image": DATA["test_x"]})
    assert counts["IntConv", "layers"] == 3


# -- random graphs ---------------------------------------------------------------------------------

LOWER_BUILDERS = ["conv", "conv_bn", "gemm", "matmul", "relu", "clip", "residual_add", "add",
                  "mul", "add_const", "mul_const", "concat", "flatten", "reshape", "transpose",
                  "global_average_pool", "max_pool", "average_pool", "sigmoid", "tanh",
                  "leaky_relu", "hard_swish", "hard_sigmoid", "multi_use"]
# ops the lowering may leave in float in those graphs, each with the reason it must give
ALLOWED_FLOAT = {"ConvTranspose": "ConvTranspose has no integer form"}


def test_random_graphs_lower_and_every_integer_layer_is_within_one_step():
    """Hypothesis-drawn float graphs, quantized with drawn configs (int8/uint8 activations,
    symmetric or asymmetric int8/uint8 weights, per channel or per tensor, both roundings):
    lowered, every quantized node became an integer op, and each integer layer run alone is
    within one step of its QDQ simulation. Over the examples every integer op must have been
    made and compared, asymmetric weights (a weight zero-point term) included."""
    fired: Counter = Counter()

    @settings(deadline=None, max_examples=max(60, settings.default.max_examples),
              suppress_health_check=[HealthCheck.too_slow])
    @given(graph=graphs(builders=LOWER_BUILDERS, min_steps=2, max_steps=6), data=st.data())
    def check(graph, data):
        feeds = data.draw(inputs(graph))
        config = qc.QuantConfig(
            activation_dtype=data.draw(st.sampled_from(["i8", "u8"]), label="activations"),
            weight_dtype=data.draw(st.sampled_from(["i8", "u8"]), label="weights"),
            weight_symmetric=data.draw(st.booleans(), label="symmetric weights"),
            per_channel=data.draw(st.booleans(), label="per channel"),
            rounding=data.draw(st.sampled_from(["fixed_point", "float"]), label="rounding"))
        if config.weight_dtype == "u8" and config.weight_symmetric:
            config = replace(config, weight_symmetric=False)
        simulated = qc.quantize(graph, [feeds], replace(config, lower=False), progress=False)
        lowered = qc.quantize(graph, [feeds], config, progress=False)
        lowered.verify()
        for island in lowered.float_islands():
            for node in island.nodes:
                assert island.reasons[node.name] == ALLOWED_FLOAT.get(node.op), str(island)
        fired.update(op for (op, what) in
                     integer_layers_against_simulation(simulated, lowered, feeds).elements()
                     if what == "layers")
        fired["weight zero points"] += sum(
            1 for n in lowered.nodes if n.op in ("IntConv", "IntMatMul")
            and any(v is not None and v.name.endswith("w_zero_point") for v in n.inputs))

    check()
    print(f"lower-int on random graphs: {dict(fired)}")
    assert {"IntConv", "IntMatMul", "IntAdd", "IntMul", "IntAveragePool",
            "IntGlobalAveragePool", "LookupTable", "weight zero points"} <= set(fired), fired


# -- blocks and architectures ------------------------------------------------------------------

BLOCKS = ["mobilenetv3_block", "resnet_bottleneck", "mobilenetv2_block", "inception_block",
          "resnet_style", "tf2onnx_style", "paddle2onnx_style"]
# What stays float in each block, by op: nothing, except these.
FLOAT_OPS = {"tf2onnx_style": {"ReduceMean": "ReduceMean has no integer form",
                               "Softmax": "Softmax has no integer form"}}


def block_feeds(model: onnx.ModelProto, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        dims = [d.dim_value or batch for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_lower_fully_and_each_layer_is_within_one_step(name):
    model = zoo.BUILDING_BLOCKS[name]()
    graph = qc.from_onnx(model)
    calib = [block_feeds(model, 2, seed) for seed in range(4)]
    simulated = qc.quantize(graph, calib, qc.QuantConfig(lower=False), progress=False)
    lowered = qc.quantize(graph, calib, progress=False)
    islands = lowered.float_islands()
    floats = {n.op: island.reasons[n.name] for island in islands for n in island.nodes}
    assert floats == FLOAT_OPS.get(name, {}), "\n".join(map(str, islands))
    counts = integer_layers_against_simulation(simulated, lowered, block_feeds(model, 2, 9))
    report(counts, name)
    assert sum(counts[op, "layers"] for op in {op for op, _ in counts}) == sum(
        1 for n in lowered.nodes if n.op in INTEGER_OPS - {"Requantize"})


def test_the_mobilenetv3_block_uses_tables_and_integer_mul():
    model = zoo.mobilenetv3_block()
    graph = qc.from_onnx(model)
    lowered = qc.quantize(graph, [block_feeds(model, 2, 0)], progress=False)
    ops = lowered.op_counts()
    assert ops["LookupTable"] >= 2 and ops["IntMul"] >= 1 and ops["IntGlobalAveragePool"] >= 1
    depthwise = [n for n in lowered.nodes if n.op == "IntConv" and n.attrs.get("group", 1) > 1]
    assert depthwise


# The onnx package's light Caffe2 exports (random weights, see test_classic_cnns.py): what each
# keeps in float besides nothing.
ARCHITECTURES = {"resnet50": {"Softmax"}, "squeezenet": {"Softmax"}, "shufflenet": {"Softmax"},
                 "inception_v1": {"LRN", "Softmax"}, "densenet121": set()}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_zoo_architectures_lower_to_integer_ops_but_for_listed_islands(name):
    model = randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))
    graph = qc.from_onnx(model)
    x = np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 1 for d in graph.inputs[0].shape]).astype(np.float32)
    lowered = qc.quantize(graph, [{graph.inputs[0].name: x}], progress=False)
    islands = lowered.float_islands()
    floats = {n.op: island.reasons[n.name] for island in islands for n in island.nodes}
    assert floats == {op: f"{op} has no integer form" for op in ARCHITECTURES[name]}, floats
    ops = lowered.op_counts()
    assert not {"Conv", "Gemm", "MatMul", "Add", "Sum", "Mul"} & set(ops), ops
    simulated = qc.quantize(graph, [{graph.inputs[0].name: x}], qc.QuantConfig(lower=False),
                            progress=False)
    counts = integer_layers_against_simulation(simulated, lowered, {graph.inputs[0].name: x})
    report(counts, name)
    assert sum(counts[op, "layers"] for op in {op for op, _ in counts}) == sum(
        1 for n in lowered.nodes if n.op in INTEGER_OPS - {"Requantize"})


# -- Pad ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, value, moves", [
    ("constant", None, True), ("constant", 0.0, True), ("reflect", None, True),
    ("edge", None, True), ("constant", 0.7, False)])
def test_pad_runs_on_integers_when_its_value_is_a_quantization_level(mode, value, moves):
    rng = np.random.default_rng(0)
    g = qc.Graph("pad")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (2, 3, 6, 6)))
    w1 = g.add_constant(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w1")
    y = g.add_node("Conv", [x, w1], {"kernel_shape": (3, 3)}, name="c1").outputs[0]
    y = g.add_node("Relu", [y], name="r1").outputs[0]
    operands = [y, g.add_constant(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads")]
    if value is not None:
        operands.append(g.add_constant(np.array(value, np.float32), "value"))
    y = g.add_node("Pad", operands, {"mode": mode}, name="pad").outputs[0]
    w2 = g.add_constant(rng.normal(0, 0.3, (2, 4, 3, 3)).astype(np.float32), "w2")
    g.set_outputs([g.add_node("Conv", [y, w2], {"kernel_shape": (3, 3)}, name="c2").outputs[0]])
    calib = [{"x": rng.normal(0, 1, (2, 3, 6, 6)).astype(np.float32)} for _ in range(3)]
    lowered = qc.quantize(g, calib, progress=False)
    simulated = qc.quantize(g, calib, qc.QuantConfig(lower=False), progress=False)
    pad = next(n for n in lowered.nodes if n.op == "Pad")
    assert (pad.inputs[0].dtype == qc.DType.I8) == moves
    islands = lowered.float_islands()
    if moves:
        assert islands == []
        if mode == "constant":  # the pad value is the zero point of the input's codes
            assert int(pad.inputs[2].data) == pad.inputs[0].type.quant.zero_point[0]
    else:
        assert "cancel-qdq could not move it onto the integers" in islands[0].reasons["pad"]
    counts = integer_layers_against_simulation(simulated, lowered, calib[0])
    assert counts["IntConv", "layers"] == 2


@pytest.mark.parametrize("rounding", ["fixed_point", "float"])
def test_a_concat_of_differently_quantized_inputs_requantizes_them(rounding):
    """A QDQ graph as other quantizers write it: Concat's inputs keep their own parameters."""
    g = qc.Graph("concat")
    params = [qc.QuantParams((scale,), (zero,), qc.DType.I8)
              for scale, zero in ((0.02, 3), (0.05, -7), (0.03, 0))]
    reals = []
    for k, p in enumerate(params[:2]):
        x = g.add_input(f"x{k}", qc.TensorType(qc.DType.F32, (2, 3, 4)))
        reals.append(qdq.add_dequantize(g, qdq.add_quantize(g, x, p)))
    joined = g.add_node("Concat", reals, {"axis": 1}, name="join").outputs[0]
    out = qdq.add_dequantize(g, qdq.add_quantize(g, joined, params[2]))
    g.set_outputs([out])
    lowered = qc.PassManager(f"cancel-qdq,lower-int{{rounding={rounding}}},canonicalize").run(
        g.copy()).graph
    assert lowered.float_islands() == []
    ops = lowered.op_counts()
    assert ops["Requantize"] == 2 and ops["Concat"] == 1, ops
    rng = np.random.default_rng(0)
    feeds = {f"x{k}": rng.uniform(-4, 4, (2, 3, 4)).astype(np.float32) for k in range(2)}
    feeds["x0"][0, 0, :2] = [0.015, 0.045]  # ties of the requantization
    ours = qc.compile(lowered).run(feeds)[out.name]
    theirs = qc.compile(g).run(feeds)[out.name]
    steps = np.abs(ours - theirs) / 0.03
    assert steps.max() <= 1 + 1e-6
    if rounding == "float":  # Requantize{float} is Q(DQ(x)) bit for bit
        np.testing.assert_array_equal(ours, theirs)


def test_lower_refuses_a_float_graph_and_an_unknown_rounding(digits):
    with pytest.raises(qc.QuantizationError, match="no QuantizeLinear.*qc.quantize"):
        qc.lower(digits)
    with pytest.raises(qc.ConfigError, match="rounding must be one of"):
        qc.lower(digits, rounding="nearest")


# -- accumulators and islands ----------------------------------------------------------------------


def wide_matmul(k: int) -> qc.Graph:
    """x[1, k] @ w[k, 2] + relu: every weight at the int8 limit after quantization."""
    g = qc.Graph("wide")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (1, k)))
    w = g.add_constant(np.full((k, 2), 0.01, np.float32), "w")
    y = g.add_node("MatMul", [x, w], name="wide_fc").outputs[0]
    g.set_outputs([y])
    return g


def test_an_accumulator_that_could_overflow_int32_stays_float_and_says_why():
    k = 70_000  # 70000 * 255 * 127 > 2^31 with uint8 activations
    graph = wide_matmul(k)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (1, k)).astype(np.float32)}]
    config = qc.QuantConfig(activation_dtype="u8")
    lowered = qc.quantize(graph, calib, config, progress=False)
    (island,) = lowered.float_islands()
    why = island.reasons["wide_fc"]
    assert "accumulator could overflow" in why and "2^31" in why, why
    assert "wide_fc" in lowered.metadata[FLOAT_REASONS]
    simulated = qc.quantize(graph, calib, qc.QuantConfig(activation_dtype="u8", lower=False),
                            progress=False)
    feeds = {"x": rng.uniform(0, 1, (1, k)).astype(np.float32)}
    np.testing.assert_array_equal(qc.compile(lowered).run(feeds)["wide_fc"],
                                  qc.compile(simulated).run(feeds)["wide_fc"])


@pytest.mark.parametrize("extra, lowers", [(0, True), (1, False)])
def test_the_accumulator_bound_is_exact_at_its_edge(extra, lowers):
    """uint8 activations (zero point 0, up to 255) times weights all at 127: the largest K
    that fits int32 is (2^31 - 1) // (255 * 127); one more stays float."""
    k = (2**31 - 1) // (255 * 127) + extra
    graph = wide_matmul(k)
    calib = [{"x": np.random.default_rng(0).uniform(0, 1, (1, k)).astype(np.float32)}]
    lowered = qc.quantize(graph, calib, qc.QuantConfig(activation_dtype="u8"), progress=False)
    simulated = qc.quantize(graph, calib, qc.QuantConfig(activation_dtype="u8", lower=False),
                            progress=False)
    x_params = qdq.params_of(simulated.nodes[0])
    weights = next(v for v in simulated.constants.values() if v.data.shape == (k, 2))
    assert x_params.zero_point == (0,) and np.all(weights.data == 127)  # the premise
    assert (lowered.float_islands() == []) == lowers
    assert lowered.op_counts().get("IntMatMul", 0) == int(lowers)


def test_asymmetric_weights_are_bounded_by_their_distance_from_the_zero_point():
    """uint8 asymmetric weights of +-0.01 sit at 0 and 255 around a zero point near 128: the
    op sums x * (w - zw), at most 255 * 128 per product, so K = 60000 fits int32 (a bound
    from |w| and |zw| separately would refuse it)."""
    k = 60_000
    g = qc.Graph("wide_asymmetric")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (1, k)))
    signs = np.where((np.arange(k)[:, None] + np.arange(2)) % 2, 0.01, -0.01).astype(np.float32)
    y = g.add_node("MatMul", [x, g.add_constant(signs, "w")], name="wide_fc").outputs[0]
    g.set_outputs([y])
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(0, 1, (1, k)).astype(np.float32)}]
    config = qc.QuantConfig(activation_dtype="u8", weight_dtype="u8", weight_symmetric=False)
    lowered = qc.quantize(g, calib, config, progress=False)
    assert lowered.float_islands() == []
    (matmul,) = lowered.find_nodes("IntMatMul")
    zero = matmul.inputs[6].data.astype(np.int64)  # the per-column weight zero points
    assert np.all(np.abs(zero - 128) <= 1), zero
    simulated = qc.quantize(g, calib, replace(config, lower=False), progress=False)
    feeds = {"x": rng.uniform(0, 1, (1, k)).astype(np.float32)}
    counts = integer_layers_against_simulation(simulated, lowered, feeds)
    assert counts["IntMatMul", "layers"] == 1


def test_weights_quantized_along_another_axis_than_the_output_channels_stay_float():
    """A QDQ model whose MatMul weight is quantized per row (axis 0 of [K, N]) cannot be
    rescaled per output column: the layer stays float, bit-exact with the QDQ graph."""
    g = qc.Graph("rows")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (2, 4)))
    xq = qdq.add_dequantize(g, qdq.add_quantize(g, x, qc.QuantParams((0.05,), (0,), qc.DType.I8)))
    rows = qc.QuantParams((0.01, 0.02, 0.03, 0.04), (0,) * 4, qc.DType.I8, axis=0)
    codes = np.arange(16, dtype=np.int8).reshape(4, 4) - 8
    w = qdq.add_dequantize(g, qdq.add_quantized_constant(g, codes, rows, "w"))
    y = g.add_node("MatMul", [xq, w], name="fc").outputs[0]
    g.set_outputs([qdq.add_dequantize(g, qdq.add_quantize(
        g, y, qc.QuantParams((0.01,), (0,), qc.DType.I8)))])
    lowered = qc.lower(g)
    (island,) = lowered.float_islands()
    assert "quantized along axis 0, not along its output channels (axis 1)" in \
        island.reasons["fc"]
    feeds = {"x": np.random.default_rng(0).uniform(-3, 3, (2, 4)).astype(np.float32)}
    name = g.outputs[0].name
    np.testing.assert_array_equal(qc.compile(lowered).run(feeds)[name],
                                  qc.compile(g).run(feeds)[name])


def test_a_pool_whose_int32_sum_could_overflow_stays_float():
    side = 2920  # 2920^2 * 255 > 2^31 - 1 with uint8 codes
    g = qc.Graph("big_pool")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (1, 1, side, side)))
    g.set_outputs([g.add_node("GlobalAveragePool", [x], name="gap").outputs[0]])
    calib = [{"x": np.linspace(0, 1, side * side, dtype=np.float32).reshape(1, 1, side, side)}]
    lowered = qc.quantize(g, calib, qc.QuantConfig(activation_dtype="u8"), progress=False)
    (island,) = lowered.float_islands()
    assert "its int32 sum could overflow: 8526400 values of up to 255" in island.reasons["gap"]
    assert qc.compile(lowered).run(calib[0])["gap"].shape == (1, 1, 1, 1)


def test_a_requantize_whose_multiplier_has_no_fixed_point_form_keeps_float_rounding():
    """x_scale / y_scale = 1e10: beyond the fixed-point form (< 2^30), exact in float32."""
    g = qc.Graph("huge")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, (8,)))
    q = qdq.add_quantize(g, x, qc.QuantParams((1e4,), (0,), qc.DType.I8))
    out = qdq.add_quantize(g, qdq.add_dequantize(g, q), qc.QuantParams((1e-6,), (0,), qc.DType.I8))
    g.set_outputs([qdq.add_dequantize(g, out)])
    result = LowerInt().run(qc.PassManager("cancel-qdq").run(g.copy()).graph)
    (requantize,) = result.graph.find_nodes("Requantize")
    assert requantize.attrs.get("rounding", "float") == "float"
    assert any("keeps its float rounding" in note and "too large" in note
               for note in result.notes), result.notes
    feeds = {"x": np.linspace(-3e4, 3e4, 8, dtype=np.float32)}
    name = g.outputs[0].name
    np.testing.assert_array_equal(qc.compile(result.graph).run(feeds)[name],
                                  qc.compile(g).run(feeds)[name])


def test_float_ops_form_islands_with_their_reasons(digits):
    config = qc.QuantConfig(exclude_layers=["conv2_conv"])
    lowered = qc.quantize(digits, [DATA["calib_x"]], config, progress=False)
    (island,) = lowered.float_islands()
    assert [n.name for n in island.nodes] == ["conv2_conv"]
    assert "excluded by config" in island.reasons["conv2_conv"]
    assert "conv2_conv" in str(island)
    x, y = DATA["test_x"], DATA["test_y"]
    assert accuracy(lowered, x, y) >= accuracy(digits, x, y) - 0.003


# -- a peer's QDQ model ----------------------------------------------------------------------------


def test_an_onnxruntime_quantize_static_model_lowers_and_keeps_its_accuracy(digits):
    model = ort_quantize_static(onnx.load(MODEL), "image", DATA["calib_x"])
    imported = qc.from_onnx(model)
    lowered = qc.lower(imported)
    assert lowered.float_islands() == [], "\n".join(map(str, lowered.float_islands()))
    x, y = DATA["test_x"], DATA["test_y"]
    peer = accuracy(imported, x, y)
    ours = accuracy(lowered, x, y)
    print(f"onnxruntime quantize_static digits model: QDQ {peer:.4f}, lowered {ours:.4f}")
    assert ours >= peer - 0.003
