"""Strategies for the data a graph runs on: ``inputs(graph)`` (feeds for its inputs) and
``quant_params()`` (valid quantization parameters)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ..graph import Graph
from ..types import DType, QuantParams

SEEDS = st.integers(0, 2**32 - 1)  # numpy seeds: arrays are filled by numpy, not drawn


DISTRIBUTIONS = ("normal", "uniform", "grid", "zeros")


def inputs(graph: Graph, *, low: float = -4.0,
           high: float = 4.0) -> SearchStrategy[dict[str, np.ndarray]]:
    """Feeds for every input of ``graph``, with its shape and dtype, values in [low, high].

    Each input draws a distribution (normal, uniform, a 0.5 grid so that ties and exact zeros
    occur, or all zeros) and a seed; symbolic dimensions are bound to sizes 1-3, the same size
    for the same symbol across inputs.
    """
    if not low <= high:
        raise ValueError(f"need low <= high, got {low}, {high}")
    specs = [(v.name, v.dtype, v.shape) for v in graph.inputs]
    symbols = sorted({d for _, _, shape in specs for d in shape if not isinstance(d, int)})
    return _inputs(tuple(specs), tuple(symbols), float(low), float(high))


@st.composite
def _inputs(draw: Callable[..., Any], specs: tuple, symbols: tuple, low: float,
            high: float) -> dict[str, np.ndarray]:
    sizes = {s: draw(st.integers(1, 3), label=f"size of {s}") for s in symbols}
    feeds = {}
    for name, dtype, shape in specs:
        dims = tuple(d if isinstance(d, int) else sizes[d] for d in shape)
        kind = draw(st.sampled_from(DISTRIBUTIONS), label=f"{name} distribution")
        rng = np.random.default_rng(draw(SEEDS))
        feeds[name] = _fill(rng, kind, dims, DType(dtype), low, high)
    return feeds


def _fill(rng: np.random.Generator, kind: str, dims: tuple, dtype: DType, low: float,
          high: float) -> np.ndarray:
    if dtype == DType.BOOL:
        return rng.random(dims) < 0.5 if kind != "zeros" else np.zeros(dims, bool)
    if dtype.is_integer:
        info = np.iinfo(dtype.np)
        lo, hi = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
        if kind == "zeros" or lo > hi:
            return np.clip(np.zeros(dims, np.int64), lo, max(lo, hi)).astype(dtype.np)
        return rng.integers(lo, hi, dims, endpoint=True).astype(dtype.np)
    if kind == "zeros":
        data = np.clip(np.zeros(dims), low, high)
    elif kind == "uniform":
        data = rng.uniform(low, high, dims)
    elif kind == "normal":
        mid, spread = (low + high) / 2, (high - low) / 6
        data = np.clip(rng.normal(mid, spread, dims), low, high)
    else:
        steps = rng.integers(math.ceil(2 * low), math.floor(2 * high), dims, endpoint=True) \
            if math.ceil(2 * low) <= math.floor(2 * high) else np.full(dims, 2 * low)
        data = steps / 2
    return np.asarray(data, dtype=dtype.np)


def quant_params(
    *,
    dtype: DType | str | None = None,
    per_channel: bool | None = None,
    channels: int | SearchStrategy[int] | None = None,
    symmetric: bool | None = None,
    axis: int | None = None,
) -> SearchStrategy[QuantParams]:
    """Valid ``QuantParams`` (``problems()`` is empty): int8 or uint8, per tensor or per
    channel (``axis``, drawn 0 or 1 when None, and ``channels`` scales, 1-8 when None),
    symmetric (zero point 0 and range [-127, 127] for int8; zero point 128 for uint8) or
    asymmetric (any zero point in range, sometimes a reduced 7-bit range); scales log-uniform in
    [1e-4, 1e2]. Each argument left None is drawn.
    """
    return _quant_params(None if dtype is None else DType(dtype), per_channel, channels,
                         symmetric, axis)


@st.composite
def _quant_params(draw: Callable[..., Any], dtype: DType | None, per_channel: bool | None,
                  channels: int | SearchStrategy[int] | None, symmetric: bool | None,
                  axis: int | None) -> QuantParams:
    qtype = dtype or draw(st.sampled_from([DType.I8, DType.U8]))
    if not qtype.is_integer or qtype.np.itemsize != 1:
        raise ValueError(f"quant_params: dtype must be i8 or u8, got {qtype}")
    channel = per_channel if per_channel is not None else draw(st.booleans())
    sym = symmetric if symmetric is not None else draw(st.booleans())
    if not channel:
        n = 1
    elif isinstance(channels, int):
        n = channels
    else:
        n = draw(channels if channels is not None else st.integers(1, 8))
    exp_lo = draw(st.floats(-4.0, 2.0))
    exp_hi = draw(st.floats(exp_lo, 2.0)) if n > 1 else exp_lo
    rng = np.random.default_rng(draw(SEEDS))
    exps = rng.uniform(exp_lo, exp_hi, n)
    exps[0] = exp_lo
    scales = np.clip(10.0 ** exps, 1e-4, 1e2)
    info = np.iinfo(qtype.np)
    if sym:
        qmin, qmax = (-127, 127) if qtype == DType.I8 else (0, 255)
        zeros = np.full(n, 0 if qtype == DType.I8 else 128)
    else:
        reduced = draw(st.integers(0, 3)) == 0
        qmin, qmax = (int(info.min), int(info.max))
        if reduced:
            qmin, qmax = (-64, 63) if qtype == DType.I8 else (0, 127)
        z0 = draw(st.integers(qmin, qmax))
        zeros = rng.integers(qmin, qmax, n, endpoint=True)
        zeros[0] = z0
    ax = None if not channel else (axis if axis is not None else draw(st.sampled_from([1, 0])))
    return QuantParams(tuple(float(s) for s in scales), tuple(int(z) for z in zeros), qtype, ax,
                       qmin, qmax)


