"""qc.compare: the per-layer report of a quantized graph's error against float.

The quantized graphs here are built by hand in the QDQ form (``qcompiler.qdq``), so one layer
can be quantized coarsely on purpose; the MLP's errors are recomputed with numpy alone.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

import qcompiler as qc
from qcompiler import cli, qdq
from qcompiler.config import QuantConfig
from qcompiler.graph import Graph, Value
from qcompiler.report import FLOAT_REASONS, QuantizationReport
from qcompiler.types import DType, QuantParams, TensorType

DIGITS = str(resources.files("qcompiler.examples") / "digits_convnet.onnx")
DIGITS_DATA = str(resources.files("qcompiler.examples") / "digits.npz")
COARSE = 16.0  # a coarse layer's weight step is this many times the fine one: about 4 bits


# -- a float MLP, its numpy twin, and a hand-made QDQ version -------------------------------------


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"fc1": (16, 8), "fc2": (12, 16), "fc3": (4, 12)}
    out = {}
    for name, shape in shapes.items():
        out[f"{name}.w"] = rng.normal(0, 0.5, shape).astype(np.float32)
        out[f"{name}.b"] = rng.normal(0, 0.1, shape[0]).astype(np.float32)
    return out


def mlp(weights: dict[str, np.ndarray]) -> Graph:
    """x -> fc1 -> relu1 -> fc2 -> relu2 -> fc3 -> softmax, as an exporter writes it."""
    g = Graph("mlp")
    x: Value = g.add_input("x", TensorType(DType.F32, ("N", 8)))
    for k in (1, 2, 3):
        w, b = g.add_constant(weights[f"fc{k}.w"], f"fc{k}.w"), g.add_constant(
            weights[f"fc{k}.b"], f"fc{k}.b")
        x = g.add_node("Gemm", [x, w, b], {"transB": 1}, name=f"fc{k}").outputs[0]
        if k < 3:
            x = g.add_node("Relu", [x], name=f"relu{k}").outputs[0]
    g.set_outputs([g.add_node("Softmax", [x], {"axis": -1}, name="softmax").outputs[0]])
    g.verify()
    return g


def activation_params(lo: float, hi: float, coarse: float = 1.0) -> QuantParams:
    """Asymmetric int8 for the range [lo, hi] (widened to hold 0); ``coarse`` times the step."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32((hi - lo) / 255 * coarse))
    zero = int(np.clip(np.rint(-128 - lo / scale), -128, 127))
    return QuantParams((scale,), (zero,), DType.I8)


def weight_params(w: np.ndarray, axis: int, coarse: float = 1.0) -> QuantParams:
    """Symmetric int8 per output channel (``axis``); ``coarse`` times the step."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.maximum(np.abs(w).max(axis=reduce), 1e-8) / 127 * coarse
    return QuantParams(tuple(np.float32(scale).tolist()), (0,) * scale.size, DType.I8, axis,
                       -127, 127)


def fake_quant(x: np.ndarray, p: QuantParams, axis: int | None = None) -> np.ndarray:
    """Quantize then dequantize in numpy, as ONNX specifies (float32 divide, round half even,
    saturate)."""
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    scale = np.asarray(p.scale, np.float32).reshape(shape)
    zero = np.asarray(p.zero_point, np.float64).reshape(shape)
    q = np.clip(np.rint(x.astype(np.float32) / scale) + zero, p.qmin, p.qmax)
    return ((q - zero).astype(np.float32) * scale).astype(np.float32)


def quantize_by_hand(graph: Graph, ranges: dict[str, tuple[float, float]],
                     coarse: dict[str, float], skip: tuple[str, ...] = ()) -> Graph:
    """The QDQ form of the optimized ``graph``: every Gemm/Conv/MaxPool/Flatten not in ``skip``
    gets Q -> DQ on its activations (parameters from ``ranges``, by value name), and its weight
    becomes a DQ of int8 per-channel constants (``coarse``: node name -> step factor)."""
    g = qc.optimize(graph)
    params: dict[str, QuantParams] = {}
    chosen = [n for n in g.nodes if n.op in ("Gemm", "Conv", "MaxPool", "Flatten")
              and n.name not in skip]
    for node in chosen:  # data-movement ops keep their input's parameters
        source = node.inputs[0].name
        if source not in params:
            params[source] = activation_params(*ranges[source])
        out = node.outputs[0].name
        params[out] = (params[source] if node.op in ("MaxPool", "Flatten") else
                       activation_params(*ranges[out]))
    for name, p in params.items():
        qdq.insert_qdq(g, g.value(name), p)
    for node in chosen:
        if node.op not in ("Gemm", "Conv"):
            continue
        w = node.inputs[1].data
        wp = weight_params(w, 0, coarse.get(node.name, 1.0))
        step = np.asarray(wp.scale, np.float32).reshape([-1] + [1] * (w.ndim - 1))
        wq = np.clip(np.rint(w / step), -127, 127).astype(np.int8)
        const = qdq.add_quantized_constant(g, wq, wp, f"{node.name}.wq")
        node.set_input(1, qdq.add_dequantize(g, const, before=node, origins=node.origins))
    g.verify()
    return g


def ranges_of(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    held = qc.Interpreter(graph, keep=True)
    held.run(feeds)
    return {v.name: (float(a.min()), float(a.max())) for v, a in held._env.items()}


@pytest.fixture(scope="module")
def case():
    """The float MLP, its hand-quantized form with fc2's weights coarse, the data."""
    weights = _weights()
    g = mlp(weights)
    rng = np.random.default_rng(1)
    batches = [rng.normal(0, 1, (16, 8)).astype(np.float32) for _ in range(4)]
    ranges = ranges_of(qc.optimize(g), {"x": np.concatenate(batches)})
    q = quantize_by_hand(g, ranges, coarse={"fc2": COARSE})
    return g, q, batches, weights


# -- the numpy twin ----------------------------------------------------------------------------


def numpy_float(weights, x):
    """Float outputs of each layer: {layer output: array}, computed with numpy alone."""
    out = {}
    for k in (1, 2, 3):
        x = x @ weights[f"fc{k}.w"].T + weights[f"fc{k}.b"]
        if k < 3:
            x = np.maximum(x, 0)
        out[k] = x
    return out


def numpy_quantized_layer(weights, q: Graph, k: int, x: np.ndarray) -> np.ndarray:
    """Layer fc{k} quantized as ``q`` quantizes it, on the input ``x``, in numpy: input
    fake-quantized, weight dequantized, Gemm (+ Relu), output fake-quantized."""
    node = q.node(f"fc{k}")
    in_params = qdq.params_of(node.inputs[0].producer)
    w_dq = node.inputs[1].producer
    w = w_dq.inputs[0].data.astype(np.float32) * np.asarray(
        w_dq.inputs[0].type.quant.scale, np.float32)[:, None]
    y = fake_quant(x, in_params) @ w.T + weights[f"fc{k}.b"]
    if k < 3:
        y = np.maximum(y, 0)
    (out_q,) = [u for u in node.outputs[0].users if u.op == qdq.QUANTIZE]
    return fake_quant(y, qdq.params_of(out_q))


def sqnr_db(reference: np.ndarray, noisy: np.ndarray) -> float:
    f = reference.astype(np.float64)
    e = noisy.astype(np.float64) - f
    return 10 * np.log10(np.sum(f * f) / np.sum(e * e))


# -- the tests ---------------------------------------------------------------------------------


def test_coarse_layer_is_worst_and_its_sqnr_matches_numpy(case):
    g, q, batches, weights = case
    report = qc.compare(g, q, batches)
    assert report.batches == 4
    rows = {row.layers: row for row in report.layers}
    assert set(rows) == {("fc1", "relu1"), ("fc2", "relu2"), ("fc3",), ("softmax",)}
    assert report.layers[0].layers == ("fc2", "relu2")
    # layer alone and cumulative SQNR of every Gemm layer, recomputed with numpy alone
    x = np.concatenate(batches)
    ref = numpy_float(weights, x)
    alone = {k: numpy_quantized_layer(weights, q, k, x if k == 1 else ref[k - 1])
             for k in (1, 2, 3)}
    cumulative, y = {}, x
    for k in (1, 2, 3):
        y = cumulative[k] = numpy_quantized_layer(weights, q, k, y)
    for k, names in ((1, ("fc1", "relu1")), (2, ("fc2", "relu2")), (3, ("fc3",))):
        row = rows[names]
        assert row.alone.sqnr_db == pytest.approx(sqnr_db(ref[k], alone[k]), abs=1e-3)
        assert row.cumulative.sqnr_db == pytest.approx(sqnr_db(ref[k], cumulative[k]), abs=1e-3)
        assert row.alone.max_abs_error == pytest.approx(
            np.abs(alone[k].astype(np.float64) - ref[k]).max(), rel=1e-5)
        assert row.alone.elements == ref[k].size
    # the coarse step costs about 20 log10(16) = 24 dB against the fine layers
    for names in (("fc1", "relu1"), ("fc3",)):
        assert rows[("fc2", "relu2")].alone.sqnr_db < rows[names].alone.sqnr_db - 15


def test_cumulative_error_grows_downstream_of_the_coarse_layer(case):
    g, q, batches, _ = case
    rows = {row.layers: row for row in qc.compare(g, q, batches).layers}
    for names in (("fc3",), ("softmax",)):
        row = rows[names]
        assert row.cumulative.noise_power > row.alone.noise_power
        assert row.cumulative.sqnr_db < row.alone.sqnr_db
    first = rows[("fc1", "relu1")]  # nothing upstream: both ways agree
    assert first.cumulative == first.alone


def test_batching_does_not_change_the_figures(case):
    g, q, batches, _ = case
    whole = qc.compare(g, q, [np.concatenate(batches)])
    split = qc.compare(g, q, iter(batches))  # a one-shot stream works too
    assert whole.batches == 1 and split.batches == 4
    for a, b in zip(whole.layers, split.layers):
        assert a.layers == b.layers
        # float32 matmuls of another batch size differ in the last bits: measured 3e-6 dB and
        # 4e-7 in max error at most
        for way in ("alone", "cumulative"):
            x, y = getattr(a, way), getattr(b, way)
            assert x.sqnr_db == pytest.approx(y.sqnr_db, abs=1e-5)
            assert x.max_abs_error == pytest.approx(y.max_abs_error, abs=1e-6)
            assert x.elements == y.elements


def test_float_ops_are_listed_with_their_reasons(case):
    g, _, batches, weights = case
    ranges = ranges_of(qc.optimize(g), {"x": np.concatenate(batches)})
    q = quantize_by_hand(g, ranges, coarse={}, skip=("fc3",))
    report = qc.compare(g, q, batches)
    reasons = {f.node: f.reason for f in report.float_ops}
    assert reasons == {
        "fc3": "not quantized (no reason recorded in the graph)",
        "softmax": "Softmax is not quantizable (no role in qcompiler/quant_ops.py)",
    }
    assert {row.layers: row.quantized for row in report.layers} == {
        ("fc1", "relu1"): True, ("fc2", "relu2"): True, ("fc3",): False, ("softmax",): False}
    config = QuantConfig(exclude_layers=["fc3"], exclude_op_types=["Softmax"])
    configured = {f.node: f.reason for f in qc.compare(g, q, batches, config=config).float_ops}
    assert configured == {"fc3": "excluded by config: exclude_layers 'fc3'",
                          "softmax": "excluded by config: exclude_op_types 'Softmax'"}
    q.metadata = {FLOAT_REASONS: {"fc3": "the quantize pass's own words"}}
    recorded = {f.node: f.reason for f in qc.compare(g, q, batches, config=config).float_ops}
    assert recorded["fc3"] == "the quantize pass's own words"


def test_the_table_prints_in_fixed_width_columns(case):
    g, q, batches, _ = case
    text = str(qc.compare(g, q, batches))
    lines = text.splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("layer "))
    table = lines[head:head + 6]
    assert table[1].startswith("-----")
    assert table[2].startswith("fc2, relu2 ")  # the worst layer first
    # every right-aligned figure ends where its heading ends
    end = table[0].index("alone SQNR dB") + len("alone SQNR dB")
    for line in table[2:]:
        assert line[end - 1] != " " and line[end] == " "
    assert "Ops left in float (1):" in text
    assert "softmax  Softmax  softmax  Softmax is not quantizable" in text


def test_json_round_trips_and_is_strict(case):
    g, q, batches, _ = case
    report = qc.compare(g, q, batches)
    text = report.to_json()
    data = json.loads(text)
    assert data["layers"][0]["layers"] == ["fc2", "relu2"]
    assert data["float_ops"][0]["reason"].startswith("Softmax is not quantizable")
    assert QuantizationReport.from_json(text) == report
    assert report.to_dict() == data
    exact = qc.compare(g, g, batches)  # a graph against itself: no error anywhere
    assert all(row.alone.sqnr_db == np.inf == row.cumulative.sqnr_db for row in exact.layers)
    exact_text = exact.to_json()  # infinities are null, so strict JSON readers take it
    assert json.loads(exact_text, parse_constant=pytest.fail)["layers"][0]["layer_alone"][
        "sqnr_db"] is None
    assert QuantizationReport.from_json(exact_text) == exact
    assert "inf" in str(exact)


def test_graphs_that_do_not_correspond_are_named(case):
    g, q, batches, _ = case
    other = qc.load_onnx(DIGITS)
    with pytest.raises(qc.ReportError, match=r"image.*x|x.*image"):
        qc.compare(g, other, batches)
    renamed = q.copy()  # fc3 and its Q/DQ nodes come from a layer the float graph lacks
    renamed.rename_node(renamed.node("fc3"), "head")
    for node in renamed.nodes:
        if node.origins == ("fc3",):
            node.origins = ("head",)
    with pytest.raises(qc.ReportError, match=r"head.*no counterpart.*layer\(s\) head"):
        qc.compare(g, renamed, batches)
    with pytest.raises(qc.ReportError, match="must be a qc.Graph, got str"):
        qc.compare(g, "model.onnx", batches)


def test_wrong_data_is_an_error_naming_the_input(case):
    g, q, _, _ = case
    with pytest.raises(qc.CalibrationError, match="unknown input.*'image'"):
        qc.compare(g, q, [{"image": np.zeros((2, 8), np.float32)}])
    with pytest.raises(qc.CalibrationError, match=r"input 'x' must have shape f32\[N,8\]"):
        qc.compare(g, q, [np.zeros((2, 5), np.float32)])
    with pytest.raises(qc.CalibrationError, match="input 'x' holds NaN"):
        qc.compare(g, q, [np.full((2, 8), np.nan, np.float32)])
    with pytest.raises(qc.CalibrationError, match="empty"):
        qc.compare(g, q, [])


def test_digits_convnet_raw_float_graph_against_fused_qdq(case):
    g = qc.load_onnx(DIGITS)
    with np.load(DIGITS_DATA) as data:
        x = data["test_x"][:64]
    ranges = ranges_of(qc.optimize(g), {"image": x})
    q = quantize_by_hand(g, ranges, coarse={"conv2_conv": COARSE})
    report = qc.compare(g, q, [x[:32], x[32:]])
    assert [row.layers for row in report.layers][0] == ("conv2_conv", "conv2_bnorm",
                                                        "conv2_relu")
    assert {row.layers for row in report.layers} == {
        ("conv1_conv", "conv1_bnorm", "conv1_relu"), ("conv2_conv", "conv2_bnorm", "conv2_relu"),
        ("pool2",), ("conv3_conv", "conv3_bnorm", "conv3_relu"), ("flatten",),
        ("fc1", "fc1_relu"), ("fc2",)}
    assert report.float_ops == ()
    assert all(row.quantized for row in report.layers)
    rows = {row.layers: row for row in report.layers}
    # MaxPool and Flatten keep their input's parameters and move data exactly: alone, their only
    # error is their input's quantization, which is conv2's / conv3's output quantization
    pool = rows[("pool2",)]
    assert 0 < pool.alone.max_abs_error <= qdq.params_of(
        q.node("pool2").inputs[0].producer).scale[0] / 2 * (1 + 1e-6)


def test_cancel_qdq_leaves_the_report_as_it_was(case):
    """cancel-qdq moves the DQ below MaxPool and Flatten (which then run on int8 and carry the
    DQ's origins too) and cancels the DQ -> Q pairs, without changing a bit: the report reads
    the int8 tensors, dequantized, and feeds them the float values quantized, to the same
    figures."""
    g = qc.load_onnx(DIGITS)
    with np.load(DIGITS_DATA) as data:
        x = data["test_x"][:32]
    q = quantize_by_hand(g, ranges_of(qc.optimize(g), {"image": x}), coarse={})
    cancelled = qc.PassManager("cancel-qdq{islands=false}").run(q).graph
    pools = cancelled.find_nodes("MaxPool")
    assert [p.inputs[0].dtype for p in pools] == [DType.I8]
    assert "conv2_conv" in pools[0].origins
    assert qc.compare(g, cancelled, [x]) == qc.compare(g, q, [x])


def _relu_onnx(path) -> None:
    """A one-node ONNX model whose input is not the digits model's."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
                              [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def ort_digits(tmp_path_factory):
    """The digits model quantized by onnxruntime's quantize_static (QDQ), and an inputs file."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    with np.load(DIGITS_DATA) as data:
        x = data["test_x"][:48]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": x[k:k + 16]} for k in range(0, 48, 16)])

        def get_next(self):
            return next(self.batches, None)

    folder = tmp_path_factory.mktemp("ort")
    quantized = str(folder / "digits.qdq.onnx")
    quantize_static(DIGITS, quantized, Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    inputs = str(folder / "inputs.npz")
    np.savez(inputs, image=x)
    return quantized, inputs, x


def test_cli_report_on_an_onnxruntime_qdq_model(ort_digits, tmp_path, capsys):
    quantized, inputs, x = ort_digits
    out = tmp_path / "report.json"
    assert cli.main(["report", DIGITS, quantized, inputs, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "alone SQNR dB" in text and "conv2_conv, conv2_bnorm, conv2_relu" in text
    report = QuantizationReport.from_json(out.read_text())
    assert report == qc.compare(qc.load_onnx(DIGITS), qc.load_onnx(quantized), inputs)
    # onnxruntime folds the Relus into its Q ranges and leaves the BatchNorms in float
    q = qc.load_onnx(quantized)
    assert {f.node for f in report.float_ops} == {
        n.name for n in q.nodes if n.op == "BatchNormalization"}
    assert {row.layers[0] for row in report.layers} == {
        "conv1_conv", "conv2_conv", "pool2", "conv3_conv", "flatten", "fc1", "fc2"}
    assert cli.main(["report", DIGITS, quantized, inputs, "--json", "-"]) == 0
    assert QuantizationReport.from_json(capsys.readouterr().out) == report


def test_cli_report_errors_are_one_line(ort_digits, tmp_path, capsys):
    quantized, _, x = ort_digits
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=x)
    assert cli.main(["report", DIGITS, quantized, str(wrong)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcompiler: error: ") and "pixels" in err and err.count("\n") == 1
    assert cli.main(["report", DIGITS, quantized, str(wrong), "--calib", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "ReportError: --calib is for quantizing" in err and err.count("\n") == 1
    other = tmp_path / "relu.onnx"
    _relu_onnx(other)
    assert cli.main(["report", str(other), quantized, str(wrong)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qcompiler: error: ReportError: the graphs have different inputs")
    assert err.count("\n") == 1


def test_output_error_matches_onnxruntime_running_both_models(ort_digits):
    """The cumulative figures at the model's output are those of onnxruntime running the float
    and the QDQ model (with graph optimizations off, so the Q/DQ nodes run as written)."""
    import onnxruntime as ort

    quantized, inputs, x = ort_digits
    report = qc.compare(qc.load_onnx(DIGITS), qc.load_onnx(quantized), inputs)
    (output,) = [row for row in report.layers if row.layers == ("fc2",)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    f, y = (ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            .run(None, {"image": x})[0] for path in (DIGITS, quantized))
    # measured: 6e-6 dB and 1e-6 apart (float32 kernels of both runtimes)
    assert output.cumulative.sqnr_db == pytest.approx(sqnr_db(f, y), abs=2e-5)
    assert output.cumulative.max_abs_error == pytest.approx(
        np.abs(y.astype(np.float64) - f).max(), abs=5e-6)


def test_data_is_streamed_and_the_progress_bar_is_quiet_off_a_terminal(case, capsys):
    import weakref

    g, q, batches, _ = case
    alive: list[weakref.ref] = []

    def stream():
        for k in range(12):
            # by the time batch k is asked for, batches before k - 1 are gone
            assert sum(ref() is not None for ref in alive[:max(k - 1, 0)]) == 0
            batch = batches[k % len(batches)].copy()
            alive.append(weakref.ref(batch))
            yield batch
            del batch

    assert qc.compare(g, q, stream()).batches == 12
    assert capsys.readouterr().err == ""  # stderr is not a terminal under pytest
    qc.compare(g, q, batches, progress=True)
    assert "compare: 4batch" in capsys.readouterr().err


def test_cli_report_quantizes_with_a_config(ort_digits, tmp_path, capsys):
    _, inputs, _ = ort_digits
    config = tmp_path / "quant.json"
    config.write_text(json.dumps({"exclude_layers": ["fc2"]}))
    out = tmp_path / "report.json"
    assert cli.main(["report", DIGITS, inputs, "--config", str(config), "--json", str(out)]) == 0
    report = QuantizationReport.from_json(out.read_text())
    (fc2,) = [f for f in report.float_ops if f.node == "fc2"]
    assert fc2.reason == "excluded by config: exclude_layers 'fc2'"
    assert {row.layers: row.quantized for row in report.layers}[("fc2",)] is False
    assert "fc2" in capsys.readouterr().out


def test_qc_quantize_output_and_the_report_agree():
    """On qc.quantize's own output, every layer of the model has a row, none is float, and
    the cumulative figures at the output are those of running both graphs whole."""
    g = qc.load_onnx(DIGITS)
    with np.load(DIGITS_DATA) as data:
        calib, x = data["calib_x"][:128], data["test_x"][:96]
    q = qc.quantize(g, calib, progress=False)
    report = qc.compare(g, q, x)
    assert report.float_ops == ()
    assert {row.layers[0] for row in report.layers} == {
        "conv1_conv", "conv2_conv", "pool2", "conv3_conv", "flatten", "fc1", "fc2"}
    assert all(row.quantized for row in report.layers)
    (output,) = [row for row in report.layers if row.layers == ("fc2",)]
    fused = qc.optimize(g)  # the float reference compare measures against
    f = np.concatenate([qc.Interpreter(fused).run({"image": x[k:k + 32]})["logits"]
                        for k in range(0, 96, 32)])
    y = np.concatenate([qc.Interpreter(q).run({"image": x[k:k + 32]})["logits"]
                        for k in range(0, 96, 32)])
    assert output.cumulative.sqnr_db == pytest.approx(sqnr_db(f, y), abs=1e-9)
    assert output.cumulative.max_abs_error == np.abs(y.astype(np.float64) - f).max()


def test_an_equalized_graph_is_compared_with_the_equalized_float_graph():
    """Equalization rescales conv1's output channels (and conv2's input weights back): only
    the float graph equalized the same way has conv1's values."""
    g = qc.load_onnx(DIGITS)
    with np.load(DIGITS_DATA) as data:
        calib, x = data["calib_x"][:128], data["test_x"][:64]
    config = QuantConfig(equalize=True)
    q = qc.quantize(g, calib, config, progress=False)
    plain = {row.layers[0]: row for row in qc.compare(g, q, x).layers}
    equalized = {row.layers[0]: row for row in qc.compare(g, q, x, config=config).layers}
    for layer in ("conv1_conv", "conv2_conv", "conv3_conv", "fc2"):
        assert equalized[layer].alone.sqnr_db > 30, layer
    assert plain["conv1_conv"].alone.sqnr_db < 10  # the rescaled channels, not quantization
    # the output is not rescaled: the two float references differ in float32 rounding only
    # (measured 5e-6 dB apart)
    for way in ("alone", "cumulative"):
        assert getattr(equalized["fc2"], way).sqnr_db == pytest.approx(
            getattr(plain["fc2"], way).sqnr_db, abs=2e-5)


def test_cli_report_json_is_written_whole_or_not_at_all(ort_digits, tmp_path, capsys, monkeypatch):
    quantized, inputs, _ = ort_digits
    out = tmp_path / "report.json"
    out.write_text("the previous report\n")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", fail)  # the disk fills while the report is written
    assert cli.main(["report", DIGITS, quantized, inputs, "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "SaveError: cannot write the report to" in err and err.count("\n") == 1
    assert out.read_text() == "the previous report\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
