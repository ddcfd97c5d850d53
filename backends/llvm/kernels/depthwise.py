"""Depthwise ``IntConv`` (one input channel per group, any channel multiplier): a kernel
vectorised over the output pixels of a row, with the requantizing store of ``conv.py``.

Per item (an image and an output channel) the input plane is copied, widened to int16, into a
scratch plane padded with ``x_zero_point`` to every pixel the windows read; each output pixel
is the bias plus every tap's ``w[ky, kx] * plane[...]`` (the taps unrolled, int16 operands,
int32 products and sums: a loop over the row's pixels with constant strides, which LLVM
vectorises); the channel's accumulators are then requantized into y (the residual fused) by
``conv.store_ir``. Exact: the weights are centred by their zero point (within [-255, 255]) and
every product and sum is an int32 operation.
"""

from __future__ import annotations

import numpy as np

from qcompiler.graph import Node

from .. import gemm
from ..gemm import LANES
from ..kernel import Buffer, Call, Const, Context, Scratch
from .conv import ConvOperands, Geometry, store_ir

_FUNCTION = """
{store}
{declaration}

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %z,
                    ptr noalias nocapture readonly %w, ptr noalias nocapture readonly %bias,
                    ptr noalias nocapture readonly %k0, ptr noalias nocapture readonly %k1,
                    ptr noalias nocapture readonly %k2, ptr noalias nocapture readonly %k3,
                    ptr noalias nocapture %plane, ptr noalias nocapture %acc) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %item, label %exit

item:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %item.end ]
  %n = udiv i64 %it, {m}
  %ch = urem i64 %it, {m}
  %cin = udiv i64 %ch, {mg}
  %x.n = mul nuw nsw i64 %n, {c}
  %x.c = add nuw nsw i64 %x.n, %cin
  %x.o = mul nuw nsw i64 %x.c, {plane_in}
  %x.at = getelementptr inbounds i8, ptr %x, i64 %x.o
  br label %fill

; the padded plane: x_zero_point everywhere, then the image's pixels the windows read
fill:
  %f = phi i64 [ 0, %item ], [ %f.next, %fill ]
  %f.at = getelementptr inbounds i16, ptr %plane, i64 %f
  store i16 {x_zp}, ptr %f.at, align 2
  %f.next = add nuw nsw i64 %f, 1
  %f.more = icmp slt i64 %f.next, {plane_size}
  br i1 %f.more, label %fill, label %copy.check

copy.check:
  br i1 {copies}, label %copyrow, label %rows

copyrow:
  %iy = phi i64 [ 0, %copy.check ], [ %iy.next, %copyrow.end ]
  %src.o = mul nuw nsw i64 %iy, {w_in}
  %src = getelementptr inbounds i8, ptr %x.at, i64 %src.o
  %dst.y = add nuw nsw i64 %iy, {ph}
  %dst.r = mul nuw nsw i64 %dst.y, {pw_size}
  %dst.o = add nuw nsw i64 %dst.r, {pw}
  %dst = getelementptr inbounds i16, ptr %plane, i64 %dst.o
  br label %copy

copy:
  %ix = phi i64 [ 0, %copyrow ], [ %ix.next, %copy ]
  %v.at = getelementptr inbounds i8, ptr %src, i64 %ix
  %v = load i8, ptr %v.at, align 1
  %v16 = {ext} i8 %v to i16
  %d.at = getelementptr inbounds i16, ptr %dst, i64 %ix
  store i16 %v16, ptr %d.at, align 2
  %ix.next = add nuw nsw i64 %ix, 1
  %ix.more = icmp slt i64 %ix.next, {copy_cols}
  br i1 %ix.more, label %copy, label %copyrow.end

copyrow.end:
  %iy.next = add nuw nsw i64 %iy, 1
  %iy.more = icmp slt i64 %iy.next, {copy_rows}
  br i1 %iy.more, label %copyrow, label %rows

rows:
  %b.at = getelementptr inbounds i32, ptr %bias, i64 %ch
  %b = load i32, ptr %b.at, align 4
  %w.o = mul nuw nsw i64 %ch, {taps}
  %wrow = getelementptr inbounds i16, ptr %w, i64 %w.o
  {weights}
  %bv.i = insertelement <8 x i32> poison, i32 %b, i64 0
  %bv = shufflevector <8 x i32> %bv.i, <8 x i32> poison, <8 x i32> zeroinitializer
  br label %row

row:
  %oy = phi i64 [ 0, %rows ], [ %oy.next, %row.end ]
  %arow.o = mul nuw nsw i64 %oy, {ow}
  %arow = getelementptr inbounds i32, ptr %acc, i64 %arow.o
  %top.y = mul nuw nsw i64 %oy, {sh}
  %top = mul nuw nsw i64 %top.y, {pw_size}
  br label %{first}
{vector}
; one output pixel: every tap's product (int16 codes and weights, int32 sums)
pixel:
  %ox = phi i64 [ {vec}, %{before} ], [ %ox.next, %pixel ]
  %left = mul nuw nsw i64 %ox, {sw}
  %corner = add nuw nsw i64 %top, %left
  {taps_ir}
  %a.at = getelementptr inbounds i32, ptr %arow, i64 %ox
  store i32 %sum{last}, ptr %a.at, align 4
  %ox.next = add nuw nsw i64 %ox, 1
  %ox.more = icmp slt i64 %ox.next, {ow}
  br i1 %ox.more, label %pixel, label %row.end

row.end:
  %oy.next = add nuw nsw i64 %oy, 1
  %oy.more = icmp slt i64 %oy.next, {oh}
  br i1 %oy.more, label %row, label %store

store:
  %y.c = mul nuw nsw i64 %n, {m}
  %y.r = add nuw nsw i64 %y.c, %ch
  %y.o = mul nuw nsw i64 %y.r, {out}
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.o
  %z.at = getelementptr inbounds i8, ptr %z, i64 %y.o
  call void @{name}.store(ptr %acc, i64 {out}, i64 %ch, i64 1, ptr %y.at, ptr %z.at,
                          ptr %k0, ptr %k1, ptr %k2, ptr %k3)
  br label %item.end

item.end:
  %it.next = add nuw nsw i64 %it, 1
  %it.more = icmp slt i64 %it.next, %end
  br i1 %it.more, label %item, label %exit

exit:
  ret void
}}
"""


def _vector_loop(g: Geometry, cols: int, vec: int, avx2: bool) -> str:
    """The first ``vec`` pixels of a row (stride 1), ``LANES`` at a time: per tap the codes
    sign-extended to int32 lanes, read as int16 pairs ``(x, sign)`` and multiplied with the pairs
    ``(w, 0)`` by ``pmaddwd``: ``x * w`` exactly, one instruction per tap and 8 pixels."""
    lines = []
    for t in range(g.taps):
        ky, kx = divmod(t, g.kw)
        previous = "%bv" if t == 0 else f"%vs{t - 1}"
        lines += [f"%vx{t}.o = add nuw nsw i64 %vcorner, {ky * g.dh * cols + kx * g.dw}",
                  f"%vx{t}.at = getelementptr inbounds i16, ptr %plane, i64 %vx{t}.o",
                  f"%vx{t}.h = load <{LANES} x i16>, ptr %vx{t}.at, align 2",
                  f"%vx{t}.s = sext <{LANES} x i16> %vx{t}.h to <{LANES} x i32>",
                  f"%vx{t} = bitcast <{LANES} x i32> %vx{t}.s to <16 x i16>",
                  *gemm.pair_product(f"%vp{t}", f"%vx{t}", f"%wv{t}", avx2),
                  f"%vs{t} = add <{LANES} x i32> {previous}, %vp{t}"]
    body = "\n  ".join(lines)
    return f"""
vpixel:
  %vox = phi i64 [ 0, %row ], [ %vox.next, %vpixel ]
  %vcorner = add nuw nsw i64 %top, %vox
  {body}
  %va.at = getelementptr inbounds i32, ptr %arow, i64 %vox
  store <{LANES} x i32> %vs{g.taps - 1}, ptr %va.at, align 4
  %vox.next = add nuw nsw i64 %vox, {LANES}
  %vox.more = icmp slt i64 %vox.next, {vec}
  br i1 %vox.more, label %vpixel, label %tail

tail:
  br i1 {"true" if vec < g.ow else "false"}, label %pixel, label %row.end
"""


def depthwise_call(node: Node, ctx: Context, g: Geometry, o: ConvOperands) -> Call:
    """The depthwise kernel's call: items are (image, output channel)."""
    mg = g.m // g.group
    rows = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1  # the padded plane the windows read
    cols = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1
    copy_rows, copy_cols = min(g.h, rows - g.ph), min(g.w, cols - g.pw)
    weights = o.w.reshape(g.m, g.taps).astype(np.int16)  # centred: within [-255, 255]
    if o.w_zp is not None:
        weights -= np.broadcast_to(o.w_zp.reshape(-1), (g.m,)).astype(np.int16)[:, None]
    bias = np.zeros(g.m, np.int32) if o.bias is None else np.ascontiguousarray(
        np.broadcast_to(o.bias.reshape(-1), (g.m,)), np.int32)
    out = g.oh * g.ow
    vec = g.ow // LANES * LANES if g.sw == 1 else 0  # pixels of the vector loop
    shape = (g, o.x_zp, o.x_signed, o.rescale.key, ctx.avx2)

    def ir(name: str) -> str:
        loads, products = [], []
        for t in range(g.taps):
            ky, kx = divmod(t, g.kw)
            loads += [f"%w{t}.at = getelementptr inbounds i16, ptr %wrow, i64 {t}",
                      f"%w{t}.h = load i16, ptr %w{t}.at, align 2",
                      f"%w{t} = sext i16 %w{t}.h to i32",
                      f"%w{t}.z = zext i16 %w{t}.h to i32",  # (w, 0): one product per pair
                      f"%wv{t}.i = insertelement <8 x i32> poison, i32 %w{t}.z, i64 0",
                      f"%wv{t}.s = shufflevector <8 x i32> %wv{t}.i, <8 x i32> poison, "
                      f"<8 x i32> zeroinitializer",
                      f"%wv{t} = bitcast <8 x i32> %wv{t}.s to <16 x i16>"]
            previous = "%b" if t == 0 else f"%sum{t - 1}"
            products += [f"%x{t}.o = add nuw nsw i64 %corner, {ky * g.dh * cols + kx * g.dw}",
                         f"%x{t}.at = getelementptr inbounds i16, ptr %plane, i64 %x{t}.o",
                         f"%x{t}.h = load i16, ptr %x{t}.at, align 2",
                         f"%x{t} = sext i16 %x{t}.h to i32",
                         f"%p{t} = mul nsw i32 %x{t}, %w{t}",
                         f"%sum{t} = add i32 {previous}, %p{t}"]
        fn, width = gemm.PMADDWD[ctx.avx2]
        return _FUNCTION.format(
            weights="\n  ".join(loads), taps_ir="\n  ".join(products), last=g.taps - 1,
            vec=vec, first="vpixel" if vec else "pixel", before="tail" if vec else "row",
            vector=_vector_loop(g, cols, vec, ctx.avx2) if vec else "",
            declaration=f"declare <{LANES * width // 16} x i32> @{fn}(<{width} x i16>, "
                        f"<{width} x i16>)",
            store=store_ir(f"{name}.store", o.rescale, 1, 0, out), name=name, m=g.m, mg=mg,
            c=g.c, plane_in=g.h * g.w, x_zp=o.x_zp, plane_size=rows * cols,
            copies="true" if copy_rows > 0 and copy_cols > 0 else "false",
            w_in=g.w, ph=g.ph, pw=g.pw, pw_size=cols, ext="sext" if o.x_signed else "zext",
            copy_cols=copy_cols, copy_rows=copy_rows, taps=g.taps, ow=g.ow, oh=g.oh, sh=g.sh,
            sw=g.sw, out=out)

    fn = ctx.function("int_conv_depthwise_i16", shape, ir)
    y = node.outputs[0].name
    args = (Buffer(node.inputs[0].name), Buffer(y), Buffer(o.residual or y), Const(weights),
            Const(bias), *(Const(c) for c in o.rescale.consts), Scratch(rows * cols * 2),
            Scratch(out * 4))
    return Call(fn, args, items=g.n * g.m)
