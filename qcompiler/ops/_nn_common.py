"""Dtype checks and float16 widening shared by the nn, window and resize op modules."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._schema import Ctx

FLOATS = ("f32", "f16")


def f32(x: np.ndarray) -> np.ndarray:
    """float16 arrays widened to float32 (numpy has no float16 BLAS); others unchanged."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def need_dtype(ctx: Ctx, i: int, allowed: tuple[str, ...], what: str) -> str:
    dtype = ctx.dtype(i)
    if dtype not in allowed:
        ctx.fail(f"{ctx.op}: {what} must be {' or '.join(allowed)}, got {dtype}")
    return dtype


def same_dtype(ctx: Ctx, i: int, dtype: str, what: str) -> None:
    if ctx.has(i) and ctx.dtype(i) != dtype:
        ctx.fail(f"{ctx.op}: {what} is {ctx.dtype(i)} but X is {dtype}")


def is_int(*dims: Any) -> bool:
    return all(isinstance(d, int) for d in dims)
