"""``fold-bn``: inference-mode BatchNormalization folded away.

A BatchNormalization is the per-channel map ``x * s + t`` with ``s = gamma / sqrt(var + eps)``
and ``t = beta - mean * s``. When its input comes from a Conv, ConvTranspose, Gemm or MatMul
(grouped and depthwise convs included) that nothing else reads, the map goes into that op's
weights and bias; otherwise it becomes a Mul and an Add by per-channel constants, which later
passes and backends handle like any other elementwise op.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qcompiler.pass_manager import register_pass
from qcompiler.rewriter import ANY, Const, Match, Op, RewritePass, Rewriter, Rule, Var, short

from .affine import PRODUCERS, channel_axis, fold_affine, producer_problem

BN_PARAMS = tuple(Const(name) for name in ("gamma", "beta", "mean", "var"))


def _bn_params(m: Match) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) of the matched BatchNormalization, in float64."""
    bn = m["bn"]
    eps = float(bn.opdef.full_attrs(bn.attrs)["epsilon"])
    gamma, beta, mean, var = (m.const(p.name).astype(np.float64).reshape(-1)
                              for p in BN_PARAMS)
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _check_fold(m: Match) -> str | None:
    producer, bn = m["producer"], m["bn"]
    problem = producer_problem(producer)
    if problem:
        return problem
    rank = len(producer.outputs[0].shape)
    if channel_axis(producer) % rank != 1:
        return (f"{short(bn)} normalizes axis 1 of %{producer.outputs[0].name} "
                f"{list(producer.outputs[0].shape)}, but {short(producer)} has its output "
                f"channels on axis {rank - 1}")
    return None


def _fold(rw: Rewriter, m: Match) -> None:
    s, t = _bn_params(m)
    rw.replace(m["bn"].outputs[0], fold_affine(rw, m["producer"], s, t))


def _check_scale_shift(m: Match) -> str | None:
    x = m["x"]
    if len(x.shape) < 2:
        return f"its input %{x.name} has rank {len(x.shape)}: there is no channel axis"
    return None


def _scale_shift(rw: Rewriter, m: Match) -> None:
    bn, x = m["bn"], m["x"]
    s, t = _bn_params(m)
    shape = (len(s),) + (1,) * (len(x.shape) - 2)
    dtype = x.dtype.np
    scaled = rw.add("Mul", [x, rw.constant(s.astype(dtype).reshape(shape), f"{bn.name}.scale")],
                    name=bn.name)
    shifted = rw.add("Add", [scaled, rw.constant(t.astype(dtype).reshape(shape),
                                                  f"{bn.name}.shift")],
                     name=f"{bn.name}.shift")
    rw.replace(bn.outputs[0], shifted)


FOLD = Rule(
    "fold-into-producer",
    Op("BatchNormalization",
       Op(PRODUCERS, ANY, ANY, ..., name="producer", one_use=True), *BN_PARAMS,
       name="bn"),
    _fold, _check_fold)

SCALE_SHIFT = Rule(
    "scale-shift",
    Op("BatchNormalization", Var("x"), *BN_PARAMS, name="bn"),
    _scale_shift, _check_scale_shift)


@register_pass
@dataclass
class FoldBatchNorm(RewritePass):
    """BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul, else Mul + Add."""

    name = "fold-bn"
    standalone: bool = True  # turn BatchNormalizations with nothing to fold into Mul + Add

    def phases(self) -> list[list[Rule]]:
        return [[FOLD, SCALE_SHIFT] if self.standalone else [FOLD]]
