"""``IntAdd`` and ``IntMul`` (``qcompiler/ops/int_elementwise.py``) with numpy broadcasting, and
the rescale-and-saturate epilogue every integer kernel of this package ends with.

The epilogue is ``fixed_point.rescale`` then ``saturate`` as IR (DESIGN.md, "Numerics
contract"), its constants computed by the very functions the numpy kernels call
(``shared_multipliers``, float32 multipliers), so the two agree bit for bit:

- ``"fixed_point"``: ``(sum_i sext(v_i) * M0_i + 2^(t-1)) >> t`` in int64 (or in float64
  lanes where a bound on the terms proves that exact: ``scalar_rescale``);
- ``"float"``: ``rint(sum_i float32(v_i) * float32(M_i))`` in float32, term by term in order
  (no contraction into FMA: LLVM keeps IEEE float32 semantics without fast-math flags);

then ``clamp(r + zp, lo, hi)``, computed as ``clamp(r, lo - zp, hi - zp) + zp`` so the clamp
happens before narrowing and the zero point is added as a (wrapping) byte.

A binary op's operands are broadcast to the output shape; the shape is collapsed (size-1 axes
dropped, neighbours merged where both operands broadcast alike) into rows of a contiguous inner
axis along which each operand is either contiguous or one loop-invariant code. Every form of
broadcasting reduces to that, so the loop vectoriser sees a plain inner loop; the work is split
into items of at most ``BLOCK`` elements of one row.

``Builder`` (the IR of nested counted loops) serves the pooling and Requantize kernels too.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from qcompiler.graph import Node
from qcompiler.ops import fixed_point
from qcompiler.ops.int_common import output_range

from ..kernel import Buffer, Call, Context, NotNative, attrs, emitter

BLOCK = 4096  # elements of one row per item: enough to amortise the item's set-up
# float rounding: float32 multipliers this large (or infinite) could make an inf - inf (NaN)
# whose conversion numpy leaves undefined; no real scale ratio comes near it
FLOAT_MULTIPLIER_LIMIT = 2.0**64

DECLARES = """
declare i64 @llvm.smax.i64(i64, i64)
declare i64 @llvm.smin.i64(i64, i64)
declare i64 @llvm.umin.i64(i64, i64)
declare i8 @llvm.smax.i8(i8, i8)
declare i8 @llvm.umax.i8(i8, i8)
declare float @llvm.rint.f32(float)
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
declare float @llvm.maxnum.f32(float, float)
declare float @llvm.minnum.f32(float, float)
declare double @llvm.floor.f64(double)
declare double @llvm.maxnum.f64(double, double)
declare double @llvm.minnum.f64(double, double)
"""


def double_literal(value: float) -> str:
    """``value`` as an LLVM ``double`` literal (the hex of its bits: exact)."""
    bits = struct.unpack("<Q", struct.pack("<d", float(value)))[0]
    return f"0x{bits:016X}"


def float_literal(value: float) -> str:
    """``value`` rounded to float32, as an LLVM ``float`` literal."""
    return double_literal(float(np.float32(value)))


def signed_code(dtype) -> bool:
    """Whether a code dtype (int8/uint8) is signed; ``NotNative`` for any other dtype."""
    if dtype == np.int8:
        return True
    if dtype == np.uint8:
        return False
    raise NotNative(f"codes of dtype {np.dtype(dtype).name}, not int8/uint8")


def constant(node: Node, index: int, what: str) -> np.ndarray:
    value = node.inputs[index]
    if value is None or not value.is_constant:
        raise NotNative(f"{what} is not a constant")
    return value.data


def load_centred(reg: str, base: str, index: str, signed: bool, zero_point: int) -> list[str]:
    """``%reg = code[index] - zero_point`` as i32 (exact for 8-bit codes)."""
    ext = "sext" if signed else "zext"
    return [f"  {reg}.at = getelementptr inbounds i8, ptr {base}, i64 {index}",
            f"  {reg}.code = load i8, ptr {reg}.at",
            f"  {reg}.wide = {ext} i8 {reg}.code to i32",
            f"  {reg} = sub nsw i32 {reg}.wide, {zero_point}"]


@dataclass(frozen=True)
class Saturation:
    """``clamp(r + zero_point, lo, hi)`` stored as a byte."""

    zero_point: int
    lo: int
    hi: int

    @classmethod
    def of(cls, node: Node, zero_point_index: int) -> Saturation:
        zp = constant(node, zero_point_index, "y_zero_point")
        a = attrs(node)
        lo, hi = output_range(a["qmin"], a["qmax"], np.iinfo(zp.dtype))
        return cls(int(zp), lo, hi)

    def key(self) -> tuple:
        return (self.zero_point, self.lo, self.hi)

    def ir(self, reg: str, r: str, kind: str) -> list[str]:
        """``%reg`` (i8) from the rounded ``r``: an i64 (``kind`` "fixed_point"), a float
        ("float") or a double holding an integer ("double")."""
        low, high = self.lo - self.zero_point, self.hi - self.zero_point
        byte = (self.zero_point + 128) % 256 - 128
        if kind in ("float", "double"):
            t = kind
            lines = [f"  {reg}.lo = call {t} @llvm.maxnum.f{'32' if t == 'float' else '64'}"
                     f"({t} {r}, {t} {double_literal(low)})",
                     f"  {reg}.hi = call {t} @llvm.minnum.f{'32' if t == 'float' else '64'}"
                     f"({t} {reg}.lo, {t} {double_literal(high)})",
                     f"  {reg}.int = fptosi {t} {reg}.hi to i32",
                     f"  {reg}.t = trunc i32 {reg}.int to i8"]
        else:
            lines = [f"  {reg}.lo = call i64 @llvm.smax.i64(i64 {r}, i64 {low})",
                     f"  {reg}.hi = call i64 @llvm.smin.i64(i64 {reg}.lo, i64 {high})",
                     f"  {reg}.t = trunc i64 {reg}.hi to i8"]
        return lines + [f"  {reg} = add i8 {reg}.t, {byte}"]


def fixed_point_ir(reg: str, terms: list[tuple[str, str]], half: str, shift: str) -> list[str]:
    """``%reg = (sum_i sext(v_i) * m0_i + half) >> shift`` (i64); ``terms`` are (i32 value,
    i64 M0) operands, ``half``/``shift`` i64 operands (registers or literals)."""
    lines, total = [], ""
    for k, (v, m0) in enumerate(terms):
        lines += [f"  {reg}.w{k} = sext i32 {v} to i64",
                  f"  {reg}.p{k} = mul nsw i64 {reg}.w{k}, {m0}"]
        if total:
            lines.append(f"  {reg}.s{k} = add nsw i64 {total}, {reg}.p{k}")
            total = f"{reg}.s{k}"
        else:
            total = f"{reg}.p{k}"
    return lines + [f"  {reg}.h = add nsw i64 {total}, {half}",
                    f"  {reg} = ashr i64 {reg}.h, {shift}"]


def exact_double_ir(reg: str, terms: list[tuple[str, int]], half: int, shift: int) -> list[str]:
    """``%reg = (sum_i v_i * m0_i + half) >> shift`` computed in float64 (4 native lanes
    instead of emulated int64 ones): exact when every partial sum stays below 2^53, which
    the caller checks; the shift is an exact scaling by 2^-shift, then floor."""
    lines, total = [], ""
    for k, (v, m0) in enumerate(terms):
        lines += [f"  {reg}.d{k} = sitofp i32 {v} to double",
                  f"  {reg}.p{k} = fmul double {reg}.d{k}, {double_literal(m0)}"]
        if total:
            lines.append(f"  {reg}.s{k} = fadd double {total}, {reg}.p{k}")
            total = f"{reg}.s{k}"
        else:
            total = f"{reg}.p{k}"
    return lines + [f"  {reg}.h = fadd double {total}, {double_literal(half)}",
                    f"  {reg}.q = fmul double {reg}.h, {double_literal(2.0**-shift)}",
                    f"  {reg} = call double @llvm.floor.f64(double {reg}.q)"]


def float_ir(reg: str, terms: list[tuple[str, str]]) -> list[str]:
    """``%reg = rint(sum_i float(v_i) * m_i)`` in float32, in order; ``terms`` are (i32 value,
    float multiplier) operands."""
    lines, total = [], ""
    for k, (v, m) in enumerate(terms):
        lines += [f"  {reg}.f{k} = sitofp i32 {v} to float",
                  f"  {reg}.p{k} = fmul float {reg}.f{k}, {m}"]
        if total:
            lines.append(f"  {reg}.s{k} = fadd float {total}, {reg}.p{k}")
            total = f"{reg}.s{k}"
        else:
            total = f"{reg}.p{k}"
    return lines + [f"  {reg} = call float @llvm.rint.f32(float {total})"]


def float_multipliers(multipliers: list[np.ndarray]) -> list[np.ndarray]:
    """The float32 multipliers the ``"float"`` rescale uses (as numpy rounds them)."""
    ms = [np.asarray(m, np.float64).astype(np.float32) for m in multipliers]
    if any(np.any(~(np.abs(m) < FLOAT_MULTIPLIER_LIMIT)) for m in ms):
        raise NotNative(f"a float multiplier of 2^64 or more ({[m.max() for m in ms]})")
    return ms


def scalar_rescale(reg: str, values: list[str], multipliers: list[np.ndarray], rounding: str,
                   bounds: list[int] | None = None) -> tuple[list[str], tuple, str]:
    """The rescale of scalar multipliers with their constants baked in: (IR lines making
    ``%reg``, the key of those constants, the kind of ``%reg`` for ``Saturation.ir``).

    With ``bounds`` (the largest magnitude of each term) the fixed-point sum is computed in
    float64 when that is exact: ``|sum_i v_i * M0_i| <= B = sum_i bound_i * M0_i``; where
    ``2^(t-1) > B`` the result is 0 whatever the terms (``P + 2^(t-1)`` lies in (0, 2^t)), so
    the constants become 0; otherwise ``B + 2^(t-1) < 2^53`` keeps every partial sum exact."""
    if rounding == "float":
        ms = [float_literal(m) for m in float_multipliers(multipliers)]
        return float_ir(reg, list(zip(values, ms, strict=True))), ("float", *ms), "float"
    try:
        m0s, shift = fixed_point.shared_multipliers(multipliers)
    except ValueError as exc:
        raise NotNative(str(exc)) from None
    ints, t = [int(m0) for m0 in m0s], int(shift)
    if bounds is not None:
        bound = sum(b * m0 for b, m0 in zip(bounds, ints, strict=True))
        if t > 0 and 1 << (t - 1) > bound:
            ints, t = [0] * len(ints), 0
        half = 1 << (t - 1) if t > 0 else 0
        if bound + half < 2**53:
            return (exact_double_ir(reg, list(zip(values, ints, strict=True)), half, t),
                    ("double", *ints, t), "double")
    half = 1 << (t - 1) if t > 0 else 0
    return (fixed_point_ir(reg, [(v, str(m0)) for v, m0 in zip(values, ints, strict=True)],
                           str(half), str(t)), ("fixed_point", *ints, t), "fixed_point")


# -- broadcasting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dim:
    """An axis of the collapsed output and whether each operand runs along it (else it is
    broadcast)."""

    size: int
    full: tuple[bool, ...]


def collapse(out: tuple[int, ...], shapes: list[tuple[int, ...]]) -> list[Dim]:
    """The output shape as few axes as possible: size-1 axes dropped, neighbours merged where
    every operand broadcasts alike; at least one axis."""
    padded = [(1,) * (len(out) - len(s)) + tuple(s) for s in shapes]
    dims: list[Dim] = []
    for axis, size in enumerate(out):
        if size == 1:
            continue
        full = tuple(p[axis] == size for p in padded)
        if dims and dims[-1].full == full:
            dims[-1] = Dim(dims[-1].size * size, full)
        else:
            dims.append(Dim(size, full))
    return dims or [Dim(1, (True,) * len(shapes))]


def strides(dims: list[Dim], operand: int) -> list[int]:
    """Element strides of ``operand`` along each collapsed axis (0 where it broadcasts)."""
    out, step = [], 1
    for dim in reversed(dims):
        out.append(step if dim.full[operand] else 0)
        if dim.full[operand]:
            step *= dim.size
    return out[::-1]


def row_offsets(dims: list[Dim], n_operands: int) -> list[str]:
    """IR setting ``%off<k>``, operand k's element offset of the row ``%row`` (the outer
    axes' index), as sums of ``(row / after) % size * stride``."""
    outer = dims[:-1]
    all_strides = [strides(dims, k)[:-1] for k in range(n_operands)]
    lines, totals = [], ["0"] * n_operands
    after = math.prod(d.size for d in outer)
    for j, dim in enumerate(outer):
        after //= dim.size
        if not any(s[j] for s in all_strides):
            continue
        lines += [f"  %q{j} = udiv i64 %row, {after}", f"  %idx{j} = urem i64 %q{j}, {dim.size}"]
        for k, s in enumerate(all_strides):
            if s[j]:
                lines += [f"  %t{k}.{j} = mul nuw nsw i64 %idx{j}, {s[j]}",
                          f"  %s{k}.{j} = add nuw nsw i64 {totals[k]}, %t{k}.{j}"]
                totals[k] = f"%s{k}.{j}"
    return lines + [f"  %off{k} = add i64 {t}, 0" for k, t in enumerate(totals)]


_ROWS = """
define void @{name}(i64 %begin, i64 %end, {params}, ptr noalias nocapture writeonly %y) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %item, label %exit

item:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %item.end ]
  %row = udiv i64 %it, {blocks}
  %block = urem i64 %it, {blocks}
  %lo = mul nuw nsw i64 %block, {block}
  %hi.raw = add nuw nsw i64 %lo, {block}
  %hi = call i64 @llvm.umin.i64(i64 %hi.raw, i64 {inner})
  %y.row = mul nuw nsw i64 %row, {inner}
{setup}
  br label %element

element:
  %i = phi i64 [ %lo, %item ], [ %i.next, %element ]
{body}
  %y.i = add nuw nsw i64 %y.row, %i
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.i
  store i8 %code, ptr %y.at
  %i.next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %i.next, %hi
  br i1 %more, label %element, label %item.end

item.end:
  %it.next = add nuw nsw i64 %it, 1
  %more.items = icmp slt i64 %it.next, %end
  br i1 %more.items, label %item, label %exit

exit:
  ret void
}}
"""


def rows_function(name: str, dims: list[Dim], operands: list[tuple[bool, int]],
                  body: list[str]) -> str:
    """A function over the rows of the collapsed output: operand k (pointer ``%x<k>``, codes
    of signedness ``signed`` centred by ``zero_point``) is ``%v<k>`` (i32) in the inner loop,
    loaded there when it runs along the inner axis, once per row when it broadcasts; ``body``
    turns them into the byte ``%code``."""
    inner = dims[-1]
    setup, loop = row_offsets(dims, len(operands)), []
    for k, (signed, zero_point) in enumerate(operands):
        if inner.full[k]:
            loop += [f"  %i{k} = add nuw nsw i64 %off{k}, %i"]
            loop += load_centred(f"%v{k}", f"%x{k}", f"%i{k}", signed, zero_point)
        else:
            setup += load_centred(f"%v{k}", f"%x{k}", f"%off{k}", signed, zero_point)
    params = ", ".join(f"ptr noalias nocapture readonly %x{k}" for k in range(len(operands)))
    return DECLARES + _ROWS.format(
        name=name, params=params, blocks=-(-inner.size // BLOCK), block=BLOCK,
        inner=inner.size, setup="\n".join(setup), body="\n".join(loop + body))


def rows_items(dims: list[Dim]) -> int:
    return math.prod(d.size for d in dims[:-1]) * -(-dims[-1].size // BLOCK)


# -- IntAdd, IntMul ----------------------------------------------------------------------------


def _largest_centred(dtype, zero_point: int) -> int:
    """The largest ``|code - zero_point|`` of a code dtype."""
    info = np.iinfo(dtype)
    return max(zero_point - int(info.min), int(info.max) - zero_point)


@emitter("IntAdd", "IntMul")
def int_binary(node: Node, ctx: Context) -> list[Call]:
    a, b = node.inputs[:2]
    y = node.outputs[0]
    if y.dtype.np not in (np.int8, np.uint8):
        raise NotNative(f"output of dtype {y.dtype.np.name}")
    zps = [int(constant(node, 2, "a_zero_point")), int(constant(node, 3, "b_zero_point"))]
    operands = [(signed_code(v.dtype.np), zp) for v, zp in zip((a, b), zps, strict=True)]
    rounding = attrs(node)["rounding"]
    if node.op == "IntAdd":
        multipliers = [constant(node, 4, "a_multiplier"), constant(node, 5, "b_multiplier")]
        values, first = ["%v0", "%v1"], []
    else:
        multipliers = [constant(node, 4, "multiplier")]
        values, first = ["%prod"], ["  %prod = mul nsw i32 %v0, %v1"]
    if any(np.size(m) != 1 for m in multipliers):
        raise NotNative("multipliers that are not scalars")
    # IntMul's one product term is faster in float64 lanes than in emulated int64 ones;
    # IntAdd's two terms are not (measured on [1, 64, 56, 56]: 317 against 267 us)
    reach = [_largest_centred(v.dtype.np, zp) for v, zp in zip((a, b), zps, strict=True)]
    bounds = None if node.op == "IntAdd" else [reach[0] * reach[1]]
    rescale, rescale_key, kind = scalar_rescale(
        "%r", values, [m.reshape(()) for m in multipliers], rounding, bounds)
    saturation = Saturation.of(node, len(node.inputs) - 1)
    body = first + rescale + saturation.ir("%code", "%r", kind)
    out = tuple(y.shape)
    if math.prod(out) == 0:
        return []
    dims = collapse(out, [tuple(a.shape), tuple(b.shape)])
    key = (node.op, tuple((d.size, d.full) for d in dims), tuple(operands), rescale_key,
           saturation.key())
    fn = ctx.function(node.op.lower(), key,
                      lambda name: rows_function(name, dims, operands, body))
    return [Call(fn, (Buffer(a.name), Buffer(b.name), Buffer(y.name)), items=rows_items(dims))]


# -- building loops ----------------------------------------------------------------------------


class Builder:
    """IR text of one function body, built block by block, with counted loops and ifs that
    track the current block (what a ``phi`` names as its predecessor)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.block = "entry"
        self.metadata: list[str] = []

    def emit(self, *lines: str) -> None:
        self.lines += lines

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")
        self.block = name

    @contextmanager
    def loop(self, var: str, start: str, stop: str,
             carried: tuple[tuple[str, str, str], ...] = (),
             width: int | None = None) -> Iterator[None]:
        """``for %var in [start, stop)``; each ``(name, type, initial)`` of ``carried`` is
        ``%name`` in the body, which must define ``%name.next``; after the loop ``%name`` is
        the final value. ``width`` caps the vectoriser's lanes (a loop hint)."""
        before = self.block
        self.emit(f"  br label %{var}.head")
        self.label(f"{var}.head")
        self.emit(f"  %{var} = phi i64 [ {start}, %{before} ], [ %{var}.next, %{var}.latch ]")
        for name, type_, initial in carried:
            self.emit(f"  %{name} = phi {type_} [ {initial}, %{before} ], "
                      f"[ %{name}.next, %{var}.latch ]")
        self.emit(f"  %{var}.go = icmp slt i64 %{var}, {stop}",
                  f"  br i1 %{var}.go, label %{var}.body, label %{var}.exit")
        self.label(f"{var}.body")
        yield
        self.emit(f"  br label %{var}.latch")
        self.label(f"{var}.latch")
        hint = ""
        if width is not None:
            n = len(self.metadata)
            self.metadata += [f"!{n} = distinct !{{!{n}, !{n + 1}}}",
                              f'!{n + 1} = !{{!"llvm.loop.vectorize.width", i32 {width}}}']
            hint = f", !llvm.loop !{n}"
        self.emit(f"  %{var}.next = add nsw i64 %{var}, 1", f"  br label %{var}.head{hint}")
        self.label(f"{var}.exit")

    @contextmanager
    def when(self, condition: str, name: str) -> Iterator[None]:
        """The body runs only when the i1 ``condition`` holds."""
        self.emit(f"  br i1 {condition}, label %{name}.then, label %{name}.done")
        self.label(f"{name}.then")
        yield
        self.emit(f"  br label %{name}.done")
        self.label(f"{name}.done")

    def function(self, name: str, params: list[str]) -> str:
        """The function ``@name(i64 %begin, i64 %end, params...)`` with this body."""
        body = "\n".join(self.lines)
        return (f"{DECLARES}\ndefine void @{name}(i64 %begin, i64 %end, {', '.join(params)}) "
                f"{{\nentry:\n{body}\n  ret void\n}}\n" + "\n".join(self.metadata) + "\n")
