"""``IntConv`` (1-D and 2-D, NCHW) as an im2col GEMM over the packed weights, with its
requantizing store (multiplier per channel, the fused residual, clamp) in the same call.

Per item (an image, a group and a panel of ``PIXELS`` output pixels) the kernel gathers the
panel's windows into a scratch matrix ``[pixels, K]`` (K = C/group * prod(kernel), taps in W's
own order; pads read as ``x_zero_point``), runs the exact int8 GEMM of ``gemm.py`` over the
group's packed weights (centred by ``w_zero_point``, the bias in the accumulators' seed) into
an int32 scratch tile ``[pixels, M/group]``, then the store (``store_ir``) requantizes each
channel's pixels into y's NCHW rows. Products are 16-bit pair products summed in int32
(``pmaddwd``), exact for any weights, or, where the layer's weights are proved never to let
it saturate (``gemm.choose_product``: 7-bit symmetric ``reduce_range`` weights always are),
the u8 x s8 pair instruction (``pmaddubsw``, 4 k per step). Every layer's function says which
kernel it runs in its name (``qc_int_conv_pmaddwd_*``, ``qc_int_conv_pmaddubsw_*``,
``qc_int_conv_depthwise_i16_*``, ``qc_int_conv_pointwise_*``, ``qc_int_conv_winograd_*``).
A convolution with one input channel per group (depthwise) runs ``depthwise.py``'s kernel;
a 1x1 one with unit strides and no padding that ``pointwise.applies`` to runs
``pointwise.py``'s (channels x pixels on the image as it lies: no transposed copy, a store
that reads each channel's pixels contiguously); a 3x3 one with unit strides and dilations that
``winograd.applies`` to runs ``winograd.py``'s (16 products per 2x2 outputs and input channel
instead of 36).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from qcompiler.graph import Node
from qcompiler.ops import fixed_point
from qcompiler.ops.int_common import output_range
from qcompiler.ops.window import check_kernel_shape, conv_window

from .. import gemm
from ..kernel import Buffer, Call, Const, Context, NotNative, Scratch, attrs, emitter
from .matmul import constant, operands, shared_gemm

CONV_INPUTS = ["x", "w", "multiplier", "x_zero_point", "y_zero_point", "bias?",
               "w_zero_point?", "z?", "z_zero_point?", "z_multiplier?"]
PIXELS = 64  # output pixels per item of the GEMM path


@dataclass(frozen=True)
class Geometry:
    """A convolution seen as 2-D (a 1-D one has ``h = kh = oh = 1``): image ``c x h x w``,
    ``m`` output channels in ``group`` groups, kernel ``kh x kw``, strides, dilations, the
    padding before each axis and the output ``oh x ow``."""

    n: int
    c: int
    h: int
    w: int
    m: int
    group: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int
    pw: int
    oh: int
    ow: int

    @property
    def taps(self) -> int:
        return self.kh * self.kw


def geometry(node: Node) -> Geometry:
    """The node's geometry as the numpy kernel resolves it (``conv_window``)."""
    x, w = node.inputs[0], node.inputs[1]
    at = attrs(node)
    spatial = tuple(x.shape[2:])
    if len(spatial) not in (1, 2):
        raise NotNative(f"a {len(spatial)}-D convolution (the native kernel does 1-D and 2-D)")
    kernel = check_kernel_shape("IntConv", at["kernel_shape"], tuple(w.shape[2:]))
    rank = len(spatial)
    win = conv_window("IntConv", spatial, kernel, tuple(at["strides"]) or (1,) * rank,
                      tuple(at["dilations"]) or (1,) * rank, tuple(at["pads"]),
                      at["auto_pad"])
    lead = 2 - rank  # a 1-D convolution is a 2-D one of height 1

    def two(values: tuple, fill: int) -> tuple:
        return (fill,) * lead + tuple(values)

    (h, wd), (kh, kw) = two(spatial, 1), two(kernel, 1)
    (sh, sw), (dh, dw) = two(win.strides, 1), two(win.dilations, 1)
    (ph, pw), (oh, ow) = two(win.begin, 0), two(win.out, 1)
    return Geometry(x.shape[0], x.shape[1], h, wd, w.shape[0], int(at["group"]), kh, kw, sh, sw,
                    dh, dw, ph, pw, oh, ow)


# -- the requantizing store ----------------------------------------------------------------------
#
# For channel c and pixel p, with the accumulator a (int32) and, fused, the residual code z:
#   "fixed_point": s = (a * M0[c] + (z - z_zp) * M0z[c] + half[c]) >> t[c] in int64, the
#                  (M0, M0z, t) of fixed_point.shared_multipliers([multiplier, z_multiplier])
#   "float":       s = rint(float32(a) * M[c] + float32(z - z_zp) * Mz) in float32, in that
#                  order, half to even (no contraction: the IR has no fast-math flags)
# then y = clamp(s, lo - zp, hi - zp) + zp, as fixed_point.rescale and saturate compute it
# (clamping before the float conversion is exact: the bounds are integers).
#
# "fixed_point" runs one of three loops per channel, its ``mode`` chosen at compile time:
#   WIDE  (t >= 32): s = (sum >> 32) >> (t - 32), the sum's high half shifted in int32 lanes
#         (the high half of an int64 always fits in int32);
#   SHORT (1 <= t < 32, the usual shift with a fused residual, whose multiplier is near 1):
#         a is first clamped to the channel's [acc_low, acc_high], outside which the clamped
#         output no longer changes whatever z is (s is monotone in a and in z), and which
#         keeps |sum| below 2^(31 + t), so s = (sum << (32 - t)) >> 32 is exact, again the
#         high half;
#   GENERAL (anything else: no such bounds): the int64 shift and clamps as written above.
# AVX2 has no 64-bit arithmetic shift nor 64-bit min/max: the first two stay in int32 lanes.
GENERAL, SHORT, WIDE = 0, 1, 2


@dataclass(frozen=True)
class Rescale:
    """The store's per-channel constants (``k0..k3``: ``M0``, ``M0z`` as int32, ``t`` as
    int64 and ``[acc_low, acc_high, mode, 0]`` as int32 for "fixed_point"; ``M``, ``Mz`` as
    float32 and two unused for "float") and the literals baked into its code."""

    rounding: str
    consts: tuple[np.ndarray, ...]
    low: int
    high: int
    zp: int
    z_zp: int | None
    z_signed: bool

    @property
    def key(self) -> tuple:
        return (self.rounding, self.low, self.high, self.zp, self.z_zp, self.z_signed)


def rescale_constants(m: int, multiplier: np.ndarray, y_zero_point: np.ndarray, rounding: str,
                      qmin: int | None, qmax: int | None, z_zero_point: np.ndarray | None = None,
                      z_multiplier: np.ndarray | None = None) -> Rescale:
    """The store's constants for ``m`` channels (a residual when ``z_zero_point`` is given)."""
    if rounding not in fixed_point.ROUNDINGS:
        raise NotNative(f"the rounding {rounding!r}")
    lo, hi = output_range(qmin, qmax, np.iinfo(y_zero_point.dtype))
    zp = int(y_zero_point)
    ms = np.broadcast_to(np.asarray(multiplier, np.float64).reshape(-1), (m,))
    mz = np.broadcast_to(np.asarray(0.0 if z_multiplier is None else z_multiplier,
                                    np.float64).reshape(-1), (m,))
    if rounding == "float":
        consts = (ms.astype(np.float32), mz.astype(np.float32), np.zeros(1), np.zeros(1))
    else:
        terms = [ms] if z_zero_point is None else [ms, mz]
        try:
            m0s, shift = fixed_point.shared_multipliers(terms)
        except ValueError as exc:
            raise NotNative(f"the multipliers: {exc}") from None
        m0z = m0s[1] if len(m0s) > 1 else np.zeros(m, np.int64)
        codes = np.iinfo(np.asarray(z_zero_point).dtype) if z_zero_point is not None else None
        z_range = (0, 0) if codes is None else (int(codes.min) - int(z_zero_point),
                                                int(codes.max) - int(z_zero_point))
        m0, m0z, shift = (np.broadcast_to(c, (m,)) for c in (m0s[0], m0z, shift))
        loops = _loops(m0, m0z, shift, lo - zp, hi - zp, z_range)
        consts = (np.ascontiguousarray(m0, np.int32), np.ascontiguousarray(m0z, np.int32),
                  np.ascontiguousarray(shift, np.int64), loops)  # M0 < 2^31
    residual = z_zero_point is not None
    return Rescale(rounding, consts, lo - zp, hi - zp, zp,
                   int(z_zero_point) if residual else None,
                   residual and np.asarray(z_zero_point).dtype == np.int8)


def _loops(m0: np.ndarray, m0z: np.ndarray, t: np.ndarray, low: int, high: int,
           z_range: tuple[int, int]) -> np.ndarray:
    """Each channel's ``[acc_low, acc_high, mode, 0]`` (int32; see above) for ``s(a, zc) = (a *
    m0 + zc * m0z + 2^(t-1)) >> t`` with ``zc`` within ``z_range`` and the output clamp
    ``[low, high]``: ``acc_high`` the smallest int32 ``a`` with ``s(a, zc_min) >= high``,
    ``acc_low`` the largest with ``s(a, zc_max) <= low`` (every ``a`` beyond either clamps as
    it does, for every ``zc``: ``m0, m0z >= 0`` make s monotone). In int64: for ``t < 32``
    every term is below 2^63 (``|a * m0| < 2^62``, ``|zc * m0z| < 2^39``)."""
    span = np.iinfo(np.int32)
    m0, m0z, t = (np.asarray(v, np.int64) for v in (m0, m0z, t))
    short = (t >= 1) & (t < 32)
    ts = np.where(short, t, 1)
    half = np.left_shift(np.int64(1), ts - 1)
    z_low, z_high = z_range
    divisor = np.maximum(m0, 1)
    acc_high = -((half + z_low * m0z - np.left_shift(np.int64(high), ts)) // divisor)
    acc_low = (np.left_shift(np.int64(low + 1), ts) - half - z_high * m0z - 1) // divisor
    acc_low = np.where(m0 > 0, np.maximum(acc_low, span.min), span.min)
    acc_high = np.where(m0 > 0, np.minimum(acc_high, span.max), span.max)
    largest = np.zeros_like(m0)
    for a in (acc_low, acc_high):
        for zc in z_range:
            largest = np.maximum(largest, np.abs(a * m0 + zc * m0z + half))
    short &= (acc_low <= acc_high) & (largest < np.left_shift(np.int64(1), 31 + ts))
    mode = np.where(t >= 32, WIDE, np.where(short, SHORT, GENERAL))
    loops = np.zeros((t.size, 4), np.int32)
    loops[:, 0] = np.where(short, acc_low, span.min)
    loops[:, 1] = np.where(short, acc_high, span.max)
    loops[:, 2] = mode
    return loops


def store_ir(name: str, r: Rescale, pixel_step: int, channel_step: int, row: int) -> str:
    """``@name(ptr acc, i64 pixels, i64 c0, i64 channels, ptr y, ptr z, ptr k0..k3)``:
    channel ``c0 + c`` (``c < channels``) pixel ``p < pixels``: ``acc[p * pixel_step + c *
    channel_step]`` (int32) requantized into ``y[c * row + p]`` (bytes; the residual read at
    ``z[c * row + p]``)."""
    residual = r.z_zp is not None
    if r.rounding == "float":
        load = ["%m = load float, ptr %m.at, align 4", "%mz = load float, ptr %mz.at, align 4"]
        math_ = ["%f = sitofp i32 %a to float", "%fm = fmul float %f, %m"]
        if residual:
            math_ += [f"%zc = sub nsw i32 %z32, {r.z_zp}", "%zf = sitofp i32 %zc to float",
                      "%zm = fmul float %zf, %mz", "%ft = fadd float %fm, %zm"]
        total = "%ft" if residual else "%fm"
        math_ += [f"%fr = call float @llvm.rint.f32(float {total})",
                  f"%fl = call float @llvm.maxnum.f32(float %fr, float {float(r.low)!r})",
                  f"%fh = call float @llvm.minnum.f32(float %fl, float {float(r.high)!r})",
                  "%s = fptosi float %fh to i32", "%b = trunc i32 %s to i8"]
        declarations = ("declare float @llvm.rint.f32(float)\n"
                        "declare float @llvm.maxnum.f32(float, float)\n"
                        "declare float @llvm.minnum.f32(float, float)")
        element = "float"
        fast = mid = None
    else:
        load = ["%m.n = load i32, ptr %m.at, align 4", "%m = sext i32 %m.n to i64",
                "%mz.n = load i32, ptr %mz.at, align 4", "%mz = sext i32 %mz.n to i64",
                "%t.at = getelementptr inbounds i64, ptr %k2, i64 %ch",
                "%t = load i64, ptr %t.at, align 8",
                "%t.pos = icmp sgt i64 %t, 0", "%t.less = add nsw i64 %t, -1",
                "%t.half = shl i64 1, %t.less",
                "%half = select i1 %t.pos, i64 %t.half, i64 0",
                "%loop.at = getelementptr inbounds <4 x i32>, ptr %k3, i64 %ch",
                "%loop = load <4 x i32>, ptr %loop.at, align 16",
                "%acc.lo = extractelement <4 x i32> %loop, i64 0",
                "%acc.hi = extractelement <4 x i32> %loop, i64 1",
                "%mode = extractelement <4 x i32> %loop, i64 2"]

        def total(a: str) -> list[str]:
            """``%sr``: the int64 sum for the accumulator ``a``."""
            lines = [f"%a64 = sext i32 {a} to i64", "%am = mul nsw i64 %a64, %m"]
            if residual:
                lines += [f"%zc = sub nsw i32 %z32, {r.z_zp}", "%zc64 = sext i32 %zc to i64",
                          "%zm = mul nsw i64 %zc64, %mz", "%at = add nsw i64 %am, %zm"]
            return lines + [f"%sr = add nsw i64 {'%at' if residual else '%am'}, %half"]

        def high_half(value: str) -> list[str]:
            """``%sh``: the int32 ``value`` clamped, and ``%b`` its byte."""
            return [f"%sl = call i32 @llvm.smax.i32(i32 {value}, i32 {r.low})",
                    f"%sh = call i32 @llvm.smin.i32(i32 %sl, i32 {r.high})",
                    "%b = trunc i32 %sh to i8"]

        fast = [*total("%a"), "%hi.w = ashr i64 %sr, 32", "%hi = trunc i64 %hi.w to i32",
                "%s32 = ashr i32 %hi, %t32", *high_half("%s32")]
        mid = ["%al = call i32 @llvm.smax.i32(i32 %a, i32 %acc.lo)",
               "%ac = call i32 @llvm.smin.i32(i32 %al, i32 %acc.hi)", *total("%ac"),
               "%su = shl i64 %sr, %up", "%hi.w = ashr i64 %su, 32",
               "%s32 = trunc i64 %hi.w to i32", *high_half("%s32")]
        math_ = [*total("%a"), "%ss = ashr i64 %sr, %t",
                 f"%sl = call i64 @llvm.smax.i64(i64 %ss, i64 {r.low})",
                 f"%sh = call i64 @llvm.smin.i64(i64 %sl, i64 {r.high})",
                 "%b = trunc i64 %sh to i8"]
        declarations = ("declare i64 @llvm.smax.i64(i64, i64)\n"
                        "declare i64 @llvm.smin.i64(i64, i64)\n"
                        "declare i32 @llvm.smax.i32(i32, i32)\n"
                        "declare i32 @llvm.smin.i32(i32, i32)")
        element = "i32"
    zload = []
    if residual:
        ext = "sext" if r.z_signed else "zext"
        zload = ["%z.at = getelementptr inbounds i8, ptr %zrow, i64 %p",
                 "%zv = load i8, ptr %z.at, align 1", f"%z32 = {ext} i8 %zv to i32"]
    per_channel = ["%ch = add nuw nsw i64 %c0, %c",
                   f"%m.at = getelementptr inbounds {element}, ptr %k0, i64 %ch",
                   f"%mz.at = getelementptr inbounds {element}, ptr %k1, i64 %ch", *load,
                   f"%arow.o = mul nuw nsw i64 %c, {channel_step}",
                   "%arow = getelementptr inbounds i32, ptr %acc, i64 %arow.o",
                   f"%row.o = mul nuw nsw i64 %c, {row}",
                   "%yrow = getelementptr inbounds i8, ptr %y, i64 %row.o",
                   "%zrow = getelementptr inbounds i8, ptr %z, i64 %row.o"]
    # one channel per outer step, its pixels in the inner loop: the channel's constants (its
    # shift above all: AVX2 has no per-lane arithmetic 64-bit shift) are uniform there and y's
    # bytes contiguous, so LLVM vectorises along the pixels
    body = "\n  ".join

    def pixel_loop(label: str, math: list[str]) -> str:
        """The pixel loop ``label`` of one channel, its values suffixed by the label."""
        loop = f"""
{label}:
  %p = phi i64 [ 0, %{label}.pre ], [ %p.next, %{label} ]
  %a.o = mul nuw nsw i64 %p, {pixel_step}
  %a.at = getelementptr inbounds i32, ptr %arow, i64 %a.o
  %a = load i32, ptr %a.at, align 4
  {body(zload)}
  {body(math)}
  %o = add i8 %b, {byte(r.zp)}
  %y.at = getelementptr inbounds i8, ptr %yrow, i64 %p
  store i8 %o, ptr %y.at, align 1
  %p.next = add nuw nsw i64 %p, 1
  %p.more = icmp slt i64 %p.next, %pixels
  br i1 %p.more, label %{label}, label %channel.end
"""
        for value in set(re.findall(r"^\s*%([\w.]+) =", loop, re.M)):
            loop = re.sub(rf"%{re.escape(value)}(?![\w.])", f"%{value}.{label}", loop)
        return loop

    branch = "br label %pixel.pre\npixel.pre:\n  br label %pixel"
    if fast is not None:
        branch = (f"switch i32 %mode, label %pixel.pre [ i32 {WIDE}, label %wide.pre\n"
                  f"                                        i32 {SHORT}, label %mid.pre ]\n"
                  "wide.pre:\n  %t.w = sub nsw i64 %t, 32\n  %t32 = trunc i64 %t.w to i32\n"
                  "  br label %wide\nmid.pre:\n  %up = sub nsw i64 32, %t\n  br label %mid\n"
                  "pixel.pre:\n  br label %pixel")
    return f"""
{declarations}

define internal void @{name}(ptr noalias nocapture readonly %acc, i64 %pixels, i64 %c0,
                             i64 %channels, ptr noalias nocapture writeonly %y,
                             ptr noalias nocapture readonly %z, ptr noalias nocapture readonly
                             %k0, ptr noalias nocapture readonly %k1, ptr noalias nocapture
                             readonly %k2, ptr noalias nocapture readonly %k3) {{
entry:
  br label %channel

channel:
  %c = phi i64 [ 0, %entry ], [ %c.next, %channel.end ]
  {body(per_channel)}
  {branch}
{pixel_loop("pixel", math_)}
{"" if fast is None else pixel_loop("wide", fast)}
{"" if mid is None else pixel_loop("mid", mid)}
channel.end:
  %c.next = add nuw nsw i64 %c, 1
  %c.more = icmp slt i64 %c.next, %channels
  br i1 %c.more, label %channel, label %exit

exit:
  ret void
}}
"""


def byte(code: int) -> int:
    """An int8 or uint8 code as the signed i8 literal with its bits."""
    return (code + 128) % 256 - 128


def _taps_ir(prefix: str, g: Geometry, cg: int, x_zp: int, checked: bool) -> str:
    """One pixel's window into its row of cols (``_im2col_ir``), blocks ``{prefix}.*`` ending
    at ``%pixel.end``: each tap bounds-checked (x_zp outside the image) when ``checked``, else
    plain copies (every tap inside: no compare, no select)."""
    if checked:
        row_check = [f"%{prefix}.iy.ok = icmp ult i64 %{prefix}.iy, {g.h}"]
        tap = [f"%{prefix}.ix.ok = icmp ult i64 %{prefix}.ix, {g.w}",
               f"%{prefix}.ok = and i1 %{prefix}.iy.ok, %{prefix}.ix.ok",
               f"%{prefix}.at.i = add nsw i64 %{prefix}.line.o, %{prefix}.ix",
               f"%{prefix}.at = select i1 %{prefix}.ok, i64 %{prefix}.at.i, i64 0",
               f"%{prefix}.v.at = getelementptr inbounds i8, ptr %{prefix}.plane, i64 %{prefix}.at",
               f"%{prefix}.v.x = load i8, ptr %{prefix}.v.at, align 1",
               f"%{prefix}.v = select i1 %{prefix}.ok, i8 %{prefix}.v.x, i8 {byte(x_zp)}"]
    else:
        row_check = []
        tap = [f"%{prefix}.at = add nsw i64 %{prefix}.line.o, %{prefix}.ix",
               f"%{prefix}.v.at = getelementptr inbounds i8, ptr %{prefix}.plane, i64 %{prefix}.at",
               f"%{prefix}.v = load i8, ptr %{prefix}.v.at, align 1"]
    body = "\n  ".join
    q = prefix
    return f"""
{q}.channel:
  %{q}.c = phi i64 [ 0, %pixel.go ], [ %{q}.c.next, %{q}.channel.end ]
  %{q}.plane.o = mul nuw nsw i64 %{q}.c, {g.h * g.w}
  %{q}.plane = getelementptr inbounds i8, ptr %x, i64 %{q}.plane.o
  %{q}.ctap = mul nuw nsw i64 %{q}.c, {g.taps}
  br label %{q}.ky

{q}.ky:
  %{q}.ky.i = phi i64 [ 0, %{q}.channel ], [ %{q}.ky.next, %{q}.ky.end ]
  %{q}.iy.d = mul nuw nsw i64 %{q}.ky.i, {g.dh}
  %{q}.iy = add nsw i64 %y0, %{q}.iy.d
  {body(row_check)}
  %{q}.line.o = mul nsw i64 %{q}.iy, {g.w}
  %{q}.tap.y = mul nuw nsw i64 %{q}.ky.i, {g.kw}
  %{q}.tap.yc = add nuw nsw i64 %{q}.ctap, %{q}.tap.y
  br label %{q}.kx

{q}.kx:
  %{q}.kx.i = phi i64 [ 0, %{q}.ky ], [ %{q}.kx.next, %{q}.kx ]
  %{q}.ix.d = mul nuw nsw i64 %{q}.kx.i, {g.dw}
  %{q}.ix = add nsw i64 %x0, %{q}.ix.d
  {body(tap)}
  %{q}.tap = add nuw nsw i64 %{q}.tap.yc, %{q}.kx.i
  %{q}.out.at = getelementptr inbounds i8, ptr %crow, i64 %{q}.tap
  store i8 %{q}.v, ptr %{q}.out.at, align 1
  %{q}.kx.next = add nuw nsw i64 %{q}.kx.i, 1
  %{q}.kx.more = icmp slt i64 %{q}.kx.next, {g.kw}
  br i1 %{q}.kx.more, label %{q}.kx, label %{q}.ky.end

{q}.ky.end:
  %{q}.ky.next = add nuw nsw i64 %{q}.ky.i, 1
  %{q}.ky.more = icmp slt i64 %{q}.ky.next, {g.kh}
  br i1 %{q}.ky.more, label %{q}.ky, label %{q}.channel.end

{q}.channel.end:
  %{q}.c.next = add nuw nsw i64 %{q}.c, 1
  %{q}.c.more = icmp slt i64 %{q}.c.next, {cg}
  br i1 %{q}.c.more, label %{q}.channel, label %pixel.end
"""


def _im2col_ir(name: str, g: Geometry, cg: int, x_zp: int) -> str:
    """``@name(ptr x, i64 p0, i64 pixels, ptr cols)``: for output pixels ``p0 + i`` (``i <
    pixels``) of one image and group (``x`` at its first channel), the window's codes into
    ``cols[i * K + (c * kh + i_h) * kw + i_w]`` (W's order), ``x_zp`` outside the image. Every
    load is inside x (a padded tap reads x[0] and is replaced). A pixel whose whole window
    lies inside the image (most of them) copies its taps without any check."""
    k = cg * g.taps
    return f"""
define internal void @{name}(ptr noalias nocapture readonly %x, i64 %p0, i64 %pixels,
                             ptr noalias nocapture writeonly %cols) {{
entry:
  br label %pixel

pixel:
  %i = phi i64 [ 0, %entry ], [ %i.next, %pixel.end ]
  %p = add nuw nsw i64 %p0, %i
  %oy = udiv i64 %p, {g.ow}
  %ox = urem i64 %p, {g.ow}
  %y0.s = mul nsw i64 %oy, {g.sh}
  %y0 = sub nsw i64 %y0.s, {g.ph}
  %x0.s = mul nsw i64 %ox, {g.sw}
  %x0 = sub nsw i64 %x0.s, {g.pw}
  %crow.o = mul nuw nsw i64 %i, {k}
  %crow = getelementptr inbounds i8, ptr %cols, i64 %crow.o
  %y1 = add nsw i64 %y0, {(g.kh - 1) * g.dh}
  %x1 = add nsw i64 %x0, {(g.kw - 1) * g.dw}
  %y0.in = icmp sge i64 %y0, 0
  %y1.in = icmp slt i64 %y1, {g.h}
  %x0.in = icmp sge i64 %x0, 0
  %x1.in = icmp slt i64 %x1, {g.w}
  %y.in = and i1 %y0.in, %y1.in
  %x.in = and i1 %x0.in, %x1.in
  %inside = and i1 %y.in, %x.in
  br label %pixel.go

pixel.go:
  br i1 %inside, label %inner.channel, label %edge.channel
{_taps_ir("inner", g, cg, x_zp, False)}
{_taps_ir("edge", g, cg, x_zp, True)}
pixel.end:
  %i.next = add nuw nsw i64 %i, 1
  %i.more = icmp slt i64 %i.next, %pixels
  br i1 %i.more, label %pixel, label %exit

exit:
  ret void
}}
"""


_GEMM_CONV = """
{declaration}
{im2col}
{store}

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %z,
                    ptr noalias nocapture readonly %packed, ptr noalias nocapture readonly %bias,
                    ptr noalias nocapture readonly %k0, ptr noalias nocapture readonly %k1,
                    ptr noalias nocapture readonly %k2, ptr noalias nocapture readonly %k3,
                    ptr noalias nocapture %cols, ptr noalias nocapture %acc,
                    ptr noalias nocapture %work) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %item, label %exit

item:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %item ]
  %n = udiv i64 %it, {per_image}
  %in.image = urem i64 %it, {per_image}
  %g = udiv i64 %in.image, {panels}
  %panel = urem i64 %in.image, {panels}
  %p0 = mul nuw nsw i64 %panel, {pixels}
  %left = sub nsw i64 {out}, %p0
  %count = call i64 @llvm.umin.i64(i64 %left, i64 {pixels})
  %x.n = mul nuw nsw i64 %n, {x_image}
  %x.g = mul nuw nsw i64 %g, {x_group}
  %x.o = add nuw nsw i64 %x.n, %x.g
  %x.at = getelementptr inbounds i8, ptr %x, i64 %x.o
  call void @{name}.im2col(ptr %x.at, i64 %p0, i64 %count, ptr %cols)
  %w.o = mul nuw nsw i64 %g, {w_group}
  %w.at = getelementptr inbounds i8, ptr %packed, i64 %w.o
  %b.o = mul nuw nsw i64 %g, {b_group}
  %b.at = getelementptr inbounds i32, ptr %bias, i64 %b.o
  call void @{gemm}(ptr %cols, i64 {k}, ptr %w.at, ptr %b.at, ptr %acc, i64 {mg},
                         i64 %count, i64 {mg}, i64 {k}, ptr %work)
  %c0 = mul nuw nsw i64 %g, {mg}
  %y.n = mul nuw nsw i64 %n, {y_image}
  %y.c = mul nuw nsw i64 %c0, {out}
  %y.nc = add nuw nsw i64 %y.n, %y.c
  %y.o = add nuw nsw i64 %y.nc, %p0
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.o
  %z.at = getelementptr inbounds i8, ptr %z, i64 %y.o
  call void @{name}.store(ptr %acc, i64 %count, i64 %c0, i64 {mg}, ptr %y.at, ptr %z.at,
                          ptr %k0, ptr %k1, ptr %k2, ptr %k3)
  %it.next = add nuw nsw i64 %it, 1
  %it.more = icmp slt i64 %it.next, %end
  br i1 %it.more, label %item, label %exit

exit:
  ret void
}}

declare i64 @llvm.umin.i64(i64, i64)
"""


@dataclass(frozen=True)
class ConvOperands:
    """An IntConv node's constants and codes, as its kernels need them."""

    w: np.ndarray
    bias: np.ndarray | None
    w_zp: np.ndarray | None
    x_zp: int
    x_signed: bool
    rescale: Rescale
    residual: str | None


def conv_operands(node: Node, m: int) -> ConvOperands:
    """The node's constants (``NotNative`` for one computed at run time)."""
    ops = operands(node, CONV_INPUTS)
    consts = {name: constant(ops[name], name) for name in
              ("w", "multiplier", "x_zero_point", "y_zero_point", "bias", "w_zero_point",
               "z_zero_point", "z_multiplier")}
    at = attrs(node)
    rescale = rescale_constants(m, consts["multiplier"], consts["y_zero_point"], at["rounding"],
                                at["qmin"], at["qmax"], consts["z_zero_point"],
                                consts["z_multiplier"])
    z = ops["z"]
    return ConvOperands(consts["w"], consts["bias"], consts["w_zero_point"],
                        int(consts["x_zero_point"]), ops["x"].dtype.np == np.int8, rescale,
                        None if z is None else z.name)


def _gemm_call(node: Node, ctx: Context, g: Geometry, o: ConvOperands) -> Call:
    """The im2col GEMM call: items are (image, group, panel of pixels)."""
    cg, mg = g.c // g.group, g.m // g.group
    k = cg * g.taps
    w = o.w.reshape(g.group, mg, k)
    w_zp = None if o.w_zp is None else np.broadcast_to(o.w_zp.reshape(-1), (g.m,)).reshape(
        g.group, mg)
    bias = None if o.bias is None else np.broadcast_to(o.bias.reshape(-1), (g.m,)).reshape(
        g.group, mg)
    codes = [np.ascontiguousarray(w[i].T) for i in range(g.group)]
    zps = [None if w_zp is None else w_zp[i] for i in range(g.group)]
    kind = gemm.choose_product([gemm.centre(c, zp) for c, zp in zip(codes, zps, strict=True)],
                               ctx.avx2)
    packs = [gemm.pack_weights(c, zp, None if bias is None else bias[i], product=kind,
                               signed=o.x_signed)
             for i, (c, zp) in enumerate(zip(codes, zps, strict=True))]
    packed = np.stack([p.data for p in packs])
    biases = np.stack([p.bias for p in packs])
    out = g.oh * g.ow
    panels = -(-out // PIXELS)
    pixels = min(PIXELS, out)
    shape = (g, o.x_zp, o.x_signed, o.rescale.key, ctx.avx2, PIXELS)

    product = shared_gemm(ctx, o.x_signed, None, kind)

    def ir(name: str) -> str:
        return _GEMM_CONV.format(
            declaration=gemm.declaration(product.name), gemm=product.name,
            im2col=_im2col_ir(f"{name}.im2col", g, cg, o.x_zp),
            store=store_ir(f"{name}.store", o.rescale, mg, 1, out),
            name=name, per_image=g.group * panels, panels=panels, pixels=PIXELS, out=out,
            x_image=g.c * g.h * g.w, x_group=cg * g.h * g.w, w_group=packed[0].nbytes,
            b_group=biases.shape[1], k=k, mg=mg, y_image=g.m * out)

    fn = ctx.function(f"int_conv_{kind}", shape, ir, needs=(product,))
    y = node.outputs[0].name
    args = (Buffer(node.inputs[0].name), Buffer(y), Buffer(o.residual or y), Const(packed),
            Const(biases), *(Const(c) for c in o.rescale.consts), Scratch(pixels * k),
            Scratch(pixels * mg * 4), Scratch(gemm.workspace_bytes(k, product=kind)))
    return Call(fn, args, items=g.n * g.group * panels)


@emitter("IntConv")
def int_conv(node: Node, ctx: Context) -> list[Call]:
    g = geometry(node)
    if g.n * g.m * g.oh * g.ow == 0:
        return []
    if g.c == 0:
        raise NotNative("no input channels")
    o = conv_operands(node, g.m)
    if g.c == g.group:
        from .depthwise import depthwise_call  # it builds on this module's store

        return [depthwise_call(node, ctx, g, o)]
    from . import pointwise, winograd  # they build on this module's store

    if pointwise.applies(g):
        return [pointwise.pointwise_call(ctx, node.inputs[0].name, node.outputs[0].name, g, o)]
    if winograd.applies(g, o):
        return [winograd.winograd_call(ctx, node.inputs[0].name, node.outputs[0].name, g, o)]
    return [_gemm_call(node, ctx, g, o)]
