"""Einsum against onnxruntime: the matmul-like forms exporters emit, and the others ONNX allows."""

from __future__ import annotations

import numpy as np
import pytest
from op_check import check_op, infer, refuse

from qcompiler.errors import ShapeInferenceError
from qcompiler.graph import Graph
from qcompiler.types import DType, TensorType

rng = np.random.default_rng(7)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = {
    "batched matmul": ("bij,bjk->bik", [f32(2, 3, 4), f32(2, 4, 5)]),
    "attention scores": ("bhqd,bhkd->bhqk", [f32(2, 2, 3, 4), f32(2, 2, 5, 4)]),
    "attention values": ("bhqk,bhkd->bhqd", [f32(1, 2, 3, 5), f32(1, 2, 5, 4)]),
    "matmul": ("ij,jk", [f32(3, 4), f32(4, 2)]),
    "transpose": ("ij->ji", [f32(3, 4)]),
    "permute": ("abcd->acdb", [f32(2, 3, 4, 5)]),
    "row sums": ("ij->i", [f32(3, 4)]),
    "total": ("ij->", [f32(3, 4)]),
    "inner product": ("i,i", [f32(5), f32(5)]),
    "outer product": ("i,j->ij", [f32(3), f32(4)]),
    "ellipsis batch": ("...ij,...jk->...ik", [f32(2, 3, 4), f32(1, 4, 2)]),
    "ellipsis broadcast": ("...ij,jk", [f32(2, 1, 3, 4), f32(4, 2)]),
    "diagonal": ("ii->i", [f32(4, 4)]),
    "trace": ("ii", [f32(4, 4)]),
    "three operands": ("ij,jk,kl->il", [f32(2, 3), f32(3, 4), f32(4, 2)]),
    "spaces": ("ij, jk -> ik", [f32(2, 3), f32(3, 2)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_einsum_matches_onnxruntime(name):
    equation, inputs = CASES[name]
    check_op("Einsum", inputs, {"equation": equation})


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_einsum(dtype):
    a, b = (rng.integers(-9, 9, s).astype(dtype) for s in ((2, 3, 4), (2, 4, 3)))
    check_op("Einsum", [a, b], {"equation": "bij,bjk->bik"})


def test_symbolic_dims_flow_through():
    g = Graph()
    q = g.add_input("q", TensorType(DType.F32, ("B", 4, "S", 8)))
    k = g.add_input("k", TensorType(DType.F32, ("B", 4, "T", 8)))
    node = g.add_node("Einsum", [q, k], {"equation": "bhqd,bhkd->bhqk"})
    assert node.outputs[0].shape == ("B", 4, "S", "T")
    assert infer("Einsum", [f32(2, 3)], {"equation": "ij->"})[0].shape == ()


@pytest.mark.parametrize(("equation", "operands", "message"), [
    ("ij,jk->ik", [(2, 3), (4, 5)], "label 'j': dimensions 3 and 4 differ"),
    ("ij->ik", [(2, 3)], "output label 'k'"),
    ("ij->ii", [(2, 2)], "repeats"),
    ("ij,jk", [(2, 3)], "2 operand terms but the node has 1"),
    ("ijk->i", [(2, 3)], "rank 2 but its term 'ijk' has 3 labels"),
    ("i1->i", [(2, 3)], "labels are letters"),
    ("...i...->i", [(2, 3)], "more than one ellipsis"),
])
def test_malformed_equations_are_refused(equation, operands, message):
    refuse("Einsum", [(DType.F32, s) for s in operands], {"equation": equation},
           ShapeInferenceError, message)
