"""Quantization maths: parameters from ranges, quantizing values, biases and requantization.

Everything here follows the numerics contract of DESIGN.md: ``real = scale * (q - zero_point)``,
round half to even then saturate when quantizing, int32 biases at scale ``s_in * s_w[c]``, and a
requantization multiplier held as a Q0.31 integer and a right shift applied with one rounding in
int64. Quantizing and dequantizing call the QuantizeLinear / DequantizeLinear op kernels, so the
maths and the ops cannot disagree.

Where this differs from onnxruntime's quantization tool (``quant_utils.compute_scale_zp``,
``get_qmin_qmax_for_qType``), on purpose:

- ``reduce_range`` is 7 bits everywhere: int8 [-64, 63] (onnxruntime: [-64, 64]) and int8
  symmetric [-63, 63] (onnxruntime ignores ``symmetric`` when ``reduce_range`` is set).
- The asymmetric zero point is computed from the float32 scale the Q node applies (onnxruntime
  uses the float64 scale before rounding it): they differ only where ``qmin - lo / scale`` is
  within float32 rounding of a half-way tie.
- Symmetric uint8 (zero point 128, as onnxruntime) has scale ``m / 127`` so that ``+m`` is
  representable (onnxruntime's ``2m / 255`` leaves the top step of the range out).
- A degenerate range gives scale 1.0 as in onnxruntime, but a symmetric uint8 zero point stays
  128 (onnxruntime gives 0), so every channel of a per-channel tensor keeps the same zero point.
- Biases that would overflow raise the weight scale instead of being clipped to int32.
"""

from __future__ import annotations

import numpy as np

from .errors import QuantizationError
from .ops import fixed_point
from .ops.quant import dequantize_linear, quantize_linear
from .qdq import scale_array, zero_point_array
from .types import DType, QuantParams

QUANT_DTYPES = (DType.I8, DType.U8)

# float32's smallest normal number: a scale below it is treated as a degenerate range (as
# onnxruntime does), since dividing by a subnormal scale overflows for ordinary values.
MIN_SCALE = float(np.finfo(np.float32).tiny)

# The largest |q| a quantized bias may take: half of int32, so the other half holds the sum of
# products. With full-range u8 x i8 operands (255 * 127 per product) that leaves room for a dot
# product of K <= 2^30 / (255 * 127) = 33,156 terms, more than any layer we compile.
BIAS_LIMIT = 2**30



def _label(name: str | None) -> str:
    return f"tensor {name!r}: " if name else ""


def _quant_dtype(dtype: str | DType) -> DType:
    try:
        dt = DType(dtype)
    except ValueError:
        dt = None
    if dt not in QUANT_DTYPES:
        raise QuantizationError(f"quantized dtype must be one of "
                                f"{', '.join(map(str, QUANT_DTYPES))}, got {dtype!r}")
    return dt


def qrange(dtype: str | DType, *, symmetric: bool,
           reduce_range: bool = False) -> tuple[int, int]:
    """The integers a scheme uses: int8 [-128, 127] (symmetric [-127, 127], so that -x is
    representable whenever x is), uint8 [0, 255]; ``reduce_range`` keeps 7 bits (int8 [-64, 63],
    symmetric [-63, 63], uint8 [0, 127]) for kernels whose 16-bit pair sums would saturate."""
    dt = _quant_dtype(dtype)
    bits = 7 if reduce_range else 8
    if dt == DType.U8:
        return 0, 2**bits - 1
    half = 2 ** (bits - 1)
    return (-half + 1 if symmetric else -half), half - 1


def params_from_range(lo, hi, *, dtype: str | DType = "i8", symmetric: bool = False,
                      reduce_range: bool = False, axis: int | None = None,
                      name: str | None = None) -> QuantParams:
    """QuantParams covering ``[lo, hi]``: per tensor (``lo``/``hi`` scalars, ``axis`` None) or
    per channel (1-D arrays of the channels along ``axis``).

    The range is first widened to contain 0 (so 0 is exactly representable), and made
    ``[-m, m]`` with ``m = max(|lo|, |hi|)`` when ``symmetric``. The asymmetric scale is
    ``(hi - lo) / (qmax - qmin)`` rounded to float32 and the zero point ``qmin - lo / scale``
    rounded half to even and clamped into [qmin, qmax]; the symmetric zero point is the middle
    of [qmin, qmax] (0 for int8, 128 for uint8) and the scale ``m / (qmax - zero_point)``, so
    ``[-m, m]`` is representable (uint8 has one spare step below). A degenerate range (all
    zero, or so narrow that the scale would be below float32's smallest normal number) gets
    scale 1.0 and zero point 0 (the middle for symmetric uint8): every value in it then
    quantizes to the zero point.
    NaN, infinite or reversed (``lo > hi``) ranges raise ``QuantizationError``.
    """
    dt = _quant_dtype(dtype)
    qmin, qmax = qrange(dt, symmetric=symmetric, reduce_range=reduce_range)
    lo_a, hi_a = _range_arrays(lo, hi, axis, name)
    lo_a = np.minimum(lo_a, 0.0)
    hi_a = np.maximum(hi_a, 0.0)
    if symmetric:
        hi_a = np.maximum(-lo_a, hi_a)
        lo_a = -hi_a
    # Symmetric: the zero point is the middle, and the scale makes the shorter side reach m
    # (uint8: 127 steps above 128), so the whole range is representable.
    middle = np.rint((qmin + qmax) / 2.0)
    steps = qmax - middle if symmetric else qmax - qmin
    with np.errstate(over="ignore"):
        scale = ((hi_a - lo_a) / (steps * (2 if symmetric else 1))).astype(np.float32)
    if not np.all(np.isfinite(scale)):
        raise QuantizationError(f"{_label(name)}range [{lo}, {hi}] is too wide for a float32 "
                                f"scale")
    degenerate = scale < MIN_SCALE
    scale = np.where(degenerate, np.float32(1.0), scale)
    if symmetric:
        zero = np.full(scale.shape, middle)
    else:
        zero = np.where(degenerate, 0.0, np.rint(qmin - lo_a / scale.astype(np.float64)))
        zero = np.clip(zero, qmin, qmax)
    return QuantParams(tuple(scale.reshape(-1).tolist()),
                       tuple(int(z) for z in zero.reshape(-1)), dt, axis, qmin, qmax)


def _range_arrays(lo, hi, axis: int | None, name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``lo`` and ``hi`` as float64 arrays of the right rank, checked finite and ordered."""
    lo_a = np.asarray(lo, dtype=np.float64)
    hi_a = np.asarray(hi, dtype=np.float64)
    if axis is None and (lo_a.ndim or hi_a.ndim):
        raise QuantizationError(f"{_label(name)}a per-tensor range needs scalar bounds, got "
                                f"shapes {lo_a.shape} and {hi_a.shape}; pass axis= for per "
                                f"channel")
    if axis is not None and (lo_a.ndim != 1 or lo_a.shape != hi_a.shape or not lo_a.size):
        raise QuantizationError(f"{_label(name)}a per-channel range (axis={axis}) needs two "
                                f"1-D arrays of one length, got shapes {lo_a.shape} and "
                                f"{hi_a.shape}")
    for bad, what in ((~(np.isfinite(lo_a) & np.isfinite(hi_a)),
                       "is not finite (NaN or Inf in the data or the calibration)"),
                      (lo_a > hi_a, "has lo > hi")):
        if np.any(bad):
            where = "" if axis is None else f" of channel {int(np.argmax(bad))}"
            first = (lo_a, hi_a) if axis is None else (lo_a[bad][0], hi_a[bad][0])
            raise QuantizationError(f"{_label(name)}range [{first[0]}, {first[1]}]{where} "
                                    f"{what}")
    return lo_a, hi_a


def quantize(x, params: QuantParams) -> np.ndarray:
    """``x`` quantized with ``params``: exactly what the QuantizeLinear op computes (float32
    division, round half to even, saturation to the dtype's full range, not to qmin/qmax)."""
    return quantize_linear(np.asarray(x), scale_array(params), zero_point_array(params),
                           axis=_op_axis(params))


def dequantize(q, params: QuantParams) -> np.ndarray:
    """``q`` dequantized with ``params``: exactly what the DequantizeLinear op computes."""
    return dequantize_linear(np.asarray(q), scale_array(params), zero_point_array(params),
                             axis=_op_axis(params))


def _op_axis(params: QuantParams) -> int:
    return 1 if params.axis is None else params.axis


def quantize_weight(w, *, axis: int, dtype: str | DType = "i8", symmetric: bool = True,
                    per_channel: bool = True, reduce_range: bool = False,
                    name: str | None = None) -> tuple[np.ndarray, QuantParams]:
    """A float weight quantized over its own min/max, per output channel along ``axis`` or per
    tensor; returns ``(q, params)`` with ``params.axis`` normalised to be non-negative. An empty
    weight quantizes with a degenerate range."""
    w = np.asarray(w, dtype=np.float32)
    if per_channel and not -w.ndim <= axis < w.ndim:
        raise QuantizationError(f"{_label(name)}axis {axis} is out of range for a weight of "
                                f"shape {list(w.shape)}")
    axis = axis % w.ndim if per_channel else None
    lo, hi = _min_max(w, axis)
    params = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric,
                               reduce_range=reduce_range, axis=axis, name=name)
    return quantize(w, params), params


def _min_max(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``w``, per channel along ``axis`` (0 for an empty tensor)."""
    others = None if axis is None else tuple(d for d in range(w.ndim) if d != axis)
    if w.size == 0:
        zeros = np.zeros(() if axis is None else (w.shape[axis],))
        return zeros, zeros
    return w.min(axis=others).astype(np.float64), w.max(axis=others).astype(np.float64)


def quantize_bias(b, input_scale: float, weight_params: QuantParams, *,
                  name: str | None = None) -> tuple[np.ndarray, QuantParams, QuantParams]:
    """An int32 bias at scale ``s_in * s_w[c]`` (float32 product), zero point 0; returns
    ``(q_bias, bias_params, weight_params)``.

    ``|q_bias|`` is kept within ``BIAS_LIMIT`` (2^30, half of int32, see there). Where a bias
    would exceed it, or the product scale would underflow float32's normal range, the weight
    scale of that channel (of the tensor, per tensor) is raised to the smallest float32 that
    fits, and the returned weight params carry it (zero points unchanged, so the represented
    range only widens): the caller must quantize the weight with the returned params. Never
    clipped. The division is done in float64, so ``q`` is the nearest integer to the quotient.
    """
    bias = np.asarray(b, dtype=np.float64)
    s_in = np.float32(input_scale)
    if not (np.isfinite(s_in) and s_in > 0):
        raise QuantizationError(f"{_label(name)}input scale {input_scale} is not a positive "
                                f"finite number")
    if not np.all(np.isfinite(bias)):
        raise QuantizationError(f"{_label(name)}bias holds NaN or Inf")
    s_w = np.asarray(weight_params.scale, dtype=np.float32)
    if weight_params.per_channel:
        if bias.shape != s_w.shape:
            raise QuantizationError(f"{_label(name)}bias of shape {list(bias.shape)} does not "
                                    f"match {s_w.size} per-channel weight scales")
        need = np.abs(bias)
    else:
        need = np.array([np.abs(bias).max(initial=0.0)])
    s_w = np.array([_fitting_weight_scale(s_in, s, n) for s, n in zip(s_w, need)], np.float32)
    s_b = (s_in * s_w).astype(np.float32)
    q = np.rint(bias / (s_b if weight_params.per_channel else s_b[0]).astype(np.float64))
    axis = 0 if weight_params.per_channel else None
    bias_params = QuantParams(tuple(s_b.tolist()), (0,) * s_b.size, DType.I32, axis,
                              -BIAS_LIMIT, BIAS_LIMIT)
    new_weight = QuantParams(tuple(s_w.tolist()), weight_params.zero_point, weight_params.dtype,
                             weight_params.axis, weight_params.qmin, weight_params.qmax)
    return q.astype(np.int32), bias_params, new_weight


def _fitting_weight_scale(s_in: np.float32, s_w: np.float32, need: float) -> np.float32:
    """The smallest float32 ``s >= s_w`` with ``s_b = float32(s_in * s)`` a normal float32 and
    ``round(need / s_b) <= BIAS_LIMIT``."""
    def fits(s: np.float32) -> bool:
        s_b = np.float32(s_in * s)
        return bool(s_b >= MIN_SCALE and np.rint(need / np.float64(s_b)) <= BIAS_LIMIT)

    if fits(s_w):
        return s_w
    s = np.float32(max(need / BIAS_LIMIT, MIN_SCALE) / np.float64(s_in))
    while not fits(s):
        s = np.nextafter(s, np.float32(np.inf))
    # s is within a few ulps of the least fitting scale; step down while the smaller one fits.
    while s > s_w and fits(below := np.nextafter(s, np.float32(0))) and below >= s_w:
        s = below
    return s


def fixed_point_multiplier(m: float) -> tuple[int, int]:
    """``m`` as ``(M0, t)`` with ``m ~= M0 / 2^t`` (``qcompiler.ops.fixed_point``, where the
    rounding, the roll-over to 2^30, the flush of tiny ``m`` and the limits are documented);
    an ``m`` it cannot represent is a ``QuantizationError``."""
    try:
        return fixed_point.fixed_point_multiplier(m)
    except ValueError as exc:
        raise QuantizationError(str(exc)) from None


def requantize(acc, m0, shift) -> np.ndarray:
    """``(acc * M0 + 2^(t-1)) >> t`` in int64, rounded half up, not saturated
    (``qcompiler.ops.fixed_point``); arguments out of range are a ``QuantizationError``."""
    try:
        return fixed_point.requantize(acc, m0, shift)
    except ValueError as exc:
        raise QuantizationError(str(exc)) from None
