"""``IntAveragePool``, ``IntGlobalAveragePool`` (``qcompiler/ops/int_elementwise.py``),
``MaxPool`` and ``GlobalMaxPool`` (``qcompiler/ops/nn.py``) on int8/uint8 codes, 1-D and 2-D.

The window geometry is the numpy kernels' own (``window.conv_window``: pads, auto_pad,
strides, dilations, ceil_mode), and so are the average pools' per-window multipliers
(``nn.pool_counts``, then ``shared_multipliers`` or float32), computed at compile time into
constant tables. A tap outside the input adds nothing to a window (the numpy kernels pad the
centred input with 0, MaxPool with the dtype's lowest code, which never beats a real code).

A pooled 2-D kernel computes one output row per item: for every kernel row inside the input
and every kernel column, a contiguous (or strided) run of the input row is added into (or
max-ed with) the row of int32 sums in the thread's scratch (the output row itself for
MaxPool); the columns each kernel column reaches are a constant table, so the inner loop has
no bounds checks and vectorises. Then the sums are rescaled and saturated as every integer op
ends (``elementwise``). A 1-D pool is a 2-D pool of height 1. The global pools reduce one
plane per item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qcompiler.graph import Node
from qcompiler.ops import fixed_point
from qcompiler.ops.nn import pool_counts
from qcompiler.ops.window import Window, conv_window

from ..kernel import Buffer, Call, Const, Context, NotNative, Scratch, attrs, emitter
from .elementwise import (
    Builder,
    Saturation,
    constant,
    fixed_point_ir,
    float_ir,
    float_multipliers,
    load_centred,
    scalar_rescale,
    signed_code,
)

STRIDED_WIDTH = 8  # lanes of the window loop over strided input columns


def _geometry(node: Node) -> tuple[tuple[int, ...], tuple[int, ...], Window]:
    """(spatial input shape, kernel, window) of a windowed pool, as its numpy kernel has it."""
    a = attrs(node)
    x = node.inputs[0]
    spatial = tuple(x.shape[2:])
    if len(spatial) not in (1, 2):
        raise NotNative(f"{len(spatial)} spatial axes (only 1 or 2)")
    kernel = tuple(a["kernel_shape"])
    win = conv_window(node.op, spatial, kernel, a["strides"], a["dilations"], a["pads"],
                      a["auto_pad"], a["ceil_mode"])
    return spatial, kernel, win


def _as_2d(values: tuple, fill: int) -> tuple[int, int]:
    return (fill, *values) if len(values) == 1 else tuple(values)


def _column_runs(width: int, out: int, k: int, stride: int, dilation: int,
                 begin: int) -> np.ndarray:
    """Per kernel column: (first output column, end output column, input column of output
    column 0) such that every output column in [first, end) reads inside the input."""
    runs = np.zeros((k, 3), np.int64)
    for kx in range(k):
        origin = kx * dilation - begin  # input column = output column * stride + origin
        first = min(out, max(0, -(origin // stride)))
        reach = width - 1 - origin
        end = max(first, min(out, reach // stride + 1)) if reach >= 0 else first
        runs[kx] = first, end, origin
    return runs


@dataclass(frozen=True)
class Fold:
    """How a pool folds its taps: the element type of its sums (i32 centred codes for the
    average, the i8 codes themselves for the maximum), the byte its rows start from (memset)
    and the IR of ``combine(a, b)``."""

    type: str
    size: int
    fill: int
    combine: str
    zero_point: int | None

    def ir(self, reg: str, a: str, b: str) -> str:
        return f"  {reg} = {self.combine.format(a=a, b=b)}"


def average_fold(zero_point: int) -> Fold:
    return Fold("i32", 4, 0, "add nsw i32 {a}, {b}", zero_point)


def max_fold(signed: bool) -> Fold:
    larger = "@llvm.smax.i8" if signed else "@llvm.umax.i8"
    return Fold("i8", 1, -128 if signed else 0, f"call i8 {larger}(i8 {{a}}, i8 {{b}})", None)


def _window_loops(b: Builder, g: dict, signed: bool, fold: Fold, out: str) -> None:
    """Fold output row ``%oy``'s windows into the row ``out`` (already filled), separably:
    first the kernel rows inside the input into the row ``%cols`` (one value per input
    column, contiguous loads), then, for every kernel column, the columns of ``%cols`` each
    output column reaches (a constant table of runs: no bounds checks in the loops)."""
    w, t = g["w"], fold.type
    b.emit(f"  call void @llvm.memset.p0.i64(ptr %cols, i8 {fold.fill}, i64 {w * fold.size}, "
           "i1 false)",
           f"  %oy.top = mul nsw i64 %oy, {g['sh']}",
           f"  %oy.from = sub nsw i64 %oy.top, {g['pt']}")
    with b.loop("ky", "0", str(g["kh"])):
        b.emit(f"  %ky.off = mul nsw i64 %ky, {g['dh']}",
               "  %iy = add nsw i64 %oy.from, %ky.off",
               f"  %iy.in = icmp ult i64 %iy, {g['h']}")
        with b.when("%iy.in", "inside"):
            b.emit(f"  %iy.row = mul nsw i64 %iy, {w}",
                   "  %x.row = add nsw i64 %x.plane, %iy.row")
            with b.loop("ix", "0", str(w)):
                b.emit("  %x.i = add nsw i64 %x.row, %ix")
                if fold.zero_point is None:
                    b.emit("  %tap.at = getelementptr inbounds i8, ptr %x, i64 %x.i",
                           "  %tap = load i8, ptr %tap.at")
                else:
                    b.emit(*load_centred("%tap", "%x", "%x.i", signed, fold.zero_point))
                b.emit(f"  %col.at = getelementptr inbounds {t}, ptr %cols, i64 %ix",
                       f"  %col.old = load {t}, ptr %col.at",
                       fold.ir("%col.new", "%col.old", "%tap"),
                       f"  store {t} %col.new, ptr %col.at")
    with b.loop("kx", "0", str(g["kw"])):
        b.emit("  %run = mul nsw i64 %kx, 3",
               "  %run.first.at = getelementptr inbounds i64, ptr %runs, i64 %run",
               "  %run.first = load i64, ptr %run.first.at",
               "  %run.end.i = add nsw i64 %run, 1",
               "  %run.end.at = getelementptr inbounds i64, ptr %runs, i64 %run.end.i",
               "  %run.end = load i64, ptr %run.end.at",
               "  %run.origin.i = add nsw i64 %run, 2",
               "  %run.origin.at = getelementptr inbounds i64, ptr %runs, i64 %run.origin.i",
               "  %run.origin = load i64, ptr %run.origin.at")
        # strided loads at full width cost LLVM seconds of compile time for little
        with b.loop("ox", "%run.first", "%run.end",
                    width=STRIDED_WIDTH if g["sw"] > 1 else None):
            b.emit(f"  %ox.step = mul nsw i64 %ox, {g['sw']}",
                   "  %col.i = add nsw i64 %run.origin, %ox.step",
                   f"  %col.from = getelementptr inbounds {t}, ptr %cols, i64 %col.i",
                   f"  %col = load {t}, ptr %col.from",
                   f"  %out.at = getelementptr inbounds {t}, ptr {out}, i64 %ox",
                   f"  %out.old = load {t}, ptr %out.at",
                   fold.ir("%out.new", "%out.old", "%col"),
                   f"  store {t} %out.new, ptr %out.at")


def _pool_geometry(node: Node) -> tuple[dict, np.ndarray, int]:
    """The constants of a windowed pool's loops (what its IR depends on), its column runs and
    its items (planes times output rows)."""
    spatial, kernel, win = _geometry(node)
    h, w = _as_2d(spatial, 1)
    kh, kw = _as_2d(kernel, 1)
    sh, sw = _as_2d(win.strides, 1)
    dh, dw = _as_2d(win.dilations, 1)
    pt, pl = _as_2d(win.begin, 0)
    oh, ow = _as_2d(win.out, 1)
    geometry = dict(h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, pt=pt, oh=oh, ow=ow)
    runs = _column_runs(w, ow, kw, sw, dw, pl)
    planes = math.prod(node.inputs[0].shape[:2])
    return geometry, runs, planes * oh


def _row_start(b: Builder, geometry: dict) -> None:
    """``%oy`` and the plane's input offset ``%x.plane`` of item ``%it`` (one output row)."""
    b.emit(f"  %plane = udiv i64 %it, {geometry['oh']}",
           f"  %oy = urem i64 %it, {geometry['oh']}",
           f"  %x.plane = mul nsw i64 %plane, {geometry['h'] * geometry['w']}",
           f"  %y.row = mul nsw i64 %it, {geometry['ow']}")


@emitter("IntAveragePool")
def int_average_pool(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    signed = signed_code(x.dtype.np)
    zero_point = int(constant(node, 1, "x_zero_point"))
    multiplier = constant(node, 2, "multiplier")
    saturation = Saturation.of(node, 3)
    a = attrs(node)
    rounding = a["rounding"]
    geometry, runs, items = _pool_geometry(node)
    if math.prod(y.shape) == 0:
        return []
    spatial, kernel, win = _geometry(node)
    counts = pool_counts(spatial, kernel, win, a["count_include_pad"])
    per_window = np.divide(np.float64(multiplier), counts, out=np.zeros(counts.shape),
                           where=counts > 0).reshape(-1)
    if rounding == "float":
        (ms,) = float_multipliers([per_window])
        tables = [ms]
        scale = float_ir("%r", [("%sum", "%m")])
        loads = [("%m", "float", 0)]
    else:
        try:
            (m0,), shift = fixed_point.shared_multipliers([per_window])
        except ValueError as exc:
            raise NotNative(str(exc)) from None
        half = np.where(shift > 0, np.left_shift(1, np.maximum(shift - 1, 0)), 0)
        # M0 < 2^31 as int32, widened in the loop: LLVM then multiplies 32 x 32 -> 64 bits
        tables = [np.asarray(m0, np.int32), *(np.asarray(t, np.int64) for t in (half, shift))]
        scale = ["  %m0 = sext i32 %m0.raw to i64",
                 *fixed_point_ir("%r", [("%sum", "%m0")], "%half", "%shift")]
        loads = [("%m0.raw", "i32", 0), ("%half", "i64", 1), ("%shift", "i64", 2)]
    ow = geometry["ow"]

    def ir(name: str) -> str:
        b = Builder()
        with b.loop("it", "%begin", "%end"):
            _row_start(b, geometry)
            b.emit(f"  call void @llvm.memset.p0.i64(ptr %acc, i8 0, i64 {4 * ow}, i1 false)",
                   f"  %cols = getelementptr inbounds i8, ptr %acc, i64 {4 * ow}")
            _window_loops(b, geometry, signed, average_fold(zero_point), "%acc")
            b.emit(f"  %p.row = mul nsw i64 %oy, {ow}")
            with b.loop("o", "0", str(ow)):
                b.emit("  %sum.o = getelementptr inbounds i32, ptr %acc, i64 %o",
                       "  %sum = load i32, ptr %sum.o",
                       "  %p = add nsw i64 %p.row, %o")
                for reg, type_, k in loads:
                    b.emit(f"  {reg}.at = getelementptr inbounds {type_}, ptr %t{k}, i64 %p",
                           f"  {reg} = load {type_}, ptr {reg}.at")
                b.emit(*scale, *saturation.ir("%code", "%r", rounding),
                       "  %y.i = add nsw i64 %y.row, %o",
                       "  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.i",
                       "  store i8 %code, ptr %y.at")
        params = ["ptr noalias nocapture readonly %x", "ptr noalias nocapture writeonly %y",
                  "ptr noalias nocapture readonly %runs", "ptr noalias nocapture %acc"]
        params += [f"ptr noalias nocapture readonly %t{k}" for k in range(len(tables))]
        return b.function(name, params)

    key = ("avg", tuple(sorted(geometry.items())), signed, zero_point, rounding,
           saturation.key())
    fn = ctx.function("int_average_pool", key, ir)
    args = (Buffer(x.name), Buffer(y.name), Const(runs), Scratch(4 * (ow + geometry["w"])),
            *(Const(np.ascontiguousarray(t)) for t in tables))
    return [Call(fn, args, items=items)]


@emitter("MaxPool")
def max_pool(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    if len([v for v in node.outputs if v is not None]) != 1:
        raise NotNative("the Indices output")
    signed = signed_code(x.dtype.np)
    geometry, runs, items = _pool_geometry(node)
    if math.prod(y.shape) == 0:
        return []
    fold = max_fold(signed)
    ow = geometry["ow"]

    def ir(name: str) -> str:
        b = Builder()
        with b.loop("it", "%begin", "%end"):
            _row_start(b, geometry)
            b.emit("  %y.first = getelementptr inbounds i8, ptr %y, i64 %y.row",
                   f"  call void @llvm.memset.p0.i64(ptr %y.first, i8 {fold.fill}, i64 {ow}, "
                   "i1 false)")
            _window_loops(b, geometry, signed, fold, "%y.first")
        return b.function(name, ["ptr noalias nocapture readonly %x",
                                 "ptr noalias nocapture %y",
                                 "ptr noalias nocapture readonly %runs",
                                 "ptr noalias nocapture %cols"])

    key = ("max", tuple(sorted(geometry.items())), signed)
    fn = ctx.function("max_pool", key, ir)
    return [Call(fn, (Buffer(x.name), Buffer(y.name), Const(runs), Scratch(geometry["w"])),
                 items=items)]


def _opaque(size: int) -> Const:
    """A plane's size as a constant the code loads: a size LLVM sees (an ``Int``, inlined)
    lets it fully unroll the vectorised reduction, which costs seconds of compile time for
    planes of about 64 codes."""
    return Const(np.array([size], np.int64))


def _plane_loop(b: Builder, size: int, signed: bool, fold: Fold) -> None:
    """``%total``: plane ``%it``'s codes folded (centred i32 sums, or the i8 maximum)."""
    b.emit("  %size = load i64, ptr %size.at", "  %x.plane = mul nsw i64 %it, %size")
    with b.loop("i", "0", "%size", carried=(("total", fold.type, str(fold.fill)),)):
        b.emit("  %x.i = add nsw i64 %x.plane, %i")
        if fold.zero_point is None:
            b.emit("  %v.at = getelementptr inbounds i8, ptr %x, i64 %x.i",
                   "  %v = load i8, ptr %v.at")
        else:
            b.emit(*load_centred("%v", "%x", "%x.i", signed, fold.zero_point))
        b.emit(fold.ir("%total.next", "%total", "%v"))


@emitter("IntGlobalAveragePool")
def int_global_average_pool(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    signed = signed_code(x.dtype.np)
    zero_point = int(constant(node, 1, "x_zero_point"))
    multiplier = constant(node, 2, "multiplier")
    saturation = Saturation.of(node, 3)
    rounding = attrs(node)["rounding"]
    planes, size = math.prod(x.shape[:2]), math.prod(x.shape[2:])
    if planes == 0:
        return []
    per_window = np.float64(multiplier) / size if size else np.float64(0)
    scale, scale_key, kind = scalar_rescale("%r", ["%total"], [per_window], rounding)

    def ir(name: str) -> str:
        b = Builder()
        with b.loop("it", "%begin", "%end"):
            _plane_loop(b, size, signed, average_fold(zero_point))
            b.emit(*scale, *saturation.ir("%code", "%r", kind),
                   "  %y.at = getelementptr inbounds i8, ptr %y, i64 %it",
                   "  store i8 %code, ptr %y.at")
        return b.function(name, ["ptr noalias nocapture readonly %x",
                                 "ptr noalias nocapture writeonly %y",
                                 "ptr noalias nocapture readonly %size.at"])

    key = ("global avg", signed, zero_point, scale_key, saturation.key())
    fn = ctx.function("int_global_average_pool", key, ir)
    return [Call(fn, (Buffer(x.name), Buffer(y.name), _opaque(size)), items=planes)]


@emitter("GlobalMaxPool")
def global_max_pool(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    signed = signed_code(x.dtype.np)
    planes, size = math.prod(x.shape[:2]), math.prod(x.shape[2:])
    if size == 0:
        raise NotNative("an empty plane (numpy refuses its maximum)")
    if planes == 0:
        return []
    fold = max_fold(signed)

    def ir(name: str) -> str:
        b = Builder()
        with b.loop("it", "%begin", "%end"):
            _plane_loop(b, size, signed, fold)
            b.emit("  %y.at = getelementptr inbounds i8, ptr %y, i64 %it",
                   "  store i8 %total, ptr %y.at")
        return b.function(name, ["ptr noalias nocapture readonly %x",
                                 "ptr noalias nocapture writeonly %y",
                                 "ptr noalias nocapture readonly %size.at"])

    fn = ctx.function("global_max_pool", (signed,), ir)
    return [Call(fn, (Buffer(x.name), Buffer(y.name), _opaque(size)), items=planes)]
