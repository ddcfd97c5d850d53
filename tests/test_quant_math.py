"""Quantization maths against onnxruntime's quantization tool, exhaustive enumeration of the
int8/uint8 domain, and exact rational oracles for the fixed-point requantization."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType
from ort_helpers import run_node

from qcompiler.errors import QuantizationError
from qcompiler.quant_math import (
    BIAS_LIMIT,
    dequantize,
    fixed_point_multiplier,
    params_from_range,
    qrange,
    quantize,
    quantize_bias,
    quantize_weight,
    requantize,
)
from qcompiler.types import QuantParams

SCHEMES = [(dt, sym, red) for dt in ("i8", "u8") for sym in (False, True) for red in (False, True)]
ORT_TYPE = {"i8": onnx.TensorProto.INT8, "u8": onnx.TensorProto.UINT8}
F32 = st.floats(-1e6, 1e6, width=32)


def test_qrange_table():
    assert qrange("i8", symmetric=False) == (-128, 127)
    assert qrange("i8", symmetric=True) == (-127, 127)
    assert qrange("u8", symmetric=False) == qrange("u8", symmetric=True) == (0, 255)
    assert qrange("i8", symmetric=False, reduce_range=True) == (-64, 63)
    assert qrange("i8", symmetric=True, reduce_range=True) == (-63, 63)
    assert qrange("u8", symmetric=True, reduce_range=True) == (0, 127)


@pytest.mark.parametrize("dtype,symmetric,reduce_range", SCHEMES)
def test_qrange_against_onnxruntime(dtype, symmetric, reduce_range):
    ours = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
    theirs = tuple(int(v) for v in get_qmin_qmax_for_qType(ORT_TYPE[dtype], reduce_range,
                                                             symmetric))
    if dtype == "i8" and reduce_range:  # onnxruntime: [-64, 64], symmetric or not (7 bits + 1)
        assert theirs == (-64, 64)
    else:
        assert ours == theirs


def test_qrange_refuses_other_dtypes():
    with pytest.raises(QuantizationError, match="i8, u8"):
        qrange("i32", symmetric=False)


@pytest.mark.parametrize("dtype,symmetric", [(d, s) for d in ("i8", "u8") for s in (False, True)])
def test_params_match_onnxruntime(dtype, symmetric):
    """Scale identical to compute_scale_zp; the zero point too, except where onnxruntime's
    float64 scale and our float32 one round ``qmin - lo/scale`` to different sides of a tie."""
    seen = Counter()
    qmin, qmax = qrange(dtype, symmetric=symmetric)

    @given(F32, F32)
    def check(a, b):
        lo, hi = np.float32(min(a, b)), np.float32(max(a, b))
        p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric)
        ort_q = get_qmin_qmax_for_qType(ORT_TYPE[dtype], False, symmetric)
        zp, scale = compute_scale_zp(np.array(lo), np.array(hi), *ort_q, symmetric=symmetric)
        if dtype == "u8" and symmetric and float(scale) != 1.0:  # we keep +m representable
            assert p.scale == (float(np.float32(max(-float(lo), float(hi), 0.0) / 127)),)
            assert float(scale) <= p.scale[0] and p.zero_point == (int(zp),) == (128,)
            seen["u8 symmetric scale m/127"] += 1
            return
        assert p.scale == (float(scale),)
        if p.zero_point != (int(zp),):
            if float(scale) == 1.0 and max(-lo, hi) < 1e-37:  # degenerate: documented
                assert dtype == "u8" and symmetric and p.zero_point == (128,) and zp == 0
                seen["degenerate u8 symmetric"] += 1
                return
            lo0 = min(float(lo), 0.0)
            hi0 = max(float(hi), 0.0)
            exact = qmin - lo0 / ((hi0 - lo0) / (qmax - qmin))
            assert abs(exact - math.floor(exact) - 0.5) < 1e-4  # a near tie
            assert abs(p.zero_point[0] - int(zp)) == 1
            seen["tie"] += 1
            return
        seen["equal"] += 1

    check()
    assert sum(seen.values()) >= 25 and seen["tie"] <= 1


def test_params_zero_point_differs_from_onnxruntime_only_at_ties():
    """Measured on 5,000 random asymmetric int8 ranges: how often the zero points differ."""
    rng = np.random.default_rng(0)
    lo = -rng.uniform(0, 10, 5000).astype(np.float32)
    hi = rng.uniform(0, 10, 5000).astype(np.float32)
    p = params_from_range(lo, hi, axis=0)
    theirs = [compute_scale_zp(a, b, np.int8(-128), np.int8(127)) for a, b in zip(lo, hi)]
    np.testing.assert_array_equal(np.array(p.scale, np.float32), [s for _, s in theirs])
    differ = sum(int(z) != ours for (z, _), ours in zip(theirs, p.zero_point))
    assert differ == 0  # measured: 0 of 5,000


@pytest.mark.parametrize("dtype,symmetric,reduce_range", SCHEMES)
def test_degenerate_ranges_give_a_valid_scale(dtype, symmetric, reduce_range):
    for lo, hi in [(0.0, 0.0), (-1e-40, 0.0), (0.0, 1e-39), (-1e-45, 1e-45)]:
        p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric,
                              reduce_range=reduce_range)
        assert p.problems() == []
        assert p.scale == (1.0,)
        qmin, qmax = qrange(dtype, symmetric=symmetric, reduce_range=reduce_range)
        assert p.zero_point == ((qmin + qmax + 1) // 2 if symmetric and dtype == "u8" else 0,)
        assert quantize(np.float32(hi), p) == p.zero_point[0]
        assert dequantize(quantize(np.float32(0), p), p) == 0


@pytest.mark.parametrize("lo,hi", [(np.nan, 1.0), (0.0, np.inf), (-np.inf, 0.0), (2.0, 1.0),
                                   (-1e300, 1e300)])
def test_bad_ranges_are_quantization_errors(lo, hi):
    with pytest.raises(QuantizationError, match="'act'"):
        params_from_range(lo, hi, name="act")


@pytest.mark.parametrize("dtype,symmetric,reduce_range", SCHEMES)
def test_per_channel_params_are_per_tensor_params_of_each_channel(dtype, symmetric,
                                                                   reduce_range):
    rng = np.random.default_rng(4)
    lo = np.concatenate([-rng.exponential(3, 40), [0.0, -1e-40, 2.0]])
    hi = np.concatenate([rng.exponential(3, 40), [0.0, 1e-40, 5.0]])
    scheme = {"dtype": dtype, "symmetric": symmetric, "reduce_range": reduce_range}
    p = params_from_range(lo, hi, axis=1, **scheme)
    assert p.axis == 1 and p.problems() == []
    for c in range(lo.size):
        one = params_from_range(lo[c], hi[c], **scheme)
        assert (p.scale[c], p.zero_point[c]) == (one.scale[0], one.zero_point[0])


def test_per_channel_range_shapes_are_checked():
    with pytest.raises(QuantizationError, match="scalar bounds"):
        params_from_range(np.zeros(3), np.ones(3))
    with pytest.raises(QuantizationError, match="1-D arrays"):
        params_from_range(np.zeros(3), np.ones(4), axis=0)
    with pytest.raises(QuantizationError, match=r"range \[nan, 1.0\] of channel 1 is not finite"):
        params_from_range(np.array([0.0, np.nan]), np.ones(2), axis=0)
    with pytest.raises(QuantizationError, match=r"range \[3.0, 1.0\] of channel 0 has lo > hi"):
        params_from_range(np.array([3.0, 0.0]), np.ones(2), axis=0)


@pytest.mark.parametrize("dtype,symmetric,reduce_range", SCHEMES)
def test_every_integer_round_trips(dtype, symmetric, reduce_range):
    """Exhaustive: every integer of the dtype dequantizes and quantizes back to itself, for
    ranges that are wide, narrow, one-sided and per channel."""
    info = np.iinfo(np.int8 if dtype == "i8" else np.uint8)
    q = np.arange(info.min, info.max + 1).astype(info.dtype)
    ranges = [(-1.0, 1.0), (-3e-3, 7.5), (0.0, 6.0), (-250.0, -1e-3), (-1e-20, 3e-20)]
    for lo, hi in ranges:
        p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range)
        np.testing.assert_array_equal(quantize(dequantize(q, p), p), q)
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric, reduce_range=reduce_range,
                          axis=1)
    grid = np.tile(q[:, None], (1, len(ranges)))
    np.testing.assert_array_equal(quantize(dequantize(grid, p), p), grid)


@pytest.mark.parametrize("dtype,symmetric,reduce_range", SCHEMES)
def test_quantize_dequantize_within_half_a_step(dtype, symmetric, reduce_range):
    """Inside the range the parameters represent, the round trip is within half a step (plus
    float32 rounding of x / scale and of the product: |x / scale| <= 256, so 2^-14 of a step);
    the range always contains 0, which is exact."""
    seen = Counter()

    @given(F32, F32, hnp.arrays(np.float64, 16, elements=st.floats(0, 1)))
    def check(a, b, u):
        lo, hi = min(a, b), max(a, b)
        p = params_from_range(lo, hi, dtype=dtype, symmetric=symmetric,
                              reduce_range=reduce_range)
        assert p.problems() == []
        assert dequantize(np.array(p.zero_point[0], p.dtype.np), p) == 0
        s = p.scale[0]
        first, last = s * (p.qmin - p.zero_point[0]), s * (p.qmax - p.zero_point[0])
        assert first <= min(lo, 0) + s / 2 and last >= max(hi, 0) - s / 2  # contains the range
        x = (first + u * (last - first)).astype(np.float32)
        x = x[(x >= first) & (x <= last)]
        err = np.abs(dequantize(quantize(x, p), p).astype(np.float64) - x)
        assert np.all(err <= s * (0.5 + 2**-14))
        seen["values"] += x.size

    check()
    assert seen["values"] >= 200


def test_quantize_is_onnxruntime_quantize_linear():
    """Per-channel quantize and dequantize equal onnxruntime's QuantizeLinear/DequantizeLinear."""
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((3, 5, 4)) * [[[0.1]], [[3.0]], [[0.0]]]).astype(np.float32)
    for dtype, symmetric in [("i8", True), ("u8", False), ("i8", False)]:
        q, p = quantize_weight(w, axis=0, dtype=dtype, symmetric=symmetric)
        scale = np.array(p.scale, np.float32)
        zero = np.array(p.zero_point, p.dtype.np)
        theirs = run_node("QuantizeLinear", [w, scale, zero], {"axis": 0}, constant_inputs=(1, 2))
        np.testing.assert_array_equal(q, theirs[0])
        back = run_node("DequantizeLinear", [q, scale, zero], {"axis": 0},
                        constant_inputs=(1, 2))
        np.testing.assert_array_equal(dequantize(q, p), back[0])


def test_quantize_weight_per_channel_uses_the_symmetric_range():
    seen = 0

    @given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=5),
                      elements=F32), st.integers(-4, 3))
    def check(w, axis):
        nonlocal seen
        axis = axis % w.ndim
        q, p = quantize_weight(w, axis=axis)
        assert p.axis == axis and p.zero_point == (0,) * w.shape[axis]
        assert q.min() >= -127
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        top = np.abs(np.moveaxis(q, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
        assert np.all(top[amax >= 1e-30] == 127)  # each channel uses its full range
        seen += int((amax >= 1e-30).sum())

    check()
    assert seen >= 15


def test_quantize_weight_per_tensor_and_errors():
    w = np.array([[-2.0, 1.0], [0.5, 4.0]], np.float32)
    q, p = quantize_weight(w, axis=0, per_channel=False, symmetric=False, dtype="u8")
    assert p.axis is None and q.dtype == np.uint8 and q.max() == 255 and q.min() == 0
    with pytest.raises(QuantizationError, match="'fc.weight'.*axis 2"):
        quantize_weight(w, axis=2, name="fc.weight")
    with pytest.raises(QuantizationError, match="not finite"):
        quantize_weight(np.array([[np.nan]], np.float32), axis=0)
    q, p = quantize_weight(np.zeros((2, 0), np.float32), axis=0)
    assert q.shape == (2, 0) and p.scale == (1.0, 1.0)


# --- fixed-point multiplier and requantization ---

TWO_31 = 2**31
MULTIPLIERS = (
    [2.0**e for e in range(-32, 30)]                       # exact powers, M > 1 up to 2^29
    + [1.0 - 2.0**-33, 0.5 - 2.0**-34, 2.0**-32 * (1 - 2.0**-33)]   # M0 rolls over to 2^31
    + [0.75, 0.3, 1 / 3, 0.1234567, 1.5, 3.7, 1000.3, 123456.789, 2.0**29 * 1.999]
    + [2.0**-32 * 1.5, 2.0**-32 * 0.9999, 1e-12, 1e-30, 5e-324]     # tiny M, flushed or not
)


@pytest.mark.parametrize("m", MULTIPLIERS)
def test_fixed_point_multiplier(m):
    m0, t = fixed_point_multiplier(m)
    if (m0, t) == (0, 0):  # flushed: m times every int32 rounds to 0
        assert Fraction(m) * TWO_31 <= Fraction(1, 2)
        return
    assert 2**30 <= m0 < TWO_31 and 1 <= t <= 62
    assert abs(Fraction(m0, 2**t) - Fraction(m)) <= Fraction(m) * Fraction(1, TWO_31)


def test_fixed_point_multiplier_rollover_and_limits():
    assert fixed_point_multiplier(1.0 - 2.0**-33) == (2**30, 30)   # 2^31 rolled over
    assert fixed_point_multiplier(0.5) == (2**30, 31)
    assert fixed_point_multiplier(0.0) == (0, 0)
    assert fixed_point_multiplier(2.0**-32) == (2**30, 62)          # still exact
    assert fixed_point_multiplier(2.0**-32 * 0.9999) == (0, 0)
    for bad in (2.0**30, 2.0**30 * (1 - 2.0**-40), 1e20, -0.5, math.nan, math.inf):
        with pytest.raises(QuantizationError):
            fixed_point_multiplier(bad)


def _accumulators() -> np.ndarray:
    rng = np.random.default_rng(2)
    edges = [TWO_31 - 1, TWO_31 - 2, -TWO_31, -TWO_31 + 1, 2**30, -(2**30), 2**24 + 1]
    return np.concatenate([np.arange(-300, 301), edges,
                           rng.integers(-TWO_31, TWO_31, 150)]).astype(np.int32)


def test_requantize_against_exact_rationals():
    """Every accumulator of the grid times every multiplier, in Python integers: bit-identical
    to ``floor(acc * M0 / 2^t + 1/2)``; and it is the exact ``acc * m`` rounded half up, or
    else within half a unit plus the 2^-31 relative error of M0 of it."""
    acc = _accumulators()
    counts = Counter()
    for m in MULTIPLIERS:
        m0, t = fixed_point_multiplier(m)
        got = requantize(acc, m0, t)
        assert got.dtype == np.int64
        num, den = Fraction(m).as_integer_ratio()  # m = num / den exactly, den a power of 2
        for a, g in zip(acc.tolist(), got.tolist()):
            assert g == (2 * a * m0 + 2**t) // 2 ** (t + 1)
            rounded = (2 * a * num + den) // (2 * den)  # floor(a m + 1/2)
            if g != rounded:  # |g - a m| <= 1/2 + |a m| / 2^31, times 2^32 den:
                assert abs(g * den - a * num) * 2**32 <= 2**31 * den + 2 * abs(a * num)
                counts["off the exact rounding"] += 1
            counts["checked"] += 1
    assert counts["checked"] == len(acc) * len(MULTIPLIERS)
    # measured: 1,554 of 59,882 (random accumulators near 2^31 times large M)
    assert counts["off the exact rounding"] <= 1554


def test_requantize_ties_round_up_and_per_channel_broadcast():
    np.testing.assert_array_equal(requantize(np.array([-3, -1, 1, 3]), 2**30, 31),
                                  [-1, 0, 1, 2])
    acc = np.array([[100, -100], [7, 7]], np.int32)
    m0, t = zip(*(fixed_point_multiplier(m) for m in (0.25, 3.0)))
    got = requantize(acc, np.array(m0), np.array(t))
    np.testing.assert_array_equal(got, [[25, -300], [2, 21]])


def test_requantize_refuses_bad_operands():
    with pytest.raises(QuantizationError, match="int32"):
        requantize(np.array([TWO_31]), 2**30, 31)
    with pytest.raises(QuantizationError, match="M0"):
        requantize(np.array([1]), TWO_31, 31)
    with pytest.raises(QuantizationError, match="M0"):
        requantize(np.array([1]), 2**30, 63)


# --- bias ---

def _weight_params(scales, per_channel=True) -> QuantParams:
    n = len(scales)
    return QuantParams(tuple(np.float32(scales).tolist()), (0,) * n, "i8",
                       0 if per_channel else None, -127, 127)


def test_quantize_bias_like_onnxruntime_when_it_fits():
    """Without overflow: onnxruntime's quantize_bias_static_impl formula (float32 scale
    product, float64 division, round) and weight params unchanged."""
    rng = np.random.default_rng(3)
    b = rng.standard_normal(8).astype(np.float32)
    wp = _weight_params(rng.uniform(1e-3, 1e-1, 8))
    q, bp, wp2 = quantize_bias(b, 0.02, wp)
    s_b = np.float32(0.02) * np.array(wp.scale, np.float32)
    np.testing.assert_array_equal(q, np.round(b.astype(np.float64) / s_b.astype(np.float64)))
    assert q.dtype == np.int32 and wp2 == wp
    assert bp.scale == tuple(s_b.tolist()) and bp.zero_point == (0,) * 8 and bp.axis == 0
    assert bp.problems() == []


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_bias_raises_the_weight_scale_instead_of_clipping(per_channel):
    b = np.array([1e4, -3.0, 0.0, -2e5], np.float32)
    scales = [1e-9, 1e-2, 1e-37, 1e-9] if per_channel else [1e-9]  # 1e-40 underflows
    wp = _weight_params(scales, per_channel)
    s_in = 1e-3
    q, bp, wp2 = quantize_bias(b, s_in, wp)
    assert np.abs(q.astype(np.int64)).max() <= BIAS_LIMIT
    s_b = np.array(bp.scale * (1 if per_channel else 4), np.float64)
    assert np.all(np.abs(q * s_b - b) <= s_b / 2)                 # never clipped
    raised = np.array(wp2.scale) != np.array(wp.scale)
    assert raised.sum() == (3 if per_channel else 1)
    needs = np.abs(b) if per_channel else [np.abs(b).max()]
    for old, new, need in zip(wp.scale, wp2.scale, needs):
        assert new >= old
        if new != old:  # the smallest float32 weight scale that fits
            below = np.nextafter(np.float32(new), np.float32(0))
            s_below = np.float32(np.float32(s_in) * below)
            assert s_below < np.finfo(np.float32).tiny or np.rint(need / s_below) > BIAS_LIMIT
    assert per_channel or raised.all()


def test_quantize_bias_errors_name_the_tensor():
    wp = _weight_params([0.1, 0.1])
    with pytest.raises(QuantizationError, match="'conv1.bias'.*NaN"):
        quantize_bias(np.array([np.nan, 0.0]), 0.1, wp, name="conv1.bias")
    with pytest.raises(QuantizationError, match="input scale"):
        quantize_bias(np.zeros(2), 0.0, wp)
    with pytest.raises(QuantizationError, match="does not match 2"):
        quantize_bias(np.zeros(3), 0.1, wp)
