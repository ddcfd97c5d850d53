"""DynamicQuantizeLinear (ONNX opset 11): uint8 quantization with parameters from the tensor.

Dynamic quantization computes an activation's scale and zero point at run time, from the tensor
itself: the range ``[min(x, 0), max(x, 0)]`` (widened to contain 0) mapped onto ``[0, 255]``.
In float32, as onnxruntime computes it::

    scale = (hi - lo) / 255                 (1.0 when hi == lo: an all-zero tensor)
    zero_point = rint(clip(0 - lo / scale, 0, 255))
    y = saturate(rint(x / scale) + zero_point)

``rint`` rounds half to even. A nonzero range so small that the scale underflows to 0 (below
``255 * 2^-149``) is as onnxruntime and onnx.reference give it: the zero point 255 when the
range starts at 0 (their clamp takes ``0 / 0`` to the top), ``y`` 0 for zeros and 255 above.
For an all-zero tensor onnx.reference gives the scale 1/255 where onnxruntime gives 1.0; ``y``
and the zero point (all 0) are the same, and we follow onnxruntime, the runtime that executes
exported models.
"""

from __future__ import annotations

import numpy as np

from ._schema import Ctx, Out, op

QMIN, QMAX = 0, 255


def _infer(ctx: Ctx) -> list[Out]:
    if ctx.dtype(0) != "f32":
        ctx.fail(f"DynamicQuantizeLinear quantizes f32 tensors, got {ctx.dtype(0)}")
    return [Out("u8", ctx.shape(0)), Out("f32", ()), Out("u8", ())]


@op("DynamicQuantizeLinear", ["x"], ["y", "y_scale", "y_zero_point"], infer=_infer)
def dynamic_quantize_linear(x):
    """``(y, y_scale, y_zero_point)``: ``x`` quantized to uint8 with the scale and zero point
    of its own range (widened to contain 0), as onnxruntime computes them."""
    x = np.asarray(x, dtype=np.float32)
    zero = np.float32(0)
    lo = min(zero, x.min()) if x.size else zero
    hi = max(zero, x.max()) if x.size else zero
    # a range wider than float32's has the scale inf; one below 255 * 2^-149 the scale 0
    # (then x / 0 is inf and 0 / 0 NaN), as in onnxruntime
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scale = np.float32(1) if hi == lo else np.float32((hi - lo) / np.float32(QMAX - QMIN))
        initial = np.float32(QMIN) - lo / scale
        rounded = np.rint(x / scale)
    # min then max, as onnxruntime and onnx.reference clamp: a NaN (0 / 0) comes out QMAX
    zero_point = np.rint(max(np.float32(QMIN), min(np.float32(QMAX), initial)))
    y = np.clip(np.nan_to_num(rounded + zero_point, nan=QMIN), QMIN, QMAX)
    return (y.astype(np.uint8), np.array(scale, np.float32),
            np.array(zero_point, np.float32).astype(np.uint8))
