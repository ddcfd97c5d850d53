"""The requantization every integer kernel ends with, as LLVM IR: int32 accumulators, channels
first ([C, inner]), to int8/uint8 codes with one rounding (DESIGN.md "Numerics contract";
``qcompiler.ops.fixed_point``, which the numpy backend runs and this must equal bit for bit).

Per channel ``c``, rounding ``"fixed_point"``: ``y = clamp(((acc * M0[c] + 2^(t[c]-1)) >> t[c])
+ zero_point, lo, hi)`` in int64 (``M0 = t = 0`` flushes to the zero point); rounding
``"float"``: ``y = clamp(rint(float32(acc) * float32(M[c])) + zero_point, lo, hi)``, the
product correctly rounded in float32 and rounded half to even (no fast-math: LLVM keeps IEEE
float32 semantics, as numpy has them). Stored as a byte (a uint8 code in [0, 255] has the same
byte as its int8 reinterpretation). The inner loop has loop-invariant per-channel values, so
LLVM's loop vectorizer widens it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from qcompiler.ops import fixed_point

from .target import Jit

NAMES = {"fixed_point": "qc_requantize_fixed_point", "float": "qc_requantize_float"}

# The loops both roundings share; {per_channel} loads the channel's constants and {scale}
# turns the int32 %a into the rounded int64 %scaled.
_LOOPS = """
define void @{name}(ptr noalias nocapture readonly %acc, ptr noalias nocapture writeonly %out,
                    i64 %channels, i64 %inner, ptr noalias nocapture readonly %m0s,
                    ptr noalias nocapture readonly %shifts, i64 %zp, i64 %lo, i64 %hi) {{
entry:
  %some.c = icmp sgt i64 %channels, 0
  %some.i = icmp sgt i64 %inner, 0
  %some = and i1 %some.c, %some.i
  br i1 %some, label %channel, label %exit

channel:
  %c = phi i64 [ 0, %entry ], [ %c.next, %channel.end ]
{per_channel}
  %base = mul nsw i64 %c, %inner
  br label %element

element:
  %i = phi i64 [ 0, %channel ], [ %i.next, %element ]
  %k = add nsw i64 %base, %i
  %acc.at = getelementptr inbounds i32, ptr %acc, i64 %k
  %a = load i32, ptr %acc.at
{scale}
  %offset = add nsw i64 %scaled, %zp
  %low = call i64 @llvm.smax.i64(i64 %offset, i64 %lo)
  %clamped = call i64 @llvm.smin.i64(i64 %low, i64 %hi)
  %code = trunc i64 %clamped to i8
  %out.at = getelementptr inbounds i8, ptr %out, i64 %k
  store i8 %code, ptr %out.at
  %i.next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %i.next, %inner
  br i1 %more, label %element, label %channel.end

channel.end:
  %c.next = add nuw nsw i64 %c, 1
  %more.c = icmp slt i64 %c.next, %channels
  br i1 %more.c, label %channel, label %exit

exit:
  ret void
}}
"""

_FIXED_POINT = dict(per_channel="""
  %m0.at = getelementptr inbounds i64, ptr %m0s, i64 %c
  %m0 = load i64, ptr %m0.at
  %shift.at = getelementptr inbounds i64, ptr %shifts, i64 %c
  %shift = load i64, ptr %shift.at
  %rounds = icmp sgt i64 %shift, 0
  %below = add i64 %shift, -1
  %below.ok = select i1 %rounds, i64 %below, i64 0
  %half.bit = shl i64 1, %below.ok
  %half = select i1 %rounds, i64 %half.bit, i64 0""", scale="""
  %a.wide = sext i32 %a to i64
  %product = mul nsw i64 %a.wide, %m0
  %rounded = add nsw i64 %product, %half
  %scaled = ashr i64 %rounded, %shift""")

# float: %m0s holds each channel's float32 multiplier in the low 32 bits of its int64 slot;
# the rounded product is clamped to +-2^62 before the conversion (as numpy's kernel does), so
# fptosi is always defined
_FLOAT = dict(per_channel="""
  %m.at = getelementptr inbounds i64, ptr %m0s, i64 %c
  %m.bits64 = load i64, ptr %m.at
  %m.bits = trunc i64 %m.bits64 to i32
  %m = bitcast i32 %m.bits to float""", scale="""
  %a.float = sitofp i32 %a to float
  %product = fmul float %a.float, %m
  %rounded = call float @llvm.rint.f32(float %product)
  %above = call float @llvm.maxnum.f32(float %rounded, float 0xC3D0000000000000)
  %bounded = call float @llvm.minnum.f32(float %above, float 0x43D0000000000000)
  %scaled = fptosi float %bounded to i64""")

IR = """
declare i64 @llvm.smax.i64(i64, i64)
declare i64 @llvm.smin.i64(i64, i64)
declare float @llvm.rint.f32(float)
declare float @llvm.maxnum.f32(float, float)
declare float @llvm.minnum.f32(float, float)
""" + "".join(_LOOPS.format(name=NAMES[r], **parts).replace("{{", "{").replace("}}", "}")
              for r, parts in (("fixed_point", _FIXED_POINT), ("float", _FLOAT)))

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


class Requantizer:
    """The compiled requantization on one ``Jit``."""

    def __init__(self, jit: Jit):
        self.jit = jit  # the machine code lives as long as its engine
        self.module = jit.add(IR, "requantize")
        self._fns = {rounding: jit.function(name, None, _P, _P, _I64, _I64, _P, _P, _I64, _I64,
                                            _I64)
                     for rounding, name in NAMES.items()}

    def __call__(self, acc: np.ndarray, multipliers, zero_point: int, lo: int, hi: int,
                 dtype, rounding: str = "fixed_point") -> np.ndarray:
        """``acc`` (int32, [C, ...]) requantized per channel with the real ``multipliers``
        (one per channel, or one), offset by ``zero_point`` and clamped to [lo, hi]."""
        acc = np.ascontiguousarray(acc, np.int32)
        channels = acc.shape[0] if acc.ndim else 1
        ms = np.broadcast_to(np.asarray(multipliers, np.float64).reshape(-1), (channels,))
        if rounding == "float":
            m0 = ms.astype(np.float32).view(np.uint32).astype(np.int64)
            shift = np.zeros(channels, np.int64)
        else:
            (m0,), shift = fixed_point.shared_multipliers([ms])
            m0 = np.ascontiguousarray(m0, np.int64)
            shift = np.ascontiguousarray(shift, np.int64)
        out = np.empty(acc.shape, dtype)
        inner = acc.size // channels if channels else 0
        self._fns[rounding](acc.ctypes.data, out.ctypes.data, channels, inner, m0.ctypes.data,
                            shift.ctypes.data, int(zero_point), int(lo), int(hi))
        return out
