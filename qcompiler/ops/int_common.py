"""What every integer op shares (qcompiler/ops/int_nn.py, int_elementwise.py): the rounding and
output-clamp attributes, the inference checks of integer operands and their constants, and
``finish``, the rescale, zero point and clamp that end every kernel (DESIGN.md, "Numerics
contract"; ``fixed_point.rescale``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import fixed_point
from ._nn_common import is_int
from ._schema import Ctx
from .lookup import CODE_DTYPES

# Attributes every integer op has: the rounding of its rescale and its output clamp (None: the
# output dtype's limit). A fused Relu is qmin = y_zero_point; a fused Clip, its quantized bounds.
RESCALE_ATTRS = {"rounding": "fixed_point", "qmin": None, "qmax": None}
RESCALE_ATTR_TYPES = {"qmin": "int", "qmax": "int"}
_MAX_FIXED_POINT = 2.0**30  # the largest multiplier the fixed-point form holds (exclusive)


def constant(ctx: Ctx, i: int, what: str) -> np.ndarray:
    value = ctx.value(i)
    if not isinstance(value, np.ndarray):
        ctx.fail(f"{ctx.op}: {what} must be a constant (it is folded at compile time)")
    return value


def codes(ctx: Ctx, i: int, what: str) -> str:
    dtype = ctx.dtype(i)
    if dtype not in CODE_DTYPES:
        ctx.fail(f"{ctx.op}: {what} must be i8 or u8, got {dtype}")
    return dtype


def scalar_or_per_channel(ctx: Ctx, i: int, what: str, channels: Any) -> None:
    """Input ``i`` has shape () or, when ``channels`` is given, [channels]."""
    shape = ctx.shape(i)
    if shape == () or (channels is not None and len(shape) == 1
                       and (not is_int(shape[0], channels) or shape[0] == channels)):
        return
    allowed = "()" if channels is None else f"() or [{channels}] (one per output channel)"
    ctx.fail(f"{ctx.op}: {what} must have shape {allowed}, got {list(shape)}")


def zero_point(ctx: Ctx, i: int, what: str, dtype: str, channels: Any = None) -> np.ndarray:
    """A zero point: an integer constant of its tensor's dtype, scalar (or per channel); its
    value."""
    if ctx.dtype(i) != dtype:
        ctx.fail(f"{ctx.op}: {what} must be {dtype} (the dtype of the tensor it belongs to), "
                 f"got {ctx.dtype(i)}")
    scalar_or_per_channel(ctx, i, what, channels)
    return constant(ctx, i, what)


def multiplier(ctx: Ctx, i: int, what: str, channels: Any = None) -> None:
    """A real multiplier: a float64 constant, finite and >= 0, below 2^30 for fixed point."""
    if ctx.dtype(i) != "f64":
        ctx.fail(f"{ctx.op}: {what} must be f64, got {ctx.dtype(i)}")
    scalar_or_per_channel(ctx, i, what, channels)
    value = constant(ctx, i, what)
    if not np.all(np.isfinite(value) & (value >= 0)):
        ctx.fail(f"{ctx.op}: {what} must be finite and >= 0, got {value.tolist()}")
    if ctx.attr("rounding") == "fixed_point" and np.any(value >= _MAX_FIXED_POINT):
        ctx.fail(f"{ctx.op}: {what} {value.max()} does not fit the fixed-point form (at most "
                 f"2^30); check the input, weight and output scales")


def bias(ctx: Ctx, i: int, channels: Any) -> None:
    if ctx.has(i):
        if ctx.dtype(i) != "i32":
            ctx.fail(f"{ctx.op}: bias must be i32, got {ctx.dtype(i)}")
        scalar_or_per_channel(ctx, i, "bias", channels)


def output(ctx: Ctx, y_zero_point: int) -> str:
    """Check rounding, the output zero point and the clamp; the output dtype."""
    if ctx.attr("rounding") not in fixed_point.ROUNDINGS:
        ctx.unsupported(f"{ctx.op}: rounding={ctx.attr('rounding')!r} is not supported; "
                        f"supported: {', '.join(map(repr, fixed_point.ROUNDINGS))}")
    dtype = codes(ctx, y_zero_point, "y_zero_point")
    zero_point(ctx, y_zero_point, "y_zero_point", dtype)
    info = np.iinfo(np.dtype("int8" if dtype == "i8" else "uint8"))
    qmin, qmax = output_range(ctx.attr("qmin"), ctx.attr("qmax"), info)
    if not info.min <= qmin <= qmax <= info.max:
        ctx.fail(f"{ctx.op}: the output clamp [qmin, qmax] = [{qmin}, {qmax}] must be a "
                 f"non-empty range within {dtype}'s [{info.min}, {info.max}]")
    return dtype


def output_range(qmin: int | None, qmax: int | None, info: np.iinfo) -> tuple[int, int]:
    """The output clamp: ``qmin``/``qmax``, or the dtype's limits where they are None."""
    return (info.min if qmin is None else qmin, info.max if qmax is None else qmax)


def finish(terms: list, multipliers: list, y_zero_point: np.ndarray, rounding: str,
            qmin: int | None, qmax: int | None) -> np.ndarray:
    """The integer op's output: its terms rescaled, offset by the zero point and clamped."""
    info = np.iinfo(y_zero_point.dtype)
    lo, hi = output_range(qmin, qmax, info)
    y = fixed_point.rescale(terms, multipliers, rounding)
    return fixed_point.saturate(y, y_zero_point, lo, hi, y_zero_point.dtype)


INT32_MAX = 2**31 - 1


def window_sum_bound(count: int, dtype, zero_point: int) -> int:
    """The largest magnitude a sum of ``count`` centred codes ``x - zero_point`` of ``dtype``
    reaches (a pool's int32 accumulator); it fits when at most ``INT32_MAX``."""
    info = np.iinfo(dtype)
    return count * max(zero_point - int(info.min), int(info.max) - zero_point)
