"""Reductions (ONNX opset 18 form: axes as an optional input, keepdims, noop_with_empty_axes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._schema import UNKNOWN, Ctx, Out, norm_axis, op

_ATTRS = {"keepdims": 1, "noop_with_empty_axes": 0}


def _reduce(ctx: Ctx) -> list[Out]:
    shape, keep = ctx.shape(0), ctx.attr("keepdims")
    axes: Any = ()
    if ctx.has(1):
        if ctx.dtype(1) != "i64" or ctx.rank(1) != 1:
            ctx.fail("axes must be a 1-D i64 tensor")
        axes = ctx.ints(1)
        if axes is None or not all(isinstance(a, int) for a in axes):
            if not keep:
                ctx.unsupported("axes must be known at compile time (a constant) when "
                                "keepdims=0: the output rank depends on them")
            return [Out(ctx.dtype(0), (UNKNOWN,) * len(shape))]
    if not axes:  # reduce over everything, or nothing with noop_with_empty_axes
        if ctx.attr("noop_with_empty_axes"):
            return [Out(ctx.dtype(0), shape)]
        return [Out(ctx.dtype(0), (1,) * len(shape) if keep else ())]
    reduced = {norm_axis(a, len(shape)) for a in axes}
    out = tuple(1 if a in reduced else d for a, d in enumerate(shape) if keep or a not in reduced)
    return [Out(ctx.dtype(0), out)]


def _reduction(name: str, doc: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a kernel for ReduceXxx built on ``fn(x, axes, keepdims)``, which gets a tuple of
    normalized axes; the decorated name becomes the registered kernel."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        def kernel(data, axes=None, keepdims=1, noop_with_empty_axes=0):
            if axes is None or axes.size == 0:
                if noop_with_empty_axes:
                    return data.copy()
                axes = range(data.ndim)
            norm = tuple(sorted({int(a) % data.ndim for a in axes})) if data.ndim else ()
            return np.asarray(fn(data, norm, bool(keepdims)), dtype=data.dtype)

        kernel.__doc__ = doc
        kernel.__name__ = fn.__name__
        return op(name, ["data", "axes?"], ["reduced"], attrs=dict(_ATTRS), infer=_reduce)(kernel)

    return register


@_reduction("ReduceSum", "Sum over ``axes`` (all when empty); integers wrap like the input type.")
def reduce_sum(x, axes, keepdims):
    acc = np.float64 if x.dtype.kind == "f" else x.dtype
    return np.sum(x, axis=axes, keepdims=keepdims, dtype=acc)


@_reduction("ReduceMean", "Mean over ``axes``; an integer mean truncates toward zero and an "
                          "empty reduction gives 0, as in onnxruntime.")
def reduce_mean(x, axes, keepdims):
    count = max(int(np.prod([x.shape[a] for a in axes])), 1)
    if x.dtype.kind == "f":
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=np.float64) / count
    total = np.sum(x, axis=axes, keepdims=keepdims, dtype=np.int64)
    return np.sign(total) * (np.abs(total) // count)


@_reduction("ReduceMax", "Max over ``axes``; an empty reduction gives the type's lowest value.")
def reduce_max(x, axes, keepdims):
    if x.dtype.kind == "f":
        lowest = -np.inf
    elif x.dtype.kind == "b":
        lowest = False
    else:
        lowest = np.iinfo(x.dtype).min
    return np.max(x, axis=axes, keepdims=keepdims, initial=lowest)


def _arg_reduce(ctx: Ctx) -> list[Out]:
    shape = ctx.shape(0)
    if ctx.dtype(0) == "bool":
        ctx.fail("input must be numeric, got bool")
    axis = norm_axis(ctx.attr("axis"), len(shape))
    if shape[axis] == 0:
        ctx.fail(f"axis {axis} is empty: there is no index to return")
    out = tuple(1 if a == axis else d for a, d in enumerate(shape)
                if ctx.attr("keepdims") or a != axis)
    return [Out("i64", out)]


def _arg(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An ArgMax/ArgMin kernel on numpy's ``fn`` (which returns the first extreme index);
    ``select_last_index`` searches the reversed axis and maps the index back."""

    def kernel(data, axis=0, keepdims=1, select_last_index=0):
        axis %= data.ndim
        if select_last_index:
            index = data.shape[axis] - 1 - fn(np.flip(data, axis), axis=axis, keepdims=True)
        else:
            index = fn(data, axis=axis, keepdims=True)
        index = index.astype(np.int64)
        return index if keepdims else np.squeeze(index, axis)

    kernel.__doc__ = (f"Index of the {fn.__name__[3:]} along ``axis`` (the first one, or the last "
                      f"with ``select_last_index``), as int64.")
    kernel.__name__ = fn.__name__
    return kernel


_ARG_ATTRS = {"axis": 0, "keepdims": 1, "select_last_index": 0}
op("ArgMax", ["data"], ["reduced"], attrs=dict(_ARG_ATTRS), infer=_arg_reduce)(_arg(np.argmax))
op("ArgMin", ["data"], ["reduced"], attrs=dict(_ARG_ATTRS), infer=_arg_reduce)(_arg(np.argmin))
