"""The fused forms of Conv, ConvTranspose, Gemm and MatMul (qcompiler extensions of the ONNX ops).

A fused node must equal, bit for bit, the plain op followed by the separate registry ops it
stands for: Add of the residual Z (Conv) or of the bias (MatMul), then the activation node.
Shapes come from the strategies of test_ops_nn and stay small so the file runs quickly.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper
from op_check import infer, refuse, run_kernel
from test_ops_nn import conv_cases, conv_transpose_cases, gemm_cases, rand

import qcompiler as qc
from qcompiler import ops
from qcompiler.errors import ShapeInferenceError
from qcompiler.graph import Graph, Value
from qcompiler.types import DType, TensorType

ACTIVATIONS = ["", "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish"]
EXTENSION_INPUT = {"Conv": 3, "MatMul": 2}  # index of the fused op's extra addend
bounds = st.one_of(st.floats(-3, 3), st.sampled_from([-math.inf, math.inf]))
slopes = st.floats(-2, 2)


def draw_params(draw, name: str) -> tuple:
    """Random valid activation_params of activation ``name`` (Clip's bounds may cross)."""
    if name == "Clip":
        return (draw(bounds), draw(bounds))
    if name == "LeakyRelu":
        return (draw(slopes),)
    if name == "HardSigmoid":
        return (draw(slopes), draw(slopes))
    return ()


def standalone(y: np.ndarray, name: str, params: tuple) -> np.ndarray:
    """``y`` through the activation as its own registry node would compute it."""
    if name == "Clip":
        bounds_ = [np.array(p, y.dtype) for p in params]
        return run_kernel("Clip", [y, *bounds_], {})[0]
    if name == "LeakyRelu":
        return run_kernel("LeakyRelu", [y], {"alpha": params[0]})[0]
    if name == "HardSigmoid":
        return run_kernel("HardSigmoid", [y], {"alpha": params[0], "beta": params[1]})[0]
    return run_kernel(name, [y], {})[0] if name else y


def check_fused(op_type: str, inputs: list, attrs: dict, name: str, params: tuple,
                addend: np.ndarray | None = None) -> None:
    """Fused kernel == plain kernel, Add(addend), activation node; bit for bit. Inference
    must accept the fused node and give the type of the fused result."""
    expected = run_kernel(op_type, inputs, attrs)[0]
    fused_inputs = list(inputs)
    if addend is not None:
        expected = run_kernel("Add", [expected, addend], {})[0]
        k = EXTENSION_INPUT[op_type]
        fused_inputs += [None] * (k - len(inputs)) + [addend]
    expected = np.asarray(standalone(expected, name, params))
    fused_attrs = {**attrs, "activation": name, "activation_params": params}
    actual = np.asarray(run_kernel(op_type, fused_inputs, fused_attrs)[0])
    assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape)
    np.testing.assert_array_equal(actual, expected)
    assert actual.tobytes() == expected.tobytes()  # also the signs of zeros
    (t,) = infer(op_type, fused_inputs, fused_attrs)
    assert (t.dtype.np, t.shape) == (actual.dtype, actual.shape)


def as_f16(inputs: list) -> list:
    return [None if a is None else a.astype(np.float16) for a in inputs]


# ---------------------------------------------------------------------------------------------
# Fused kernel == composition of the unfused kernels.


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=conv_cases(), data=st.data())
def test_conv(name, case, data):
    inputs, attrs = case
    params = draw_params(data.draw, name)
    residual = data.draw(st.booleans())
    if residual:
        out = infer("Conv", inputs, attrs)[0].shape
        check_fused("Conv", inputs, attrs, name, params, rand(data.draw, out))
    else:
        f16 = data.draw(st.booleans())
        check_fused("Conv", as_f16(inputs) if f16 else inputs, attrs, name, params)


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=conv_transpose_cases(), f16=st.booleans(), data=st.data())
def test_conv_transpose(name, case, f16, data):
    inputs, attrs = case
    check_fused("ConvTranspose", as_f16(inputs) if f16 else inputs, attrs, name,
                draw_params(data.draw, name))


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(case=gemm_cases(("none", "n", "m1", "mn")), f16=st.booleans(), data=st.data())
def test_gemm(name, case, f16, data):
    inputs, attrs = case
    check_fused("Gemm", as_f16(inputs) if f16 else inputs, attrs, name,
                draw_params(data.draw, name))


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(data=st.data())
def test_matmul(name, data):
    k, m, n = (data.draw(st.integers(1, 5)) for _ in range(3))
    kind = data.draw(st.sampled_from(["2d", "batched", "1d-nd"]))
    batch = [data.draw(st.integers(1, 3)) for _ in range(data.draw(st.integers(1, 2)))]
    ones = [1 if data.draw(st.booleans()) else d for d in batch]  # broadcast batch dims
    a_shape = {"2d": [m, k], "batched": [*batch, m, k], "1d-nd": [k]}[kind]
    b_shape = {"2d": [k, n], "batched": [*ones[data.draw(st.integers(0, len(batch))):], k, n],
               "1d-nd": [*batch, k, n]}[kind]
    inputs = [rand(data.draw, a_shape), rand(data.draw, b_shape)]
    params = draw_params(data.draw, name)
    if data.draw(st.booleans()):
        check_fused("MatMul", inputs, {}, name, params, rand(data.draw, (n,)))
    else:
        f16 = data.draw(st.booleans())
        check_fused("MatMul", as_f16(inputs) if f16 else inputs, {}, name, params)


def test_matmul_int32_bias():
    rng = np.random.default_rng(3)
    a = rng.integers(-100, 100, (2, 3, 4)).astype(np.int32)
    b = rng.integers(-100, 100, (4, 5)).astype(np.int32)
    check_fused("MatMul", [a, b], {}, "", (), rng.integers(-9, 9, 5).astype(np.int32))


def test_activation_params_are_the_standalone_ops_attributes():
    """apply_activation maps params onto the standalone op's attributes (Clip: its inputs)."""
    for name, params in ops.ACTIVATIONS.items():
        opdef = ops.get(name)
        declared = opdef.input_names[1:] if name == "Clip" else tuple(opdef.attrs)
        assert params == declared, name


def test_extensions_are_marked():
    fused = {"activation", "activation_params"}
    assert ops.get("Conv").extensions == fused | {"Z"}
    assert ops.get("MatMul").extensions == fused | {"bias"}
    assert ops.get("Gemm").extensions == ops.get("ConvTranspose").extensions == fused
    assert [n for n, d in ops.OPS.items() if d.extensions] == [
        "Conv", "ConvTranspose", "MatMul", "Gemm"]
    for op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        assert "qcompiler extension" in ops.get(op_type).doc


def test_an_extension_must_name_an_input_or_attribute():
    with pytest.raises(ValueError, match="neither inputs nor attributes"):
        ops.OpDef("Fake", ("X", "Y?"), ("Z",), {"a": 1}, lambda ctx: [], lambda x: x,
                  extensions=frozenset({"a", "Y", "W"}))


# ---------------------------------------------------------------------------------------------
# Inference.


def graph_with(*specs: tuple[str, str, tuple]) -> tuple[Graph, list[Value]]:
    g = Graph("fused")
    return g, [g.add_input(name, TensorType(DType(dtype), shape)) for name, dtype, shape in specs]


def test_inference_accepts_fused_nodes():
    g, (x, w, b, z, a, m, v) = graph_with(
        ("x", "f32", ("N", 4, 6, 6)), ("w", "f32", (8, 4, 3, 3)), ("b", "f32", (8,)),
        ("z", "f32", ("N", 8, 4, 4)), ("a", "f32", ("N", 7, 5)), ("m", "f32", (5, 8)),
        ("v", "f32", (5,)))
    relu6 = {"activation": "Clip", "activation_params": (0.0, 6.0)}
    conv = g.add_node("Conv", [x, w, None, z], relu6)
    assert conv.outputs[0].shape == ("N", 8, 4, 4)
    add = g.add_node("Conv", [x, w, b, z], {"activation": "Relu"})
    assert add.outputs[0].shape == ("N", 8, 4, 4)
    mm = g.add_node("MatMul", [a, m, b], {"activation": "HardSwish"})
    assert mm.outputs[0].shape == ("N", 7, 8)
    vec = g.add_node("MatMul", [v, m, b], {"activation": "LeakyRelu",
                                          "activation_params": (0.125,)})
    assert vec.outputs[0].shape == (8,)
    gemm = g.add_node("Gemm", [m, m], {"transA": 1, "activation": "HardSigmoid",
                                       "activation_params": (0.2, 0.5)})
    assert gemm.outputs[0].shape == (8, 8)
    up = g.add_node("ConvTranspose", [z, w], {"activation": "Clip",
                                              "activation_params": (-math.inf, 1.0)})
    assert up.outputs[0].shape == ("N", 4, 6, 6)


REFUSALS = [
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3))], {"activation": "Gelu"},
     r"Conv: unknown activation 'Gelu'.*allowed: Relu\(\), Clip\(min, max\), "
     r"LeakyRelu\(alpha\), HardSigmoid\(alpha, beta\), HardSwish\(\)"),
    ("Gemm", [("f32", (2, 3)), ("f32", (3, 4))],
     {"activation": "LeakyRelu", "activation_params": (0.1, 0.2)},
     r"Gemm: activation LeakyRelu takes 1 activation_params \(alpha\), got \(0.1, 0.2\)"),
    ("ConvTranspose", [("f32", (1, 2, 3, 3)), ("f32", (2, 1, 3, 3))],
     {"activation": "Clip", "activation_params": (0.0,)},
     r"activation Clip takes 2 activation_params \(min, max\)"),
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3))], {"activation_params": (1.0,)},
     r"activation_params \(1.0,\) are given without an activation"),
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3))],
     {"activation": "Relu", "activation_params": (0.5,)},
     r"activation Relu takes 0 activation_params \(none\)"),
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3))],
     {"activation": "Relu", "activation_params": ("x",)},
     r"attribute 'activation_params' must be a list of floats, got tuple \('x',\)"),
    ("MatMul", [("i32", (2, 3)), ("i32", (3, 4))], {"activation": "Relu"},
     r"MatMul: activation Relu needs a float output \(f32 or f16\), got i32"),
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3)), None, ("f32", (1, 3, 5, 5))], {},
     r"Conv: the residual Z\[1, 3, 5, 5\] must have the output shape \[1, 3, 3, 3\]"),
    ("Conv", [("f32", ("N", 2, 5, 5)), ("f32", (3, 2, 3, 3)), None, ("f32", ("N", 3, 3))],
     {}, r"Conv: the residual Z\['N', 3, 3\] must have the output shape \['N', 3, 3, 3\]"),
    ("Conv", [("f32", (1, 2, 5, 5)), ("f32", (3, 2, 3, 3)), None, ("f16", (1, 3, 3, 3))], {},
     r"Conv: Z is f16 but X is f32"),
    ("MatMul", [("f32", (2, 3)), ("f32", (3, 4)), ("f32", (3,))], {},
     r"MatMul: bias must have shape \[4\] \(one value per column of B\[3, 4\]\), got \[3\]"),
    ("MatMul", [("f32", (2, 3)), ("f32", (3, 4)), ("f32", (1, 4))], {},
     r"MatMul: bias must have shape \[4\]"),
    ("MatMul", [("f32", (2, 3)), ("f32", (3,)), ("f32", (2,))], {},
     r"MatMul: a bias needs B of rank >= 2, got B\[3\]"),
    ("MatMul", [("f32", (2, 3)), ("f32", (3, 4)), ("i64", (4,))], {},
     r"MatMul: bias is i64 but A is f32"),
]


@pytest.mark.parametrize("op_type, operands, attrs, match", REFUSALS)
def test_inference_refuses_bad_fused_nodes(op_type, operands, attrs, match):
    refuse(op_type, operands, attrs, ShapeInferenceError, match)


# ---------------------------------------------------------------------------------------------
# The numpy backend, the text form and the ONNX importer.


def block(fused: bool) -> Graph:
    """A residual conv block and a head, written with fused nodes or with separate ones."""
    rng = np.random.default_rng(7)
    g = Graph("block")
    x = g.add_input("x", TensorType(DType.F32, ("N", 3, 6, 6)))

    def const(name: str, *shape: int) -> Value:
        return g.add_constant(rng.standard_normal(shape).astype(np.float32), name)

    def node(op_type: str, inputs: list, attrs: dict, act: str, params: tuple = (),
             addend: Value | None = None) -> Value:
        if fused:
            if addend is not None:
                inputs = [*inputs, *[None] * (EXTENSION_INPUT[op_type] - len(inputs)), addend]
            attrs = {**attrs, "activation": act, "activation_params": params}
            return g.add_node(op_type, inputs, attrs).outputs[0]
        y = g.add_node(op_type, inputs, attrs).outputs[0]
        if addend is not None:
            y = g.add_node("Add", [y, addend]).outputs[0]
        if act == "Clip":
            bounds_ = [g.add_constant(np.array(p, np.float32)) for p in params]
            return g.add_node("Clip", [y, *bounds_]).outputs[0]
        names = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta")}.get(act, ())
        return g.add_node(act, [y], dict(zip(names, params))).outputs[0]

    pads = {"pads": (1, 1, 1, 1)}
    stem = node("Conv", [x, const("w1", 4, 3, 3, 3), const("b1", 4)], pads, "Clip", (0.0, 6.0))
    dw = node("Conv", [stem, const("w2", 4, 1, 3, 3)], {**pads, "group": 4}, "Relu", (), stem)
    up = node("ConvTranspose", [dw, const("w3", 4, 2, 2, 2)], {"strides": (2, 2)}, "HardSwish")
    pooled = g.add_node("GlobalAveragePool", [up]).outputs[0]
    flat = g.add_node("Flatten", [pooled]).outputs[0]
    hidden = node("MatMul", [flat, const("w4", 2, 5)], {}, "LeakyRelu", (0.1,), const("b4", 5))
    out = node("Gemm", [hidden, const("w5", 3, 5), const("b5", 3)], {"transB": 1},
               "HardSigmoid", (0.2, 0.5))
    g.set_outputs([out])
    return g


def test_numpy_backend_runs_fused_nodes():
    fused, plain = block(fused=True), block(fused=False)
    assert set(fused.op_counts()) == {"Conv", "ConvTranspose", "GlobalAveragePool", "Flatten",
                                      "MatMul", "Gemm"}
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 6)).astype(np.float32)
    (actual,) = qc.compile(fused, backend="numpy").run({"x": x}).values()
    (expected,) = qc.compile(plain, backend="numpy").run({"x": x}).values()
    assert actual.shape == (2, 3)
    np.testing.assert_array_equal(actual, expected)


def test_text_round_trips_a_fused_conv():
    g, (x, z) = graph_with(("x", "f32", ("N", 2, 5, 5)), ("z", "f32", ("N", 3, 3, 3)))
    w = g.add_constant(np.arange(54, dtype=np.float32).reshape(3, 2, 3, 3) / 7, "w")
    open_clip = {"activation": "Clip", "activation_params": (-math.inf, math.inf)}
    y = g.add_node("Conv", [x, w, None, z], open_clip, name="conv").outputs[0]
    leaky = {"activation": "LeakyRelu", "activation_params": (0.1,)}
    out = g.add_node("Conv", [y, g.add_constant(np.ones((3, 3, 1, 1), np.float32), "w2"), None,
                              y], leaky, name="conv2").outputs[0]
    g.set_outputs([out])
    text = g.to_text(inline_constants=True)
    assert "activation_params = [-inf, inf]" in text
    assert qc.parse(text) == g


def onnx_conv(inputs: list[str], **attrs) -> onnx.ModelProto:
    shapes = {"x": [1, 2, 5, 5], "w": [3, 2, 3, 3], "b": [3], "z": [1, 3, 3, 3]}
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], name="fused_conv", **attrs)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in inputs if n],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("inputs, attrs, feature", [
    (["x", "w"], {"activation": "Relu"}, "attribute activation"),
    (["x", "w", "b"], {"activation_params": [0.0, 6.0]}, "attribute activation_params"),
    (["x", "w", "b", "z"], {}, "input Z"),
    (["x", "w", "", "z"], {}, "input Z"),
])
def test_importer_refuses_extensions(inputs, attrs, feature):
    with pytest.raises(qc.UnsupportedModelError) as info:
        qc.from_onnx(onnx_conv(inputs, **attrs))
    key = f"Conv ({feature}: a qcompiler extension, not ONNX)"
    assert info.value.unsupported == {key: ["fused_conv"]}
    assert f"{key}: fused_conv" in str(info.value)
