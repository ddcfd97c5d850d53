"""Check one registered op against onnxruntime: kernel values and inferred types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from ort_helpers import run_node

from qcompiler import ops
from qcompiler.errors import UnsupportedModelError
from qcompiler.graph import Graph
from qcompiler.types import DType, TensorType

# Ops whose result is exact (it moves, selects, compares or converts values, or rounds
# nothing): their outputs are compared with ``assert_array_equal``, never with a tolerance.
EXACT_OPS = frozenset("""
Reshape Transpose Slice Gather Concat Split Pad Tile Expand Squeeze Unsqueeze Flatten Identity
Dropout Shape Size Constant ConstantOfShape Cast CastLike Trilu
MaxPool GlobalMaxPool ReduceMax ArgMax ArgMin Relu Clip Min Max Where Neg Abs
Equal Less LessOrEqual Greater GreaterOrEqual Not And Or Xor IsNaN IsInf
""".split())

# Ops that are exact in their nearest mode, with their default mode.
NEAREST_DEFAULT = {"Resize": "nearest", "GridSample": "linear"}


def is_exact(op_type: str, attrs: dict[str, Any] | None = None) -> bool:
    """Whether a node's outputs must equal the reference exactly: an ``EXACT_OPS`` op, or a
    nearest-neighbour Resize or GridSample (they only copy pixels)."""
    if op_type in NEAREST_DEFAULT:
        return (attrs or {}).get("mode", NEAREST_DEFAULT[op_type]) == "nearest"
    return op_type in EXACT_OPS


def assert_outputs_equal(op_type: str, attrs: dict[str, Any], actual: np.ndarray,
                         expected: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """Exact ops and integer outputs exactly; other float outputs within rtol/atol."""
    if is_exact(op_type, attrs) or actual.dtype.kind != "f":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def ir_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """ONNX-helper attribute values in their IR form: lists as tuples, tensors as arrays."""
    def convert(v: Any) -> Any:
        if isinstance(v, list):
            return tuple(v)
        if isinstance(v, onnx.TensorProto):
            return numpy_helper.to_array(v)
        return v

    return {k: convert(v) for k, v in attrs.items()}


def run_kernel(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
               n_outputs: int = 1) -> list[np.ndarray]:
    opdef = ops.get(op_type)
    full = opdef.full_attrs(ir_attrs(attrs))
    out = opdef.kernel(*inputs, **full)
    outs = list(out) if isinstance(out, tuple) else [out]
    return outs[:n_outputs]


def infer(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
          n_outputs: int = 1, constant_inputs: Sequence[int] = ()) -> list[TensorType]:
    """Output types the IR infers for a node fed with arrays like ``inputs``."""
    g = Graph("check")
    values = []
    for i, a in enumerate(inputs):
        if a is None:
            values.append(None)
        elif i in constant_inputs:
            values.append(g.add_constant(a, f"in{i}"))
        else:
            values.append(g.add_input(f"in{i}", TensorType(DType.from_numpy(a.dtype), a.shape)))
    node = g.add_node(op_type, values, ir_attrs(attrs), outputs=n_outputs)
    g.set_outputs(node.outputs)
    g.verify()
    return [v.type for v in node.outputs]


def check_op(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    n_outputs: int = 1,
    constant_inputs: Sequence[int] = (),
    rtol: float = 1e-5,
    atol: float = 1e-6,
    opset: int = 21,
) -> list[np.ndarray]:
    """Our kernel vs onnxruntime on ``inputs``; inferred dtype/shape must match exactly, and
    the values too for exact ops (``is_exact``), else within ``rtol``/``atol``."""
    attrs = dict(attrs or {})
    expected = run_node(op_type, inputs, attrs, n_outputs, opset, constant_inputs)
    actual = run_kernel(op_type, inputs, attrs, n_outputs)
    types = infer(op_type, inputs, attrs, n_outputs, constant_inputs)
    assert len(actual) == len(expected)
    for k, (a, e, t) in enumerate(zip(actual, expected, types)):
        a = np.asarray(a)
        assert a.dtype == e.dtype, f"{op_type} output {k}: dtype {a.dtype} vs ort {e.dtype}"
        assert a.shape == e.shape, f"{op_type} output {k}: shape {a.shape} vs ort {e.shape}"
        assert t.dtype.np == a.dtype, f"{op_type} output {k}: inferred {t} for {a.dtype}"
        assert t.shape == a.shape, f"{op_type} output {k}: inferred {t} for {a.shape}"
        assert_outputs_equal(op_type, attrs, a, e, rtol, atol, f"{op_type} output {k}")
    return actual


def refuse(op_type: str, operands: Sequence[Any], attrs: dict[str, Any],
           error: type[Exception], match: str, name: str = "layer1") -> Exception:
    """Adding the node must raise ``error`` (message matching ``match``) naming it, and leave
    the graph untouched. ``operands``: arrays become constants, (dtype, shape) graph inputs,
    None an empty optional input."""
    g = Graph("refused")
    values = []
    for k, spec in enumerate(operands):
        if spec is None:
            values.append(None)
        elif isinstance(spec, (np.ndarray, np.generic)):
            values.append(g.add_constant(spec, f"c{k}"))
        else:
            values.append(g.add_input(f"x{k}", TensorType(DType(spec[0]), spec[1])))
    with pytest.raises(error, match=match) as info:
        g.add_node(op_type, values, attrs, name=name)
    assert f"{op_type} node {name!r}" in str(info.value)
    assert not g.nodes and all(not v.uses for v in values if v is not None)
    if isinstance(info.value, UnsupportedModelError):
        assert info.value.unsupported == {op_type: [name]}
    return info.value
