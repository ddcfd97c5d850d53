"""``QuantizeLinear`` (float32 to int8/uint8) and ``DequantizeLinear`` (int8/uint8/int32 to
float32), per tensor or per axis, bit for bit as ``qcompiler/ops/quant.py`` computes them: the
boundary ops of every quantized model.

Quantizing is ``clamp(rint(x / scale) + zero_point)`` with the division and the rounding (half to
even) in float32; the clamp is done on the float before the zero point is added, against the
bounds ``qmin - zero_point`` and ``qmax - zero_point`` (integral floats, so the clamp is exact and
gives what numpy's float64 ``clip(q + zero_point)`` gives); ``maxnum`` turns NaN into the lower
bound, as numpy's ``where(isnan(q), qmin, ...)`` does. Dequantizing is
``float32(x - zero_point) * scale``, the difference exact in int32 (int64 for int32 codes).

The tensor is seen as rows of one parameter set each: per tensor, fixed chunks of elements; per
axis with a long inner extent (the elements after the axis), one row per (outer, channel) pair;
per axis with a short inner extent, one row per outer index holding every channel, with the
parameters repeated to the row's length so the loop over a row stays simple and vectorises.
"""

from __future__ import annotations

import math

import numpy as np

from qcompiler.graph import Node

from ..kernel import Buffer, Call, Const, Context, NotNative, attrs, emitter

CHUNK = 4096  # elements per part of a per-tensor call
LONG_ROW = 16  # an inner extent at least this long makes one row per channel

_INT = {np.dtype(np.int8): ("i8", "sext"), np.dtype(np.uint8): ("i8", "zext"),
        np.dtype(np.int32): ("i32", "sext")}

_FUNCTION = """
declare float @llvm.rint.f32(float)
declare float @llvm.maxnum.f32(float, float)
declare float @llvm.minnum.f32(float, float)

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, {params}) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %row, label %exit

row:
  %r = phi i64 [ %begin, %entry ], [ %r.next, %row.end ]
  %first = mul nuw nsw i64 %r, {length}
  %left = sub nsw i64 {total}, %first
  %short = icmp slt i64 %left, {length}
  %count = select i1 %short, i64 %left, i64 {length}
  %channel = urem i64 %r, {channels}
{row_params}
  br label %element

element:
  %j = phi i64 [ 0, %row ], [ %j.next, %element ]
  %i = add nuw nsw i64 %first, %j
{element_params}
  %x.at = getelementptr inbounds {x_type}, ptr %x, i64 %i
  %xv = load {x_type}, ptr %x.at
{compute}
  %y.at = getelementptr inbounds {y_type}, ptr %y, i64 %i
  store {y_type} %yv, ptr %y.at
  %j.next = add nuw nsw i64 %j, 1
  %more = icmp slt i64 %j.next, %count
  br i1 %more, label %element, label %row.end

row.end:
  %r.next = add nuw nsw i64 %r, 1
  %rows = icmp slt i64 %r.next, %end
  br i1 %rows, label %row, label %exit

exit:
  ret void
}}
"""


def _quantize_compute(out: str) -> str:
    return f"""  %q = fdiv float %xv, %scale
  %rounded = call float @llvm.rint.f32(float %q)
  %above = call float @llvm.maxnum.f32(float %rounded, float %low)
  %clamped = call float @llvm.minnum.f32(float %above, float %high)
  %n = fptosi float %clamped to i32
  %shifted = add nsw i32 %n, %zero
  %yv = trunc i32 %shifted to {out}"""


def _dequantize_compute(code: str, extend: str) -> str:
    wide = "i64" if code == "i32" else "i32"
    return f"""  %wide = {extend} {code} %xv to {wide}
  %diff = sub nsw {wide} %wide, %zero
  %real = sitofp {wide} %diff to float
  %yv = fmul float %real, %scale"""


def _load_params(names: list[tuple[str, str]], index: str, tag: str) -> str:
    """Load parameter ``k`` of every (name, type) pair at ``index``."""
    lines = []
    for name, kind in names:
        lines += [f"  %{name}.{tag} = getelementptr inbounds {kind}, ptr %{name}.all, "
                  f"i64 {index}",
                  f"  %{name} = load {kind}, ptr %{name}.{tag}"]
    return "\n".join(lines)


def _constant(node: Node, at: int, what: str) -> np.ndarray | None:
    value = node.inputs[at] if at < len(node.inputs) else None
    if value is None:
        return None
    if not value.is_constant:
        raise NotNative(f"the {what} is not a constant")
    return value.data


def _rows(node: Node, params: list[np.ndarray]) -> tuple[str, list[np.ndarray], int, int, int]:
    """How a call walks the tensor: (form, the parameter arrays as the rows read them, row
    length, channel count, rows). ``form`` is "row" (one parameter set per row) or "element"
    (one per element of a row)."""
    x = node.inputs[0]
    total = math.prod(x.shape)
    size = params[0].size
    if size == 1:
        return "row", [p.reshape(1) for p in params], CHUNK, 1, -(-total // CHUNK)
    axis = attrs(node)["axis"] % len(x.shape)
    inner = math.prod(x.shape[axis + 1:])
    outer = math.prod(x.shape[:axis])
    if inner >= LONG_ROW:
        return "row", [p.reshape(-1) for p in params], inner, size, outer * size
    spread = [np.repeat(p.reshape(-1), inner) for p in params]
    return "element", spread, size * inner, 1, outer


def _call(node: Node, ctx: Context, base: str, names: list[tuple[str, str]],
          params: list[np.ndarray], compute: str, types: tuple[str, str]) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    total = math.prod(x.shape)
    if total == 0:
        return []
    form, arrays, length, channels, rows = _rows(node, params)
    per_row = form == "row"
    text = {
        "params": ", ".join(f"ptr noalias nocapture readonly %{n}.all" for n, _ in names),
        "length": length, "total": total, "channels": channels,
        "row_params": _load_params(names, "%channel", "row") if per_row else "",
        "element_params": "" if per_row else _load_params(names, "%j", "at"),
        "compute": compute, "x_type": types[0], "y_type": types[1],
    }
    fn = ctx.function(base, tuple(sorted(text.items())),
                      lambda name: _FUNCTION.format(name=name, **text))
    args = (Buffer(x.name), Buffer(y.name)) + tuple(Const(np.ascontiguousarray(a))
                                                   for a in arrays)
    return [Call(fn, args, items=rows)]


def _float32_scale(node: Node, what: str) -> np.ndarray:
    scale = _constant(node, 1, "scale")
    if scale is None or scale.dtype != np.float32:
        raise NotNative(f"{what} has a {node.inputs[1].dtype} scale; the native kernel takes "
                        f"float32")
    if attrs(node).get("block_size"):
        raise NotNative("blocked quantization")
    return scale


@emitter("QuantizeLinear")
def quantize_linear(node: Node, ctx: Context) -> list[Call]:
    if node.inputs[0].dtype.np != np.float32:
        raise NotNative(f"QuantizeLinear of {node.inputs[0].dtype}: the native kernel takes "
                        f"float32")
    scale = _float32_scale(node, "QuantizeLinear")
    out = node.outputs[0].dtype.np
    if out not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise NotNative(f"QuantizeLinear to {node.outputs[0].dtype}: the native kernel gives "
                        f"int8 or uint8")
    zero = _constant(node, 2, "zero point")
    zero = np.zeros(scale.shape, np.int32) if zero is None else zero.astype(np.int32)
    info = np.iinfo(out)
    low = (info.min - zero).astype(np.float32)
    high = (info.max - zero).astype(np.float32)
    names = [("scale", "float"), ("low", "float"), ("high", "float"), ("zero", "i32")]
    return _call(node, ctx, "quantize", names, [scale, low, high, zero],
                 _quantize_compute("i8"), ("float", "i8"))


@emitter("DequantizeLinear")
def dequantize_linear(node: Node, ctx: Context) -> list[Call]:
    kind = _INT.get(node.inputs[0].dtype.np)
    if kind is None:
        raise NotNative(f"DequantizeLinear of {node.inputs[0].dtype}: the native kernel takes "
                        f"int8, uint8 or int32")
    scale = _float32_scale(node, "DequantizeLinear")
    code, extend = kind
    wide = np.int64 if code == "i32" else np.int32
    zero = _constant(node, 2, "zero point")
    zero = np.zeros(scale.shape, wide) if zero is None else zero.astype(wide)
    names = [("scale", "float"), ("zero", "i64" if code == "i32" else "i32")]
    return _call(node, ctx, "dequantize", names, [scale, zero],
                 _dequantize_compute(code, extend), (code, "float"))

