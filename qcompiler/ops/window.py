"""Sliding-window geometry of Conv, ConvTranspose and the pools, and the views that read it.

``conv_window`` computes, from the input's spatial shape and the op's kernel, strides,
dilations, pads, auto_pad and ceil_mode, the padding each axis really needs and the output
lengths, as the ONNX spec defines them; ``transpose_window`` does the same for ConvTranspose.
The rest are the array helpers the kernels build on: padding the spatial axes, the slice of the
padded input each kernel tap reads, and a strided view of every window.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from ._nn_common import is_int
from ._schema import UNKNOWN, InferError

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def per_axis(op_name: str, name: str, values: tuple, n: int, default: int = 1) -> tuple:
    values = tuple(values) or (default,) * n
    if len(values) != n:
        raise InferError(f"{op_name}: {name} has {len(values)} values, expected {n} "
                         f"(one per spatial axis)")
    return values


class Window(NamedTuple):
    """Geometry of a sliding-window op over the spatial axes."""

    strides: tuple
    dilations: tuple
    begin: tuple  # padding before each spatial axis
    end: tuple  # padding after it that the windows actually read (see conv_window)
    out: tuple  # output length per axis (UNKNOWN when the input length is symbolic)
    pad_end: tuple  # padding after each axis as given (NOTSET) or computed (SAME_*)


@functools.lru_cache(maxsize=4096)
def conv_window(op_name: str, spatial: tuple, kernel: tuple, strides: tuple, dilations: tuple,
                pads: tuple, auto_pad: str, ceil_mode: int = 0) -> Window:
    """Output lengths and paddings of Conv/pool windows, as the ONNX spec defines them.

    SAME_* pads so that ``out = ceil(in / stride)`` (the odd pixel goes at the end for
    SAME_UPPER, at the start for SAME_LOWER), VALID does not pad, NOTSET uses ``pads``. With
    ``ceil_mode`` the last partial window is kept unless it would start in the end padding.
    ``end`` is the padding that the windows really read, which can exceed ``pads`` in ceil mode
    and fall short of it when the last pixels are not covered by any window.
    """
    n = len(spatial)
    strides = per_axis(op_name, "strides", strides, n)
    dilations = per_axis(op_name, "dilations", dilations, n)
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise InferError(f"{op_name}: strides {strides} and dilations {dilations} must be >= 1")
    if auto_pad not in AUTO_PADS:
        raise InferError(f"{op_name}: auto_pad must be one of {', '.join(AUTO_PADS)}, "
                         f"got {auto_pad!r}")
    pads = per_axis(op_name, "pads", pads, 2 * n, 0)
    if any(p < 0 for p in pads):
        raise InferError(f"{op_name}: pads {pads} must be >= 0")
    begin, end, out, pad_end = [], [], [], []
    for i in range(n):
        size, k, s, d = spatial[i], kernel[i], strides[i], dilations[i]
        b, e = pads[i], pads[n + i]
        if auto_pad == "VALID":
            b = e = 0
        if not is_int(size, k):
            known = auto_pad in ("NOTSET", "VALID")
            begin.append(b if known else UNKNOWN)
            end.append(e if known else UNKNOWN)
            pad_end.append(e if known else UNKNOWN)
            out.append(UNKNOWN)
            continue
        span = (k - 1) * d + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // s)
            total = max(0, (o - 1) * s + span - size)
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
        else:
            room = size + b + e - span
            if room < 0:
                raise InferError(
                    f"{op_name}: the window spans {span} pixels (kernel {k}, dilation {d}) but "
                    f"spatial axis {i} has only {size} + {b} + {e} (with pads)")
            o = room // s + 1
            if ceil_mode and room % s:
                o += 1
                if (o - 1) * s >= size + b:  # ONNX: no window may start in the end padding
                    o -= 1
        begin.append(b)
        end.append(max(0, (o - 1) * s + span - b - size))
        pad_end.append(e)
        out.append(o)
    return Window(strides, dilations, tuple(begin), tuple(end), tuple(out), tuple(pad_end))


def check_kernel_shape(op_name: str, kernel_shape: tuple, w_spatial: tuple) -> tuple:
    """``kernel_shape`` when given (it must agree with W), else W's spatial shape."""
    if not kernel_shape:
        return tuple(w_spatial)
    if len(kernel_shape) != len(w_spatial) or any(
            is_int(w) and w != k for k, w in zip(kernel_shape, w_spatial)):
        raise InferError(f"{op_name}: kernel_shape {tuple(kernel_shape)} does not match the "
                         f"spatial shape {tuple(w_spatial)} of W")
    return tuple(kernel_shape)


def pad_spatial(x: np.ndarray, begin: tuple, end: tuple, value: Any = 0) -> np.ndarray:
    """``x`` padded with ``value`` on its spatial axes (axes 2...); ``x`` itself if no padding."""
    if not any(begin) and not any(end):
        return x
    spatial = x.shape[2:]
    shape = x.shape[:2] + tuple(s + b + e for s, b, e in zip(spatial, begin, end))
    out = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, dtype=x.dtype)
    out[(slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(begin, spatial))] = x
    return out


def taps(kernel: tuple):
    """Every kernel tap (a tuple of per-axis offsets), in C order."""
    return np.ndindex(*kernel)


def tap_slices(tap: tuple, win: Window) -> tuple:
    """Slices of the padded input that kernel tap ``tap`` reads for every output pixel."""
    return tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                 for t, s, d, o in zip(tap, win.strides, win.dilations, win.out))


def window_view(xp: np.ndarray, kernel: tuple, win: Window) -> np.ndarray:
    """Every window of the padded input as a strided view [N, C, *kernel, *out] (no copy)."""
    n, c = xp.shape[:2]
    sn, sc, *ss = xp.strides
    steps = (sn, sc, *(s * d for s, d in zip(ss, win.dilations)),
             *(s * st for s, st in zip(ss, win.strides)))
    shape = (n, c, *kernel, *win.out)
    if xp.flags.c_contiguous:  # a direct view is several times cheaper than as_strided
        view = np.ndarray(shape, xp.dtype, buffer=xp, strides=steps)
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(xp, shape, steps, writeable=False)


def transpose_window(op_name: str, spatial: tuple, kernel: tuple, a: dict) -> Window:
    """ConvTranspose geometry: begin = output pixels cropped at the start, out = output size.

    The "full" output of axis i is ``(in - 1) * stride + (k - 1) * dilation + 1 + output_padding``;
    the result is ``full[begin : begin + out]``, zero-extended at the end when out is larger.
    With output_shape (or SAME_*, which asks for ``in * stride``) the total crop is split as the
    ONNX spec says: the odd pixel is cropped at the end for SAME_UPPER, at the start otherwise.
    """
    n = len(spatial)
    strides = per_axis(op_name, "strides", a["strides"], n)
    dilations = per_axis(op_name, "dilations", a["dilations"], n)
    adjust = per_axis(op_name, "output_padding", a["output_padding"], n, 0)
    pads = per_axis(op_name, "pads", a["pads"], 2 * n, 0)
    auto_pad = a["auto_pad"]
    if auto_pad not in AUTO_PADS:
        raise InferError(f"{op_name}: auto_pad must be one of {', '.join(AUTO_PADS)}, "
                         f"got {auto_pad!r}")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations) or min(pads + adjust) < 0:
        raise InferError(f"{op_name}: strides/dilations must be >= 1 and pads/output_padding "
                         f">= 0, got {strides}, {dilations}, {pads}, {adjust}")
    shape = tuple(a["output_shape"])
    if shape:
        if len(shape) not in (n, n + 2):
            raise InferError(f"{op_name}: output_shape {shape} must list the {n} spatial sizes")
        shape = shape[-n:]
    begin, out = [], []
    for i in range(n):
        size, k, s, d = spatial[i], kernel[i], strides[i], dilations[i]
        if not is_int(size, k):
            begin.append(UNKNOWN)
            out.append(shape[i] if shape else UNKNOWN)
            continue
        full = (size - 1) * s + (k - 1) * d + 1 + adjust[i]
        if shape or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = shape[i] if shape else size * s
            total = max(0, full - o)
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        else:
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[n + i])
            o = full - b - e
        if o < 1:
            raise InferError(f"{op_name}: spatial axis {i} would have {o} output pixels "
                             f"(input {size}, kernel {k}, stride {s}, dilation {d})")
        begin.append(b)
        out.append(o)
    return Window(strides, dilations, tuple(begin), (0,) * n, tuple(out), (0,) * n)

