"""cancel-qdq: bit-identical outputs on random QDQ graphs (every exact rule required to fire,
ties and saturation required to occur), exhaustive checks of the Relu/Clip absorption over
every int8 and uint8 input, the refusals and their reasons, and the islands rule, which
changes numbers on purpose, tested on its own."""

from __future__ import annotations

from collections import Counter

import golden
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qcompiler.passes.cancel_qdq import CancelQDQ

import qcompiler as qc
from qcompiler import qdq
from qcompiler.graph import Graph, Value
from qcompiler.ops.quant import dequantize_linear, quantize_linear
from qcompiler.quant_ops import DATA_MOVEMENT
from qcompiler.testing import inputs, pass_property, qdq_graphs, rule_names, run_graph
from qcompiler.types import DType, QuantParams, TensorType

EXACT = "cancel-qdq{islands=false}"
EXAMPLES = settings(max_examples=150)  # enough for every exact rule to fire
FEWER = settings(max_examples=100)

test_cancel_qdq_keeps_outputs_bit_identical = pass_property(
    EXACT, qdq_graphs(islands=False), rtol=0.0, atol=0.0, must_fire=rule_names(EXACT),
    settings=EXAMPLES)


@golden.parametrize("cancel-qdq")
def test_golden(path):
    golden.check(path)


def test_the_exact_rules_are_every_rule_but_islands():
    assert set(rule_names("cancel-qdq")) - set(rule_names(EXACT)) == {
        "cancel-qdq: remove-island"}
    assert len(rule_names(EXACT)) == 6


# -- ties and saturation reach the rewritten nodes -------------------------------------------


class _Rounding:
    """Counts, at every QuantizeLinear and Requantize a run executes, the elements whose
    quotient x / scale is a tie (ends in .5) and those that saturate."""

    def __init__(self) -> None:
        self.ties: Counter[str] = Counter()
        self.saturated: Counter[str] = Counter()

    def __call__(self, interp: qc.Interpreter, node, arrays) -> None:
        if node.op not in ("QuantizeLinear", "Requantize"):
            return
        if node.op == "QuantizeLinear":
            real, scale, zero = arrays[0], arrays[1], arrays[2]
        else:
            axis = node.attrs.get("axis", 1)
            real = dequantize_linear(arrays[0], arrays[1], arrays[2], axis=axis)
            scale, zero = arrays[3], arrays[4]
        axis = node.attrs.get("axis", 1) % real.ndim
        shape = [1] * real.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        with np.errstate(over="ignore", invalid="ignore"):
            quotient = real.astype(np.float32) / scale.reshape(shape).astype(np.float32)
            self.ties[node.op] += int(np.sum(np.abs(quotient - np.trunc(quotient)) == 0.5))
            info = np.iinfo(zero.dtype)
            full = np.rint(quotient).astype(np.float64) + zero.reshape(shape)
            self.saturated[node.op] += int(np.sum((full < info.min) | (full > info.max)))


def test_random_graphs_reach_ties_and_saturation_in_the_rewritten_nodes():
    """The rewritten graphs, run on the strategy's inputs, round ties and saturate in their
    QuantizeLinear and Requantize nodes (counted per example), and stay bit-identical, on the
    Interpreter and compiled by the numpy backend."""
    counts: Counter[str] = Counter()

    @FEWER
    @given(st.data())
    def run(data):
        graph = data.draw(qdq_graphs(islands=False))
        feeds = data.draw(inputs(graph))
        after = qc.PassManager(EXACT).run(graph).graph
        rounding = _Rounding()
        got = qc.Interpreter(after, before=rounding).run(feeds)
        compiled = qc.compile(after, backend="numpy").run(feeds)
        expected = run_graph(graph, feeds)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value)
            np.testing.assert_array_equal(compiled[name], value)
        for op in ("QuantizeLinear", "Requantize"):
            counts[f"{op} ties"] += rounding.ties[op] > 0
            counts[f"{op} saturated"] += rounding.saturated[op] > 0

    run()
    assert all(counts[f"{op} {what}"] for op in ("QuantizeLinear", "Requantize")
               for what in ("ties", "saturated")), counts



# -- building blocks -----------------------------------------------------------------------------


def _p(scale, zero, dtype="i8", axis=None) -> QuantParams:
    return qdq.exact_params(QuantParams(scale, zero, DType(dtype), axis))


def _int_input(g: Graph, params: QuantParams, shape: tuple) -> Value:
    return g.add_input("xq", TensorType(params.dtype, shape, params))


def _run_pass(g: Graph, pipeline: str = EXACT):
    return qc.PassManager(pipeline).run(g)


def _codes(dtype: str) -> np.ndarray:
    info = np.iinfo(DType(dtype).np)
    return np.arange(int(info.min), int(info.max) + 1).astype(DType(dtype).np)


def _assert_same_on(before: Graph, after: Graph, feeds) -> None:
    want, got = run_graph(before, feeds), run_graph(after, feeds)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def _reasons(g: Graph, islands: bool = False) -> list[str]:
    return CancelQDQ(islands=islands).explain(g)


# -- DQ -> Q ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["i8", "u8"])
def test_equal_parameters_cancel_and_other_readers_keep_the_dq(dtype):
    params = _p(0.05, 3 if dtype == "i8" else 131, dtype)
    g = Graph("pair")
    xq = _int_input(g, params, (1, 256))
    real = qdq.add_dequantize(g, xq)
    q = qdq.add_quantize(g, real, params)
    other = g.add_node("Sigmoid", [real]).outputs[0]
    out = g.add_node("Add", [qdq.add_dequantize(g, q), other]).outputs[0]
    g.set_outputs([out])
    result = _run_pass(g)
    assert result.stats == {"cancel-qdq: cancel-dq-q": 1}
    assert result.graph.op_counts()["DequantizeLinear"] == 2  # the Sigmoid's stays
    assert "QuantizeLinear" not in result.graph.op_counts()
    _assert_same_on(g, result.graph, {"xq": _codes(dtype).reshape(1, 256)})


@pytest.mark.parametrize(("a", "b"), [
    (_p(0.05, 3), _p(0.1, -7)),
    (_p(0.25, 0), _p(0.125, 128, "u8")),          # int8 -> uint8, ratio 2: ties everywhere
    (_p(0.5, 200, "u8"), _p(0.01, 0)),             # saturates at both ends
    (_p([0.1, 0.2, 0.4], [0, 5, -5], axis=1), _p(0.15, 10)),
    (_p(0.1, 1), _p([0.1, 0.3, 0.05], [1, 2, 3], axis=1)),
])
def test_different_parameters_become_requantize_typed_with_the_q_parameters(a, b):
    g = Graph("pair")
    xq = _int_input(g, a, (2, 3, 256 // 3 + 1))
    q = qdq.add_quantize(g, qdq.add_dequantize(g, xq), b)
    g.set_outputs([q])
    result = _run_pass(g)
    assert result.stats == {"cancel-qdq: requantize": 1}
    (node,) = result.graph.nodes
    assert node.op == "Requantize" and node.outputs[0].type == q.type
    assert qc.parse(result.graph.to_text(inline_constants=True)) == result.graph
    codes = np.resize(_codes(a.dtype.value), (2, 3, 86))
    _assert_same_on(g, result.graph, {"xq": codes})


def test_equal_parameters_whose_round_trip_overflows_become_requantize():
    """k * scale overflows float32 for the largest codes: the pair is not the identity."""
    params = _p(1e37, 0)
    g = Graph("huge")
    xq = _int_input(g, params, (256,))
    g.set_outputs([qdq.add_quantize(g, qdq.add_dequantize(g, xq), params)])
    assert any("not the identity" in r for r in _reasons(g))
    result = _run_pass(g)
    assert result.stats == {"cancel-qdq: requantize": 1}
    _assert_same_on(g, result.graph, {"xq": _codes("i8")})


def test_requantize_refuses_two_different_axes():
    g = Graph("axes")
    xq = _int_input(g, _p([0.1, 0.2], [0, 0], axis=0), (2, 3))
    g.set_outputs([qdq.add_quantize(g, qdq.add_dequantize(g, xq),
                                    _p([0.1, 0.2, 0.3], [0, 0, 0], axis=1))])
    assert any("Requantize takes one axis" in r for r in _reasons(g))
    assert not _run_pass(g).changed


def test_a_graph_input_is_not_renamed_into_a_graph_output():
    params = _p(0.1, 0)
    g = Graph("names")
    xq = _int_input(g, params, (4,))
    g.set_outputs([qdq.add_quantize(g, qdq.add_dequantize(g, xq), params)])
    assert any("keeps both names apart" in r for r in _reasons(g))
    assert not _run_pass(g).changed


def test_dynamic_parameters_are_refused_with_a_reason():
    g = Graph("dynamic")
    xq = g.add_input("xq", TensorType(DType.I8, (4,)))
    scale = g.add_input("s", TensorType(DType.F32, ()))
    real = g.add_node("DequantizeLinear", [xq, scale]).outputs[0]
    g.set_outputs([qdq.add_quantize(g, real, _p(0.1, 0))])
    assert any("not a constant" in r for r in _reasons(g))


# -- Relu and Clip absorbed ------------------------------------------------------------------------


def _absorb_graph(dq_params: QuantParams, q_params: QuantParams, act: str,
                  bounds: tuple[float | None, float | None] = (None, None)) -> Graph:
    g = Graph("absorb")
    xq = _int_input(g, dq_params, (256,))
    real = qdq.add_dequantize(g, xq)
    if act == "Relu":
        y = g.add_node("Relu", [real]).outputs[0]
    else:
        operands = [g.add_constant(np.float32(b), f"b{k}") if b is not None else None
                    for k, b in enumerate(bounds)]
        while operands and operands[-1] is None:
            operands.pop()
        y = g.add_node("Clip", [real, *operands]).outputs[0]
    g.set_outputs([qdq.add_quantize(g, y, q_params)])
    return g


def _quantize(x: float, params: QuantParams) -> int:
    return int(quantize_linear(np.array([x], np.float32), np.float32(params.scale[0]),
                               np.array(params.zero_point[0], params.dtype.np))[0])


def _q_of_clip_differs(params: QuantParams, lo: float, hi: float) -> bool:
    """A float input where Q(clip(x)) != Q(x): the evidence that absorbing would be wrong."""
    probes = np.float32([-3e38, -1e6, lo - params.scale[0], 3e38, 1e6, hi + params.scale[0]])
    return any(_quantize(float(np.clip(x, lo, hi)), params) != _quantize(float(x), params)
               for x in probes)


DQ_PARAMS = [_p(0.05, -128), _p(0.05, 0), _p(0.1, 127), _p(0.0625, 0, "u8"),
             _p(0.3, 200, "u8")]
Q_SCALES = [0.05, 0.1, 0.0625]


def _describe(params: QuantParams) -> str:
    return f"{params.dtype}-s{params.scale[0]:g}-z{params.zero_point[0]}"


@pytest.mark.parametrize("q_dtype", ["i8", "u8"])
@pytest.mark.parametrize("dq_params", DQ_PARAMS, ids=_describe)
def test_relu_absorbed_exactly_when_the_zero_point_is_the_dtype_minimum(dq_params, q_dtype):
    info = np.iinfo(DType(q_dtype).np)
    fired = refused = 0
    for scale in Q_SCALES:
        for zero in (int(info.min), int(info.min) + 1, int(info.min) + 64, int(info.max)):
            q_params = _p(scale, zero, q_dtype)
            g = _absorb_graph(dq_params, q_params, "Relu")
            result = _run_pass(g)
            absorbed = result.stats.get("cancel-qdq: absorb-relu", 0)
            assert absorbed == (zero == info.min)
            _assert_same_on(g, result.graph, {"xq": _codes(dq_params.dtype.value)})
            if absorbed:
                fired += 1
            else:
                refused += 1
                assert any(f"not to {q_dtype}'s minimum" in r for r in _reasons(g))
                assert _q_of_clip_differs(q_params, 0.0, np.inf)
    assert fired and refused


CLIP_OFFSETS = [None, -3.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]  # in steps beyond the limit


def _bound(params: QuantParams, end: int, offset: float | None, outward: float) -> float | None:
    if offset is None:
        return None
    return float(np.float32(params.scale[0] * (end - params.zero_point[0] + outward * offset)))


@pytest.mark.parametrize("q_dtype", ["i8", "u8"])
@pytest.mark.parametrize("dq_params", DQ_PARAMS, ids=_describe)
def test_clip_absorbed_exactly_when_its_bounds_quantize_to_the_limits(dq_params, q_dtype):
    """Every pair of bound offsets (ties of half a step included) on every DQ input."""
    info = np.iinfo(DType(q_dtype).np)
    q_params = _p(0.1, int(info.min) + 3, q_dtype)
    fired = refused = 0
    for lo_offset in CLIP_OFFSETS:
        for hi_offset in CLIP_OFFSETS:
            lo = _bound(q_params, int(info.min), lo_offset, -1.0)
            hi = _bound(q_params, int(info.max), hi_offset, 1.0)
            g = _absorb_graph(dq_params, q_params, "Clip", (lo, hi))
            lo_f, hi_f = (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
            exact = (_quantize(lo_f, q_params) == info.min
                     and _quantize(hi_f, q_params) == info.max)
            result = _run_pass(g)
            assert bool(result.stats.get("cancel-qdq: absorb-clip")) == exact, (lo, hi)
            _assert_same_on(g, result.graph, {"xq": _codes(dq_params.dtype.value)})
            if exact:
                fired += 1
            else:
                refused += 1
                assert _q_of_clip_differs(q_params, lo_f, hi_f)
    assert fired and refused


# -- DQ moved below data movement ------------------------------------------------------------


def _moved(params: QuantParams, shape: tuple, op: str, operands=(), attrs=None, n_out=1):
    """xq -> DQ -> op -> outputs (float), and 64 random feeds over the whole code range."""
    g = Graph("move")
    xq = _int_input(g, params, shape)
    real = qdq.add_dequantize(g, xq)
    consts = [g.add_constant(np.asarray(a), f"c{k}") if a is not None else None
              for k, a in enumerate(operands)]
    node = g.add_node(op, [real, *consts], attrs or {}, outputs=n_out)
    g.set_outputs(list(node.outputs))
    info = np.iinfo(params.dtype.np)
    rng = np.random.default_rng(0)
    feeds = [{"xq": rng.integers(info.min, info.max, shape, endpoint=True).astype(
        params.dtype.np)} for _ in range(64)]
    return g, feeds


def _check_moved(g: Graph, feeds, fires: bool, reason: str | None = None) -> Graph:
    result = _run_pass(g)
    assert bool(result.stats.get("cancel-qdq: propagate-dq")
                or result.stats.get("cancel-qdq: propagate-dq-concat")) == fires
    if reason is not None:
        assert any(reason in r for r in _reasons(g)), _reasons(g)
    for feed in feeds:
        _assert_same_on(g, result.graph, feed)
    return result.graph


MAXPOOLS = [({"kernel_shape": [2, 2]}, True), ({"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
            True), ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, True),
            ({"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, False),
            ({"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER", "strides": [2, 2]}, True)]


@pytest.mark.parametrize(("attrs", "fires"), MAXPOOLS, ids=[str(a) for a, _ in MAXPOOLS])
@pytest.mark.parametrize("params", [_p(0.1, -128), _p(0.05, 200, "u8")], ids=_describe)
def test_maxpool_on_integers_unless_a_window_is_only_padding(params, attrs, fires):
    g, feeds = _moved(params, (1, 2, 5, 5), "MaxPool", attrs=attrs)
    after = _check_moved(g, feeds, fires, None if fires else "covers only padding")
    if fires:
        assert after.nodes[0].op == "MaxPool" and after.nodes[0].outputs[0].dtype == params.dtype
        assert after.nodes[0].outputs[0].type.quant == params


MOVES = [
    ("Reshape", [np.array([2, -1], np.int64)], {}), ("Flatten", [], {"axis": 2}),
    ("Transpose", [], {"perm": [0, 2, 3, 1]}), ("Unsqueeze", [np.array([1], np.int64)], {}),
    ("Squeeze", [np.array([2], np.int64)], {}),
    ("Slice", [np.array([1], np.int64), np.array([3], np.int64), np.array([2], np.int64)], {}),
    ("GlobalMaxPool", [], {}),
    ("Resize", [None, np.array([1, 1, 2, 1.5], np.float32)], {"mode": "nearest"}),
]


@pytest.mark.parametrize("params", [_p(0.07, 5), _p(0.3, 250, "u8")], ids=_describe)
@pytest.mark.parametrize(("op", "operands", "attrs"), MOVES, ids=[m[0] for m in MOVES])
def test_per_tensor_parameters_move_through_each_data_movement_op(op, operands, attrs, params):
    shape = (2, 3, 1, 5) if op == "Squeeze" else (2, 3, 4, 5)
    g, feeds = _moved(params, shape, op, operands, attrs)
    after = _check_moved(g, feeds, True)
    assert after.nodes[0].op == op and after.nodes[0].outputs[0].dtype == params.dtype


PADS = np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)


@pytest.mark.parametrize(("operands", "attrs", "fires"), [
    ([PADS], {}, True), ([PADS, np.array(0.0, np.float32)], {}, True),
    ([PADS], {"mode": "reflect"}, True), ([PADS], {"mode": "edge"}, True),
    ([PADS, np.array(0.71, np.float32)], {}, False)],
    ids=["zero", "explicit zero", "reflect", "edge", "not a level"])
@pytest.mark.parametrize("params", [_p(0.07, 5), _p(0.3, 250, "u8")], ids=_describe)
def test_pad_moves_with_its_value_quantized_when_that_value_is_a_level(params, operands, attrs,
                                                                       fires):
    g, feeds = _moved(params, (2, 3, 4, 5), "Pad", operands, attrs)
    after = _check_moved(g, feeds, fires, None if fires else "is not a quantization level")
    if fires:
        pad = after.nodes[0]
        assert pad.op == "Pad" and pad.outputs[0].dtype == params.dtype
        if attrs.get("mode", "constant") == "constant":  # 0 pads with the zero point
            assert int(pad.inputs[2].data) == params.zero_point[0]
        else:
            assert len(pad.inputs) == 2


def test_every_data_movement_op_is_checked_on_integers():
    """A new data-movement op must get a test here before the rule moves DQs through it."""
    tested = {m[0] for m in MOVES} | {"MaxPool", "Split", "Concat", "Pad"}
    assert tested == set(DATA_MOVEMENT)


def test_split_moves_with_a_dq_on_each_output():
    g, feeds = _moved(_p(0.07, 5), (2, 3, 4, 5), "Split", [np.array([1, 3], np.int64)],
                      {"axis": 2}, n_out=2)
    after = _check_moved(g, feeds, True)
    assert after.op_counts() == {"Split": 1, "DequantizeLinear": 2}


@pytest.mark.parametrize(("attrs", "reason"), [
    ({"mode": "linear"}, "interpolates"),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize"},
     "extrapolates"),
])
def test_resize_that_computes_new_values_is_refused(attrs, reason):
    operands = [np.array([0, 0, 0, 0, 1, 1, 1, 1], np.float32),
                np.array([1, 1, 2, 2], np.float32)]
    g, feeds = _moved(_p(0.07, 5), (1, 2, 3, 3), "Resize", operands, attrs)
    _check_moved(g, feeds, False, reason)


PER_AXIS = _p([0.1, 0.2, 0.05], [0, -3, 7], axis=1)


@pytest.mark.parametrize(("op", "operands", "attrs", "axis"), [
    ("Transpose", [], {"perm": [0, 2, 3, 1]}, 3),
    ("Reshape", [np.array([2, 3, 20], np.int64)], {}, 1),
    ("Unsqueeze", [np.array([0], np.int64)], {}, 2),
    ("Flatten", [], {"axis": 0}, "split or merged"),
    ("Reshape", [np.array([6, 20], np.int64)], {}, "split or merged"),
    ("Slice", [np.array([1], np.int64), np.array([3], np.int64), np.array([3], np.int64)], {},
     1),
    ("Slice", [np.array([1], np.int64), np.array([3], np.int64), np.array([1], np.int64)], {},
     "may cut that axis"),
    ("MaxPool", [], {"kernel_shape": [2, 2]}, 1),
    ("Resize", [None, np.array([1, 1, 2, 2], np.float32)], {"mode": "nearest"}, "only"),
])
def test_per_axis_parameters_move_only_where_their_axis_survives(op, operands, attrs, axis):
    g, feeds = _moved(PER_AXIS, (2, 3, 4, 5), op, operands, attrs)
    moves = isinstance(axis, int)
    after = _check_moved(g, feeds, moves, None if moves else axis)
    if moves:
        dq = after.find_nodes("DequantizeLinear")[0]
        assert dq.attrs["axis"] == axis and qdq.params_of(dq).axis == axis
        assert after.nodes[0].outputs[0].type.quant.axis == axis


def _concat_graph(params_list, axis=1):
    g = Graph("concat")
    parts = []
    for k, params in enumerate(params_list):
        xq = g.add_input(f"x{k}", TensorType(params.dtype, (1, 3, 2, 2), params))
        parts.append(qdq.add_dequantize(g, xq))
    g.set_outputs([g.add_node("Concat", parts, {"axis": axis}).outputs[0]])
    rng = np.random.default_rng(1)
    feeds = [{f"x{k}": rng.integers(-128, 127, (1, 3, 2, 2), endpoint=True).astype(np.int8)
              for k in range(len(params_list))} for _ in range(16)]
    return g, feeds


def test_concat_of_dqs_with_equal_parameters_concatenates_integers():
    g, feeds = _concat_graph([_p(0.1, 3)] * 3)
    after = _check_moved(g, feeds, True)
    assert after.op_counts() == {"Concat": 1, "DequantizeLinear": 1}


@pytest.mark.parametrize(("params_list", "axis", "reason"), [
    ([_p(0.1, 3), _p(0.1, 4)], 1, "same parameters"),
    ([PER_AXIS, PER_AXIS], 1, "concatenates along the per-axis"),
])
def test_concat_refused(params_list, axis, reason):
    g, feeds = _concat_graph(params_list, axis)
    _check_moved(g, feeds, False, reason)


def test_per_axis_concat_along_another_axis_moves():
    g, feeds = _concat_graph([PER_AXIS, PER_AXIS], axis=2)
    _check_moved(g, feeds, True)


# -- islands: a removed rounding, on purpose ----------------------------------------------------


def _island_graph(reader: str = "Sigmoid", source: str | None = None,
                  requantized: bool = False) -> Graph:
    g = Graph("island")
    x = g.add_input("x", TensorType(DType.F32, (1, 2, 3, 3)))
    if source == "Conv":
        x = g.add_node("Conv", [x, g.add_constant(np.full((2, 2, 1, 1), 0.5, np.float32))]
                       ).outputs[0]
    _, real = qdq.insert_qdq(g, x, _p(0.25, 0))
    if reader == "Conv":
        y = g.add_node("Conv", [real, g.add_constant(np.ones((2, 2, 1, 1), np.float32))])
    else:
        y = g.add_node(reader, [real])
    out = y.outputs[0]
    if requantized:  # an integer result: lower-int may make the reader a lookup table
        g.set_outputs([qdq.add_quantize(g, out, _p(0.01, -128))])
    else:
        g.set_outputs([g.add_node("Identity", [out]).outputs[0]])
    return g


def test_an_island_is_removed_and_the_float_result_is_what_remains():
    g = _island_graph()
    result = _run_pass(g, "cancel-qdq")
    assert result.stats == {"cancel-qdq: remove-island": 1}
    assert result.graph.op_counts() == {"Sigmoid": 1, "Identity": 1}
    x = (np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3) - 9) / 7
    sigmoid = qc.ops.get("Sigmoid").kernel
    np.testing.assert_array_equal(run_graph(result.graph, {"x": x})["identity"], sigmoid(x))
    before = run_graph(g, {"x": x})["identity"]
    assert not np.array_equal(before, sigmoid(x))  # the rounding it removed was real
    assert not _run_pass(g, EXACT).changed  # and the exact pass keeps it


@pytest.mark.parametrize(("graph", "reason"), [
    (lambda: _island_graph("Conv"), "may read %"),
    (lambda: _island_graph(requantized=True), "may read %"),  # DQ -> Sigmoid -> Q: a table
    (lambda: _island_graph(source="Conv"), "comes from Conv"),
], ids=["conv-reader", "table-reader", "conv-source"])
def test_an_island_an_integer_op_may_use_is_kept(graph, reason):
    g = graph()
    assert any(reason in r for r in _reasons(g, islands=True)), _reasons(g, islands=True)
    assert "cancel-qdq: remove-island" not in _run_pass(g, "cancel-qdq").stats


def test_an_island_whose_dq_is_a_graph_output_is_kept():
    g = Graph("out")
    x = g.add_input("x", TensorType(DType.F32, (4,)))
    _, real = qdq.insert_qdq(g, x, _p(0.25, 0))
    g.set_outputs([real])
    assert any("graph output" in r for r in _reasons(g, islands=True))
    assert not _run_pass(g, "cancel-qdq").changed


def test_on_random_graphs_islands_remove_only_q_dq_pairs():
    """The full pass on random QDQ graphs (islands included) differs from the exact one only
    by the Q -> DQ pairs it removed, and it removed some."""
    removed = Counter()

    @FEWER
    @given(qdq_graphs(islands=True))
    def run(graph):
        exact = _run_pass(graph, EXACT).graph
        full = _run_pass(graph, "cancel-qdq")
        full.graph.verify()
        pairs = full.stats.get("cancel-qdq: remove-island", 0)
        want = Counter(exact.op_counts())
        want.subtract({"QuantizeLinear": pairs, "DequantizeLinear": pairs})
        assert +want == Counter(full.graph.op_counts())
        removed["pairs"] += pairs

    run()
    assert removed["pairs"] > 0


def test_requantize_spells_out_absent_zero_points():
    """ONNX lets Q and DQ omit the zero point (0; Q then makes uint8)."""
    g = Graph("implicit")
    xq = g.add_input("xq", TensorType(DType.I8, (256,)))
    real = g.add_node("DequantizeLinear", [xq, g.add_constant(np.float32(0.03), "s")])
    q = g.add_node("QuantizeLinear", [real.outputs[0], g.add_constant(np.float32(0.05), "t")])
    g.set_outputs(q.outputs)
    result = _run_pass(g)
    assert result.stats == {"cancel-qdq: requantize": 1}
    assert result.graph.nodes[0].outputs[0].dtype == DType.U8
    _assert_same_on(g, result.graph, {"xq": _codes("i8")})
