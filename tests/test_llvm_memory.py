"""The LLVM backend's arena plan: no two values live at the same time share a byte, every
offset is aligned, and the arena reuses memory (smaller than all values side by side)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qcompiler.backends.llvm import memory

import qcompiler as qc
from qcompiler.testing import graphs

ROOT = Path(__file__).resolve().parent.parent


def test_random_graphs_get_plans_without_overlap():
    reused: Counter[str] = Counter()

    @settings(deadline=None, max_examples=max(100, settings.default.max_examples))
    @given(graphs(min_steps=2, max_steps=8, batch=st.sampled_from([1, 3])),
           st.sampled_from([1, 16, 64]))
    def check(graph, alignment):
        plan = memory.plan(graph, alignment=alignment)
        assert plan.overlaps() == []
        assert all(offset % alignment == 0 for offset in plan.offsets.values())
        side_by_side = sum(-(-n // alignment) * alignment for n in plan.nbytes.values())
        assert plan.size <= side_by_side
        live = {v.name for v in graph.inputs} | {v.name for n in graph.nodes for v in n.outputs}
        assert set(plan.offsets) == live  # every value has a place, no constant has one
        reused["plans"] += 1
        reused["smaller than side by side"] += plan.size < side_by_side

    check()
    assert reused["smaller than side by side"] > 0, reused


def test_the_integer_digits_model_reuses_its_arena():
    data = np.load(ROOT / "examples" / "digits.npz")
    q = qc.quantize(qc.load_onnx(ROOT / "examples" / "digits_convnet.onnx"),
                    [data["calib_x"]], progress=False)
    plan = memory.plan(q, {"N": 64})
    total = sum(plan.nbytes.values())
    print(f"digits integer model, batch 64: arena {plan.size} bytes for {total} bytes of values")
    assert plan.overlaps() == [] and plan.size < total


def test_a_dimension_without_a_size_is_an_error():
    g = qc.Graph("sym")
    x = g.add_input("x", qc.TensorType(qc.DType.F32, ("N", 4)))
    g.set_outputs([g.add_node("Relu", [x], name="relu").outputs[0]])
    with pytest.raises(qc.BackendError, match="dimension 'N'"):
        memory.plan(g)
