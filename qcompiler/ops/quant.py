"""QuantizeLinear and DequantizeLinear (ONNX opset 21), per tensor or per axis, and
Requantize (a qcompiler op: the two composed, integer in and integer out).

``real = scale * (q - zero_point)``. Quantizing divides in float32 like onnxruntime, rounds half
to even, then saturates; NaN becomes qmin, as onnxruntime gives. Blocked quantization
(``block_size`` != 0) is refused at inference time.
"""

from __future__ import annotations

import numpy as np

from . import fixed_point
from ._schema import NP_DTYPES, Ctx, Out, norm_axis, op
from .dtypes import FROM_ONNX
from .tensor import cast_target

QUANT_DTYPES = ("i8", "u8", "i32")
_FLOATS = ("f32", "f16")


def _params(ctx: Ctx, x_types: tuple[str, ...], scale_at: int = 1) -> int | None:
    """Check x, the scale (input ``scale_at``) and the zero point after it; the quantization
    axis (None when per tensor)."""
    x, scale = ctx.shape(0), ctx.shape(scale_at)
    if ctx.dtype(0) not in x_types:
        ctx.fail(f"x must be one of {', '.join(x_types)}, got {ctx.dtype(0)}")
    if ctx.dtype(scale_at) not in _FLOATS:
        ctx.fail(f"scale must be f32 or f16, got {ctx.dtype(scale_at)}")
    if ctx.attrs.get("block_size"):
        ctx.unsupported(f"block_size={ctx.attr('block_size')} (blocked quantization) is not "
                 f"supported; use per-tensor or per-axis scales")
    zero_at = scale_at + 1
    if ctx.has(zero_at) and ctx.shape(zero_at) != scale:
        ctx.fail(f"zero point shape {list(ctx.shape(zero_at))} differs from scale shape "
                 f"{list(scale)}")
    if len(scale) == 0 or scale == (1,):
        return None
    if len(scale) > 1:
        ctx.unsupported(f"a scale of shape {list(scale)} means blocked quantization, which is "
                        f"not "
                 f"supported; use a scalar or a 1-D scale")
    axis = norm_axis(ctx.attr("axis"), len(x))
    if isinstance(x[axis], int) and isinstance(scale[0], int) and x[axis] != scale[0]:
        ctx.fail(f"{scale[0]} scales for axis {axis} of size {x[axis]} (x shape {list(x)})")
    return axis


def _along(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-tensor or per-axis parameter shaped to broadcast against an ``ndim`` tensor."""
    if param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


def _quantize(ctx: Ctx) -> list[Out]:
    _params(ctx, _FLOATS)
    if ctx.dtype(1) != ctx.dtype(0):
        ctx.fail(f"scale is {ctx.dtype(1)} but x is {ctx.dtype(0)}")
    code = ctx.attr("output_dtype")
    dtype = cast_target(code) if code else "u8"
    if ctx.has(2):
        if code and ctx.dtype(2) != dtype:
            ctx.fail(f"output_dtype={code} ({dtype}) but the zero point is {ctx.dtype(2)}")
        dtype = ctx.dtype(2)
    if dtype not in QUANT_DTYPES:
        ctx.unsupported(f"cannot quantize to {dtype}; supported: {', '.join(QUANT_DTYPES)}")
    return [Out(dtype, ctx.shape(0))]


@op("QuantizeLinear", ["x", "y_scale", "y_zero_point?"], ["y"],
    attrs={"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0}, infer=_quantize)
def quantize_linear(x, y_scale, y_zero_point=None, axis=1, saturate=1, block_size=0,
                    output_dtype=0):
    """``saturate(round_half_even(x / scale) + zero_point)``; the zero point sets the type
    (else ``output_dtype``, else uint8). ``saturate`` only concerns float8 and is ignored."""
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    else:
        dtype = np.dtype(NP_DTYPES[FROM_ONNX[output_dtype] if output_dtype else "u8"])
        y_zero_point = np.zeros((), dtype)
    info = np.iinfo(dtype)
    scale = _along(y_scale, x.ndim, axis).astype(np.float32)
    zero = _along(y_zero_point, x.ndim, axis).astype(np.float64)
    # float64 holds every int32 exactly, so adding the zero point and clamping do not round;
    # a quotient that overflows float32 is infinite and saturates.
    with np.errstate(over="ignore"):
        q = np.rint(x.astype(np.float32) / scale).astype(np.float64) + zero
    q = np.where(np.isnan(q), info.min, np.clip(q, info.min, info.max))
    return q.astype(dtype)


def _dequantize(ctx: Ctx) -> list[Out]:
    _params(ctx, QUANT_DTYPES)
    if ctx.has(2) and ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"zero point is {ctx.dtype(2)} but x is {ctx.dtype(0)}")
    return [Out(ctx.dtype(1), ctx.shape(0))]


@op("DequantizeLinear", ["x", "x_scale", "x_zero_point?"], ["y"],
    attrs={"axis": 1, "block_size": 0}, infer=_dequantize)
def dequantize_linear(x, x_scale, x_zero_point=None, axis=1, block_size=0):
    """``(x - zero_point) * scale`` in the scale's float type (the difference is exact)."""
    diff = x.astype(np.int64)
    if x_zero_point is not None:
        diff = diff - _along(x_zero_point, x.ndim, axis).astype(np.int64)
    scale = _along(x_scale, x.ndim, axis)
    with np.errstate(over="ignore"):  # beyond the float range the product is infinite
        return diff.astype(scale.dtype) * scale


REQUANTIZE_ROUNDINGS = ("float", "fixed_point")


def _requantize(ctx: Ctx) -> list[Out]:
    if ctx.attr("rounding") not in REQUANTIZE_ROUNDINGS:
        ctx.unsupported(f"rounding={ctx.attr('rounding')!r} is not supported; supported: "
                        f"{', '.join(map(repr, REQUANTIZE_ROUNDINGS))}")
    _params(ctx, QUANT_DTYPES, 1)
    _params(ctx, QUANT_DTYPES, 3)
    for at in (1, 3):
        if ctx.dtype(at) != "f32":
            ctx.fail(f"Requantize computes in float32: scale input {at} must be f32, got "
                     f"{ctx.dtype(at)}")
    if ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"x_zero_point is {ctx.dtype(2)} but x is {ctx.dtype(0)}")
    if ctx.dtype(4) not in QUANT_DTYPES:
        ctx.fail(f"y_zero_point must be one of {', '.join(QUANT_DTYPES)}, got {ctx.dtype(4)}")
    return [Out(ctx.dtype(4), ctx.shape(0))]


@op("Requantize", ["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point"], ["y"],
    attrs={"axis": 1, "rounding": "float"}, infer=_requantize)
def requantize(x, x_scale, x_zero_point, y_scale, y_zero_point, axis=1, rounding="float"):
    """``x`` re-expressed with the output parameters; ``axis`` serves whichever parameters are
    per axis. ``rounding`` names how the rescaling rounds:

    - ``"float"`` (the default): ``QuantizeLinear(DequantizeLinear(x, x_scale, x_zero_point),
      y_scale, y_zero_point)`` in float32, bit for bit, round half to even: what a DQ -> Q pair
      with different parameters becomes (see the ``cancel-qdq`` pass), and what onnxruntime
      computes.
    - ``"fixed_point"``: integer arithmetic with one rounding, as integer lowering emits it.
      ``M = x_scale / y_scale`` (the float32 scales divided in float64) becomes per channel
      ``(M0, t) = fixed_point.fixed_point_multiplier(M)``, then
      ``y = clamp(y_zero_point + fixed_point.requantize(x - x_zero_point, M0, t))`` in int64:
      ``(x - x_zero_point) * M0 / 2^t`` rounded half toward +inf, clamped to the output type's
      limits. A multiplier below 2^-32 flushes to 0 (``y = y_zero_point``); ``M`` >= 2^30 is an
      error when the graph runs (an ``ExecutionError`` naming the node).
    """
    if rounding == "fixed_point":
        return _requantize_fixed_point(x, x_scale, x_zero_point, y_scale, y_zero_point, axis)
    real = dequantize_linear(x, x_scale, x_zero_point, axis=axis)
    return quantize_linear(real, y_scale, y_zero_point, axis=axis)


def _requantize_fixed_point(x, x_scale, x_zero_point, y_scale, y_zero_point, axis):
    """The ``"fixed_point"`` rounding of ``requantize``."""
    ratio = np.broadcast_arrays(_along(x_scale.astype(np.float64), x.ndim, axis),
                                _along(y_scale.astype(np.float64), x.ndim, axis))
    multiplier = ratio[0] / ratio[1]
    pairs = [fixed_point.fixed_point_multiplier(float(m)) for m in multiplier.ravel()]
    m0 = np.array([p[0] for p in pairs], np.int64).reshape(multiplier.shape)
    shift = np.array([p[1] for p in pairs], np.int64).reshape(multiplier.shape)
    acc = x.astype(np.int64) - _along(x_zero_point, x.ndim, axis).astype(np.int64)
    y = fixed_point.requantize(acc, m0, shift) + _along(y_zero_point, x.ndim, axis).astype(np.int64)
    info = np.iinfo(y_zero_point.dtype)
    return np.clip(y, info.min, info.max).astype(y_zero_point.dtype)
