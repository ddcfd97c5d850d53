"""Neural-network ops: convolution, pooling, normalization, matrix products, softmax.

The kernels here are the numpy backend's hot path, so they are vectorised: convolution is im2col
over a strided view plus float32 BLAS matmuls (in cache-sized blocks of output rows; a plain
matmul for 1x1 convolutions, tap accumulation for depthwise ones), pools reduce over kernel taps
with strided slices. No loop runs over pixels or batch elements. float16 inputs are computed in
float32 and rounded back once at the end. Window geometry (pads, auto_pad, output lengths) is in
``window``; Resize is in ``resize``.

Semantics are ONNX opset 21, plus qcompiler's fused forms of Conv, ConvTranspose, Gemm and
MatMul (a trailing activation, Conv's residual input Z, MatMul's bias), declared as extensions
of those ops: without them the ops are exactly ONNX. Where onnxruntime departs from the spec
the spec wins (dilated SAME pooling, SAME ConvTranspose narrower than in * stride).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import resize  # noqa: F401  (registers Resize)
from ._nn_common import FLOATS, f32, is_int, need_dtype, same_dtype
from ._schema import REQUIRED, UNKNOWN, Ctx, Out, broadcast_shapes, norm_axis, op
from .activation import ACTIVATION_ATTRS, EXTENSIONS, apply_activation, check_activation
from .dtypes import FROM_ONNX
from .window import (
    Window,
    check_kernel_shape,
    conv_window,
    pad_spatial,
    tap_slices,
    taps,
    transpose_window,
    window_view,
)


def _accumulate_taps(views, weights: np.ndarray, shape: tuple) -> np.ndarray:
    """``sum_t views[t] * weights[:, :, t]`` with weights [C, mult, taps] broadcast per channel
    over views [N, C, 1, ...]; two ufunc passes per tap, no temporaries allocated per tap."""
    y = np.empty(shape, dtype=np.float32)
    tmp = np.empty_like(y)
    bcast = weights.shape[:2] + (1,) * (len(shape) - 3)
    for t, view in enumerate(views):
        np.multiply(view, weights[:, :, t].reshape(bcast), out=y if t == 0 else tmp)
        if t:
            y += tmp
    return y


# ---------------------------------------------------------------------------------------------
# Conv and ConvTranspose.

CONV_ATTRS = {"auto_pad": "NOTSET", "dilations": (), "group": 1, "kernel_shape": (),
               "pads": (), "strides": ()}


def _conv_operands(ctx: Ctx) -> tuple[str, tuple, tuple, int]:
    """Checks shared by Conv and ConvTranspose: dtypes, ranks, group; (dtype, X, W, group)."""
    dtype = need_dtype(ctx, 0, FLOATS, "X")
    same_dtype(ctx, 1, dtype, "W")
    same_dtype(ctx, 2, dtype, "B")
    return (dtype, *conv_ranks(ctx))


def conv_ranks(ctx: Ctx) -> tuple[tuple, tuple, int]:
    """The ranks of X (input 0) and W (input 1) and the group of a convolution; (X, W, group).
    Shared with the integer convolution."""
    xs, ws = ctx.shape(0), ctx.shape(1)
    if len(xs) < 3:
        ctx.fail(f"{ctx.op}: X must be [N, C, spatial...] (rank >= 3), got rank {len(xs)}")
    if len(ws) != len(xs):
        ctx.fail(f"{ctx.op}: W has rank {len(ws)} but X has rank {len(xs)}")
    group = ctx.attr("group")
    if not isinstance(group, int) or group < 1:
        ctx.fail(f"{ctx.op}: group must be a positive int, got {group!r}")
    return xs, ws, group


def _check_bias(ctx: Ctx, m: Any) -> None:
    if not ctx.has(2):
        return
    bs = ctx.shape(2)
    if len(bs) != 1 or (is_int(bs[0], m) and bs[0] != m):
        ctx.fail(f"{ctx.op}: B must have shape [{m}] (one value per output channel), got "
                 f"{list(bs)}")


def _check_residual(ctx: Ctx, dtype: str, out: tuple) -> None:
    """Conv's residual Z must have the dtype of X and exactly the output shape."""
    if not ctx.has(3):
        return
    same_dtype(ctx, 3, dtype, "Z")
    zs = ctx.shape(3)
    if len(zs) != len(out) or any(is_int(z, o) and z != o for z, o in zip(zs, out)):
        ctx.fail(f"Conv: the residual Z{list(zs)} must have the output shape {list(out)} "
                 f"(it is added without broadcasting)")


def conv_output_shape(ctx: Ctx, xs: tuple, ws: tuple, group: int) -> tuple:
    """The output shape of a convolution of X{xs} by W{ws} under the node's Conv attributes,
    after checking that channels and groups agree. Shared with the integer convolution."""
    c, m, cg = xs[1], ws[0], ws[1]
    if is_int(c, cg) and c != cg * group:
        ctx.fail(f"{ctx.op}: W has {cg} input channels per group but X has {c} channels and "
                 f"group={group}")
    if is_int(m) and m % group:
        ctx.fail(f"{ctx.op}: W has {m} output channels, which group={group} does not divide")
    kernel = check_kernel_shape(ctx.op, ctx.attr("kernel_shape"), ws[2:])
    a = ctx.attrs
    win = conv_window(ctx.op, xs[2:], kernel, a["strides"], a["dilations"], a["pads"],
                      a["auto_pad"])
    return (xs[0], m, *win.out)


def _infer_conv(ctx: Ctx) -> list[Out]:
    dtype, xs, ws, group = _conv_operands(ctx)
    out = conv_output_shape(ctx, xs, ws, group)
    _check_bias(ctx, ws[0])
    _check_residual(ctx, dtype, out)
    check_activation(ctx, dtype)
    return [Out(dtype, out)]


@op("Conv", ["X", "W", "B?", "Z?"], attrs={**CONV_ATTRS, **ACTIVATION_ATTRS},
    infer=_infer_conv, extensions={"Z", *EXTENSIONS})
def conv(x, w, b=None, z=None, *, activation, activation_params, auto_pad, dilations, group,
         kernel_shape, pads, strides):
    """N-D convolution (cross-correlation) with groups, dilations and padding, as ONNX Conv.

    Fused form (qcompiler extension): ``Y = activation(conv(X, W) + B + Z)``. The residual Z
    has Y's dtype and shape and is added in float32 after the bias; the activation then runs
    on the result in Y's dtype. On float32 this is bit-exact with Conv, Add and the activation
    op as separate nodes.
    """
    dtype = x.dtype
    x, w = f32(x), f32(w)
    n, c = x.shape[:2]
    m, cg, *kernel = w.shape
    kernel = check_kernel_shape("Conv", kernel_shape, kernel)
    win = conv_window("Conv", x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    pointwise = (all(k == 1 for k in kernel) and all(s == 1 for s in win.strides)
                 and not any(win.begin) and not any(win.end))
    if pointwise and group == 1:
        # 1x1 convolution: a plain matmul over the pixels, without any copy of x.
        y = np.matmul(w.reshape(m, c), x.reshape(n, c, math.prod(x.shape[2:])))
    elif group == c and cg == 1:
        y = _depthwise(x, w, kernel, win)
    elif group == 1 and n > 1 and math.prod(win.out) <= _SMALL_IMAGE:
        y = _conv_gemm_batch(x, w, kernel, win)
    else:
        y = _conv_gemm(pad_spatial(x, win.begin, win.end), w, kernel, win, group)
    y = y.reshape(n, m, *win.out)
    if b is not None:
        y += f32(b).reshape((m,) + (1,) * len(kernel))
    if z is not None:
        y += f32(z)
    return apply_activation(y.astype(dtype, copy=False), activation, activation_params)


_BLOCK = 1 << 17  # im2col floats per matmul (512 KiB): the columns stay in L2 between the two
_MIN_PIXELS = 512  # but at least this many output pixels per matmul (OpenBLAS is slow on less)


def _conv_gemm(xp: np.ndarray, w: np.ndarray, kernel: tuple, win: Window,
               group: int) -> np.ndarray:
    """im2col + float32 BLAS matmul per group, [N, group, M/group, pixels].

    The columns [N, group, C/group * prod(kernel), pixels] are the one copy of the strided
    window view. Large convolutions go in blocks of output rows (first spatial axis) through
    one reused buffer, each block's matmul writing straight into the output, so the columns
    are still in cache when BLAS reads them (OpenBLAS is ~1.25x slower on a 64x576x3136
    product built all at once; fresh buffers per block cost page faults).
    """
    view = window_view(xp, kernel, win)
    n, c = xp.shape[:2]
    m = w.shape[0]
    depth = c // group * math.prod(kernel)
    rows, rest = win.out[0], math.prod(win.out[1:])
    total = n * c * math.prod(kernel) * rows * rest
    step = rows
    if total > 2 * _BLOCK:
        step = min(rows, max(-(-rows // -(-total // _BLOCK)), -(-_MIN_PIXELS // rest)))
    weights = w.reshape(group, m // group, depth)
    y = np.empty((n, group, m // group, rows * rest), dtype=np.float32)
    buffer = np.empty(total // rows * step, dtype=np.float32)
    lead = (slice(None),) * (2 + len(kernel))
    for r in range(0, rows, step):
        block = view[lead + (slice(r, r + step),)]
        cols = buffer[:block.size].reshape(block.shape)
        np.copyto(cols, block)
        pixels = math.prod(block.shape[2 + len(kernel):])
        np.matmul(weights, cols.reshape(n, group, depth, pixels),
                  out=y[..., r * rest:(r + step) * rest])
    return y


_SMALL_IMAGE = 256  # output pixels per image below which one product for the batch wins


def _conv_gemm_batch(x: np.ndarray, w: np.ndarray, kernel: tuple, win: Window) -> np.ndarray:
    """im2col with one row per output pixel of every image, channels last ([N * pixels,
    prod(kernel) * C]), and one BLAS product for the whole batch; [N, M, pixels].

    For small images (the digits model: 541 images of 8x8) a product per image is too small
    for BLAS to run well; this is 1.2x to 2.6x faster there. The channels-last copy makes the
    im2col read runs of C contiguous floats."""
    n, c, *spatial = x.shape
    m = w.shape[0]
    padded = [s + b + e for s, b, e in zip(spatial, win.begin, win.end)]
    xp = np.zeros((n, *padded, c), dtype=np.float32)
    inner = tuple(slice(b, b + s) for b, s in zip(win.begin, spatial))
    xp[(slice(None), *inner, slice(None))] = np.moveaxis(x, 1, -1)
    sn, *ss, sc = xp.strides
    view = np.ndarray((n, *win.out, *kernel, c), np.float32, buffer=xp, strides=(
        sn, *(st * s for st, s in zip(ss, win.strides)),
        *(st * d for st, d in zip(ss, win.dilations)), sc))
    cols = view.reshape(n * math.prod(win.out), math.prod(kernel) * c)
    weights = np.moveaxis(w, 1, -1).reshape(m, -1)
    return (cols @ weights.T).reshape(n, math.prod(win.out), m).transpose(0, 2, 1)


def _depthwise(x: np.ndarray, w: np.ndarray, kernel: tuple, win: Window) -> np.ndarray:
    """Depthwise convolution (one input channel per group, M = C * multiplier) by taps.

    Output channel c * mult + j reads input channel c only: accumulate
    ``w[c, j, tap] * x[n, c, tap-shifted pixels]`` over the taps into [N, C, mult, *out].
    With stride 1 the padded planes are flattened (one spare row at the end) and each tap is
    one contiguous slice covering out[0] padded rows: numpy then runs long inner loops instead
    of one per output row, and the spare columns are cropped at the end.
    """
    n, c = x.shape[:2]
    mult = w.shape[0] // c
    weights = w.reshape(c, mult, -1)
    kernel_taps = list(taps(kernel))
    if any(s != 1 for s in win.strides):
        src = pad_spatial(x, win.begin, win.end)[:, :, None]
        views = (src[(slice(None),) * 3 + tap_slices(tap, win)] for tap in kernel_taps)
        return _accumulate_taps(views, weights, (n, c, mult, *win.out))
    xp = pad_spatial(x, win.begin, (win.end[0] + 1, *win.end[1:]))
    steps = [math.prod(xp.shape[3 + i:]) for i in range(len(kernel))]  # elements per axis step
    length = win.out[0] * steps[0]
    planes = xp.reshape(n, c, 1, math.prod(xp.shape[2:]))
    offsets = (sum(t * d * e for t, d, e in zip(tap, win.dilations, steps)) for tap in kernel_taps)
    y = _accumulate_taps((planes[..., o:o + length] for o in offsets), weights,
                         (n, c, mult, length))
    wide = y.reshape(n, c * mult, win.out[0], *xp.shape[3:])
    return np.ascontiguousarray(wide[(Ellipsis, *(slice(o) for o in win.out[1:]))])


def _infer_conv_transpose(ctx: Ctx) -> list[Out]:
    dtype, xs, ws, group = _conv_operands(ctx)
    c = xs[1]
    if is_int(c, ws[0]) and c != ws[0]:
        ctx.fail(f"ConvTranspose: W has {ws[0]} input channels but X has {c}")
    if is_int(c) and c % group:
        ctx.fail(f"ConvTranspose: X has {c} channels, which group={group} does not divide")
    m = ws[1] * group if is_int(ws[1]) else UNKNOWN
    _check_bias(ctx, m)
    kernel = check_kernel_shape("ConvTranspose", ctx.attr("kernel_shape"), ws[2:])
    win = transpose_window("ConvTranspose", xs[2:], kernel, ctx.attrs)
    check_activation(ctx, dtype)
    return [Out(dtype, (xs[0], m, *win.out))]


@op("ConvTranspose", ["X", "W", "B?"],
    attrs={**CONV_ATTRS, **ACTIVATION_ATTRS, "output_padding": (), "output_shape": ()},
    infer=_infer_conv_transpose, extensions=EXTENSIONS)
def conv_transpose(x, w, b=None, *, activation, activation_params, auto_pad, dilations, group,
                   kernel_shape, output_padding, output_shape, pads, strides):
    """N-D transposed convolution: one matmul to columns, then a scatter-add per kernel tap.

    Fused form (qcompiler extension): ``Y = activation(conv_transpose(X, W) + B)``, the
    activation run on the result in Y's dtype, bit-exact with a separate activation node.
    """
    dtype = x.dtype
    x, w = f32(x), f32(w)
    n, c, *spatial = x.shape
    mg, kernel = w.shape[1], check_kernel_shape("ConvTranspose", kernel_shape, w.shape[2:])
    m, cg = mg * group, c // group
    a = {"strides": strides, "dilations": dilations, "output_padding": output_padding,
         "pads": pads, "auto_pad": auto_pad, "output_shape": output_shape}
    win = transpose_window("ConvTranspose", tuple(spatial), kernel, a)
    # cols[n, g*mg + j, tap, pixel] = sum_ci W[g*cg + ci, j, tap] * x[n, g*cg + ci, pixel]
    wt = w.reshape(group, cg, mg * math.prod(kernel)).transpose(0, 2, 1)
    pixels = x.reshape(n, group, cg, math.prod(spatial))
    cols = np.matmul(wt, pixels).reshape(n, m, *kernel, *spatial)
    full = [(i - 1) * s + (k - 1) * d + 1
            for i, k, s, d in zip(spatial, kernel, win.strides, win.dilations)]
    canvas = np.zeros((n, m, *(max(f, bg + o) for f, bg, o in zip(full, win.begin, win.out))),
                      dtype=np.float32)
    inputs = win._replace(out=tuple(spatial))
    for tap in taps(kernel):
        canvas[(slice(None), slice(None)) + tap_slices(tap, inputs)] += cols[
            (slice(None), slice(None)) + tap]
    y = canvas[(slice(None), slice(None)) +
               tuple(slice(bg, bg + o) for bg, o in zip(win.begin, win.out))]
    y = np.ascontiguousarray(y)
    if b is not None:
        y += f32(b).reshape((m,) + (1,) * len(kernel))
    return apply_activation(y.astype(dtype, copy=False), activation, activation_params)


# ---------------------------------------------------------------------------------------------
# Pooling.

POOL_ATTRS = {"auto_pad": "NOTSET", "ceil_mode": 0, "dilations": (), "kernel_shape": REQUIRED,
               "pads": (), "strides": ()}


def infer_pool(allowed: tuple[str, ...]):
    def infer(ctx: Ctx) -> list[Out]:
        dtype = need_dtype(ctx, 0, allowed, "X")
        xs = ctx.shape(0)
        if len(xs) < 3:
            ctx.fail(f"{ctx.op}: X must be [N, C, spatial...] (rank >= 3), got rank {len(xs)}")
        if ctx.n_outputs > 1:
            ctx.unsupported(f"{ctx.op}: the Indices output is not supported; use only output Y")
        a = ctx.attrs
        kernel = tuple(a["kernel_shape"])
        if len(kernel) != len(xs) - 2 or any(k < 1 for k in kernel):
            ctx.fail(f"{ctx.op}: kernel_shape {kernel} must give one size >= 1 per spatial "
                     f"axis of X{list(xs)}")
        if a.get("storage_order", 0) not in (0, 1):
            ctx.fail(f"{ctx.op}: storage_order must be 0 or 1, got {a['storage_order']}")
        win = conv_window(ctx.op, xs[2:], kernel, a["strides"], a["dilations"], a["pads"],
                          a["auto_pad"], a["ceil_mode"])
        return [Out(dtype, (*xs[:2], *win.out))]

    return infer


def fold_taps(xp: np.ndarray, kernel: tuple, win: Window, ufunc: np.ufunc) -> np.ndarray:
    """``ufunc``-reduce (maximum, add) the padded input over the kernel taps of every window.

    Both reductions are separable, so this folds one spatial axis at a time: k0 + k1 passes
    instead of k0 * k1, the first of them over whole contiguous rows (a 3x3 stride-2 MaxPool
    is about 3x faster than tap by tap)."""
    y = xp
    for axis, (k, s, d, o) in enumerate(zip(kernel, win.strides, win.dilations, win.out)):
        lead = (slice(None),) * (2 + axis)
        acc = None
        for t in range(k):
            view = y[lead + (slice(t * d, t * d + (o - 1) * s + 1, s),)]
            if acc is None:
                acc = view.copy()
            else:
                ufunc(acc, view, out=acc)
        y = acc
    return y if y is not xp else xp.copy()


@op("MaxPool", ["X"], ["Y", "Indices?"], attrs={**POOL_ATTRS, "storage_order": 0},
    infer=infer_pool(("f32", "f16", "i8", "u8")))
def max_pool(x, *, auto_pad, ceil_mode, dilations, kernel_shape, pads, storage_order, strides):
    """Max over each window; padding is the dtype's lowest finite value (a window that only
    covers padding gives that value, as in onnxruntime)."""
    kernel = tuple(kernel_shape)
    win = conv_window("MaxPool", x.shape[2:], kernel, strides, dilations, pads, auto_pad,
                      ceil_mode)
    low = (np.finfo if x.dtype.kind == "f" else np.iinfo)(x.dtype).min
    return fold_taps(pad_spatial(x, win.begin, win.end, low), kernel, win, np.maximum)


@op("AveragePool", ["X"],
    attrs={**POOL_ATTRS, "count_include_pad": 0}, infer=infer_pool(FLOATS))
def average_pool(x, *, auto_pad, ceil_mode, count_include_pad, dilations, kernel_shape, pads,
                 strides):
    """Mean over each window; the divisor counts the explicit pads iff count_include_pad.

    Pixels that only exist because of ceil_mode are never counted (ONNX reference and ORT).
    """
    dtype = x.dtype
    kernel = tuple(kernel_shape)
    spatial = x.shape[2:]
    win = conv_window("AveragePool", spatial, kernel, strides, dilations, pads, auto_pad,
                      ceil_mode)
    sums = fold_taps(pad_spatial(f32(x), win.begin, win.end), kernel, win, np.add)
    counts = pool_counts(spatial, kernel, win, count_include_pad).astype(np.float32)
    y = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return y.astype(dtype, copy=False)


def pool_counts(spatial: tuple, kernel: tuple, win: Window, count_include_pad: int) -> np.ndarray:
    """How many pixels each AveragePool window divides by (int64, the output's spatial shape):
    the explicit pads count iff ``count_include_pad``; pixels that only exist because of
    ceil_mode never count (ONNX reference and ORT). A window over padding alone counts 0.

    The count is separable: a product over axes of 1-D counts of the pixels that count."""
    counts = np.ones((), np.int64)
    for size, k, s, d, b, e, o, pad_end in zip(spatial, kernel, win.strides, win.dilations,
                                               win.begin, win.end, win.out, win.pad_end):
        mask = np.zeros(b + size + e, np.int64)
        mask[0 if count_include_pad else b:b + size + (pad_end if count_include_pad else 0)] = 1
        axis_counts = sum(mask[t * d:t * d + (o - 1) * s + 1:s] for t in range(k))
        counts = np.multiply.outer(counts, axis_counts)
    return counts


def _infer_global_pool(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS if ctx.op == "GlobalAveragePool"
                        else ("f32", "f16", "i8", "u8"), "X")
    xs = ctx.shape(0)
    if len(xs) < 3:
        ctx.fail(f"{ctx.op}: X must be [N, C, spatial...] (rank >= 3), got rank {len(xs)}")
    return [Out(dtype, (*xs[:2], *(1,) * (len(xs) - 2)))]


@op("GlobalAveragePool", ["X"], infer=_infer_global_pool)
def global_average_pool(x):
    axes = tuple(range(2, x.ndim))
    return np.mean(f32(x), axis=axes, keepdims=True).astype(x.dtype, copy=False)


@op("GlobalMaxPool", ["X"], infer=_infer_global_pool)
def global_max_pool(x):
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


# ---------------------------------------------------------------------------------------------
# Normalization.


def _infer_batch_norm(ctx: Ctx) -> list[Out]:
    if ctx.attr("training_mode") != 0:
        ctx.unsupported("BatchNormalization: training_mode=1 is not supported (inference "
                        "only); "
                 "export the model in eval mode")
    if ctx.n_outputs > 1:
        ctx.unsupported("BatchNormalization: running_mean/running_var outputs exist only in "
                        "training "
                 "mode, which is not supported; use only output Y")
    dtype = need_dtype(ctx, 0, FLOATS, "X")
    xs = ctx.shape(0)
    if not xs:
        ctx.fail("BatchNormalization: X must have rank >= 1")
    c = xs[1] if len(xs) > 1 else 1
    for i, name in enumerate(("scale", "B", "input_mean", "input_var"), start=1):
        need_dtype(ctx, i, FLOATS, name)
        s = ctx.shape(i)
        if len(s) != 1 or (is_int(s[0], c) and s[0] != c):
            ctx.fail(f"BatchNormalization: {name} must have shape [{c}] (one value per "
                     f"channel), got {list(s)}")
    return [Out(dtype, xs)]


@op("BatchNormalization", ["X", "scale", "B", "input_mean", "input_var"],
    ["Y", "running_mean?", "running_var?"],
    attrs={"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0}, infer=_infer_batch_norm)
def batch_normalization(x, scale, b, mean, var, *, epsilon, momentum, training_mode):
    """Inference BatchNorm: ``(x - mean) / sqrt(var + eps) * scale + B`` per channel (axis 1)."""
    if training_mode:
        raise NotImplementedError("BatchNormalization: training_mode=1 is not supported")
    f = np.float32  # scale, B, mean and var may each be float16 or float32 (opset 15)
    mul = scale.astype(f) / np.sqrt(var.astype(f) + f(epsilon))
    add = b.astype(f) - mean.astype(f) * mul
    shape = (-1,) + (1,) * (x.ndim - 2) if x.ndim > 1 else ()
    y = f32(x) * mul.reshape(shape)
    y += add.reshape(shape)
    return y.astype(x.dtype, copy=False)


def _infer_instance_norm(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS, "input")
    xs = ctx.shape(0)
    if len(xs) < 3:
        ctx.fail(f"InstanceNormalization: input must be [N, C, spatial...] (rank >= 3), got "
                 f"rank {len(xs)}")
    for i, name in ((1, "scale"), (2, "B")):
        same_dtype(ctx, i, dtype, name)
        s = ctx.shape(i)
        if len(s) != 1 or (is_int(s[0], xs[1]) and s[0] != xs[1]):
            ctx.fail(f"InstanceNormalization: {name} must have shape [{xs[1]}], got {list(s)}")
    return [Out(dtype, xs)]


@op("InstanceNormalization", ["input", "scale", "B"], ["output"], attrs={"epsilon": 1e-5},
    infer=_infer_instance_norm)
def instance_normalization(x, scale, b, *, epsilon):
    """Normalize each (sample, channel) over its spatial axes, then scale and shift."""
    xf = f32(x)
    axes = tuple(range(2, x.ndim))
    mean = xf.mean(axis=axes, keepdims=True)
    centered = xf - mean
    var = np.mean(np.square(centered), axis=axes, keepdims=True)
    shape = (-1,) + (1,) * (x.ndim - 2)
    mul = f32(scale).reshape(shape) / np.sqrt(var + np.float32(epsilon))
    return (centered * mul + f32(b).reshape(shape)).astype(x.dtype, copy=False)


def _infer_layer_norm(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS, "X")
    xs = ctx.shape(0)
    axis = norm_axis(ctx.attr("axis"), len(xs))
    stash = FROM_ONNX.get(ctx.attr("stash_type"))
    if stash not in ("f32", "f16"):
        ctx.fail(f"LayerNormalization: stash_type must be 1 (float) or 10 (float16), got "
                 f"{ctx.attr('stash_type')}")
    normalized = xs[axis:]
    for i, name in ((1, "Scale"), (2, "B")):
        if not ctx.has(i):
            continue
        same_dtype(ctx, i, dtype, name)
        shape = ctx.shape(i)
        if len(shape) > len(normalized) or not all(
                d in (1, full) or not is_int(d, full)
                for d, full in zip(shape[::-1], normalized[::-1])):
            ctx.fail(f"LayerNormalization: {name}{list(shape)} does not broadcast to the "
                     f"normalized shape {list(normalized)} (axis={ctx.attr('axis')})")
    stats = (*xs[:axis], *(1,) * (len(xs) - axis))
    return [Out(dtype, xs), Out(stash, stats), Out(stash, stats)]


@op("LayerNormalization", ["X", "Scale", "B?"], ["Y", "Mean?", "InvStdDev?"],
    attrs={"axis": -1, "epsilon": 1e-5, "stash_type": 1}, infer=_infer_layer_norm)
def layer_normalization(x, scale, b=None, *, axis, epsilon, stash_type):
    """Normalize over axes [axis, rank) in the stash type; returns (Y, Mean, InvStdDev)."""
    stash = np.float16 if stash_type == 10 else np.float32
    xs = x.astype(stash)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = xs.mean(axis=axes, keepdims=True)
    centered = xs - mean
    inv_std = 1 / np.sqrt(np.mean(np.square(centered), axis=axes, keepdims=True)
                          + stash(epsilon))
    y = centered * inv_std * scale.astype(stash)
    if b is not None:
        y += b.astype(stash)
    return y.astype(x.dtype, copy=False), mean, inv_std.astype(stash, copy=False)


def _infer_lrn(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS, "X")
    if len(ctx.shape(0)) < 3:
        ctx.fail(f"LRN: X must be [N, C, spatial...] (rank >= 3), got {list(ctx.shape(0))}")
    if ctx.attr("size") < 1:
        ctx.fail(f"LRN: size must be >= 1, got {ctx.attr('size')}")
    return [Out(dtype, ctx.shape(0))]


@op("LRN", ["X"], attrs={"alpha": 1e-4, "beta": 0.75, "bias": 1.0, "size": REQUIRED},
    infer=_infer_lrn)
def lrn(x, *, alpha, beta, bias, size):
    """Local response normalization across channels: x / (bias + alpha/size * sum x^2)^beta."""
    xf = f32(x)
    c = x.shape[1]
    before, after = (size - 1) // 2, size // 2  # floor((size-1)/2), ceil((size-1)/2)
    padded = np.zeros((x.shape[0], c + before + after, *x.shape[2:]), np.float32)
    padded[:, before:before + c] = np.square(xf)
    total = padded[:, 0:c].copy()
    for j in range(1, size):
        total += padded[:, j:j + c]
    f = np.float32
    base = f(bias) + f(alpha / size) * total
    return (xf / np.power(base, f(beta))).astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Matrix products.

MATMUL_DTYPES = ("f32", "f16", "i32", "i64")


def _infer_matmul(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, MATMUL_DTYPES, "A")
    if ctx.dtype(1) != dtype:
        ctx.fail(f"MatMul: A is {dtype} but B is {ctx.dtype(1)}")
    out = matmul_output_shape(ctx)
    b = ctx.shape(1)
    if ctx.has(2):
        _check_matmul_bias(ctx, dtype, b)
    check_activation(ctx, dtype)
    return [Out(dtype, out)]


def matmul_output_shape(ctx: Ctx) -> tuple:
    """The shape of the matrix product of inputs 0 and 1 under numpy/ONNX MatMul rules (1-D
    operands, broadcast batch axes), after checking that they agree. Shared with the integer
    matrix product."""
    a, b = ctx.shape(0), ctx.shape(1)
    if not a or not b:
        ctx.fail(f"{ctx.op}: operands must have rank >= 1, got A{list(a)} and B{list(b)}")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if is_int(a2[-1], b2[-2]) and a2[-1] != b2[-2]:
        ctx.fail(f"{ctx.op}: A{list(a)} has {a2[-1]} columns but B{list(b)} has {b2[-2]} rows")
    out = (*broadcast_shapes(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(b) == 1:
        out = out[:-1]
    if len(a) == 1:
        out = out[:-2] + out[-1:] if len(b) > 1 else out[:-1]
    return out


def _check_matmul_bias(ctx: Ctx, dtype: str, b: tuple) -> None:
    """MatMul's bias is one value per column of B (the output's last axis)."""
    if ctx.dtype(2) != dtype:
        ctx.fail(f"MatMul: bias is {ctx.dtype(2)} but A is {dtype}")
    if len(b) < 2:
        ctx.fail(f"MatMul: a bias needs B of rank >= 2, got B{list(b)} (a 1-D B leaves the "
                 f"output no column axis to add the bias along)")
    bs = ctx.shape(2)
    if len(bs) != 1 or (is_int(bs[0], b[-1]) and bs[0] != b[-1]):
        ctx.fail(f"MatMul: bias must have shape [{b[-1]}] (one value per column of B{list(b)}), "
                 f"got {list(bs)}")


@op("MatMul", ["A", "B", "bias?"], attrs=ACTIVATION_ATTRS, infer=_infer_matmul,
    extensions={"bias", *EXTENSIONS})
def matmul(a, b, bias=None, *, activation, activation_params):
    """numpy matmul semantics: 1-D operands and broadcast batch dimensions.

    Fused form (qcompiler extension): ``Y = activation(A @ B + bias)`` with bias [N] added
    along the output's last axis (B must have rank >= 2), then the activation run on the result
    in Y's dtype. On float32 this is bit-exact with MatMul, Add and the activation op as
    separate nodes. float16 is computed in float32 and rounded once, before the activation.
    """
    y = np.matmul(f32(a), f32(b))
    if bias is not None:
        y += f32(bias)
    return apply_activation(y.astype(a.dtype, copy=False), activation, activation_params)


def _infer_gemm(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS, "A")
    same_dtype(ctx, 1, dtype, "B")
    same_dtype(ctx, 2, dtype, "C")
    a, b = ctx.shape(0), ctx.shape(1)
    if len(a) != 2 or len(b) != 2:
        ctx.fail(f"Gemm: A and B must be matrices, got A{list(a)} and B{list(b)}")
    (m, ka) = a[::-1] if ctx.attr("transA") else a
    (kb, n) = b[::-1] if ctx.attr("transB") else b
    if is_int(ka, kb) and ka != kb:
        ctx.fail(f"Gemm: op(A) is [{m}, {ka}] but op(B) is [{kb}, {n}] "
                 f"(transA={ctx.attr('transA')}, transB={ctx.attr('transB')})")
    if ctx.has(2):
        c = ctx.shape(2)
        ok = len(c) <= 2 and all(d in (1, full) or not is_int(d, full)
                                 for d, full in zip(c[::-1], (n, m)))
        if not ok:
            ctx.fail(f"Gemm: C{list(c)} does not broadcast to the output [{m}, {n}]")
    check_activation(ctx, dtype)
    return [Out(dtype, (m, n))]


@op("Gemm", ["A", "B", "C?"],
    attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, **ACTIVATION_ATTRS},
    infer=_infer_gemm, extensions=EXTENSIONS)
def gemm(a, b, c=None, *, activation, activation_params, alpha, beta, transA, transB):
    """``alpha * op(A) @ op(B) + beta * C`` with op = optional transpose; C broadcasts.

    Fused form (qcompiler extension): ``Y = activation(alpha * op(A) @ op(B) + beta * C)``,
    the activation run on the result in Y's dtype, bit-exact with a separate activation node.
    """
    dtype = a.dtype
    a, b = f32(a), f32(b)
    y = np.matmul(a.T if transA else a, b.T if transB else b)
    if alpha != 1:
        y *= np.float32(alpha)
    if c is not None and beta != 0:
        c = f32(c)
        y += c if beta == 1 else c * np.float32(beta)
    return apply_activation(y.astype(dtype, copy=False), activation, activation_params)


# ---------------------------------------------------------------------------------------------
# Softmax family (opset 13: one axis, default -1).


def _infer_softmax(ctx: Ctx) -> list[Out]:
    dtype = need_dtype(ctx, 0, FLOATS, "input")
    norm_axis(ctx.attr("axis"), len(ctx.shape(0)))
    return [Out(dtype, ctx.shape(0))]


@op("Softmax", ["input"], ["output"], attrs={"axis": -1}, infer=_infer_softmax)
def softmax(x, *, axis):
    xf = f32(x)
    e = np.exp(xf - xf.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e.astype(x.dtype, copy=False)


@op("LogSoftmax", ["input"], ["output"], attrs={"axis": -1}, infer=_infer_softmax)
def log_softmax(x, *, axis):
    xf = f32(x)
    shifted = xf - xf.max(axis=axis, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return y.astype(x.dtype, copy=False)

