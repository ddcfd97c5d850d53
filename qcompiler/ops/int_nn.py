"""IntConv and IntMatMul: int8/uint8 convolution and matrix product with an int32 accumulator
and one requantizing rescale (qcompiler ops, not ONNX; the integer op set's contract).

Both compute exactly their formula; the ``lower-int`` pass folds every compile-time term
(input zero point sums, bias) into ``bias``:

    IntConv:   acc[n,c,p] = bias[c] + sum_k x_pad[n,k(p)] * (w[c,k] - w_zero_point[c])
               (x_pad: x padded with x_zero_point; x itself is not centred)
    IntMatMul: acc[..,m,n] = bias[n] + sum_k a[..,m,k] * (b[..,k,n] - b_zero_point[n])
                             - a_zero_point * sum_k b[..,k,n]
    y = saturate(rescale(terms, multipliers, rounding), y_zero_point, qmin, qmax)

with ``fixed_point.rescale``/``saturate``: terms ``[acc]`` with per-channel ``multiplier``
(IntConv adds the fused residual ``z - z_zero_point`` with ``z_multiplier``).

The integer products run through float BLAS, exactly: every product of two int8/uint8 codes
(the weight centred by its zero point, so within [-255, 255]) is below 2^16 in magnitude, so
each partial sum of K of them stays below 2^53 in float64 (exact for any K < 2^37); float32
(twice as fast) serves when a bound on every partial sum from the weights is below 2^24
(``_exactness``). The sums are then cast to integers. An accumulator that leaves the int32
range is a ``ValueError`` naming the op (the backends report it as an ``ExecutionError``
naming the node): the lowering's static check is meant to make that impossible.
"""

from __future__ import annotations

import math

import numpy as np

from . import int_common as ic
from ._nn_common import is_int
from ._schema import Ctx, Out, op
from .nn import CONV_ATTRS, conv_output_shape, conv_ranks, matmul_output_shape
from .window import Window, check_kernel_shape, conv_window

_INT32 = np.iinfo(np.int32)


def _check_int32(acc: np.ndarray, op_name: str) -> None:
    """Refuse an accumulator that leaves the int32 range."""
    if acc.size and (acc.min() < _INT32.min or acc.max() > _INT32.max):
        raise ValueError(f"{op_name}: the int32 accumulator overflows (values in "
                         f"[{acc.min()}, {acc.max()}]); the layer needs a smaller K, narrower "
                         f"weights or a split")


# ---------------------------------------------------------------------------------------------
# IntConv.

_CONV_INPUTS = ["x", "w", "multiplier", "x_zero_point", "y_zero_point", "bias?",
                "w_zero_point?", "z?", "z_zero_point?", "z_multiplier?"]


def _infer_int_conv(ctx: Ctx) -> list[Out]:
    x_dtype = ic.codes(ctx, 0, "x")
    w_dtype = ic.codes(ctx, 1, "w")
    xs, ws, group = conv_ranks(ctx)
    out = conv_output_shape(ctx, xs, ws, group)
    m = ws[0]
    ic.multiplier(ctx, 2, "multiplier", m)
    ic.zero_point(ctx, 3, "x_zero_point", x_dtype)
    dtype = ic.output(ctx, 4)
    ic.bias(ctx, 5, m)
    if ctx.has(6):
        ic.zero_point(ctx, 6, "w_zero_point", w_dtype, m)
    fused = [ctx.has(i) for i in (7, 8, 9)]
    if any(fused) and not all(fused):
        ctx.fail(f"{ctx.op}: the fused residual needs z, z_zero_point and z_multiplier "
                 f"together")
    if all(fused):
        z_dtype = ic.codes(ctx, 7, "z")
        zs = ctx.shape(7)
        if len(zs) != len(out) or any(is_int(a, b) and a != b for a, b in zip(zs, out)):
            ctx.fail(f"{ctx.op}: the residual z{list(zs)} must have the output shape "
                     f"{list(out)} (it is added without broadcasting)")
        ic.zero_point(ctx, 8, "z_zero_point", z_dtype)
        ic.multiplier(ctx, 9, "z_multiplier")
    return [Out(dtype, out)]


@op("IntConv", _CONV_INPUTS, ["y"], attrs={**CONV_ATTRS, **ic.RESCALE_ATTRS},
    infer=_infer_int_conv, attr_types=ic.RESCALE_ATTR_TYPES)
def int_conv(x, w, multiplier, x_zero_point, y_zero_point, bias=None, w_zero_point=None, z=None,
             z_zero_point=None, z_multiplier=None, *, auto_pad, dilations, group, kernel_shape,
             pads, strides, rounding, qmin, qmax):
    """Integer convolution (groups, depthwise, strides, dilations, pads and auto_pad as ONNX
    Conv), padded with ``x_zero_point``:

    ``acc[n,c,p] = bias[c] + sum_k x_pad[n,k(p)] * (w[c,k] - w_zero_point[c])`` in int32,
    ``y = saturate(rescale([acc (, z - z_zero_point)], [multiplier[c] (, z_multiplier)],
    rounding), y_zero_point, qmin, qmax)``. ``multiplier = s_x * s_w[c] / s_y``; the lowering
    folds ``-x_zero_point * sum_k (w[c,k] - w_zero_point[c])`` into ``bias``.

    im2col channels last: the windows of a block of images (or of output rows of one large
    image) gathered into [group, pixels, prod(kernel) * C/group] (runs of C/group contiguous
    codes, widened to float in the same copy) and one BLAS product per group, so that a batch
    of small images makes large products; the sums are kept channels first ([M, N, pixels]),
    so that the rescale's per-channel passes run along whole rows.
    """
    kernel = check_kernel_shape("IntConv", kernel_shape, w.shape[2:])
    win = conv_window("IntConv", x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    n, c = x.shape[:2]
    m = w.shape[0]
    weights, sums_dtype, in_range = _packed_weights(w, w_zero_point, bias, group, x.dtype)
    windows = _windows_channels_last(x, x_zero_point, kernel, win, group)
    rows, rest = win.out[0], math.prod(win.out[1:])
    per_row = c * math.prod(kernel) * rest
    images = max(1, _BLOCK // (per_row * rows))
    step = rows if images > 1 else max(1, min(rows, _BLOCK // per_row))
    # the sums channels first, so that the per-channel passes run along whole rows; int32 when
    # proved in range (half the memory traffic of int64)
    sums = np.empty((group, m // group, n, rows, rest), np.int32 if in_range else np.int64)
    for i in range(0, n, images):
        for r in range(0, rows, step):
            block = windows[:, i:i + images, r:r + step]
            cols = np.empty(block.shape, sums_dtype)
            np.copyto(cols, block)
            nb, sr = cols.shape[1:3]
            products = np.matmul(cols.reshape(group, nb * sr * rest, -1), weights)
            np.copyto(sums[:, :, i:i + nb, r:r + sr],
                      products.transpose(0, 2, 1).reshape(group, m // group, nb, sr, rest),
                      casting="unsafe")
    acc = sums.reshape(m, n, rows * rest)
    if bias is not None:
        acc += _per_channel(bias, 3)
    if not in_range:
        _check_int32(acc, "IntConv")
    terms, multipliers = [acc], [_per_channel(multiplier, 3)]
    if z is not None:
        residual = np.moveaxis(z, 1, 0).astype(np.int64, order="C").reshape(m, n, -1)
        terms.append(residual - z_zero_point.astype(np.int64))
        multipliers.append(z_multiplier)
    y = ic.finish(terms, multipliers, y_zero_point, rounding, qmin, qmax)
    return np.ascontiguousarray(y.reshape(m, n, *win.out).swapaxes(0, 1))


# _packed_weights' results by their operands: a layer's constants, seen on every run; at most
# _PACKED_LIMIT bytes of packed weights are kept (the cache is emptied when more would be)
_PACKED: dict = {}
_PACKED_LIMIT = 64 << 20


def _packed_weights(w: np.ndarray, w_zero_point: np.ndarray | None, bias: np.ndarray | None,
                    group: int, x_dtype: np.dtype) -> tuple[np.ndarray, type, bool]:
    """The weights minus their zero points as [group, prod(kernel) * C/group, M/group] (rows in
    the im2col columns' order: taps, then channels) in the float type whose products are exact,
    that type, and whether the accumulator is proved to stay within int32 (``_exactness``)."""
    key = tuple((a.shape, a.dtype.str, a.tobytes()) if a is not None else None
                for a in (w, w_zero_point, bias)) + (group, np.dtype(x_dtype).str)
    known = _PACKED.get(key)
    if known is not None:
        return known
    m, c = w.shape[0], w.shape[1] * group
    weights = w.astype(np.float64)
    if w_zero_point is not None:
        weights -= _per_channel(w_zero_point, w.ndim)
    sums_dtype, in_range = _exactness(x_dtype, np.abs(weights).reshape(m, -1).sum(axis=-1),
                                      np.zeros(1) if bias is None else bias)
    weights = np.moveaxis(weights.reshape(group, m // group, c // group, -1), 2, -1)
    weights = weights.reshape(group, m // group, -1).transpose(0, 2, 1).astype(sums_dtype)
    weights.setflags(write=False)
    if sum(entry[0].nbytes for entry in _PACKED.values()) + weights.nbytes > _PACKED_LIMIT:
        _PACKED.clear()
    _PACKED[key] = weights, sums_dtype, in_range
    return weights, sums_dtype, in_range


def _windows_channels_last(x: np.ndarray, x_zero_point: np.ndarray, kernel: tuple,
                           win: Window, group: int) -> np.ndarray:
    """Every window of x padded with ``x_zero_point``, as a strided view
    [group, N, *out, *kernel, C/group] of a channels-last copy of x (no copy of the windows)."""
    n, c, *spatial = x.shape
    padded = [s + b + e for s, b, e in zip(spatial, win.begin, win.end)]
    xp = np.full((n, *padded, c), x_zero_point, x.dtype)
    inner = tuple(slice(b, b + s) for b, s in zip(win.begin, spatial))
    xp[(slice(None), *inner, slice(None))] = np.moveaxis(x, 1, -1)
    sn, *ss, sc = xp.strides
    cg = c // group
    return np.ndarray((group, n, *win.out, *kernel, cg), xp.dtype, buffer=xp, strides=(
        sc * cg, sn, *(st * s for st, s in zip(ss, win.strides)),
        *(st * d for st, d in zip(ss, win.dilations)), sc))


def _per_channel(value: np.ndarray, ndim: int) -> np.ndarray:
    """A scalar or per-channel [C] parameter shaped to broadcast over axis 0 of an ``ndim``
    array ([C, ...])."""
    return value.reshape((-1,) + (1,) * (ndim - 1)) if value.ndim else value


_BLOCK = 1 << 18  # im2col values per product: the columns stay in cache for BLAS
_FLOAT32_EXACT = 2.0**24  # float32 holds every integer up to 2^24 exactly


def _exactness(x_dtype: np.dtype, weight_sums: np.ndarray,
               bias: np.ndarray) -> tuple[type, bool]:
    """The float type whose BLAS dot products of x's codes with the weights are exact, and
    whether the accumulator (with ``bias``) is proved to stay within int32, from a bound on
    every partial sum: ``max|x| * max_c sum_k |weights[c, k]|`` (``weight_sums`` holds the
    sums of absolute weights; any partial sum of the products, in any order, is within the
    bound). float32 when the bound is below 2^24 (int8 layers with K up to ~1000), else float64
    (exact below 2^53: every K < 2^37)."""
    largest = max(abs(int(np.iinfo(x_dtype).min)), int(np.iinfo(x_dtype).max))
    products = largest * float(weight_sums.max(initial=0))
    in_range = products + float(np.abs(bias.astype(np.int64)).max(initial=0)) <= _INT32.max
    return (np.float32 if products < _FLOAT32_EXACT else np.float64), in_range


# ---------------------------------------------------------------------------------------------
# IntMatMul.


def _infer_int_matmul(ctx: Ctx) -> list[Out]:
    a_dtype = ic.codes(ctx, 0, "a")
    b_dtype = ic.codes(ctx, 1, "b")
    out = matmul_output_shape(ctx)
    b = ctx.shape(1)
    columns = b[-1] if len(b) > 1 else 1
    ic.multiplier(ctx, 2, "multiplier", columns)
    dtype = ic.output(ctx, 3)
    ic.bias(ctx, 4, columns)
    if ctx.has(5):
        ic.zero_point(ctx, 5, "a_zero_point", a_dtype)
    if ctx.has(6):
        ic.zero_point(ctx, 6, "b_zero_point", b_dtype, columns)
    return [Out(dtype, out)]


@op("IntMatMul", ["a", "b", "multiplier", "y_zero_point", "bias?", "a_zero_point?",
                  "b_zero_point?"], ["y"], attrs=ic.RESCALE_ATTRS, infer=_infer_int_matmul,
    attr_types=ic.RESCALE_ATTR_TYPES)
def int_matmul(a, b, multiplier, y_zero_point, bias=None, a_zero_point=None, b_zero_point=None,
               *, rounding, qmin, qmax):
    """Integer matrix product with numpy/ONNX MatMul broadcasting (batched; 1-D operands):

    ``acc[..,m,n] = bias[n] + sum_k a[..,m,k] * (b[..,k,n] - b_zero_point[n])
    - a_zero_point * sum_k b[..,k,n]`` in int32, ``y = saturate(rescale([acc],
    [multiplier[n]], rounding), y_zero_point, qmin, qmax)``. ``bias``, ``multiplier`` and
    ``b_zero_point`` are scalars or one per column n. Note that the formula has no
    ``K * a_zero_point * b_zero_point`` term: with both zero points the lowering folds it into
    ``bias`` (with a constant b it folds the whole ``a_zero_point`` term and omits it).
    """
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    centred = b2.astype(np.float64)
    if b_zero_point is not None:
        centred -= b_zero_point.astype(np.float64)
    sums_dtype, in_range = _exactness(a.dtype, np.abs(centred).sum(axis=-2),
                                      np.zeros(1) if bias is None else bias)
    acc = np.matmul(a2.astype(sums_dtype), centred.astype(sums_dtype)).astype(np.int64)
    if bias is not None:
        acc += bias
    if a_zero_point is not None:
        acc -= int(a_zero_point) * b2.sum(axis=-2, keepdims=True, dtype=np.int64)
    if a_zero_point is not None or not in_range:
        _check_int32(acc, "IntMatMul")
    y = ic.finish([acc], [multiplier], y_zero_point, rounding, qmin, qmax)
    if b.ndim == 1:
        y = y[..., 0]
    if a.ndim == 1:
        y = y[..., 0, :] if b.ndim > 1 else y[..., 0]
    return y
