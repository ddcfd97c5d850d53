"""``equalize``: cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019).

A ReLU network does not change when output channel ``i`` of one layer is divided by ``s_i > 0``
and the weights reading that channel in the next layer are multiplied by ``s_i``, because
``relu(x / s) = relu(x) / s``. Training leaves these scales arbitrary, and after BatchNorm folding
a depthwise conv's channels often span ranges a thousand times apart, which one per-tensor scale
cannot represent. Equalization picks, for each channel shared by a pair of layers, the ``s_i``
that gives both sides the same range:

    r1_i = max |W1[i, ...]|            (output channel i of the first layer)
    r2_i = max |W2[:, i, ...]|         (input channel i of the second layer)
    s_i  = (1 / r2_i) * sqrt(r1_i * r2_i)      so that r1_i / s_i == r2_i * s_i

The first layer is a Conv (any ``group``, depthwise included) whose fused activation is
positive-homogeneous (none, Relu, LeakyRelu, or a Clip with bounds in {-inf, 0, inf}: a ReLU6's
cap would have to become ``6 / s_i`` per channel, which the fused Clip's scalar bounds cannot
hold), whose output nothing else reads and which adds no residual. The second is a Conv (any
``group``) reading that output, possibly through MaxPool / AveragePool / GlobalAveragePool /
GlobalMaxPool (per-channel maps that commute with a positive scale), or a Gemm / MatMul reading it
through those and a Flatten, Reshape or Squeeze that turns ``[N, C, ...]`` into
``[N, C * spatial]`` (feature ``c * spatial + j`` belongs to channel ``c``).
Chains (conv -> depthwise -> pointwise -> ...) share layers between pairs, so the scales are
computed in rounds over all pairs until they stop moving, as AIMET and NNCF do for their layer
groups. Weights are rescaled in float64 and stored in their dtype: outputs change by float
rounding only. Run it after ``fold-bn`` and ``fuse``, on the float graph, before calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qcompiler.graph import Graph, Node, Value
from qcompiler.pass_manager import Pass, PassResult, register_pass
from qcompiler.rewriter import short

from .affine import FLOAT_DTYPES, has_residual

# Ops between the two layers that act on each channel separately and commute with a positive
# per-channel scale: max(s x) = s max(x), mean(s x) = s mean(x).
CHANNELWISE = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
SECOND = frozenset({"Conv", "Gemm", "MatMul"})
# Ops that can flatten [N, C, ...] row-major to [N, C * spatial] (checked on the shapes).
FLATTENING = frozenset({"Flatten", "Reshape", "Squeeze"})
ALWAYS_HOMOGENEOUS = frozenset({"", "Relu", "LeakyRelu"})


@dataclass
class Pair:
    """Two layers sharing ``channels`` channels: ``first``'s outputs, ``second``'s inputs (each
    channel ``spatial`` consecutive features when ``second`` reads them through a Flatten)."""

    first: Node
    second: Node
    channels: int
    spatial: int = 1
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind = "conv-conv" if self.second.op == "Conv" else "conv-gemm"


def activation_problem(node: Node) -> str | None:
    """Why ``node``'s fused activation does not commute with a positive per-channel scale."""
    act = node.attrs.get("activation", "")
    if act in ALWAYS_HOMOGENEOUS:
        return None
    if act == "Clip":
        low, high = (float(p) for p in node.attrs["activation_params"])
        if low in (0.0, -math.inf) and high in (0.0, math.inf):
            return None
        return (f"{short(node)} applies Clip({low:g}, {high:g}): its bounds would have to move "
                f"with each channel's scale, and the fused Clip holds one scalar pair")
    return f"{short(node)} applies {act}, which is not positive-homogeneous (f(s x) != s f(x))"


def _weights_problem(node: Node) -> str | None:
    w = node.inputs[1]
    if w is None or not w.is_constant:
        return f"the weights of {short(node)} are not a constant"
    if w.dtype.value not in FLOAT_DTYPES:
        return f"the weights %{w.name} of {short(node)} are {w.dtype}, not a float"
    return None


def _first_problem(node: Node) -> str | None:
    problem = _weights_problem(node)
    if problem:
        return problem
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and not bias.is_constant:
        return f"the bias %{bias.name} of {short(node)} is not a constant"
    if has_residual(node):
        return f"{short(node)} adds a residual, which would have to be rescaled too"
    if not isinstance(node.inputs[1].shape[0], int):
        return f"{short(node)} has an unknown number of output channels"
    return activation_problem(node)


def _second_problem(node: Node, index: int, flattened: bool, channels: int,
                    spatial: int) -> str | None:
    if index != 0:
        return f"it is operand {index} of {short(node)}, not its data input"
    problem = _weights_problem(node)
    if problem:
        return problem
    w = node.inputs[1]
    if node.op == "Conv":
        if flattened:
            return f"{short(node)} reads a flattened tensor"
        return None
    if not flattened:
        return f"{short(node)} reads the channels without flattening them to [N, C * spatial]"
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return f"{short(node)} transposes its input (transA=1)"
    if len(w.shape) != 2:
        return f"{short(node)} has weights of rank {len(w.shape)}, not 2"
    features = w.shape[1] if node.op == "Gemm" and node.attrs.get("transB", 0) else w.shape[0]
    if features != channels * spatial:
        return (f"{short(node)} reads {features} features, not {channels} channels of "
                f"{spatial}")
    return None


def _flatten_problem(node: Node, value: Value) -> str | None:
    """Why ``node`` (reading ``value``) is not a row-major flatten ``[N, C, ...] -> [N, C*S]``,
    which keeps the features of channel c together: ``c * S + j``."""
    out, shape = node.outputs[0].shape, value.shape
    dims = shape[2:]
    if len(shape) < 2 or not all(isinstance(d, int) for d in (shape[1], *dims)):
        return f"{short(node)} reads %{value.name} {list(shape)}: unknown channel or sizes"
    if len(out) != 2 or out[0] != shape[0] or out[1] != shape[1] * math.prod(dims):
        return (f"{short(node)} turns %{value.name} {list(shape)} into {list(out)}, not "
                f"[{shape[0]}, {shape[1] * math.prod(dims)}]")
    return None


def find_pair(first: Node) -> Pair | str:
    """The pair that starts at Conv ``first``, or why there is none (a readable reason)."""
    if first.op != "Conv":
        return f"{short(first)} is not a Conv"
    problem = _first_problem(first)
    if problem:
        return problem
    channels = int(first.inputs[1].shape[0])
    value: Value = first.outputs[0]
    spatial, flattened = 1, False
    while True:
        if value.is_graph_output:
            return f"%{value.name} is a graph output: its scale cannot change"
        if len(value.uses) != 1:
            readers = ", ".join(short(n) for n in value.users) or "nothing"
            return (f"%{value.name} has {len(value.uses)} readers ({readers}); equalization "
                    f"needs exactly one")
        reader, index = value.uses[0]
        if reader.op in SECOND:
            problem = _second_problem(reader, index, flattened, channels, spatial)
            return problem or Pair(first, reader, channels, spatial)
        if reader.op in CHANNELWISE and not flattened and index == 0:
            if any(out.uses or out.is_graph_output for out in reader.outputs[1:]):
                return f"the indices output of {short(reader)} is read"
        elif reader.op in FLATTENING and not flattened and index == 0:
            problem = _flatten_problem(reader, value)
            if problem:
                return problem
            spatial, flattened = math.prod(value.shape[2:]), True
        else:
            return (f"%{value.name} goes to {short(reader)}, not to a Conv, Gemm or MatMul "
                    f"(through per-channel pools and a flatten)")
        value = reader.outputs[0]


def check(node: Node) -> str | None:
    """None when equalization applies to the Conv ``node`` and the layer after it, else why not."""
    found = find_pair(node)
    return found if isinstance(found, str) else None


class _Weights:
    """Working float64 copies of the weights and biases being rescaled, written back once."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[int, int], tuple[Node, int, np.ndarray]] = {}

    def _get(self, node: Node, index: int) -> np.ndarray:
        key = (id(node), index)
        if key not in self.arrays:
            self.arrays[key] = (node, index, node.inputs[index].data.astype(np.float64))
        return self.arrays[key][2]

    def weight(self, node: Node) -> np.ndarray:
        return self._get(node, 1)

    def bias(self, node: Node) -> np.ndarray | None:
        """The Conv's bias, or None when it has none."""
        present = len(node.inputs) > 2 and node.inputs[2] is not None
        return self._get(node, 2) if present else None

    def write_back(self, graph: Graph) -> None:
        for node, index, data in self.arrays.values():
            _set_constant(graph, node, index, data)


def _set_constant(graph: Graph, node: Node, index: int, data: np.ndarray) -> None:
    old = node.inputs[index]
    name = old.name if old.name.endswith(".equalized") else f"{old.name}.equalized"
    node.set_input(index, graph.add_constant(data.astype(old.dtype.np), name))
    if not old.uses and not old.is_graph_output:
        graph.erase_constant(old)


def _input_view(pair: Pair, w2: np.ndarray) -> np.ndarray:
    """A view of the second layer's weights with one axis per shared channel, shaped
    ``(groups, channels per group, rest)`` so that channel ``c`` is ``[:, c, :]`` flattened
    over groups: ``c = g * (C / groups) + j``."""
    second = pair.second
    if second.op == "Conv":  # W [M, C/g, k...]: input channel g*Cg + j -> W[g*Mg:(g+1)*Mg, j]
        groups = int(second.attrs.get("group", 1))
        m, cg = w2.shape[0], w2.shape[1]
        return w2.reshape(groups, m // groups, cg, -1).transpose(0, 2, 1, 3).reshape(
            groups * cg, -1)
    rows = w2.T if second.op == "Gemm" and second.attrs.get("transB", 0) else w2
    return rows.reshape(pair.channels, -1)  # features c*spatial + j are rows of channel c


def _scale_inputs(pair: Pair, w2: np.ndarray, s: np.ndarray) -> None:
    """Multiply, in place, the weights of ``pair.second`` reading channel ``c`` by ``s[c]``."""
    second = pair.second
    if second.op == "Conv":
        groups = int(second.attrs.get("group", 1))
        cg = w2.shape[1]
        view = w2.reshape(groups, w2.shape[0] // groups, cg, -1)
        view *= s.reshape(groups, 1, cg, 1)
    elif second.op == "Gemm" and second.attrs.get("transB", 0):
        w2 *= np.repeat(s, pair.spatial)[None, :]
    else:
        w2 *= np.repeat(s, pair.spatial)[:, None]


def scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """``s_i = (1 / r2_i) * sqrt(r1_i * r2_i)``; 1 where either range is zero (a dead channel
    stays as it is)."""
    s = np.ones_like(r1)
    live = (r1 > 0) & (r2 > 0)
    s[live] = np.sqrt(r1[live] * r2[live]) / r2[live]
    return s


def equalize_pairs(pairs: list[Pair], weights: _Weights, rounds: int, tolerance: float) -> int:
    """Rescale the pairs in ``rounds`` sweeps (fewer once every scale is within ``tolerance`` of
    1); returns the number of sweeps run."""
    for sweep in range(1, rounds + 1):
        largest = 0.0
        for pair in pairs:
            w1, b1 = weights.weight(pair.first), weights.bias(pair.first)
            w2 = weights.weight(pair.second)
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(axis=1)
            r2 = np.abs(_input_view(pair, w2)).max(axis=1)
            s = scales(r1, r2)
            w1 /= s.reshape((-1,) + (1,) * (w1.ndim - 1))
            if b1 is not None:
                b1 /= s
            _scale_inputs(pair, w2, s)
            largest = max(largest, float(np.abs(np.log(s)).max()))
        if largest <= tolerance:
            return sweep
    return rounds


@register_pass
@dataclass
class Equalize(Pass):
    """Cross-layer equalization of Conv -> (pools, Flatten) -> Conv/Gemm/MatMul pairs."""

    name = "equalize"
    rounds: int = 20  # sweeps over all pairs at most
    tolerance: float = 1e-4  # stop once every |log s_i| of a sweep is below this

    def pairs(self, graph: Graph) -> tuple[list[Pair], list[str]]:
        """The pairs to equalize and, for every other Conv, why it is left alone."""
        pairs, refusals = [], []
        for node in graph.find_nodes("Conv"):
            found = find_pair(node)
            if isinstance(found, Pair):
                pairs.append(found)
            else:
                refusals.append(f"equalize: {node.describe()}: {found}")
        return pairs, refusals

    def run(self, graph: Graph) -> PassResult:
        pairs, refusals = self.pairs(graph)
        if not pairs:
            return PassResult(graph, False, {}, refusals)
        weights = _Weights()
        equalize_pairs(pairs, weights, self.rounds, self.tolerance)
        with graph.transaction():
            weights.write_back(graph)
        stats: dict[str, int] = {}
        for pair in pairs:
            stats[pair.kind] = stats.get(pair.kind, 0) + 1
        return PassResult(graph, True, stats, refusals)

    def explain(self, graph: Graph) -> list[str]:
        return self.pairs(graph)[1]
