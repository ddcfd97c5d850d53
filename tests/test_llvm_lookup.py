"""The LLVM backend's LookupTable kernel, for this CPU and baseline x86-64: every int8 and
uint8 code, random tables of both dtypes and odd lengths, equal to the op's numpy kernel."""

from __future__ import annotations

import numpy as np
import pytest
from qcompiler.backends.llvm.lookup import LookupTable
from qcompiler.backends.llvm.target import Jit, generic, host

from qcompiler.ops import OPS

TARGETS = {"host": host, "x86-64": generic}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def lookup(request) -> LookupTable:
    return LookupTable(Jit(TARGETS[request.param]()))


@pytest.mark.parametrize("x_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("table_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("length", [0, 1, 31, 256, 1027])
def test_every_code_reads_its_entry(lookup, x_dtype, table_dtype, length):
    rng = np.random.default_rng(length)
    info = np.iinfo(table_dtype)
    table = rng.integers(info.min, info.max, 256, endpoint=True).astype(table_dtype)
    codes = np.arange(256).astype(np.uint8).view(x_dtype)  # every code once, then random
    x = np.concatenate([codes, rng.integers(0, 256, length).astype(np.uint8).view(x_dtype)])
    x = x.reshape(1, -1)
    want = OPS["LookupTable"].kernel(x, table)
    got = lookup(x, table)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_wrong_table_is_refused(lookup):
    with pytest.raises(ValueError, match="256-entry"):
        lookup(np.zeros(3, np.int8), np.zeros(255, np.int8))
