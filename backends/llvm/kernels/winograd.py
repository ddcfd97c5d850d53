"""3x3 stride-1 ``IntConv`` by Winograd's minimal filtering F(2x2, 3x3), in integers, exactly.

Each 2x2 block of output pixels (a *tile*) is computed from the 4x4 input patch ``d`` under it
as ``Y = A^T [U . V] A`` with ``V = B^T d B`` (sums and differences of input codes) and ``U =
G g G^T`` (the 3x3 weights ``g`` transformed once, at compile time): 16 products per input
channel and tile where the direct convolution needs 36, and the products of all channels are
16 independent GEMMs ``[tiles, C] x [C, M]``, run by the exact ``pmaddwd`` GEMM of ``gemm.py``
on int16 operands.

Exactness. ``G`` has halves; this kernel uses ``2G`` (integers), so ``U`` is 4 times the usual
one and so is ``Y``. With weights centred by their zero point (within [-255, 255]) every ``U``
entry is a sum of at most 9 weights (|U| <= 2295) and every ``V`` entry one of 4 codes with
signs (|V| <= 1020): both are int16, every pair product sum is exact in int32, and all the
rest (the GEMM's sums over channels, the output transform) are additions in int32 that wrap:
exact modulo 2^32. The true ``4 * sum`` is then recovered whole when it lies in int32, which
``applies`` proves per output channel from the weights (``4 * sum_k |w| * max |x| < 2^31``);
an arithmetic shift by 2 gives the convolution's sum exactly, and the bias is added after it.
Windows past the image read ``x_zero_point`` (IntConv pads with it); tiles past the output's
edge are computed on such padding and dropped.

Per item (an image and a *band* of ``rows`` tile rows) the kernel copies the band's input
rows channels last into a scratch (int16, padded), transforms every tile's patch into ``V``
(``16 x [tiles, C]``, the channel loop vectorised), runs the 16 GEMMs into int32 scratch,
transforms each tile's 16 sums into its 4 accumulators (``>> 2``, plus the bias), and hands
them to ``conv.store_ir``'s requantizing store (multiplier per channel, the fused residual,
clamp). Its functions are named ``qc_int_conv_winograd_*``.
"""

from __future__ import annotations

import numpy as np

from .. import gemm
from ..kernel import Buffer, Call, Const, Context, Scratch
from .conv import ConvOperands, Geometry, store_ir

# 2G, B^T and A^T of F(2x2, 3x3) (Lavin and Gray), the 2G in integers
G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], np.int64)
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.int64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.int64)
TILES = 64  # tiles per band, about (a band is whole tile rows)
MIN_CHANNELS = 4  # fewer input channels: the GEMMs are too short to pay for the transforms
_LIMIT = 2**31 - 1


def applies(g: Geometry, o: ConvOperands) -> bool:
    """Whether this kernel computes the layer, and exactly: a 2-D 3x3 convolution with unit
    strides and dilations, one group, enough input channels, and every output channel's
    ``4 * sum_k |w - w_zp| * max |x|`` within int32."""
    if (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.group) != (3, 3, 1, 1, 1, 1, 1):
        return False
    if g.c < MIN_CHANNELS or g.oh < 2 or g.ow < 2:
        return False
    largest = 128 if o.x_signed else 255
    sums = np.abs(centred(o)).reshape(g.m, -1).sum(axis=1, dtype=np.int64)
    return bool((4 * sums * largest).max() <= _LIMIT)


def centred(o: ConvOperands) -> np.ndarray:
    """The weights minus their zero point, int16 [M, C, 3, 3] (within [-255, 255])."""
    w = o.w.astype(np.int16)
    if o.w_zp is not None:
        w -= np.asarray(o.w_zp, np.int16).reshape(-1, 1, 1, 1)
    return w


def transformed_weights(o: ConvOperands) -> np.ndarray:
    """``U = 2G g (2G)^T`` per output and input channel: int16 [4, 4, C, M] (position first,
    each position's [C, M] contiguous), by additions over whole [C, M] planes (|U| <= 9 * 255:
    no step leaves int16)."""
    g = np.ascontiguousarray(centred(o).transpose(2, 3, 1, 0))  # [3, 3, C, M]
    half = [sum(int(G2[i, a]) * g[a] for a in range(3) if G2[i, a]) for i in range(4)]
    return np.stack([np.stack([sum(int(G2[j, b]) * half[i][b] for b in range(3) if G2[j, b])
                               for j in range(4)]) for i in range(4)]).astype(np.int16)


def band_rows(tiles_wide: int, tiles_high: int, images: int = 1, threads: int = 1) -> int:
    """Tile rows per band: about ``TILES`` tiles, at least one row, at most all of them, and
    when the threads outnumber the images, few enough that every thread gets a band."""
    shares = -(-threads // images)  # bands each image needs for every thread to get one
    return max(1, min(tiles_high, -(-TILES // tiles_wide), -(-tiles_high // shares)))


_FUNCTION = """
{declaration}
{store}

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %z,
                    ptr noalias nocapture readonly %packed, ptr noalias nocapture readonly %zeros,
                    ptr noalias nocapture readonly %bias,
                    ptr noalias nocapture readonly %k0, ptr noalias nocapture readonly %k1,
                    ptr noalias nocapture readonly %k2, ptr noalias nocapture readonly %k3,
                    ptr noalias nocapture %band, ptr noalias nocapture %v,
                    ptr noalias nocapture %sums, ptr noalias nocapture %acc,
                    ptr noalias nocapture %work) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %item, label %exit

item:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %item.end ]
  %n = udiv i64 %it, {bands}
  %b = urem i64 %it, {bands}
  %ty0 = mul nuw nsw i64 %b, {rows}
  %rows.left = sub nsw i64 {tiles_high}, %ty0
  %rows = call i64 @llvm.umin.i64(i64 %rows.left, i64 {rows})
  %tiles = mul nuw nsw i64 %rows, {tiles_wide}
  %oy0 = shl nuw nsw i64 %ty0, 1
  %x.o = mul nuw nsw i64 %n, {x_image}
  %x.n = getelementptr inbounds i8, ptr %x, i64 %x.o
  %band.rows = shl nuw nsw i64 %rows, 1
  %band.h = add nuw nsw i64 %band.rows, 2
  br label %fill.row

; the band's input rows channels last, int16: band[(r * {band_w} + col) * {cp} + c]
fill.row:
  %br = phi i64 [ 0, %item ], [ %br.next, %fill.row.end ]
  %iy.s = add nsw i64 %oy0, %br
  %iy = sub nsw i64 %iy.s, {ph}
  %iy.ok = icmp ult i64 %iy, {h}
  %line.o = mul nsw i64 %iy, {w}
  br label %fill.col

fill.col:
  %bc = phi i64 [ 0, %fill.row ], [ %bc.next, %fill.col.end ]
  %ix = sub nsw i64 %bc, {pw}
  %ix.ok = icmp ult i64 %ix, {w}
  %inside = and i1 %iy.ok, %ix.ok
  %cell.r = mul nuw nsw i64 %br, {band_row}
  %cell.odd = and i64 %bc, 1
  %cell.p = mul nuw nsw i64 %cell.odd, {half_row}
  %cell.k = lshr i64 %bc, 1
  %cell.kc = mul nuw nsw i64 %cell.k, {cp}
  %cell.rp = add nuw nsw i64 %cell.r, %cell.p
  %cell.o = add nuw nsw i64 %cell.rp, %cell.kc
  %cell.at = getelementptr inbounds i16, ptr %band, i64 %cell.o
  br i1 %inside, label %copy.pre, label %pad

copy.pre:
  %pix.o = add nsw i64 %line.o, %ix
  %pix = getelementptr inbounds i8, ptr %x.n, i64 %pix.o
  br label %copy

copy:
  %c = phi i64 [ 0, %copy.pre ], [ %c.next, %copy ]
  %src.o = mul nuw nsw i64 %c, {plane}
  %src = getelementptr inbounds i8, ptr %pix, i64 %src.o
  %code = load i8, ptr %src, align 1
  %wide = {ext} i8 %code to i16
  %dst = getelementptr inbounds i16, ptr %cell.at, i64 %c
  store i16 %wide, ptr %dst, align 2
  %c.next = add nuw nsw i64 %c, 1
  %c.more = icmp slt i64 %c.next, {c}
  br i1 %c.more, label %copy, label %copy.end

copy.end:
  {pad_channel}
  br label %fill.col.end

pad:
  %pc = phi i64 [ 0, %fill.col ], [ %pc.next, %pad ]
  %pdst = getelementptr inbounds i16, ptr %cell.at, i64 %pc
  store i16 {x_zp}, ptr %pdst, align 2
  %pc.next = add nuw nsw i64 %pc, 1
  %pc.more = icmp slt i64 %pc.next, {cp}
  br i1 %pc.more, label %pad, label %fill.col.end

fill.col.end:
  %bc.next = add nuw nsw i64 %bc, 1
  %bc.more = icmp slt i64 %bc.next, {band_w}
  br i1 %bc.more, label %fill.col, label %fill.row.end

fill.row.end:
  %br.next = add nuw nsw i64 %br, 1
  %br.more = icmp slt i64 %br.next, %band.h
  br i1 %br.more, label %fill.row, label %vin

; V = B^T d B per tile row, 16 positions: v[(pos * {tiles} + t) * {cp} + c]; along a tile
; row the patches' columns 0..3 are even[k], odd[k], even[k + 1], odd[k + 1] with k the tile's
; x, so one flat loop over (x, channel) runs over contiguous codes in each of them
vin:
  %ty = phi i64 [ 0, %fill.row.end ], [ %ty.next, %vin.end ]
  %patch.y = shl nuw nsw i64 %ty, 1
  %patch.o = mul nuw nsw i64 %patch.y, {band_row}
  %patch = getelementptr inbounds i16, ptr %band, i64 %patch.o
  %vt.o = mul nuw nsw i64 %ty, {row_codes}
  %vt = getelementptr inbounds i16, ptr %v, i64 %vt.o
  br label %vin.c

vin.c:
  %vc = phi i64 [ 0, %vin ], [ %vc.next, %vin.c ]
  {input_transform}
  %vc.next = add nuw nsw i64 %vc, 1
  %vc.more = icmp slt i64 %vc.next, {row_codes}
  br i1 %vc.more, label %vin.c, label %vin.end

vin.end:
  %ty.next = add nuw nsw i64 %ty, 1
  %ty.more = icmp slt i64 %ty.next, %rows
  br i1 %ty.more, label %vin, label %gemm

; the 16 products [tiles, C] x [C, M] into sums[(pos * {tiles} + t) * {mp} + m] (M padded
; to whole panels of the GEMM's tile: the padding columns' weights are zeros)
gemm:
  %pos = phi i64 [ 0, %vin.end ], [ %pos.next, %gemm ]
  %a.o = mul nuw nsw i64 %pos, {v_pos}
  %a.at = getelementptr inbounds i16, ptr %v, i64 %a.o
  %u.o = mul nuw nsw i64 %pos, {u_pos}
  %u.at = getelementptr inbounds i16, ptr %packed, i64 %u.o
  %s.o = mul nuw nsw i64 %pos, {s_pos}
  %s.at = getelementptr inbounds i32, ptr %sums, i64 %s.o
  call void @{gemm}(ptr %a.at, i64 {cp}, ptr %u.at, ptr %zeros, ptr %s.at, i64 {mp},
                         i64 %tiles, i64 {mp}, i64 {cp}, ptr %work)
  %pos.next = add nuw nsw i64 %pos, 1
  %pos.more = icmp slt i64 %pos.next, 16
  br i1 %pos.more, label %gemm, label %yout

; Y = A^T S A / 4 + bias per tile: acc[((2 ty + i) * {acc_w} + 2 tx + j) * {m} + m]
yout:
  %u = phi i64 [ 0, %gemm ], [ %u.next, %yout.end ]
  %uy = udiv i64 %u, {tiles_wide}
  %ux = urem i64 %u, {tiles_wide}
  %oy = shl nuw nsw i64 %uy, 1
  %ox = shl nuw nsw i64 %ux, 1
  %out.r = mul nuw nsw i64 %oy, {acc_w}
  %out.c = add nuw nsw i64 %out.r, %ox
  %out.o = mul nuw nsw i64 %out.c, {m}
  %out = getelementptr inbounds i32, ptr %acc, i64 %out.o
  %st.o = mul nuw nsw i64 %u, {mp}
  %st = getelementptr inbounds i32, ptr %sums, i64 %st.o
  br label %yout.m

yout.m:
  %om = phi i64 [ 0, %yout ], [ %om.next, %yout.m ]
  %bias.at = getelementptr inbounds i32, ptr %bias, i64 %om
  %bias.v = load i32, ptr %bias.at, align 4
  {output_transform}
  %om.next = add nuw nsw i64 %om, 1
  %om.more = icmp slt i64 %om.next, {m}
  br i1 %om.more, label %yout.m, label %yout.end

yout.end:
  %u.next = add nuw nsw i64 %u, 1
  %u.more = icmp slt i64 %u.next, %tiles
  br i1 %u.more, label %yout, label %store

; the requantizing store of the band's output rows inside the image
store:
  %oy.left = sub nsw i64 {oh}, %oy0
  %out.rows = call i64 @llvm.umin.i64(i64 %oy.left, i64 %band.rows)
  %y.n = mul nuw nsw i64 %n, {y_image}
  %y.r = mul nuw nsw i64 %oy0, {ow}
  %y.o = add nuw nsw i64 %y.n, %y.r
  {store_calls}
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

# the output rows of a band: one store when rows are whole in acc (even width), else by row
_STORE_WHOLE = """%pixels = mul nuw nsw i64 %out.rows, {ow}
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.o
  %z.at = getelementptr inbounds i8, ptr %z, i64 %y.o
  call void @{name}.store(ptr %acc, i64 %pixels, i64 0, i64 {m}, ptr %y.at, ptr %z.at,
                          ptr %k0, ptr %k1, ptr %k2, ptr %k3)"""
_STORE_ROWS = """br label %row
row:
  %r = phi i64 [ 0, %store ], [ %r.next, %row ]
  %r.acc.o = mul nuw nsw i64 %r, {acc_row}
  %r.acc = getelementptr inbounds i32, ptr %acc, i64 %r.acc.o
  %r.y.r = mul nuw nsw i64 %r, {ow}
  %r.y.o = add nuw nsw i64 %y.o, %r.y.r
  %y.at = getelementptr inbounds i8, ptr %y, i64 %r.y.o
  %z.at = getelementptr inbounds i8, ptr %z, i64 %r.y.o
  call void @{name}.store(ptr %r.acc, i64 {ow}, i64 0, i64 {m}, ptr %y.at, ptr %z.at,
                          ptr %k0, ptr %k1, ptr %k2, ptr %k3)
  %r.next = add nuw nsw i64 %r, 1
  %r.more = icmp slt i64 %r.next, %out.rows
  br i1 %r.more, label %row, label %rows.done
rows.done:"""


def _combine(out: str, terms: list[tuple[int, str]], ty: str) -> list[str]:
    """``out = sum coefficient * value`` for coefficients +1/-1 (adds and subs that wrap)."""
    lines, current = [], None
    for i, (sign, value) in enumerate(terms):
        if current is None:
            if sign < 0:
                lines.append(f"{out}.{i} = sub {ty} 0, {value}")
                current = f"{out}.{i}"
            else:
                current = value
            continue
        name = out if i == len(terms) - 1 else f"{out}.{i}"
        lines.append(f"{name} = {'add' if sign > 0 else 'sub'} {ty} {current}, {value}")
        current = name
    if len(terms) == 1:
        lines.append(f"{out} = add {ty} {current}, 0")
    return lines


def _transform(matrix: np.ndarray, inputs: list[list[str]], prefix: str, ty: str
               ) -> tuple[list[str], list[list[str]]]:
    """``matrix @ X @ matrix.T`` over the named values ``X`` (coefficients +1/-1/0): the IR
    lines and the result's names."""
    lines, half = [], []
    rows, inner = matrix.shape
    for i in range(rows):  # matrix @ X, row by row
        row = []
        for j in range(len(inputs[0])):
            name = f"%{prefix}.h{i}{j}"
            lines += _combine(name, [(int(matrix[i, k]), inputs[k][j]) for k in range(inner)
                                     if matrix[i, k]], ty)
            row.append(name)
        half.append(row)
    result = []
    for i in range(rows):  # (...) @ matrix.T
        row = []
        for j in range(rows):
            name = f"%{prefix}.r{i}{j}"
            lines += _combine(name, [(int(matrix[j, k]), half[i][k]) for k in range(inner)
                                     if matrix[j, k]], ty)
            row.append(name)
        result.append(row)
    return lines, result


def _load_grid(prefix: str, ty: str, base: str, index: str, offset) -> tuple[list[str],
                                                                           list[list[str]]]:
    """The 4x4 values ``%{prefix}{i}{j}`` of type ``ty`` loaded from ``base`` at ``index`` plus
    ``offset(i, j)`` elements: the IR lines and the values' names, row by row."""
    lines, grid = [], []
    for i in range(4):
        row = []
        for j in range(4):
            name = f"%{prefix}{i}{j}"
            lines += [f"{name}.o = add nuw nsw i64 {index}, {offset(i, j)}",
                      f"{name}.at = getelementptr inbounds {ty}, ptr {base}, i64 {name}.o",
                      f"{name} = load {ty}, ptr {name}.at, align {int(ty[1:]) // 8}"]
            row.append(name)
        grid.append(row)
    return lines, grid


def _input_transform(band_w: int, cp: int, tiles: int) -> str:
    """The body of the ``vin.c`` loop: code ``%vc`` (a tile's x and a channel) of the tile
    row's patches at ``%patch`` (the band's rows as even and odd columns) into the 16
    positions of ``V`` at ``%vt``."""
    half = band_w // 2 * cp
    lines, d = _load_grid("d", "i16", "%patch", "%vc",
                          lambda i, j: i * band_w * cp + (j % 2) * half + (j // 2) * cp)
    body, v = _transform(BT, d, "vi", "i16")
    lines += body
    for i in range(4):
        for j in range(4):
            lines += [f"%v{i}{j}.o = add nuw nsw i64 %vc, {(4 * i + j) * tiles * cp}",
                      f"%v{i}{j}.at = getelementptr inbounds i16, ptr %vt, i64 %v{i}{j}.o",
                      f"store i16 {v[i][j]}, ptr %v{i}{j}.at, align 2"]
    return "\n  ".join(lines)


def _output_transform(m: int, mp: int, tiles: int, acc_w: int) -> str:
    """The body of the ``yout.m`` loop: channel ``%om``'s 16 sums at ``%st`` into its 4
    accumulators at ``%out`` (``>> 2``, plus ``%bias.v``)."""
    lines, s = _load_grid("s", "i32", "%st", "%om", lambda i, j: (4 * i + j) * tiles * mp)
    body, y = _transform(AT, s, "yo", "i32")
    lines += body
    for i in range(2):
        for j in range(2):
            lines += [f"%y{i}{j}.q = ashr i32 {y[i][j]}, 2",
                      f"%y{i}{j} = add i32 %y{i}{j}.q, %bias.v",
                      f"%y{i}{j}.o = add nuw nsw i64 %om, {(i * acc_w + j) * m}",
                      f"%y{i}{j}.at = getelementptr inbounds i32, ptr %out, i64 %y{i}{j}.o",
                      f"store i32 %y{i}{j}, ptr %y{i}{j}.at, align 4"]
    return "\n  ".join(lines)


def shared_wide_gemm(ctx: Context, row_bias: bool = False):
    """The int32 GEMM of int16 activations (``gemm.kernel_ir(..., wide=True)``; seeded by
    rows with ``row_bias``), one of each per program."""
    base = "gemm_i16_rows" if row_bias else "gemm_i16"
    return ctx.function(base, (ctx.avx2,), lambda name: gemm.kernel_ir(
        name, True, ctx.avx2, wide=True, row_bias=row_bias))


def winograd_call(ctx: Context, x: str, y: str, g: Geometry, o: ConvOperands) -> Call:
    """The call computing the layer (``applies`` must hold): items are (image, band)."""
    cp = g.c + g.c % 2
    u = transformed_weights(o)
    packs = [gemm.pack_wide_weights(u[i, j]) for i in range(4) for j in range(4)]
    packed = np.stack([p.data for p in packs])
    zeros = np.zeros(packs[0].bias.size, np.int32)
    mp = zeros.size  # M in whole panels of the GEMM's tile
    bias = np.zeros(g.m, np.int32) if o.bias is None else np.ascontiguousarray(
        np.broadcast_to(np.asarray(o.bias, np.int32).reshape(-1), (g.m,)))
    tiles_wide, tiles_high = -(-g.ow // 2), -(-g.oh // 2)
    rows = band_rows(tiles_wide, tiles_high, g.n, ctx.threads)
    bands = -(-tiles_high // rows)
    tiles = rows * tiles_wide
    band_w, acc_w = 2 * tiles_wide + 2, 2 * tiles_wide
    product = shared_wide_gemm(ctx)
    shape = (g, o.x_zp, o.x_signed, o.rescale.key, ctx.avx2, rows)

    pad_channel = "" if cp == g.c else (  # the even K's zero channel
        f"%zero.at = getelementptr inbounds i16, ptr %cell.at, i64 {g.c}\n"
        f"  store i16 0, ptr %zero.at, align 2")

    def ir(name: str) -> str:
        store = (_STORE_WHOLE if acc_w == g.ow else _STORE_ROWS).format(
            name=name, ow=g.ow, m=g.m, acc_row=acc_w * g.m)
        return _FUNCTION.format(
            declaration=gemm.declaration(product.name), gemm=product.name,
            store=store_ir(f"{name}.store", o.rescale, g.m, 1, g.oh * g.ow), name=name,
            band_row=band_w * cp, half_row=band_w // 2 * cp, row_codes=tiles_wide * cp,
            bands=bands, rows=rows, tiles_high=tiles_high, tiles_wide=tiles_wide,
            x_image=g.c * g.h * g.w, band_w=band_w, cp=cp, ph=g.ph, pw=g.pw, h=g.h, w=g.w,
            plane=g.h * g.w, c=g.c, pad_channel=pad_channel,
            ext="sext" if o.x_signed else "zext", x_zp=o.x_zp, tiles=tiles,
            input_transform=_input_transform(band_w, cp, tiles), v_pos=tiles * cp,
            u_pos=packed[0].size, s_pos=tiles * mp, m=g.m, mp=mp, acc_w=acc_w,
            output_transform=_output_transform(g.m, mp, tiles, acc_w), oh=g.oh, ow=g.ow,
            y_image=g.m * g.oh * g.ow, store_calls=store)

    fn = ctx.function("int_conv_winograd", shape, ir, needs=(product,))
    args = (Buffer(x), Buffer(y), Buffer(o.residual or y), Const(packed), Const(zeros),
            Const(bias), *(Const(c) for c in o.rescale.consts),
            Scratch((2 * rows + 2) * band_w * cp * 2), Scratch(16 * tiles * cp * 2),
            Scratch(16 * tiles * mp * 4), Scratch(2 * rows * acc_w * g.m * 4),
            Scratch(1))  # the int16 GEMM's workspace: it reads V in place and uses none
    return Call(fn, args, items=g.n * bands)
