"""Elementwise ops: arithmetic with numpy broadcasting, activations, comparisons-free math."""

from __future__ import annotations

import math

import numpy as np

from ._schema import Ctx, Out, broadcast_shapes, op, same_as


def _broadcast(ctx: Ctx) -> list[Out]:
    dtypes = {ctx.dtype(i) for i in range(len(ctx.types)) if ctx.has(i)}
    if len(dtypes) != 1:
        ctx.fail(f"operands must share one dtype, got {', '.join(sorted(dtypes))}")
    shapes = [ctx.shape(i) for i in range(len(ctx.types)) if ctx.has(i)]
    return [Out(dtypes.pop(), broadcast_shapes(*shapes))]


def _arith_sym(fn):
    """Inference for binary arithmetic that also folds known shape-tensor contents."""

    def infer(ctx: Ctx) -> list[Out]:
        out = _broadcast(ctx)[0]
        a, b = ctx.ints(0), ctx.ints(1)
        if (ctx.dtype(0) == "i64" and isinstance(a, tuple) and isinstance(b, tuple)
                and len(out.shape) <= 1 and not (isinstance(ctx.value(0), np.ndarray)
                                                 and isinstance(ctx.value(1), np.ndarray))):
            n = max(len(a), len(b))
            a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
            if all(isinstance(x, int) for x in a + b):
                out.sym = tuple(int(fn(x, y)) for x, y in zip(a, b))
        return [out]

    return infer


def _int_div(a, b):
    return np.trunc(np.true_divide(a, b)).astype(np.result_type(a, b))


@op("Add", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x + y))
def add(a, b):
    return np.add(a, b)


@op("Sub", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x - y))
def sub(a, b):
    return np.subtract(a, b)


@op("Mul", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x * y))
def mul(a, b):
    return np.multiply(a, b)


@op("Div", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: int(x / y)))
def div(a, b):
    """Division; integer division truncates toward zero as in ONNX."""
    if np.issubdtype(np.result_type(a, b), np.integer):
        return _int_div(a, b)
    return np.divide(a, b)


@op("Relu", ["X"], infer=same_as(0))
def relu(x):
    return np.maximum(x, np.zeros((), x.dtype))


@op("LeakyRelu", ["X"], attrs={"alpha": 0.01}, infer=same_as(0))
def leaky_relu(x, alpha):
    return np.where(x >= 0, x, x * x.dtype.type(alpha)).astype(x.dtype)


@op("Clip", ["input", "min?", "max?"], ["output"], infer=same_as(0))
def clip(x, min=None, max=None):
    """Clamp to [min, max]; an empty bound leaves that side open."""
    out = x
    if min is not None:
        out = np.maximum(out, min.astype(x.dtype))
    if max is not None:
        out = np.minimum(out, max.astype(x.dtype))
    return out if out is not x else x.copy()


@op("Sigmoid", ["X"], infer=same_as(0))
def sigmoid(x):
    # Split by sign so that exp never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


@op("HardSigmoid", ["X"], attrs={"alpha": 0.2, "beta": 0.5}, infer=same_as(0))
def hard_sigmoid(x, alpha, beta):
    t = x.dtype.type
    return np.clip(x * t(alpha) + t(beta), t(0), t(1)).astype(x.dtype)


@op("HardSwish", ["X"], infer=same_as(0))
def hard_swish(x):
    t = x.dtype.type
    return (x * np.clip(x * t(1 / 6) + t(0.5), t(0), t(1))).astype(x.dtype)


@op("Tanh", ["input"], ["output"], infer=same_as(0))
def tanh(x):
    return np.tanh(x)


@op("Elu", ["X"], attrs={"alpha": 1.0}, infer=same_as(0))
def elu(x, alpha):
    t = x.dtype.type
    return np.where(x > 0, x, t(alpha) * np.expm1(np.minimum(x, t(0)))).astype(x.dtype)


@op("PRelu", ["X", "slope"], infer=_broadcast)
def prelu(x, slope):
    return np.where(x >= 0, x, x * slope).astype(x.dtype)


@op("Exp", ["input"], ["output"], infer=same_as(0))
def exp(x):
    return np.exp(x)


@op("Log", ["input"], ["output"], infer=same_as(0))
def log(x):
    return np.log(x)


@op("Sqrt", ["X"], infer=same_as(0))
def sqrt(x):
    return np.sqrt(x)


@op("Neg", ["X"], infer=same_as(0))
def neg(x):
    return np.negative(x)


@op("Abs", ["X"], infer=same_as(0))
def abs_(x):
    return np.abs(x)


@op("Erf", ["input"], ["output"], infer=same_as(0))
def erf(x):
    return _erf(x).astype(x.dtype)


@op("Gelu", ["X"], attrs={"approximate": "none"}, infer=same_as(0))
def gelu(x, approximate):
    xd = x.astype(np.float64)
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)
        return (0.5 * xd * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * xd * (1 + _erf(xd / math.sqrt(2)))).astype(x.dtype)


def _erf(x):
    """erf in float64 via math.erf (vectorised); exact to double precision."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.fromiter((math.erf(v) for v in flat), np.float64, flat.size).reshape(np.shape(x))


@op("Pow", ["X", "Y"], ["Z"], infer=same_as(0))
def pow_(x, y):
    return np.power(x, y.astype(x.dtype) if x.dtype.kind == "f" else y).astype(x.dtype)


def _variadic(ctx: Ctx) -> list[Out]:
    return _broadcast(ctx)


@op("Sum", ["data_0*"], ["sum"], infer=_variadic)
def sum_(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return np.array(out, copy=True) if len(xs) == 1 else out


@op("Min", ["data_0*"], ["min"], infer=_variadic)
def min_(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = np.minimum(out, x)
    return out


@op("Max", ["data_0*"], ["max"], infer=_variadic)
def max_(*xs):
    out = xs[0]
    for x in xs[1:]:
        out = np.maximum(out, x)
    return out


def _where(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) != "bool":
        ctx.fail(f"condition must be bool, got {ctx.dtype(0)}")
    if ctx.dtype(1) != ctx.dtype(2):
        ctx.fail(f"branches must share one dtype, got {ctx.dtype(1)} and {ctx.dtype(2)}")
    return [Out(ctx.dtype(1), broadcast_shapes(ctx.shape(0), ctx.shape(1), ctx.shape(2)))]


@op("Where", ["condition", "X", "Y"], ["output"], infer=_where)
def where(cond, x, y):
    return np.where(cond, x, y)


