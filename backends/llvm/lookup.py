"""``LookupTable`` as LLVM IR: ``y[i] = table[x[i] - min(dtype of x)]`` over int8 or uint8
codes (``qcompiler/ops/lookup.py`` is the reference). For int8 the index is the code's byte
with its top bit flipped (``x + 128``), for uint8 the byte itself: one byte load, one
zero-extension, one load from the 256-entry table per element."""

from __future__ import annotations

import ctypes

import numpy as np

from .target import Jit

NAMES = {np.dtype(np.int8): "qc_lookup_i8", np.dtype(np.uint8): "qc_lookup_u8"}

_FUNCTION = """
define void @{name}(ptr noalias nocapture readonly %x, ptr noalias nocapture writeonly %y,
                    i64 %n, ptr noalias nocapture readonly %table) {{
entry:
  %some = icmp sgt i64 %n, 0
  br i1 %some, label %element, label %exit

element:
  %i = phi i64 [ 0, %entry ], [ %i.next, %element ]
  %x.at = getelementptr inbounds i8, ptr %x, i64 %i
  %code = load i8, ptr %x.at
  %byte = xor i8 %code, {flip}
  %index = zext i8 %byte to i64
  %entry.at = getelementptr inbounds i8, ptr %table, i64 %index
  %value = load i8, ptr %entry.at
  %y.at = getelementptr inbounds i8, ptr %y, i64 %i
  store i8 %value, ptr %y.at
  %i.next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %element, label %exit

exit:
  ret void
}}
"""

IR = "".join(_FUNCTION.format(name=name, flip=-128 if dtype == np.int8 else 0)
             for dtype, name in NAMES.items())

_P = ctypes.c_void_p


class LookupTable:
    """The compiled lookup on one ``Jit``."""

    def __init__(self, jit: Jit):
        self.jit = jit  # the machine code lives as long as its engine
        self.module = jit.add(IR, "lookup")
        self._fns = {dtype: jit.function(name, None, _P, _P, ctypes.c_int64, _P)
                     for dtype, name in NAMES.items()}

    def __call__(self, x: np.ndarray, table: np.ndarray) -> np.ndarray:
        """``table[x - min(x.dtype)]`` with ``x``'s shape and the table's dtype."""
        x = np.ascontiguousarray(x)
        table = np.ascontiguousarray(table)
        if x.dtype not in NAMES or table.dtype not in NAMES or table.shape != (256,):
            raise ValueError(f"a lookup takes int8/uint8 codes and a 256-entry int8/uint8 "
                             f"table, got {x.dtype} codes and a {table.dtype}"
                             f"{list(table.shape)} table")
        y = np.empty(x.shape, table.dtype)
        self._fns[x.dtype](x.ctypes.data, y.ctypes.data, x.size, table.ctypes.data)
        return y
