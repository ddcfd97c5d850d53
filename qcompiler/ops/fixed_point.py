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


# -- rescaling an integer op's terms to its output ------------------------------------------------
#
# Every integer op (IntConv, IntMatMul, IntAdd, IntMul, IntAveragePool, IntGlobalAveragePool)
# ends the same way: a few int32 terms v_i (the accumulator, a centred residual or input), each
# with a real multiplier M_i (an input scale over the output scale), become the output code
#
#     y = clamp(y_zero_point + R(sum_i v_i * M_i), qmin, qmax)
#
# with one rounding R. ``rescale`` computes R(...) for both rounding modes; the ops add the zero
# point and clamp (``saturate``).

ROUNDINGS = ("fixed_point", "float")

# shared_multipliers' results by their multipliers: the integer ops call it with the same
# constants on every run, and a per-channel conversion costs more than a small layer.
_SHARED: dict = {}
_SHARED_LIMIT = 4096


def shared_multipliers(multipliers) -> tuple[list[np.ndarray], np.ndarray]:
    """Real multipliers ``M_i`` (float arrays that broadcast together, one per term) as
    integers ``M0_i`` with one shared right shift ``t``: ``M_i ~= M0_i / 2^t``.

    ``t`` is ``fixed_point_multiplier(max_i M_i)``'s shift, so the largest multiplier gets its
    Q0.31 ``M0`` exactly as a single-term requantization would, and every other one is
    ``round_half_even(M_i * 2^t)`` (fewer significant bits, the same absolute precision, every
    ``M0_i`` below 2^31). Where the largest multiplier flushes to zero (< 2^-32) or every one is
    0, ``M0_i = 0`` and ``t = 0``. ``ValueError`` for a negative, non-finite or too large
    (>= 2^30) multiplier.
    """
    ms = np.broadcast_arrays(*[np.asarray(m, dtype=np.float64) for m in multipliers])
    key = tuple((m.shape, m.tobytes()) for m in ms)
    known = _SHARED.get(key)
    if known is not None:  # a layer's constants, seen on every run
        return known
    top = np.maximum.reduce(ms) if len(ms) > 1 else ms[0]
    distinct, where = np.unique(top, return_inverse=True)  # few: one per channel or count
    shifts = np.array([fixed_point_multiplier(float(m))[1] for m in distinct], np.int64)
    shift = shifts[where].reshape(top.shape)
    m0s = []
    for m in ms:
        scaled = np.rint(m * np.exp2(shift.astype(np.float64)))
        m0s.append(np.where(shift > 0, scaled, 0).astype(np.int64))
    for array in (*m0s, shift):
        array.setflags(write=False)
    if len(_SHARED) >= _SHARED_LIMIT:
        _SHARED.clear()
    _SHARED[key] = m0s, shift
    return m0s, shift


def rescale(terms, multipliers, rounding: str = "fixed_point") -> np.ndarray:
    """``R(sum_i terms[i] * multipliers[i])`` in int64, not yet offset by a zero point nor
    clamped. ``terms`` are integer arrays (int32 values); ``multipliers`` float arrays (the
    integer ops hold them as float64 constants) or floats, one per term, broadcasting against
    them (per channel).

    - ``"fixed_point"``: ``(sum_i v_i * M0_i + 2^(t-1)) >> t`` in int64 with the shared
      ``(M0_i, t)`` of ``shared_multipliers``: one rounding, half toward +inf. With one term it
      is ``requantize(v, *fixed_point_multiplier(M))`` exactly.
    - ``"float"``: ``round_half_even(sum_i float32(v_i) * float32(M_i))`` computed in float32,
      term by term in order, as onnxruntime's kernels do (float32 holds int32 values only to 24
      bits, as there).
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding {rounding!r} is not one of {', '.join(map(repr, ROUNDINGS))}")
    terms = [np.asarray(v) for v in terms]
    for v in terms:  # an int32 (or narrower) array holds int32 values by its type
        if v.dtype.itemsize > 4 and v.size and (v.min() < _INT32.min or v.max() > _INT32.max):
            raise ValueError(f"an integer op's terms must hold int32 values, got values in "
                             f"[{v.min()}, {v.max()}]")
    if rounding == "float":
        total = None
        for v, m in zip(terms, multipliers, strict=True):
            part = v.astype(np.float32) * np.asarray(m, np.float64).astype(np.float32)
            total = part if total is None else (total + part).astype(np.float32)
        limit = np.float32(2.0**62)
        return np.rint(np.clip(total, -limit, limit)).astype(np.int64)
    m0s, shift = shared_multipliers(multipliers)
    total = None
    for v, m0 in zip(terms, m0s, strict=True):
        part = v.astype(np.int64) * m0
        total = part if total is None else total + part
    rounding_bit = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (total + rounding_bit) >> shift


def saturate(y, zero_point, qmin: int, qmax: int, dtype) -> np.ndarray:
    """``clamp(y + zero_point, qmin, qmax)`` as ``dtype`` (int64 arithmetic)."""
    y = np.asarray(y, np.int64) + np.asarray(zero_point).astype(np.int64)
    return np.clip(y, qmin, qmax).astype(dtype)
