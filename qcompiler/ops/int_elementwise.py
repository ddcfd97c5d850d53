"""Integer Add, Mul, AveragePool and GlobalAveragePool (qcompiler ops, not ONNX): int8/uint8
in, int8/uint8 out, computed exactly as the integer op set defines them.

Each op centres its inputs by their zero points (int32 values), forms its terms, and ends with
the one rescaling every integer op shares (``fixed_point.rescale``, then ``saturate``)::

    IntAdd:     y = sat(R([a - a_zp, b - b_zp], [a_multiplier, b_multiplier]))
    IntMul:     y = sat(R([(a - a_zp) * (b - b_zp)], [multiplier]))
    IntAveragePool, IntGlobalAveragePool:
                y = sat(R([sum over the window of (x - x_zp)], [multiplier / count]))

where ``sat(r) = clamp(r + y_zero_point, qmin, qmax)``. The multipliers are float64 constants
(a real scale ratio, e.g. s_a / s_y); the zero points are scalar integer constants of their data's
dtype; the output dtype is y_zero_point's. Padding of the pools contributes 0 to the sum (the
zero point, once centred); ``count`` is ONNX AveragePool's divisor (``nn.pool_counts``).
"""

from __future__ import annotations

import math

import numpy as np

from . import fixed_point
from ._schema import NP_DTYPES, Ctx, Out, broadcast_shapes, op, prod_dims
from .nn import POOL_ATTRS, fold_taps, infer_pool, pool_counts
from .window import conv_window, pad_spatial

CODE_DTYPES = ("i8", "u8")
_INT32_MAX = 2**31 - 1

# The attributes every integer op has: how the rescaling rounds and the output clamp.
RESCALE_ATTRS = {"rounding": "fixed_point", "qmin": None, "qmax": None}
RESCALE_ATTR_TYPES = {"qmin": "int", "qmax": "int"}


# -- inference ---------------------------------------------------------------------------------


def check_data(ctx: Ctx, i: int, name: str) -> str:
    """Input ``i`` is int8/uint8 data; its dtype."""
    dtype = ctx.dtype(i)
    if dtype not in CODE_DTYPES:
        ctx.fail(f"{ctx.op}: {name} must be i8 or u8, got {dtype}")
    return dtype


def check_zero_point(ctx: Ctx, i: int, name: str, dtype: str) -> int:
    """Input ``i`` is a scalar constant zero point of ``dtype``; its value."""
    if ctx.dtype(i) != dtype or ctx.shape(i) != ():
        ctx.fail(f"{ctx.op}: {name} must be a scalar {dtype} (the dtype of its data), got "
                 f"{ctx.dtype(i)}{list(ctx.shape(i))}")
    value = ctx.value(i)
    if not isinstance(value, np.ndarray):
        ctx.fail(f"{ctx.op}: {name} must be a constant")
    return int(value)


def check_multiplier(ctx: Ctx, i: int, name: str) -> float:
    """Input ``i`` is a scalar float64 constant multiplier in [0, 2^30); its value."""
    if ctx.dtype(i) != "f64" or ctx.shape(i) != ():
        ctx.fail(f"{ctx.op}: {name} must be a scalar f64 (a ratio of scales), got "
                 f"{ctx.dtype(i)}{list(ctx.shape(i))}")
    value = ctx.value(i)
    if not isinstance(value, np.ndarray):
        ctx.fail(f"{ctx.op}: {name} must be a constant")
    m = float(value)
    if not (math.isfinite(m) and 0 <= m < 2.0**30):
        ctx.fail(f"{ctx.op}: {name} = {m} must be finite, >= 0 and < 2^30 (the largest "
                 f"multiplier the fixed-point form holds); check the input and output scales")
    return m


def check_rescale(ctx: Ctx, y_zero_point: int) -> str:
    """The output zero point (input ``y_zero_point``, i8 or u8, which sets the output dtype)
    and the ``rounding``, ``qmin``, ``qmax`` attributes; the output dtype."""
    dtype = ctx.dtype(y_zero_point)
    if dtype not in CODE_DTYPES:
        ctx.fail(f"{ctx.op}: y_zero_point must be i8 or u8 (the output dtype), got {dtype}")
    check_zero_point(ctx, y_zero_point, "y_zero_point", dtype)
    rounding = ctx.attr("rounding")
    if rounding not in fixed_point.ROUNDINGS:
        ctx.unsupported(f"{ctx.op}: rounding={rounding!r} is not supported; supported: "
                        f"{', '.join(map(repr, fixed_point.ROUNDINGS))}")
    info = np.iinfo(NP_DTYPES[dtype])
    low, high = info.min, info.max
    qmin, qmax = output_range(info, ctx.attr("qmin"), ctx.attr("qmax"))
    if not low <= qmin <= qmax <= high:
        ctx.fail(f"{ctx.op}: the output clamp [qmin, qmax] = [{qmin}, {qmax}] must be a "
                 f"non-empty range within {dtype}'s [{low}, {high}]")
    return dtype


def output_range(info: np.iinfo, qmin: int | None, qmax: int | None) -> tuple[int, int]:
    """The output clamp: ``qmin``/``qmax``, each defaulting to the output dtype's limit."""
    return (info.min if qmin is None else qmin), (info.max if qmax is None else qmax)


def _check_window_sum(ctx: Ctx, count, x_dtype: str, x_zero_point: int) -> None:
    """A pool's int32 sum of ``count`` centred values must not overflow."""
    info = np.iinfo(NP_DTYPES[x_dtype])
    largest = max(x_zero_point - int(info.min), int(info.max) - x_zero_point)
    if isinstance(count, int) and count * largest > _INT32_MAX:
        ctx.fail(f"{ctx.op}: a sum of {count} values of up to {largest} (x - x_zero_point) "
                 f"can overflow its int32 accumulator; use smaller windows")


def _infer_binary(n_multipliers: int):
    """Inference of IntAdd (two multipliers) and IntMul (one)."""

    def infer(ctx: Ctx) -> list[Out]:
        a, b = check_data(ctx, 0, "a"), check_data(ctx, 1, "b")
        check_zero_point(ctx, 2, "a_zero_point", a)
        check_zero_point(ctx, 3, "b_zero_point", b)
        names = ("a_multiplier", "b_multiplier") if n_multipliers == 2 else ("multiplier",)
        for k, name in enumerate(names):
            check_multiplier(ctx, 4 + k, name)
        dtype = check_rescale(ctx, 4 + n_multipliers)
        return [Out(dtype, broadcast_shapes(ctx.shape(0), ctx.shape(1)))]

    return infer


def _infer_pool(ctx: Ctx) -> list[Out]:
    (pooled,) = infer_pool(CODE_DTYPES)(ctx)
    x_zero_point = check_zero_point(ctx, 1, "x_zero_point", pooled.dtype)
    check_multiplier(ctx, 2, "multiplier")
    _check_window_sum(ctx, math.prod(ctx.attr("kernel_shape")), pooled.dtype, x_zero_point)
    return [Out(check_rescale(ctx, 3), pooled.shape)]


def _infer_global_pool(ctx: Ctx) -> list[Out]:
    x = check_data(ctx, 0, "x")
    xs = ctx.shape(0)
    if len(xs) < 3:
        ctx.fail(f"{ctx.op}: x must be [N, C, spatial...] (rank >= 3), got rank {len(xs)}")
    x_zero_point = check_zero_point(ctx, 1, "x_zero_point", x)
    check_multiplier(ctx, 2, "multiplier")
    _check_window_sum(ctx, prod_dims(xs[2:]), x, x_zero_point)
    return [Out(check_rescale(ctx, 3), (*xs[:2], *(1,) * (len(xs) - 2)))]


# -- kernels -----------------------------------------------------------------------------------


def centred(x: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``x - zero_point`` as int32 (exact: both are 8-bit)."""
    return x.astype(np.int32) - np.asarray(zero_point).astype(np.int32)


def finish(terms, multipliers, y_zero_point, rounding, qmin, qmax) -> np.ndarray:
    """``saturate(rescale(terms, multipliers, rounding), y_zero_point, qmin, qmax)`` in the
    output zero point's dtype, qmin/qmax defaulting to its limits."""
    low, high = output_range(np.iinfo(y_zero_point.dtype), qmin, qmax)
    y = fixed_point.rescale(terms, multipliers, rounding)
    return fixed_point.saturate(y, y_zero_point, low, high, y_zero_point.dtype)


@op("IntAdd", ["a", "b", "a_zero_point", "b_zero_point", "a_multiplier", "b_multiplier",
               "y_zero_point"], ["y"], attrs=RESCALE_ATTRS, attr_types=RESCALE_ATTR_TYPES,
    infer=_infer_binary(2))
def int_add(a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, y_zero_point, *,
            rounding, qmin, qmax):
    """``clamp(y_zp + R((a - a_zp) * a_multiplier + (b - b_zp) * b_multiplier), qmin, qmax)``
    with numpy broadcasting; ``R`` rounds once, as ``rounding`` says."""
    terms = [centred(a, a_zero_point), centred(b, b_zero_point)]
    return finish(terms, [a_multiplier, b_multiplier], y_zero_point, rounding, qmin, qmax)


@op("IntMul", ["a", "b", "a_zero_point", "b_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs=RESCALE_ATTRS, attr_types=RESCALE_ATTR_TYPES, infer=_infer_binary(1))
def int_mul(a, b, a_zero_point, b_zero_point, multiplier, y_zero_point, *, rounding, qmin,
            qmax):
    """``clamp(y_zp + R((a - a_zp) * (b - b_zp) * multiplier), qmin, qmax)`` with numpy
    broadcasting (the product of two centred 8-bit values fits int32)."""
    product = centred(a, a_zero_point) * centred(b, b_zero_point)
    return finish([product], [multiplier], y_zero_point, rounding, qmin, qmax)


@op("IntAveragePool", ["x", "x_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs={**POOL_ATTRS, "count_include_pad": 0, **RESCALE_ATTRS},
    attr_types=RESCALE_ATTR_TYPES, infer=_infer_pool)
def int_average_pool(x, x_zero_point, multiplier, y_zero_point, *, auto_pad, ceil_mode,
                     count_include_pad, dilations, kernel_shape, pads, strides, rounding, qmin,
                     qmax):
    """``clamp(y_zp + R(acc[p] * multiplier / count[p]), qmin, qmax)``: ``acc[p]`` the sum of
    ``x - x_zp`` over window ``p`` (padding adds 0), ``count[p]`` AveragePool's divisor; a
    window over padding alone (count 0) gives y_zp."""
    kernel = tuple(kernel_shape)
    spatial = x.shape[2:]
    win = conv_window("IntAveragePool", spatial, kernel, strides, dilations, pads, auto_pad,
                      ceil_mode)
    padded = pad_spatial(centred(x, x_zero_point), win.begin, win.end)
    acc = fold_taps(padded, kernel, win, np.add)
    counts = pool_counts(spatial, kernel, win, count_include_pad)
    per_window = np.divide(np.float64(multiplier), counts, out=np.zeros(counts.shape),
                           where=counts > 0)
    return finish([acc], [per_window], y_zero_point, rounding, qmin, qmax)


@op("IntGlobalAveragePool", ["x", "x_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs=RESCALE_ATTRS, attr_types=RESCALE_ATTR_TYPES, infer=_infer_global_pool)
def int_global_average_pool(x, x_zero_point, multiplier, y_zero_point, *, rounding, qmin,
                            qmax):
    """``clamp(y_zp + R(sum of (x - x_zp) over the spatial axes * multiplier / count))``,
    ``count`` the spatial size."""
    axes = tuple(range(2, x.ndim))
    acc = np.sum(centred(x, x_zero_point), axis=axes, keepdims=True, dtype=np.int64)
    count = math.prod(x.shape[2:])
    per_window = np.float64(multiplier) / count if count else np.float64(0)
    return finish([acc], [per_window], y_zero_point, rounding, qmin, qmax)
