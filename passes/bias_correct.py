"""``bias-correct``: empirical bias correction of a quantized (QDQ) graph, as AIMET does it
(Nagel et al., "Data-Free Quantization", 2019, section 4.2; AIMET's empirical
``bias_correction``).

Rounding the weights of a layer makes its output wrong by ``(W_q - W) x``, whose mean over the
data is in general not zero: a per-channel offset that the next layers see as a shifted
activation. A bias is a per-channel offset, so it can cancel it. For each quantized layer, in
graph order, on the calibration data::

    e[c]    = mean over samples and positions of ( y_q[c] - y[c] )
    bias[c] = bias[c] - e[c]

where ``y`` is the layer's output in the float graph (``reference``) on float inputs and ``y_q``
its output in the quantized graph on the quantized graph's own inputs, so the correction also
takes the mean error that reaches the layer from the layers before it (each corrected before
the next is measured). Outputs are taken before the fused activation: the bias is added before
it. A quantized layer is a Conv, Gemm or MatMul whose weight is the ``DequantizeLinear`` of an
integer constant (``qcompiler.qdq``); it is matched to the float graph by node name (the
``quantize`` pass keeps names). The new bias is quantized again as the ``quantize`` pass does it:
int32 at ``s_in * s_w[c]`` (``quant_math.quantize_bias``, which raises a weight scale rather than
clip a bias that would overflow; the weight is then quantized again from the float graph's and
its new error measured and corrected in turn). A layer without a bias gets one; a float bias (on
a float input) stays float.

The data is read once for the float graph and once per layer for the quantized one, so data
given as a generator is held in memory for the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qcompiler import qdq, quant_math
from qcompiler.calibration import CalibrationData
from qcompiler.errors import ConfigError, QuantizationError
from qcompiler.graph import Graph, Node, Value
from qcompiler.interpreter import STOP, Interpreter
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.ptq import Calib
from qcompiler.quant_ops import WEIGHTED
from qcompiler.rewriter import short
from qcompiler.types import QuantParams

# Where a corrected bias no longer fits int32 at its scale, the weight scale is raised and the
# weights quantized again, which changes their error: it is measured and corrected again, at most
# this many times.
MAX_REQUANTIZATIONS = 3


def _dequantized_constant(value: Value | None) -> Value | None:
    """The integer constant that ``value`` is the DequantizeLinear of, or None."""
    dq = value.producer if value is not None else None
    if dq is None or dq.op != qdq.DEQUANTIZE or qdq.params_of(dq) is None:
        return None
    source = dq.inputs[0]
    return source if source.is_constant and not source.dtype.is_float else None


def _bias(node: Node) -> Value | None:
    return node.inputs[2] if len(node.inputs) > 2 else None


def layer_problem(node: Node) -> str | None:
    """Why the weighted ``node`` of a QDQ graph is not a quantized layer to correct, or None."""
    if _dequantized_constant(node.inputs[1]) is None:
        return f"the weights of {short(node)} are not the DequantizeLinear of an integer constant"
    bias = _bias(node)
    if bias is not None and not bias.is_constant and _dequantized_constant(bias) is None:
        return f"the bias %{bias.name} of {short(node)} is computed at run time"
    if node.op == "Gemm" and float(node.attrs.get("beta", 1.0)) == 0.0:
        return f"{short(node)} has beta = 0: its bias is multiplied by zero"
    if not isinstance(node.outputs[0].shape[_channel_axis(node)], int):
        return f"{short(node)} has an unknown number of output channels"
    return None


def quantized_layers(quantized: Graph, reference: Graph) -> tuple[list[Node], list[str]]:
    """The layers of ``quantized`` to correct, in graph order, and why the other weighted nodes
    are left alone. A layer with no node of its name and op in ``reference`` is an error: the
    reference must be the float graph the quantized one was made from."""
    layers, notes = [], []
    float_nodes = {n.name: n for n in reference.nodes}
    for node in quantized.nodes:
        if node.op not in WEIGHTED:
            continue
        problem = layer_problem(node)
        if problem:
            notes.append(f"bias-correct: {node.describe()}: {problem}")
            continue
        match = float_nodes.get(node.name)
        if match is None or match.op != node.op:
            raise QuantizationError(
                f"{node.describe()}: the float graph {reference.name!r} has no {node.op} named "
                f"{node.name!r} to compare it with; give bias correction the float graph the "
                f"quantized one was made from (quantize keeps node names)")
        layers.append(node)
    return layers, notes


def _channel_axis(node: Node) -> int:
    return 1 if node.op == "Conv" else len(node.outputs[0].shape) - 1


def _pre_activation(node: Node, inputs: list[np.ndarray | None]) -> np.ndarray:
    """``node``'s output on ``inputs`` before its fused activation (the bias is added before)."""
    attrs = node.opdef.full_attrs(node.attrs)
    if "activation" in attrs:
        attrs.update(activation="", activation_params=())
    return np.asarray(node.opdef.kernel(*inputs, **attrs))


class _ChannelMeans:
    """Running per-channel sums of a layer's outputs (float64), over samples and positions."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, y: np.ndarray, axis: int) -> None:
        per_channel = np.moveaxis(y, axis, 0).reshape(y.shape[axis], -1)
        sums = per_channel.sum(axis=1, dtype=np.float64)
        self.total = sums if self.total is None else self.total + sums
        self.count += per_channel.shape[1]

    @property
    def mean(self) -> np.ndarray:
        if self.total is None or self.count == 0:
            raise QuantizationError("bias correction got no calibration samples")
        return self.total / self.count


def layer_means(graph: Graph, names: Iterable[str], batches: Iterable[Mapping[str, np.ndarray]],
                *, stop: bool = False) -> dict[str, np.ndarray]:
    """Per layer of ``names``: the mean, per output channel, of its output before its activation
    over ``batches``. ``stop``: end each run once the last of them has been computed."""
    wanted = set(names)
    means = {name: _ChannelMeans() for name in wanted}
    last = max((k for k, n in enumerate(graph.nodes) if n.name in wanted), default=-1)

    def hook(interp: Interpreter, node: Node, inputs: list) -> object:
        if node.name in wanted:
            means[node.name].add(_pre_activation(node, inputs), _channel_axis(node))
            if stop and node is graph.nodes[last]:
                return STOP
        return None

    for feeds in batches:
        Interpreter(graph, before=hook).run(feeds)
    return {name: m.mean for name, m in means.items()}


def correct_biases(quantized: Graph, reference: Graph, batches: Calib) -> dict[str, float]:
    """Shift the bias of every quantized layer of ``quantized`` (in place) by the mean error of
    its output against ``reference`` on ``batches`` (calibration data in any form
    ``qc.quantize`` takes); returns, per corrected layer, the largest shift applied to one of its
    channels (in the layer's output units)."""
    data = CalibrationData(reference, batches)
    feeds = data if data.reiterable else list(data)
    names = [node.name for node in quantized_layers(quantized, reference)[0]]
    if not names:
        return {}
    float_means = layer_means(reference, names, feeds)
    corrections = {}
    for name in names:  # by name: a node that gets a bias operand is replaced
        shift = np.zeros_like(float_means[name])
        for _ in range(MAX_REQUANTIZATIONS + 1):
            error = layer_means(quantized, [name], feeds, stop=True)[name] - float_means[name]
            shift -= error
            if not _shift_bias(quantized, quantized.node(name), reference.node(name), error):
                break  # else the weights were quantized again: measure their error anew
        corrections[name] = float(np.abs(shift).max())
    return corrections


# -- rewriting the bias ---------------------------------------------------------------------------


def _shift_bias(graph: Graph, node: Node, ref: Node, error: np.ndarray) -> bool:
    """Give ``node`` the bias ``bias - error`` (per channel), quantized as before; returns
    whether its weights had to be quantized again (with a raised scale, to fit the bias)."""
    beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
    channels = error.size
    bias = _bias(node)
    bias_q = _dequantized_constant(bias)
    if bias is None:
        old = np.zeros(channels)
    elif bias_q is not None:
        old = quant_math.dequantize(bias_q.data, qdq.params_of(bias.producer)).reshape(-1)
    else:
        old = np.broadcast_to(bias.data.astype(np.float64).reshape(-1), (channels,))
    new = old - error / beta
    x = node.inputs[0].producer
    input_params = qdq.params_of(x) if x is not None and x.op == qdq.DEQUANTIZE else None
    if input_params is None or input_params.axis is not None or (
            bias is not None and bias_q is None):
        _set_bias(graph, node, graph.add_constant(new.astype(node.outputs[0].dtype.np),
                                                  f"{node.name}.bias.corrected"))
        return False
    weight_q = _dequantized_constant(node.inputs[1])
    weight_params = weight_q.type.quant or qdq.params_of(node.inputs[1].producer)
    q, bias_params, raised = quant_math.quantize_bias(new, input_params.scale[0], weight_params,
                                                      name=node.name)
    requantized = not qdq.same_params(raised, weight_params)
    if requantized:
        _set_dequantized(graph, node, 1, quant_math.quantize(ref.inputs[1].data, raised), raised,
                         "weight")
    _set_bias(graph, node, _dequantized(graph, node, q, bias_params, "bias"))
    return requantized


def _dequantized(graph: Graph, node: Node, data: np.ndarray, params: QuantParams,
                 role: str) -> Value:
    const = qdq.add_quantized_constant(graph, data, params, f"{node.name}.{role}.q")
    return qdq.add_dequantize(graph, const, before=node, origins=node.origins,
                              name=f"{node.name}.{role}.dq")


def _set_dequantized(graph: Graph, node: Node, index: int, data: np.ndarray,
                     params: QuantParams, role: str) -> None:
    old = node.inputs[index]
    node.set_input(index, _dequantized(graph, node, data, params, role))
    _erase_if_dead(graph, old)


def _set_bias(graph: Graph, node: Node, bias: Value) -> None:
    """Make ``bias`` operand 2 of ``node``, adding the operand when the node has none."""
    if len(node.inputs) > 2:
        old = node.inputs[2]
        node.set_input(2, bias)
        _erase_if_dead(graph, old)
        return
    new = graph.add_node(node.op, [*node.inputs, bias], dict(node.attrs), name=node.name,
                         before=node, origins=node.origins)
    out, name = node.outputs[0], node.outputs[0].name
    graph.replace_all_uses_with(out, new.outputs[0])
    graph.erase(node)
    graph.rename_value(new.outputs[0], name)
    graph.rename_node(new, node.name)


def _erase_if_dead(graph: Graph, value: Value | None) -> None:
    """Erase ``value`` and what made it (a DQ and its constants) once nothing reads it."""
    if value is None or value.uses or value.is_graph_output or value.graph is not graph:
        return
    if value.is_constant:
        graph.erase_constant(value)
        return
    producer = value.producer
    operands = [v for v in producer.inputs if v is not None]
    graph.erase(producer)
    for operand in operands:
        _erase_if_dead(graph, operand)


@register_pass
@dataclass
class BiasCorrect(Pass):
    """Empirical bias correction of a QDQ graph against its float graph, on calibration data.

    ``PassManager([BiasCorrect(float_graph, calib)])``; ``corrections`` holds, after a run, the
    largest shift per corrected layer."""

    name: ClassVar[str] = "bias-correct"
    reference: Graph | None = None  # the float graph the quantized one was made from
    batches: Calib | None = None  # calibration data, in any form qc.quantize takes

    def run(self, graph: Graph) -> PassResult:
        if self.reference is None or self.batches is None:
            raise ConfigError("bias-correct needs the float graph and calibration data: "
                              "BiasCorrect(reference=float_graph, batches=calib)")
        _, notes = quantized_layers(graph, self.reference)
        with graph.transaction():
            self.corrections = correct_biases(graph, self.reference, self.batches)
        return PassResult(graph, bool(self.corrections), {"layers": len(self.corrections)},
                          notes)
