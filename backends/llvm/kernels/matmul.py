"""``IntMatMul`` with a constant 2-D weight: the exact int8 GEMM of ``gemm.py`` with its
requantizing tile store, one call per node, split by panels of rows of A.

A of rank 2 or batched ``[..., M, K]`` (or 1-D ``[K]``) is read as ``rows x K`` (every batch
shares the weight); the weights are centred by ``b_zero_point``, packed and the bias (with the
``a_zero_point`` term, ``pack_weights``) padded once, at compile time; the multipliers become the
store's per-column constants (``gemm.requantization``). Every product is a 16-bit pair product
summed in int32 (``pmaddwd``), exact, unless the weights are proved never to let the u8 x s8
pair instruction saturate (``gemm.choose_product``): then it runs that (``pmaddubsw``). The
function's name records which (``qc_int_matmul_pmaddwd_*`` or ``qc_int_matmul_pmaddubsw_*``).
"""

from __future__ import annotations

import math

import numpy as np

from qcompiler.graph import Node, Value

from .. import gemm
from ..kernel import Buffer, Call, Const, Context, Function, NotNative, Scratch, attrs, emitter

ROWS = 8 * gemm.MR  # rows of A per item: the unit the threads split

_FUNCTION = """
{declaration}

define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %a,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %packed,
                    ptr noalias nocapture readonly %bias, ptr noalias nocapture readonly %mult,
                    ptr noalias nocapture readonly %shift, ptr noalias nocapture readonly %half,
                    ptr noalias nocapture readonly %acclo, ptr noalias nocapture readonly %acchi,
                    ptr noalias nocapture %work) {{
entry:
  %first = mul nuw nsw i64 %begin, {panel}
  %last.p = mul nuw nsw i64 %end, {panel}
  %last = call i64 @llvm.umin.i64(i64 %last.p, i64 {rows})
  %m = sub nsw i64 %last, %first
  %some = icmp sgt i64 %m, 0
  br i1 %some, label %run, label %exit

run:
  %a.o = mul nuw nsw i64 %first, {k}
  %a.at = getelementptr inbounds i8, ptr %a, i64 %a.o
  %y.o = mul nuw nsw i64 %first, {n}
  %y.at = getelementptr inbounds i8, ptr %y, i64 %y.o
  call void @{gemm}(ptr %a.at, i64 {k}, ptr %packed, ptr %bias, ptr %y.at, i64 {n},
                         i64 %m, i64 {n}, i64 {k}, ptr %work, ptr %mult, ptr %shift,
                         ptr %half, ptr %acclo, ptr %acchi, i64 {low}, i64 {high}, i64 {zp})
  br label %exit

exit:
  ret void
}}

declare i64 @llvm.umin.i64(i64, i64)
"""


def operands(node: Node, names: list[str]) -> dict[str, Value | None]:
    """The node's operands by their names in the op's input list (None where absent)."""
    given = list(node.inputs) + [None] * (len(names) - len(node.inputs))
    return {name.rstrip("?"): value for name, value in zip(names, given, strict=True)}


def constant(value: Value | None, what: str) -> np.ndarray | None:
    """A constant operand's array (None when absent); ``NotNative`` when computed at run time."""
    if value is None:
        return None
    if not value.is_constant:
        raise NotNative(f"{what} is computed at run time; the native kernel bakes it in")
    return np.asarray(value.data)


def shared_gemm(ctx: Context, signed: bool, rounding: str | None,
                product: str = gemm.EXACT) -> Function:
    """The GEMM (``gemm.kernel_ir``) for int8 (``signed``) or uint8 codes, int32 out or
    requantized by ``rounding``, by ``product``: one function per program that every layer
    calls."""
    key = (signed, ctx.avx2, rounding, product)
    return ctx.function(f"gemm_{product}", key, lambda name: gemm.kernel_ir(
        name, signed, ctx.avx2, rounding=rounding, product=product))


@emitter("IntMatMul")
def int_matmul(node: Node, ctx: Context) -> list[Call]:
    ops = operands(node, ["a", "b", "multiplier", "y_zero_point", "bias?", "a_zero_point?",
                          "b_zero_point?"])
    a, b, y = ops["a"], ops["b"], node.outputs[0]
    if not b.is_constant:
        raise NotNative("the weight b is computed at run time (a product of two activations)")
    if len(b.shape) != 2:
        raise NotNative(f"the weight b is {len(b.shape)}-D; the native kernel takes a [K, N] "
                        f"weight shared by every batch")
    consts = {name: constant(ops[name], name) for name in
              ("multiplier", "y_zero_point", "bias", "a_zero_point", "b_zero_point")}
    k, n = b.shape
    rows = math.prod(a.shape[:-1])
    if rows == 0 or n == 0:
        return []
    if k == 0:
        raise NotNative("an empty inner dimension (K = 0)")
    at = attrs(node)
    signed = a.dtype.np == np.int8
    codes = np.asarray(b.data)
    kind = gemm.choose_product([gemm.centre(codes, consts["b_zero_point"])], ctx.avx2)
    weights = gemm.pack_weights(codes, consts["b_zero_point"], consts["bias"],
                                a_zero_point=consts["a_zero_point"], product=kind,
                                signed=signed)
    requant = gemm.requantization(consts["multiplier"], consts["y_zero_point"], at["qmin"],
                                  at["qmax"], at["rounding"], n=n)
    shape = (signed, ctx.avx2, requant.rounding, rows, k, n, requant.low, requant.high,
             requant.zp)

    product = shared_gemm(ctx, signed, requant.rounding, kind)

    def ir(name: str) -> str:
        return _FUNCTION.format(
            declaration=gemm.declaration(product.name, requant.rounding), gemm=product.name,
            name=name, panel=ROWS, rows=rows, k=k, n=n, low=requant.low, high=requant.high,
            zp=requant.zp)

    fn = ctx.function(f"int_matmul_{kind}", shape, ir, needs=(product,))
    args = (Buffer(a.name), Buffer(y.name), Const(weights.data), Const(weights.bias),
            *(Const(c) for c in (requant.mult, requant.shift, requant.half, requant.acc_low,
                                 requant.acc_high)),
            Scratch(gemm.workspace_bytes(k, product=kind)))
    return [Call(fn, args, items=-(-rows // ROWS))]
