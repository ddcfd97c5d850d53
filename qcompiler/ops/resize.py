"""The Resize op: nearest and linear, separable over any axes, float32 coordinates as in ORT.

Where the spec leaves a choice (axes with scale 1, float32 source coordinates) we do what
onnxruntime does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._nn_common import FLOATS, f32, is_int, need_dtype
from ._schema import UNKNOWN, Ctx, InferError, Out, norm_axis, op

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_POLICIES = ("stretch", "not_larger", "not_smaller")


def _resize_refusal(mode: str, antialias: int, ctm: str, nearest_mode: str, policy: str,
                    exclude_outside: int) -> str | None:
    """Why a Resize configuration is not supported, or None when it is."""
    if mode not in ("nearest", "linear"):
        return (f"Resize: mode {mode!r} is not supported (supported: 'nearest', 'linear'; "
                f"'cubic' would need a cubic kernel)")
    if antialias:
        return "Resize: antialias=1 is not supported"
    if exclude_outside:
        return "Resize: exclude_outside=1 applies to cubic mode only"
    if ctm not in _COORD_MODES:
        return (f"Resize: coordinate_transformation_mode must be one of "
                f"{', '.join(_COORD_MODES)}, got {ctm!r}")
    if nearest_mode not in _NEAREST_MODES:
        return (f"Resize: nearest_mode must be one of {', '.join(_NEAREST_MODES)}, "
                f"got {nearest_mode!r}")
    if policy not in _POLICIES:
        return f"Resize: keep_aspect_ratio_policy must be one of {', '.join(_POLICIES)}"
    return None


def _resize_axes(axes: tuple, rank: int) -> list[int]:
    if not axes:
        return list(range(rank))
    out = [norm_axis(a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise InferError(f"Resize: axes {tuple(axes)} repeat an axis")
    return out


def _resize_plan(in_shape: tuple, scales: Any, sizes: Any, axes: list[int],
                 policy: str) -> tuple[list, list]:
    """Output shape and per-axis float32 scale, computed the way onnxruntime does.

    From scales: ``out = floor(scale * in)`` in float32. From sizes: ``scale = out / in``, and
    for not_larger/not_smaller one common scale (min/max over ``axes``) with
    ``out = round(scale * in)``.
    """
    f = np.float32
    out, scl = list(in_shape), [f(1)] * len(in_shape)
    given = sizes if sizes is not None else scales
    if len(given) != len(axes):
        what = "sizes" if sizes is not None else "scales"
        raise InferError(f"Resize: {what} has {len(given)} values, expected {len(axes)} (one "
                         f"per axis in {tuple(axes) if len(axes) < len(in_shape) else 'X'})")
    if sizes is None:
        for a, s in zip(axes, given):
            if not s > 0:
                raise InferError(f"Resize: scales must be > 0, got {float(s)}")
            scl[a] = f(s)
            out[a] = int(np.floor(f(s) * f(in_shape[a])))
        return out, scl
    for a, s in zip(axes, given):
        out[a] = int(s)
        scl[a] = f(s) / f(in_shape[a]) if in_shape[a] else f(1)
    if policy != "stretch":
        pick = min if policy == "not_larger" else max
        common = pick(scl[a] for a in axes)
        for a in axes:
            scl[a] = common
            out[a] = int(np.floor(common * f(in_shape[a]) + f(0.5)))
    return out, scl


def _present(ctx: Ctx, i: int) -> bool:
    """Whether optional input ``i`` is given and non-empty (opset 11 passed empty tensors)."""
    return ctx.has(i) and ctx.shape(i) != (0,)


def _infer_resize(ctx: Ctx) -> list[Out]:
    a = ctx.attrs
    mode = a["mode"]
    refusal = _resize_refusal(mode, a["antialias"], a["coordinate_transformation_mode"],
                              a["nearest_mode"], a["keep_aspect_ratio_policy"],
                              a["exclude_outside"])
    if refusal:
        ctx.unsupported(refusal)
    dtype = ctx.dtype(0)
    if mode == "linear" and dtype not in FLOATS:
        ctx.fail(f"Resize: linear mode needs a float input, got {dtype}")
    xs = ctx.shape(0)
    axes = _resize_axes(a["axes"], len(xs))
    has_scales, has_sizes = _present(ctx, 2), _present(ctx, 3)
    if has_scales == has_sizes:
        ctx.fail("Resize: exactly one of scales and sizes must be given "
                 f"(got {'both' if has_scales else 'neither'})")
    if has_scales:
        need_dtype(ctx, 2, ("f32",), "scales")
    else:
        need_dtype(ctx, 3, ("i64",), "sizes")
    out = list(xs)
    for ax in axes:
        out[ax] = UNKNOWN
    scales = ctx.const(2) if has_scales else None
    sizes = ctx.ints(3) if has_sizes else None
    if scales is not None:
        scales = scales.reshape(-1)
        static = [xs[ax] if is_int(xs[ax]) else 1 for ax in range(len(xs))]
        planned, _ = _resize_plan(tuple(static), scales, None, axes, "stretch")
        for ax, s in zip(axes, scales):
            out[ax] = xs[ax] if s == 1 else (planned[ax] if is_int(xs[ax]) else UNKNOWN)
    elif sizes is not None:
        if len(sizes) != len(axes):
            ctx.fail(f"Resize: sizes has {len(sizes)} values, expected {len(axes)}")
        if a["keep_aspect_ratio_policy"] == "stretch":
            for ax, s in zip(axes, sizes):
                out[ax] = s
        elif is_int(*sizes, *(xs[ax] for ax in axes)):
            planned, _ = _resize_plan(xs, None, sizes, axes, a["keep_aspect_ratio_policy"])
            for ax in axes:
                out[ax] = planned[ax]
    if any(is_int(d, n) and d < 1 and n > 0 for d, n in zip(out, xs)):  # empty stays empty
        ctx.fail(f"Resize: output shape {out} has an empty dimension (input {list(xs)})")
    return [Out(dtype, tuple(out))]


def _source_coords(ctm: str, out_len: int, in_len: int, scale: np.float32, roi_start: float,
                   roi_end: float) -> np.ndarray:
    """Input coordinate of every output index along one axis, in float32 like onnxruntime."""
    f = np.float32
    x = np.arange(out_len, dtype=f)
    half = f(0.5)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if ctm == "pytorch_half_pixel":
        return (x + half) / scale - half if out_len > 1 else np.zeros(out_len, f)
    if ctm == "align_corners":
        return (x * f(in_len - 1) / f(out_len - 1) if out_len > 1
                else np.zeros(out_len, f))
    if ctm == "half_pixel_symmetric":
        adjustment = f(out_len) / (scale * f(in_len))
        offset = f(in_len) / f(2) * (f(1) - adjustment)
        return offset + (x + half) / scale - half
    if ctm == "tf_crop_and_resize":
        start, end = f(roi_start), f(roi_end)
        if out_len > 1:
            return start * f(in_len - 1) + x * (end - start) * f(in_len - 1) / f(out_len - 1)
        return np.full(out_len, 0.5 * (start + end) * (in_len - 1), f)
    return (x + half) / scale - half  # half_pixel


def _nearest_index(coords: np.ndarray, mode: str, in_len: int) -> np.ndarray:
    floor = np.floor(coords)
    if mode == "floor":
        idx = floor
    elif mode == "ceil":
        idx = np.ceil(coords)
    else:
        frac = coords - floor  # ties (frac == 0.5) go down or up as the mode prefers
        idx = floor + (frac > 0.5 if mode == "round_prefer_floor" else frac >= 0.5)
    return np.clip(idx, 0, in_len - 1).astype(np.intp)


@op("Resize", ["X", "roi?", "scales?", "sizes?"],
    attrs={"antialias": 0, "axes": (), "coordinate_transformation_mode": "half_pixel",
           "cubic_coeff_a": -0.75, "exclude_outside": 0, "extrapolation_value": 0.0,
           "keep_aspect_ratio_policy": "stretch", "mode": "nearest",
           "nearest_mode": "round_prefer_floor"},
    infer=_infer_resize)
def resize(x, roi=None, scales=None, sizes=None, *, antialias, axes,
           coordinate_transformation_mode, cubic_coeff_a, exclude_outside, extrapolation_value,
           keep_aspect_ratio_policy, mode, nearest_mode):
    """Nearest or (multi-)linear resize, one axis at a time; see the ONNX Resize spec."""
    ctm = coordinate_transformation_mode
    refusal = _resize_refusal(mode, antialias, ctm, nearest_mode, keep_aspect_ratio_policy,
                              exclude_outside)
    if refusal:
        raise ValueError(refusal)
    rank = x.ndim
    ax = _resize_axes(axes, rank)
    sizes = None if sizes is None or sizes.size == 0 else sizes.reshape(-1)
    scales = None if sizes is not None or scales is None else scales.reshape(-1)
    if sizes is None and (scales is None or scales.size == 0):
        raise ValueError("Resize: exactly one of scales and sizes must be given")
    out_shape, scl = _resize_plan(x.shape, scales, sizes, ax, keep_aspect_ratio_policy)
    starts, ends = [0.0] * rank, [1.0] * rank
    if ctm == "tf_crop_and_resize" and roi is not None and roi.size:
        roi = roi.reshape(-1).astype(np.float32)
        k = len(ax)
        for j, a in enumerate(ax):
            starts[a], ends[a] = float(roi[j]), float(roi[k + j])
    dtype = x.dtype
    y = f32(x) if mode == "linear" else x
    outside = np.zeros((1,) * rank, bool)
    gather: list[Any] = []
    for a in range(rank):
        n_in, n_out = x.shape[a], out_shape[a]
        if scl[a] == 1 and n_in == n_out:
            # Axes with scale 1 are copied, whatever the coordinate mode: what onnxruntime does
            # (the spec formula would shift tf_half_pixel_for_nn and crop tf_crop_and_resize).
            gather.append(np.arange(n_in))
            continue
        coords = _source_coords(ctm, n_out, n_in, scl[a], starts[a], ends[a])
        if ctm == "tf_crop_and_resize":
            miss = (coords < 0) | (coords > n_in - 1)
            outside = outside | miss.reshape([-1 if i == a else 1 for i in range(rank)])
        if mode == "nearest":
            gather.append(_nearest_index(coords, nearest_mode, n_in))
            continue
        coords = np.clip(coords, 0, n_in - 1)
        lo = np.minimum(coords.astype(np.intp), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = coords - lo.astype(np.float32)
        wshape = [-1 if i == a else 1 for i in range(rank)]
        y = (np.take(y, lo, axis=a) * (1 - frac).reshape(wshape)
             + np.take(y, hi, axis=a) * frac.reshape(wshape))
    if mode == "nearest":
        y = _gather(y, gather)
    if ctm == "tf_crop_and_resize" and outside.any():
        y = np.where(outside, y.dtype.type(extrapolation_value), y)
    return np.ascontiguousarray(y).astype(dtype, copy=False)


def _gather(x: np.ndarray, index: list[np.ndarray]) -> np.ndarray:
    """``x`` indexed by one index array per axis (outer product), skipping identity axes."""
    moved = [a for a, idx in enumerate(index)
             if len(idx) != x.shape[a] or (idx != np.arange(x.shape[a])).any()]
    if not moved:
        return x.copy()
    first = moved[0]
    key: list[Any] = [slice(None)] * first
    rest = index[first:]
    for j, idx in enumerate(rest):
        key.append(idx.reshape([-1 if i == j else 1 for i in range(len(rest))]))
    return x[tuple(key)]
