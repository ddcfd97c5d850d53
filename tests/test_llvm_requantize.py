"""The LLVM backend's requantization kernel, compiled for this CPU and for baseline x86-64, in
both roundings: bit-exact with the numpy backend's ``fixed_point.rescale`` and ``saturate`` over
drawn shapes
(remainders of every vector width), multipliers from flushed-to-zero to 2^29, accumulators at
the int32 limits, ties and both clamps, int8 and uint8."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qcompiler.backends.llvm.requantize import Requantizer
from qcompiler.backends.llvm.target import Jit, generic, host

from qcompiler.ops import fixed_point

TARGETS = {"host": host, "x86-64": generic}
# flushed (< 2^-32), tiny, ties (1/2, 3/2), ordinary, > 1, the largest the form holds
MULTIPLIERS = [2.0**-40, 2.0**-33, 3e-10, 2.0**-20, 0.0123, 0.3, 0.5, 0.999999, 1.0, 1.5, 3.7,
               255.0, 2.0**29]


@pytest.fixture(scope="module", params=sorted(TARGETS))
def requantizer(request) -> Requantizer:
    return Requantizer(Jit(TARGETS[request.param]()))


def reference(acc, multipliers, zero_point, lo, hi, dtype, rounding="fixed_point") -> np.ndarray:
    channels = acc.shape[0]
    ms = np.broadcast_to(np.asarray(multipliers, np.float64).reshape(-1), (channels,))
    y = fixed_point.rescale([acc.astype(np.int64)], [ms.reshape(-1, *(1,) * (acc.ndim - 1))],
                            rounding)
    return fixed_point.saturate(y, np.asarray(zero_point), lo, hi, dtype)


@st.composite
def cases(draw):
    channels = draw(st.integers(1, 6), label="channels")
    inner = draw(st.integers(0, 70), label="inner")  # odd sizes: every vector remainder
    dtype = draw(st.sampled_from([np.int8, np.uint8]), label="dtype")
    info = np.iinfo(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([2**8, 2**16, 2**31]), label="accumulator range")
    acc = rng.integers(-scale, scale, (channels, inner), dtype=np.int64)
    if inner:
        acc.flat[0], acc.flat[-1] = -(2**31), 2**31 - 1  # the int32 limits
    per_channel = draw(st.booleans(), label="per channel")
    multipliers = [draw(st.sampled_from(MULTIPLIERS), label="multiplier")
                   for _ in range(channels if per_channel else 1)]
    zero_point = draw(st.integers(int(info.min), int(info.max)), label="zero point")
    lo = draw(st.integers(int(info.min), int(info.max)), label="lo")
    hi = draw(st.integers(lo, int(info.max)), label="hi")
    return acc.astype(np.int32), multipliers, zero_point, lo, hi, dtype


@pytest.mark.parametrize("rounding", fixed_point.ROUNDINGS)
def test_requantize_is_bit_exact_with_the_numpy_backend(requantizer, rounding):
    reached: Counter[str] = Counter()

    @settings(max_examples=max(300, settings.default.max_examples), deadline=None)
    @given(cases())
    def check(case):
        acc, multipliers, zero_point, lo, hi, dtype = case
        got = requantizer(acc, multipliers, zero_point, lo, hi, dtype, rounding)
        want = reference(acc, multipliers, zero_point, lo, hi, dtype, rounding)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        free = reference(acc, multipliers, zero_point, -(2**40), 2**40, np.int64, rounding)
        reached["clamped low"] += int((free < lo).sum())
        reached["clamped high"] += int((free > hi).sum())
        ms = np.broadcast_to(np.asarray(multipliers).reshape(-1), (acc.shape[0],))
        halves = (acc * np.where(ms == 0.5, 1, 0)[:, None]) % 2 == 1  # x.5 at M = 1/2
        reached["ties"] += int(halves.sum())
        reached["flushed"] += int((ms < 2.0**-32).sum())
        reached["M > 1"] += int((ms > 1).sum())

    check()
    assert all(reached[k] for k in ("clamped low", "clamped high", "ties", "flushed", "M > 1")), \
        reached


@pytest.mark.parametrize("rounding", fixed_point.ROUNDINGS)
def test_every_accumulator_of_a_ramp_matches(requantizer, rounding):
    """Each of 2^16 consecutive accumulators around 0 and around each int32 limit."""
    ramp = np.concatenate([np.arange(-(2**15), 2**15), np.arange(2**31 - 2**15, 2**31),
                           np.arange(-(2**31), -(2**31) + 2**15)]).astype(np.int32)
    acc = np.tile(ramp, (len(MULTIPLIERS), 1))
    got = requantizer(acc, MULTIPLIERS, 3, -128, 127, np.int8, rounding)
    np.testing.assert_array_equal(got, reference(acc, MULTIPLIERS, 3, -128, 127, np.int8,
                                                 rounding))


def test_the_host_kernel_is_vectorised_where_the_cpu_has_avx2():
    target = host()
    requantizer = Requantizer(Jit(target))
    assembly = requantizer.jit.assembly(requantizer.module)
    assert ("ymm" in assembly) == target.has("avx2")
    baseline = Requantizer(Jit(generic()))
    assert "ymm" not in baseline.jit.assembly(baseline.module)
