"""Comparisons, boolean logic and float classification: ops whose output is a bool tensor.

Exporters emit these for masks (attention masks, ``torch.where`` conditions, padding checks);
they are exact, so their kernels are plain numpy comparisons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._schema import Ctx, Out, broadcast_shapes, op


def _compare(ctx: Ctx) -> list[Out]:
    """Two operands of one dtype, broadcast; a bool result."""
    if ctx.dtype(0) != ctx.dtype(1):
        ctx.fail(f"operands must share one dtype, got {ctx.dtype(0)} and {ctx.dtype(1)}")
    return [Out("bool", broadcast_shapes(ctx.shape(0), ctx.shape(1)))]


def _logical(ctx: Ctx) -> list[Out]:
    """Bool operands only (ONNX's Not, And, Or and Xor are defined on bool), broadcast."""
    n = len(ctx.types)
    for i in range(n):
        if ctx.dtype(i) != "bool":
            ctx.fail(f"operand {i} must be bool, got {ctx.dtype(i)}")
    return [Out("bool", broadcast_shapes(*(ctx.shape(i) for i in range(n))))]


def _float_test(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) not in ("f32", "f16"):
        ctx.fail(f"input must be a float tensor, got {ctx.dtype(0)}")
    return [Out("bool", ctx.shape(0))]


def _register(name: str, inputs: list[str], output: str, infer: Callable[[Ctx], list[Out]],
              fn: Callable[..., Any]) -> None:
    def kernel(*xs):
        return np.asarray(fn(*xs), dtype=np.bool_)

    kernel.__doc__ = f"{name}: numpy's {fn.__name__}, elementwise with broadcasting."
    kernel.__name__ = name.lower()
    op(name, inputs, [output], infer=infer)(kernel)


for _name, _fn in (("Equal", np.equal), ("Less", np.less), ("LessOrEqual", np.less_equal),
                   ("Greater", np.greater), ("GreaterOrEqual", np.greater_equal)):
    _register(_name, ["A", "B"], "C", _compare, _fn)
for _name, _fn in (("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)):
    _register(_name, ["A", "B"], "C", _logical, _fn)
_register("Not", ["X"], "Y", _logical, np.logical_not)
_register("IsNaN", ["X"], "Y", _float_test, np.isnan)


@op("IsInf", ["X"], attrs={"detect_negative": 1, "detect_positive": 1}, infer=_float_test)
def is_inf(x, detect_negative, detect_positive):
    """True where ``x`` is an infinity of a detected sign."""
    return (np.isposinf(x) & bool(detect_positive)) | (np.isneginf(x) & bool(detect_negative))
