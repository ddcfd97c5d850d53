"""Folding a per-channel affine map ``y * scale + shift`` into the op that produced ``y``.

Shared by ``fold-bn`` (a BatchNormalization is such a map) and ``fuse`` (Mul/Add/Sub/Div by a
constant after a conv, and bias adds). The producer is a Conv, ConvTranspose, Gemm or MatMul
with constant weights; its output channel axis is 1 for the convs and the last axis for the
matrix products. Weights and biases are recomputed in float64 and stored in the producer's
dtype, so the folded op differs from the original pair by float32 rounding only.
"""

from __future__ import annotations

import numpy as np

from qcompiler.graph import Node, Value
from qcompiler.rewriter import Rewriter, short

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT_DTYPES = ("f32", "f16")


def channel_axis(producer: Node) -> int:
    """The output axis that holds the producer's output channels (as a negative index)."""
    rank = len(producer.outputs[0].shape)
    return 1 - rank if producer.op in ("Conv", "ConvTranspose") else -1


def channels(producer: Node) -> int | str:
    return producer.outputs[0].shape[channel_axis(producer)]


def output_problem(producer: Node) -> str | None:
    """Why nothing more can be fused onto ``producer``'s output (an integer result, or an
    activation that would have to come after it), or None."""
    out = producer.outputs[0]
    if out.dtype.value not in FLOAT_DTYPES:
        return f"{short(producer)} computes {out.dtype}, not a float"
    activation = producer.attrs.get("activation")
    if activation:
        return f"{short(producer)} already applies {activation}"
    return None


def has_residual(producer: Node) -> bool:
    return producer.op == "Conv" and len(producer.inputs) > 3 and producer.inputs[3] is not None


def producer_problem(producer: Node) -> str | None:
    """Why ``producer`` cannot absorb an affine map, or None."""
    problem = output_problem(producer)
    if problem:
        return problem
    if has_residual(producer):
        return f"{short(producer)} already adds a residual"
    w = producer.inputs[1]
    if w is None or not w.is_constant:
        return f"the weights %{w.name if w else '?'} of {short(producer)} are not a constant"
    bias = _bias(producer)
    if bias is not None and not bias.is_constant:
        return f"the bias %{bias.name} of {short(producer)} is not a constant"
    if producer.op == "MatMul" and len(w.shape) < 2:
        return f"{short(producer)} multiplies by a vector: it has no output channels"
    if not isinstance(channels(producer), int):
        return f"{short(producer)} has an unknown number of output channels"
    return None


def per_channel(producer: Node, const: Value) -> np.ndarray | str:
    """The per-channel vector an elementwise constant operand amounts to, or why it is not one.

    ``const`` must broadcast against the producer's output without changing its shape and vary
    only along the channel axis."""
    out = producer.outputs[0]
    data = const.data
    rank = len(out.shape)
    if data.ndim > rank:
        return f"%{const.name} has rank {data.ndim}, more than the {rank} of %{out.name}"
    shape = (1,) * (rank - data.ndim) + data.shape
    axis = channel_axis(producer) % rank
    for i, (d, full) in enumerate(zip(shape, out.shape)):
        if d != 1 and (i != axis or d != full):
            return (f"%{const.name} {list(data.shape)} varies along axis {i} of "
                    f"%{out.name} {list(out.shape)}, not only along its channels")
    vector = np.asarray(data, dtype=np.float64).reshape(shape)
    return np.broadcast_to(vector.reshape(-1), (int(channels(producer)),)).copy()


def _bias(producer: Node) -> Value | None:
    """Input 2: Conv/ConvTranspose B, Gemm C, MatMul bias."""
    inputs = producer.inputs
    return inputs[2] if len(inputs) > 2 else None


def fold_affine(rw: Rewriter, producer: Node, scale: np.ndarray | None,
                shift: np.ndarray | None) -> Value:
    """Insert a copy of ``producer`` computing ``producer(x) * scale + shift`` (per output
    channel) and return its output; the caller redirects readers to it."""
    m = int(channels(producer))
    s = np.ones(m) if scale is None else np.asarray(scale, dtype=np.float64)
    t = np.zeros(m) if shift is None else np.asarray(shift, dtype=np.float64)
    bias_value = _bias(producer)
    bias = None if bias_value is None else bias_value.data.astype(np.float64)
    attrs = dict(producer.attrs)
    if producer.op == "Gemm":
        if bias is not None:
            bias = bias * attrs.get("beta", 1.0)
        if bias is not None or "beta" in attrs:
            attrs["beta"] = 1.0  # the new C is the whole bias, also where there was no C
    inputs = list(producer.inputs)
    if scale is not None:  # a bias alone leaves the weights (and their name) as they were
        w_value = producer.inputs[1]
        inputs[1] = rw.constant(_scale_weights(producer, w_value.data, s).astype(w_value.dtype.np),
                                _folded(w_value.name))
    if bias is None:
        new_bias = None if shift is None else t
    else:
        new_bias = bias * s + t if producer.op == "Gemm" else bias.reshape(-1) * s + t
    if new_bias is not None:
        name = _folded(bias_value.name) if bias_value is not None else f"{producer.name}.bias"
        inputs = (inputs + [None])[:max(len(inputs), 3)]
        inputs[2] = rw.constant(new_bias.astype(producer.outputs[0].dtype.np), name)
    return rw.add(producer.op, inputs, attrs, name=producer.name)


def _scale_weights(producer: Node, weights: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The producer's weights with output channel ``c`` multiplied by ``s[c]``, in float64."""
    w = weights.astype(np.float64)
    if producer.op == "Conv":  # W [M, C/group, k...]
        return w * s.reshape((len(s),) + (1,) * (w.ndim - 1))
    if producer.op == "ConvTranspose":  # W [C, M/group, k...], output channel g * M/group + j
        group = producer.attrs.get("group", 1)
        mg = w.shape[1]
        return (w.reshape(group, w.shape[0] // group, mg, *w.shape[2:])
                * s.reshape((group, 1, mg) + (1,) * (w.ndim - 2))).reshape(w.shape)
    if producer.op == "Gemm":  # columns of op(B)
        return w * (s[:, None] if producer.attrs.get("transB", 0) else s[None, :])
    return w * s  # MatMul: columns are the last axis of B


def _folded(name: str) -> str:
    return name if name.endswith(".folded") else f"{name}.folded"
