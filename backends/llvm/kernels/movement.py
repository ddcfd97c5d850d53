"""Data movement on any element size: Reshape, Flatten, Squeeze, Unsqueeze, Identity, Transpose,
Slice, Concat, Split, Pad, Resize (nearest) and Gather (constant indices), bit for bit as their
numpy kernels in ``qcompiler/ops/tensor.py`` and ``resize.py``. They move bytes, so one kernel
serves every dtype.

Every one of them is a *copy plan*: for every index ``(i_0, ..., i_k)`` of a box of ``dims``,
copy ``run`` contiguous bytes from ``src + src_base + sum(src_d(i_d))`` to
``dst + dst_base + sum(i_d * dst_stride_d)``, where a dimension's source offset is affine
(``i * stride``, any sign: transposes, slices, negative steps) or read from a table of byte
offsets (Resize's nearest indices, Gather's indices, reflect/edge padding). Plans are normalised
(size-1 dimensions dropped, dimensions that are one affine walk merged, contiguous innermost
dimensions folded into ``run``) before their code is generated; a plan that is one contiguous
block is a chunked ``@llvm.memcpy``. Parts: every index of the outer dimensions and every block
of the innermost one moving about ``CHUNK`` bytes (runs longer than that are cut in pieces), so
the threads split any shape. Shape and index inputs must be constants (their values are read at
compile time), else the node runs its numpy kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from qcompiler.graph import Node, Value
from qcompiler.ops.resize import _nearest_index, _resize_axes, _resize_plan, _source_coords
from qcompiler.ops.tensor import onnx_slice

from ..kernel import Buffer, Call, Const, Context, NotNative, attrs, emitter

CHUNK = 1 << 16  # bytes per part of a block copy
_TYPES = {1: "i8", 2: "i16", 4: "i32", 8: "i64"}


@dataclass(frozen=True)
class Dim:
    """One dimension of a copy plan: ``n`` indices, the source offset of index ``i`` in bytes
    (``i * src`` when ``table`` is None, else ``table[i]``) and the destination stride."""

    n: int
    src: int
    dst: int
    table: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Plan:
    """Copy ``run`` bytes for every index of ``dims`` (see the module's docstring)."""

    src: str
    dst: str
    dims: tuple[Dim, ...]
    run: int
    src_base: int = 0
    dst_base: int = 0


def strides(shape: tuple[int, ...], size: int) -> list[int]:
    """C-order byte strides of ``shape`` with elements of ``size`` bytes."""
    out, step = [], size
    for d in reversed(shape):
        out.append(step)
        step *= d
    return out[::-1]


def normalise(plan: Plan) -> Plan:
    """An equivalent plan with no size-1 dimension (a table's one offset goes into the source
    base), identity tables made affine, affine neighbours that form one walk merged, and
    contiguous innermost dimensions folded into ``run``."""
    dims: list[Dim] = []
    base = plan.src_base
    for d in plan.dims:
        if d.n == 1:  # its one index still moves the source when it is from a table
            base += 0 if d.table is None else d.table[0]
            continue
        if d.table is not None and d.table == tuple(i * d.table[1] for i in range(d.n)):
            d = Dim(d.n, d.table[1], d.dst)
        last = dims[-1] if dims else None
        if (last is not None and last.table is None and d.table is None
                and last.src == d.n * d.src and last.dst == d.n * d.dst):
            dims[-1] = Dim(last.n * d.n, d.src, d.dst)
            continue
        dims.append(d)
    run = plan.run
    while dims and dims[-1].table is None and dims[-1].src == run and dims[-1].dst == run:
        run *= dims.pop().n
    return replace(plan, dims=tuple(dims), run=run, src_base=base)


def plan_calls(plan: Plan, ctx: Context) -> list[Call]:
    """The call that carries out ``plan`` (none when it copies nothing)."""
    if plan.run == 0 or any(d.n == 0 for d in plan.dims):
        return []
    plan = normalise(plan)
    if not plan.dims:
        return _block_copy(plan, ctx)
    plan = _split_run(plan)
    tables, key_dims = [], []
    for d in plan.dims:
        if d.table is None:
            key_dims.append((d.n, d.src, d.dst, None))
        else:
            key_dims.append((d.n, 0, d.dst, sum(len(t) for t in tables)))
            tables.append(d.table)
    inner = plan.dims[-1].n
    block = max(1, min(inner, CHUNK // plan.run))
    key = (tuple(key_dims), plan.run, plan.src_base, plan.dst_base, block)
    fn = ctx.function("copy", key, lambda name: _strided_ir(name, key_dims, plan, block))
    args: tuple = (Buffer(plan.src), Buffer(plan.dst))
    if tables:
        args += (Const(np.array([o for t in tables for o in t], np.int64)),)
    items = math.prod(d.n for d in plan.dims[:-1]) * -(-inner // block)
    return [Call(fn, args, items=items)]


def _split_run(plan: Plan) -> Plan:
    """``plan`` with a run longer than ``CHUNK`` bytes cut into equal pieces of at least
    ``CHUNK / 16`` bytes (when its length has such a divisor), so that parts stay small."""
    if plan.run <= CHUNK:
        return plan
    for piece in range(CHUNK, CHUNK // 16, -1):
        if plan.run % piece == 0:
            return replace(plan, dims=plan.dims + (Dim(plan.run // piece, piece, piece),),
                           run=piece)
    return plan


_BLOCK_COPY = """
declare void @llvm.memcpy.p0.p0.i64(ptr noalias nocapture writeonly, ptr noalias nocapture
                                    readonly, i64, i1)

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %src,
                    ptr noalias nocapture writeonly %dst) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %copy, label %exit

copy:
  %first = mul nuw nsw i64 %begin, {chunk}
  %stop.all = mul nuw nsw i64 %end, {chunk}
  %over = icmp sgt i64 %stop.all, {total}
  %stop = select i1 %over, i64 {total}, i64 %stop.all
  %bytes = sub nsw i64 %stop, %first
  %src.first = add nsw i64 %first, {src_base}
  %dst.first = add nsw i64 %first, {dst_base}
  %from = getelementptr inbounds i8, ptr %src, i64 %src.first
  %to = getelementptr inbounds i8, ptr %dst, i64 %dst.first
  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %from, i64 %bytes, i1 false)
  br label %exit

exit:
  ret void
}}
"""


def _block_copy(plan: Plan, ctx: Context) -> list[Call]:
    key = (plan.run, plan.src_base, plan.dst_base)
    fn = ctx.function("block_copy", key, lambda name: _BLOCK_COPY.format(
        name=name, chunk=CHUNK, total=plan.run, src_base=plan.src_base,
        dst_base=plan.dst_base))
    return [Call(fn, (Buffer(plan.src), Buffer(plan.dst)), items=-(-plan.run // CHUNK))]


def _strided_ir(name: str, dims: list[tuple], plan: Plan, block: int) -> str:
    """A loop nest over ``dims``: the outer ones (and the innermost one's block) from the part
    index, then a loop over the innermost one's block."""
    outer, (inner_n, inner_src, inner_dst, inner_table) = dims[:-1], dims[-1]
    blocks = -(-inner_n // block)
    lines = ["  %blk = urem i64 %it, " + str(blocks),
             "  %rest.0 = udiv i64 %it, " + str(blocks)]
    src_terms, dst_terms = [], []
    for k in reversed(range(len(outer))):
        n, src, dst, table = outer[k]
        at = len(outer) - 1 - k
        lines += [f"  %i.{k} = urem i64 %rest.{at}, {n}",
                  f"  %rest.{at + 1} = udiv i64 %rest.{at}, {n}"]
        src_terms.append((f"%i.{k}", src, table))
        dst_terms.append((f"%i.{k}", dst, None))
    lines += _sum("src.base", plan.src_base, src_terms)
    lines += _sum("dst.base", plan.dst_base, dst_terms)
    kind = _TYPES.get(plan.run)
    if kind is None:
        move = [f"  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %from, i64 {plan.run}, "
                f"i1 false)"]
    else:
        move = [f"  %v = load {kind}, ptr %from, align 1",
                f"  store {kind} %v, ptr %to, align 1"]
    inner_src_lines = _offset_lines("%j", inner_src, inner_table, "oj")
    has_tables = any(d[3] is not None for d in dims)
    tables = ", ptr noalias nocapture readonly %tables" if has_tables else ""
    return f"""
declare void @llvm.memcpy.p0.p0.i64(ptr noalias nocapture writeonly, ptr noalias nocapture
                                    readonly, i64, i1)

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %src,
                    ptr noalias nocapture writeonly %dst{tables}) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %part, label %exit

part:
  %it = phi i64 [ %begin, %entry ], [ %it.next, %part.end ]
{chr(10).join(lines)}
  %j.first = mul nuw nsw i64 %blk, {block}
  %j.over = add nuw nsw i64 %j.first, {block}
  %j.high = icmp sgt i64 %j.over, {inner_n}
  %j.stop = select i1 %j.high, i64 {inner_n}, i64 %j.over
  %src.row = getelementptr i8, ptr %src, i64 %src.base
  %dst.row = getelementptr i8, ptr %dst, i64 %dst.base
  br label %copy

copy:
  %j = phi i64 [ %j.first, %part ], [ %j.next, %copy ]
{chr(10).join(inner_src_lines)}
  %from = getelementptr i8, ptr %src.row, i64 %oj
  %dj = mul nsw i64 %j, {inner_dst}
  %to = getelementptr i8, ptr %dst.row, i64 %dj
{chr(10).join(move)}
  %j.next = add nuw nsw i64 %j, 1
  %more = icmp slt i64 %j.next, %j.stop
  br i1 %more, label %copy, label %part.end

part.end:
  %it.next = add nuw nsw i64 %it, 1
  %parts = icmp slt i64 %it.next, %end
  br i1 %parts, label %part, label %exit

exit:
  ret void
}}
"""


def _offset_lines(index: str, stride: int, table: int | None, reg: str) -> list[str]:
    """``%reg`` = the byte offset of ``index`` along a dimension: ``index * stride``, or
    ``tables[table + index]`` when ``table`` is not None."""
    if table is None:
        return [f"  %{reg} = mul nsw i64 {index}, {stride}"]
    return [f"  %{reg}.k = add nuw nsw i64 {index}, {table}",
            f"  %{reg}.at = getelementptr inbounds i64, ptr %tables, i64 %{reg}.k",
            f"  %{reg} = load i64, ptr %{reg}.at"]


def _sum(reg: str, base: int, terms: list[tuple[str, int, int | None]]) -> list[str]:
    """``%reg`` = ``base`` plus the offsets of the (index, stride, table) ``terms``."""
    lines, total = [], str(base)
    for k, (index, stride, table) in enumerate(terms):
        lines += _offset_lines(index, stride, table, f"{reg}.t{k}")
        lines.append(f"  %{reg}.s{k} = add nsw i64 {total}, %{reg}.t{k}")
        total = f"%{reg}.s{k}"
    lines.append(f"  %{reg} = add nsw i64 {total}, 0")
    return lines


# -- the ops -----------------------------------------------------------------------------------


def _shape(value: Value) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def _ints(node: Node, at: int, what: str) -> list[int] | None:
    """The values of constant input ``at`` (None when absent)."""
    value = node.inputs[at] if at < len(node.inputs) else None
    if value is None:
        return None
    if not value.is_constant:
        raise NotNative(f"{what} is not a constant")
    return [int(v) for v in value.data.reshape(-1)]


def _box(value: Value) -> tuple[list[int], list[int], int]:
    """(shape, C-order byte strides, element size) of ``value``."""
    size = value.dtype.np.itemsize
    shape = list(_shape(value))
    return shape, strides(tuple(shape), size), size


def _gather_plan(src: Value, dst: Value, sources: list, src_base: int = 0) -> Plan:
    """Copy into all of ``dst`` (C order), dimension ``d`` reading the source offset
    ``sources[d]``: an affine stride or a table."""
    shape, out_strides, size = _box(dst)
    dims = tuple(Dim(n, s, t) if isinstance(s, int) else Dim(n, 0, t, tuple(s))
                 for n, s, t in zip(shape, sources, out_strides, strict=True))
    return Plan(src.name, dst.name, dims, size, src_base)


@emitter("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")
def copy(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    nbytes = math.prod(_shape(x)) * x.dtype.np.itemsize
    return plan_calls(Plan(x.name, y.name, (), nbytes), ctx)


@emitter("Transpose")
def transpose(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    _, in_strides, _ = _box(x)
    perm = attrs(node).get("perm") or list(reversed(range(len(in_strides))))
    return plan_calls(_gather_plan(x, y, [in_strides[p] for p in perm]), ctx)


@emitter("Slice")
def slice_(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    shape, in_strides, _ = _box(x)
    starts, ends = _ints(node, 1, "starts"), _ints(node, 2, "ends")
    axes, steps = _ints(node, 3, "axes"), _ints(node, 4, "steps")
    if starts is None or ends is None:
        raise NotNative("starts or ends is missing")
    axes = list(range(len(starts))) if axes is None else [a % len(shape) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    sources, base = list(in_strides), 0
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        taken = range(shape[a])[onnx_slice(s, e, st, shape[a])]
        if len(taken):
            base += taken[0] * in_strides[a]
        sources[a] = taken.step * in_strides[a]
    return plan_calls(_gather_plan(x, y, sources, base), ctx)


def _along(node: Node) -> int:
    return attrs(node)["axis"] % len(node.inputs[0].shape)


@emitter("Concat")
def concat(node: Node, ctx: Context) -> list[Call]:
    y = node.outputs[0]
    axis = _along(node)
    _, out_strides, _ = _box(y)
    calls, at = [], 0
    for x in node.inputs:
        shape, in_strides, size = _box(x)
        dims = tuple(Dim(n, s, t) for n, s, t in zip(shape, in_strides, out_strides,
                                                     strict=True))
        calls += plan_calls(Plan(x.name, y.name, dims, size, 0, at * out_strides[axis]), ctx)
        at += shape[axis]
    return calls


@emitter("Split")
def split(node: Node, ctx: Context) -> list[Call]:
    x = node.inputs[0]
    axis = _along(node)
    _, in_strides, _ = _box(x)
    calls, at = [], 0
    for y in node.outputs:
        calls += plan_calls(_gather_plan(x, y, in_strides, at * in_strides[axis]), ctx)
        at += _shape(y)[axis]
    return calls


_FILL = """
define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture writeonly %dst) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %fill, label %exit

fill:
  %first = mul nuw nsw i64 %begin, {chunk}
  %stop.all = mul nuw nsw i64 %end, {chunk}
  %over = icmp sgt i64 %stop.all, {total}
  %stop = select i1 %over, i64 {total}, i64 %stop.all
  br label %element

element:
  %i = phi i64 [ %first, %fill ], [ %i.next, %element ]
  %at = getelementptr inbounds {kind}, ptr %dst, i64 %i
  store {kind} {value}, ptr %at, align 1
  %i.next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %i.next, %stop
  br i1 %more, label %element, label %exit

exit:
  ret void
}}
"""


def _fill(y: Value, value: np.ndarray, ctx: Context) -> list[Call]:
    """Every element of ``y`` set to ``value`` (a one-element array of ``y``'s dtype)."""
    size = y.dtype.np.itemsize
    kind = _TYPES.get(size)
    if kind is None:
        raise NotNative(f"padding {y.dtype} elements")
    bits = int(np.asarray(value, y.dtype.np).reshape(1).view(f"<i{size}")[0])
    total = math.prod(_shape(y))
    chunk = CHUNK // size
    key = (kind, bits, total, chunk)
    fn = ctx.function("fill", key, lambda name: _FILL.format(
        name=name, kind=kind, value=bits, total=total, chunk=chunk))
    return [Call(fn, (Buffer(y.name),), items=-(-total // chunk))] if total else []


@emitter("Pad")
def pad(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    shape, in_strides, _ = _box(x)
    mode = attrs(node)["mode"]
    pads = _ints(node, 1, "pads")
    axes = _ints(node, 3, "axes")
    axes = list(range(len(shape))) if axes is None else [a % len(shape) for a in axes]
    widths = [(0, 0)] * len(shape)
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[k + len(axes)])
    if mode == "constant":
        given = node.inputs[2] if len(node.inputs) > 2 else None
        if given is not None and not given.is_constant:
            raise NotNative("the constant value is not a constant")
        value = np.zeros(1, x.dtype.np) if given is None else given.data
        _, out_strides, size = _box(y)
        dims, src_base, dst_base = [], 0, 0
        for (before, after), n, s, t in zip(widths, shape, in_strides, out_strides,
                                            strict=True):
            dims.append(Dim(n + min(before, 0) + min(after, 0), s, t))
            src_base += max(-before, 0) * s
            dst_base += max(before, 0) * t
        inner = Plan(x.name, y.name, tuple(dims), size, src_base, dst_base)
        return _fill(y, value, ctx) + plan_calls(inner, ctx)
    tables = []
    for (before, after), n, s in zip(widths, shape, in_strides, strict=True):
        crop = np.arange(n)[max(-before, 0):n - max(-after, 0)]
        index = np.pad(crop, (max(before, 0), max(after, 0)), mode=mode)
        tables.append([int(i) * s for i in index])
    return plan_calls(_gather_plan(x, y, tables), ctx)


@emitter("Resize")
def resize(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    a = attrs(node)
    ctm = a["coordinate_transformation_mode"]
    if a["mode"] != "nearest" or ctm == "tf_crop_and_resize" or a["antialias"]:
        raise NotNative(f"Resize in mode {a['mode']!r} with {ctm!r} coordinates")
    shape, in_strides, _ = _box(x)
    scales = node.inputs[2] if len(node.inputs) > 2 else None
    sizes = _ints(node, 3, "sizes")
    if sizes == []:
        sizes = None
    if sizes is None:
        if scales is None or not scales.is_constant:
            raise NotNative("scales is not a constant")
        scales = scales.data.reshape(-1)
    axes = _resize_axes(a["axes"], len(shape))
    out_shape, scl = _resize_plan(tuple(shape), None if sizes else scales,
                                  np.array(sizes) if sizes else None, axes,
                                  a["keep_aspect_ratio_policy"])
    if tuple(out_shape) != _shape(y):
        raise NotNative(f"Resize's planned shape {out_shape} is not its output's {_shape(y)}")
    sources = []
    for d, (n_in, n_out) in enumerate(zip(shape, out_shape, strict=True)):
        if scl[d] == 1 and n_in == n_out:
            sources.append(in_strides[d])
            continue
        coords = _source_coords(ctm, n_out, n_in, scl[d], 0.0, 1.0)
        index = _nearest_index(coords, a["nearest_mode"], n_in)
        sources.append([int(i) * in_strides[d] for i in index])
    return plan_calls(_gather_plan(x, y, sources), ctx)


@emitter("Gather")
def gather(node: Node, ctx: Context) -> list[Call]:
    x, y = node.inputs[0], node.outputs[0]
    indices = _ints(node, 1, "indices")
    shape, in_strides, size = _box(x)
    axis = _along(node)
    if any(not -shape[axis] <= i < shape[axis] for i in indices):
        raise NotNative("an index is out of range")
    table = tuple(i % shape[axis] * in_strides[axis] for i in indices)
    _, out_strides, _ = _box(y)
    dims = [Dim(n, s, t) for n, s, t in zip(shape[:axis], in_strides[:axis], out_strides[:axis],
                                            strict=True)]
    dims.append(Dim(len(table), 0, math.prod(shape[axis + 1:]) * size, table))
    dims += [Dim(n, s, s) for n, s in zip(shape[axis + 1:], in_strides[axis + 1:], strict=True)]
    return plan_calls(Plan(x.name, y.name, tuple(dims), size), ctx)
