"""Tensor ops: shape manipulation, indexing, padding, casts, and the shape-subgraph ops.

Inference here also tracks the known contents of small 0-D/1-D int64 tensors (``Out.sym``):
``Shape`` creates them, ``Gather``/``Slice``/``Concat``/``Squeeze``/``Unsqueeze``/``Cast``/
``Identity`` carry them through, and ``Reshape``/``Expand``/``Tile``/``ConstantOfShape`` read
them, so PyTorch's ``x.view(x.size(0), -1)`` keeps a static feature dimension when the batch
dimension is a symbol. A 0-D tensor's contents are a 1-tuple.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._schema import (
    NP_DTYPES,
    REQUIRED,
    UNKNOWN,
    Ctx,
    InferError,
    Out,
    Unsupported,
    broadcast_shapes,
    dtype_name,
    norm_axis,
    op,
    prod_dims,
)
from .dtypes import FROM_ONNX

SYM_MAX = 64  # longest int64 tensor whose contents inference tracks

# ONNX TensorProto element-type codes of the IR dtypes (Cast's ``to``, QuantizeLinear's
# ``output_dtype``).


# ---------------------------------------------------------------------------------------------
# Helpers for inference.


def known(ctx: Ctx, i: int) -> tuple | None:
    """Contents of input ``i`` when it is a small 0-D/1-D integer tensor whose values are known
    (a constant, or a value with ``sym``), else None."""
    if not ctx.has(i) or ctx.rank(i) > 1 or ctx.dtype(i) not in ("i8", "u8", "i32", "i64"):
        return None
    v = ctx.value(i)
    if isinstance(v, np.ndarray):
        return tuple(int(x) for x in v.reshape(-1)) if v.size <= SYM_MAX else None
    return v


def known_ints(ctx: Ctx, i: int) -> tuple | None:
    """Like ``known`` but only when every entry is an int (no symbols)."""
    v = known(ctx, i)
    return v if v is not None and all(isinstance(d, int) for d in v) else None


def sym_out(dtype: str, shape: tuple, contents: Any) -> Out:
    """An output recording ``contents`` when it is a small 0-D/1-D int32/int64 tensor (tf2onnx
    computes shapes in int32 and casts them to int64 at the end)."""
    ok = (contents is not None and dtype in ("i32", "i64") and len(shape) <= 1
          and len(contents) <= SYM_MAX)
    if ok and dtype == "i32":
        ok = all(-(2**31) <= d < 2**31 for d in contents if isinstance(d, int))
    return Out(dtype, tuple(shape), tuple(contents) if ok else None)


def merge_dim(a: Any, b: Any, what: str) -> Any:
    """The dimension two dims that must be equal at run time share; an error when they differ."""
    if a == b:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise InferError(f"{what}: dimensions {a} and {b} differ")
    if isinstance(a, int) or b == UNKNOWN:
        return a
    if isinstance(b, int) or a == UNKNOWN:
        return b
    return UNKNOWN  # two different symbols


def sum_dims(dims: Any) -> Any:
    """Sum of dimensions: an int, a symbol when the rest are 0, or unknown."""
    total, syms = 0, []
    for d in dims:
        if isinstance(d, int):
            total += d
        else:
            syms.append(d)
    if not syms:
        return total
    return syms[0] if len(syms) == 1 and total == 0 and syms[0] != UNKNOWN else UNKNOWN



def _axes(axes: Any, rank: int, what: str = "axes") -> list[int]:
    """Normalized, duplicate-free axes."""
    out = [norm_axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        raise InferError(f"{what} {list(axes)} repeat an axis")
    return out


def _shape_from(ctx: Ctx, i: int, what: str) -> tuple:
    """A shape given by 1-D int64 input ``i``: its known entries, or one '?' per entry."""
    if ctx.rank(i) != 1:
        ctx.fail(f"{what} must be 1-D, got shape {list(ctx.shape(i))}")
    contents = ctx.ints(i)
    if contents is not None:
        return tuple(contents)
    n = ctx.shape(i)[0]
    if not isinstance(n, int):
        ctx.unsupported(f"the length of {what} is unknown ({n}), so the output rank is "
                        f"unknown")
    return (UNKNOWN,) * n


def _need_ints(ctx: Ctx, i: int, what: str) -> tuple[int, ...]:
    values = ctx.ints(i)
    if values is None or not all(isinstance(v, int) for v in values):
        ctx.unsupported(f"{what} must be known at compile time (a constant)")
    return values


# ---------------------------------------------------------------------------------------------
# Reshaping.


def _flatten(ctx: Ctx) -> list[Out]:
    shape, axis = ctx.shape(0), ctx.attr("axis")
    if not -len(shape) <= axis <= len(shape):
        ctx.fail(f"axis {axis} is out of range for rank {len(shape)}")
    axis += len(shape) if axis < 0 else 0
    return [Out(ctx.dtype(0), (prod_dims(shape[:axis]), prod_dims(shape[axis:])))]


@op("Flatten", ["input"], ["output"], attrs={"axis": 1}, infer=_flatten)
def flatten(x, axis):
    """2-D view: dims before ``axis`` become rows, the rest columns."""
    axis += x.ndim if axis < 0 else 0
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _resolve_reshape(data: tuple, target: tuple, allowzero: int) -> tuple:
    """Output shape of Reshape(data, target): copies 0s, infers -1, cancels equal symbols."""
    out = []
    for k, d in enumerate(target):
        if d == 0 and not allowzero:
            if k >= len(data):
                raise InferError(f"shape entry {k} is 0 (copy) but the input has rank "
                                 f"{len(data)}")
            d = data[k]
        elif isinstance(d, int) and d < -1:
            raise InferError(f"shape entry {k} is {d}")
        out.append(d)
    if out.count(-1) > 1:
        raise InferError(f"shape {list(target)} has more than one -1")
    if allowzero and -1 in out and 0 in out:
        raise InferError(f"shape {list(target)} has both 0 and -1 with allowzero=1")
    # Cancel symbols present on both sides (never '?': two unknowns need not be equal).
    rest_in = list(data)
    rest_out = []
    for d in out:
        if isinstance(d, str) and d != UNKNOWN and d in rest_in:
            rest_in.remove(d)
        elif d != -1:
            rest_out.append(d)
    have, want = prod_dims(rest_in), prod_dims(rest_out)
    if -1 in out:
        if want == 0:
            raise InferError(f"shape {list(target)} has -1 and other entries whose product is 0")
        return tuple(_fill(rest_in, rest_out, data, target) if d == -1 else d for d in out)
    if isinstance(have, int) and isinstance(want, int) and have != want:
        raise InferError(f"cannot reshape {list(data)} ({have} elements) to {list(target)} "
                         f"({want} elements)")
    return tuple(out)


def _fill(rest_in: list, rest_out: list, data: tuple, target: tuple) -> Any:
    """The dimension a Reshape's -1 stands for: (product of ``rest_in``) / (product of
    ``rest_out``), symbols already cancelled; [N, 8, 7, 7] to [-1, 392] gives N."""
    have = math.prod(d for d in rest_in if isinstance(d, int))
    want = math.prod(d for d in rest_out if isinstance(d, int))
    symbols = [d for d in rest_in if not isinstance(d, int)]
    if any(not isinstance(d, int) for d in rest_out):
        return UNKNOWN
    if have % want:
        if symbols:
            return UNKNOWN  # a symbol's value may make it divide
        raise InferError(f"cannot reshape {list(data)} to {list(target)}: "
                         f"{have} elements do not split into rows of {want}")
    if not symbols:
        return have // want
    if len(symbols) == 1 and have == want and symbols[0] != UNKNOWN:
        return symbols[0]
    return UNKNOWN


def _reshape(ctx: Ctx) -> list[Out]:
    if ctx.dtype(1) != "i64" or ctx.rank(1) != 1:
        ctx.fail(f"shape must be a 1-D i64 tensor, got {ctx.dtype(1)}{list(ctx.shape(1))}")
    target = ctx.ints(1)
    if target is None:
        # Unknown entries may be 0 or -1 at run time: only the rank is known.
        shape = _shape_from(ctx, 1, "shape")
    else:
        # Known contents may hold '?': some tensor's dimension, so never -1; it stays '?'.
        shape = _resolve_reshape(ctx.shape(0), target, ctx.attr("allowzero"))
    return [sym_out(ctx.dtype(0), shape, known(ctx, 0))]


@op("Reshape", ["data", "shape"], ["reshaped"], attrs={"allowzero": 0}, infer=_reshape)
def reshape(data, shape, allowzero):
    """Reshape to ``shape``: -1 is inferred, 0 copies the input dim unless ``allowzero``."""
    dims = [int(d) for d in shape]
    if not allowzero:
        dims = [data.shape[k] if d == 0 else d for k, d in enumerate(dims)]
    return data.reshape(dims)


def _transpose(ctx: Ctx) -> list[Out]:
    shape, perm = ctx.shape(0), ctx.attr("perm")
    if perm is None:
        perm = tuple(reversed(range(len(shape))))
    if sorted(perm) != list(range(len(shape))):
        ctx.fail(f"perm {list(perm)} is not a permutation of the {len(shape)} axes")
    return [sym_out(ctx.dtype(0), tuple(shape[p] for p in perm), known(ctx, 0))]


@op("Transpose", ["data"], ["transposed"], attrs={"perm": None}, infer=_transpose)
def transpose(data, perm):
    return np.transpose(data, perm)


def _squeeze(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    axes = _axes(_need_ints(ctx, 1, "axes"), len(shape)) if ctx.has(1) else []
    if axes:
        for a in axes:
            if isinstance(shape[a], int) and shape[a] != 1:
                ctx.fail(f"cannot squeeze axis {a} of size {shape[a]}")
    else:  # no (or empty) axes: every dimension of size 1
        unsure = [d for d in shape if not isinstance(d, int)]
        if unsure:
            ctx.unsupported(f"Squeeze without axes needs static dims to know which to "
                            f"remove; shape {list(shape)} has {unsure[0]}: pass axes")
        axes = [a for a, d in enumerate(shape) if d == 1]
    out = tuple(d for a, d in enumerate(shape) if a not in axes)
    return [sym_out(ctx.dtype(0), out, known(ctx, 0))]


@op("Squeeze", ["data", "axes?"], ["squeezed"], infer=_squeeze)
def squeeze(data, axes=None):
    if axes is None or axes.size == 0:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(int(a) for a in axes))


def _unsqueeze(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    axes = _need_ints(ctx, 1, "axes")
    rank = len(shape) + len(axes)
    axes = _axes(axes, rank)
    rest = iter(shape)
    out = tuple(1 if a in axes else next(rest) for a in range(rank))
    return [sym_out(ctx.dtype(0), out, known(ctx, 0))]


@op("Unsqueeze", ["data", "axes"], ["expanded"], infer=_unsqueeze)
def unsqueeze(data, axes):
    return np.expand_dims(data, tuple(int(a) for a in axes))


# ---------------------------------------------------------------------------------------------
# Joining and splitting.


def _concat(ctx: Ctx) -> list[Out]:
    n = len(ctx.types)
    dtypes = {ctx.dtype(i) for i in range(n)}
    if len(dtypes) != 1:
        ctx.fail(f"inputs must share one dtype, got {', '.join(sorted(dtypes))}")
    shapes = [ctx.shape(i) for i in range(n)]
    rank = len(shapes[0])
    if rank == 0 or any(len(s) != rank for s in shapes):
        ctx.fail(f"inputs must have one rank >= 1, got shapes {', '.join(map(str, shapes))}")
    axis = norm_axis(ctx.attr("axis"), rank)
    out = []
    for a in range(rank):
        dims = [s[a] for s in shapes]
        if a == axis:
            out.append(sum_dims(dims))
            continue
        d = dims[0]
        for e in dims[1:]:
            d = merge_dim(d, e, f"inputs differ on axis {a} (shapes "
                          f"{', '.join(map(str, shapes))})")
        out.append(d)
    parts = [known(ctx, i) for i in range(n)]
    contents = sum(parts, ()) if rank == 1 and None not in parts else None
    return [sym_out(dtypes.pop(), tuple(out), contents)]


@op("Concat", ["inputs*"], ["concat_result"], attrs={"axis": REQUIRED}, infer=_concat)
def concat(*inputs, axis):
    return np.concatenate(inputs, axis=axis)


def _split_sizes(dim: Any, split: Any, num_outputs: Any, n_outputs: int) -> list:
    """Piece lengths along the split axis (ints, or '?' where unknown)."""
    if split is not None:
        if num_outputs is not None:
            raise InferError("give the 'split' input or the num_outputs attribute, not both")
        if len(split) != n_outputs:
            raise InferError(f"split has {len(split)} entries but the node has {n_outputs} "
                             f"outputs")
        if any(isinstance(s, int) and s < 0 for s in split):
            raise InferError(f"split {list(split)} has a negative size")
        total = sum_dims(split)
        if isinstance(total, int) and isinstance(dim, int) and total != dim:
            raise InferError(f"split {list(split)} sums to {total}, but the axis has {dim}")
        return list(split)
    if num_outputs is None:
        raise InferError("Split needs the 'split' input or the num_outputs attribute")
    if num_outputs != n_outputs:
        raise InferError(f"num_outputs={num_outputs} but the node has {n_outputs} outputs")
    if not isinstance(dim, int):
        return [dim] if n_outputs == 1 else [UNKNOWN] * n_outputs
    chunk = -(-dim // n_outputs)
    last = dim - chunk * (n_outputs - 1)
    if last <= 0:
        raise InferError(f"num_outputs={n_outputs} cannot split an axis of {dim}: chunks of "
                         f"{chunk} leave nothing for the last output")
    return [chunk] * (n_outputs - 1) + [last]


def _split(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis"), len(shape))
    split = None
    if ctx.has(1):
        if ctx.dtype(1) != "i64" or ctx.rank(1) != 1:
            ctx.fail("split must be a 1-D i64 tensor")
        split = ctx.ints(1)
        if split is None:
            n = ctx.shape(1)[0]
            split = (UNKNOWN,) * (n if isinstance(n, int) else ctx.n_outputs)
    sizes = _split_sizes(shape[axis], split, ctx.attr("num_outputs"), ctx.n_outputs)
    data = known(ctx, 0)
    outs, start = [], 0
    for size in sizes:
        piece = None
        if data is not None and isinstance(size, int) and start is not None:
            piece = data[start:start + size]
        start = start + size if isinstance(size, int) and start is not None else None
        outs.append(sym_out(ctx.dtype(0), shape[:axis] + (size,) + shape[axis + 1:], piece))
    return outs


@op("Split", ["input", "split?"], ["outputs*"], attrs={"axis": 0, "num_outputs": None},
    infer=_split)
def split(x, split=None, axis=0, num_outputs=None):
    """Pieces along ``axis``: sizes from ``split``, or ``num_outputs`` chunks of ceil(n/k)."""
    if split is None:
        chunk = -(-x.shape[axis] // num_outputs)
        split = [chunk] * (num_outputs - 1) + [x.shape[axis] - chunk * (num_outputs - 1)]
    bounds = np.cumsum([int(s) for s in split])[:-1]
    return tuple(np.split(x, bounds, axis=axis))


# ---------------------------------------------------------------------------------------------
# Padding, tiling, broadcasting.

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad(ctx: Ctx) -> list[Out]:
    shape, mode = ctx.shape(0), ctx.attr("mode")
    if mode not in _PAD_MODES:
        ctx.fail(f"mode {mode!r} is not one of {', '.join(_PAD_MODES)}")
    if ctx.has(2) and ctx.dtype(2) != ctx.dtype(0):
        ctx.fail(f"constant_value is {ctx.dtype(2)} but data is {ctx.dtype(0)}")
    if ctx.dtype(1) != "i64" or ctx.rank(1) != 1:
        ctx.fail("pads must be a 1-D i64 tensor")
    axes = list(range(len(shape)))
    if ctx.has(3):
        given = ctx.ints(3)
        if given is None or not all(isinstance(a, int) for a in given):
            return [Out(ctx.dtype(0), (UNKNOWN,) * len(shape))]
        axes = _axes(given, len(shape))
    pads = ctx.ints(1)
    out = list(shape)
    if pads is None or not all(isinstance(p, int) for p in pads):
        for a in axes:
            out[a] = UNKNOWN
        return [Out(ctx.dtype(0), tuple(out))]
    if len(pads) != 2 * len(axes):
        ctx.fail(f"pads has {len(pads)} entries; {len(axes)} padded axes need {2 * len(axes)}")
    for k, a in enumerate(axes):
        before, after = pads[k], pads[k + len(axes)]
        d = shape[a]
        if before == after == 0:
            continue
        if not isinstance(d, int):
            out[a] = UNKNOWN
            continue
        kept = d + min(before, 0) + min(after, 0)
        grow = max(before, 0) + max(after, 0)
        if kept < 0:
            ctx.fail(f"pads {before}, {after} crop more than the {d} entries of axis {a}")
        if grow and mode != "constant" and kept == 0:
            ctx.fail(f"{mode} padding of axis {a} needs at least one entry to copy")
        if mode == "reflect" and max(before, after) > kept - 1:
            ctx.fail(f"reflect pads {before}, {after} exceed {kept - 1}, the most axis {a} "
                     f"(size {kept}) can mirror")
        out[a] = kept + grow
    return [Out(ctx.dtype(0), tuple(out))]


@op("Pad", ["data", "pads", "constant_value?", "axes?"], ["output"],
    attrs={"mode": "constant"}, infer=_pad)
def pad(data, pads, constant_value=None, axes=None, mode="constant"):
    """Pad (or, with negative pads, crop: cropping happens first, as in onnxruntime)."""
    axes = range(data.ndim) if axes is None else [int(a) % data.ndim for a in axes]
    n = len(axes)
    widths = [[0, 0] for _ in range(data.ndim)]
    for k, a in enumerate(axes):
        widths[a] = [int(pads[k]), int(pads[k + n])]
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for (b, e), d in zip(widths, data.shape,
                                                                        strict=True))
    data = data[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        value = 0 if constant_value is None else constant_value.reshape(())
        return np.pad(data, widths, mode="constant", constant_values=value)
    return np.pad(data, widths, mode=mode)


def _tile(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    if ctx.dtype(1) != "i64" or ctx.rank(1) != 1:
        ctx.fail("repeats must be a 1-D i64 tensor")
    repeats = ctx.ints(1)
    if repeats is None:
        return [Out(ctx.dtype(0), (UNKNOWN,) * len(shape))]
    if len(repeats) != len(shape):
        ctx.fail(f"repeats has {len(repeats)} entries for an input of rank {len(shape)}")
    out = []
    for d, r in zip(shape, repeats, strict=True):
        if isinstance(r, int) and r < 0:
            ctx.fail(f"repeats {list(repeats)} has a negative entry")
        out.append(prod_dims([d, r]) if r != 0 else 0)
    data = known(ctx, 0)
    contents = None  # tracked only while short: a damaged repeat count must not allocate
    if data is not None and isinstance(repeats[0], int) and len(data) * repeats[0] <= SYM_MAX:
        contents = data * repeats[0]
    return [sym_out(ctx.dtype(0), tuple(out), contents if len(shape) == 1 else None)]


@op("Tile", ["input", "repeats"], ["output"], infer=_tile)
def tile(x, repeats):
    return np.tile(x, tuple(int(r) for r in repeats))


def _expand(ctx: Ctx) -> list[Out]:
    if ctx.dtype(1) != "i64":
        ctx.fail(f"shape must be i64, got {ctx.dtype(1)}")
    target = _shape_from(ctx, 1, "shape")
    if any(isinstance(d, int) and d < 0 for d in target):
        ctx.fail(f"shape {list(target)} has a negative entry")
    try:
        out = broadcast_shapes(ctx.shape(0), target)
    except InferError:
        ctx.fail(f"input shape {list(ctx.shape(0))} does not broadcast with shape "
                 f"{list(target)}")
    return [Out(ctx.dtype(0), out)]


@op("Expand", ["input", "shape"], ["output"], infer=_expand)
def expand(x, shape):
    """Broadcast ``x`` and ``shape`` against each other (both ways, as numpy does)."""
    out = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))
    return np.broadcast_to(x, out).copy()


# ---------------------------------------------------------------------------------------------
# Indexing.


def _gather(ctx: Ctx) -> list[Out]:
    shape, idx_shape = ctx.shape(0), ctx.shape(1)
    if ctx.dtype(1) not in ("i32", "i64"):
        ctx.fail(f"indices must be i32 or i64, got {ctx.dtype(1)}")
    if not shape:
        ctx.fail("data must have rank >= 1")
    axis = norm_axis(ctx.attr("axis"), len(shape))
    indices = known_ints(ctx, 1)
    dim = shape[axis]
    if indices is not None and isinstance(dim, int):
        bad = [i for i in indices if not -dim <= i < dim]
        if bad:
            ctx.fail(f"index {bad[0]} is out of range for axis {axis} of size {dim}")
    out = shape[:axis] + tuple(idx_shape) + shape[axis + 1:]
    data = known(ctx, 0)
    contents = None
    if data is not None and indices is not None and len(shape) == 1:
        contents = tuple(data[i] for i in indices)
    return [sym_out(ctx.dtype(0), out, contents)]


@op("Gather", ["data", "indices"], ["output"], attrs={"axis": 0}, infer=_gather)
def gather(data, indices, axis):
    """``data`` indexed along ``axis``; negative indices count from the end."""
    return np.take(data, indices.astype(np.int64), axis=axis)


def _slice_params(starts, ends, axes, steps, rank):
    """(axis, start, end, step) per sliced axis, checked."""
    if len(ends) != len(starts):
        raise InferError(f"starts has {len(starts)} entries but ends has {len(ends)}")
    axes = _axes(range(len(starts)) if axes is None else axes, rank)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(axes) == len(steps) == len(starts):
        raise InferError(f"starts, ends, axes and steps must have one length, got "
                         f"{len(starts)}, {len(ends)}, {len(axes)} and {len(steps)}")
    if 0 in steps:
        raise InferError("steps must not be 0")
    return list(zip(axes, starts, ends, steps, strict=True))


_BIG = 2**31 - 1  # ends at least this large mean "to the end" for a symbolic dimension


def onnx_slice(start: int, end: int, step: int, dim: int) -> slice:
    """A Python slice taking what ONNX's Slice takes along an axis of size ``dim``.

    ONNX clamps a negative step's start into [0, dim - 1], where Python would give nothing for
    a start below -dim; the returned slice has explicit bounds so the two agree.
    """
    start += dim if start < 0 else 0
    end += dim if end < 0 else 0
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def _slice(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    given = [known_ints(ctx, i) if ctx.has(i) else None for i in range(1, 5)]
    for i, name in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps")):
        if ctx.has(i) and (ctx.dtype(i) not in ("i32", "i64") or ctx.rank(i) != 1):
            ctx.fail(f"{name} must be a 1-D i32 or i64 tensor")
    starts, ends, axes, steps = given
    if ctx.has(3) and axes is None:
        return [Out(ctx.dtype(0), (UNKNOWN,) * len(shape))]
    if starts is None or ends is None or (ctx.has(4) and steps is None):
        n = ctx.shape(1)[0]  # without axes, the first len(starts) axes are sliced
        sliced = _axes(axes, len(shape)) if axes is not None else range(
            n if isinstance(n, int) else len(shape))
        return [Out(ctx.dtype(0), tuple(UNKNOWN if a in sliced else d
                                        for a, d in enumerate(shape)))]
    out = list(shape)
    for axis, start, end, step in _slice_params(starts, ends, axes, steps, len(shape)):
        d = shape[axis]
        if isinstance(d, int):
            out[axis] = len(range(d)[onnx_slice(start, end, step, d)])
            continue
        whole = (step == 1 and (start == 0 or start <= -_BIG) and end >= _BIG) or (
            step == -1 and (start == -1 or start >= _BIG) and end <= -_BIG)
        if not whole:
            out[axis] = UNKNOWN
    data = known(ctx, 0)
    contents = None
    if data is not None and len(shape) == 1:
        contents = data
        for _, start, end, step in _slice_params(starts, ends, axes, steps, 1):
            contents = contents[onnx_slice(start, end, step, len(contents))]
    return [sym_out(ctx.dtype(0), tuple(out), contents)]


@op("Slice", ["data", "starts", "ends", "axes?", "steps?"], ["output"], infer=_slice)
def slice_(data, starts, ends, axes=None, steps=None):
    """Strided slices along ``axes``; out-of-range starts and ends are clamped."""
    index = [slice(None)] * data.ndim
    n = len(starts)
    axes = range(n) if axes is None else axes
    steps = [1] * n if steps is None else steps
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        a = int(a) % data.ndim
        index[a] = onnx_slice(int(s), int(e), int(st), data.shape[a])
    return data[tuple(index)].copy()


# ---------------------------------------------------------------------------------------------
# Pass-through ops.


def _identity(ctx: Ctx) -> list[Out]:
    return [sym_out(ctx.dtype(0), ctx.shape(0), known(ctx, 0))]


@op("Identity", ["input"], ["output"], infer=_identity)
def identity(x):
    return x.copy()


def _dropout(ctx: Ctx) -> list[Out]:
    training = ctx.const(2) if ctx.has(2) else None
    ratio = ctx.const(1) if ctx.has(1) else None
    if ctx.has(2) and (training is None or bool(training.reshape(-1)[0])):
        if ratio is None or float(ratio.reshape(-1)[0]) != 0:
            ctx.unsupported("Dropout in training mode is not supported (training_mode must be "
                            "a "
                     "constant false)")
    out = _identity(ctx)[0]
    return [out, Out("bool", ctx.shape(0))]


@op("Dropout", ["data", "ratio?", "training_mode?"], ["output", "mask?"], attrs={"seed": None},
    infer=_dropout)
def dropout(data, ratio=None, training_mode=None, seed=None):
    """Inference-mode dropout: the identity, with an all-true mask."""
    if training_mode is not None and bool(training_mode) and (ratio is None or float(ratio)):
        raise ValueError("Dropout in training mode is not supported")
    return data.copy(), np.ones(data.shape, dtype=np.bool_)


# ---------------------------------------------------------------------------------------------
# Shapes, casts and constants.


def _shape(ctx: Ctx) -> list[Out]:
    dims = ctx.shape(0)[ctx.attr("start"):ctx.attr("end")]
    return [Out("i64", (len(dims),), tuple(dims))]


@op("Shape", ["data"], ["shape"], attrs={"start": 0, "end": None}, infer=_shape)
def shape(data, start, end):
    return np.array(data.shape[start:end], dtype=np.int64)


def cast_target(code: Any) -> str:
    """The IR dtype of an ONNX TensorProto type code, or an error listing the supported ones."""
    if code not in FROM_ONNX:
        supported = ", ".join(f"{c} ({d})" for c, d in FROM_ONNX.items())
        raise Unsupported(f"ONNX element type {code} is not supported (supported: {supported})")
    return FROM_ONNX[code]


def _cast(ctx: Ctx) -> list[Out]:
    target = cast_target(ctx.attr("to"))
    return [sym_out(target, ctx.shape(0), known(ctx, 0))]


def convert(x: np.ndarray, target: Any) -> np.ndarray:
    """``x`` converted to numpy dtype ``target`` as Cast does. Float to integer truncates toward
    zero; out-of-range values (undefined in ONNX) go through int32 first, as onnxruntime's x86
    conversion does."""
    target = np.dtype(target)
    with np.errstate(invalid="ignore", over="ignore"):
        if x.dtype.kind == "f" and target.kind in "iu" and target.itemsize < 4:
            return x.astype(np.int32).astype(target)
        return x.astype(target)


@op("Cast", ["input"], ["output"], attrs={"to": REQUIRED, "saturate": 1}, infer=_cast)
def cast(x, to, saturate):
    """Convert to ONNX type ``to`` (see ``convert``)."""
    return convert(x, NP_DTYPES[FROM_ONNX[to]])


def _cast_like(ctx: Ctx) -> list[Out]:
    return [sym_out(ctx.dtype(1), ctx.shape(0), known(ctx, 0))]


@op("CastLike", ["input", "target_type"], ["output"], attrs={"saturate": 1}, infer=_cast_like)
def cast_like(x, target_type, saturate):
    """Convert to the element type of ``target_type`` (see ``convert``)."""
    return convert(x, target_type.dtype)


def _size(ctx: Ctx) -> list[Out]:
    n = prod_dims(ctx.shape(0))
    return [Out("i64", (), (n,) if n != UNKNOWN else None)]


@op("Size", ["data"], ["size"], infer=_size)
def size(data):
    """The number of elements, as an int64 scalar."""
    return np.array(data.size, dtype=np.int64)


_ZERO = np.zeros(1, np.float32)
_ZERO.setflags(write=False)


def _constant_of_shape(ctx: Ctx) -> list[Out]:
    value = ctx.attr("value")
    if not isinstance(value, np.ndarray) or value.size != 1:
        ctx.fail("value must be a one-element tensor")
    if ctx.dtype(0) != "i64":
        ctx.fail(f"the shape input must be i64, got {ctx.dtype(0)}")
    dims = _shape_from(ctx, 0, "input")
    if any(isinstance(d, int) and d < 0 for d in dims):
        ctx.fail(f"shape {list(dims)} has a negative entry")
    contents = None
    if len(dims) == 1 and isinstance(dims[0], int) and dims[0] <= SYM_MAX:
        contents = (int(value.reshape(-1)[0]),) * dims[0] if value.dtype == np.int64 else None
    return [sym_out(dtype_name(value.dtype), dims, contents)]


@op("ConstantOfShape", ["input"], ["output"], attrs={"value": _ZERO}, infer=_constant_of_shape)
def constant_of_shape(shape, value):
    return np.full(tuple(int(d) for d in shape), value.reshape(-1)[0], dtype=value.dtype)


def _constant(ctx: Ctx) -> list[Out]:
    value = ctx.attr("value")
    if not isinstance(value, np.ndarray):
        ctx.fail(f"value must be a tensor (np.ndarray), got {type(value).__name__}")
    contents = None
    if value.dtype == np.int64 and value.ndim <= 1 and value.size <= SYM_MAX:
        contents = tuple(int(v) for v in value.reshape(-1))
    return [sym_out(dtype_name(value.dtype), value.shape, contents)]


@op("Constant", [], ["output"], attrs={"value": REQUIRED}, infer=_constant)
def constant(value):
    return np.array(value, copy=True)


# ---------------------------------------------------------------------------------------------
# Generated tensors.


def _scalar(ctx: Ctx, i: int, what: str) -> None:
    dims = ctx.shape(i)
    if dims and not (len(dims) == 1 and dims[0] == 1):
        ctx.fail(f"{what} must be a scalar, got shape {list(dims)}")


def _range_length(start: Any, limit: Any, delta: Any) -> int:
    """ONNX's element count max(ceil((limit - start) / delta), 0), exact for integers."""
    if all(isinstance(v, (int, np.integer)) for v in (start, limit, delta)):
        start, limit, delta = int(start), int(limit), int(delta)
        return max(-((start - limit) // delta), 0)
    return max(math.ceil((float(limit) - float(start)) / float(delta)), 0)


def _range(ctx: Ctx) -> list[Out]:
    dtype = ctx.dtype(0)
    if dtype not in ("f32", "i32", "i64") or {ctx.dtype(1), ctx.dtype(2)} != {dtype}:
        ctx.fail(f"start, limit and delta must share one dtype among f32, i32 and i64, got "
                 f"{ctx.dtype(0)}, {ctx.dtype(1)} and {ctx.dtype(2)}")
    for i, what in enumerate(("start", "limit", "delta")):
        _scalar(ctx, i, what)
    given = [ctx.const(i) for i in range(3)]
    if any(v is None for v in given):
        return [Out(dtype, (UNKNOWN,))]
    start, limit, delta = (v.reshape(-1)[0] for v in given)
    if delta == 0:
        ctx.fail("delta must not be 0")
    n = _range_length(start, limit, delta)
    contents = None
    if dtype == "i64" and n <= SYM_MAX:
        contents = tuple(int(v) for v in range_(*given))
    return [sym_out(dtype, (n,), contents)]


@op("Range", ["start", "limit", "delta"], ["output"], infer=_range)
def range_(start, limit, delta):
    """``start + k * delta`` for k below ``max(ceil((limit - start) / delta), 0)``."""
    start, limit, delta = (np.asarray(v).reshape(-1)[0] for v in (start, limit, delta))
    n = _range_length(start, limit, delta)
    return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)


def _trilu(ctx: Ctx) -> list[Out]:
    if ctx.rank(0) < 2:
        ctx.fail(f"input must have rank >= 2, got shape {list(ctx.shape(0))}")
    if ctx.has(1):
        if ctx.dtype(1) != "i64":
            ctx.fail(f"k must be i64, got {ctx.dtype(1)}")
        _scalar(ctx, 1, "k")
    return [Out(ctx.dtype(0), ctx.shape(0))]


@op("Trilu", ["input", "k?"], ["output"], attrs={"upper": 1}, infer=_trilu)
def trilu(x, k=None, upper=1):
    """The upper (or lower) triangle of the last two axes from diagonal ``k``, zeros elsewhere."""
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, k) if upper else np.tril(x, k)
