"""Lookup tables for int8/uint8 elementwise functions: ``DQ -> f -> Q`` as one 256-entry table.

``make_table(f, in_params, out_params)`` evaluates ``table[k] = Q_out(f(DQ_in(q_k)))`` for the
256 codes ``q_k`` of the input dtype, with the DequantizeLinear, QuantizeLinear and ``f`` kernels
of the op registry themselves, so ``LookupTable(x, table)`` (``qcompiler/ops/lookup.py``) gives
bit for bit what the QDQ simulation gives. ``f`` is a float op node of a graph, or an op name and
its attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import ops
from .errors import QuantizationError
from .graph import Node
from .ops.lookup import TABLE_SIZE
from .quant_math import dequantize, quantize
from .types import QuantParams


def make_table(op: Node | str, in_params: QuantParams, out_params: QuantParams,
               attrs: Mapping[str, Any] | None = None) -> np.ndarray:
    """The 256-entry table of the elementwise float op ``op`` between ``in_params`` and
    ``out_params`` (per tensor, int8 or uint8): entry ``k`` is the output code of input code
    ``k + min(input dtype)``; its dtype is the output's.

    ``op`` is a Node (its attributes, and its inputs after the first, which must be constants,
    as in Clip's bounds, are used; ``attrs`` must be None) or an op name with ``attrs``.
    Raises ``QuantizationError`` for per-axis parameters, a non-8-bit dtype, or an op whose
    result on the codes is not elementwise (it depends on the other elements or the layout).
    """
    name, full_attrs, extra, where = _spec(op, attrs)
    for role, params in (("input", in_params), ("output", out_params)):
        _check_params(params, role, where)
    info = np.iinfo(in_params.dtype.np)
    codes = np.arange(info.min, info.max + 1).astype(in_params.dtype.np)
    real = dequantize(codes, in_params)
    kernel = ops.get(name).kernel

    def f(x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # an infinite result saturates when quantized
            return np.asarray(kernel(x, *extra, **full_attrs))

    y = f(real)
    if y.shape != real.shape or y.dtype.kind != "f":
        raise QuantizationError(f"{where}: a lookup table needs an elementwise float op; on "
                                f"{real.shape[0]} {real.dtype} values it gave {y.dtype} "
                                f"{list(y.shape)}")
    halves = np.concatenate([f(real[:1]), f(real[1:])])
    column = f(real.reshape(-1, 1)).reshape(-1)
    if not (np.array_equal(y, halves, equal_nan=True)
            and np.array_equal(y, column, equal_nan=True)):
        raise QuantizationError(f"{where}: a lookup table needs an elementwise op, but its "
                                f"results depend on the other elements or the layout")
    return quantize(y, out_params)


def _spec(op: Node | str, attrs: Mapping[str, Any] | None
          ) -> tuple[str, dict[str, Any], list[np.ndarray | None], str]:
    """(op name, attributes with defaults, constant extra inputs, how errors name it)."""
    if isinstance(op, Node):
        where = op.describe()
        if attrs is not None:
            raise QuantizationError(f"{where}: give attrs only with an op name; a node carries "
                                    f"its own")
        extra = []
        for i, value in enumerate(op.inputs[1:], start=1):
            if value is not None and not value.is_constant:
                raise QuantizationError(f"{where}: input {i} (%{value.name}) must be a "
                                        f"constant for a lookup table")
            extra.append(None if value is None else value.data)
        return op.op, ops.get(op.op).full_attrs(dict(op.attrs)), extra, where
    if not isinstance(op, str):
        raise QuantizationError(f"make_table takes a Node or an op name, not "
                                f"{type(op).__name__}")
    where = f"{op} lookup table"
    opdef = ops.get(op)
    try:
        full = opdef.full_attrs(dict(attrs or {}))
    except ops.InferError as exc:
        raise QuantizationError(f"{where}: {exc}") from None
    return op, full, [], where


def _check_params(params: QuantParams, role: str, where: str) -> None:
    if not isinstance(params, QuantParams):
        raise QuantizationError(f"{where}: {role} parameters must be QuantParams, got "
                                f"{type(params).__name__}")
    if params.axis is not None or len(params.scale) != 1:
        raise QuantizationError(f"{where}: {role} parameters are per axis ({len(params.scale)} "
                                f"scales along axis {params.axis}); a lookup table needs "
                                f"per-tensor parameters")
    if params.dtype.value not in ("i8", "u8"):
        raise QuantizationError(f"{where}: {role} dtype must be i8 or u8 for a "
                                f"{TABLE_SIZE}-entry table, got {params.dtype.value}")
    problems = params.problems()
    if problems:
        raise QuantizationError(f"{where}: {role} parameters are invalid: {'; '.join(problems)}")
