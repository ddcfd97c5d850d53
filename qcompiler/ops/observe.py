"""Observe: an identity that marks a float activation as observed by calibration (a qcompiler
op, not an ONNX one).

The ``insert-observers`` pass puts one after every float activation; calibration watches the
Observe nodes' results through an Interpreter hook and keeps the statistics itself, so the node
carries no method or state and the graph computes exactly what it computed before.
``strip_observers`` (``qcompiler.passes.observe``) takes them out again.
"""

from __future__ import annotations

from ._schema import Ctx, Out, op

OBSERVE = "Observe"
FLOATS = ("f32", "f16")


def _observe(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) not in FLOATS:
        ctx.fail(f"only float activations are observed, got {ctx.dtype(0)}")
    return [Out(ctx.dtype(0), ctx.shape(0))]


@op(OBSERVE, ["x"], ["y"], infer=_observe)
def observe(x):
    """``y = x``: the array itself (nothing writes to arrays a kernel returns)."""
    return x
