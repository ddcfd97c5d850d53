"""``Requantize`` (``qcompiler/ops/quant.py``): int8/uint8/int32 codes re-expressed with other
quantization parameters, per tensor or per axis, both roundings, exactly as its numpy kernel:

- ``"float"`` (the op's default): ``QuantizeLinear(DequantizeLinear(x))`` in float32,
  ``q = rint(float32(x - x_zp) * x_scale / y_scale)``, then ``q + y_zp`` in float64 clamped
  to the output dtype (NaN, from a zero or infinite scale, gives its lowest code as there:
  ``maxnum`` returns the bound when one operand is NaN);
- ``"fixed_point"``: ``M = x_scale / y_scale`` in float64, ``(M0, t) =
  fixed_point_multiplier(M)`` per channel at compile time, then
  ``clamp(y_zp + ((x - x_zp) * M0 + 2^(t-1)) >> t)`` in int64.

The tensor is viewed as [outer, channels, inner] around the quantization axis (channels = 1
when every parameter is per tensor); an item is a block of up to ``BLOCK`` elements of one
row (one channel), whose constants are loaded once, so the inner loop vectorises.
"""

from __future__ import annotations

import math

import numpy as np

from qcompiler.graph import Node
from qcompiler.ops import fixed_point

from ..kernel import Buffer, Call, Const, Context, NotNative, attrs, emitter
from .elementwise import BLOCK, Builder, constant, fixed_point_ir

_TYPES = {np.dtype(np.int8): ("i8", "sext"), np.dtype(np.uint8): ("i8", "zext"),
          np.dtype(np.int32): ("i32", "sext")}


def _per_channel(params: list[np.ndarray], shape: tuple, axis: int) -> tuple[int, list]:
    """(channels, each parameter as one value per channel): channels is 1 when every
    parameter is per tensor (size 1), else the size of the quantization axis."""
    per_axis = any(p.size != 1 for p in params)
    channels = shape[axis] if per_axis else 1
    return channels, [np.broadcast_to(p.reshape(-1), (channels,)) for p in params]


def _float_tables(x_scale, x_zp, y_scale, y_zp, wide: bool) -> tuple[list, list[str]]:
    """Per-channel tables of the float rounding and the IR turning ``%diff`` into the
    float64 ``%s`` (before the clamp)."""
    tables = [np.asarray(x_scale, np.float32), np.asarray(x_zp, np.int64 if wide else np.int32),
              np.asarray(y_scale, np.float32), np.asarray(y_zp, np.float64)]
    acc = "i64" if wide else "i32"
    ir = [f"  %f = sitofp {acc} %diff to float",
          "  %real = fmul float %f, %c0",
          "  %quot = fdiv float %real, %c2",
          "  %q = call float @llvm.rint.f32(float %quot)",
          "  %qd = fpext float %q to double",
          "  %s = fadd double %qd, %c3"]
    return tables, ir


def _fixed_point_tables(x_scale, x_zp, y_scale, y_zp) -> tuple[list, list[str]]:
    """Per-channel tables of the fixed-point rounding (M0, 2^(t-1), t, zero points) and the IR
    turning the int32 ``%diff`` into the int64 ``%s`` (before the clamp)."""
    ratio = np.asarray(x_scale, np.float64) / np.asarray(y_scale, np.float64)
    try:
        pairs = [fixed_point.fixed_point_multiplier(float(m)) for m in ratio]
    except ValueError as exc:
        raise NotNative(str(exc)) from None
    m0 = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
    # M0 < 2^31 as int32, widened in the loop: LLVM then multiplies 32 x 32 -> 64 bits
    tables = [m0.astype(np.int32), np.asarray(x_zp, np.int32), half, shift,
              np.asarray(y_zp, np.int64)]
    ir = ["  %m0 = sext i32 %c0 to i64", *fixed_point_ir("%r", [("%diff", "%m0")], "%c2", "%c3")]
    return tables, ir + ["  %s = add nsw i64 %r, %c4"]


_TABLE_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
                np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}


@emitter("Requantize")
def requantize(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    a = attrs(node)
    rounding = a["rounding"]
    x_type, x_ext = _TYPES[x.dtype.np]
    y_type = _TYPES[y.dtype.np][0]
    shape = tuple(x.shape)
    params = [np.asarray(constant(node, k, what)) for k, what in
              ((1, "x_scale"), (2, "x_zero_point"), (3, "y_scale"), (4, "y_zero_point"))]
    axis = a["axis"] % max(len(shape), 1)
    channels, (x_scale, x_zp, y_scale, y_zp) = _per_channel(params, shape, axis)
    if math.prod(shape) == 0:
        return []
    wide = x_type == "i32" and bool(np.any(x_zp != 0))
    if rounding == "float":
        tables, scale = _float_tables(x_scale, x_zp, y_scale, y_zp, wide)
    elif wide:
        raise NotNative("int32 codes with a nonzero zero point: x - x_zero_point may leave "
                        "int32, which the numpy kernel refuses when it runs")
    else:
        tables, scale = _fixed_point_tables(x_scale, x_zp, y_scale, y_zp)
    acc = "i64" if wide else "i32"
    info = np.iinfo(y.dtype.np)
    if channels == 1:
        outer, inner = 1, math.prod(shape)
    else:
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    blocks = -(-inner // BLOCK)
    if rounding == "float":
        clamp = [f"  %low = call double @llvm.maxnum.f64(double %s, double {float(info.min)!r})",
                 f"  %high = call double @llvm.minnum.f64(double %low, double "
                 f"{float(info.max)!r})",
                 "  %wide = fptosi double %high to i32"]  # the bounds fit: no i64 lanes
    else:
        clamp = [f"  %low = call i64 @llvm.smax.i64(i64 %s, i64 {info.min})",
                 f"  %high = call i64 @llvm.smin.i64(i64 %low, i64 {info.max})",
                 "  %wide = trunc i64 %high to i32"]
    types = [_TABLE_TYPES[t.dtype] for t in tables]
    store = (f"  %code = trunc i32 %wide to {y_type}" if y_type != "i32"
             else "  %code = add i32 %wide, 0")
    widen = (f"  %x.wide = {x_ext} {x_type} %x.code to {acc}" if x_type != acc
             else "  %x.wide = add i32 %x.code, 0")

    def ir(name: str) -> str:
        b = Builder()
        with b.loop("it", "%begin", "%end"):
            b.emit(f"  %row = udiv i64 %it, {blocks}",
                   f"  %block = urem i64 %it, {blocks}",
                   f"  %lo = mul nuw nsw i64 %block, {BLOCK}",
                   f"  %hi.raw = add nuw nsw i64 %lo, {BLOCK}",
                   f"  %hi = call i64 @llvm.umin.i64(i64 %hi.raw, i64 {inner})",
                   f"  %c = urem i64 %row, {channels}",
                   f"  %base = mul nuw nsw i64 %row, {inner}")
            for k, type_ in enumerate(types):
                b.emit(f"  %c{k}.at = getelementptr inbounds {type_}, ptr %t{k}, i64 %c",
                       f"  %c{k} = load {type_}, ptr %c{k}.at")
            with b.loop("i", "%lo", "%hi"):
                b.emit("  %k = add nuw nsw i64 %base, %i",
                       f"  %x.at = getelementptr inbounds {x_type}, ptr %x, i64 %k",
                       f"  %x.code = load {x_type}, ptr %x.at",
                       widen,
                       f"  %diff = sub nsw {acc} %x.wide, %c1",
                       *scale, *clamp,
                       store,
                       f"  %y.at = getelementptr inbounds {y_type}, ptr %y, i64 %k",
                       f"  store {y_type} %code, ptr %y.at")
        params = ["ptr noalias nocapture readonly %x", "ptr noalias nocapture writeonly %y"]
        params += [f"ptr noalias nocapture readonly %t{k}" for k in range(len(tables))]
        return b.function(name, params)

    key = (rounding, x.dtype.np.name, y.dtype.np.name, wide, channels, inner, blocks)
    fn = ctx.function("requantize", key, ir)
    args = (Buffer(x.name), Buffer(y.name), *(Const(np.ascontiguousarray(t)) for t in tables))
    return [Call(fn, args, items=outer * channels * blocks)]

