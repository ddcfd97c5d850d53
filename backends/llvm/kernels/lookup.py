"""``LookupTable``: ``y[i] = table[x[i] - min(dtype of x)]`` (``qcompiler/ops/lookup.py``), split
by elements."""

from __future__ import annotations

import numpy as np

from qcompiler.graph import Node

from ..kernel import Buffer, Call, Const, Context, NotNative, emitter

_FUNCTION = """
define void @{name}(i64 %begin, i64 %end, ptr noalias nocapture readonly %x,
                    ptr noalias nocapture writeonly %y, ptr noalias nocapture readonly %table) {{
entry:
  %some = icmp slt i64 %begin, %end
  br i1 %some, label %element, label %exit

element:
  %i = phi i64 [ %begin, %entry ], [ %i.next, %element ]
  %x.at = getelementptr inbounds i8, ptr %x, i64 %i
  %code = load i8, ptr %x.at
  %byte = xor i8 %code, {flip}
  %index = zext i8 %byte to i64
  %entry.at = getelementptr inbounds i8, ptr %table, i64 %index
  %value = load i8, ptr %entry.at
  %y.at = getelementptr inbounds i8, ptr %y, i64 %i
  store i8 %value, ptr %y.at
  %i.next = add nuw nsw i64 %i, 1
  %more = icmp slt i64 %i.next, %end
  br i1 %more, label %element, label %exit

exit:
  ret void
}}
"""


@emitter("LookupTable")
def lookup_table(node: Node, ctx: Context) -> list[Call]:
    x, table = node.inputs
    if not table.is_constant:
        raise NotNative("the table is not a constant")
    signed = x.dtype.np == np.int8
    fn = ctx.function("lookup", (signed,),
                      lambda name: _FUNCTION.format(name=name, flip=-128 if signed else 0))
    count = int(np.prod(x.shape, dtype=np.int64))
    if count == 0:
        return []
    return [Call(fn, (Buffer(x.name), Buffer(node.outputs[0].name), Const(table.data)),
                 items=count)]
