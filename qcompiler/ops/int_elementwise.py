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

from . import int_common as ic
from ._schema import NP_DTYPES, Ctx, Out, broadcast_shapes, op, prod_dims
from .lookup import CODE_DTYPES
from .nn import POOL_ATTRS, fold_taps, infer_pool, pool_counts
from .window import conv_window, pad_spatial

# -- inference ---------------------------------------------------------------------------------


def _check_window_sum(ctx: Ctx, count, x_dtype: str, x_zero_point: int) -> None:
    """A pool's int32 sum of ``count`` centred values must not overflow."""
    if not isinstance(count, int):
        return
    bound = ic.window_sum_bound(count, NP_DTYPES[x_dtype], x_zero_point)
    if bound > ic.INT32_MAX:
        ctx.fail(f"{ctx.op}: a sum of {count} values of up to {bound // count} "
                 f"(x - x_zero_point) can overflow its int32 accumulator; use smaller windows")


def _infer_binary(n_multipliers: int):
    """Inference of IntAdd (two multipliers) and IntMul (one)."""

    def infer(ctx: Ctx) -> list[Out]:
        a, b = ic.codes(ctx, 0, "a"), ic.codes(ctx, 1, "b")
        ic.zero_point(ctx, 2, "a_zero_point", a)
        ic.zero_point(ctx, 3, "b_zero_point", b)
        names = ("a_multiplier", "b_multiplier") if n_multipliers == 2 else ("multiplier",)
        for k, name in enumerate(names):
            ic.multiplier(ctx, 4 + k, name)
        dtype = ic.output(ctx, 4 + n_multipliers)
        return [Out(dtype, broadcast_shapes(ctx.shape(0), ctx.shape(1)))]

    return infer


def _infer_pool(ctx: Ctx) -> list[Out]:
    (pooled,) = infer_pool(CODE_DTYPES)(ctx)
    x_zero_point = int(ic.zero_point(ctx, 1, "x_zero_point", pooled.dtype))
    ic.multiplier(ctx, 2, "multiplier")
    _check_window_sum(ctx, math.prod(ctx.attr("kernel_shape")), pooled.dtype, x_zero_point)
    return [Out(ic.output(ctx, 3), pooled.shape)]


def _infer_global_pool(ctx: Ctx) -> list[Out]:
    x = ic.codes(ctx, 0, "x")
    xs = ctx.shape(0)
    if len(xs) < 3:
        ctx.fail(f"{ctx.op}: x must be [N, C, spatial...] (rank >= 3), got rank {len(xs)}")
    x_zero_point = int(ic.zero_point(ctx, 1, "x_zero_point", x))
    ic.multiplier(ctx, 2, "multiplier")
    _check_window_sum(ctx, prod_dims(xs[2:]), x, x_zero_point)
    return [Out(ic.output(ctx, 3), (*xs[:2], *(1,) * (len(xs) - 2)))]


# -- kernels -----------------------------------------------------------------------------------


def centred(x: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """``x - zero_point`` as int32 (exact: both are 8-bit)."""
    return x.astype(np.int32) - np.asarray(zero_point).astype(np.int32)


@op("IntAdd", ["a", "b", "a_zero_point", "b_zero_point", "a_multiplier", "b_multiplier",
               "y_zero_point"], ["y"], attrs=ic.RESCALE_ATTRS, attr_types=ic.RESCALE_ATTR_TYPES,
    infer=_infer_binary(2))
def int_add(a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, y_zero_point, *,
            rounding, qmin, qmax):
    """``clamp(y_zp + R((a - a_zp) * a_multiplier + (b - b_zp) * b_multiplier), qmin, qmax)``
    with numpy broadcasting; ``R`` rounds once, as ``rounding`` says."""
    terms = [centred(a, a_zero_point), centred(b, b_zero_point)]
    return ic.finish(terms, [a_multiplier, b_multiplier], y_zero_point, rounding, qmin, qmax)


@op("IntMul", ["a", "b", "a_zero_point", "b_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs=ic.RESCALE_ATTRS, attr_types=ic.RESCALE_ATTR_TYPES, infer=_infer_binary(1))
def int_mul(a, b, a_zero_point, b_zero_point, multiplier, y_zero_point, *, rounding, qmin,
            qmax):
    """``clamp(y_zp + R((a - a_zp) * (b - b_zp) * multiplier), qmin, qmax)`` with numpy
    broadcasting (the product of two centred 8-bit values fits int32)."""
    product = centred(a, a_zero_point) * centred(b, b_zero_point)
    return ic.finish([product], [multiplier], y_zero_point, rounding, qmin, qmax)


@op("IntAveragePool", ["x", "x_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs={**POOL_ATTRS, "count_include_pad": 0, **ic.RESCALE_ATTRS},
    attr_types=ic.RESCALE_ATTR_TYPES, infer=_infer_pool)
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
    return ic.finish([acc], [per_window], y_zero_point, rounding, qmin, qmax)


@op("IntGlobalAveragePool", ["x", "x_zero_point", "multiplier", "y_zero_point"], ["y"],
    attrs=ic.RESCALE_ATTRS, attr_types=ic.RESCALE_ATTR_TYPES, infer=_infer_global_pool)
def int_global_average_pool(x, x_zero_point, multiplier, y_zero_point, *, rounding, qmin,
                            qmax):
    """``clamp(y_zp + R(sum of (x - x_zp) over the spatial axes * multiplier / count))``,
    ``count`` the spatial size."""
    axes = tuple(range(2, x.ndim))
    acc = np.sum(centred(x, x_zero_point), axis=axes, keepdims=True, dtype=np.int64)
    count = math.prod(x.shape[2:])
    per_window = np.float64(multiplier) / count if count else np.float64(0)
    return ic.finish([acc], [per_window], y_zero_point, rounding, qmin, qmax)
