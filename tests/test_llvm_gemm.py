"""The LLVM backend's exact int8 GEMM, compiled for this CPU and for baseline x86-64: bit-exact
with a plain int64 numpy product over drawn shapes (every tile remainder, 1x1, odd K), int8 and
uint8 activations, int8 and uint8 weights with and without zero points and bias, codes at their
limits (pairs whose sum leaves int16: where the saturating u8*s8 pair instruction would be
wrong), accumulators next to 2^31, strided rows; no read past A, no write outside C; and, with
the requantization kernel after it, bit-exact with the numpy backend's IntMatMul. The
requantizing GEMM (the rescale fused into the tile store) is bit-exact with the numpy
backend's IntMatMul kernel given the same operands, in both roundings: drawn shapes, zero
points, per-column and scalar multipliers from flushed to > 1, output zero points at their
limits, clamps; ties and both clamps counted; every accumulator near 0 and the int32 limits;
no write outside C."""

from __future__ import annotations

import ctypes
import mmap
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from llvm_harness import pair_safe_codes
from qcompiler.backends.llvm import gemm
from qcompiler.backends.llvm.requantize import Requantizer
from qcompiler.backends.llvm.target import Jit, generic, host

from qcompiler.errors import BackendError
from qcompiler.ops import fixed_point
from qcompiler.ops.int_nn import int_matmul

TARGETS = {"host": host, "x86-64": generic}
EDGES = [1, 2, 3, gemm.MR - 1, gemm.MR, gemm.MR + 1, gemm.NR - 1, gemm.NR, gemm.NR + 1,
         2 * gemm.NR + 1, 63, 64, 65]
INT16 = np.iinfo(np.int16)
PROT_NONE = 0  # <sys/mman.h> (the mmap module has PROT_READ and PROT_WRITE only)


@pytest.fixture(scope="module", params=sorted(TARGETS))
def kernels(request) -> dict[bool, gemm.Gemm]:
    """The GEMM for int8 (True) and uint8 (False) activations on one target."""
    jit = Jit(TARGETS[request.param]())
    return {signed: gemm.Gemm(jit, signed) for signed in (True, False)}


def reference(a, b, b_zero_point=None, bias=None) -> np.ndarray:
    """``bias + a @ (b - b_zero_point)`` in int64."""
    centred = b.astype(np.int64) - (0 if b_zero_point is None else np.int64(b_zero_point))
    acc = a.astype(np.int64) @ centred
    return acc + (0 if bias is None else np.asarray(bias, np.int64))


def codes(rng, dtype, shape, extreme: bool) -> np.ndarray:
    """Codes of ``dtype``: only its two limits when ``extreme``, else any."""
    info = np.iinfo(dtype)
    if extreme:
        return rng.choice(np.array([info.min, info.max], dtype), shape)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


@st.composite
def problems(draw):
    size = st.one_of(st.integers(1, 70), st.sampled_from(EDGES))
    m, n, k = draw(size, label="M"), draw(size, label="N"), draw(size, label="K")
    a_dtype = draw(st.sampled_from([np.int8, np.uint8]), label="activations")
    b_dtype = draw(st.sampled_from([np.int8, np.int8, np.uint8]), label="weights")
    extreme = draw(st.booleans(), label="codes at their limits")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = codes(rng, a_dtype, (m, k), extreme)
    b = codes(rng, b_dtype, (k, n), extreme)
    zero_point = draw(st.sampled_from(["none", "scalar", "per column"]), label="b zero point")
    b_zp = None if zero_point == "none" else codes(
        rng, b_dtype, () if zero_point == "scalar" else (n,), False)
    bias = None if draw(st.booleans(), label="no bias") else rng.integers(
        -(2**24), 2**24, n).astype(np.int32)
    return a, b, b_zp, bias


def pair_sums_beyond_int16(a, b, b_zero_point) -> int:
    """How many pair products ``a[m,2p]*w[2p,n] + a[m,2p+1]*w[2p+1,n]`` (w centred) leave
    int16: each one a saturation of the u8*s8 pair instruction, had it been used."""
    w = b.astype(np.int64) - (0 if b_zero_point is None else np.int64(b_zero_point))
    k = a.shape[1] // 2 * 2
    pairs = (a[:, 0:k:2, None] * w[None, 0:k:2] + a[:, 1:k:2, None] * w[None, 1:k:2])
    return int(((pairs < INT16.min) | (pairs > INT16.max)).sum())


def test_the_gemm_is_bit_exact_with_an_int64_product(kernels):
    reached: Counter[str] = Counter()

    @settings(max_examples=max(100, settings.default.max_examples), deadline=None)
    @given(problems())
    @example((np.arange(2 * gemm.MR * 5, dtype=np.uint8).reshape(2 * gemm.MR, 5),
              np.arange(5 * gemm.NR, dtype=np.int8).reshape(5, gemm.NR), None, None))
    def check(problem):
        a, b, b_zp, bias = problem
        got = kernels[a.dtype == np.int8](a, gemm.pack_weights(b, b_zp, bias))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, reference(a, b, b_zp, bias))
        m, k = a.shape
        n = b.shape[1]
        reached["pair sums beyond int16"] += pair_sums_beyond_int16(a, b, b_zp)
        reached["row remainder"] += m % gemm.MR != 0
        reached["column remainder"] += n % gemm.NR != 0
        reached["odd K"] += k % 2
        reached["whole tiles"] += m % gemm.MR == 0 and n % gemm.NR == 0
        reached["1x1"] += m == n == 1
        reached["uint8 weights"] += b.dtype == np.uint8

    check()
    assert all(reached[key] for key in ("pair sums beyond int16", "row remainder",
                                        "column remainder", "odd K", "whole tiles", "1x1",
                                        "uint8 weights")), reached


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_int16_gemm_is_an_int64_product_modulo_2_32(target):
    """The GEMM of int16 activations (Winograd's transformed codes) over int16 weights: every
    pair product sum is exact (no operand is -32768) and the sums wrap, so the int32 result
    is the int64 product modulo 2^32; rows of A may be strided (by an even number of int16
    elements: pairs are read as aligned int32)."""
    wide = gemm.Gemm(Jit(TARGETS[target]()), True, wide=True)
    reached: Counter[str] = Counter()

    @settings(max_examples=max(60, settings.default.max_examples // 2), deadline=None)
    @given(st.one_of(st.integers(1, 70), st.sampled_from(EDGES)),
           st.one_of(st.integers(1, 70), st.sampled_from(EDGES)), st.integers(1, 40),
           st.sampled_from([0, 2, 6]), st.booleans(), st.integers(0, 2**32 - 1))
    @example(gemm.MR, gemm.NR, 3, 0, False, 0)  # whole tiles only
    def check(m, n, pairs, slack, extreme, seed):
        rng = np.random.default_rng(seed)
        k, limit = 2 * pairs, int(INT16.max)
        if extreme:
            a = rng.choice(np.array([-limit, limit], np.int16), (m, k + slack))
            b = rng.choice(np.array([-limit, limit], np.int16), (k, n))
        else:
            a = rng.integers(-limit, limit + 1, (m, k + slack)).astype(np.int16)
            b = rng.integers(-limit, limit + 1, (k, n)).astype(np.int16)
        out = np.empty((m, n), np.int32)
        wide.bind(a[:, :k], gemm.pack_wide_weights(b), out)()
        want = (a[:, :k].astype(np.int64) @ b.astype(np.int64)) & 0xFFFFFFFF
        np.testing.assert_array_equal(out.view(np.uint32), want.astype(np.uint32))
        reached["wrapped"] += bool((np.abs(a[:, :k].astype(np.int64) @ b.astype(np.int64))
                                    > 2**31 - 1).any())
        reached["strided rows"] += slack > 0
        reached["row remainder"] += m % gemm.MR != 0
        reached["column remainder"] += n % gemm.NR != 0
        reached["whole tiles"] += m % gemm.MR == 0 and n % gemm.NR == 0

    check()
    assert all(reached[key] for key in ("wrapped", "strided rows", "row remainder",
                                        "column remainder", "whole tiles")), reached
    with pytest.raises(BackendError, match="must be even"):
        wide.bind(np.zeros((2, 3), np.int16), gemm.pack_wide_weights(np.ones((3, 2), np.int16)),
                  np.empty((2, 2), np.int32))
    with pytest.raises(BackendError, match="must be even"):  # an odd row stride
        wide.bind(np.zeros((2, 5), np.int16)[:, :4],
                  gemm.pack_wide_weights(np.ones((4, 2), np.int16)), np.empty((2, 2), np.int32))
    with pytest.raises(BackendError, match="int16"):
        gemm.pack_wide_weights(np.ones((4, 2), np.int8))


@pytest.mark.parametrize("a_dtype", [np.int8, np.uint8])
def test_accumulators_next_to_the_int32_limits_are_exact(kernels, a_dtype):
    """K as large as the int32 accumulator allows with every product at its largest magnitude
    (activation limit times a centred weight of +-255), signs per row and column so that the
    sums reach both ends of int32."""
    info = np.iinfo(a_dtype)
    largest = max(-int(info.min), int(info.max))
    k = (2**31 - 1 - 1000) // (largest * 255)
    rng = np.random.default_rng(k)
    a = np.where(rng.random((6, k)) < 0.5, info.min, info.max).astype(a_dtype)
    a[0], a[1] = info.max, info.min  # a whole row at each limit
    b = np.where(rng.random((k, 19)) < 0.5, -128, 127).astype(np.int8)
    b[:, 0], b[:, 1] = 127, -128
    b_zp = np.where(np.arange(19) % 2, 127, -128).astype(np.int8)
    b_zp[0], b_zp[1] = -128, 127  # columns 0 and 1 centred at +255 and -255 everywhere
    bias = rng.integers(-1000, 1000, 19).astype(np.int32)
    got = kernels[a_dtype == np.int8](a, gemm.pack_weights(b, b_zp, bias))
    want = reference(a, b, b_zp, bias)
    assert want.max() > 2**31 - 2**24 and want.min() < -(2**31) + 2**24, (want.min(), want.max())
    assert want.max() <= 2**31 - 1 and want.min() >= -(2**31)
    np.testing.assert_array_equal(got, want)


def test_zero_sizes_leave_c_as_the_bias(kernels):
    """K = 0 gives the bias; M = 0 or N = 0 touch nothing."""
    bias = np.arange(5, dtype=np.int32)
    got = kernels[True](np.zeros((3, 0), np.int8), gemm.pack_weights(np.zeros((0, 5), np.int8),
                                                                     bias=bias))
    np.testing.assert_array_equal(got, np.broadcast_to(bias, (3, 5)))
    assert kernels[False](np.zeros((0, 4), np.uint8),
                          gemm.pack_weights(np.ones((4, 5), np.int8))).shape == (0, 5)
    assert kernels[False](np.ones((3, 4), np.uint8),
                          gemm.pack_weights(np.ones((4, 0), np.int8))).shape == (3, 0)


def _fenced(nbytes: int) -> tuple[mmap.mmap, np.ndarray]:
    """``nbytes`` bytes whose last one is the last readable byte: the page after them is
    made inaccessible, so a read past them crashes instead of passing unseen."""
    page = mmap.PAGESIZE
    pages = -(-nbytes // page) + 1
    region = mmap.mmap(-1, pages * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(base + (pages - 1) * page, page, PROT_NONE) == 0
    start = (pages - 1) * page - nbytes
    return region, np.frombuffer(region, np.uint8, nbytes, start)


@pytest.mark.parametrize(("m", "n", "k", "lda"), [(5, 17, 3, 3), (4, 16, 7, 7), (1, 3, 1, 1),
                                                  (6, 33, 70, 71), (9, 40, 31, 40)])
def test_no_read_past_a_and_no_write_outside_c(kernels, m, n, k, lda):
    """A ends right before an inaccessible page (rows ``lda`` bytes apart), C is a window of a
    larger array whose other elements must keep their sentinel."""
    rng = np.random.default_rng(m * n * k)
    nbytes = (m - 1) * lda + k
    region, raw = _fenced(nbytes)
    a = np.lib.stride_tricks.as_strided(raw.view(np.int8), (m, k), (lda, 1))
    a_values = rng.integers(-128, 128, (m, k)).astype(np.int8)
    np.copyto(a, a_values)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    weights = gemm.pack_weights(b, bias=rng.integers(-99, 99, n).astype(np.int32))
    sentinel = np.full((m + 2, n + 5), -7, np.int32)
    out = sentinel[1:m + 1, 2:n + 2]
    kernels[True].bind(a, weights, out)()
    np.testing.assert_array_equal(out, reference(a_values, b, bias=weights.bias[:n]))
    outside = np.ones(sentinel.shape, bool)
    outside[1:m + 1, 2:n + 2] = False
    assert (sentinel[outside] == -7).all()
    del a, raw
    region.close()


def test_with_the_requantization_it_is_the_numpy_backends_int_matmul(kernels):
    """IntMatMul with both zero points: the weight zero point packed into the weights and the
    activation zero point folded into the bias as the lowering does (``- a_zp * colsum(b)``),
    then the LLVM requantization per column; bit-exact with the numpy backend's kernel."""
    requantize = Requantizer(kernels[True].jit)
    reached: Counter[str] = Counter()

    @settings(max_examples=max(50, settings.default.max_examples // 2), deadline=None)
    @given(problems(), st.integers(0, 2**32 - 1))
    def check(problem, seed):
        a, b, b_zp, bias = problem
        rng = np.random.default_rng(seed)
        n = b.shape[1]
        a_zp = codes(rng, a.dtype, (), False)
        b_zp = np.zeros(n, b.dtype) if b_zp is None else np.broadcast_to(b_zp, (n,)).copy()
        bias = np.zeros(n, np.int32) if bias is None else bias
        multiplier = 2.0 ** rng.uniform(-20, -6, n)
        y_zp = np.array(rng.integers(-128, 128), np.int8)
        want = int_matmul(a, b, multiplier, y_zp, bias, a_zp, b_zp, rounding="fixed_point",
                          qmin=None, qmax=None)
        folded = (bias.astype(np.int64) - int(a_zp) * b.sum(axis=0, dtype=np.int64))
        acc = kernels[a.dtype == np.int8](a, gemm.pack_weights(b, b_zp, folded.astype(np.int32)))
        got = requantize(np.ascontiguousarray(acc.T), multiplier, int(y_zp), -128, 127, np.int8)
        np.testing.assert_array_equal(got.T, want)
        reached["clamped"] += int(((want == -128) | (want == 127)).sum())
        reached["inside"] += int(((want > -128) & (want < 127)).sum())

    check()
    assert reached["clamped"] and reached["inside"], reached


@pytest.mark.parametrize("rounding", [None, *fixed_point.ROUNDINGS])
def test_the_exact_kernel_never_uses_the_saturating_pair_instruction(rounding):
    for make, register in ((host, "ymm"), (generic, "xmm")):
        target = make()
        kernel = gemm.Gemm(Jit(target), signed=False, rounding=rounding)
        assembly = kernel.jit.assembly(kernel.module)
        assert "pmaddubsw" not in assembly
        if target.has("avx2"):
            assert "vpmaddwd" in assembly and "ymm" in assembly
        else:
            assert "pmaddwd" in assembly and "ymm" not in assembly
            assert register in assembly


# -- the u8 x s8 pair instruction, where the weights allow it ------------------------------------

needs_avx2 = pytest.mark.skipif(not host().has("avx2"), reason="the pair kernel is AVX2 code")


@needs_avx2
@pytest.mark.parametrize("rounding", [None, *fixed_point.ROUNDINGS])
def test_the_pair_kernel_uses_pmaddubsw_and_needs_avx2(rounding):
    kernel = gemm.Gemm(Jit(host()), signed=True, rounding=rounding, product=gemm.PAIRS)
    assembly = kernel.jit.assembly(kernel.module)
    assert "vpmaddubsw" in assembly and "ymm" in assembly
    with pytest.raises(BackendError, match="AVX2"):
        gemm.kernel_ir("f", True, False, product=gemm.PAIRS)
    with pytest.raises(BackendError, match="no GEMM product"):
        gemm.kernel_ir("f", True, True, product="vpdpbusd")


@pytest.fixture(scope="module")
def pair_kernels() -> dict[tuple[bool, str | None], gemm.Gemm]:
    """The pair GEMM per activation signedness, int32 out and requantizing in both roundings."""
    jit = Jit(host())
    return {(signed, rounding): gemm.Gemm(jit, signed, rounding=rounding, product=gemm.PAIRS)
            for signed in (True, False) for rounding in (None, *fixed_point.ROUNDINGS)}


@needs_avx2
def test_the_pair_gemm_is_exact_where_the_weights_fit(pair_kernels):
    """Weights whose pairs reach the bound (``pair_safe_codes``) times activations at their
    limits: pair sums of exactly +-255 * 128 (the instruction's largest unsaturated ones) are
    formed and the int32 result is the int64 product; with the requantizing store it is the
    numpy backend's IntMatMul. K in every remainder modulo 4 (the zero-padded quads)."""
    reached: Counter[str] = Counter()

    @settings(max_examples=max(60, settings.default.max_examples // 2), deadline=None)
    @given(st.one_of(st.integers(1, 70), st.sampled_from(EDGES)),
           st.one_of(st.integers(1, 70), st.sampled_from(EDGES)),
           st.one_of(st.integers(1, 70), st.sampled_from(EDGES)),
           st.sampled_from([np.int8, np.uint8]), st.sampled_from([np.int8, np.uint8]),
           st.sampled_from(["none", "scalar", "per channel"]), st.booleans(),
           st.sampled_from([None, *fixed_point.ROUNDINGS]), st.integers(0, 2**32 - 1))
    def check(m, n, k, a_dtype, b_dtype, b_zp, extreme, rounding, seed):
        rng = np.random.default_rng(seed)
        a = codes(rng, a_dtype, (m, k), extreme)
        b_rows, zp = pair_safe_codes(rng, b_dtype, n, k, b_zp)
        b = np.ascontiguousarray(b_rows.T)
        bias = rng.integers(-(2**20), 2**20, n).astype(np.int32)
        weights = gemm.pack_weights(b, zp, bias, product=gemm.PAIRS,
                                    signed=a_dtype == np.int8)
        kernel = pair_kernels[(a_dtype == np.int8, rounding)]
        if rounding is None:
            np.testing.assert_array_equal(kernel(a, weights), reference(a, b, zp, bias))
        else:
            multiplier = 2.0 ** rng.uniform(-16, -6, n)
            y_zp = np.array(rng.integers(-128, 128), np.int8)
            requant = gemm.requantization(multiplier, y_zp, rounding=rounding, n=n)
            want = int_matmul(a, b, multiplier, y_zp, bias, None,
                              np.zeros(n, b.dtype) if zp is None else np.broadcast_to(zp, (n,)),
                              rounding=rounding, qmin=None, qmax=None)
            np.testing.assert_array_equal(kernel(a, weights, requant), want)
        flipped = a.astype(np.int64) + (128 if a_dtype == np.int8 else 0)  # as the instruction
        w = b.astype(np.int64) - (0 if zp is None else np.asarray(zp, np.int64))  # sees them
        even = k // 2 * 2
        sums = flipped[:, 0:even:2, None] * w[None, 0:even:2] + \
            flipped[:, 1:even:2, None] * w[None, 1:even:2]
        reached["pair sum at +255*128"] += int((sums == 255 * 128).sum())
        reached["pair sum at -255*128"] += int((sums == -255 * 128).sum())
        reached[f"K = {k % 4} mod 4"] += 1
        reached["row remainder"] += m % gemm.MR != 0
        reached["column remainder"] += n % gemm.NR != 0
        reached[f"rounding {rounding}"] += 1

    check()
    expected = ["pair sum at +255*128", "pair sum at -255*128", "row remainder",
                "column remainder", *(f"K = {r} mod 4" for r in range(4)),
                *(f"rounding {r}" for r in (None, *fixed_point.ROUNDINGS))]
    assert all(reached[key] for key in expected), reached


@needs_avx2
def test_pairs_fit_is_exactly_where_the_instruction_does_not_saturate():
    """Every pair of int8 weights (65536 columns of a K = 2 product, packed without the
    check) times the activation pairs that maximise its sums ((255, 255), (255, 0), (0, 255)):
    the pair kernel's result equals the exact product for precisely the columns that
    ``pairs_fit`` admits, and the packer refuses the others."""
    values = np.arange(-128, 128)
    w = np.stack(np.meshgrid(values, values, indexing="ij")).reshape(2, -1)  # [2, 65536]
    a = np.array([[255, 255], [255, 0], [0, 255]], np.uint8)
    packed = replace(gemm._pack(w.astype(np.int8), np.zeros(w.shape[1], np.int64), gemm.NR, 4),
                     product=gemm.PAIRS, signed=False)  # pack_weights would refuse most
    got = gemm.Gemm(Jit(host()), signed=False, product=gemm.PAIRS)(a, packed)
    exact = (got == a.astype(np.int64) @ w).all(axis=0)
    fits = np.array([gemm.pairs_fit(w[:, j:j + 1]) for j in range(w.shape[1])])
    np.testing.assert_array_equal(fits, exact)
    assert 0 < fits.sum() < fits.size
    assert gemm.pairs_fit(np.array([[64], [64]])) and not gemm.pairs_fit(np.array([[65], [64]]))
    assert gemm.pairs_fit(np.array([[-128], [0]])) and not gemm.pairs_fit(np.array([[-65], [-64]]))
    with pytest.raises(BackendError, match="saturate"):
        gemm.pack_weights(np.array([[65], [64]], np.int8), product=gemm.PAIRS)
    assert not gemm.pairs_fit(np.array([[128], [0]]))  # centred past int8: no int8 weight
    assert not gemm.pairs_fit(np.array([[-129], [0]]))
    with pytest.raises(BackendError, match="saturate"):  # 255 - 127 = 128
        gemm.pack_weights(np.array([[255], [0]], np.uint8), np.uint8(127), product=gemm.PAIRS)
    safe, unsafe = np.array([[64], [64]]), np.array([[65], [64]])
    assert gemm.choose_product([safe, safe], True) == gemm.PAIRS
    assert gemm.choose_product([safe, unsafe], True) == gemm.EXACT  # every group must fit
    assert gemm.choose_product([safe], False) == gemm.EXACT  # no AVX2


@needs_avx2
def test_the_pair_gemm_reads_only_a_and_refuses_other_weights(pair_kernels):
    """A ends right before an inaccessible page (the rows are copied in quads: no read past
    them); weights packed for the exact kernel are refused."""
    m, n, k = 5, 17, 7
    rng = np.random.default_rng(1)
    region, raw = _fenced(m * k)
    a = raw.view(np.int8).reshape(m, k)
    np.copyto(a, rng.integers(-128, 128, (m, k)).astype(np.int8))
    b = rng.integers(-64, 64, (k, n)).astype(np.int8)
    kernel = pair_kernels[(True, None)]
    got = kernel(a, gemm.pack_weights(b, product=gemm.PAIRS, signed=True))
    np.testing.assert_array_equal(got, reference(a, b))
    with pytest.raises(BackendError, match="packed as int16"):
        kernel.bind(a, gemm.pack_weights(b), np.empty((m, n), np.int32))
    with pytest.raises(BackendError, match="for uint8 activations"):  # its bias lacks the flip
        kernel.bind(a, gemm.pack_weights(b, product=gemm.PAIRS), np.empty((m, n), np.int32))
    del a, raw
    region.close()


def test_wrong_operands_are_refused_before_machine_code(kernels):
    """A wrong dtype, K, tile width, output or workspace is a BackendError, never a crash."""
    weights = gemm.pack_weights(np.ones((6, 5), np.int8))
    a = np.ones((3, 6), np.int8)
    out = np.empty((3, 5), np.int32)
    wrong = [(a.astype(np.uint8), weights, out, None, "A must be"),
             (a[:, :5], weights, out, None, "A must be"),
             (a[:, ::2], gemm.pack_weights(np.ones((3, 5), np.int8)), out, None, "contiguous"),
             (a, gemm.pack_weights(np.ones((6, 5), np.int8), nr=24), out, None, "tile width"),
             (a, weights, out.astype(np.int64), None, "C must be"),
             (a, weights, np.empty((5, 3), np.int32).T, None, "C must be"),
             (a, weights, out, np.empty(3, np.uint8), "workspace")]
    for a_, weights_, out_, work, match in wrong:
        with pytest.raises(BackendError, match=match):
            kernels[True].bind(a_, weights_, out_, work)
    with pytest.raises(BackendError, match="int8 or uint8"):
        gemm.pack_weights(np.ones((6, 5), np.int16))


# -- the requantizing GEMM: IntMatMul's output codes in one call ---------------------------------

# flushed (< 2^-32), tiny, powers of two (ties), ordinary, 1, > 1
MULTIPLIERS = [2.0**-40, 2.0**-33, 3e-10, 2.0**-20, 2.0**-9, 2.0**-3, 0.5, 0.0123, 1.0, 1.5,
               3.7, 255.0]


@pytest.fixture(scope="module", params=sorted(TARGETS))
def fused(request) -> dict[tuple[bool, str], gemm.Gemm]:
    """The requantizing GEMM per activation signedness and rounding, on one target."""
    jit = Jit(TARGETS[request.param]())
    return {(signed, rounding): gemm.Gemm(jit, signed, rounding=rounding)
            for signed in (True, False) for rounding in fixed_point.ROUNDINGS}


@st.composite
def outputs(draw, n: int):
    """IntMatMul's rescale operands for ``n`` columns: multipliers (one, or one per column,
    from ``MULTIPLIERS`` or drawn), the output zero point (often at a limit of its dtype) and
    the clamp."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["scalar", "per column", "drawn per column"]), label="M")
    if kind == "scalar":
        multiplier = np.array(draw(st.sampled_from(MULTIPLIERS)))
    elif kind == "per column":
        multiplier = rng.choice(MULTIPLIERS, n)
    else:
        multiplier = 2.0 ** rng.uniform(-18, 2, n)
    dtype = draw(st.sampled_from([np.int8, np.uint8]), label="output")
    info = np.iinfo(dtype)
    limits = st.sampled_from([int(info.min), int(info.max)])
    y_zp = np.array(draw(st.one_of(limits, st.integers(int(info.min), int(info.max)))), dtype)
    qmin = draw(st.one_of(st.none(), st.integers(int(info.min), int(info.max))), label="qmin")
    qmax = draw(st.one_of(st.none(), st.integers(int(info.min) if qmin is None else qmin,
                                                 int(info.max))), label="qmax")
    return multiplier, y_zp, qmin, qmax


def ties(acc: np.ndarray, multiplier, rounding: str) -> int:
    """How many ``acc * M`` lie exactly halfway between two integers (as the rounding sees
    them: ``M0 / 2^t``, or the float32 product)."""
    ms = np.broadcast_to(np.asarray(multiplier, np.float64).reshape(-1), acc.shape[-1:])
    if rounding == "float":
        product = acc.astype(np.float32) * ms.astype(np.float32)
        return int((product - np.floor(product) == 0.5).sum())
    (m0,), t = fixed_point.shared_multipliers([ms])
    below = acc.astype(np.int64) * m0 & ((np.int64(1) << t) - 1)
    return int(((t > 0) & (below == np.where(t > 0, np.int64(1) << np.maximum(t - 1, 0), -1)))
               .sum())


@pytest.mark.parametrize("rounding", fixed_point.ROUNDINGS)
def test_the_requantizing_gemm_is_the_numpy_backends_int_matmul(fused, rounding):
    """One call: IntMatMul's codes, bit-exact with its numpy kernel given the same operands
    (a zero points folded into the bias by ``pack_weights`` as the lowering does)."""
    reached: Counter[str] = Counter()

    @settings(max_examples=max(60, settings.default.max_examples), deadline=None)
    @given(st.data())
    def check(data):
        a, b, b_zp, bias = data.draw(problems())
        n = b.shape[1]
        multiplier, y_zp, qmin, qmax = data.draw(outputs(n))
        a_zp = data.draw(st.one_of(st.none(), st.sampled_from(
            [int(np.iinfo(a.dtype).min), 1, int(np.iinfo(a.dtype).max)])), label="a zero point")
        a_zp = None if a_zp is None else np.array(a_zp, a.dtype)
        b_zp = None if b_zp is None else np.asarray(b_zp)
        want = int_matmul(a, b, multiplier, y_zp, bias, a_zp, b_zp, rounding=rounding,
                          qmin=qmin, qmax=qmax)
        weights = gemm.pack_weights(b, b_zp, bias, a_zero_point=a_zp)
        requant = gemm.requantization(multiplier, y_zp, qmin, qmax, rounding, n)
        got = fused[a.dtype == np.int8, rounding](a, weights, requant)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        acc = reference(a, b, b_zp, bias) - (0 if a_zp is None else int(a_zp) * b.sum(
            axis=0, dtype=np.int64))
        free = fixed_point.rescale([acc], [multiplier], rounding) + int(y_zp)
        info = np.iinfo(y_zp.dtype)
        reached["clamped low"] += int((free < (info.min if qmin is None else qmin)).sum())
        reached["clamped high"] += int((free > (info.max if qmax is None else qmax)).sum())
        reached["inside"] += int(((want > info.min) & (want < info.max)).sum())
        reached["ties"] += ties(acc, multiplier, rounding)
        reached["flushed M"] += int((np.asarray(multiplier) < 2.0**-32).sum())
        reached["M > 1"] += int((np.asarray(multiplier) > 1).sum())
        reached["y zero point at a limit"] += int(y_zp) in (info.min, info.max)
        reached["uint8 output"] += y_zp.dtype == np.uint8
        reached["row remainder"] += a.shape[0] % gemm.MR != 0
        reached["column remainder"] += n % gemm.NR != 0
        reached["odd K"] += a.shape[1] % 2

    check()
    assert all(reached[key] for key in (
        "clamped low", "clamped high", "inside", "ties", "flushed M", "M > 1",
        "y zero point at a limit", "uint8 output", "row remainder", "column remainder",
        "odd K")), reached


@pytest.mark.parametrize(("m", "n", "k", "lda", "ldc"), [(5, 17, 3, 3, 20), (4, 16, 7, 7, 16),
                                                         (1, 3, 1, 1, 8), (6, 33, 70, 71, 35),
                                                         (9, 40, 31, 40, 41)])
def test_the_requantizing_gemm_reads_only_a_and_writes_only_c(fused, m, n, k, lda, ldc):
    """A ends right before an inaccessible page; C ([M, N] bytes, rows ``ldc`` apart) is a
    window of a larger array whose other bytes keep their sentinel."""
    rng = np.random.default_rng(m * n * k)
    region, raw = _fenced((m - 1) * lda + k)
    a = np.lib.stride_tricks.as_strided(raw, (m, k), (lda, 1))
    a_values = rng.integers(0, 256, (m, k)).astype(np.uint8)
    np.copyto(a, a_values)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    bias = rng.integers(-999, 999, n).astype(np.int32)
    multiplier = 2.0 ** rng.uniform(-12, -4, n)
    y_zp = np.array(7, np.uint8)
    for rounding in fixed_point.ROUNDINGS:
        sentinel = np.full((m + 2, ldc + 3), 0xA5, np.uint8)
        out = sentinel[1:m + 1, 2:n + 2]
        fused[False, rounding].bind(a, gemm.pack_weights(b, bias=bias), out, requant=(
            gemm.requantization(multiplier, y_zp, rounding=rounding, n=n)))()
        np.testing.assert_array_equal(out, int_matmul(a_values, b, multiplier, y_zp, bias,
                                                      rounding=rounding, qmin=None, qmax=None))
        outside = np.ones(sentinel.shape, bool)
        outside[1:m + 1, 2:n + 2] = False
        assert (sentinel[outside] == 0xA5).all()
    del a, raw
    region.close()


def test_the_requantizing_gemm_refuses_wrong_constants(fused):
    """A missing or mismatched requantization, a wrong output dtype or zero point, a clamp
    outside the codes or a multiplier too large is a BackendError before machine code."""
    weights = gemm.pack_weights(np.ones((6, 5), np.int8))
    a = np.ones((3, 6), np.int8)
    out = np.empty((3, 5), np.int8)
    kernel = fused[True, "fixed_point"]
    y_zp = np.array(0, np.int8)
    wrong = [(None, out, "needs a requantization"),
             (gemm.requantization(0.1, y_zp, rounding="float", n=5), out, "rounding"),
             (gemm.requantization(0.1, y_zp, n=4), out, "columns"),
             (gemm.requantization(0.1, np.array(0, np.uint8), n=5), out, "C must be")]
    for requant, out_, match in wrong:
        with pytest.raises(BackendError, match=match):
            kernel.bind(a, weights, out_, requant=requant)
    int32_kernel = gemm.Gemm(kernel.jit, True)
    with pytest.raises(BackendError, match="takes no requantization"):
        int32_kernel.bind(a, weights, np.empty((3, 5), np.int32),
                        requant=gemm.requantization(0.1, y_zp, n=5))
    for args, match in [((0.1, np.array(0, np.int32)), "zero point"),
                        ((0.1, y_zp, 5, 4), "clamp"), ((0.1, y_zp, -200), "clamp"),
                        ((2.0**31, y_zp), "too large"), ((0.1, y_zp, None, None, "up"),
                                                         "rounding")]:
        with pytest.raises(BackendError, match=match):
            gemm.requantization(*args)


@pytest.mark.parametrize("rounding", fixed_point.ROUNDINGS)
def test_every_accumulator_of_a_ramp_is_requantized_as_int_matmul_does(fused, rounding):
    """The bias of a K = 1 product with a zero activation is the accumulator: 2^16 consecutive
    ones around 0 and around each int32 limit, one column each, for every multiplier of
    ``MULTIPLIERS`` and a few clamps and zero points (the accumulator clamp of the fixed-point
    store at its boundaries)."""
    ramp = np.concatenate([np.arange(-(2**15), 2**15), np.arange(2**31 - 2**15, 2**31),
                           np.arange(-(2**31), -(2**31) + 2**15)]).astype(np.int32)
    b = np.zeros((1, ramp.size), np.int8)
    weights = gemm.pack_weights(b, bias=ramp)
    clamps = [(np.array(3, np.int8), None, None), (np.array(-128, np.int8), -100, 27),
              (np.array(255, np.uint8), 0, 254), (np.array(0, np.uint8), 9, 9)]
    for multiplier in MULTIPLIERS:
        for y_zp, qmin, qmax in clamps:
            a = np.zeros((1, 1), np.int8)
            got = fused[True, rounding](a, weights, gemm.requantization(
                multiplier, y_zp, qmin, qmax, rounding, ramp.size))
            want = int_matmul(a, b, np.array(multiplier), y_zp, ramp, rounding=rounding,
                              qmin=qmin, qmax=qmax)
            np.testing.assert_array_equal(got, want, err_msg=f"M = {multiplier}")


@needs_avx2
@pytest.mark.parametrize("k", [5, 6])
def test_every_pair_of_every_column_is_checked(k):
    """One pair past the bound, in the last column and a pair after the first, makes the layer
    exact again; the odd last row pairs with a zero. With that pair fixed, the layer takes
    the pair instruction and its product is the exact one."""
    rng = np.random.default_rng(k)
    w = rng.integers(-64, 64, (k, 3)).astype(np.int8)
    assert gemm.choose_product([w], True) == gemm.PAIRS
    bad = w.copy()
    bad[2:4, 2] = (-65, -64)  # pair 1 of column 2
    assert gemm.choose_product([bad], True) == gemm.EXACT
    assert gemm.choose_product([w, bad], True) == gemm.EXACT
    a = rng.integers(0, 256, (7, k)).astype(np.uint8)
    got = gemm.Gemm(Jit(host()), False, product=gemm.PAIRS)(a, gemm.pack_weights(
        w, product=gemm.PAIRS))
    np.testing.assert_array_equal(got, reference(a, w))
