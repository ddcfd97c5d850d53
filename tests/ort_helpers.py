"""Run single ONNX nodes and small models in onnxruntime, the peer every op is checked against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from qcompiler.demo import ort_session

OPSET = 21

_ONNX_TYPES = {
    np.dtype("float32"): onnx.TensorProto.FLOAT,
    np.dtype("float16"): onnx.TensorProto.FLOAT16,
    np.dtype("int8"): onnx.TensorProto.INT8,
    np.dtype("uint8"): onnx.TensorProto.UINT8,
    np.dtype("int32"): onnx.TensorProto.INT32,
    np.dtype("int64"): onnx.TensorProto.INT64,
    np.dtype("bool"): onnx.TensorProto.BOOL,
}


def onnx_type(dtype: Any) -> int:
    return _ONNX_TYPES[np.dtype(dtype)]


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """onnxruntime running the model exactly as written (no graph rewrites), one thread."""
    return ort_session(model, optimize=False)


def node_model(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    n_outputs: int = 1,
    opset: int = OPSET,
    constant_inputs: Sequence[int] = (),
) -> onnx.ModelProto:
    """A one-node model. ``inputs[i]`` is None for an empty optional input; inputs whose index
    is in ``constant_inputs`` become initializers, the others graph inputs named in0, in1, ..."""
    names, graph_inputs, inits = [], [], []
    for i, array in enumerate(inputs):
        if array is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        if i in constant_inputs:
            inits.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        else:
            graph_inputs.append(
                helper.make_tensor_value_info(name, onnx_type(array.dtype), array.shape))
    outs = [f"out{k}" for k in range(n_outputs)]
    graph = helper.make_graph(
        onnx_nodes(op_type, names, outs, attrs or {}), "g", graph_inputs,
        [helper.ValueInfoProto(name=o) for o in outs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


def onnx_nodes(op_type: str, names: Sequence[str], outs: Sequence[str],
               attrs: dict[str, Any]) -> list[onnx.NodeProto]:
    """The ONNX nodes computing one op: the op itself, or the ONNX spelling of a qcompiler op
    that ONNX lacks (``Requantize`` is ``QuantizeLinear(DequantizeLinear(x))``)."""
    if op_type == "Requantize":
        axis = {k: v for k, v in attrs.items() if k == "axis"}
        return [helper.make_node("DequantizeLinear", names[:3], ["real"], name="dq", **axis),
                helper.make_node("QuantizeLinear", ["real", *names[3:]], outs, name="q", **axis)]
    return [helper.make_node(op_type, names, outs, name="node", **attrs)]


def run_node(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    n_outputs: int = 1,
    opset: int = OPSET,
    constant_inputs: Sequence[int] = (),
) -> list[np.ndarray]:
    """Outputs of one ONNX node run by onnxruntime."""
    model = node_model(op_type, inputs, attrs, n_outputs, opset, constant_inputs)
    feeds = {f"in{i}": a for i, a in enumerate(inputs)
             if a is not None and i not in constant_inputs}
    return session(model).run(None, feeds)


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(model).run(None, feeds)
