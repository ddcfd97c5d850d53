"""``lower-int``: turn the QDQ form into integer ops, so a model computes in int8 with int32
accumulators from its input Quantize to its output Dequantize.

A region ``DQ -> op -> Q`` (the quantized activations and weights dequantized, the float op,
its one output quantized) becomes one integer op reading the integer values directly
(DESIGN.md "Numerics contract"; the op set is in ``qcompiler/ops/int_nn.py`` and
``int_elementwise.py``, the README's "Integer lowering" says it for users):

- ``Conv`` -> ``IntConv``; ``Gemm`` and ``MatMul`` -> ``IntMatMul`` (Gemm's weight transposed to
  [K, N] at compile time, its ``transA`` a Transpose of the integer input). Every compile-time
  term is folded into the int32 bias, gemmlowp style: with ``x`` padded by its zero point zx,
  ``sum_k (x - zx)(w - zw) = sum x*w - zw*sum x - zx*sum_k w + K*zx*zw``, so the bias takes
  ``- zx * sum_k w[c,k] + K * zx * zw[c]`` and the op computes ``sum x*w - zw*sum x``. The
  multiplier is ``s_x * s_w[c] / s_y``. A fused Relu or Clip is the output clamp (a positive
  scale makes Q monotonic, so ``Q(clip(v, lo, hi)) == clamp(Q(v), Q(lo), Q(hi))``); a fused
  residual is a second rescaled term of the same rounding.
- ``Add``/``Mul`` -> ``IntAdd``/``IntMul``; ``AveragePool``/``GlobalAveragePool`` ->
  ``IntAveragePool``/``IntGlobalAveragePool``.
- An elementwise function (``quant_ops.TABLE``: Sigmoid, HardSwish, ...) -> ``LookupTable``,
  its table computed from the float op itself (``qcompiler.lut.make_table``).
- ``Requantize`` takes the pass's rounding; a ``Concat`` still reading dequantized inputs
  (their parameters differ, as in a QDQ model quantized elsewhere) concatenates the integers,
  each input with other parameters than the output's requantized to them.

Data movement already runs on integers (``cancel-qdq`` moved the DQs below it). The
``rounding`` option (``"fixed_point"``, the default, or ``"float"``) is set on every integer op.

A static check bounds every int32 accumulator before an op is made: with ``X`` the largest
magnitude of the input's dtype, ``|bias[c]| + X * sum_k |w[c,k] - zw[c]|`` (the op sums
``x * (w - zw)``; for a MatMul of two activations ``|bias| + K * X_a * X_b`` and the zero-point
terms; for a pool, the window size times the largest ``|x - zx|``) must stay below 2^31 for
every partial sum to fit. A layer that could overflow, or whose multiplier has no fixed-point
form, stays float,
and the reason (naming the layer) is recorded in ``graph.metadata[FLOAT_REASONS]``, where
``Graph.float_islands()`` and the report read it, as for every node the pass leaves in float.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from qcompiler import lut, qdq
from qcompiler.errors import PassError, PipelineError, QuantizationError
from qcompiler.graph import Graph, Node, Value, merged_origins
from qcompiler.ops.fixed_point import ROUNDINGS, shared_multipliers
from qcompiler.ops.int_common import INT32_MAX, window_sum_bound
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.quant_math import quantize
from qcompiler.quant_ops import (
    ARITHMETIC,
    DATA_MOVEMENT,
    FLOAT_REASONS,
    TABLE,
    WEIGHTED,
    weight_axis,
)
from qcompiler.types import QuantParams

_ACTIVATION_DTYPES = ("i8", "u8")


class _Stays(Exception):
    """A region that stays float, and why."""


@dataclass(frozen=True)
class _Int:
    """An integer operand: the integer value a DQ reads and the parameters it applies."""

    value: Value
    params: QuantParams

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.params.scale, np.float64)

    @property
    def zero(self) -> int:
        """The zero point of a per-tensor operand."""
        return int(self.params.zero_point[0])

    @property
    def largest(self) -> int:
        """The largest magnitude a value of this dtype takes."""
        info = np.iinfo(self.params.dtype.np)
        return max(-int(info.min), int(info.max))


@register_pass
@dataclass
class LowerInt(Pass):
    """QDQ regions into integer ops with folded zero points and bias; see the module doc."""

    name = "lower-int"
    rounding: str = "fixed_point"

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise PipelineError(f"lower-int: rounding must be one of "
                                f"{', '.join(map(repr, ROUNDINGS))}, got {self.rounding!r}")

    def run(self, graph: Graph) -> PassResult:
        reasons = graph.metadata.setdefault(FLOAT_REASONS, {})
        lowered: Counter[str] = Counter()
        notes = []
        for node in list(graph.nodes):
            if node.graph is None:
                continue  # erased with a region already lowered
            if node.op == "Requantize":
                if node.attrs.get("rounding", "float") == self.rounding:
                    continue
                try:
                    _check_requantize(node)
                except _Stays as why:  # it keeps the float rounding, which needs no shift
                    notes.append(f"{node.name} ({', '.join(node.origins)}): keeps its "
                                 f"{node.attrs.get('rounding', 'float')} rounding ({why})")
                    continue
                node.attrs["rounding"] = self.rounding
                lowered["Requantize"] += 1
                continue
            if node.op == "Concat" and _reads_quantized(node):
                try:  # inputs with their own parameters: requantized to the output's
                    self._concat(graph, node, _output_quantize(node))
                    lowered["Concat"] += 1
                    continue
                except _Stays as why:
                    reasons.setdefault(node.name, str(why))
                    notes.append(f"{node.name} ({', '.join(node.origins)}): left in float "
                                 f"({why})")
                    continue
            if node.op in DATA_MOVEMENT and _reads_quantized(node):
                reasons.setdefault(node.name, f"{node.op} still reads dequantized values: "
                                   f"cancel-qdq could not move it onto the integers "
                                   f"(PassManager('cancel-qdq', explain=True) says why)")
                continue
            if not (node.op in WEIGHTED or node.op in ARITHMETIC or node.op in TABLE):
                continue
            try:
                q = _output_quantize(node)
                made = self._lower(graph, node, q)
            except _Stays as why:
                if node.name not in reasons:  # the quantize pass's reason comes first
                    reasons[node.name] = str(why)
                    notes.append(f"{node.name} ({', '.join(node.origins)}): left in float "
                                 f"({why})")
                continue
            lowered[made] += 1
        removed = _remove_dead_qdq(graph)
        changed = bool(lowered) or removed > 0
        stats = {**lowered, "float": len(notes)}
        return PassResult(graph, changed, stats, notes)

    # -- one region ---------------------------------------------------------------------------

    def _lower(self, graph: Graph, node: Node, q: Node) -> str:
        y = _operand_of(q.outputs[0], qdq.params_of(q))
        if node.op in WEIGHTED:
            op, inputs, attrs = self._weighted(graph, node, y)
        elif node.op in ("Add", "Mul"):
            op, inputs, attrs = self._binary(graph, node, y)
        elif node.op in ("AveragePool", "GlobalAveragePool"):
            x = _activation(node, 0)
            _check_window_sum(node, x)
            op = "Int" + node.op
            inputs = [x.value, _zero(graph, node, x, "x"),
                      _multiplier(graph, node, x.scale / y.scale, "multiplier"),
                      _zero(graph, node, y, "y")]
            attrs = {**node.attrs, **self._clamp_attrs(y, None)}
        else:  # TABLE
            x = _activation(node, 0)
            try:
                table = lut.make_table(node, x.params, y.params)
            except QuantizationError as exc:
                raise _Stays(f"no lookup table: {exc}") from None
            op, attrs = "LookupTable", {}
            inputs = [x.value, graph.add_constant(table, f"{node.name}.table")]
        _replace(graph, node, q, op, inputs, attrs)
        return op

    def _concat(self, graph: Graph, node: Node, q: Node) -> None:
        """``Q(Concat(DQ(x1), DQ(x2), ...))`` as ``Concat`` of the integers, each input whose
        parameters differ from the output's through a ``Requantize``."""
        y = _operand_of(q.outputs[0], qdq.params_of(q))
        parts = [_activation(node, k) for k in range(len(node.inputs))]
        if any(p.params.dtype != y.params.dtype for p in parts):
            raise _Stays("its inputs and output are quantized to different dtypes")
        for part in parts:  # before any node is made: it may refuse
            _check_multipliers(node, [part.scale / y.scale])
        ints = []
        for k, part in enumerate(parts):
            if qdq.same_params(part.params, y.params):
                ints.append(part.value)
                continue
            operands = [part.value, *(graph.add_constant(a, f"{node.name}.{k}.{role}")
                                       for a, role in (
                                           (qdq.scale_array(part.params), "x_scale"),
                                           (qdq.zero_point_array(part.params), "x_zero_point"),
                                           (qdq.scale_array(y.params), "y_scale"),
                                           (qdq.zero_point_array(y.params), "y_zero_point")))]
            ints.append(graph.add_node("Requantize", operands, {"rounding": self.rounding},
                                       name=f"{node.name}.requantize{k}", before=node,
                                       origins=node.origins).outputs[0])
        _replace(graph, node, q, "Concat", ints, dict(node.attrs))

    def _weighted(self, graph: Graph, node: Node, y: _Int) -> tuple[str, list, dict]:
        x = _activation(node, 0)
        weight = node.inputs[1]
        if node.op == "MatMul" and not _is_integer_constant(weight):
            return self._matmul_activations(graph, node, x, _activation(node, 1), y)
        w_data, wp = _weight(node)
        axis = weight_axis(node.op, node.attrs) % w_data.ndim
        if wp.axis is not None and wp.axis % w_data.ndim != axis:
            raise _Stays(f"its weight is quantized along axis {wp.axis}, not along its output "
                         f"channels (axis {axis}); an integer op rescales per output channel")
        if node.op == "Conv":
            w = w_data  # [M, C/g, k...]: channels first, as IntConv reads it
        else:
            if w_data.ndim != 2:
                raise _Stays(f"its weight has shape {list(w_data.shape)}; an integer MatMul "
                             f"takes a 2-D constant weight (a batched one stays float)")
            w = w_data.T if axis == 0 else w_data  # [K, N]
        channels = w.shape[0] if node.op == "Conv" else w.shape[1]
        s_w = _per_channel(np.asarray(wp.scale, np.float64), channels)
        z_w = _per_channel(np.asarray(wp.zero_point, np.int64), channels)
        wide = w.astype(np.int64)
        if node.op == "Conv":
            sums = wide.reshape(channels, -1).sum(axis=1)
            centred = np.abs(wide - z_w.reshape(-1, *(1,) * (wide.ndim - 1)))
            magnitude = centred.reshape(channels, -1).sum(axis=1)
            k = wide[0].size
        else:
            sums, k = wide.sum(axis=0), w.shape[0]
            magnitude = np.abs(wide - z_w).sum(axis=0)
        bias = _bias(node, x.scale * s_w, channels)
        zx = x.zero
        folded = bias - zx * sums + k * zx * z_w
        # the op sums x * (w - zw) (IntConv/IntMatMul): any partial sum, in any order, stays
        # within X * sum_k |w - zw|
        bound = np.abs(folded) + x.largest * magnitude
        _check_accumulator(node, bound, folded)
        multiplier = x.scale * s_w / y.scale
        _check_multipliers(node, [multiplier])
        attrs = self._clamp_attrs(y, node)  # before any node is made: it may refuse
        if node.op == "Conv":
            return self._conv(graph, node, x, w_data, multiplier, folded, z_w, y)
        a = x.value
        if node.op == "Gemm" and node.attrs.get("transA", 0):
            a = graph.add_node("Transpose", [a], {"perm": (1, 0)}, name=f"{node.name}.a",
                               before=node, origins=node.origins).outputs[0]
        w_params = wp if wp.axis is None else replace(wp, axis=1)  # per column of [K, N]
        weight = graph.add_constant(np.ascontiguousarray(w), f"{node.name}.weight", w_params)
        inputs = [a, weight,
                  _multiplier(graph, node, multiplier, "multiplier"), _zero(graph, node, y, "y"),
                  graph.add_constant(folded.astype(np.int32), f"{node.name}.bias"), None,
                  _weight_zero(graph, node, z_w)]
        return "IntMatMul", inputs, attrs

    def _conv(self, graph: Graph, node: Node, x: _Int, w: np.ndarray, multiplier: np.ndarray,
              bias: np.ndarray, z_w: np.ndarray, y: _Int) -> tuple[str, list, dict]:
        inputs = [x.value, node.inputs[1].producer.inputs[0],
                  _multiplier(graph, node, multiplier, "multiplier"), _zero(graph, node, x, "x"),
                  _zero(graph, node, y, "y"),
                  graph.add_constant(bias.astype(np.int32), f"{node.name}.bias"),
                  _weight_zero(graph, node, z_w)]
        if len(node.inputs) > 3 and node.inputs[3] is not None:  # the fused residual
            z = _activation(node, 3)
            inputs += [z.value, _zero(graph, node, z, "z"),
                       _multiplier(graph, node, z.scale / y.scale, "z_multiplier")]
            _check_multipliers(node, [multiplier, z.scale / y.scale])
        attrs = {key: value for key, value in node.attrs.items()
                 if key not in ("activation", "activation_params")}
        return "IntConv", inputs, {**attrs, **self._clamp_attrs(y, node)}

    def _matmul_activations(self, graph: Graph, node: Node, a: _Int, b: _Int,
                            y: _Int) -> tuple[str, list, dict]:
        k = a.value.shape[-1] if a.value.shape else None
        if not isinstance(k, int):
            raise _Stays("the reduced dimension K of a MatMul of two activations is not known "
                         "at compile time, so its accumulator cannot be bounded")
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            raise _Stays("a MatMul of two activations with a fused bias has no integer form")
        za, zb = a.zero, b.zero
        bias = np.array(k * za * zb, np.int64)
        bound = (abs(int(bias)) + k * a.largest * b.largest + abs(zb) * k * a.largest
                 + abs(za) * k * b.largest)
        _check_accumulator(node, np.array([bound]), bias.reshape(1))
        inputs = [a.value, b.value,
                  _multiplier(graph, node, a.scale * b.scale / y.scale, "multiplier"),
                  _zero(graph, node, y, "y"),
                  graph.add_constant(bias.astype(np.int32), f"{node.name}.bias") if za * zb
                  else None,
                  _zero(graph, node, a, "a") if za else None,
                  _zero(graph, node, b, "b") if zb else None]
        return "IntMatMul", inputs, self._clamp_attrs(y, node)

    def _binary(self, graph: Graph, node: Node, y: _Int) -> tuple[str, list, dict]:
        a, b = _activation(node, 0), _activation(node, 1)
        zeros = [_zero(graph, node, a, "a"), _zero(graph, node, b, "b")]
        if node.op == "Add":
            inputs = [a.value, b.value, *zeros,
                      _multiplier(graph, node, a.scale / y.scale, "a_multiplier"),
                      _multiplier(graph, node, b.scale / y.scale, "b_multiplier")]
            _check_multipliers(node, [a.scale / y.scale, b.scale / y.scale])
        else:
            inputs = [a.value, b.value, *zeros,
                      _multiplier(graph, node, a.scale * b.scale / y.scale, "multiplier")]
        return "Int" + node.op, [*inputs, _zero(graph, node, y, "y")], self._clamp_attrs(y, None)

    def _clamp_attrs(self, y: _Int, node: Node | None) -> dict:
        """The integer op's ``rounding`` and its output clamp: the dtype's range narrowed by a
        fused Relu or Clip of ``node``."""
        info = np.iinfo(y.params.dtype.np)
        lo, hi = int(info.min), int(info.max)
        activation = node.attrs.get("activation", "") if node is not None else ""
        if activation:
            if activation not in ("Relu", "Clip"):
                raise _Stays(f"its fused activation {activation} has no integer form (only "
                             f"Relu and Clip become the output clamp)")
            bounds = (0.0, None) if activation == "Relu" else node.attrs["activation_params"]
            low, high = (None if b is None else _quantized_bound(b, y.params) for b in bounds)
            lo = lo if low is None else max(lo, low)
            hi = hi if high is None else min(hi, high)
        attrs: dict = {"rounding": self.rounding}
        if (lo, hi) != (int(info.min), int(info.max)):
            attrs.update(qmin=lo, qmax=hi)
        return attrs


def _quantized_bound(value: float, params: QuantParams) -> int:
    """A clamp bound through the QuantizeLinear kernel with the output's ``params``."""
    return int(quantize(np.float32(value), params))


# -- reading the region ---------------------------------------------------------------------------


def _output_quantize(node: Node) -> Node:
    """The one QuantizeLinear that reads ``node``'s only output, per tensor, to i8/u8."""
    out = node.outputs[0]
    if any(v.uses or v.is_graph_output for v in node.outputs[1:]):
        raise _Stays(f"its output %{node.outputs[1].name} is read")
    readers = out.users
    if out.is_graph_output or len(readers) != 1 or readers[0].op != qdq.QUANTIZE:
        read_by = [n.describe() for n in readers] + (["the graph outputs"]
                                                     if out.is_graph_output else [])
        raise _Stays(f"its output %{out.name} is not only quantized: read by "
                     f"{', '.join(read_by)}")
    q = readers[0]
    params = qdq.params_of(q)
    if params is None or params.axis is not None or params.dtype.value not in \
            _ACTIVATION_DTYPES:
        raise _Stays(f"its output is quantized by {q.describe()}, not per tensor to int8/uint8 "
                     f"with constant parameters")
    return q


def _operand_of(value: Value, params: QuantParams | None) -> _Int:
    return _Int(value, qdq.exact_params(params))


def _activation(node: Node, index: int) -> _Int:
    """Operand ``index`` as the integer value its DequantizeLinear reads (per tensor)."""
    value = node.inputs[index]
    dq = value.producer if value is not None else None
    params = qdq.params_of(dq) if dq is not None else None
    if params is None or dq.op != qdq.DEQUANTIZE:
        raise _Stays(f"operand %{value.name if value else '?'} is not dequantized from an "
                     f"integer tensor with constant parameters")
    if params.axis is not None or params.dtype.value not in _ACTIVATION_DTYPES:
        raise _Stays(f"operand %{value.name} is dequantized per axis or from "
                     f"{params.dtype}, not per tensor from int8/uint8")
    return _operand_of(dq.inputs[0], params)


def _is_integer_constant(value: Value) -> bool:
    dq = value.producer
    return (dq is not None and dq.op == qdq.DEQUANTIZE and dq.inputs[0].is_constant
            and qdq.params_of(dq) is not None)


def _weight(node: Node) -> tuple[np.ndarray, QuantParams]:
    """The integer weight of a weighted node and its parameters."""
    if not _is_integer_constant(node.inputs[1]):
        raise _Stays(f"its weight %{node.inputs[1].name} is not an integer constant read by a "
                     f"DequantizeLinear")
    dq = node.inputs[1].producer
    params = qdq.params_of(dq)
    if params.dtype.value not in _ACTIVATION_DTYPES:
        raise _Stays(f"its weight is {params.dtype}, not int8/uint8")
    typed = dq.inputs[0].type.quant  # the constant's own type also knows its qmin/qmax
    return dq.inputs[0].data, typed if qdq.same_params(typed, params) else params


def _per_channel(param: np.ndarray, channels: int) -> np.ndarray:
    return np.broadcast_to(param.reshape(-1), (channels,)).copy() if param.size == 1 else param


def _bias(node: Node, unit: np.ndarray, channels: int) -> np.ndarray:
    """The bias in accumulator steps (``s_x * s_w[c]``) as int64 per channel: an int32 bias
    at that scale as it is, any other rescaled and rounded."""
    value = node.inputs[2] if len(node.inputs) > 2 else None
    if value is None:
        return np.zeros(channels, np.int64)
    dq = value.producer
    if dq is not None and dq.op == qdq.DEQUANTIZE and dq.inputs[0].is_constant \
            and qdq.params_of(dq) is not None:
        params = qdq.params_of(dq)
        data = dq.inputs[0].data.astype(np.float64) - np.asarray(params.zero_point, np.float64)
        real = data * np.asarray(params.scale, np.float32).astype(np.float64)
    elif value.is_constant and value.dtype.is_float:
        real = value.data.astype(np.float64)
    else:
        raise _Stays(f"its bias %{value.name} is not a constant")
    if real.size not in (1, channels) or real.size != max(real.shape or (1,)):
        raise _Stays(f"its bias has shape {list(real.shape)}, not one value per output "
                     f"channel ({channels})")
    steps = np.rint(_per_channel(real.reshape(-1), channels) / unit)
    if np.any(np.abs(steps) > INT32_MAX):
        raise _Stays("its bias does not fit int32 at the accumulator's scale")
    return steps.astype(np.int64)


def _check_accumulator(node: Node, bound: np.ndarray, bias: np.ndarray) -> None:
    """Stay float unless every partial sum provably fits int32."""
    worst = int(np.argmax(bound))
    if bound[worst] > INT32_MAX or np.any(np.abs(bias) > INT32_MAX):
        raise _Stays(f"its int32 accumulator could overflow: output channel {worst} reaches "
                     f"{int(bound[worst])} > 2^31 - 1 in the worst case (|bias| + X * "
                     f"sum_k |w - w_zero_point|, X the largest magnitude of the input's "
                     f"dtype); splitting K is not implemented")


def _check_window_sum(node: Node, x: _Int) -> None:
    """Stay float unless a pool's int32 sum of centred values provably fits."""
    if node.op == "AveragePool":
        count = int(np.prod(node.attrs["kernel_shape"]))
    else:
        count = 1
        for size in x.value.shape[2:]:
            if not isinstance(size, int):
                raise _Stays(f"its spatial size {list(x.value.shape[2:])} is not known at "
                             f"compile time, so its int32 sum cannot be bounded")
            count *= size
    bound = window_sum_bound(count, x.params.dtype.np, x.zero)
    if bound > INT32_MAX:
        raise _Stays(f"its int32 sum could overflow: {count} values of up to {bound // count} "
                     f"(x - x_zero_point) reach {bound} > 2^31 - 1")


def _check_requantize(node: Node) -> None:
    """Stay with the float rounding unless every multiplier has a fixed-point form."""
    x_scale, y_scale = node.inputs[1], node.inputs[3]
    if not (x_scale.is_constant and y_scale.is_constant):
        raise _Stays("its scales are not constants")
    _check_multipliers(node, [x_scale.data.astype(np.float64) / y_scale.data.astype(np.float64)])


def _check_multipliers(node: Node, multipliers: list) -> None:
    try:
        shared_multipliers(multipliers)
    except ValueError as exc:
        raise _Stays(f"its requantization multiplier has no fixed-point form: {exc}") from None


def _reads_quantized(node: Node) -> bool:
    return any(v is not None and v.producer is not None and v.producer.op == qdq.DEQUANTIZE
               for v in node.inputs)


# -- building the integer op ------------------------------------------------------------------


def _multiplier(graph: Graph, node: Node, value: np.ndarray, role: str) -> Value:
    """A multiplier constant, float64 (the fixed-point form keeps 31 significant bits)."""
    data = np.asarray(value, np.float64)
    _check_multipliers(node, [data])
    return graph.add_constant(data.reshape(()) if data.size == 1 else data,
                              f"{node.name}.{role}")


def _zero(graph: Graph, node: Node, operand: _Int, role: str) -> Value:
    zero = np.asarray(operand.params.zero_point, operand.params.dtype.np).reshape(())
    return graph.add_constant(zero, f"{node.name}.{role}_zero_point")


def _weight_zero(graph: Graph, node: Node, z_w: np.ndarray) -> Value | None:
    """The weight zero points per channel, or None when they are all 0 (the usual symmetric
    weights: the op then skips the row sums)."""
    if not z_w.any():
        return None
    dtype = qdq.params_of(node.inputs[1].producer).dtype.np
    return graph.add_constant(z_w.astype(dtype), f"{node.name}.w_zero_point")


def _replace(graph: Graph, node: Node, q: Node, op: str, inputs: list, attrs: dict) -> None:
    """Compute ``q``'s output with the integer op, then drop ``node`` and ``q``."""
    while inputs and inputs[-1] is None:
        inputs.pop()
    out = q.outputs[0]
    made = graph.add_node(op, inputs, attrs, name=f"{node.name}.int", before=q,
                          origins=merged_origins(node.origins, q.origins))
    result = made.outputs[0]
    if result.dtype != out.dtype or len(result.shape) != len(out.shape):
        raise PassError(f"lower-int made {made.describe()} giving {result.type} for "
                        f"%{out.name}: {out.type} (layers {', '.join(node.origins)})")
    result.type = out.type
    graph.replace_all_uses_with(out, result)
    name, node_name = out.name, node.name
    graph.erase(q)
    graph.erase(node)
    graph.rename_value(result, name)
    graph.rename_node(made, node_name)


def _remove_dead_qdq(graph: Graph) -> int:
    """Erase the Q/DQ nodes and constants nothing reads any more; how many nodes went."""
    removed = 0
    for node in reversed(list(graph.nodes)):
        if node.op in (qdq.QUANTIZE, qdq.DEQUANTIZE) and not any(
                v.uses or v.is_graph_output for v in node.outputs):
            graph.erase(node)
            removed += 1
    for value in list(graph.constants.values()):
        if not value.uses and not value.is_graph_output:
            graph.erase_constant(value)
    return removed
