"""LookupTable: an int8/uint8 elementwise function as a 256-entry table (a qcompiler op, not
an ONNX one).

``y[i] = table[x[i] - min(dtype of x)]``: every int8 (or uint8) code indexes one entry, so any
elementwise float function between a DequantizeLinear and a QuantizeLinear (Sigmoid, Tanh,
HardSwish, ...) becomes one gather. ``qcompiler.lut.make_table`` builds the table from the float
op's own kernel, so the lookup is bit-exact with the QDQ simulation.
"""

from __future__ import annotations

import numpy as np

from ._schema import Ctx, Out, op

LOOKUP_TABLE = "LookupTable"
TABLE_SIZE = 256
CODE_DTYPES = ("i8", "u8")


def _lookup_table(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) not in CODE_DTYPES:
        ctx.fail(f"x must be i8 or u8 (256 codes), got {ctx.dtype(0)}")
    if ctx.dtype(1) not in CODE_DTYPES:
        ctx.fail(f"table must be i8 or u8 (the output dtype), got {ctx.dtype(1)}")
    if ctx.shape(1) != (TABLE_SIZE,):
        ctx.fail(f"table must be 1-D with {TABLE_SIZE} entries (one per code of x), got shape "
                 f"{list(ctx.shape(1))}")
    if not isinstance(ctx.value(1), np.ndarray):
        ctx.fail("table must be a constant")
    return [Out(ctx.dtype(1), ctx.shape(0))]


@op(LOOKUP_TABLE, ["x", "table"], ["y"], infer=_lookup_table)
def lookup_table(x, table):
    """``table[x - min(x.dtype)]``: code ``q`` of x reads entry ``q + 128`` (int8) or ``q``
    (uint8); y has x's shape and the table's dtype."""
    return np.take(table, x.astype(np.intp) - np.iinfo(x.dtype).min)
