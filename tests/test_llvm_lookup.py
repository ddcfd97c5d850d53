"""The LLVM backend's LookupTable kernel, for this CPU and baseline x86-64, one and two threads:
every int8 and uint8 code, random tables of both dtypes and odd lengths, equal to the op's
numpy kernel."""

from __future__ import annotations

import numpy as np
import pytest
from llvm_harness import assert_native_exact

from qcompiler.graph import Graph
from qcompiler.types import TensorType

CODES = {np.dtype(np.int8): "i8", np.dtype(np.uint8): "u8"}


@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("table_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("length", [0, 1, 31, 1027])
def test_every_code_reads_its_entry(x_dtype, table_dtype, length):
    rng = np.random.default_rng(length)
    info = np.iinfo(table_dtype)
    table = rng.integers(info.min, info.max, 256, endpoint=True).astype(table_dtype)
    codes = np.arange(256).astype(np.uint8).view(x_dtype)  # every code once, then random
    x = np.concatenate([codes, rng.integers(0, 256, length).astype(np.uint8).view(x_dtype)])
    x = x.reshape(1, -1)
    g = Graph("lookup")
    node = g.add_node("LookupTable", [g.add_input("x", TensorType(CODES[x.dtype], x.shape)),
                                      g.add_constant(table, "table")])
    g.set_outputs([node.outputs[0]])
    assert assert_native_exact(g, [{"x": x}]) == 3
