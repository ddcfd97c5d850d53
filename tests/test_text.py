"""The text form round-trips: parse(print(g)) == g, for hypothesis-drawn graphs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import qcompiler as qc
from qcompiler.graph import Graph
from qcompiler.text import format_attr, parse
from qcompiler.types import QuantParams, TensorType

names = st.text(
    alphabet=st.sampled_from("abcXYZ_019./:\"' -#%@{}[]é"), min_size=1, max_size=12
)
floats32 = st.floats(width=32, allow_nan=False)
UNARY = ["Relu", "Neg", "Abs", "Tanh", "Sigmoid", "HardSwish"]


@st.composite
def graphs(draw) -> Graph:
    g = Graph(draw(names))
    shape = tuple(draw(st.lists(st.one_of(st.integers(1, 4), st.sampled_from(["N", "batch"])),
                                min_size=1, max_size=3)))
    quant = draw(st.none() | st.builds(
        QuantParams, st.floats(1e-6, 10.0), st.integers(-128, 127), st.just("i8")))
    values = [g.add_input(draw(names), TensorType("f32", shape))]
    if quant is not None:
        values.append(g.add_input(g.fresh_name(draw(names)), TensorType("i8", shape, quant)))
    for _ in range(draw(st.integers(1, 6))):
        x = draw(st.sampled_from([v for v in values if v.dtype == "f32"]))
        kind = draw(st.sampled_from(["unary", "leaky", "hardsigmoid", "gelu", "binary"]))
        name = draw(names)
        if kind == "unary":
            node = g.add_node(draw(st.sampled_from(UNARY)), [x], name=name)
        elif kind == "leaky":
            node = g.add_node("LeakyRelu", [x], {"alpha": draw(floats32)}, name=name)
        elif kind == "hardsigmoid":
            node = g.add_node("HardSigmoid", [x], {"alpha": draw(floats32),
                                                    "beta": draw(floats32)}, name=name)
        elif kind == "gelu":
            node = g.add_node("Gelu", [x], {"approximate": draw(st.sampled_from(["none", "tanh"]))},
                              name=name)
        else:
            size = x.shape[-1] if isinstance(x.shape[-1], int) else 1
            rows = draw(st.sampled_from([1, 20]))
            data = draw(st.lists(floats32, min_size=rows * size, max_size=rows * size))
            const = np.array(data, np.float32).reshape(rows, size) if rows > 1 else np.array(
                data, np.float32)
            c = g.add_constant(const, draw(names))
            if rows > 1 and len(x.shape) > 2 or (rows > 1 and isinstance(x.shape[0], int)
                                                 and len(x.shape) == 2 and x.shape[0] != 1):
                c = g.add_constant(const[:1], draw(names))
            node = g.add_node(draw(st.sampled_from(["Add", "Mul", "Sub"])), [x, c], name=name)
        values.append(node.outputs[0])
    outs = draw(st.lists(st.sampled_from(values[1:] or values), min_size=1, max_size=3,
                         unique_by=id))
    g.set_outputs(outs)
    return g


@given(graphs())
def test_text_round_trips_with_constants_by_reference(g):
    g.verify()
    text = str(g)
    h = parse(text, g.constant_arrays())
    assert h == g
    assert str(h) == text


@given(graphs())
def test_text_round_trips_with_every_constant_inline(g):
    h = qc.parse(g.to_text(inline_constants=True))
    assert h == g


@pytest.mark.parametrize("value", [
    0, -7, 0.1, -1.5e-30, float("inf"), float("-inf"), "a \"quoted\" string", (), (1, 2, -3),
    (0.5, 2.0), ("x", "y"), True, np.array([[1, 2]], np.int64), np.array(0.25, np.float32),
])
def test_attribute_values_round_trip(value):
    g = Graph()
    x = g.add_input("x", TensorType("f32", (2,)))
    node = g.add_node("Relu", [x], name="r")
    node.attrs["v"] = value  # not a Relu attribute: verify() would refuse it; only text here
    text = format_attr(value)
    from qcompiler.text import _attr, _Tokens

    parsed = _attr(_Tokens(text))
    if isinstance(value, np.ndarray):
        assert parsed.dtype == value.dtype and np.array_equal(parsed, value)
    else:
        assert parsed == value and type(parsed) is type(value)


def test_parse_reports_line_and_column():
    text = "graph g(%x: f32[2]) {\n  %y: f32[2] = Relu(%z) @r\n  return %y\n}\n"
    with pytest.raises(qc.ParseError, match=r"line 2, column \d+: %z is not defined"):
        parse(text)


def test_parse_names_a_missing_constant_reference():
    text = "graph g() {\n  %w: f32[100] = const @w\n  return %w\n}\n"
    with pytest.raises(qc.ParseError, match="constant @w is not in the constants"):
        parse(text)


def test_parse_checks_types_with_verify():
    text = "graph g(%x: f32[2]) {\n  %y: f32[3] = Relu(%x) @r\n  return %y\n}\n"
    with pytest.raises(qc.VerificationError, match="typed f32\\[3\\] but Relu gives f32\\[2\\]"):
        parse(text)


def test_quantized_types_print_their_parameters():
    g = Graph("q")
    q = QuantParams((0.5, 0.25), (0, 0), "i8", axis=0, qmin=-127, qmax=127)
    g.add_input("w", TensorType("i8", (2, 3), q))
    g.set_outputs(g.inputs)
    assert "i8[2,3] q(axis=0, scale=[0.5, 0.25], zero_point=[0, 0], qmin=-127, qmax=127)" in str(g)
    assert parse(str(g)) == g


@pytest.mark.parametrize("text, message", [
    ('graph g(%x: f32[N,1e999]) {\n  return %x\n}\n', r"line 1, column 19: bad dimension"),
    ('graph g(%x: f32[-3]) {\n  return %x\n}\n', r"line 1, .*dimension -3 is negative"),
    ('graph g(%x: f32[2]) {\n  %r: f32[2] = Relu(%x) @"\\q"\n  return %r\n}\n',
     r"line 2, column 26: bad quoted name: Invalid \\escape"),
    ('graph g(%x: f32[2]) {\n  %r: f32[2] = Relu(%x) {a = "\\x"} @r\n  return %r\n}\n',
     r"line 2, column 30: bad string"),
    ('graph g(%x: f32[2]) {\n  %r: f32[2] = Relux(%x) @r\n  return %r\n}\n',
     r"line 2, column 16: op 'Relux' is not registered; did you mean"),
])
def test_malformed_literals_are_parse_errors_with_a_position(text, message):
    with pytest.raises(qc.ParseError, match=message):
        parse(text)


def test_lists_nested_too_deep_are_a_parse_error_not_a_recursion_error():
    text = ("graph g() {\n  %c: f32[1] = const dense<" + "[" * 5000 + "1.0" + "]" * 5000
            + ">\n  return %c\n}\n")
    with pytest.raises(qc.ParseError, match="lists nest more than 32 deep"):
        parse(text)
