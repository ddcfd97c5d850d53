"""Elementwise ops: arithmetic with numpy broadcasting, activations, math functions.

Comparisons and boolean logic are in ``logic``."""

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
    """Inference for binary arithmetic that also folds known shape-tensor contents.

    ``fn`` maps two ints to an int, or to None when the result is not defined (x / 0).
    """

    def infer(ctx: Ctx) -> list[Out]:
        out = _broadcast(ctx)[0]
        if out.dtype != "i64" or len(out.shape) > 1 or (
                isinstance(ctx.value(0), np.ndarray) and isinstance(ctx.value(1), np.ndarray)):
            return [out]
        a, b = ctx.ints(0), ctx.ints(1)
        if isinstance(a, tuple) and isinstance(b, tuple):
            lengths = {len(a), len(b)} - {1}  # broadcasting a single entry (also to none)
            n = lengths.pop() if lengths else 1
            a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
            if len(a) == len(b) and all(isinstance(x, int) for x in a + b):
                folded = tuple(fn(x, y) for x, y in zip(a, b, strict=True))
                if None not in folded:
                    out.sym = folded
        return [out]

    return infer


def _trunc_div_int(x: int, y: int) -> int | None:
    """Integer division rounding toward zero (C and ONNX), exact for any Python ints."""
    if y == 0:
        return None
    q = abs(x) // abs(y)
    return q if (x < 0) == (y < 0) else -q


def _int_div(a, b):
    """Elementwise integer division rounding toward zero, exact (no float round trip)."""
    with np.errstate(divide="ignore", over="ignore"):
        q = np.floor_divide(a, b)
        inexact = (q * b != a) & ((a < 0) != (b < 0))
    return (q + inexact).astype(np.result_type(a, b))


@op("Add", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x + y))
def add(a, b):
    return np.add(a, b)


@op("Sub", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x - y))
def sub(a, b):
    return np.subtract(a, b)


@op("Mul", ["A", "B"], ["C"], infer=_arith_sym(lambda x, y: x * y))
def mul(a, b):
    return np.multiply(a, b)


@op("Div", ["A", "B"], ["C"], infer=_arith_sym(_trunc_div_int))
def div(a, b):
    """Division; integer division truncates toward zero as in ONNX."""
    if np.result_type(a, b).kind in "iu":
        return _int_div(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):  # x/0 is +-inf or NaN, as in IEEE
        return np.divide(a, b)


def _mod(ctx: Ctx) -> list[Out]:
    out = _broadcast(ctx)
    if out[0].dtype in ("f32", "f16") and not ctx.attr("fmod"):
        ctx.fail("float operands need fmod=1 (C fmod); fmod=0 is defined for integers only")
    return out


@op("Mod", ["A", "B"], ["C"], attrs={"fmod": 0}, infer=_mod)
def mod(a, b, fmod):
    """Remainder: with ``fmod=0`` it takes the divisor's sign (Python's %), with ``fmod=1`` the
    dividend's (C's fmod). An integer remainder by 0 is 0 here (undefined in ONNX)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.fmod if fmod else np.mod)(a, b)


def _float_only(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) not in ("f32", "f16"):
        ctx.fail(f"input must be a float tensor, got {ctx.dtype(0)}")
    return [Out(ctx.dtype(0), ctx.shape(0))]


@op("Reciprocal", ["X"], infer=_float_only)
def reciprocal(x):
    with np.errstate(divide="ignore", over="ignore"):  # 1/0 and 1/subnormal are inf, as in IEEE
        return np.reciprocal(x)


@op("Relu", ["X"], infer=same_as(0))
def relu(x):
    return np.maximum(x, np.zeros((), x.dtype))


@op("LeakyRelu", ["X"], attrs={"alpha": 0.01}, infer=same_as(0))
def leaky_relu(x, alpha):
    return np.where(x >= 0, x, x * x.dtype.type(alpha)).astype(x.dtype)


def _clip(ctx: Ctx) -> list[Out]:
    for i, name in ((1, "min"), (2, "max")):
        if not ctx.has(i):
            continue
        if ctx.dtype(i) != ctx.dtype(0):
            ctx.fail(f"{name} is {ctx.dtype(i)} but the input is {ctx.dtype(0)}")
        dims = ctx.shape(i)
        if all(isinstance(d, int) for d in dims) and math.prod(dims) != 1:
            ctx.fail(f"{name} must be a scalar, got shape {list(dims)}")
    return [Out(ctx.dtype(0), ctx.shape(0))]


@op("Clip", ["input", "min?", "max?"], ["output"], infer=_clip)
def clip(x, min=None, max=None):
    """Clamp to [min, max]; an empty bound leaves that side open (min > max gives max)."""
    out = x
    if min is not None:
        out = np.maximum(out, min.astype(x.dtype).reshape(()))
    if max is not None:
        out = np.minimum(out, max.astype(x.dtype).reshape(()))
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


@op("Selu", ["X"], attrs={"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875},
    infer=same_as(0))
def selu(x, alpha, gamma):
    t = x.dtype.type
    neg = t(alpha) * np.expm1(np.minimum(x, t(0)))
    return (t(gamma) * np.where(x > 0, x, neg)).astype(x.dtype)


@op("Softplus", ["X"], infer=same_as(0))
def softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


@op("Softsign", ["input"], ["output"], infer=same_as(0))
def softsign(x):
    return (x / (1 + np.abs(x))).astype(x.dtype)


def _prelu(ctx: Ctx) -> list[Out]:
    """The slope broadcasts to X one way only (ONNX unidirectional): the output has X's shape."""
    if ctx.dtype(0) != ctx.dtype(1):
        ctx.fail(f"X is {ctx.dtype(0)} but slope is {ctx.dtype(1)}")
    x, slope = ctx.shape(0), ctx.shape(1)
    if len(slope) > len(x) or any(isinstance(d, int) and d != b for d, b in
                                  zip(x, broadcast_shapes(x, slope), strict=True)):
        ctx.fail(f"slope shape {list(slope)} does not broadcast to X shape {list(x)}")
    return [Out(ctx.dtype(0), x)]


@op("PRelu", ["X", "slope"], infer=_prelu)
def prelu(x, slope):
    return np.where(x >= 0, x, x * slope).astype(x.dtype)


@op("Exp", ["input"], ["output"], infer=same_as(0))
def exp(x):
    return np.exp(x)


@op("Log", ["input"], ["output"], infer=same_as(0))
def log(x):
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf, log -1 = NaN
        return np.log(x)


@op("Sqrt", ["X"], infer=same_as(0))
def sqrt(x):
    with np.errstate(invalid="ignore"):  # sqrt -1 = NaN
        return np.sqrt(x)


@op("Neg", ["X"], infer=same_as(0))
def neg(x):
    return np.negative(x)


@op("Abs", ["X"], infer=same_as(0))
def abs_(x):
    return np.abs(x)


@op("Erf", ["input"], ["output"], infer=same_as(0))
def erf(x):
    return _erf_erfc(x)[0].astype(x.dtype)


@op("Gelu", ["X"], attrs={"approximate": "none"}, infer=same_as(0))
def gelu(x, approximate):
    xd = x.astype(np.float64)
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)
        return (0.5 * xd * (1 + np.tanh(inner))).astype(x.dtype)
    # 0.5 * x * (1 + erf(x / sqrt 2)), written with erfc so that the left tail keeps its digits
    return (0.5 * xd * _erf_erfc(-xd / math.sqrt(2))[1]).astype(x.dtype)


# W. J. Cody's rational Chebyshev approximations (Math. Comp. 23, 1969; his CALERF routine):
# erf on |x| <= 0.46875, erfc on (0.46875, 4] and on (4, inf). Good to double precision.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
           2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
           2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERFC_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
           1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
           3.43936767414372164e03, 1.23033935480374942e03)
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
           1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_Q = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)
_ERFC_UNDERFLOW = 26.543  # erfc(x) underflows double precision beyond this


def _rational(z, num, den):
    """Cody's nested form (num[-1] z^n + num[0] z^(n-1) + ... + num[-2]) / (z^n + ... + den[-1])."""
    top, bottom = num[-1] * z, z
    for a, b in zip(num[:-2], den[:-1], strict=True):
        top = (top + a) * z
        bottom = (bottom + b) * z
    return (top + num[-2]) / (bottom + den[-1])


def _erf_erfc(x):
    """(erf(x), erfc(x)) in float64, vectorised; NaN stays NaN, +-inf gives +-1."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    with np.errstate(all="ignore"):
        erf_small = x * _rational(y * y, _ERF_A, _ERF_B)
        inv = 1 / (y * y)
        tail = np.where(y <= 4, _rational(y, _ERFC_C, _ERFC_D),
                        (1 / math.sqrt(math.pi) - inv * _rational(inv, _ERFC_P, _ERFC_Q)) / y)
        # exp(-y^2) as exp(-t^2) exp(-(y-t)(y+t)) with t = y cut to 1/16: no cancellation in y^2
        t = np.trunc(y * 16) / 16
        erfc_y = np.exp(-t * t) * np.exp(-(y - t) * (y + t)) * tail
        erfc_y = np.where(y >= _ERFC_UNDERFLOW, 0.0, erfc_y)
        small = y <= 0.46875
        erf = np.where(small, erf_small, np.copysign(1 - erfc_y, x))
        erfc = np.where(small, 1 - erf_small, np.where(x < 0, 2 - erfc_y, erfc_y))
    nan = np.isnan(x)
    return np.where(nan, x, erf), np.where(nan, x, erfc)


def _pow(ctx: Ctx) -> list[Out]:
    return [Out(ctx.dtype(0), broadcast_shapes(ctx.shape(0), ctx.shape(1)))]


@op("Pow", ["X", "Y"], ["Z"], infer=_pow)
def pow_(x, y):
    """x ** y with x's type; Y may have another type. Evaluated in float64 as onnxruntime's
    std::pow does, an integer result truncated toward zero (2 ** -1 == 0, 3 ** 0.5 == 1)."""
    with np.errstate(all="ignore"):
        z = np.power(x.astype(np.float64), y.astype(np.float64))
        return (np.trunc(z) if x.dtype.kind in "iu" else z).astype(x.dtype)


def _fold(fn):
    def kernel(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out.copy() if out is xs[0] else out

    return kernel


sum_ = op("Sum", ["data_0*"], ["sum"], infer=_broadcast)(_fold(np.add))
min_ = op("Min", ["data_0*"], ["min"], infer=_broadcast)(_fold(np.minimum))
max_ = op("Max", ["data_0*"], ["max"], infer=_broadcast)(_fold(np.maximum))


def _where(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) != "bool":
        ctx.fail(f"condition must be bool, got {ctx.dtype(0)}")
    if ctx.dtype(1) != ctx.dtype(2):
        ctx.fail(f"branches must share one dtype, got {ctx.dtype(1)} and {ctx.dtype(2)}")
    return [Out(ctx.dtype(1), broadcast_shapes(ctx.shape(0), ctx.shape(1), ctx.shape(2)))]


@op("Where", ["condition", "X", "Y"], ["output"], infer=_where)
def where(cond, x, y):
    return np.where(cond, x, y)
