"""Whole models on the LLVM backend: bit-exact with the numpy backend, every op that has an
integer form (and the boundary Quantize/Dequantize and data movement) native, the runtime's
promises (typed input errors, saved executables, no memory growth)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import zoo
from llvm_harness import assert_native_exact
from test_classic_cnns import LIGHT, randomized
from test_lower_int import BLOCKS, FLOAT_OPS, block_feeds

import qcompiler as qc
from qcompiler.errors import InputDTypeError, InputShapeError, MissingInputError, UnknownInputError

ROOT = Path(__file__).resolve().parent.parent
DATA = dict(np.load(ROOT / "examples" / "digits.npz"))


@pytest.fixture(scope="module", params=["fixed_point", "float"])
def digits(request) -> qc.Graph:
    graph = qc.load_onnx(ROOT / "examples" / "digits_convnet.onnx")
    return qc.quantize(graph, [DATA["calib_x"]], qc.QuantConfig(rounding=request.param),
                       progress=False)


def test_the_digits_model_is_native_and_bit_exact(digits):
    x = DATA["test_x"]
    feeds = [{"image": x[:1]}, {"image": x[:64]}, {"image": x[64:67]}]
    assert assert_native_exact(digits, feeds) == 9
    exe = qc.compile(digits, backend="llvm")
    np.testing.assert_array_equal(exe(x), qc.compile(digits)(x))
    assert exe.fallbacks() == []
    assert len(exe.program(((len(x), 1, 8, 8),)).steps) == 1  # one native call per run


@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_are_native_but_for_their_float_islands_and_bit_exact(name):
    model = zoo.BUILDING_BLOCKS[name]()
    graph = qc.quantize(qc.from_onnx(model), [block_feeds(model, 2, s) for s in range(3)],
                        progress=False)
    native = set(graph.op_counts()) - set(FLOAT_OPS.get(name, {}))
    feeds = [block_feeds(model, batch, seed) for batch, seed in ((1, 7), (3, 8))]
    assert assert_native_exact(graph, feeds, native=sorted(native)) == 6


# The onnx package's light exports (random weights): what stays float in each.
ARCHITECTURES = {"resnet50": {"Softmax"}, "squeezenet": {"Softmax"}, "shufflenet": {"Softmax"},
                 "inception_v1": {"LRN", "Softmax"}, "densenet121": set()}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_zoo_architectures_are_native_but_for_their_float_islands(name):
    graph = qc.from_onnx(randomized(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))))
    shape = [d if isinstance(d, int) else 1 for d in graph.inputs[0].shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    lowered = qc.quantize(graph, [{graph.inputs[0].name: x}], progress=False)
    native = set(lowered.op_counts()) - ARCHITECTURES[name] - {"DequantizeLinear"} | {
        "IntConv"}
    compared = assert_native_exact(lowered, [{graph.inputs[0].name: x}], native=sorted(native),
                                   targets=("host",), threads=(1,))
    assert compared == 1


def test_wrong_inputs_raise_typed_errors_before_native_code(digits):
    exe = qc.compile(digits, backend="llvm")
    x = DATA["test_x"][:2]
    with pytest.raises(InputDTypeError):
        exe.run({"image": x.astype(np.float64)})
    with pytest.raises(InputShapeError):
        exe.run({"image": x[:, :, :7]})
    with pytest.raises(MissingInputError):
        exe.run({})
    with pytest.raises(UnknownInputError):
        exe.run({"image": x, "extra": x})
    np.testing.assert_array_equal(exe(x), qc.compile(digits)(x))  # still usable


def test_a_saved_llvm_executable_loads_from_the_cache(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("QCOMPILER_CACHE_DIR", str(tmp_path / "cache"))
    exe = qc.compile(digits, backend="llvm", threads=2)
    x = DATA["test_x"][:5]
    expected = exe(x)
    exe.save(tmp_path / "digits.qcx")
    loaded = qc.load(tmp_path / "digits.qcx")
    assert loaded.backend == "llvm" and loaded.options == {"threads": 2}
    np.testing.assert_array_equal(loaded(x), expected)
    assert loaded.program((x.shape,)).cached  # compiled by the first run above


def test_ten_thousand_runs_do_not_grow_memory(digits):
    exe = qc.compile(digits, backend="llvm")
    x = DATA["test_x"][:1]
    for _ in range(1000):
        exe(x)
    before = _resident_bytes()
    for _ in range(10_000):
        exe(x)
    grown = _resident_bytes() - before
    assert grown < 1 << 20, f"resident memory grew by {grown} bytes over 10,000 runs"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
