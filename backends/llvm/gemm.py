"""The exact int8 matrix product the LLVM backend's IntMatMul and IntConv (as a GEMM) run on:
``C[M, N] int32 = bias[N] + A[M, K] x (B[K, N] - b_zero_point[N])`` as LLVM IR text.

Numerics (DESIGN.md "Numerics contract"): every product is formed in 16 bits widened to 32 and
summed in int32 pairs, the x86 ``pmaddwd`` pattern (``EXACT``), which is exact for any int16
operands but -32768 * -32768 twice; here the operands are activation codes ([-128, 255]) and
centred weights (``b - b_zero_point``, within [-255, 255]), so every pair sum is exact. The
u8 x s8 pair instruction (``pmaddubsw``, ``PAIRS``) saturates its int16 pair sums, so it runs
only for a layer whose weights are proved, at compile time, never to let it saturate
(``pairs_fit``: in every pair of weights the positive ones sum to at most 128 and the negative
ones to at least -128, as 7-bit symmetric ``reduce_range`` weights always do, the default
``weight_symmetric``; asymmetric ones, centred, need not); ``choose_product``
decides per layer, and the layer's function name records it): int8 activations reach it as
uint8 codes plus 128 (the ``128 * sum w`` comes off the bias), and ``pmaddwd`` by ones adds
its pair sums in int32. Where it applies it does 4 k per step instead of 2.

Layout. ``pack_weights`` runs once (numpy, at compile time): the weights are centred by their
zero point, widened to int16, padded with zero rows to an even K and zero columns to a multiple
of the tile width ``NR``, and stored panel by panel: for columns ``[j*NR, (j+1)*NR)`` and the
k-pair ``p``, ``NR`` interleaved pairs ``(b[2p, n], b[2p+1, n])``: one step of the micro-kernel
loads ``2 * NR`` contiguous int16. The bias, padded the same way, seeds the accumulators, so
the result is IntMatMul's accumulator with the ``a_zero_point`` term folded into the bias as
the lowering does for a constant ``b`` (folding the weight zero point into the packed weights
is exact and makes the ``b_zero_point * rowsum(A)`` term vanish). For ``PAIRS`` the centred
weights stay int8, padded to a multiple of 4 in K, and a step holds ``NR`` interleaved quads
``b[4q..4q+3, n]`` (the same ``4 * NR`` bytes); the packed weights record their product and
the activations' signedness they were packed for, which ``Gemm.bind`` checks.

Kernel. For each panel of ``MR`` rows of A, the rows are first widened to int16 into a
caller-given workspace (sign- or zero-extended codes, one zero after an odd K; for ``PAIRS``
bytes, int8 codes plus 128, zeros up to a multiple of 4; a contiguous loop that LLVM
vectorises; the kernel never reads outside A). Then for each column panel a
register tile of ``MR x NR`` int32 accumulators (``MR * NR / 8`` vectors of 8), seeded with the
bias, runs over the k-pairs: one 32-bit broadcast of a row's pair, one 16-bit multiply with
pair sums, one add per vector. The pair product is ``pmaddwd``: the AVX2 intrinsic (ymm) when
the target has AVX2, else the SSE2 one on two xmm halves (every x86-64 has SSE2; LLVM does not
select ``pmaddwd`` from the portable sext/mul/add form here once the activation is a
broadcast). Rows past the last whole panel go one by one through a ``1 x NR`` tile; full
column panels are stored as vectors, the last partial one through a stack tile and a scalar
copy of the columns inside C. The adds wrap (no ``nsw``): the lowering proves the int32 range.
The *wide* variant (``kernel_ir(..., wide=True)``, Winograd's transformed codes) takes A as
int16 already (even K, even row stride) and reads its pairs in place, with weights from
``pack_wide_weights``; it is otherwise the same kernel.

Requantizing store. ``Gemm(..., rounding=...)`` computes IntMatMul's output codes in the same
call: each tile's accumulators are rescaled per column as ``fixed_point.rescale`` does (rounding
``"fixed_point"``: ``M0``/``t`` of ``shared_multipliers``; or ``"float"``), offset by the output
zero point and clamped to ``[qmin, qmax]`` in registers, then stored as int8/uint8 bytes into
C [M, N] (the last column panel again through a stack tile: no byte outside C is written).
``requantization`` prepares the per-column constants once.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from qcompiler.errors import BackendError
from qcompiler.ops import fixed_point

from .target import Jit

MR = 4  # rows of A per register tile
NR = 16  # columns of B per register tile (a multiple of LANES)
LANES = 8  # int32 accumulators per vector
EXACT = "pmaddwd"  # 16-bit pair products, exact for any int8 weights
PAIRS = "pmaddubsw"  # u8 x s8 pair products (then pmaddwd by ones): only where pairs_fit
PAIR_LIMIT = 128  # 255 * 128 = 32640 < 2^15: the largest safe sum of a pair's weights
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class PackedWeights:
    """B centred and packed for the micro-kernel (int16, [N/NR panels, K/2 pairs, NR, 2]; for
    ``PAIRS`` int8, [N/NR panels, K/4 quads, NR, 4]) and the bias padded to the panels
    (int32); ``k`` and ``n`` are the true sizes."""

    data: np.ndarray
    bias: np.ndarray
    k: int
    n: int
    product: str = EXACT
    signed: bool | None = None  # for PAIRS: the activations' signedness the bias assumes


def centre(b: np.ndarray, b_zero_point=None) -> np.ndarray:
    """``b`` ([K, N] int8 or uint8 codes) minus ``b_zero_point`` (a scalar or one per column)
    as int16: the weights every product of the GEMM uses."""
    if b.ndim != 2 or b.dtype not in (np.int8, np.uint8):
        raise BackendError(f"the GEMM's weights must be [K, N] int8 or uint8 codes, got "
                           f"{list(b.shape)} {b.dtype}")
    centred = b.astype(np.int16)
    if b_zero_point is not None:
        centred -= np.asarray(b_zero_point, np.int16)
    return centred


def pairs_fit(centred: np.ndarray) -> bool:
    """Whether ``pmaddubsw`` is exact for any uint8 codes times these weights ([K, N], paired
    along K as the kernel pairs them: rows 2p and 2p+1, a zero after an odd K): every weight is
    an int8 and in every pair the positive weights sum to at most ``PAIR_LIMIT`` and the
    negative ones to at least ``-PAIR_LIMIT``, so each pair's sum of products lies within
    ``255 * [-128, 128]``, inside int16, and the instruction never saturates."""
    w = np.asarray(centred, np.int64)
    if w.size == 0:
        return True
    if w.min() < -128 or w.max() > 127:
        return False
    if w.shape[0] % 2:
        w = np.concatenate([w, np.zeros((1, w.shape[1]), np.int64)])
    pairs = w.reshape(-1, 2, w.shape[1])
    return bool(np.maximum(pairs, 0).sum(axis=1).max() <= PAIR_LIMIT
                and np.minimum(pairs, 0).sum(axis=1).min() >= -PAIR_LIMIT)


def choose_product(centred: list[np.ndarray], avx2: bool) -> str:
    """The product a layer's GEMM runs, decided at compile time from its centred weights (one
    [K, N] array per group): ``PAIRS`` where the target has AVX2 and ``pairs_fit`` proves every
    group's pairs safe, else ``EXACT``."""
    return PAIRS if avx2 and all(pairs_fit(c) for c in centred) else EXACT


def pack_weights(b: np.ndarray, b_zero_point=None, bias=None, nr: int = NR,
                 a_zero_point=None, product: str = EXACT,
                 signed: bool = False) -> PackedWeights:
    """``b`` ([K, N] int8 or uint8 codes) minus ``b_zero_point`` (a scalar or one per column)
    in the micro-kernel's layout for ``product``, with ``bias`` (a scalar or one per column,
    int32). An ``a_zero_point`` folds IntMatMul's ``- a_zero_point * sum_k b[k, n]`` into the
    bias as the lowering does, modulo 2^32 (the kernel's adds wrap, so only the accumulator
    must fit). ``PAIRS`` needs weights that ``pairs_fit`` and the activations' signedness
    (``signed``): int8 codes reach the instruction as ``a + 128``, so ``128 * sum_k w[k, n]``
    comes off the bias."""
    centred = centre(b, b_zero_point)
    k, n = b.shape
    full_bias = np.zeros(n, np.int64)
    if bias is not None:
        full_bias[:] = np.broadcast_to(np.asarray(bias, np.int32).reshape(-1), (n,))
    if a_zero_point is not None:
        full_bias -= int(a_zero_point) * b.sum(axis=0, dtype=np.int64)
    if product == EXACT:
        return _pack(centred, full_bias, nr, 2)
    if product != PAIRS:
        raise BackendError(f"no GEMM product {product!r}; there are {EXACT!r} and {PAIRS!r}")
    if not pairs_fit(centred):
        raise BackendError(f"{PAIRS} would saturate: a pair of these weights sums past "
                           f"+-{PAIR_LIMIT} (pairs_fit)")
    if signed:
        full_bias -= 128 * centred.sum(axis=0, dtype=np.int64)
    codes = centred.astype(np.int8)
    if not np.array_equal(codes, centred):  # pairs_fit checked the range: never here
        raise BackendError(f"{PAIRS}: centred weights outside int8")
    packed = _pack(codes, full_bias, nr, 4)
    return PackedWeights(packed.data, packed.bias, packed.k, packed.n, PAIRS, signed)


def pack_wide_weights(b: np.ndarray, nr: int = NR) -> PackedWeights:
    """``b`` ([K, N] int16 values, used as they are: no zero point, no bias) in the
    micro-kernel's layout, for the GEMM of int16 activations (``kernel_ir(..., wide=True)``)."""
    if b.ndim != 2 or b.dtype != np.int16:
        raise BackendError(f"the wide GEMM's weights must be [K, N] int16, got "
                           f"{list(b.shape)} {b.dtype}")
    return _pack(b, np.zeros(b.shape[1], np.int64), nr, 2)


def _pack(centred: np.ndarray, bias: np.ndarray, nr: int, per: int) -> PackedWeights:
    """``centred`` [K, N] (int16 pairs, ``per`` 2, or int8 quads, ``per`` 4) panel by panel and
    the int64 ``bias`` [N] (modulo 2^32: the kernel's adds wrap, so only the accumulator must
    fit) padded to the panels: ``[N/nr panels, K/per steps, nr, per]``, 4 * nr bytes a step."""
    k, n = centred.shape
    steps, panels = -(-k // per), -(-n // nr)
    padded = np.zeros((per * steps, panels * nr), centred.dtype)
    padded[:k, :n] = centred
    data = padded.reshape(steps, per, panels, nr).transpose(2, 0, 3, 1)
    full_bias = np.zeros(panels * nr, np.int64)
    full_bias[:n] = bias
    full_bias = (full_bias & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return PackedWeights(np.ascontiguousarray(data), full_bias, k, n)


@dataclass(frozen=True)
class Requantization:
    """The requantizing store's constants, per column padded to the panels: ``mult`` (int32
    ``M0`` for ``"fixed_point"``, float32 ``M`` for ``"float"``), ``shift`` and ``half``
    (int64 ``t`` and ``2^(t-1)``, zeros for ``"float"``); the clamp on the scaled value
    ``[low, high] = [qmin - zp, qmax - zp]``, the zero point ``zp`` and the codes' dtype;
    for ``"fixed_point"`` each column's accumulator clamp ``[acc_low, acc_high]`` (int32,
    ``_accumulator_bounds``)."""

    rounding: str
    mult: np.ndarray
    shift: np.ndarray
    half: np.ndarray
    acc_low: np.ndarray
    acc_high: np.ndarray
    low: int
    high: int
    zp: int
    dtype: np.dtype
    n: int


def requantization(multiplier, y_zero_point, qmin: int | None = None, qmax: int | None = None,
                   rounding: str = "fixed_point", n: int = 1, nr: int = NR) -> Requantization:
    """IntMatMul's rescale for ``n`` columns as the requantizing store runs it: ``multiplier``
    (real, a scalar or one per column), ``y_zero_point`` (an int8 or uint8 scalar: its dtype is
    the output's), the clamp ``[qmin, qmax]`` (the dtype's limits where None), ``rounding`` as
    ``fixed_point.rescale`` has it: ``M0``/``t`` from ``fixed_point.shared_multipliers`` per
    column."""
    zero_point = np.asarray(y_zero_point)
    if zero_point.dtype not in (np.int8, np.uint8) or zero_point.size != 1:
        raise BackendError(f"the requantizing GEMM's output zero point must be one int8 or "
                           f"uint8 code, got {zero_point.dtype} {list(zero_point.shape)}")
    if rounding not in ROUNDINGS:
        raise BackendError(f"no requantizing GEMM for the rounding {rounding!r}")
    info = np.iinfo(zero_point.dtype)
    lo = int(info.min) if qmin is None else int(qmin)
    hi = int(info.max) if qmax is None else int(qmax)
    if not info.min <= lo <= hi <= info.max:
        raise BackendError(f"the output clamp [{lo}, {hi}] must lie within the "
                           f"{zero_point.dtype} codes")
    ms = np.broadcast_to(np.asarray(multiplier, np.float64).reshape(-1), (n,))
    width = -(-n // nr) * nr
    mult, shift, half = (np.zeros(width, t) for t in (np.int32, np.int64, np.int64))
    acc_low, acc_high = np.full(width, _INT32.min, np.int32), np.full(width, _INT32.max, np.int32)
    zp = int(zero_point)
    if rounding == "float":
        mult = mult.view(np.float32)
        mult[:n] = ms.astype(np.float32)
    else:  # per distinct multiplier (columns often share them), then to the columns
        distinct, where = np.unique(ms, return_inverse=True)
        try:
            (m0,), t = fixed_point.shared_multipliers([distinct])
        except ValueError as exc:
            raise BackendError(f"the requantizing GEMM's multipliers: {exc}") from None
        bounds = np.array([_accumulator_bounds(int(m), int(s), lo - zp, hi - zp)
                           for m, s in zip(m0, t, strict=True)], np.int32).reshape(-1, 2)
        where = where.reshape(-1)
        mult[:n], shift[:n] = m0[where], t[where]
        half[:n] = np.where(t > 0, np.left_shift(1, np.maximum(t - 1, 0)), 0)[where]
        acc_low[:n], acc_high[:n] = bounds[where].T
    return Requantization(rounding, mult, shift, half, acc_low, acc_high, lo - zp, hi - zp,
                          zp, zero_point.dtype, n)


def _accumulator_bounds(m0: int, t: int, low: int, high: int) -> tuple[int, int]:
    """The int32 clamp ``[a, b]`` of a column's accumulator that changes no output: with
    ``s(acc) = (acc * m0 + half) >> t`` (monotone), ``a`` is the largest accumulator with
    ``s <= low`` and ``b`` the smallest with ``s >= high`` (each clipped to int32; ``half``
    is ``2^(t-1)``), so every
    accumulator below ``a`` (above ``b``) clamps to ``low`` (``high``) as ``a`` (``b``) does.
    Within ``[a, b]``, ``s`` lies within ``[low - m0 / 2^t - 1, high + m0 / 2^t + 1]``, in
    int32 since the multiplier is below 2^30."""
    if m0 == 0:
        return int(_INT32.min), int(_INT32.max)
    half = 1 << (t - 1)
    # s >= high  <=>  acc * m0 >= high * 2^t - half
    # s <= low   <=>  acc * m0 < (low + 1) * 2^t - half
    smallest_high = -((half - (high << t)) // m0)
    largest_low = ((((low + 1) << t) - half) - 1) // m0
    return (min(max(largest_low, int(_INT32.min)), int(_INT32.max)),
            min(max(smallest_high, int(_INT32.min)), int(_INT32.max)))


PMADDWD = {True: ("llvm.x86.avx2.pmadd.wd", 16), False: ("llvm.x86.sse2.pmadd.wd", 8)}


def pair_product(out: str, a: str, b: str, avx2: bool) -> list[str]:
    """``out = a . b`` by int16 pairs: lane i of <8 x i32> is ``a[2i]*b[2i] + a[2i+1]*b[2i+1]``,
    exact (``pmaddwd``: one ymm with AVX2, two xmm halves with SSE2, which every x86-64 has)."""
    fn, width = PMADDWD[avx2]
    if avx2:
        return [f"{out} = call <{LANES} x i32> @{fn}(<16 x i16> {a}, <16 x i16> {b})"]
    lines = []
    for half in range(2):
        mask = ", ".join(f"i32 {half * width + i}" for i in range(width))
        lines += [f"{out}.{x[1:]}{half} = shufflevector <16 x i16> {x}, <16 x i16> poison, "
                  f"<{width} x i32> <{mask}>" for x in (a, b)]
        lines.append(f"{out}.{half} = call <4 x i32> @{fn}(<{width} x i16> {out}.{a[1:]}{half}, "
                     f"<{width} x i16> {out}.{b[1:]}{half})")
    both = ", ".join(f"i32 {i}" for i in range(LANES))
    return lines + [f"{out} = shufflevector <4 x i32> {out}.0, <4 x i32> {out}.1, "
                    f"<{LANES} x i32> <{both}>"]


PMADDUBSW = "llvm.x86.avx2.pmadd.ub.sw"
_ONES = "<" + ", ".join(["i16 1"] * 16) + ">"


def quad_product(out: str, a: str, b: str) -> list[str]:
    """``out = a . b`` by byte quads (AVX2): lane i of <8 x i32> is the sum of
    ``a[4i + j] * b[4i + j]`` over j, ``a`` uint8 and ``b`` int8: ``pmaddubsw`` forms the pair
    sums in int16 (exact only where ``pairs_fit``), ``pmaddwd`` by ones adds them in int32."""
    return [f"{out}.t = call <16 x i16> @{PMADDUBSW}(<32 x i8> {a}, <32 x i8> {b})",
            f"{out} = call <{LANES} x i32> @{PMADDWD[True][0]}(<16 x i16> {out}.t, "
            f"<16 x i16> {_ONES})"]


# -- the requantizing store ----------------------------------------------------------------------
#
# Per column n, with the requantization's constants (``Requantization``):
#   "fixed_point": s = (acc * M0[n] + half[n]) >> t[n] in int64 (M0 = t = half = 0 flushes)
#   "float":       s = rint(float32(acc) * float32(M[n])) in float32, half to even
# then y = clamp(s + zp, lo, hi) computed as clamp(s, lo - zp, hi - zp) + zp: the same integer,
# and in the float rounding the clamp of an integral float by integral bounds is exact, so it
# runs before the conversion (which is then always defined). The last add is done on the byte
# (modulo 256): the result is within [lo, hi], so its byte is the code's byte, int8 or uint8.
# In "fixed_point" the accumulator is first clamped to the column's [acc_low, acc_high]
# (``_accumulator_bounds``): s is monotone in acc, so the clamped result is unchanged, and s
# then fits in int32, so the output clamp runs on int32 lanes (AVX2 has no int64 min/max).

ROUNDINGS = ("fixed_point", "float")
_REQUANTIZE_ARGS = ", ".join(
    [f"ptr noalias nocapture readonly %{p}" for p in ("mult", "shift", "half", "acclo", "acchi")]
    + ["i64 %low", "i64 %high", "i64 %zp"])


def _params(rounding: str | None) -> str:
    """The requantizing kernel's extra parameters (after the workspace)."""
    return "" if rounding is None else ",\n    " + _REQUANTIZE_ARGS


def _args(rounding: str | None) -> str:
    """The extra arguments a call passes on."""
    return "" if rounding is None else (", ptr %mult, ptr %shift, ptr %half, ptr %acclo, "
                                        "ptr %acchi, i64 %low, i64 %high, i64 %zp")


def _splat(out: str, vector: str, scalar: str) -> list[str]:
    return [f"{out}.i = insertelement {vector} poison, {scalar}, i64 0",
            f"{out} = shufflevector {vector} {out}.i, {vector} poison, "
            f"<{LANES} x i32> zeroinitializer"]


def _splats(rounding: str | None) -> list[str]:
    """The clamp bounds (on the scaled value) and the zero point as vectors."""
    if rounding is None:
        return []
    lines = ["%zp.b = trunc i64 %zp to i8", *_splat("%zp.v", f"<{LANES} x i8>", "i8 %zp.b")]
    if rounding == "fixed_point":
        for bound in ("low", "high"):
            lines.append(f"%{bound}.n = trunc i64 %{bound} to i32")
            lines += _splat(f"%{bound}.v", f"<{LANES} x i32>", f"i32 %{bound}.n")
    else:
        for bound in ("low", "high"):
            lines.append(f"%{bound}.f = sitofp i64 %{bound} to float")
            lines += _splat(f"%{bound}.v", f"<{LANES} x float>", f"float %{bound}.f")
    return ["  " + line for line in lines]


def _column_constants(rounding: str, h: int) -> list[str]:
    """Vector ``h``'s columns' multipliers (and shifts and rounding halves)."""
    if rounding == "float":
        return [f"  %mult{h}.at = getelementptr inbounds float, ptr %mult, i64 %col{h}",
                f"  %mult{h} = load <{LANES} x float>, ptr %mult{h}.at, align 4"]
    wide = f"<{LANES} x i64>"
    return [f"  %mult{h}.at = getelementptr inbounds i32, ptr %mult, i64 %col{h}",
            f"  %mult{h}.n = load <{LANES} x i32>, ptr %mult{h}.at, align 4",
            f"  %mult{h} = sext <{LANES} x i32> %mult{h}.n to {wide}",
            f"  %shift{h}.at = getelementptr inbounds i64, ptr %shift, i64 %col{h}",
            f"  %shift{h} = load {wide}, ptr %shift{h}.at, align 8",
            f"  %half{h}.at = getelementptr inbounds i64, ptr %half, i64 %col{h}",
            f"  %half{h} = load {wide}, ptr %half{h}.at, align 8",
            f"  %acclo{h}.at = getelementptr inbounds i32, ptr %acclo, i64 %col{h}",
            f"  %acclo{h} = load <{LANES} x i32>, ptr %acclo{h}.at, align 4",
            f"  %acchi{h}.at = getelementptr inbounds i32, ptr %acchi, i64 %col{h}",
            f"  %acchi{h} = load <{LANES} x i32>, ptr %acchi{h}.at, align 4"]


def _requantize(rounding: str, r: int, h: int) -> list[str]:
    """``%out{r}_{h}`` (bytes): the accumulators ``%done{r}_{h}`` requantized."""
    x, v = f"{r}_{h}", f"<{LANES} x i32>"
    if rounding == "float":
        f = f"<{LANES} x float>"
        lines = [f"%f{x} = sitofp {v} %done{x} to {f}",
                 f"%fm{x} = fmul {f} %f{x}, %mult{h}",
                 f"%fr{x} = call {f} @llvm.rint.v{LANES}f32({f} %fm{x})",
                 f"%fl{x} = call {f} @llvm.maxnum.v{LANES}f32({f} %fr{x}, {f} %low.v)",
                 f"%fh{x} = call {f} @llvm.minnum.v{LANES}f32({f} %fl{x}, {f} %high.v)",
                 f"%s{x} = fptosi {f} %fh{x} to {v}",
                 f"%b{x} = trunc {v} %s{x} to <{LANES} x i8>"]
    else:
        w = f"<{LANES} x i64>"
        lines = [f"%al{x} = call {v} @llvm.smax.v{LANES}i32({v} %done{x}, {v} %acclo{h})",
                 f"%ah{x} = call {v} @llvm.smin.v{LANES}i32({v} %al{x}, {v} %acchi{h})",
                 f"%w{x} = sext {v} %ah{x} to {w}",
                 f"%wm{x} = mul nsw {w} %w{x}, %mult{h}",
                 f"%wr{x} = add nsw {w} %wm{x}, %half{h}",
                 f"%ws{x} = ashr {w} %wr{x}, %shift{h}",
                 f"%s{x} = trunc {w} %ws{x} to {v}",
                 f"%sl{x} = call {v} @llvm.smax.v{LANES}i32({v} %s{x}, {v} %low.v)",
                 f"%sh{x} = call {v} @llvm.smin.v{LANES}i32({v} %sl{x}, {v} %high.v)",
                 f"%b{x} = trunc {v} %sh{x} to <{LANES} x i8>"]
    lines.append(f"%out{x} = add <{LANES} x i8> %b{x}, %zp.v")
    return ["  " + line for line in lines]


_DECLARATIONS = {None: "", "fixed_point": f"""
declare <{LANES} x i32> @llvm.smax.v{LANES}i32(<{LANES} x i32>, <{LANES} x i32>)
declare <{LANES} x i32> @llvm.smin.v{LANES}i32(<{LANES} x i32>, <{LANES} x i32>)""", "float": f"""
declare <{LANES} x float> @llvm.rint.v{LANES}f32(<{LANES} x float>)
declare <{LANES} x float> @llvm.maxnum.v{LANES}f32(<{LANES} x float>, <{LANES} x float>)
declare <{LANES} x float> @llvm.minnum.v{LANES}f32(<{LANES} x float>, <{LANES} x float>)"""}


def _rows_ir(name: str, ext: str | None, avx2: bool, mr: int, nr: int,
             rounding: str | None, row_bias: bool = False, product: str = EXACT) -> str:
    """``@name``: ``mr`` whole rows of C (``n >= 1``): A's rows widened to int16 into the
    workspace (``ext`` the widening; None: A is int16 already, rows ``lda`` int16 apart and K
    even, read in place; ``PAIRS``: copied as uint8 codes, ``ext`` "xor" for int8 ones, K
    padded with zeros to a multiple of 4), then each column panel through the ``mr x nr``
    register tile (a step is a k-pair, or a k-quad for ``PAIRS``),
    seeded with the bias of its columns (``row_bias``: of its rows, ``bias`` at the first
    row), stored as int32 (``rounding`` None) or requantized to bytes (``_requantize``)."""
    vecs = nr // LANES
    v = f"<{LANES} x i32>"
    et = "i32" if rounding is None else "i8"  # an element of C
    ov = f"<{LANES} x {et}>"
    size = 4 if rounding is None else 1
    acc = [(r, h) for r in range(mr) for h in range(vecs)]
    quads = product == PAIRS
    bv = "<32 x i8>" if quads else "<16 x i16>"  # one step of a column vector's weights
    step = []
    for h in range(vecs):
        step += [f"  %b{h}.at = getelementptr inbounds {bv}, ptr %bpanel.p, i64 {h}",
                 f"  %b{h} = load {bv}, ptr %b{h}.at, align {1 if quads else 2}"]
    for r in range(mr):
        step += [f"  %a{r}.at = getelementptr inbounds i32, ptr %apairs{r}, i64 %q",
                 f"  %a{r}.s = load i32, ptr %a{r}.at, align 4",
                 f"  %a{r}.i = insertelement {v} poison, i32 %a{r}.s, i64 0",
                 f"  %a{r}.v = shufflevector {v} %a{r}.i, {v} poison, {v} zeroinitializer",
                 f"  %a{r} = bitcast {v} %a{r}.v to {bv}"]
        for h in range(vecs):
            lines = (quad_product(f"%p{r}_{h}", f"%a{r}", f"%b{h}") if quads
                     else pair_product(f"%p{r}_{h}", f"%a{r}", f"%b{h}", avx2))
            step += ["  " + line for line in lines]
            step.append(f"  %next{r}_{h} = add {v} %acc{r}_{h}, %p{r}_{h}")
    init = []
    for h in range(vecs):
        init.append(f"  %col{h} = add nuw nsw i64 %n0, {h * LANES}")
        if not row_bias:
            init += [f"  %bias{h}.at = getelementptr inbounds i32, ptr %bias, i64 %col{h}",
                     f"  %bias{h} = load {v}, ptr %bias{h}.at, align 4"]
    if row_bias:
        for r in range(mr):
            init += [f"  %rbias{r}.at = getelementptr inbounds i32, ptr %bias, i64 {r}",
                     f"  %rbias{r}.s = load i32, ptr %rbias{r}.at, align 4",
                     *("  " + line for line in _splat(f"%rbias{r}", v, f"i32 %rbias{r}.s"))]

    def seed(r: int, h: int) -> str:
        return f"%rbias{r}" if row_bias else f"%bias{h}"

    phis = [f"  %acc{r}_{h} = phi {v} [ {seed(r, h)}, %npanel ], [ %next{r}_{h}, %kstep ]"
            for r, h in acc]
    done = [f"  %done{r}_{h} = phi {v} [ {seed(r, h)}, %npanel ], [ %next{r}_{h}, %kstep ]"
            for r, h in acc]
    if rounding is None:
        result = [f"  %out{r}_{h} = bitcast {v} %done{r}_{h} to {v}" for r, h in acc]
    else:
        result = [line for h in range(vecs) for line in _column_constants(rounding, h)]
        result += [line for r, h in acc for line in _requantize(rounding, r, h)]
    full_store, tile_store = [], []
    for r, h in acc:
        full_store += [
            f"  %c{r}_{h}.i = add nsw i64 %crow{r}, %col{h}",
            f"  %c{r}_{h}.at = getelementptr inbounds {et}, ptr %c, i64 %c{r}_{h}.i",
            f"  store {ov} %out{r}_{h}, ptr %c{r}_{h}.at, align {size}"]
        tile_store += [
            f"  %t{r}_{h}.at = getelementptr inbounds {et}, ptr %tile, i64 {r * nr + h * LANES}",
            f"  store {ov} %out{r}_{h}, ptr %t{r}_{h}.at, align {size}"]
    crows = []
    for r in range(mr):
        crows.append(f"  %crow{r} = mul nsw i64 %ldc, {r}")
        if ext is None:
            crows += [f"  %apairs{r}.o = mul nsw i64 %lda, {r}",
                      f"  %apairs{r} = getelementptr inbounds i16, ptr %a, i64 %apairs{r}.o"]
        else:
            crows += [f"  %apairs{r}.o = mul nuw nsw i64 %pairs, {r}",
                      f"  %apairs{r} = getelementptr inbounds i32, ptr %work, i64 %apairs{r}.o"]
    first = "packrow" if ext is not None else "rowsdone"
    per = 4 if quads else 2  # k per step
    body = "\n".join
    return f"""
define internal void @{name}(ptr noalias nocapture readonly %a, i64 %lda,
                             ptr noalias nocapture readonly %packed,
                             ptr noalias nocapture readonly %bias, ptr noalias nocapture %c,
                             i64 %ldc, i64 %n, i64 %k,
                             ptr noalias nocapture %work{_params(rounding)}) {{
entry:
  %tile = alloca [{mr * nr} x {et}], align 32
{body(_splats(rounding))}
  %k.up = add nuw nsw i64 %k, {per - 1}
  %pairs = udiv i64 %k.up, {per}
  %n.up = add nuw nsw i64 %n, {nr - 1}
  %panels = udiv i64 %n.up, {nr}
  %kpad = mul nuw nsw i64 %pairs, {per}
  %some.k = icmp sgt i64 %k, 0
  br label %{first}
{"" if ext is None else _copy_rows_ir(ext, mr, quads)}
rowsdone:
{body(crows)}
  br label %npanel

npanel:
  %j = phi i64 [ 0, %rowsdone ], [ %j.next, %npanel.end ]
  %n0 = mul nuw nsw i64 %j, {nr}
{body(init)}
  %bpanel.o = mul nuw nsw i64 %j, %pairs
  %bpanel = getelementptr inbounds <{2 * nr} x i16>, ptr %packed, i64 %bpanel.o
  %any.k = icmp sgt i64 %pairs, 0
  br i1 %any.k, label %kstep, label %store

; the micro-kernel: one k-pair per step
kstep:
  %q = phi i64 [ 0, %npanel ], [ %q.next, %kstep ]
{body(phis)}
  %bpanel.p = getelementptr inbounds <{2 * nr} x i16>, ptr %bpanel, i64 %q
{body(step)}
  %q.next = add nuw nsw i64 %q, 1
  %q.more = icmp slt i64 %q.next, %pairs
  br i1 %q.more, label %kstep, label %store

store:
{body(done)}
{body(result)}
  %n.left = sub nsw i64 %n, %n0
  %full = icmp sge i64 %n.left, {nr}
  br i1 %full, label %storefull, label %storetile

storefull:
{body(full_store)}
  br label %npanel.end

; the last column panel: through the stack, then only the columns inside C
storetile:
{body(tile_store)}
  br label %copyrow

copyrow:
  %cr = phi i64 [ 0, %storetile ], [ %cr.next, %copyrow.end ]
  %cr.o = mul nsw i64 %cr, %ldc
  %cr.c = add nsw i64 %cr.o, %n0
  %cr.t = mul nuw nsw i64 %cr, {nr}
  br label %copycol

copycol:
  %cc = phi i64 [ 0, %copyrow ], [ %cc.next, %copycol ]
  %cc.ti = add nuw nsw i64 %cr.t, %cc
  %cc.tat = getelementptr inbounds {et}, ptr %tile, i64 %cc.ti
  %cc.v = load {et}, ptr %cc.tat, align {size}
  %cc.ci = add nsw i64 %cr.c, %cc
  %cc.cat = getelementptr inbounds {et}, ptr %c, i64 %cc.ci
  store {et} %cc.v, ptr %cc.cat, align {size}
  %cc.next = add nuw nsw i64 %cc, 1
  %cc.more = icmp slt i64 %cc.next, %n.left
  br i1 %cc.more, label %copycol, label %copyrow.end

copyrow.end:
  %cr.next = add nuw nsw i64 %cr, 1
  %cr.more = icmp slt i64 %cr.next, {mr}
  br i1 %cr.more, label %copyrow, label %npanel.end

npanel.end:
  %j.next = add nuw nsw i64 %j, 1
  %j.more = icmp slt i64 %j.next, %panels
  br i1 %j.more, label %npanel, label %exit

exit:
  ret void
}}
"""


def _copy_rows_ir(ext: str, mr: int, quads: bool) -> str:
    """The blocks ``packrow..packtail`` of ``_rows_ir``: the ``mr`` rows of A into the
    workspace, widened (``ext``) to int16, or for ``quads`` as uint8 codes (``ext`` "xor":
    int8 codes plus 128), each padded with zeros to ``kpad``, then on to ``rowsdone``."""
    et = "i8" if quads else "i16"
    convert = (f"%x.w = {ext} i8 %x to i16" if not quads
               else "%x.w = xor i8 %x, -128" if ext == "xor" else "%x.w = or i8 %x, 0")
    return f"""
; A's rows into the workspace, row r at work[r * kpad] ({et}), zeros from k to kpad
packrow:
  %r = phi i64 [ 0, %entry ], [ %r.next, %packtail ]
  %arow.o = mul nsw i64 %r, %lda
  %arow = getelementptr inbounds i8, ptr %a, i64 %arow.o
  %wrow.o = mul nuw nsw i64 %r, %kpad
  %wrow = getelementptr inbounds {et}, ptr %work, i64 %wrow.o
  br i1 %some.k, label %packcode, label %packpad.check

packcode:
  %i = phi i64 [ 0, %packrow ], [ %i.next, %packcode ]
  %x.at = getelementptr inbounds i8, ptr %arow, i64 %i
  %x = load i8, ptr %x.at, align 1
  {convert}
  %w.at = getelementptr inbounds {et}, ptr %wrow, i64 %i
  store {et} %x.w, ptr %w.at, align 1
  %i.next = add nuw nsw i64 %i, 1
  %i.more = icmp slt i64 %i.next, %k
  br i1 %i.more, label %packcode, label %packpad.check

packpad.check:
  %some.pad = icmp slt i64 %k, %kpad
  br i1 %some.pad, label %packpad, label %packtail

packpad:
  %z = phi i64 [ %k, %packpad.check ], [ %z.next, %packpad ]
  %z.at = getelementptr inbounds {et}, ptr %wrow, i64 %z
  store {et} 0, ptr %z.at, align 1
  %z.next = add nuw nsw i64 %z, 1
  %z.more = icmp slt i64 %z.next, %kpad
  br i1 %z.more, label %packpad, label %packtail

packtail:
  %r.next = add nuw nsw i64 %r, 1
  %r.more = icmp slt i64 %r.next, {mr}
  br i1 %r.more, label %packrow, label %rowsdone

"""


def _row_loop(label: str, first: str, last: str, mr: int, rows_fn: str, after: str,
              rounding: str | None, wide: bool, row_bias: bool) -> str:
    """IR that calls ``rows_fn`` for the rows ``[first, last)`` by steps of ``mr``."""
    bias, offset = "%bias", ""
    if row_bias:  # the bias of the first row of the step
        bias = f"%{label}.bias"
        offset = f"{bias} = getelementptr inbounds i32, ptr %bias, i64 %{label}.i"
    return f"""
{label}:
  %{label}.i = phi i64 [ {first}, %{label}.check ], [ %{label}.next, %{label} ]
  %{label}.ao = mul nsw i64 %{label}.i, %lda
  %{label}.a = getelementptr inbounds {"i16" if wide else "i8"}, ptr %a, i64 %{label}.ao
  %{label}.co = mul nsw i64 %{label}.i, %ldc
  %{label}.c = getelementptr inbounds {"i32" if rounding is None else "i8"}, ptr %c, i64 %{label}.co
  {offset}
  call void @{rows_fn}(ptr %{label}.a, i64 %lda, ptr %packed, ptr {bias}, ptr %{label}.c,
                       i64 %ldc, i64 %n, i64 %k, ptr %work{_args(rounding)})
  %{label}.next = add nuw nsw i64 %{label}.i, {mr}
  %{label}.more = icmp slt i64 %{label}.next, {last}
  br i1 %{label}.more, label %{label}, label %{after}
"""


def kernel_ir(name: str, signed: bool, avx2: bool, mr: int = MR, nr: int = NR,
              rounding: str | None = None, wide: bool = False, row_bias: bool = False,
              product: str = EXACT) -> str:
    """The GEMM ``name`` for int8 (``signed``) or uint8 activation codes, tile ``mr x nr``,
    with AVX2 or with SSE2 only (``wide``: for int16 activations, A [m, k] int16 4-byte
    aligned with an even row stride ``lda`` in int16 elements and an even ``k``, read in place
    as int32 pairs: ``signed`` is unused and the workspace too):
    ``void name(ptr a, i64 lda, ptr packed, ptr bias, ptr c, i64 ldc, i64 m, i64 n, i64 k,
    ptr work)`` with A [m, k] bytes (row stride ``lda``), C [m, n] int32 (row stride ``ldc``),
    the packed weights and bias of ``pack_weights(..., nr=nr)`` and a workspace of
    ``workspace_bytes(k, mr)`` bytes. Whole panels of ``mr`` rows run through the ``mr x nr``
    tile, the last ``m % mr`` rows one by one through a ``1 x nr`` tile (no row is padded).

    With a ``rounding`` (one of ``ROUNDINGS``) the tile is requantized as it is stored: C is
    [m, n] bytes (int8 or uint8 codes, row stride ``ldc`` bytes) and the call takes the
    ``Requantization``'s constants after the workspace:
    ``ptr mult, ptr shift, ptr half, i64 low, i64 high, i64 zp``.

    ``row_bias`` (int32 C only): ``bias`` holds one int32 per row of C (``m`` of them) instead
    of the packed weights' per-column bias, the GEMM ``C = bias[:, None] + A x B`` of a
    convolution whose activations are B (``pointwise.py``).

    ``product`` ``PAIRS`` (AVX2, byte activations): the u8 x s8 pair instruction on weights
    from ``pack_weights(..., product=PAIRS, signed=signed)``, whose pairs ``pairs_fit``; it
    takes 4 k per step instead of 2 and is otherwise the same kernel."""
    if product not in (EXACT, PAIRS):
        raise BackendError(f"no GEMM product {product!r}; there are {EXACT!r} and {PAIRS!r}")
    if product == PAIRS and (wide or not avx2):
        raise BackendError(f"{PAIRS} needs AVX2 and byte activations")
    if row_bias and rounding is not None:
        raise BackendError("a GEMM seeded by rows stores int32 only")
    if nr % LANES or mr < 1:
        raise BackendError(f"the tile {mr}x{nr}: its width must be a multiple of {LANES}")
    if rounding is not None and rounding not in ROUNDINGS:
        raise BackendError(f"no requantizing GEMM for the rounding {rounding!r}")
    if product == PAIRS:
        ext = "xor" if signed else "copy"
    else:
        ext = None if wide else "sext" if signed else "zext"
    fn, width = PMADDWD[avx2]
    tiles, single = f"{name}.rows{mr}", f"{name}.rows1"
    helpers = _rows_ir(tiles, ext, avx2, mr, nr, rounding, row_bias, product)
    if mr > 1:
        helpers += _rows_ir(single, ext, avx2, 1, nr, rounding, row_bias, product)
    pairs = (f"declare <16 x i16> @{PMADDUBSW}(<32 x i8>, <32 x i8>)" if product == PAIRS
             else "")
    return f"""
declare <{LANES * width // 16} x i32> @{fn}(<{width} x i16>, <{width} x i16>)
{pairs}
{_DECLARATIONS[rounding]}
{helpers}
define void @{name}(ptr noalias nocapture readonly %a, i64 %lda, ptr noalias nocapture readonly
                    %packed, ptr noalias nocapture readonly %bias, ptr noalias nocapture %c,
                    i64 %ldc, i64 %m, i64 %n, i64 %k,
                    ptr noalias nocapture %work{_params(rounding)}) noinline {{
entry:
  %some.n = icmp sgt i64 %n, 0
  %tiled.n = sdiv i64 %m, {mr}
  %tiled = mul nsw i64 %tiled.n, {mr}
  br label %tiles.check

tiles.check:
  %some.tiles = icmp sgt i64 %tiled, 0
  %go.tiles = and i1 %some.n, %some.tiles
  br i1 %go.tiles, label %tiles, label %rest.check
{_row_loop("tiles", "0", "%tiled", mr, tiles, "rest.check", rounding, wide, row_bias)}
rest.check:
  %some.rest = icmp slt i64 %tiled, %m
  %go.rest = and i1 %some.n, %some.rest
  br i1 %go.rest, label %rest, label %exit
{_row_loop("rest", "%tiled", "%m", 1, single, "exit", rounding, wide, row_bias)}
exit:
  ret void
}}
"""


def workspace_bytes(k: int, mr: int = MR, product: str = EXACT) -> int:
    """The workspace one call needs: a panel of ``mr`` rows of A widened to int16 (K made
    even), or for ``PAIRS`` as bytes (K made a multiple of 4)."""
    per = 4 if product == PAIRS else 2
    return max(1, -(-k // per)) * mr * 4


_P = ctypes.c_void_p
_I64 = ctypes.c_int64


def _call(fn: ctypes._CFuncPtr, _operands: tuple, *pointers_and_sizes) -> None:
    """``fn(*pointers_and_sizes)``; ``_operands`` (the arrays behind the pointers) are held by
    the ``partial`` that calls this, so they live as long as the bound call."""
    fn(*pointers_and_sizes)


class Gemm:
    """The compiled GEMM for int8 or uint8 activation codes on one ``Jit``: int32 output, or
    with a ``rounding`` the requantizing one (int8/uint8 codes out); ``wide``: for int16
    activations (int32 out, weights from ``pack_wide_weights``, an even K); ``product``
    ``PAIRS``: the u8 x s8 pair instruction (weights packed for it)."""

    def __init__(self, jit: Jit, signed: bool, mr: int = MR, nr: int = NR,
                 rounding: str | None = None, wide: bool = False, product: str = EXACT):
        if wide and rounding is not None:
            raise BackendError("the GEMM of int16 activations stores int32 only")
        self.jit = jit  # the machine code lives as long as its engine
        self.signed, self.mr, self.nr, self.rounding = signed, mr, nr, rounding
        self.wide, self.product = wide, product
        source = "i16" if wide else "s8" if signed else "u8"
        self.name = (f"qc_gemm_{source}_{product}_{mr}x{nr}"
                     + ("" if rounding is None else f"_{rounding}"))
        avx2 = jit.target.has("avx2")
        self.module = jit.add(kernel_ir(self.name, signed, avx2, mr, nr, rounding, wide,
                                        product=product), self.name)
        extra = () if rounding is None else (_P, _P, _P, _P, _P, _I64, _I64, _I64)
        self._fn = jit.function(self.name, None, _P, _I64, _P, _P, _P, _I64, _I64, _I64, _I64,
                                _P, *extra)

    def bind(self, a: np.ndarray, weights: PackedWeights, out: np.ndarray,
             work: np.ndarray | None = None,
             requant: Requantization | None = None) -> Callable[[], None]:
        """``out = bias + a @ (b - b_zero_point)`` (int32 [M, N], rows may be strided) for ``a``
        [M, K] (int8 if signed, else uint8; rows may be strided) and weights from
        ``pack_weights(..., nr=self.nr)``, as a call without arguments: operands checked and
        pointers taken once (the call keeps the arrays alive). The requantizing GEMM needs
        ``requant`` (of its rounding, ``requantization(..., n=N, nr=self.nr)``) and stores
        its codes into ``out`` ([M, N] of ``requant.dtype``, rows may be strided)."""
        expected = np.dtype(np.int16 if self.wide else np.int8 if self.signed else np.uint8)
        m = a.shape[0] if a.ndim == 2 else -1
        if (a.dtype != expected or a.ndim != 2 or a.shape[1] != weights.k
                or (a.size and (a.strides[1] != a.itemsize or a.strides[0] % a.itemsize))):
            raise BackendError(f"{self.name}: A must be [M, {weights.k}] {expected} with "
                               f"contiguous rows, got {list(a.shape)} {a.dtype}")
        if self.wide and (weights.k % 2 or (m > 1 and a.strides[0] // a.itemsize % 2)
                          or a.ctypes.data % 4):
            raise BackendError(f"{self.name}: K and A's row stride must be even and A 4-byte "
                               f"aligned for int16 activations (pairs are read as aligned "
                               f"int32), not {weights.k}, {a.strides[0] // a.itemsize} and "
                               f"an address {a.ctypes.data % 4} past 4")
        if weights.data.shape[2] != self.nr:
            raise BackendError(f"{self.name}: weights packed for a tile width of "
                               f"{weights.data.shape[2]}, not {self.nr}")
        packed = np.dtype(np.int8 if self.product == PAIRS else np.int16)
        if weights.data.dtype != packed or weights.product != self.product:
            raise BackendError(f"{self.name}: weights packed as {weights.data.dtype} for "
                               f"{weights.product}, not {packed} for {self.product} "
                               f"(pack_weights(..., product={self.product!r}))")
        if self.product == PAIRS and weights.signed != self.signed:
            raise BackendError(f"{self.name}: weights packed for "
                               f"{'int8' if weights.signed else 'uint8'} activations, not "
                               f"{'int8' if self.signed else 'uint8'} (pack_weights(..., "
                               f"signed={self.signed}))")
        extra = self._requant_args(requant, weights.n)
        c_dtype = np.dtype(np.int32) if requant is None else requant.dtype
        size = c_dtype.itemsize
        if (out.dtype != c_dtype or out.shape != (m, weights.n)
                or (out.size and (out.strides[1] != size or out.strides[0] % size))):
            raise BackendError(f"{self.name}: C must be [{m}, {weights.n}] {c_dtype} with "
                               f"contiguous rows, got {list(out.shape)} {out.dtype}")
        need = workspace_bytes(weights.k, self.mr, self.product)
        if work is None:
            work = np.empty(need, np.uint8)
        if work.nbytes < need:
            raise BackendError(f"{self.name}: the workspace needs {need} bytes, not "
                               f"{work.nbytes}")
        return partial(_call, self._fn, (a, weights, out, work, requant), a.ctypes.data,
                       a.strides[0] // a.itemsize, weights.data.ctypes.data,
                       weights.bias.ctypes.data,
                       out.ctypes.data, out.strides[0] // size, m, weights.n, weights.k,
                       work.ctypes.data, *extra)

    def _requant_args(self, requant: Requantization | None, n: int) -> tuple:
        """The requantizing store's arguments (none for the int32 GEMM), checked."""
        if self.rounding is None:
            if requant is not None:
                raise BackendError(f"{self.name}: this GEMM stores int32; it takes no "
                                   f"requantization")
            return ()
        if requant is None or requant.rounding != self.rounding:
            raise BackendError(f"{self.name}: needs a requantization with the rounding "
                               f"{self.rounding!r}, got "
                               f"{None if requant is None else requant.rounding!r}")
        if requant.n != n or requant.mult.size != -(-n // self.nr) * self.nr:
            raise BackendError(f"{self.name}: a requantization for {requant.n} columns padded "
                               f"to {requant.mult.size}, not {n} columns in panels of "
                               f"{self.nr}")
        return (requant.mult.ctypes.data, requant.shift.ctypes.data, requant.half.ctypes.data,
                requant.acc_low.ctypes.data, requant.acc_high.ctypes.data, requant.low,
                requant.high, requant.zp)

    def __call__(self, a: np.ndarray, weights: PackedWeights,
                 requant: Requantization | None = None) -> np.ndarray:
        """``bias + a @ (b - b_zero_point)`` in int32 [M, N], or requantized by ``requant``
        into its codes (see ``bind``)."""
        dtype = np.int32 if requant is None else requant.dtype
        out = np.empty((a.shape[0], weights.n), dtype)
        self.bind(np.ascontiguousarray(a), weights, out, requant=requant)()
        return out


def declaration(name: str, rounding: str | None = None) -> str:
    """The ``declare`` line of the GEMM ``name`` of ``kernel_ir(..., rounding=rounding)``, for
    a kernel that calls it."""
    extra = "" if rounding is None else ", ptr, ptr, ptr, ptr, ptr, i64, i64, i64"
    return f"declare void @{name}(ptr, i64, ptr, ptr, ptr, i64, i64, i64, i64, ptr{extra})"
