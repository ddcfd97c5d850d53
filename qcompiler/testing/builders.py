"""The built-in builders, registered on import: producers (Conv, ConvTranspose, Gemm, MatMul)
and what exporters put after them (BatchNormalization, bias adds, scales, residual adds,
activations and their decomposed forms), constant arithmetic, cleanup fodder for
``canonicalize`` and tensor ops. Each adds valid nodes for the value it gets and returns the
value the graph goes on from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from ..graph import Value
from .kit import F32, MAX_DIM, MAX_ELEMENTS, MUL_LIMIT, GraphKit, register_builder

# ---------------------------------------------------------------------------------------------
# Shape helpers for builders.


def _static_tail(x: Value) -> bool:
    """Every dimension but the batch (first) one is a known int."""
    return all(isinstance(d, int) for d in x.shape[1:])


def _per_sample(x: Value) -> int:
    return math.prod(d for d in x.shape[1:] if isinstance(d, int))


def _channels_ok(x: Value) -> bool:
    return x.type.rank >= 2 and isinstance(x.shape[1], int)


def _spatial_ok(x: Value) -> bool:
    """A conv/pool input: static channels and spatial sizes, small enough to grow."""
    return _static_tail(x) and x.shape[1] <= 4 * MAX_DIM and _per_sample(x) <= MAX_ELEMENTS


def _last_ok(x: Value) -> bool:
    return isinstance(x.shape[-1], int) and x.shape[-1] <= 4 * MAX_DIM


def _same_shape_values(kit: GraphKit, x: Value) -> list[Value]:
    return [v for v in kit.values() if v.shape == x.shape]


def _channel_shape(x: Value, leading_one: bool) -> tuple[int, ...]:
    """Shape of a per-channel constant broadcasting along axis 1: [C,1,..] or [1,C,1,..]; for
    a rank-2 value (features last) it is [F]."""
    if x.type.rank == 2:
        return (1, x.shape[1]) if leading_one else (x.shape[1],)
    tail = (1,) * (x.type.rank - 2)
    return (1, x.shape[1], *tail) if leading_one else (x.shape[1], *tail)


def _signed(rng: np.random.Generator, shape: Sequence[int], lo: float = 0.5,
            hi: float = 2.0) -> np.ndarray:
    """Values with |v| in [lo, hi] and random signs: safe multipliers and divisors."""
    return rng.uniform(lo, hi, tuple(shape)) * rng.choice([-1.0, 1.0], tuple(shape))


def _attrs_window(kit: GraphKit, attrs: dict[str, Any], kernel: list[int], strides: list[int],
                  dilations: list[int], pads: list[int], auto_pad: str) -> None:
    n = len(kernel)
    if kit.rng.random() < 0.5:
        attrs["kernel_shape"] = tuple(kernel)
    kit.maybe(attrs, "strides", tuple(strides), (1,) * n)
    kit.maybe(attrs, "dilations", tuple(dilations), (1,) * n)
    if auto_pad == "NOTSET":
        kit.maybe(attrs, "pads", tuple(pads), (0,) * (2 * n))
        kit.maybe(attrs, "auto_pad", "NOTSET", "NOTSET")
    else:
        attrs["auto_pad"] = auto_pad


def _conv(kit: GraphKit, x: Value, *, same_shape: bool = False, bias: bool | None = None,
          weight: Callable[[tuple[int, ...], int], Value] | None = None) -> Value:
    """A random Conv on ``x`` (dense, grouped or depthwise; kernel 1-3, stride 1-2, dilation
    1-2, pads or auto_pad). ``same_shape``: stride 1 and "same" padding with as many output as
    input channels, so the output can be added to ``x``. ``weight(shape, fan_in)`` makes the
    weight operand (default: a constant ~ N(0, 1/fan_in))."""
    c, sizes = x.shape[1], list(x.shape[2:])
    n = len(sizes)
    if same_shape:
        group = kit.choice([1, c])
        m = c
        kernel = [kit.choice([3, 1]) for _ in sizes]
        dilations = [kit.choice([1, 2]) for _ in sizes]
        strides = [1] * n
        auto_pad = kit.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER"])
        pads = [d * (k - 1) // 2 for k, d in zip(kernel, dilations)] * 2
    else:
        kind = kit.choice(["dense", "depthwise", "grouped"])
        divisors = [g for g in range(2, c) if c % g == 0]
        if kind == "depthwise":
            group, m = c, c * kit.draw(st.integers(1, 2))
        elif kind == "grouped" and divisors:
            group = kit.choice(divisors)
            m = group * kit.draw(st.integers(1, max(1, 8 // group)))
        else:
            group, m = 1, kit.draw(st.integers(1, 8))
        auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER",
                               "VALID"])
        kernel, strides, dilations, begin, end = [], [], [], [], []
        for size in sizes:
            k, d = kit.draw(st.integers(1, 3)), kit.draw(st.integers(1, 2))
            b, e = 0, 0
            if auto_pad == "NOTSET":
                b, e = kit.draw(st.integers(0, 2)), kit.draw(st.integers(0, 2))
            if not auto_pad.startswith("SAME"):  # the window must fit the padded input
                if (k - 1) * d + 1 > size + b + e:
                    d = 1
                k = min(k, size + b + e)
            kernel.append(k)
            dilations.append(d)
            strides.append(kit.draw(st.integers(1, 2)))
            begin.append(b)
            end.append(e)
        pads = begin + end
    attrs: dict[str, Any] = {}
    _attrs_window(kit, attrs, kernel, strides, dilations, pads, auto_pad)
    kit.maybe(attrs, "group", group, 1)
    shape, fan_in = (m, c // group, *kernel), c // group * math.prod(kernel)
    w = weight(shape, fan_in) if weight else kit.weight(shape, fan_in, "conv.weight")
    operands = [x, w]
    if bias is None:
        bias = kit.coin()
    if bias:
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, m), "conv.bias"))
    return kit.node("Conv", operands, attrs, name="conv")


def _conv_transpose(kit: GraphKit, x: Value) -> Value:
    """A random ConvTranspose: kernel 1-3, stride 1-2 (2 only on small inputs), dilation 1-2,
    output_padding below the stride, pads or auto_pad; dense or depthwise."""
    c, sizes = x.shape[1], list(x.shape[2:])
    group = kit.choice([1, c])
    per_group = kit.draw(st.integers(1, 2 if group > 1 else 8))
    auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    kernel, strides, dilations, begin, end, adjust = [], [], [], [], [], []
    for size in sizes:
        k, d = kit.draw(st.integers(1, 3)), kit.draw(st.integers(1, 2))
        s = kit.draw(st.integers(1, 2)) if size <= 8 else 1
        a = kit.draw(st.integers(0, s - 1))
        full = (size - 1) * s + (k - 1) * d + 1 + a
        b = kit.draw(st.integers(0, min(2, full - 1))) if auto_pad == "NOTSET" else 0
        e = kit.draw(st.integers(0, min(2, full - 1 - b))) if auto_pad == "NOTSET" else 0
        kernel.append(k)
        strides.append(s)
        dilations.append(d)
        begin.append(b)
        end.append(e)
        adjust.append(a)
    attrs: dict[str, Any] = {}
    _attrs_window(kit, attrs, kernel, strides, dilations, begin + end, auto_pad)
    kit.maybe(attrs, "group", group, 1)
    kit.maybe(attrs, "output_padding", tuple(adjust), (0,) * len(sizes))
    fan_in = max(1, c // group * math.prod(kernel) // math.prod(strides))
    w = kit.weight((c, per_group, *kernel), fan_in, "convt.weight")
    operands = [x, w]
    if kit.coin():
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, per_group * group), "convt.bias"))
    return kit.node("ConvTranspose", operands, attrs, name="convt")


def _gemm(kit: GraphKit, x: Value, *, with_c: bool | None = None) -> Value:
    """Gemm on a rank-2 ``x`` [N, K]: random transA (through a Transpose), transB, alpha/beta,
    C absent, [M], [1, M] or a scalar."""
    k = x.shape[1]
    m = kit.draw(st.integers(1, 8))
    a = x
    attrs: dict[str, Any] = {}
    if kit.coin():
        a = kit.node("Transpose", [x], {"perm": (1, 0)}, name="transpose")
        attrs["transA"] = 1
    trans_b = kit.coin()
    kit.maybe(attrs, "transB", int(trans_b), 0)
    w = kit.weight((m, k) if trans_b else (k, m), k, "gemm.weight")
    operands = [a, w]
    if with_c if with_c is not None else kit.coin():
        shape = kit.choice([(m,), (1, m), ()])
        operands.append(kit.const(kit.rng.normal(0.0, 0.5, shape), "gemm.bias"))
        kit.maybe(attrs, "beta", kit.draw(st.sampled_from([1.0, 0.5, 2.0])), 1.0)
    kit.maybe(attrs, "alpha", kit.draw(st.sampled_from([1.0, 0.5, 2.0, 0.75])), 1.0)
    return kit.node("Gemm", operands, attrs, name="gemm")


def _matmul(kit: GraphKit, x: Value) -> Value:
    """MatMul of ``x`` [..., K] by a constant [K, M]."""
    k = x.shape[-1]
    m = kit.draw(st.integers(1, 8))
    return kit.node("MatMul", [x, kit.weight((k, m), k, "matmul.weight")], name="matmul")


def _batch_norm(kit: GraphKit, x: Value) -> Value:
    """Inference BatchNormalization over axis 1 with gamma, var ~ U(0.5, 1.5)."""
    c = x.shape[1]
    rng = kit.rng
    params = [rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.5, c), rng.normal(0.0, 0.5, c),
              rng.uniform(0.5, 1.5, c)]
    names = ["bn.scale", "bn.bias", "bn.mean", "bn.var"]
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "epsilon", kit.choice([1e-5, 1e-3]), 1e-5)
    return kit.node("BatchNormalization",
                    [x, *(kit.const(p, n) for p, n in zip(params, names))], attrs, name="bn")


def _scalar(kit: GraphKit, value: float, name: str) -> Value:
    """A float32 scalar constant, shaped [] or (as some exporters write it) [1]."""
    return kit.const(np.full(kit.choice([(), (1,)]), value, F32), name)


def _clip(kit: GraphKit, x: Value, lo: float | None, hi: float | None) -> Value:
    operands = [x, None if lo is None else _scalar(kit, lo, "clip.min")]
    if hi is not None:
        operands.append(_scalar(kit, hi, "clip.max"))
    while operands[-1] is None:
        operands.pop()
    return kit.node("Clip", operands, name="clip")


def _binary(kit: GraphKit, op: str, a: Value, b: Value, name: str, swap: bool | None = None
            ) -> Value:
    """``op(a, b)``, or ``op(b, a)`` when ``swap`` (drawn when None; for commutative ops)."""
    if swap if swap is not None else kit.coin():
        a, b = b, a
    return kit.node(op, [a, b], name=name)


def _producer(kit: GraphKit, x: Value) -> tuple[str, Value]:
    """A Conv, Gemm (without C) or MatMul applicable to ``x``; (op, output)."""
    options = []
    if x.type.rank >= 3 and _spatial_ok(x):
        options.append("Conv")
    if x.type.rank == 2 and _last_ok(x):
        options.append("Gemm")
    if x.type.rank in (2, 3) and _last_ok(x):
        options.append("MatMul")
    op = kit.choice(options)
    if op == "Conv":
        return op, _conv(kit, x, bias=False)
    if op == "Gemm":
        return op, _gemm(kit, x, with_c=False)
    return op, _matmul(kit, x)


def _has_producer(kit: GraphKit, x: Value) -> bool:
    return ((x.type.rank >= 3 and _spatial_ok(x))
            or (x.type.rank in (2, 3) and _last_ok(x)))


# ---------------------------------------------------------------------------------------------
# The builders. Each adds valid nodes for the value it gets and returns the value to go on from.

_CONV_RANKS = (3, 4, 5)
_ANY = None


def _conv_accepts(kit: GraphKit, x: Value) -> bool:
    return _spatial_ok(x)


def _convt_accepts(kit: GraphKit, x: Value) -> bool:
    return _spatial_ok(x) and all(s <= MAX_DIM for s in x.shape[2:]) \
        and x.shape[1] <= MAX_DIM


def _linear_accepts(kit: GraphKit, x: Value) -> bool:
    return _last_ok(x)


def _bn_accepts(kit: GraphKit, x: Value) -> bool:
    return _channels_ok(x) and x.shape[1] <= 4 * MAX_DIM


@register_builder("conv", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv(kit: GraphKit, x: Value) -> Value:
    """Conv: kernel 1-3, stride 1-2, pads, dilation 1-2, groups incl. depthwise, +-bias."""
    return _conv(kit, x)


@register_builder("conv_transpose", ranks=_CONV_RANKS, accepts=_convt_accepts)
def _b_conv_transpose(kit: GraphKit, x: Value) -> Value:
    """ConvTranspose with random geometry."""
    return _conv_transpose(kit, x)


@register_builder("gemm", ranks=(2,), accepts=_linear_accepts)
def _b_gemm(kit: GraphKit, x: Value) -> Value:
    """Gemm with random transA/transB, +-C, alpha/beta."""
    return _gemm(kit, x)


@register_builder("matmul", ranks=(2, 3), accepts=_linear_accepts)
def _b_matmul(kit: GraphKit, x: Value) -> Value:
    """MatMul of a rank-2 or rank-3 value by a constant matrix."""
    return _matmul(kit, x)


@register_builder("flatten", ranks=(2, 3, 4, 5))
def _b_flatten(kit: GraphKit, x: Value) -> Value:
    """Flatten to rank 2 at an axis >= 1 (sometimes written negative)."""
    rank = x.type.rank
    axis = kit.draw(st.integers(1, rank - 1))
    if kit.coin():
        axis -= rank
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "axis", axis, 1)
    return kit.node("Flatten", [x], attrs, name="flatten")


@register_builder("global_average_pool", ranks=_CONV_RANKS)
def _b_global_average_pool(kit: GraphKit, x: Value) -> Value:
    """GlobalAveragePool, then (usually) Flatten or Squeeze down to rank 2."""
    y = kit.node("GlobalAveragePool", [x], name="gap")
    how = kit.choice(["flatten", "squeeze", "keep"])
    if how == "flatten":
        return kit.node("Flatten", [y], name="flatten")
    if how == "squeeze":
        axes = kit.ints(list(range(2, x.type.rank)), "squeeze.axes")
        return kit.node("Squeeze", [y, axes], name="squeeze")
    return y


def _pool(kit: GraphKit, x: Value, op: str) -> Value:
    attrs: dict[str, Any] = {}
    kernel, strides, dilations, begin, end = [], [], [], [], []
    for size in x.shape[2:]:
        k = kit.draw(st.integers(1, 3))
        d = kit.draw(st.integers(1, 2)) if op == "MaxPool" else 1
        if (k - 1) * d + 1 > size:
            d = 1
        k = min(k, size)
        kernel.append(k)
        dilations.append(d)
        strides.append(kit.draw(st.integers(1, 2)))
        begin.append(kit.draw(st.integers(0, k - 1)))
        end.append(kit.draw(st.integers(0, k - 1)))
    auto_pad = kit.choice(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "VALID"])
    _attrs_window(kit, attrs, kernel, strides, dilations, begin + end, auto_pad)
    attrs["kernel_shape"] = tuple(kernel)
    kit.maybe(attrs, "ceil_mode", int(kit.coin()), 0)
    if op == "AveragePool":
        kit.maybe(attrs, "count_include_pad", int(kit.coin()), 0)
    return kit.node(op, [x], attrs, name=op.lower())


@register_builder("max_pool", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_max_pool(kit: GraphKit, x: Value) -> Value:
    """MaxPool: kernel 1-3, stride 1-2, dilation 1-2, pads below the kernel, ceil_mode."""
    return _pool(kit, x, "MaxPool")


@register_builder("average_pool", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_average_pool(kit: GraphKit, x: Value) -> Value:
    """AveragePool: kernel 1-3, stride 1-2, pads, ceil_mode, count_include_pad."""
    return _pool(kit, x, "AveragePool")


@register_builder("bn", ranks=(2, 3, 4, 5), accepts=_bn_accepts)
def _b_bn(kit: GraphKit, x: Value) -> Value:
    """BatchNormalization with constant parameters."""
    return _batch_norm(kit, x)


@register_builder("conv_bn", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv_bn(kit: GraphKit, x: Value) -> Value:
    """Conv immediately followed by BatchNormalization."""
    return _batch_norm(kit, _conv(kit, x))


@register_builder("conv_transpose_bn", ranks=_CONV_RANKS, accepts=_convt_accepts)
def _b_conv_transpose_bn(kit: GraphKit, x: Value) -> Value:
    """ConvTranspose immediately followed by BatchNormalization."""
    return _batch_norm(kit, _conv_transpose(kit, x))


@register_builder("gemm_bn", ranks=(2,), accepts=_linear_accepts)
def _b_gemm_bn(kit: GraphKit, x: Value) -> Value:
    """Gemm immediately followed by BatchNormalization (over its output features)."""
    return _batch_norm(kit, _gemm(kit, x))


@register_builder("matmul_bn", ranks=(2, 3), accepts=_linear_accepts)
def _b_matmul_bn(kit: GraphKit, x: Value) -> Value:
    """MatMul immediately followed by BatchNormalization. On a rank-3 value BN normalizes axis
    1 (rows), which a fold must refuse: it is not the MatMul's output-feature axis."""
    return _batch_norm(kit, _matmul(kit, x))


# -- activations -------------------------------------------------------------------------------


@register_builder("relu")
def _b_relu(kit: GraphKit, x: Value) -> Value:
    """Relu."""
    return kit.node("Relu", [x], name="relu")


@register_builder("clip")
def _b_clip(kit: GraphKit, x: Value) -> Value:
    """Clip with constant bounds: ReLU6 (0, 6), random (lo < hi), min only, or max only."""
    kind = kit.choice(["relu6", "random", "min", "max"])
    if kind == "relu6":
        return _clip(kit, x, 0.0, 6.0)
    lo = float(F32(kit.draw(st.floats(-3.0, 1.0))))
    if kind == "min":
        return _clip(kit, x, lo, None)
    hi = float(F32(lo + kit.draw(st.floats(0.0, 4.0))))
    return _clip(kit, x, None, hi) if kind == "max" else _clip(kit, x, lo, hi)


@register_builder("leaky_relu")
def _b_leaky_relu(kit: GraphKit, x: Value) -> Value:
    """LeakyRelu with the default or a drawn slope."""
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "alpha", kit.choice([0.01, 0.1, 0.2, 0.3]), 0.01)
    return kit.node("LeakyRelu", [x], attrs, name="leaky_relu")


@register_builder("hard_sigmoid")
def _b_hard_sigmoid(kit: GraphKit, x: Value) -> Value:
    """HardSigmoid with the ONNX defaults, PyTorch's (1/6, 0.5) or drawn alpha/beta."""
    alpha, beta = kit.choice([(0.2, 0.5), (1 / 6, 0.5),
                              (kit.draw(st.floats(0.1, 0.5)), kit.draw(st.floats(0.3, 0.7)))])
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "alpha", float(F32(alpha)), 0.2)
    kit.maybe(attrs, "beta", float(F32(beta)), 0.5)
    return kit.node("HardSigmoid", [x], attrs, name="hard_sigmoid")


@register_builder("hard_swish")
def _b_hard_swish(kit: GraphKit, x: Value) -> Value:
    """HardSwish."""
    return kit.node("HardSwish", [x], name="hard_swish")


@register_builder("sigmoid")
def _b_sigmoid(kit: GraphKit, x: Value) -> Value:
    """Sigmoid."""
    return kit.node("Sigmoid", [x], name="sigmoid")


@register_builder("tanh")
def _b_tanh(kit: GraphKit, x: Value) -> Value:
    """Tanh."""
    return kit.node("Tanh", [x], name="tanh")


SIXTH = 0.16666667  # 1/6 as exporters print it (the same float32 as 1/6)
PADDLE_SIXTH = 0.1666666716337204  # paddle's hardsigmoid slope (float32(1/6) as a double)


def _divide_by_six(kit: GraphKit, x: Value, name: str) -> Value:
    """x / 6 as Div by 6 or as Mul by 0.16666667 (either operand order)."""
    if kit.coin():
        return kit.node("Div", [x, _scalar(kit, 6.0, f"{name}.six")], name=f"{name}.div")
    return _binary(kit, "Mul", x, _scalar(kit, SIXTH, f"{name}.sixth"), f"{name}.mul")


def _relu6_of_x_plus_3(kit: GraphKit, x: Value, name: str) -> Value:
    """Clip(x + 3, 0, 6), the Add's operands in either order."""
    return _clip(kit, _binary(kit, "Add", x, _scalar(kit, 3.0, f"{name}.three"), f"{name}.add"),
                 0.0, 6.0)


@register_builder("hard_swish_decomposed")
def _b_hard_swish_decomposed(kit: GraphKit, x: Value) -> Value:
    """x * Clip(x + 3, 0, 6) / 6 as exporters write it: Add and Mul operands in either order,
    Div by 6 or Mul by 1/6, the division after the product or applied to x or to the Clip
    before it."""
    clipped = _relu6_of_x_plus_3(kit, x, "hswish")
    where = kit.choice(["after", "clip", "x"])
    if where == "after":
        return _divide_by_six(kit, _binary(kit, "Mul", x, clipped, "hswish.mul"), "hswish")
    if where == "clip":
        return _binary(kit, "Mul", x, _divide_by_six(kit, clipped, "hswish"), "hswish.mul")
    return _binary(kit, "Mul", _divide_by_six(kit, x, "hswish"), clipped, "hswish.mul")


@register_builder("hard_sigmoid_decomposed")
def _b_hard_sigmoid_decomposed(kit: GraphKit, x: Value) -> Value:
    """Clip(x / 6 + 0.5, 0, 1), Clip(x * 0.16666667 + 0.5, 0, 1) or Clip(x * alpha + beta, 0,
    1) with paddle's alpha 0.1666666716337204, torch's 1/6 or ONNX's 0.2 (Add operands in
    either order), or relu6(x + 3) / 6, the h_sigmoid of MobileNetV3 ports (Div by 6 or Mul
    by 1/6)."""
    form = kit.choice(["div", "mul", "alpha", "relu6"])
    if form == "relu6":
        return _divide_by_six(kit, _relu6_of_x_plus_3(kit, x, "hsig"), "hsig")
    if form == "div":
        scaled = kit.node("Div", [x, _scalar(kit, 6.0, "hsig.six")], name="hsig.div")
    else:
        alpha = SIXTH if form == "mul" else kit.choice([PADDLE_SIXTH, 1 / 6, 0.2])
        scaled = _binary(kit, "Mul", x, _scalar(kit, alpha, "hsig.alpha"), "hsig.mul")
    shifted = _binary(kit, "Add", scaled, _scalar(kit, 0.5, "hsig.beta"), "hsig.add")
    return _clip(kit, shifted, 0.0, 1.0)


# -- constant arithmetic -------------------------------------------------------------------------


def _operand_shape(kit: GraphKit, x: Value) -> tuple[int, ...]:
    """Shape of a constant operand for ``x``: scalar, per channel or full shape."""
    kinds = ["scalar"]
    if _channels_ok(x):
        kinds.append("channel")
    if x.type.rank == 3 and isinstance(x.shape[-1], int):
        kinds.append("last")
    kinds.append("full")
    kind = kit.choice(kinds)
    if kind == "scalar":
        return kit.choice([(), (1,)])
    if kind == "channel":
        return _channel_shape(x, kit.coin())
    if kind == "last":
        return (x.shape[-1],)
    return tuple(d if isinstance(d, int) else 1 for d in x.shape)


def _const_arith(kit: GraphKit, x: Value, op: str) -> Value:
    shape = _operand_shape(kit, x)
    if op in ("Add", "Sub"):
        data = kit.rng.normal(0.0, 1.0, shape)
    else:
        data = _signed(kit.rng, shape)
    c = kit.const(data, f"{op.lower()}.const")
    if op == "Div":
        return kit.node("Div", [x, c], name="div")
    return _binary(kit, op, x, c, op.lower())


def _const_arith_builder(op: str, doc: str) -> Callable[[GraphKit, Value], Value]:
    def build(kit: GraphKit, x: Value) -> Value:
        return _const_arith(kit, x, op)

    build.__doc__ = doc
    return build


for _op, _doc in (
    ("Add", "Add of a scalar, per-channel or full-shape constant (either operand order)."),
    ("Mul", "Mul by a scalar, per-channel or full-shape constant with |c| in [0.5, 2]."),
    ("Sub", "x - c or c - x with a scalar, per-channel or full-shape constant."),
    ("Div", "x / c with |c| in [0.5, 2], scalar, per channel or full shape."),
):
    register_builder(f"{_op.lower()}_const")(_const_arith_builder(_op, _doc))


def _channel_const(kit: GraphKit, op: str, y: Value, data: Callable[[tuple[int, ...]], Any],
                   name: str) -> Value:
    """A constant varying along the output channels of producer ``op``'s output ``y``: Conv
    [M,1,1] or [1,M,1,1], Gemm/MatMul [M] or [1, M]; ``data(shape)`` fills it."""
    if op == "Conv":
        shape = _channel_shape(y, kit.coin())
    else:
        m = y.shape[-1]
        shape = kit.choice([(m,), (1, m)])
    return kit.const(data(shape), name)


def _bias(kit: GraphKit, op: str, y: Value, arith: str = "Add") -> Value:
    """``y + b`` (either operand order) or ``y - b`` with a per-channel ``b`` ~ N(0, 0.5)."""
    b = _channel_const(kit, op, y, lambda shape: kit.rng.normal(0.0, 0.5, shape), "bias")
    if arith == "Sub":
        return kit.node("Sub", [y, b], name="bias_sub")
    return _binary(kit, "Add", y, b, "bias_add")


def _scale(kit: GraphKit, op: str, y: Value, arith: str = "Mul") -> Value:
    """``y * s`` (either operand order) or ``y / s`` with a per-channel |s| in [0.5, 2]."""
    s = _channel_const(kit, op, y, lambda shape: _signed(kit.rng, shape), "scale")
    if arith == "Div":
        return kit.node("Div", [y, s], name="scale_div")
    return _binary(kit, "Mul", y, s, "scale_mul")


@register_builder("bias_add", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _has_producer(kit, x))
def _b_bias_add(kit: GraphKit, x: Value) -> Value:
    """Conv/Gemm/MatMul immediately followed by Add of a per-channel (Conv: [M,1,1] or
    [1,M,1,1]) or last-dim ([M] or [1, M]) constant, operands in either order."""
    return _bias(kit, *_producer(kit, x))


@register_builder("conv_mul_const", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_conv_mul_const(kit: GraphKit, x: Value) -> Value:
    """Conv followed by a per-channel Mul (either operand order)."""
    return _scale(kit, "Conv", _conv(kit, x))


_CHAIN_ACTIVATIONS = (_b_relu, _b_clip, _b_leaky_relu, _b_hard_sigmoid, _b_hard_swish,
                      _b_hard_swish_decomposed, _b_hard_sigmoid_decomposed)


@register_builder("producer_chain", ranks=(2, 3, 4, 5),
                  accepts=lambda kit, x: _has_producer(kit, x))
def _b_producer_chain(kit: GraphKit, x: Value) -> Value:
    """A Conv, Gemm or MatMul and what exporters write after it, in their order, each part
    present or not: a per-channel bias (Add or Sub), a per-channel scale (Mul or Div), a
    residual Add (then the Conv keeps the shape of ``x`` and the Add reads an existing value of
    that shape), and an activation (Relu, Clip, LeakyRelu, HardSigmoid, HardSwish or a
    decomposed HardSwish or HardSigmoid). What ``fuse`` folds into a producer, all together."""
    partners = _same_shape_values(kit, x) if x.type.rank >= 3 and _spatial_ok(x) else []
    residual = bool(partners) and kit.coin()
    op, y = ("Conv", _conv(kit, x, same_shape=True)) if residual else _producer(kit, x)
    if kit.coin():
        y = _bias(kit, op, y, kit.choice(["Add", "Sub"]))
    if kit.coin():
        y = _scale(kit, op, y, kit.choice(["Mul", "Div"]))
    if residual:
        y = _binary(kit, "Add", y, kit.choice(partners), "residual")
    activation = kit.choice((None, *_CHAIN_ACTIVATIONS))
    return y if activation is None else activation(kit, y)


# -- two-value ops -------------------------------------------------------------------------------


@register_builder("residual_add", ranks=_CONV_RANKS, accepts=_conv_accepts)
def _b_residual_add(kit: GraphKit, x: Value) -> Value:
    """Conv (same shape out) then Add with an existing value of that shape (often ``x``),
    operands in either order, sometimes followed by Relu."""
    y = _conv(kit, x, same_shape=True)
    others = [v for v in _same_shape_values(kit, x) if v is not y]
    partner = kit.choice(others)
    out = _binary(kit, "Add", y, partner, "residual")
    return kit.node("Relu", [out], name="relu") if kit.coin() else out


def _broadcastable(a: tuple, b: tuple) -> bool:
    for da, db in zip(reversed(a), reversed(b)):
        if da != db and da != 1 and db != 1:
            return False
        if da != db and (not isinstance(da, int) or not isinstance(db, int)):
            return False
    return True


def _partners(kit: GraphKit, x: Value, limit: float | None) -> list[Value]:
    """Values broadcasting with ``x`` (others first, ``x`` itself last), small enough and, with
    ``limit``, with ``bound(x) * bound(v) <= limit``."""
    out = []
    for v in kit.values():
        if not _broadcastable(x.shape, v.shape):
            continue
        if limit is not None and kit.bound(x) * kit.bound(v) > limit:
            continue
        size = max(_per_sample(x), _per_sample(v))
        if size <= MAX_ELEMENTS:
            out.append(v)
    return sorted(out, key=lambda v: v is x)


@register_builder("add", accepts=lambda kit, x: bool(_partners(kit, x, None)))
def _b_add(kit: GraphKit, x: Value) -> Value:
    """Add of two existing values of broadcast-compatible shapes."""
    return _binary(kit, "Add", x, kit.choice(_partners(kit, x, None)), "add")


@register_builder("mul", accepts=lambda kit, x: bool(_partners(kit, x, MUL_LIMIT)))
def _b_mul(kit: GraphKit, x: Value) -> Value:
    """Mul of two existing values of broadcast-compatible shapes (magnitudes kept bounded)."""
    return _binary(kit, "Mul", x, kit.choice(_partners(kit, x, MUL_LIMIT)), "mul")


def _concat_partners(kit: GraphKit, x: Value) -> list[tuple[Value, int]]:
    out = []
    for v in kit.values():
        if v.type.rank != x.type.rank:
            continue
        for axis in range(1, x.type.rank):
            a, b = x.shape[axis], v.shape[axis]
            rest_equal = all(p == q for k, (p, q) in enumerate(zip(x.shape, v.shape))
                             if k != axis)
            if (rest_equal and isinstance(a, int) and isinstance(b, int) and a + b <= 4 * MAX_DIM
                    and _per_sample(x) + _per_sample(v) <= MAX_ELEMENTS):
                out.append((v, axis))
    return sorted(out, key=lambda pair: pair[0] is x)


@register_builder("concat", ranks=(2, 3, 4, 5),
                  accepts=lambda kit, x: bool(_concat_partners(kit, x)))
def _b_concat(kit: GraphKit, x: Value) -> Value:
    """Concat of ``x`` and a value matching it on every axis but the concat axis (>= 1)."""
    partner, axis = kit.choice(_concat_partners(kit, x))
    operands = [x, partner] if kit.coin() else [partner, x]
    if kit.coin():
        axis -= x.type.rank
    return kit.node("Concat", operands, {"axis": axis}, name="concat")


# -- cleanup fodder ------------------------------------------------------------------------------


@register_builder("identity")
def _b_identity(kit: GraphKit, x: Value) -> Value:
    """Identity."""
    return kit.node("Identity", [x], name="identity")


@register_builder("dropout")
def _b_dropout(kit: GraphKit, x: Value) -> Value:
    """Inference-mode Dropout: bare, with a ratio, with training_mode = false; sometimes with
    its (unused) mask output."""
    operands: list[Value | None] = [x]
    form = kit.choice(["bare", "ratio", "training_mode"])
    if form != "bare":
        operands.append(kit.const(np.array(kit.choice([0.5, 0.1, 0.0]), F32), "dropout.ratio"))
    if form == "training_mode":
        operands.append(kit.const(np.array(False), "dropout.training_mode"))
    return kit.node("Dropout", operands, name="dropout", outputs=kit.choice([1, 2]))


def _unary_node(kit: GraphKit, x: Value) -> Value:
    """A random op reading ``x`` (Relu, Sigmoid, LeakyRelu, Mul or Add of a constant,
    Transpose, Conv), for builders that repeat it."""
    choices = ["Relu", "Sigmoid", "LeakyRelu", "Mul", "Add", "Transpose"]
    if x.type.rank >= 3 and _spatial_ok(x):
        choices.append("Conv")
    op = kit.choice(choices)
    if op == "Conv":
        return _conv(kit, x)
    operands: list[Value | None] = [x]
    attrs: dict[str, Any] = {}
    if op == "LeakyRelu":
        attrs["alpha"] = kit.choice([0.1, 0.2])
    elif op in ("Mul", "Add"):
        data = _signed(kit.rng, _operand_shape(kit, x))
        operands.append(kit.const(data, f"{op.lower()}.const"))
    elif op == "Transpose":
        attrs["perm"] = tuple(kit.draw(st.permutations(range(x.type.rank))))
    return kit.node(op, operands, attrs, name=op.lower())


@register_builder("duplicate")
def _b_duplicate(kit: GraphKit, x: Value) -> Value:
    """The same op with the same operands and attributes applied twice to ``x`` (for CSE); the
    two results are added, concatenated, or one of them is kept as a graph output."""
    first = _unary_node(kit, x)
    node = first.producer
    second = kit.node(node.op, node.inputs, dict(node.attrs), name=node.op.lower())
    how = kit.choice(["add", "keep", "concat"])
    if how == "add":
        return kit.node("Add", [first, second], name="add")
    if how == "concat" and first.type.rank >= 2 and _static_tail(first) \
            and first.shape[1] <= MAX_DIM:
        return kit.node("Concat", [first, second], {"axis": 1}, name="concat")
    kit.keep(second)
    return first


def _constant_operand(kit: GraphKit, shape: tuple[int, ...]) -> Value:
    """A value computed from constants only: arithmetic on two constants, a Reshape or a
    Transpose of one."""
    rng = kit.rng
    form = kit.choice(["Mul", "Add", "Sub", "Div", "Reshape", "Transpose"])
    if form in ("Mul", "Add", "Sub", "Div"):
        a = kit.const(_signed(rng, shape), "cse.a")
        b = kit.const(_signed(rng, kit.choice([shape, ()])), "cse.b")
        return kit.node(form, [a, b], name=f"const_{form.lower()}")
    size = math.prod(shape)
    if form == "Reshape" or len(shape) < 2:
        flat = kit.const(_signed(rng, (size,)), "cse.flat")
        return kit.node("Reshape", [flat, kit.ints(shape, "cse.shape")], name="const_reshape")
    perm = tuple(reversed(range(len(shape))))
    src = kit.const(_signed(rng, tuple(shape[p] for p in perm)), "cse.t")
    return kit.node("Transpose", [src], {"perm": perm}, name="const_transpose")


@register_builder("constant_subexpression")
def _b_constant_subexpression(kit: GraphKit, x: Value) -> Value:
    """An op whose inputs are all constants feeding an op on ``x``: Add/Mul of ``x`` and a
    computed constant, or a Conv whose weight is Mul(W, per-channel scale)."""
    if x.type.rank >= 3 and _spatial_ok(x) and kit.coin():

        def scaled_weight(shape: tuple[int, ...], fan_in: int) -> Value:
            scale = _signed(kit.rng, (shape[0],) + (1,) * (len(shape) - 1))
            w = kit.weight(shape, fan_in, "conv.weight")
            return kit.node("Mul", [w, kit.const(scale, "cse.scale")], name="const_mul")

        return _conv(kit, x, weight=scaled_weight)
    c = _constant_operand(kit, _operand_shape(kit, x))
    return _binary(kit, kit.choice(["Add", "Mul"]), x, c, "use_const")


@register_builder("shape_subgraph", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _static_tail(x))
def _b_shape_subgraph(kit: GraphKit, x: Value) -> Value:
    """``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the result
    then reshaped back (by Shape(x) or a second Concat) or flattened, or left at rank 2."""
    shape = kit.node("Shape", [x], name="shape")
    n = kit.node("Gather", [shape, kit.ints(0, "gather.index")], {"axis": 0}, name="gather")
    n1 = kit.node("Unsqueeze", [n, kit.ints([0], "unsqueeze.axes")], name="unsqueeze")
    target = kit.node("Concat", [n1, kit.ints([-1], "concat.rest")], {"axis": 0},
                      name="concat")
    flat = kit.node("Reshape", [x, target], name="reshape")
    after = kit.choice(["shape", "concat", "flatten", "none"])
    if after == "shape":
        return kit.node("Reshape", [flat, shape], name="reshape")
    if after == "concat":
        back = kit.node("Concat", [n1, kit.ints(x.shape[1:], "concat.dims")], {"axis": 0},
                        name="concat")
        return kit.node("Reshape", [flat, back], name="reshape")
    if after == "flatten":
        return kit.node("Flatten", [flat], name="flatten")
    return flat


@register_builder("multi_use")
def _b_multi_use(kit: GraphKit, x: Value) -> Value:
    """Give ``x`` a second reader (Relu, Sigmoid or Abs of it) that is also a graph output; the
    graph goes on from ``x``, so ``x`` ends up with two users."""
    op = kit.choice(["Relu", "Sigmoid", "Abs"])
    kit.keep(kit.node(op, [x], name=op.lower()))
    return x


# -- tensor ops ----------------------------------------------------------------------------------


@register_builder("transpose")
def _b_transpose(kit: GraphKit, x: Value) -> Value:
    """Transpose by a drawn permutation (sometimes ``perm`` omitted: reversed axes)."""
    if x.type.rank >= 2 and kit.draw(st.integers(0, 4)) == 0:
        return kit.node("Transpose", [x], name="transpose")
    perm = tuple(kit.draw(st.permutations(range(x.type.rank))))
    return kit.node("Transpose", [x], {"perm": perm}, name="transpose")


@register_builder("reshape", ranks=(2, 3, 4, 5), accepts=lambda kit, x: _static_tail(x))
def _b_reshape(kit: GraphKit, x: Value) -> Value:
    """Reshape keeping the batch dimension (0, -1 or its size) and refactoring the rest into
    1-3 dims (one sometimes written -1)."""
    rest = _per_sample(x)
    dims: list[int] = []
    remaining = rest
    for _ in range(kit.draw(st.integers(1, 3)) - 1):
        f = kit.choice([d for d in range(1, remaining + 1) if remaining % d == 0])
        dims.append(f)
        remaining //= f
    dims.append(remaining)
    first = [0, -1] + ([x.shape[0]] if isinstance(x.shape[0], int) else [])
    lead = kit.choice(first)
    if lead != -1 and kit.coin():
        dims[kit.draw(st.integers(0, len(dims) - 1))] = -1
    return kit.node("Reshape", [x, kit.ints([lead, *dims], "reshape.shape")], name="reshape")


@register_builder("softmax")
def _b_softmax(kit: GraphKit, x: Value) -> Value:
    """Softmax over a drawn axis (-1 most often)."""
    rank = x.type.rank
    axis = kit.choice([-1, *range(rank), *range(-rank, -1)])
    attrs: dict[str, Any] = {}
    kit.maybe(attrs, "axis", axis, -1)
    return kit.node("Softmax", [x], attrs, name="softmax")


