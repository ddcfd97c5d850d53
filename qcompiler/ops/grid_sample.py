"""GridSample: sample an N-D image at the normalized coordinates of a grid (spatial
transformers, deformable sampling, optical-flow warps).

Linear and nearest modes with zeros, border and reflection padding, in any number of spatial
dimensions; cubic is refused. The arithmetic follows onnx's reference: coordinates are
denormalized in the grid's float type (float32 for float16), nearest rounds half to even.
"""

from __future__ import annotations

import itertools

import numpy as np

from ._schema import Ctx, Out, op
from .tensor import merge_dim

_MODES = {"linear": "linear", "bilinear": "linear", "nearest": "nearest"}  # opset 16 names too
_PADDING = ("zeros", "border", "reflection")


def _grid_sample(ctx: Ctx) -> list[Out]:
    mode, padding = ctx.attr("mode"), ctx.attr("padding_mode")
    if mode in ("cubic", "bicubic"):
        ctx.unsupported(f"mode {mode!r} is not supported (supported: 'linear', 'nearest')")
    if mode not in _MODES:
        ctx.fail(f"mode {mode!r} is not one of linear, nearest, cubic")
    if padding not in _PADDING:
        ctx.fail(f"padding_mode {padding!r} is not one of {', '.join(_PADDING)}")
    x, grid = ctx.shape(0), ctx.shape(1)
    for i in (0, 1):
        if ctx.dtype(i) not in ("f32", "f16"):
            ctx.fail(f"input {i} must be a float tensor, got {ctx.dtype(i)}")
    if len(x) < 3 or len(grid) != len(x):
        ctx.fail(f"X must have rank >= 3 and grid the same rank, got shapes {list(x)} and "
                 f"{list(grid)}")
    if isinstance(grid[-1], int) and grid[-1] != len(x) - 2:
        ctx.fail(f"grid's last dimension must be {len(x) - 2} (one coordinate per spatial "
                 f"axis), got {grid[-1]}")
    batch = merge_dim(x[0], grid[0], "X and grid batch sizes")
    return [Out(ctx.dtype(0), (batch, x[1], *grid[1:-1]))]


def _reflect(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold ``v`` back into [lo, hi] by repeated reflection at the borders."""
    span = hi - lo
    below, above = v < lo, v > hi
    d = np.where(below, lo - v, v - hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(span > 0, np.floor(d / span), 0)
    r = d - n * span
    even = n % 2 == 0
    folded = np.where(below, np.where(even, lo + r, hi - r), np.where(even, hi - r, lo + r))
    return np.where(below | above, folded, v)


@op("GridSample", ["X", "grid"], attrs={"align_corners": 0, "mode": "linear",
                                        "padding_mode": "zeros"}, infer=_grid_sample)
def grid_sample(x, grid, align_corners, mode, padding_mode):
    """Y[n, c, p] = X[n, c] at grid[n, p] (x, y, ... in [-1, 1], last spatial axis first).
    float16 is computed in float32, as onnxruntime does."""
    if x.dtype == np.float16 or grid.dtype == np.float16:
        out = grid_sample(x.astype(np.float32), grid.astype(np.float32), align_corners, mode,
                          padding_mode)
        return out.astype(x.dtype)
    t = grid.dtype.type
    dims = np.array(x.shape[2:], dtype=grid.dtype)
    g = grid[..., ::-1]  # coordinates in axis order
    if align_corners:
        pos = (g + t(1)) / t(2) * (dims - t(1))
        lo, hi = np.zeros_like(dims), dims - t(1)
    else:
        pos = ((g + t(1)) * dims - t(1)) / t(2)
        lo, hi = np.full_like(dims, -0.5), dims - t(0.5)
    if _MODES[mode] == "nearest":
        pos = np.rint(pos)
    outside = (pos < lo) | (pos > hi)
    if padding_mode == "border":
        pos = np.where(outside, np.clip(pos, 0, dims - t(1)), pos)
    elif padding_mode == "reflection":
        pos = _reflect(pos, lo, hi)
    channels_last = np.moveaxis(x, 1, -1)  # (N, D1..Dr, C)
    batch = np.arange(x.shape[0]).reshape((-1,) + (1,) * (grid.ndim - 2))

    def pixels(index: np.ndarray) -> np.ndarray:
        """X at integer positions (N, *out, r), padded as ``padding_mode`` says."""
        size = np.array(x.shape[2:])
        valid = np.all((index >= 0) & (index < size), axis=-1)
        if padding_mode == "reflection":
            index = _reflect(index.astype(grid.dtype), lo, hi).astype(np.int64)
        index = np.clip(index, 0, size - 1)
        got = channels_last[(batch, *np.moveaxis(index, -1, 0))]
        if padding_mode == "zeros":
            got = np.where(valid[..., None], got, 0).astype(x.dtype)
        return got

    if _MODES[mode] == "nearest":
        out = pixels(pos.astype(np.int64))
    else:
        base = np.floor(pos)
        frac = pos - base
        base = base.astype(np.int64)
        out = np.zeros(pos.shape[:-1] + (x.shape[1],), dtype=x.dtype)
        for corner in itertools.product((0, 1), repeat=len(dims)):
            offset = np.array(corner)
            weight = np.prod(np.where(offset == 1, frac, t(1) - frac), axis=-1)
            out = out + weight[..., None].astype(x.dtype) * pixels(base + offset)
    return np.moveaxis(out, -1, 1).astype(x.dtype)
