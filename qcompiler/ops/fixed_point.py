"""Fixed-point requantization: a real multiplier as a Q0.31 integer and a right shift, applied
with one rounding in int64 (DESIGN.md, "Numerics contract").

It lives with the op kernels because the ``Requantize`` kernel uses it and the kernels import
only numpy (the standalone numpy program carries a copy of them); ``qcompiler.quant_math``
gives the same functions with ``QuantizationError`` for their errors. Here a bad argument is a
``ValueError``, which the backends report as an ``ExecutionError`` naming the node.
"""

from __future__ import annotations

import math

import numpy as np

# M0 has 31 fractional bits; the right shift t must stay within [1, 62] so that
# acc * M0 + 2^(t-1) fits in int64 for every int32 accumulator.
_M0_BITS = 31
_MAX_SHIFT = 62
_INT32 = np.iinfo(np.int32)


def fixed_point_multiplier(m: float) -> tuple[int, int]:
    """``m`` as ``(M0, t)`` with ``m ~= M0 / 2^t``: ``M0`` a Q0.31 integer in [2^30, 2^31) and
    ``t`` the total right shift (31 plus the binary exponent), so ``requantize`` multiplies by
    ``m`` with one rounding.

    ``M0 = round_half_even(frac * 2^31)`` where ``m = frac * 2^e``, ``frac`` in [0.5, 1)
    (frexp); when that rounds to 2^31 it rolls over to ``M0 = 2^30`` with ``t`` one smaller.
    The relative error of ``M0 / 2^t`` is at most 2^-31. ``m > 1`` is allowed (``t < 31``) up to
    ``m < 2^30`` (``t >= 1``); a larger ``m`` raises ``ValueError``. A multiplier so small
    that ``t`` would exceed 62 (``m < 2^-32``: its product with every int32 accumulator rounds to
    0) flushes to ``(0, 0)``, which ``requantize`` maps to 0. ``m == 0`` is ``(0, 0)`` too.
    """
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"requantization multiplier {m} is not a finite number >= 0")
    if m == 0:
        return 0, 0
    frac, exp = math.frexp(m)
    m0 = round(frac * 2**_M0_BITS)
    if m0 == 2**_M0_BITS:
        m0, exp = m0 // 2, exp + 1
    shift = _M0_BITS - exp
    if shift > _MAX_SHIFT:
        return 0, 0
    if shift < 1:
        raise ValueError(f"requantization multiplier {m} is too large: at most "
                                f"{2.0**(_M0_BITS - 1)} (a right shift of at least 1) fits the "
                                f"fixed-point form; check the input, weight and output scales")
    return m0, shift


def requantize(acc, m0, shift) -> np.ndarray:
    """``(acc * M0 + 2^(t-1)) >> t`` in int64: ``acc * M0 / 2^t`` rounded half up (toward
    +inf), one rounding. ``acc`` must hold int32 values; ``m0``/``shift`` are ints or arrays
    that broadcast against ``acc`` (per channel), as ``fixed_point_multiplier`` returns them
    (``t = 0`` only with ``M0 = 0``). The result is int64 and not saturated: adding the output
    zero point and clamping to [qmin, qmax] is the caller's business."""
    acc = np.asarray(acc)
    if acc.size and (acc.min() < _INT32.min or acc.max() > _INT32.max):
        raise ValueError(f"requantize needs int32 accumulators, got values in "
                                f"[{acc.min()}, {acc.max()}]")
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any((m0 < 0) | (m0 >= 2**_M0_BITS) | (shift < 0) | (shift > _MAX_SHIFT)
              | ((shift == 0) & (m0 != 0))):
        raise ValueError("requantize needs M0 in [0, 2^31) and a shift in [1, 62] (or "
                                "(0, 0)), as fixed_point_multiplier returns them")
    rounding = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (acc.astype(np.int64) * m0 + rounding) >> shift
