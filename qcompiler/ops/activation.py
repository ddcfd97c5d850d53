"""Activations fused into Conv, ConvTranspose, Gemm and MatMul (a qcompiler extension).

A fused node carries ``activation`` (the name of a standalone activation op, ``""`` for none)
and ``activation_params``. The params are the standalone op's float attributes in declaration
order (LeakyRelu: alpha; HardSigmoid: alpha, beta) or, for Clip, its ``min`` and ``max`` inputs.
The activation runs the standalone op's registered kernel on the un-activated result, so a
fused node is bit-exact with the op followed by a separate activation node.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from ._schema import OPS, Ctx

ACTIVATION_ATTRS = {"activation": "", "activation_params": ()}
EXTENSIONS = frozenset(ACTIVATION_ATTRS)  # what they add to an op's OpDef.extensions

# activation -> the names of its params, in order
ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "Relu": (),
    "Clip": ("min", "max"),
    "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"),
    "HardSwish": (),
}


def _allowed() -> str:
    return ", ".join(f"{name}({', '.join(params)})" for name, params in ACTIVATIONS.items())


def check_activation(ctx: Ctx, dtype: str) -> None:
    """Fail unless the node's ``activation``/``activation_params`` name an allowed activation
    with its params, on a float output of dtype ``dtype``."""
    name, params = ctx.attr("activation"), ctx.attr("activation_params")
    if name == "":
        if params:
            ctx.fail(f"{ctx.op}: activation_params {params!r} are given without an activation; "
                     f"allowed: {_allowed()}")
        return
    if name not in ACTIVATIONS:
        ctx.fail(f"{ctx.op}: unknown activation {name!r}; allowed: {_allowed()}")
    expected = ACTIVATIONS[name]
    if not isinstance(params, (tuple, list)) or len(params) != len(expected) or not all(
            isinstance(p, Real) and not isinstance(p, bool) for p in params):
        ctx.fail(f"{ctx.op}: activation {name} takes {len(expected)} activation_params "
                 f"({', '.join(expected) or 'none'}), got {params!r}; allowed: {_allowed()}")
    if dtype not in ("f32", "f16"):
        ctx.fail(f"{ctx.op}: activation {name} needs a float output (f32 or f16), got {dtype}")


def apply_activation(y: np.ndarray, name: str, params: tuple[Any, ...]) -> np.ndarray:
    """``y`` through the registered kernel of activation ``name`` (``y`` itself when none)."""
    if not name:
        return y
    kernel = OPS[name].kernel
    if name == "Clip":
        low, high = params
        return kernel(y, np.array(low, y.dtype), np.array(high, y.dtype))
    return kernel(y, **dict(zip(ACTIVATIONS[name], params, strict=True)))
