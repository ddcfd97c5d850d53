"""LookupTable and lut.make_table: the table of DQ -> f -> Q is bit-exact with that graph on
every int8/uint8 code (exhaustive), through the numpy backend and the Interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import qcompiler as qc
from qcompiler import qdq
from qcompiler.errors import QuantizationError, ShapeInferenceError
from qcompiler.graph import Graph
from qcompiler.interpreter import Interpreter
from qcompiler.lut import make_table
from qcompiler.quant_math import dequantize
from qcompiler.text import print_graph
from qcompiler.types import QuantParams, TensorType

# (op, attrs): the elementwise functions the issue names, with both HardSigmoid conventions
FUNCTIONS = [
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("HardSigmoid", {}),
    ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),  # torch's hardsigmoid
    ("HardSwish", {}),
    ("LeakyRelu", {}),
    ("LeakyRelu", {"alpha": 0.1}),
    ("Exp", {}),
    ("Softplus", {}),
    ("Relu", {}),
    *([("Gelu", {}), ("Gelu", {"approximate": "tanh"})] if "Gelu" in qc.ops.names() else []),
]

# (scale, zero point, dtype): zero points at both limits and in the middle; large and tiny
# scales (tiny output scales saturate the output, large ones collapse it to a few codes)
PARAMS = [
    (0.05, 0, "i8"), (0.1, -128, "i8"), (0.02, 127, "i8"), (0.5, 7, "i8"), (2.0**-8, -20, "i8"),
    (0.05, 128, "u8"), (0.03, 0, "u8"), (0.07, 255, "u8"), (1.0, 100, "u8"), (2.0**-6, 37, "u8"),
]
CASES = [(f, a, p_in, p_out) for f, a in FUNCTIONS
         for p_in, p_out in zip(PARAMS, PARAMS[3:] + PARAMS[:3], strict=True)]
SHAPE = (3, 5, 37)  # 555 elements, an odd layout: the table must not depend on it


def qp(spec: tuple[float, int, str]) -> QuantParams:
    return qdq.exact_params(QuantParams(*spec))


def all_codes(dtype: np.dtype) -> np.ndarray:
    """Every code of ``dtype``, shuffled and repeated to ``SHAPE``."""
    info = np.iinfo(dtype)
    codes = np.arange(info.min, info.max + 1).astype(dtype)
    tiled = np.resize(np.random.default_rng(0).permutation(codes), int(np.prod(SHAPE)))
    return tiled.reshape(SHAPE)


def qdq_graph(op: str, attrs: dict, p_in: QuantParams, p_out: QuantParams) -> Graph:
    g = Graph("qdq")
    x = g.add_input("x", TensorType(p_in.dtype, SHAPE, p_in))
    real = qdq.add_dequantize(g, x)
    y = g.add_node(op, [real], attrs, name="f").outputs[0]
    g.set_outputs([qdq.add_quantize(g, y, p_out)])
    return g


def lut_graph(table: np.ndarray, p_in: QuantParams) -> Graph:
    g = Graph("lut")
    x = g.add_input("x", TensorType(p_in.dtype, SHAPE, p_in))
    g.set_outputs([g.add_node("LookupTable", [x, g.add_constant(table, "table")],
                              name="lut").outputs[0]])
    return g


@pytest.mark.parametrize(("op", "attrs", "spec_in", "spec_out"), CASES,
                         ids=[f"{c[0]}{c[1] or ''}-{c[2]}-{c[3]}" for c in CASES])
def test_table_is_bit_exact_with_the_qdq_graph(op, attrs, spec_in, spec_out):
    p_in, p_out = qp(spec_in), qp(spec_out)
    x = all_codes(p_in.dtype.np)
    with np.errstate(over="ignore"):  # Exp overflows to inf, which saturates
        expected = qc.compile(qdq_graph(op, attrs, p_in, p_out)).run({"x": x})
    table = make_table(op, p_in, p_out, attrs)
    assert table.shape == (256,) and table.dtype == p_out.dtype.np
    got = qc.compile(lut_graph(table, p_in)).run({"x": x})
    (want,), (have,) = expected.values(), got.values()
    assert have.dtype == want.dtype and have.shape == want.shape
    np.testing.assert_array_equal(have, want)
    assert len(np.unique(x)) == 256  # every code was looked up


def test_saturating_and_collapsing_parameters_are_exercised():
    """The parameter grid makes some tables hit both output limits and some collapse to a few
    codes: count that it happened, so the exhaustive test above covers those regimes."""
    saturated = collapsed = 0
    for op, attrs, spec_in, spec_out in CASES:
        table = make_table(op, qp(spec_in), qp(spec_out), attrs)
        info = np.iinfo(table.dtype)
        saturated += bool(np.any(table == info.max))
        collapsed += len(np.unique(table)) <= 8
    assert saturated >= len(CASES) // 4 and collapsed >= 5


def test_a_node_gives_the_table_of_its_op_and_attributes():
    p_in, p_out = qp((0.05, 0, "i8")), qp((1 / 256, -128, "i8"))
    g = qdq_graph("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, p_in, p_out)
    node = g.find_nodes("HardSigmoid")[0]
    np.testing.assert_array_equal(make_table(node, p_in, p_out),
                                  make_table("HardSigmoid", p_in, p_out,
                                             {"alpha": 1 / 6, "beta": 0.5}))
    assert not np.array_equal(make_table(node, p_in, p_out),
                              make_table("HardSigmoid", p_in, p_out))


def test_a_clip_node_reads_its_constant_bounds():
    p_in, p_out = qp((0.05, 0, "i8")), qp((0.02, 0, "i8"))
    g = Graph("clip")
    x = g.add_input("x", TensorType("f32", (4,)))
    lo, hi = g.add_constant(np.float32(-1), "lo"), g.add_constant(np.float32(1.5), "hi")
    node = g.add_node("Clip", [x, lo, hi], name="clip")
    table = make_table(node, p_in, p_out)
    real = dequantize(table, p_out)
    assert real.min() == -1 and real.max() == 1.5


def test_interpreter_runs_the_lookup_table():
    p_in, p_out = qp((0.1, 3, "i8")), qp((1 / 255, 0, "u8"))
    x = all_codes(np.int8)
    table = make_table("Sigmoid", p_in, p_out)
    got = Interpreter(lut_graph(table, p_in)).run({"x": x})
    np.testing.assert_array_equal(next(iter(got.values())), table[x.astype(int) + 128])


def test_text_form_round_trips():
    p_in = qp((0.05, 128, "u8"))
    g = lut_graph(make_table("Tanh", p_in, qp((1 / 128, 0, "i8"))), p_in)
    text = str(g)
    assert "LookupTable(" in text
    back = qc.parse(text, {"table": g.constants["table"].data})
    assert back == g and str(back) == text
    assert qc.parse(print_graph(g, inline_constants=True)) == g  # the table written out in full


def test_make_table_refuses_per_axis_parameters():
    per_axis = QuantParams((0.1, 0.2), (0, 0), "i8", axis=0)
    with pytest.raises(QuantizationError, match="Sigmoid lookup table: input parameters are "
                                                "per axis .*needs per-tensor"):
        make_table("Sigmoid", per_axis, qp((0.1, 0, "i8")))
    g = qdq_graph("Tanh", {}, qp((0.1, 0, "i8")), qp((0.1, 0, "i8")))
    node = g.find_nodes("Tanh")[0]
    with pytest.raises(QuantizationError, match="Tanh node 'f'.*output parameters are per axis"):
        make_table(node, qp((0.1, 0, "i8")), per_axis)


@pytest.mark.parametrize(("op", "attrs", "message"), [
    ("Softmax", {}, "elementwise"),
    ("LeakyRelu", {"beta": 1.0}, "LeakyRelu has no attribute"),
])
def test_make_table_refuses_what_is_not_an_elementwise_op(op, attrs, message):
    with pytest.raises(QuantizationError, match=message):
        make_table(op, qp((0.1, 0, "i8")), qp((0.1, 0, "i8")), attrs)


def test_make_table_refuses_other_dtypes():
    with pytest.raises(QuantizationError, match="output dtype must be i8 or u8.*got i32"):
        make_table("Relu", qp((0.1, 0, "i8")), QuantParams(0.1, 0, "i32"))


def _add_lookup(x_dtype: str, x_shape: tuple, table) -> Graph:
    g = Graph("refused")
    x = g.add_input("x", TensorType(x_dtype, x_shape))
    t = g.add_input("t", TensorType(*table)) if isinstance(table, tuple) else g.add_constant(
        table, "t")
    g.add_node("LookupTable", [x, t], name="layer1")
    return g


@pytest.mark.parametrize(("x_dtype", "table", "message"), [
    ("f32", np.zeros(256, np.int8), "x must be i8 or u8 .*got f32"),
    ("i8", np.zeros(256, np.int32), "table must be i8 or u8 .*got i32"),
    ("u8", np.zeros(255, np.uint8), r"256 entries .*got shape \[255\]"),
    ("i8", np.zeros((2, 128), np.int8), r"256 entries .*got shape \[2, 128\]"),
    ("i8", ("i8", (256,)), "table must be a constant"),
])
def test_inference_errors_name_the_node(x_dtype, table, message):
    with pytest.raises(ShapeInferenceError, match=f"LookupTable node 'layer1'.*{message}"):
        _add_lookup(x_dtype, (2, 3), table)


def test_inference_keeps_the_shape_and_takes_the_table_dtype():
    g = _add_lookup("i8", ("N", 7), np.zeros(256, np.uint8))
    y = g.nodes[0].outputs[0]
    assert y.dtype.value == "u8" and y.shape == ("N", 7)
