"""``cancel-qdq``: simplify the Q/DQ nodes that quantization leaves behind, without changing a bit.

Exact rules (every output stays bit-identical; run together to a fixpoint):

- ``cancel-dq-q``: ``Q(DQ(x))`` with equal parameters is ``x``. Proved per node, not assumed:
  ``Q(DQ(k)) == k`` is checked for every int8/uint8 code ``k`` of every channel (it fails
  only when ``k * scale`` overflows float32).
- ``requantize``: any other ``Q(DQ(x))`` becomes ``Requantize(x)``, which is defined as that
  composition. Readers of the DQ other than the Q keep reading it; only the Q is replaced.
- ``absorb-relu``, ``absorb-clip``: ``Q(Relu(DQ(x)))`` and ``Q(Clip(DQ(x), lo, hi))`` lose the
  activation when the Q's own saturation does its work. With ``qmin``/``qmax`` the limits of
  the Q's dtype (the op saturates to them) and a positive scale, Q is non-decreasing, so

      Q(clip(x, lo, hi)) == Q(x) for every float x   <=>   Q(lo) == qmin and Q(hi) == qmax

  (an absent bound is -inf / +inf, whose Q is qmin / qmax). If: for x < lo, Q(x) <= Q(lo) =
  qmin, so Q(x) = qmin = Q(lo) = Q(clip(x)); symmetrically above hi; in between clip(x) = x;
  NaN stays NaN through clip and Q gives qmin on both sides. Only if: as x -> -inf, Q(x) =
  qmin while Q(clip(x)) = Q(lo), and likewise at +inf. Relu is ``clip(x, 0, +inf)``, and
  Q(0) is the zero point, so Relu is absorbed exactly when every zero point is qmin. The
  bounds are checked by running the QuantizeLinear kernel on them, per channel.
- ``propagate-dq``: ``M(DQ(x))`` for a data-movement op M (``quant_ops.DATA_MOVEMENT``) becomes
  ``DQ(M(x))``: M only moves or selects elements, and DQ with a positive scale is
  non-decreasing in float32 too (rounding is monotone), so it commutes with MaxPool's maximum.
  MaxPool pads with the dtype's lowest value on integers and float32's lowest in float; the
  two agree wherever a window covers at least one input pixel, so a pool with a window made
  only of padding is refused. Resize moves only in nearest mode and not with
  ``tf_crop_and_resize`` (its extrapolation value is a float). A constant-mode Pad moves when
  its pad value is a quantization level (``DQ(Q(c)) == c``, as 0 always is: the zero point),
  padding the integers with ``Q(c)``. Per-axis parameters move when
  their axis survives: Transpose permutes it, Reshape/Flatten/Squeeze/Unsqueeze keep it when
  a dimension of the same size starts at the same flat offset, Slice/Split/pools keep it when
  they do not act on it; otherwise the rule refuses.
- ``propagate-dq-concat``: ``Concat(DQ(x1), DQ(x2), ...)`` with equal parameters everywhere is
  ``DQ(Concat(x1, x2, ...))`` (not along a per-axis axis).

Neither propagation moves a DQ below an op the quantize pass left in float (the graph's
``metadata[FLOAT_REASONS]``, e.g. excluded by the config): it must stay a float op.

Changing rule (``islands=True``, the default; off, the pass is exact):

- ``remove-island``: ``DQ(Q(x))`` where no integer op will ever read the quantized value is
  ``x``. That removes a simulated rounding, so the numbers change: it is allowed because the
  integer lowering would never run it in integers. The conditions: the Q output is read only
  by this DQ, neither output is a graph output, no reader of the DQ is a ``WEIGHTED``,
  ``ARITHMETIC`` or ``DATA_MOVEMENT`` op, a Q, or a float op whose result only Q nodes read
  (a lookup-table candidate for lower-int), and ``x`` is not made by such an op or a DQ.

Every rule handles int8 and uint8 with constant float32 parameters (``qdq.params_of``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qcompiler import qdq
from qcompiler.graph import Node, Value, merged_origins
from qcompiler.ops.quant import dequantize_linear, quantize_linear
from qcompiler.ops.window import conv_window
from qcompiler.pass_manager import register_pass
from qcompiler.quant_ops import ARITHMETIC, DATA_MOVEMENT, FLOAT_REASONS, WEIGHTED
from qcompiler.rewriter import ANY, Const, Match, Op, Opt, RewritePass, Rewriter, Rule, Var, short
from qcompiler.types import DType, QuantParams, TensorType

from .canonicalize import keeps_names

Q, DQ = qdq.QUANTIZE, qdq.DEQUANTIZE
EIGHT_BIT = (DType.I8, DType.U8)
LOWERED_ROLES = WEIGHTED | ARITHMETIC | DATA_MOVEMENT  # ops lower-int computes on integers


def _dq() -> Op:
    return Op(DQ, Var("x"), ANY, Opt(ANY), name="dq")


def _params_problem(node: Node) -> str | None:
    """Why the rules cannot reason about this Q or DQ node's parameters, or None."""
    params = qdq.params_of(node)
    if params is None:
        return f"{short(node)} reads a scale or zero point that is not a constant"
    if params.dtype not in EIGHT_BIT:
        return f"{short(node)} quantizes to {params.dtype}; cancel-qdq handles i8 and u8"
    if node.inputs[1].dtype != DType.F32:
        return f"{short(node)} has a {node.inputs[1].dtype} scale; the rules need float32"
    problems = params.problems()
    return f"{short(node)}: {problems[0]}" if problems else None


def _codes(dtype: DType) -> np.ndarray:
    info = np.iinfo(dtype.np)
    return np.arange(int(info.min), int(info.max) + 1).astype(dtype.np)


def _channels(params: QuantParams) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point as 1-D arrays, one entry per channel (one per tensor)."""
    return (np.asarray(params.scale, np.float32),
            np.asarray(params.zero_point, dtype=params.dtype.np))


def _quantize_each(value: float, params: QuantParams) -> np.ndarray:
    """What the QuantizeLinear kernel gives for ``value`` in each channel."""
    scale, zero = _channels(params)
    return quantize_linear(np.full(scale.size, value, np.float32), scale, zero, axis=0)


def _round_trip_problem(params: QuantParams) -> str | None:
    """Why ``Q(DQ(k)) == k`` fails for some code ``k`` of some channel (checked for every
    one), or None."""
    scale, zero = _channels(params)
    codes = np.broadcast_to(_codes(params.dtype), (scale.size, 256))
    back = quantize_linear(dequantize_linear(codes, scale, zero, axis=0), scale, zero, axis=0)
    wrong = np.argwhere(back != codes)
    if wrong.size == 0:
        return None
    c, k = (int(i) for i in wrong[0])
    return (f"Q(DQ({codes[c, k]})) is {back[c, k]} in channel {c} (scale {scale[c]:g}): the "
            "pair is not the identity")


def _retyped(value: Value, type_: TensorType) -> Value:
    """Give a value this rewrite created the type it stands for (its quantization, or the
    stored shape of the value it replaces)."""
    value.type = type_
    return value


# -- DQ -> Q ----------------------------------------------------------------------------------


def _pair_problem(m: Match) -> str | None:
    return _params_problem(m["dq"]) or _params_problem(m.root)


def _identity_problem(m: Match) -> str | None:
    """Why ``Q(DQ(x))`` is not simply ``x`` here, or None."""
    a, b = qdq.params_of(m["dq"]), qdq.params_of(m.root)
    if not qdq.same_params(a, b):
        return f"{short(m['dq'])} applies {a} and {short(m.root)} {b}"
    return _round_trip_problem(a)


def _cancel_check(m: Match) -> str | None:
    return (_pair_problem(m) or _identity_problem(m)
            or keeps_names(m.root.outputs[0], m["x"]))


def _cancel(rw: Rewriter, m: Match) -> None:
    # the integers are the same; the type may spell qmin/qmax differently
    rw.replace(m.root.outputs[0], m["x"], retype=True)


def _requantize_check(m: Match) -> str | None:
    problem = _pair_problem(m)
    if problem:
        return problem
    if _identity_problem(m) is None:
        return "the parameters are equal and the pair is the identity (cancel-dq-q removes it)"
    a, b = qdq.params_of(m["dq"]), qdq.params_of(m.root)
    if a.axis is not None and b.axis is not None and a.axis != b.axis:
        return (f"{short(m['dq'])} is per axis {a.axis} and {short(m.root)} per axis {b.axis}; "
                "Requantize takes one axis")
    return None


def _param_operands(rw: Rewriter, node: Node) -> list[Value]:
    """A Q or DQ node's scale and zero point (a zero constant when it has none)."""
    scale = node.inputs[1]
    zero = node.inputs[2] if len(node.inputs) > 2 else None
    if zero is None:
        params = qdq.params_of(node)
        data = qdq.zero_point_array(params).reshape(scale.shape)
        zero = rw.constant(data, f"{node.name}.zero_point")
    return [scale, zero]


def _requantize(rw: Rewriter, m: Match) -> None:
    dq, q = m["dq"], m.root
    a, b = qdq.params_of(dq), qdq.params_of(q)
    axis = a.axis if a.axis is not None else b.axis
    out = rw.add("Requantize", [m["x"], *_param_operands(rw, dq), *_param_operands(rw, q)],
                 {} if axis is None else {"axis": axis})
    rw.replace(q.outputs[0], _retyped(out, q.outputs[0].type))


CANCEL = Rule("cancel-dq-q", Op(Q, _dq(), ANY, Opt(ANY)), _cancel, _cancel_check)
REQUANTIZE = Rule("requantize", Op(Q, _dq(), ANY, Opt(ANY)), _requantize, _requantize_check)


# -- DQ -> Relu/Clip -> Q ------------------------------------------------------------------------


def _bound(m: Match, key: str, default: float) -> float | str:
    value = m.get(key)
    if value is None:
        return default
    if value.data.size != 1:
        return f"the Clip bound %{value.name} is not a scalar"
    return float(value.data.reshape(-1)[0])


def _absorb_check(m: Match) -> str | None:
    q, act = m.root, m["act"]
    problem = _params_problem(q)
    if problem:
        return problem
    params = qdq.params_of(q)
    info = np.iinfo(params.dtype.np)
    if act.op == "Relu":
        bounds = [("lo", 0.0, int(info.min), "minimum")]
    else:
        lo, hi = _bound(m, "lo", -math.inf), _bound(m, "hi", math.inf)
        for bound in (lo, hi):
            if isinstance(bound, str):
                return bound
        bounds = [("lo", lo, int(info.min), "minimum"), ("hi", hi, int(info.max), "maximum")]
    for _, value, limit, which in bounds:
        got = _quantize_each(value, params)
        bad = np.flatnonzero(got != limit)
        if bad.size:
            c = int(bad[0])
            side = "below" if which == "minimum" else "above"
            return (f"{short(q)} maps {act.op}'s bound {value:g} to {int(got[c])} in channel "
                    f"{c}, not to {params.dtype}'s {which} {limit}: Q({act.op.lower()}(x)) "
                    f"differs from Q(x) just {side} the bound")
    return None


def _absorb(rw: Rewriter, m: Match) -> None:
    q = m.root
    out = rw.add(Q, [m["act"].inputs[0], *q.inputs[1:]], dict(q.attrs))
    rw.replace(q.outputs[0], _retyped(out, q.outputs[0].type))


ABSORB_RELU = Rule("absorb-relu", Op(Q, Op("Relu", Op(DQ, ANY, ANY, Opt(ANY)), name="act"),
                                     ANY, Opt(ANY)), _absorb, _absorb_check)
ABSORB_CLIP = Rule("absorb-clip", Op(Q, Op("Clip", Op(DQ, ANY, ANY, Opt(ANY)),
                                             Opt(Const("lo")), Opt(Const("hi")), name="act"),
                                     ANY, Opt(ANY)), _absorb, _absorb_check)


# -- DQ through data movement ------------------------------------------------------------------


def _static(shape: tuple) -> bool:
    return all(isinstance(d, int) for d in shape)


def _reshaped_axis(src: tuple, out: tuple, axis: int) -> int | None:
    """The output axis holding input ``axis`` after a row-major reshape: the one of the same
    size starting at the same flat offset, or None."""
    prefix = math.prod(src[:axis])
    for a in range(len(out)):
        if out[a] == src[axis] and math.prod(out[:a]) == prefix:
            return a
    return None


def _acted_axes(node: Node) -> set[int] | None:
    """The axes a Slice or Split changes (None: unknown)."""
    rank = len(node.inputs[0].shape)
    if node.op == "Split":
        return {int(node.opdef.full_attrs(node.attrs)["axis"]) % rank}
    axes_in = node.inputs[3] if len(node.inputs) > 3 else None
    if axes_in is None:  # the first len(starts) axes
        count = node.inputs[1].shape[0] if node.inputs[1].shape else None
        return set(range(count)) if isinstance(count, int) else None
    if axes_in.data is None:
        return None
    return {int(a) % rank for a in axes_in.data.reshape(-1)}


def _moved_axis(node: Node, axis: int) -> int | str:
    """Where per-axis parameters along ``axis`` of the input sit on the output, or why they
    cannot move through ``node``."""
    src, out = node.inputs[0].shape, node.outputs[0].shape
    where = f"{short(node)} with per-axis parameters along axis {axis}"
    if node.op == "Transpose":
        perm = node.opdef.full_attrs(node.attrs).get("perm") or range(len(src))[::-1]
        return list(perm).index(axis)
    if node.op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        if not (_static(src) and _static(out)):
            return f"{where}: the shapes are not static"
        found = _reshaped_axis(src, out, axis)
        return found if found is not None else f"{where}: the axis is split or merged"
    if node.op in ("MaxPool", "GlobalMaxPool"):
        return axis if axis < 2 else f"{where}: it pools along that axis"
    if node.op in ("Slice", "Split"):
        acted = _acted_axes(node)
        if acted is None or axis in acted:
            return f"{where}: it may cut that axis"
        return axis
    return f"{where}: only Transpose, reshapes, pools, Slice and Split move such parameters"


def _only_padding(node: Node) -> str | None:
    """Why a MaxPool may have a window covering only padding (where float and integer padding
    values differ), or None when every window reads an input pixel."""
    spatial = node.inputs[0].shape[2:]
    if not _static(spatial):
        return f"{short(node)}: the spatial size is unknown, so its windows cannot be checked"
    a = node.opdef.full_attrs(node.attrs)
    kernel = tuple(a["kernel_shape"])
    win = conv_window("MaxPool", tuple(spatial), kernel, tuple(a["strides"]),
                      tuple(a["dilations"]), tuple(a["pads"]), a["auto_pad"], a["ceil_mode"])
    for i, (size, k, s, d, b, n) in enumerate(zip(spatial, kernel, win.strides, win.dilations,
                                                  win.begin, win.out)):
        for o in range(n):
            if not any(0 <= o * s + t * d - b < size for t in range(k)):
                return (f"{short(node)}: window {o} of spatial axis {i} covers only padding, "
                        "which is float32's lowest value in float but the dtype's on integers")
    return None


def _kept_float(node: Node) -> str | None:
    """Why ``node`` must stay a float op (the quantize pass recorded it), or None."""
    reason = node.graph.metadata.get(FLOAT_REASONS, {}).get(node.name) if node.graph else None
    return f"{short(node)} is left in float ({reason})" if reason else None


def _op_problem(node: Node) -> str | None:
    """Why ``node`` does not commute with a DQ, or None."""
    kept = _kept_float(node)
    if kept:
        return kept
    if any(v.uses or v.is_graph_output for v in node.outputs[1:]) and node.op != "Split":
        return f"{short(node)}: its output %{node.outputs[1].name} is read"
    if node.op == "MaxPool":
        return _only_padding(node)
    if node.op == "Resize":
        attrs = node.opdef.full_attrs(node.attrs)
        if attrs["mode"] != "nearest":
            return f"{short(node)} interpolates (mode={attrs['mode']!r}); only nearest moves"
        if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
            return f"{short(node)} extrapolates with a float value (tf_crop_and_resize)"
    return None


def _moved_params(node: Node, params: QuantParams) -> QuantParams | str:
    if params.axis is None:
        return params
    axis = _moved_axis(node, params.axis)
    if isinstance(axis, str):
        return axis
    return QuantParams(params.scale, params.zero_point, params.dtype, axis, params.qmin,
                       params.qmax)


def _propagate_check(m: Match) -> str | None:
    problem = _params_problem(m["dq"]) or _op_problem(m.root)
    if problem:
        return problem
    params = qdq.params_of(m["dq"])
    if m.root.op == "Pad":
        problem = _pad_value(m.root, params)
        if isinstance(problem, str):
            return problem
    moved = _moved_params(m.root, params)
    return moved if isinstance(moved, str) else None


def _pad_value(node: Node, params: QuantParams) -> np.ndarray | None | str:
    """The integer pad value of a constant-mode Pad moved below a DQ with ``params``: its float
    value quantized, which must dequantize back to exactly that value (0 does: the zero point);
    None for the other modes (they pad with the data's own elements). A string says why not."""
    if node.opdef.full_attrs(node.attrs)["mode"] != "constant":
        return None
    value = node.inputs[2] if len(node.inputs) > 2 else None
    real = np.zeros((), np.float32) if value is None else value.data
    if value is not None and not value.is_constant:
        return f"{short(node)}: its pad value %{value.name} is not a constant"
    if params.axis is not None:
        return f"{short(node)}: a constant pad value needs per-tensor parameters"
    scale, zero = qdq.scale_array(params), qdq.zero_point_array(params)
    code = quantize_linear(real.reshape(()).astype(np.float32), scale, zero)
    if dequantize_linear(code, scale, zero) != real.reshape(()):
        return (f"{short(node)}: its pad value {float(real.reshape(()))} is not a quantization "
                f"level (it dequantizes back to {float(dequantize_linear(code, scale, zero))})")
    return code


def _add_outputs(rw: Rewriter, op: str, inputs: list[Value | None], attrs: dict,
                 n: int) -> list[Value]:
    """Insert a node with ``n`` outputs before the matched root (``rw.add`` makes one)."""
    if n == 1:
        return [rw.add(op, inputs, attrs)]
    root = rw.match.root
    node = rw.graph.add_node(op, inputs, attrs, name=root.name, outputs=n, before=root,
                             origins=merged_origins(*(x.origins for x in rw.match.nodes)))
    rw.inserted.append(node)
    return list(node.outputs)


def _move_below(rw: Rewriter, node: Node, xs: list[Value], dq: Node,
                params: QuantParams, replaced: dict[int, Value | None] | None = None) -> None:
    """``node`` applied to the integers ``xs`` (and its other operands, but for those
    ``replaced`` by position), each of its outputs dequantized like ``dq``."""
    operands = [*xs, *node.inputs[len(xs):]]
    for k, value in (replaced or {}).items():
        operands += [None] * (k + 1 - len(operands))
        operands[k] = value
    while operands[-1] is None:
        operands.pop()
    ints = _add_outputs(rw, node.op, operands, dict(node.attrs), len(node.outputs))
    attrs = {} if params.axis is None else {**dq.attrs, "axis": params.axis}
    for old, new in zip(node.outputs, ints):
        _retyped(new, TensorType(params.dtype, old.shape, qdq.exact_params(params)))
        real = rw.add(DQ, [new, *dq.inputs[1:]], attrs)
        rw.replace(old, _retyped(real, old.type))


def _propagate(rw: Rewriter, m: Match) -> None:
    params = qdq.params_of(m["dq"])
    moved = _moved_params(m.root, params)
    assert not isinstance(moved, str)
    extra = None
    if m.root.op == "Pad":  # the pad value in integers (absent outside constant mode)
        code = _pad_value(m.root, params)
        extra = {2: None if code is None else rw.constant(code, f"{m.root.name}.value")}
    _move_below(rw, m.root, [m["x"]], m["dq"], moved, extra)


PROPAGATE = Rule("propagate-dq", Op(sorted(DATA_MOVEMENT - {"Concat"}), _dq(), ...),
                 _propagate, _propagate_check)


def _concat_dqs(node: Node) -> list[Node] | str:
    dqs = []
    for k, value in enumerate(node.inputs):
        producer = value.producer if value is not None else None
        if producer is None or producer.op != DQ or value is not producer.outputs[0]:
            return f"operand {k} of {short(node)} %{value.name} is not the output of a DQ"
        dqs.append(producer)
    return dqs


def _concat_check(m: Match) -> str | None:
    kept = _kept_float(m.root)
    if kept:
        return kept
    dqs = _concat_dqs(m.root)
    if isinstance(dqs, str):
        return dqs
    for dq in dqs:
        problem = _params_problem(dq)
        if problem:
            return problem
    first = qdq.params_of(dqs[0])
    for dq in dqs[1:]:
        if not qdq.same_params(first, qdq.params_of(dq)):
            return (f"{short(dqs[0])} applies {first} but {short(dq)} {qdq.params_of(dq)}; "
                    "Concat moves only when every input has the same parameters")
    axis = int(m.root.opdef.full_attrs(m.root.attrs)["axis"]) % len(m.root.outputs[0].shape)
    if first.axis == axis:
        return f"{short(m.root)} concatenates along the per-axis parameters' axis {axis}"
    return None


def _concat(rw: Rewriter, m: Match) -> None:
    dqs = _concat_dqs(m.root)
    assert not isinstance(dqs, str)
    # the DQs join the match: the new nodes stand for their layers too, and dead ones go
    m.nodes.extend(dq for dq in dict.fromkeys(dqs) if dq not in m.nodes)
    _move_below(rw, m.root, [dq.inputs[0] for dq in dqs], dqs[0], qdq.params_of(dqs[0]))


PROPAGATE_CONCAT = Rule("propagate-dq-concat", Op("Concat", ...), _concat, _concat_check)


# -- Q -> DQ islands -----------------------------------------------------------------------------


def _integer_reader(node: Node) -> bool:
    """Whether lower-int may run ``node`` on the integers its DQ operand carries."""
    if node.op in LOWERED_ROLES or node.op == Q:
        return True
    readers = [r for v in node.outputs for r in v.users]
    return bool(readers) and all(r.op == Q for r in readers)  # a lookup-table candidate


def _island_check(m: Match) -> str | None:
    dq, q, x = m.root, m["q"], m["x"]
    problem = _params_problem(dq) or _params_problem(q)
    if problem:
        return problem
    quantized, real = q.outputs[0], dq.outputs[0]
    if len(quantized.uses) != 1 or quantized.is_graph_output:
        return f"%{quantized.name} is read by more than {short(dq)}"
    if real.is_graph_output:
        return f"%{real.name} is a graph output: the model returns the quantized values"
    integer = [r for r in real.users if _integer_reader(r)]
    if integer:
        return f"{short(integer[0])} may read %{real.name} as integers"
    if x.producer is not None and (x.producer.op in LOWERED_ROLES or x.producer.op == DQ):
        return f"%{x.name} comes from {short(x.producer)}, which may produce integers"
    if x.type != real.type:
        return f"%{x.name} is {x.type} but %{real.name} is {real.type}"
    return None


def _remove_island(rw: Rewriter, m: Match) -> None:
    rw.replace(m.root.outputs[0], m["x"])


ISLAND = Rule("remove-island", Op(DQ, Op(Q, Var("x"), ANY, Opt(ANY), name="q"), ANY, Opt(ANY)),
              _remove_island, _island_check)

EXACT_RULES = [CANCEL, REQUANTIZE, ABSORB_RELU, ABSORB_CLIP, PROPAGATE, PROPAGATE_CONCAT]


@register_pass
@dataclass
class CancelQDQ(RewritePass):
    """Q/DQ pairs cancelled or requantized, Relu/Clip absorbed by a Q, DQ moved below data
    movement (all bit-exact); then, with ``islands``, Q->DQ pairs no integer op reads removed."""

    name = "cancel-qdq"
    islands: bool = True

    def phases(self) -> list[list[Rule]]:
        return [EXACT_RULES] + ([[ISLAND]] if self.islands else [])
