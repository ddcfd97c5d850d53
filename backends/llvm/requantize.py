"""The requantization every integer kernel ends with, as LLVM IR: int32 accumulators, channels
first ([C, inner]), to int8/uint8 codes with one rounding (DESIGN.md "Numerics contract";
``qcompiler.ops.fixed_point``, which the numpy backend runs and this must equal bit for bit).

Per channel ``c``: ``y = clamp(((acc * M0[c] + 2^(t[c]-1)) >> t[c]) + zero_point, lo, hi)`` in
int64 (``M0 = t = 0`` flushes to the zero point), stored as a byte (a uint8 code in [0, 255]
has the same byte as its int8 reinterpretation). The inner loop has loop-invariant M0 and
shift, so LLVM's loop vectorizer widens it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from qcompiler.ops import fixed_point

from .target import Jit

NAME = "qc_requantize_fixed_point"

IR = f"""
declare i64 @llvm.smax.i64(i64, i64)
declare i64 @llvm.smin.i64(i64, i64)

define void @{NAME}(ptr noalias nocapture readonly %acc, ptr noalias nocapture writeonly %out,
                    i64 %channels, i64 %inner, ptr noalias nocapture readonly %m0s,
                    ptr noalias nocapture readonly %shifts, i64 %zp, i64 %lo, i64 %hi) {{
entry:
  %some.c = icmp sgt i64 %channels, 0
  %some.i = icmp sgt i64 %inner, 0
  %some = and i1 %some.c, %some.i
  br i1 %some, label %channel, label %exit

channel:
  %c = phi i64 [ 0, %entry ], [ %c.next, %channel.end ]
  %m0.at = getelementptr inbounds i64, ptr %m0s, i64 %c
  %m0 = load i64, ptr %m0.at
  %shift.at = getelementptr inbounds i64, ptr %shifts, i64 %c
  %shift = load i64, ptr %shift.at
  %rounds = icmp sgt i64 %shift, 0
  %below = add i64 %shift, -1
  %below.ok = select i1 %rounds, i64 %below, i64 0
  %half.bit = shl i64 1, %below.ok
  %half = select i1 %rounds, i64 %half.bit, i64 0
  %base = mul nsw i64 %c, %inner
  br label %element

element:
  %i = phi i64 [ 0, %channel ], [ %i.next, %element ]
  %k = add nsw i64 %base, %i
  %acc.at = getelementptr inbounds i32, ptr %acc, i64 %k
  %a = load i32, ptr %acc.at
  %a.wide = sext i32 %a to i64
  %product = mul nsw i64 %a.wide, %m0
  %rounded = add nsw i64 %product, %half
  %scaled = ashr i64 %rounded, %shift
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

_P = ctypes.c_void_p
_I64 = ctypes.c_int64


class Requantizer:
    """The compiled requantization on one ``Jit``."""

    def __init__(self, jit: Jit):
        self.jit = jit  # the machine code lives as long as its engine
        self.module = jit.add(IR, "requantize")
        self._fn = jit.function(NAME, None, _P, _P, _I64, _I64, _P, _P, _I64, _I64, _I64)

    def __call__(self, acc: np.ndarray, multipliers, zero_point: int, lo: int, hi: int,
                 dtype) -> np.ndarray:
        """``acc`` (int32, [C, ...]) requantized per channel with the real ``multipliers``
        (one per channel, or one), offset by ``zero_point`` and clamped to [lo, hi]."""
        acc = np.ascontiguousarray(acc, np.int32)
        channels = acc.shape[0] if acc.ndim else 1
        (m0,), shift = fixed_point.shared_multipliers(
            [np.broadcast_to(np.asarray(multipliers, np.float64).reshape(-1), (channels,))])
        m0 = np.ascontiguousarray(m0, np.int64)
        shift = np.ascontiguousarray(shift, np.int64)
        out = np.empty(acc.shape, dtype)
        inner = acc.size // channels if channels else 0
        self._fn(acc.ctypes.data, out.ctypes.data, channels, inner, m0.ctypes.data,
                 shift.ctypes.data, int(zero_point), int(lo), int(hi))
        return out
