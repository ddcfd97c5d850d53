"""Running graphs and comparing their outputs: ``run_graph`` and ``assert_equivalent``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..graph import Graph
from ..types import QuantParams, TensorType


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``inputs`` with the ``Interpreter`` (the reference); {output: array}."""
    from ..interpreter import Interpreter

    return Interpreter(graph).run(inputs)


def _scale_array(params: QuantParams, shape: tuple[int, ...]) -> np.ndarray:
    """The QuantParams scale broadcast to an output of ``shape`` (per channel along axis)."""
    scale = np.asarray(params.scale, dtype=np.float64)
    if params.axis is None:
        return scale.reshape(())
    axis = params.axis % len(shape)
    view = [1] * len(shape)
    view[axis] = scale.size
    return scale.reshape(view)


def _compare(name: str, a: np.ndarray, b: np.ndarray, tol: np.ndarray | float, how: str
             ) -> str | None:
    """None when every |a - b| <= tol (equal NaN positions and equal infinities are fine),
    else a message naming the worst element."""
    if a.dtype.kind in "iub":
        diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
    else:
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
    tol_full = np.broadcast_to(np.asarray(tol, dtype=np.float64), diff.shape)
    bad = diff > tol_full
    if not bad.any():
        return None
    excess = np.where(bad, diff - tol_full, -np.inf)
    worst = np.unravel_index(int(np.argmax(excess)), diff.shape) if diff.ndim else ()
    index = tuple(int(i) for i in worst)
    count, total = int(bad.sum()), diff.size
    return (f"output {name!r}: max |g1 - g2| = {float(diff[index]):.6g} > tolerance "
            f"{float(tol_full[index]):.6g} ({how}); worst at index {index}: "
            f"g1 = {a[index].item()!r}, g2 = {b[index].item()!r}; {count}/{total} elements "
            f"({100.0 * count / total:.3g}%) out of tolerance")


def assert_equivalent(
    g1: Graph,
    g2: Graph,
    inputs: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    steps: float | None = None,
    scale: float | np.ndarray | None = None,
) -> None:
    """Run both graphs on ``inputs`` and check that they give the same outputs, by name.

    Both must have the same output names, and each output the same shape and dtype. Float
    outputs must satisfy ``max|a - b| <= max(atol, rtol * max|reference|)`` where the
    reference is g1's output: the tolerance is relative to the tensor's largest magnitude, not
    to each element, so a correct rewrite whose rounding shows up as cancellation near zero does
    not fail, and ``atol`` is its floor for outputs near zero everywhere. Integer and bool
    outputs must be equal (unless ``steps``). Equal NaN positions are fine; a NaN on one side
    only fails.

    ``steps=k`` gives the tolerance in quantization steps instead: integer (quantized) outputs
    may differ by k, float outputs by ``k * scale``, with ``scale`` given or else taken from the
    QuantParams of the output's type in g2 (per-channel scales broadcast along their axis).

    Raises AssertionError naming the output, the max difference, the tolerance, the worst
    element (index and both values) and the fraction of elements out of tolerance.
    """
    names1 = [v.name for v in g1.outputs]
    names2 = [v.name for v in g2.outputs]
    if sorted(names1) != sorted(names2):
        missing = [n for n in names1 if n not in names2]
        extra = [n for n in names2 if n not in names1]
        raise AssertionError(
            f"the graphs have different outputs: g1 has {names1}, g2 has {names2}"
            + (f"; missing from g2: {missing}" if missing else "")
            + (f"; only in g2: {extra}" if extra else ""))
    out1, out2 = run_graph(g1, inputs), run_graph(g2, inputs)
    types2 = {v.name: v.type for v in g2.outputs}
    failures = []
    for name in names1:
        a, b = np.asarray(out1[name]), np.asarray(out2[name])
        if a.shape != b.shape or a.dtype != b.dtype:
            failures.append(f"output {name!r}: g1 gives {a.dtype}{list(a.shape)} but g2 gives "
                            f"{b.dtype}{list(b.shape)}")
            continue
        if steps is not None and a.dtype.kind in "iu":
            tol: np.ndarray | float = float(steps)
            how = f"{steps} quantization step(s)"
        elif steps is not None and a.dtype.kind == "f":
            step = _step_scale(name, scale, types2[name], a.shape)
            tol = steps * step
            how = f"{steps} step(s) x scale"
        elif a.dtype.kind == "f":
            finite = np.abs(a[np.isfinite(a)].astype(np.float64))
            peak = float(finite.max()) if finite.size else 0.0
            tol = max(atol, rtol * peak)
            how = f"max(atol {atol:g}, rtol {rtol:g} * max|g1| {peak:.6g})"
        else:
            tol, how = 0.0, "exact"
        message = _compare(name, a, b, tol, how)
        if message:
            failures.append(message)
    if failures:
        raise AssertionError("\n".join(failures))


def _step_scale(name: str, scale: float | np.ndarray | None, type2: TensorType,
                shape: tuple[int, ...]) -> np.ndarray:
    if scale is not None:
        return np.asarray(scale, dtype=np.float64)
    if type2.quant is None:
        raise ValueError(
            f"assert_equivalent(steps=...): output {name!r} is float and its type in g2 ({type2}) "
            f"has no QuantParams to take the step size from; pass scale=")
    return _scale_array(type2.quant, shape)


