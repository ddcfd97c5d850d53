"""1x1 ``IntConv`` (one group, no padding, unit strides) as a GEMM of channels by pixels.

Such a convolution is ``Y[M, P] = W[M, C] x X[C, P]`` on NCHW planes as they lie: per item (an
image and a panel of ``PIXELS`` output pixels) the kernel packs the panel's codes into the
GEMM's vector operand (int16, ``[PIXELS / NR, C / 2, NR, 2]``: for ``NR`` pixels at a time, the
pairs of two channels' codes, widened and interleaved with vector shuffles), runs the exact
int16 GEMM of ``gemm.py`` with the centred weights as its broadcast operand (int16 ``[M, C]``,
packed at compile time) and the bias seeding each channel's row (``row_bias``), then hands the
int32 tile ``[M, PIXELS]`` to ``conv.store_ir``'s requantizing store, which reads each
channel's pixels contiguously and writes them into y's contiguous rows.

The im2col path of ``conv.py`` computes the same sums as ``[pixels, C] x [C, M]``: its input
is a transposed copy of the image and its int32 tile ``[pixels, M]``, so the store gathers
every channel's accumulators at a stride of M. Here neither transposition happens. Products
are 16-bit pair products summed in int32 (``pmaddwd``): exact for any weights (the u8 x s8
pair instruction, which the im2col path runs where the weights allow, would need the pixels
packed as byte quads; on the ResNet's 1x1 layers this kernel beats that path anyway).
Functions are named ``qc_int_conv_pointwise_*``.
"""

from __future__ import annotations

import numpy as np

from .. import gemm
from ..kernel import Buffer, Call, Const, Context, Scratch
from .conv import ConvOperands, Geometry, store_ir
from .winograd import shared_wide_gemm

PIXELS = 32  # output pixels per item: the GEMM's columns (a multiple of gemm.NR)
WASTE = 16  # at most one padded column per WASTE pixels


def applies(g: Geometry) -> bool:
    """Whether this kernel computes the layer: a 1x1 convolution of one group with unit
    strides and no padding (its pixels are the input's, in the same order) whose pixels fill
    the GEMM's column panels with at most one padded column per ``WASTE`` pixels (a 7x7
    image, 49 pixels in 4 panels of 16, runs faster on the im2col path, whose tile is filled
    by channels)."""
    out = g.oh * g.ow
    return ((g.kh, g.kw, g.sh, g.sw, g.group, g.ph, g.pw) == (1, 1, 1, 1, 1, 0, 0)
            and (g.oh, g.ow) == (g.h, g.w) and -(-out // gemm.NR) * gemm.NR * WASTE
            <= out * (WASTE + 1))


def _pair_ir(q: str, first: str, second: str | None, ext: str) -> list[str]:
    """Lines storing the pair step ``q``: 16 codes of the row at ``first`` interleaved with 16
    of the row at ``second`` (zeros when None), each widened by ``ext``, at ``%dst``."""
    lines = [f"%{q}.v0 = load <16 x i8>, ptr {first}, align 1",
             f"%{q}.w0 = {ext} <16 x i8> %{q}.v0 to <16 x i16>"]
    if second is None:
        lines.append(f"%{q}.w1 = bitcast <16 x i16> zeroinitializer to <16 x i16>")
    else:
        lines += [f"%{q}.v1 = load <16 x i8>, ptr {second}, align 1",
                  f"%{q}.w1 = {ext} <16 x i8> %{q}.v1 to <16 x i16>"]
    mask = ", ".join(f"i32 {i // 2 + 16 * (i % 2)}" for i in range(32))
    return lines + [
        f"%{q}.pair = shufflevector <16 x i16> %{q}.w0, <16 x i16> %{q}.w1, <32 x i32> <{mask}>",
        f"%{q}.at = getelementptr inbounds <32 x i16>, ptr %dst, i64 %{q}.i",
        f"store <32 x i16> %{q}.pair, ptr %{q}.at, align 32"]


def _pack_ir(name: str, c: int, plane: int, ext: str) -> str:
    """``@name(ptr x, i64 p0, i64 count, ptr b)``: the codes of pixels ``[p0, p0 + count)``
    of the ``c`` planes at ``x`` (``plane`` codes apart) into b, the GEMM's packed operand of
    ``ceil(count / NR)`` column panels, each ``[pairs, NR, 2]`` int16 (the columns past
    ``count`` are zeros; no byte outside x is read)."""
    nr = gemm.NR
    pairs, whole = (c + 1) // 2, c // 2
    body = "\n  ".join
    odd = []
    if c % 2:
        odd = [f"%odd.i = add i64 0, {whole}",
               f"%odd.row = getelementptr inbounds i8, ptr %col, i64 {(c - 1) * plane}",
               *_pair_ir("odd", "%odd.row", None, ext)]
    fast = f"""
fast:
  br i1 {"true" if whole else "false"}, label %pair, label %fast.end

pair:
  %pair.i = phi i64 [ 0, %fast ], [ %pair.next, %pair ]
  %row.o = mul nuw nsw i64 %pair.i, {2 * plane}
  %row0 = getelementptr inbounds i8, ptr %col, i64 %row.o
  %row1 = getelementptr inbounds i8, ptr %row0, i64 {plane}
  {body(_pair_ir("pair", "%row0", "%row1", ext))}
  %pair.next = add nuw nsw i64 %pair.i, 1
  %pair.more = icmp slt i64 %pair.next, {whole}
  br i1 %pair.more, label %pair, label %fast.end

fast.end:
  {body(odd)}
  br label %panel.end
"""
    # a last, partial panel: code by code, zeros past count
    slow = f"""
slow:
  %s.q = phi i64 [ 0, %panel ], [ %s.q.next, %slow.end ]
  %s.r0.o = mul nuw nsw i64 %s.q, {2 * plane}
  %s.r1.ch = shl nuw nsw i64 %s.q, 1
  %s.r1.ch1 = add nuw nsw i64 %s.r1.ch, 1
  %s.has1 = icmp ult i64 %s.r1.ch1, {c}
  %s.r1.o = add nuw nsw i64 %s.r0.o, {plane}
  %s.r1.safe = select i1 %s.has1, i64 %s.r1.o, i64 %s.r0.o
  %s.r0 = getelementptr inbounds i8, ptr %col, i64 %s.r0.o
  %s.r1 = getelementptr inbounds i8, ptr %col, i64 %s.r1.safe
  %s.d.o = mul nuw nsw i64 %s.q, {2 * nr}
  %s.d = getelementptr inbounds i16, ptr %dst, i64 %s.d.o
  br label %slow.px

slow.px:
  %s.i = phi i64 [ 0, %slow ], [ %s.i.next, %slow.px ]
  %s.in = icmp slt i64 %s.i, %left
  %s.at = select i1 %s.in, i64 %s.i, i64 0
  %s.a.at = getelementptr inbounds i8, ptr %s.r0, i64 %s.at
  %s.a8 = load i8, ptr %s.a.at, align 1
  %s.a16 = {ext} i8 %s.a8 to i16
  %s.a = select i1 %s.in, i16 %s.a16, i16 0
  %s.b.at = getelementptr inbounds i8, ptr %s.r1, i64 %s.at
  %s.b8 = load i8, ptr %s.b.at, align 1
  %s.b16 = {ext} i8 %s.b8 to i16
  %s.in1 = and i1 %s.in, %s.has1
  %s.b = select i1 %s.in1, i16 %s.b16, i16 0
  %s.o = shl nuw nsw i64 %s.i, 1
  %s.o.at = getelementptr inbounds i16, ptr %s.d, i64 %s.o
  store i16 %s.a, ptr %s.o.at, align 2
  %s.o1 = add nuw nsw i64 %s.o, 1
  %s.o1.at = getelementptr inbounds i16, ptr %s.d, i64 %s.o1
  store i16 %s.b, ptr %s.o1.at, align 2
  %s.i.next = add nuw nsw i64 %s.i, 1
  %s.i.more = icmp slt i64 %s.i.next, {nr}
  br i1 %s.i.more, label %slow.px, label %slow.end

slow.end:
  %s.q.next = add nuw nsw i64 %s.q, 1
  %s.q.more = icmp slt i64 %s.q.next, {pairs}
  br i1 %s.q.more, label %slow, label %panel.end
"""
    return f"""
define internal void @{name}(ptr noalias nocapture readonly %x, i64 %p0, i64 %count,
                             ptr noalias nocapture writeonly %b) {{
entry:
  %some = icmp sgt i64 %count, 0
  br i1 %some, label %panel, label %exit

panel:
  %j = phi i64 [ 0, %entry ], [ %j.next, %panel.end ]
  %j.px = mul nuw nsw i64 %j, {nr}
  %left = sub nsw i64 %count, %j.px
  %col.o = add nuw nsw i64 %p0, %j.px
  %col = getelementptr inbounds i8, ptr %x, i64 %col.o
  %dst.o = mul nuw nsw i64 %j, {pairs * 2 * nr}
  %dst = getelementptr inbounds i16, ptr %b, i64 %dst.o
  %whole = icmp sge i64 %left, {nr}
  br i1 %whole, label %fast, label %slow
{fast}
{slow}
panel.end:
  %j.next = add nuw nsw i64 %j, 1
  %j.next.px = mul nuw nsw i64 %j.next, {nr}
  %j.more = icmp slt i64 %j.next.px, %count
  br i1 %j.more, label %panel, label %exit

exit:
  ret void
}}
"""


_FUNCTION = """
{declaration}
{pack}
{store}

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %z,
                    ptr noalias nocapture readonly %w, ptr noalias nocapture readonly %bias,
                    ptr noalias nocapture readonly %k0, ptr noalias nocapture readonly %k1,
                    ptr noalias nocapture readonly %k2, ptr noalias nocapture readonly %k3,
                    ptr noalias nocapture %b, ptr noalias nocapture %acc,
                    ptr noalias nocapture %work) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %item, label %exit

item:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %item.end ]
  %n = udiv i64 %it, {panels}
  %panel = urem i64 %it, {panels}
  %p0 = mul nuw nsw i64 %panel, {pixels}
  %left = sub nsw i64 {out}, %p0
  %count = call i64 @llvm.umin.i64(i64 %left, i64 {pixels})
  %x.o = mul nuw nsw i64 %n, {x_image}
  %x.at = getelementptr inbounds i8, ptr %x, i64 %x.o
  call void @{name}.pack(ptr %x.at, i64 %p0, i64 %count, ptr %b)
  %y.n = mul nuw nsw i64 %n, {y_image}
  %y.o = add nuw nsw i64 %y.n, %p0
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.o
  %z.at = getelementptr inbounds i8, ptr %z, i64 %y.o
  call void @{gemm}(ptr %w, i64 {k}, ptr %b, ptr %bias, ptr %acc, i64 {pixels}, i64 {m},
                         i64 %count, i64 {k}, ptr %work)
  call void @{name}.store(ptr %acc, i64 %count, i64 0, i64 {m}, ptr %y.at, ptr %z.at,
                          ptr %k0, ptr %k1, ptr %k2, ptr %k3)
  br label %item.end

item.end:
  %it.next = add nuw nsw i64 %it, 1
  %it.more = icmp slt i64 %it.next, %end
  br i1 %it.more, label %item, label %exit

exit:
  ret void
}}

declare i64 @llvm.umin.i64(i64, i64)
"""


def pointwise_call(ctx: Context, x: str, y: str, g: Geometry, o: ConvOperands) -> Call:
    """The call computing the layer (``applies`` must hold): items are (image, panel)."""
    k = g.c + g.c % 2
    w = np.zeros((g.m, k), np.int16)
    w[:, :g.c] = o.w.reshape(g.m, g.c)
    if o.w_zp is not None:
        w[:, :g.c] -= np.asarray(o.w_zp, np.int16).reshape(-1, 1)
    bias = np.zeros(g.m, np.int32) if o.bias is None else np.ascontiguousarray(
        np.broadcast_to(np.asarray(o.bias, np.int32).reshape(-1), (g.m,)))
    out = g.oh * g.ow
    panels = -(-out // PIXELS)
    pixels = min(PIXELS, -(-out // gemm.NR) * gemm.NR)
    product = shared_wide_gemm(ctx, row_bias=True)
    ext = "sext" if o.x_signed else "zext"
    shape = (g, o.x_signed, o.rescale.key, ctx.avx2, PIXELS)

    def ir(name: str) -> str:
        return _FUNCTION.format(
            declaration=gemm.declaration(product.name), gemm=product.name,
            pack=_pack_ir(f"{name}.pack", g.c, g.h * g.w, ext),
            store=store_ir(f"{name}.store", o.rescale, 1, pixels, out), name=name,
            panels=panels, pixels=pixels, out=out, x_image=g.c * g.h * g.w, k=k, m=g.m,
            y_image=g.m * out)

    fn = ctx.function("int_conv_pointwise", shape, ir, needs=(product,))
    args = (Buffer(x), Buffer(y), Buffer(o.residual or y), Const(w), Const(bias),
            *(Const(c) for c in o.rescale.consts), Scratch(k * pixels * 2),
            Scratch(g.m * pixels * 4), Scratch(1))  # the int16 GEMM uses no workspace
    return Call(fn, args, items=g.n * panels)
