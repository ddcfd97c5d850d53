"""Tensor ops: kernels and inferred types against onnxruntime, and shape-tensor propagation."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper, numpy_helper
from op_check import check_op, infer, refuse
from ort_helpers import onnx_type, run_model

from qcompiler import ops
from qcompiler.errors import ShapeInferenceError, UnsupportedModelError
from qcompiler.graph import Graph
from qcompiler.ops._schema import UNKNOWN
from qcompiler.types import DType, TensorType

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.int32, np.int64, np.bool_]


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def values(dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        elements = st.floats(-100, 100, width=dtype.itemsize * 8)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return hnp.arrays(dtype, shape, elements=elements)


def i64(*v):
    return np.array(v, dtype=np.int64)


# -- reshaping ------------------------------------------------------------------------------------


@given(shape=shapes(max_side=3) | shapes(min_side=0, max_side=3), data=st.data())
def test_flatten(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape)))
    check_op("Flatten", [data.draw(values(np.float32, shape))], {"axis": axis})


@st.composite
def reshape_case(draw):
    """An input shape and a target of the same size, with optional 0 (copy) and -1 entries."""
    shape = draw(shapes(max_dims=4, max_side=6))
    factors = [p for d in shape for p in _prime_factors(d)]
    factors = draw(st.permutations(factors))
    cuts = sorted(draw(st.lists(st.integers(0, len(factors)), max_size=3)))
    bounds = [0, *cuts, len(factors)]
    target = [math.prod(factors[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    target = draw(st.permutations(target))
    target = [d for d in target if d != 1 or draw(st.booleans())] or [1]
    allowzero = draw(st.integers(0, 1))
    if not allowzero:
        target = [0 if k < len(shape) and d == shape[k] and draw(st.booleans()) else d
                  for k, d in enumerate(target)]
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return shape, target, allowzero


def _prime_factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@given(reshape_case(), st.data())
def test_reshape(case, data):
    shape, target, allowzero = case
    x = data.draw(values(np.float32, shape))
    check_op("Reshape", [x, i64(*target)], {"allowzero": allowzero}, constant_inputs=[1])


def test_reshape_allowzero():
    x = np.zeros((0, 3), np.float32)
    out = check_op("Reshape", [x, i64(3, 0)], {"allowzero": 1}, constant_inputs=[1])[0]
    assert out.shape == (3, 0)
    y = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert check_op("Reshape", [y, i64(0, 0, -1)], constant_inputs=[1])[0].shape == (2, 3, 4)
    # a zero that copies the symbolic batch dimension; with allowzero=1 it would mean 0
    g = Graph()
    v = g.add_input("x", TensorType(DType.F32, ("N", 16)))
    shape = g.add_constant(i64(0, 4, 4))
    assert g.add_node("Reshape", [v, shape]).outputs[0].shape == ("N", 4, 4)
    # with allowzero=1 the zero is a zero (only valid if N is 0, which nothing rules out)
    assert g.add_node("Reshape", [v, shape], {"allowzero": 1}).outputs[0].shape == (0, 4, 4)


@given(shape=shapes(max_dims=5, max_side=3), data=st.data())
def test_transpose(shape, data):
    # (onnx.helper cannot type an empty perm list, so rank 0 uses the default)
    perm = data.draw(st.none() | st.permutations(range(len(shape)))) if shape else None
    attrs = {} if perm is None else {"perm": list(perm)}
    check_op("Transpose", [data.draw(values(np.float32, shape))], attrs)


@given(shape=shapes(max_dims=4, max_side=3), data=st.data())
def test_squeeze(shape, data):
    shape = tuple(data.draw(st.sampled_from([1, d])) for d in shape)
    x = data.draw(values(np.float32, shape))
    ones = [a for a, d in enumerate(shape) if d == 1]
    if data.draw(st.booleans()):
        check_op("Squeeze", [x])
        return
    axes = data.draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
    axes = [a - len(shape) if data.draw(st.booleans()) else a for a in axes]
    check_op("Squeeze", [x, i64(*axes)], constant_inputs=[1])


@given(shape=shapes(max_dims=3, max_side=3), data=st.data())
def test_unsqueeze(shape, data):
    k = data.draw(st.integers(1, 3))
    rank = len(shape) + k
    axes = data.draw(st.lists(st.integers(0, rank - 1), min_size=k, max_size=k, unique=True))
    axes = [a - rank if data.draw(st.booleans()) else a for a in axes]
    check_op("Unsqueeze", [data.draw(values(np.float32, shape)), i64(*axes)],
             constant_inputs=[1])


# -- joining and splitting ----------------------------------------------------------------------


@given(dtype=st.sampled_from([np.float32, np.int64, np.uint8]),
       shape=shapes(min_dims=1, max_dims=4, max_side=3), n=st.integers(1, 4), data=st.data())
def test_concat(dtype, shape, n, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    xs = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(0, 3))
        xs.append(data.draw(values(dtype, tuple(s))))
    check_op("Concat", xs, {"axis": axis})


@given(shape=shapes(min_dims=1, max_dims=3, max_side=6), data=st.data())
def test_split(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dim = shape[axis]
    x = data.draw(values(np.float32, shape))
    if data.draw(st.booleans()):
        cuts = sorted(data.draw(st.lists(st.integers(0, dim), max_size=3)))
        sizes = [b - a for a, b in zip([0, *cuts], [*cuts, dim], strict=True)]
        check_op("Split", [x, i64(*sizes)], {"axis": axis}, n_outputs=len(sizes),
                 constant_inputs=[1])
    else:
        n = data.draw(st.integers(1, dim))
        chunk = -(-dim // n)
        assume(dim - chunk * (n - 1) > 0)
        check_op("Split", [x], {"axis": axis, "num_outputs": n}, n_outputs=n)


# -- padding, tiling, broadcasting --------------------------------------------------------------


@st.composite
def pad_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=4))
    mode = draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    axes = None
    if draw(st.booleans()):
        axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
        axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    padded = range(len(shape)) if axes is None else [a % len(shape) for a in axes]
    before, after = [], []
    for a in padded:
        d = shape[a]
        b = draw(st.integers(-(d - 1), 4))
        e = draw(st.integers(-(d - 1 + min(b, 0)), 4))
        kept = d + min(b, 0) + min(e, 0)
        if mode == "reflect":  # onnxruntime mirrors at most kept - 1 entries
            b, e = min(b, kept - 1), min(e, kept - 1)
        before.append(b)
        after.append(e)
    return shape, mode, axes, before + after


@given(pad_case(), st.sampled_from([np.float32, np.int32, np.int64]), st.data())
def test_pad(case, dtype, data):
    shape, mode, axes, pads = case
    x = data.draw(values(dtype, shape))
    inputs = [x, i64(*pads)]
    if mode == "constant" and data.draw(st.booleans()):
        inputs.append(data.draw(values(dtype, ())))
    elif axes is not None:
        inputs.append(None)
    if axes is not None:
        inputs.append(i64(*axes))  # int32 axes are legal, but onnxruntime rejects them
    check_op("Pad", inputs, {"mode": mode}, constant_inputs=[1, 3])


def test_pad_crops_before_padding():
    x = np.arange(6, dtype=np.float32)
    for mode, pads, expect in [("edge", (-2, 3), [2, 3, 4, 5, 5, 5, 5]),
                               ("reflect", (3, -2), [3, 2, 1, 0, 1, 2, 3]),
                               ("wrap", (-2, 3), [2, 3, 4, 5, 2, 3, 4])]:
        out = check_op("Pad", [x, i64(*pads)], {"mode": mode}, constant_inputs=[1])[0]
        assert out.tolist() == expect


@given(shape=shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_tile(shape, data):
    reps = data.draw(st.lists(st.integers(0, 3), min_size=len(shape), max_size=len(shape)))
    check_op("Tile", [data.draw(values(np.int32, shape)), i64(*reps)], constant_inputs=[1])


@given(data=st.data())
def test_expand(data):
    """The target broadcasts with the input both ways: smaller target dims of 1 keep the input's."""
    pair = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                       max_side=3))
    x_shape, target = pair.input_shapes
    x = data.draw(values(np.float32, x_shape))
    check_op("Expand", [x, i64(*target)], constant_inputs=[1])


# -- indexing -----------------------------------------------------------------------------------


@given(shape=shapes(min_dims=1, max_dims=3, max_side=4), data=st.data())
def test_gather(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    d = shape[axis]
    idx_shape = data.draw(shapes(min_dims=0, max_dims=2, max_side=3))
    idx_dtype = data.draw(st.sampled_from([np.int32, np.int64]))
    indices = data.draw(hnp.arrays(idx_dtype, idx_shape, elements=st.integers(-d, d - 1)))
    const = [1] if data.draw(st.booleans()) else []
    check_op("Gather", [data.draw(values(np.float32, shape)), indices], {"axis": axis},
             constant_inputs=const)


_BOUND = st.integers(-6, 6) | st.sampled_from([INT64_MAX, INT64_MIN, 2**31 - 1, -(2**31)])


@st.composite
def slice_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    n = draw(st.integers(1, len(shape)))
    axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=n, max_size=n, unique=True))
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    starts = [draw(_BOUND) for _ in axes]
    ends = [draw(_BOUND) for _ in axes]
    steps = [draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in axes]
    # onnxruntime reads an end of INT32_MAX or INT64_MAX with a negative step as "through index
    # 0"; ONNX (and onnx.reference) clamp it to dim - 1 like any other large end.
    ends = [e if st_ > 0 or e not in (INT64_MAX, 2**31 - 1) else INT64_MIN
            for e, st_ in zip(ends, steps, strict=True)]
    return shape, starts, ends, axes, steps


@given(slice_case(), st.sampled_from([np.int32, np.int64]), st.data())
def test_slice(case, index_dtype, data):
    shape, starts, ends, axes, steps = case
    if index_dtype is np.int32:
        starts, ends = ([int(np.clip(v, -(2**31), 2**31 - 1)) for v in vs] for vs in (starts, ends))
    inputs = [data.draw(values(np.float32, shape)), *(np.array(v, index_dtype) for v in
                                                       (starts, ends, axes))]
    if data.draw(st.booleans()):
        inputs.append(np.array(steps, index_dtype))
    if axes == list(range(len(axes))) and len(inputs) == 4 and data.draw(st.booleans()):
        inputs.pop()  # default axes
    check_op("Slice", inputs, constant_inputs=[1, 2, 3, 4])


def test_slice_huge_and_reversed():
    x = np.arange(6, dtype=np.float32)
    out = check_op("Slice", [x, i64(-1), i64(INT64_MIN), i64(0), i64(-1)],
                   constant_inputs=[1, 2, 3, 4])[0]
    assert out.tolist() == [5, 4, 3, 2, 1, 0]
    out = check_op("Slice", [x, i64(INT64_MAX), i64(INT64_MIN), i64(0), i64(-2)],
                   constant_inputs=[1, 2, 3, 4])[0]
    assert out.tolist() == [5, 3, 1]
    out = check_op("Slice", [x, i64(-100), i64(INT64_MAX)], constant_inputs=[1, 2])[0]
    assert out.tolist() == list(range(6))


# -- pass-through ops ---------------------------------------------------------------------------


@given(dtype=st.sampled_from(DTYPES), shape=shapes(), data=st.data())
def test_identity(dtype, shape, data):
    x = data.draw(values(dtype, shape))
    assert check_op("Identity", [x])[0] is not x


@given(shape=shapes(), n_outputs=st.integers(1, 2), data=st.data())
def test_dropout_is_identity(shape, n_outputs, data):
    x = data.draw(values(np.float32, shape))
    extra = data.draw(st.sampled_from([[], [np.array(0.5, np.float32)],
                                       [None, np.array(False)],
                                       [np.array(0.3, np.float32), np.array(False)]]))
    outs = check_op("Dropout", [x, *extra], n_outputs=n_outputs, constant_inputs=[1, 2])
    if n_outputs == 2:
        assert outs[1].dtype == np.bool_ and outs[1].all()


# -- shapes, casts, constants -------------------------------------------------------------------


@given(shape=shapes(min_side=0), data=st.data())
def test_shape(shape, data):
    attrs = {}
    for name in ("start", "end"):
        if data.draw(st.booleans()):
            attrs[name] = data.draw(st.integers(-6, 6))
    check_op("Shape", [data.draw(values(np.float32, shape))], attrs)


_CODES = {np.float32: 1, np.float16: 10, np.int8: 3, np.uint8: 2, np.int32: 6, np.int64: 7,
          np.bool_: 9}


def _castable(src, dst, shape):
    """Values whose conversion ONNX defines: floats to integers stay inside the target range."""
    src, dst = np.dtype(src), np.dtype(dst)
    if src.kind == "f" and dst.kind in "iu":
        info = np.iinfo(dst)
        lo, hi = max(int(info.min), -60000), min(int(info.max), 60000)
        elements = st.floats(lo, hi, width=src.itemsize * 8).filter(lambda v: lo <= v < hi)
        return hnp.arrays(src, shape, elements=elements)
    if src == np.float32 and dst == np.float16:
        return hnp.arrays(src, shape, elements=st.floats(-70000, 70000, width=32))
    return values(src, shape)


@given(src=st.sampled_from(DTYPES), dst=st.sampled_from(DTYPES), shape=shapes(), data=st.data())
def test_cast(src, dst, shape, data):
    check_op("Cast", [data.draw(_castable(src, dst, shape))], {"to": _CODES[dst]})


def test_cast_out_of_range_floats_wrap_like_onnxruntime():
    x = np.array([-1.5, 300.7, 2.7, -2.7, 255.9], np.float32)
    assert check_op("Cast", [x], {"to": 2})[0].tolist() == [255, 44, 2, 254, 255]
    assert check_op("Cast", [x], {"to": 3})[0].tolist() == [-1, 44, 2, -2, -1]


@given(shape=shapes(max_side=3, min_side=0), dtype=st.sampled_from(DTYPES), data=st.data())
def test_constant_of_shape(shape, dtype, data):
    value = None if data.draw(st.booleans()) else data.draw(values(dtype, (1,)))
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    check_op("ConstantOfShape", [i64(*shape)], attrs, constant_inputs=[0])


@given(shape=shapes(max_side=3), dtype=st.sampled_from(DTYPES), data=st.data())
def test_constant(shape, dtype, data):
    check_op("Constant", [], {"value": numpy_helper.from_array(data.draw(values(dtype, shape)))})


# -- known contents of shape tensors ------------------------------------------------------------


def _run_graph(g: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate a graph with the reference kernels (what the numpy backend does)."""
    env = {v.name: v.data for v in g.constants.values()} | feeds
    for node in g.nodes:
        opdef = ops.get(node.op)
        args = [None if v is None else env[v.name] for v in node.inputs]
        out = opdef.kernel(*args, **opdef.full_attrs(node.attrs))
        for v, a in zip(node.outputs, out if isinstance(out, tuple) else (out,), strict=False):
            env[v.name] = a
    return env


def _torch_flatten_model(batch_dim):
    """What torch.onnx exports for ``x.view(x.size(0), -1)``."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch_dim, 16, 4, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [numpy_helper.from_array(i64(0).reshape(()), "zero"),
             numpy_helper.from_array(i64(0), "axes0"), numpy_helper.from_array(i64(-1), "minus1")]
    graph = helper.make_graph(nodes, "flatten", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def test_torch_flatten_pattern_gets_a_static_feature_dim():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 16, 4, 4)))
    shape = g.add_node("Shape", [x]).outputs[0]
    assert shape.sym == ("N", 16, 4, 4) and shape.shape == (4,)
    batch = g.add_node("Gather", [shape, g.add_constant(np.array(0, np.int64))]).outputs[0]
    assert batch.sym == ("N",) and batch.shape == ()
    batch1 = g.add_node("Unsqueeze", [batch, g.add_constant(i64(0))]).outputs[0]
    assert batch1.sym == ("N",) and batch1.shape == (1,)
    target = g.add_node("Concat", [batch1, g.add_constant(i64(-1))], {"axis": 0}).outputs[0]
    assert target.sym == ("N", -1) and target.shape == (2,)
    y = g.add_node("Reshape", [x, target]).outputs[0]
    assert y.shape == ("N", 256)
    g.set_outputs([y])
    g.verify()
    assert g.copy().outputs[0].shape == ("N", 256)
    feed = np.random.default_rng(0).standard_normal((3, 16, 4, 4)).astype(np.float32)
    ours = _run_graph(g, {"x": feed})[y.name]
    (theirs,) = run_model(_torch_flatten_model("N"), {"x": feed})
    np.testing.assert_array_equal(ours, theirs)


def test_torch_flatten_pattern_through_the_importer():
    import qcompiler as qc

    g = qc.from_onnx(_torch_flatten_model("N"))
    assert g.outputs[0].shape == ("N", 256)
    feed = np.random.default_rng(1).standard_normal((2, 16, 4, 4)).astype(np.float32)
    out = qc.compile(g, backend="numpy").run({"x": feed})
    np.testing.assert_array_equal(out[g.outputs[0].name], feed.reshape(2, 256))


def test_shape_contents_flow_through_shape_ops():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 3, "H", 8)))
    shape = g.add_node("Shape", [x]).outputs[0]

    def node(op, inputs, attrs=None):
        return g.add_node(op, inputs, attrs).outputs[0]

    def const(*v):
        return g.add_constant(i64(*v))

    assert node("Shape", [x], {"start": 1, "end": -1}).sym == (3, "H")
    assert node("Gather", [shape, const(3, 0, -2)]).sym == (8, "N", "H")
    assert node("Slice", [shape, const(-1), const(INT64_MIN), const(0), const(-2)]).sym == (8, 3)
    assert node("Identity", [shape]).sym == ("N", 3, "H", 8)
    assert node("Cast", [shape], {"to": 7}).sym == ("N", 3, "H", 8)
    assert node("Cast", [shape], {"to": 6}).sym == ("N", 3, "H", 8)  # tf2onnx's int32 shapes
    assert node("Cast", [shape], {"to": 3}).sym is None  # int8 contents are not tracked
    big = node("Cast", [const(2**40, 1)], {"to": 6})
    assert big.sym is None  # int32 would wrap: contents unknown rather than wrong
    first = node("Slice", [shape, const(0), const(1)])
    assert node("Squeeze", [first, const(0)]).sym == ("N",)
    assert node("Squeeze", [first, const(0)]).shape == ()
    parts = g.add_node("Split", [shape], {"num_outputs": 2}, outputs=2).outputs
    assert [p.sym for p in parts] == [("N", 3), ("H", 8)]
    assert node("Concat", [parts[1], parts[0]], {"axis": 0}).sym == ("H", 8, "N", 3)
    # consumers: Reshape, Expand, Tile and ConstantOfShape read the contents
    hw = node("Concat", [node("Gather", [shape, const(0)]), const(-1, 8)], {"axis": 0})
    assert node("Reshape", [x, hw]).shape == ("N", UNKNOWN, 8)  # 3*H is no single symbol
    chw = node("Concat", [node("Slice", [shape, const(0), const(1)]), const(3),
                          node("Slice", [shape, const(2), const(4)])], {"axis": 0})
    assert node("Reshape", [x, chw]).shape == ("N", 3, "H", 8)
    assert node("ConstantOfShape", [shape]).shape == ("N", 3, "H", 8)
    row = g.add_input("row", TensorType(DType.F32, (1, 8)))
    n8 = node("Concat", [node("Gather", [shape, const(0)]), const(8)], {"axis": 0})
    assert node("Expand", [row, n8]).shape == ("N", 8)
    assert node("Tile", [row, node("Concat", [node("Gather", [shape, const(0)]), const(1)],
                                   {"axis": 0})]).shape == ("N", 8)
    assert node("Tile", [node("Shape", [row]), const(2)]).sym == (1, 8, 1, 8)
    assert node("ConstantOfShape", [const(3)], {"value": i64(7)}).sym == (7, 7, 7)
    g.set_outputs([shape])
    g.verify()


def test_reshape_cancels_symbols_only_when_known_equal():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", "C", 4)))
    u = g.add_input("u", TensorType(DType.F32, ("?", 2, 4)))
    shape = g.add_node("Shape", [x]).outputs[0]
    n = g.add_node("Slice", [shape, g.add_constant(i64(0)), g.add_constant(i64(1))]).outputs[0]

    def reshape(v, *target):
        t = g.add_node("Concat", [n, g.add_constant(i64(*target))], {"axis": 0}).outputs[0]
        return g.add_node("Reshape", [v, t]).outputs[0].shape

    assert reshape(x, -1) == ("N", UNKNOWN)  # C*4
    assert reshape(x, 2, -1) == ("N", 2, UNKNOWN)
    u_shape = g.add_node("Shape", [u]).outputs[0]
    q = g.add_node("Concat", [u_shape, g.add_constant(i64(-1))], {"axis": 0}).outputs[0]
    assert q.sym == (UNKNOWN, 2, 4, -1)
    assert g.add_node("Reshape", [u, q]).outputs[0].shape == (UNKNOWN, 2, 4, UNKNOWN)


def test_unknown_shape_inputs_give_the_rank():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (3, 1, 5)))
    s3 = g.add_input("s3", TensorType(DType.I64, (3,)))
    s1 = g.add_input("s1", TensorType(DType.I64, (1,)))

    def out(op, inputs, attrs=None):
        return g.add_node(op, inputs, attrs).outputs[0].shape

    assert out("Reshape", [x, s3]) == (UNKNOWN,) * 3
    assert out("Expand", [x, s3]) == (3, UNKNOWN, 5)
    assert out("Tile", [x, s3]) == (UNKNOWN,) * 3
    assert out("ConstantOfShape", [s3]) == (UNKNOWN,) * 3
    assert out("Slice", [x, s1, s1, g.add_constant(i64(1))]) == (3, UNKNOWN, 5)
    assert out("Slice", [x, s1, s1]) == (UNKNOWN, 1, 5)
    assert out("Pad", [x, g.add_input("p", TensorType(DType.I64, (6,)))]) == (UNKNOWN,) * 3
    assert out("ReduceSum", [x, s1]) == (UNKNOWN,) * 3
    n = g.add_input("n", TensorType(DType.F32, ("N", 5)))
    assert out("Slice", [n, g.add_constant(i64(0)), g.add_constant(i64(INT64_MAX))]) == ("N", 5)
    assert out("Slice", [n, g.add_constant(i64(1)), g.add_constant(i64(INT64_MAX))]) == (
        UNKNOWN, 5)
    with pytest.raises(UnsupportedModelError, match="axes must be known"):
        g.add_node("Unsqueeze", [x, s1])
    with pytest.raises(UnsupportedModelError, match="output rank is unknown"):
        g.add_node("Reshape", [x, g.add_input("r", TensorType(DType.I64, ("R",)))])


# -- errors -------------------------------------------------------------------------------------


def _errors():
    f32, i64_ = DType.F32, DType.I64
    return [
        ("Reshape", [(f32, (2, 3)), i64(4, 2)], {}, "6 elements"),
        ("Reshape", [(f32, (2, 3)), i64(4, -1)], {}, "do not split"),
        ("Reshape", [(f32, (2, 3)), i64(-1, -1)], {}, "more than one -1"),
        ("Reshape", [(f32, (2, 3)), i64(0, 0, 0)], {}, "input has rank 2"),
        ("Concat", [(f32, (2, 3)), (f32, (2, 3, 1))], {"axis": 0}, "one rank"),
        ("Concat", [(f32, (2, 3)), (f32, (2, 4))], {"axis": 0}, "differ on axis 1"),
        ("Concat", [(f32, (2, 3)), (i64_, (2, 3))], {"axis": 0}, "one dtype"),
        ("Split", [(f32, (5,)), i64(4)], {}, "sums to 4"),
        ("Split", [(f32, (5,)), i64(2, 3)], {}, "2 entries but the node has 1 outputs"),
        ("Split", [(f32, (5,))], {}, "needs the 'split' input or the num_outputs"),
        ("Split", [(f32, (5,)), i64(5)], {"num_outputs": 1}, "not both"),
        ("Squeeze", [(f32, (2, 1)), i64(0)], {}, "cannot squeeze axis 0"),
        ("Unsqueeze", [(f32, (2,)), i64(0, -3)], {}, "repeat an axis"),
        ("Transpose", [(f32, (2, 3))], {"perm": (0, 0)}, "not a permutation"),
        ("Gather", [(f32, (3, 4)), i64(3)], {}, "out of range"),
        ("Gather", [(f32, (3, 4)), i64(0)], {"axis": 2}, "axis 2 is out of range"),
        ("Pad", [(f32, (3,)), i64(3, 0)], {"mode": "reflect"}, "exceed 2"),
        ("Pad", [(f32, (3,)), i64(1, 1, 1, 1)], {}, "pads has 4 entries"),
        ("Pad", [(f32, (3,)), i64(1, 1)], {"mode": "mirror"}, "not one of"),
        ("Expand", [(f32, (2, 3)), i64(4, 3)], {}, "does not broadcast"),
        ("Tile", [(f32, (2, 3)), i64(2)], {}, "rank 2"),
        ("Slice", [(f32, (4,)), i64(0), i64(2), i64(0), i64(0)], {}, "steps must not be 0"),
        ("ConstantOfShape", [i64(2, -1)], {}, "negative"),
        ("Flatten", [(f32, (2, 3))], {"axis": 3}, "out of range"),
        ("Squeeze", [(f32, ()), i64(0)], {}, "axis 0 is out of range for rank 0"),
        ("Split", [(f32, ())], {"num_outputs": 1}, "axis 0 is out of range for rank 0"),
        ("Slice", [(f32, ()), i64(0), i64(1)], {}, "axis 0 is out of range for rank 0"),
        ("Pad", [(f32, ()), i64(1, 1), np.zeros((), np.float32), i64(0)], {},
         "axis 0 is out of range for rank 0"),
    ]


def _unsupported():
    f32 = DType.F32
    return [
        ("Cast", [(f32, (2,))], {"to": 11}, "type 11 is not supported"),
        ("Dropout", [(f32, (2,)), np.array(0.5, np.float32), np.array(True)], {},
         "training mode"),
        ("Squeeze", [(f32, ("N", 1))], {}, "pass axes"),
        ("Squeeze", [(f32, (2, 1)), (DType.I64, (1,))], {}, "axes must be known"),
    ]


@pytest.mark.parametrize(("op_type", "inputs", "attrs", "message"), _errors(),
                         ids=[f"{e[0]}-{e[3]}" for e in _errors()])
def test_inference_errors(op_type, inputs, attrs, message):
    refuse(op_type, inputs, attrs, ShapeInferenceError, message)


def test_split_num_outputs_errors():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (4,)))
    with pytest.raises(ShapeInferenceError, match="nothing for the last"):
        g.add_node("Split", [x], {"num_outputs": 3}, outputs=3)
    with pytest.raises(ShapeInferenceError, match="num_outputs=2 but the node has 3"):
        g.add_node("Split", [x], {"num_outputs": 2}, outputs=3)
    n = g.add_input("n", TensorType(DType.F32, ("N", 6)))
    outs = g.add_node("Split", [n], {"num_outputs": 2, "axis": 1}, outputs=2).outputs
    assert [o.shape for o in outs] == [("N", 3), ("N", 3)]
    outs = g.add_node("Split", [n], {"num_outputs": 2}, outputs=2).outputs
    assert [o.shape for o in outs] == [(UNKNOWN, 6), (UNKNOWN, 6)]


def test_the_dtype_table_agrees_with_onnx_and_the_test_helpers():
    from onnx import helper

    from qcompiler.ops.dtypes import DTYPES

    assert {name for name, _, _ in DTYPES} == {d.value for d in DType}
    assert [name for name, _, code in DTYPES if code is None] == ["f64"]  # IR-only: multipliers
    for name, numpy_name, code in (d for d in DTYPES if d[2] is not None):
        assert helper.tensor_dtype_to_np_dtype(code) == np.dtype(numpy_name) == DType(name).np
        assert onnx_type(DType(name).np) == code


@pytest.mark.parametrize(("op_type", "inputs", "attrs", "message"), _unsupported(),
                         ids=[f"{e[0]}-{e[3]}" for e in _unsupported()])
def test_unsupported_features_are_named(op_type, inputs, attrs, message):
    refuse(op_type, inputs, attrs, UnsupportedModelError, message)


def test_reshape_minus_one_divides_out_a_symbolic_batch():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 8, 7, 7)))
    y = g.add_input("y", TensorType(DType.F32, ("N", "M", 4)))

    def reshape(v, *target):
        return g.add_node("Reshape", [v, g.add_constant(i64(*target))]).outputs[0].shape

    assert reshape(x, -1, 392) == ("N", 392)  # the dynamo exporter's flatten
    assert reshape(x, -1, 196) == (UNKNOWN, 196)  # 2N rows: not a named dimension
    assert reshape(x, -1, 100) == (UNKNOWN, 100)  # divisible only for some N
    assert reshape(y, -1, 4) == (UNKNOWN, 4)  # N*M
    with pytest.raises(ShapeInferenceError, match="do not split into rows of 5"):
        reshape(g.add_input("z", TensorType(DType.F32, (2, 8))), -1, 5)


# -- generated tensors, Size, CastLike -------------------------------------------------------


@pytest.mark.parametrize(("dtype", "start", "limit", "delta"), [
    (np.int64, 1, 10, 3), (np.int64, 10, -3, -4), (np.int64, 5, 5, 1), (np.int64, 0, 5, -1),
    (np.int32, -7, 7, 2), (np.float32, 0.5, 3.0, 0.3), (np.float32, 1.0, -2.0, -0.75),
    (np.int64, -(2**40), 2**40, 2**39),
])
def test_range(dtype, start, limit, delta):
    inputs = [np.array(v, dtype) for v in (start, limit, delta)]
    check_op("Range", inputs, constant_inputs=(0, 1, 2))
    assert infer("Range", inputs, {})[0].shape == (UNKNOWN,)  # known only at run time


def test_range_contents_feed_reshape():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, (2, 12)))
    r = g.add_node("Range", [g.add_constant(np.array(v, np.int64)) for v in (2, 5, 1)])
    node = g.add_node("Reshape", [x, r.outputs[0]])
    assert node.outputs[0].shape == (2, 3, 4)


@given(dtype=st.sampled_from(DTYPES), shape=shapes(min_side=0), data=st.data())
def test_size(dtype, shape, data):
    check_op("Size", [data.draw(values(dtype, shape))])


def test_size_of_symbolic_shape_is_tracked():
    g = Graph()
    x = g.add_input("x", TensorType(DType.F32, ("N", 3)))
    assert g.add_node("Size", [x]).outputs[0].shape == ()
    y = g.add_input("y", TensorType(DType.F32, (4, 3)))
    assert g.add_node("Size", [y]).outputs[0].sym == (12,)


@given(src=st.sampled_from(DTYPES), dst=st.sampled_from(DTYPES), shape=shapes(), data=st.data())
def test_cast_like(src, dst, shape, data):
    x = data.draw(values(src, shape))
    if np.dtype(src).kind == "f" and np.dtype(dst).kind in "iu":
        info = np.iinfo(dst)  # out-of-range float-to-int is undefined in ONNX
        x = np.asarray(np.clip(np.nan_to_num(x), max(info.min, -1000), min(info.max, 1000)),
                       dtype=src)
    check_op("CastLike", [x, np.zeros(0, dst)])


# onnxruntime has no Trilu kernel for the narrow integer types (int8, uint8, int32)
@given(dtype=st.sampled_from([np.float32, np.int64, np.bool_]), shape=shapes(min_dims=2),
       k=st.integers(-5, 5), upper=st.integers(0, 1), data=st.data())
def test_trilu(dtype, shape, k, upper, data):
    x = data.draw(values(dtype, shape))
    check_op("Trilu", [x, np.array(k, np.int64)], {"upper": upper})


def test_trilu_without_k_and_errors():
    check_op("Trilu", [np.arange(12, dtype=np.float32).reshape(3, 4)], {"upper": 0})
    refuse("Trilu", [(DType.F32, (4,))], {}, ShapeInferenceError, "rank >= 2")
