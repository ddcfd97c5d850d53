"""Fuzzing the ONNX importer: damaged copies of real models load correctly or raise a
``QCompilerError``, never another exception, a hang or a crash.

Each case is one seeded mutation of a model file: a few bytes changed, a bit flipped, a run of
bytes overwritten, or the file cut short. The count per model is bounded under ``CI=true`` and
larger locally; a failure names the model, the case number and the mutation, so
``damaged(data, case)`` rebuilds the very file that failed.

A load must also stay small: damage to a shape operand (``ConstantOfShape``'s shape, an
``Expand`` target) can ask for gigabytes, which constant folding must not allocate (its cap keeps
such a node an op) and inference must not either; the peak memory of every load is measured.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qcompiler as qc

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "examples" / "digits_convnet.onnx",
         ROOT / "tests" / "data" / "exported" / "tf_mobilenet_style_opset13.onnx",
         ROOT / "tests" / "data" / "exported" / "torch_mobilenetv3_block_opset17.onnx"]
CASES = 200 if os.environ.get("CI") else 1000  # per model
SECONDS_PER_LOAD = 20  # an intact model loads in well under a second
PEAK_BYTES_PER_LOAD = 64 << 20  # intact loads peak at 3.4 MiB; a damaged shape asks for GBs


def damaged(data: bytes, case: int) -> tuple[bytes, str]:
    """Case ``case`` of the damaged copies of ``data`` (always the same bytes), described."""
    rng = np.random.default_rng([zlib.crc32(data), case])
    out = bytearray(data)
    kind = case % 4
    if kind == 0:
        at = sorted(int(i) for i in rng.integers(0, len(out), int(rng.integers(1, 4))))
        for i in at:
            out[i] ^= int(rng.integers(1, 256))
        return bytes(out), f"bytes changed at {at}"
    if kind == 1:
        at, bit = int(rng.integers(0, len(out))), int(rng.integers(0, 8))
        out[at] ^= 1 << bit
        return bytes(out), f"bit {bit} of byte {at} flipped"
    if kind == 2:
        at, n = int(rng.integers(0, len(out))), int(rng.integers(1, 9))
        out[at:at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        return bytes(out[:len(data)]), f"{n} bytes overwritten at {at}"
    at = int(rng.integers(0, len(out)))
    return bytes(out[:at]), f"cut after {at} bytes"


def many_ops_model() -> onnx.ModelProto:
    """A 2 KB model of many op types whose attributes and operands are small constants: in
    the exported models most damage lands in weights, here it lands in what import checks."""
    def const(name: str, *values: float, dtype: type = np.int64) -> TensorProto:
        return numpy_helper.from_array(np.array(values, dtype), name)

    inits = [numpy_helper.from_array(np.full((4, 2, 3, 3), 0.1, np.float32), "w"),
             const("b", 0, 0, 0, 0, dtype=np.float32), const("pads", 0, 0, 1, 1, 0, 0, 1, 1),
             const("scales", 1, 1, 2, 0.5, dtype=np.float32), const("shape", 0, 4, -1),
             const("starts", 0, 1), const("ends", 3, 8), const("axes", 1, 2),
             const("index", 0, 2), const("axis0", 0), const("split", 1, 1),
             const("lo", -1, dtype=np.float32), const("hi", 1, dtype=np.float32),
             const("reps", 1, 2, 1), const("expand", 2, 1, 1), const("fill_shape", 2, 1),
             const("fill_expand", 1, 2, 1)]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], "conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("Pad", ["c", "pads"], ["p"], "pad", mode="reflect"),
        n("MaxPool", ["p"], ["m"], "pool", kernel_shape=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1),
        n("Resize", ["m", "", "scales"], ["r"], "resize", nearest_mode="floor"),
        n("AveragePool", ["r"], ["a"], "average", kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
        n("Reshape", ["a", "shape"], ["rs"], "reshape"),
        n("Slice", ["rs", "starts", "ends", "axes"], ["sl"], "slice"),
        n("Transpose", ["sl"], ["t"], "transpose", perm=[0, 2, 1]),
        n("Gather", ["t", "index"], ["g"], "gather", axis=2),
        n("ReduceMean", ["g"], ["mean"], "mean", axes=[1]),
        n("Softmax", ["g"], ["sm"], "softmax", axis=-1),
        n("Clip", ["sm", "lo", "hi"], ["cl"], "clip"),
        n("Split", ["cl", "split"], ["s1", "s2"], "split", axis=2),
        n("Concat", ["s2", "s1"], ["cc"], "concat", axis=2),
        n("Unsqueeze", ["cc", "axis0"], ["u"], "unsqueeze"),
        n("Squeeze", ["u", "axis0"], ["sq"], "squeeze"),
        n("Cast", ["sq"], ["i"], "to_int", to=TensorProto.INT32),
        n("Cast", ["i"], ["y"], "to_float", to=TensorProto.FLOAT),
        n("Tile", ["mean", "reps"], ["tile"], "tile"),
        n("Expand", ["tile", "expand"], ["z"], "expand"),
        n("ConstantOfShape", ["fill_shape"], ["fill"], "fill",
          value=numpy_helper.from_array(np.array([0.5], np.float32))),
        n("Expand", ["fill", "fill_expand"], ["wide"], "fill_expand"),
        n("Add", ["wide", "mean"], ["filled"], "add_fill"),
    ]
    graph = helper.make_graph(
        nodes, "many_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
         for o in ("y", "z", "filled")],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


MODELS = {**{path.stem: path.read_bytes for path in FILES},
          "many_ops": lambda: many_ops_model().SerializeToString()}


class Hang(Exception):
    """A load ran longer than ``SECONDS_PER_LOAD``."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def expire(signum, frame):
        raise Hang(f"still loading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Trace allocations (numpy's included); the list holds the peak in bytes on exit."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
        peak.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions ``exc`` was raised from or while handling, transitively."""
    seen: set[int] = set()
    pending = [exc.__cause__, exc.__context__]
    while pending:
        cause = pending.pop()
        if cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            yield cause
            pending += [cause.__cause__, cause.__context__]


def load_bounded(path: Path, what: str) -> str:
    """Load ``path``: "loaded" or "refused" (a ``QCompilerError``), within the time and memory
    bounds; anything else fails the test, naming ``what``."""
    try:
        with peak_memory() as peak, time_limit(SECONDS_PER_LOAD):
            qc.load_onnx(path)
        outcome = "loaded"
    except qc.QCompilerError as exc:
        assert str(exc), f"{what}: an empty message"
        assert not any(isinstance(c, MemoryError) for c in causes(exc)), (
            f"{what}: refused only because an allocation failed: {exc}")
        return "refused"
    except Exception as exc:  # any other exception is a fault to report
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}")
    assert peak[0] < PEAK_BYTES_PER_LOAD, f"{what}: the load peaked at {peak[0] >> 20} MiB"
    return outcome


@pytest.mark.parametrize("model", sorted(MODELS))
def test_damaged_models_load_or_raise_qcompiler_errors(model: str, tmp_path) -> None:
    data = MODELS[model]()
    path = tmp_path / f"{model}.onnx"
    path.write_bytes(data)
    assert load_bounded(path, f"{model} intact") == "loaded"
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(CASES):
        content, what = damaged(data, case)
        path.write_bytes(content)
        outcomes[load_bounded(path, f"{model} case {case} ({what})")] += 1
    assert outcomes["refused"] > 0 and outcomes["loaded"] + outcomes["refused"] == CASES


HUGE = 10**9


@pytest.mark.parametrize("name, value", [("fill_shape", [2, HUGE]), ("fill_shape", [HUGE, 1]),
                                         ("fill_expand", [1, 2, HUGE]), ("expand", [2, HUGE, 1]),
                                         ("reps", [1, HUGE, 1])])
def test_a_shape_damaged_to_gigabytes_is_not_allocated_at_load(name, value, tmp_path) -> None:
    """The damage that once made a load take a minute and 8 GB: a ConstantOfShape, Expand or
    Tile asked for 1e9 elements loads as an op (or is refused), quickly and small."""
    model = many_ops_model()
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(np.array(value, np.int64), name))
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    load_bounded(path, f"{name} = {value}")


@pytest.mark.parametrize("op_type", ["ConstantOfShape", "Tile"])
def test_a_huge_one_d_int64_result_is_not_spelled_out_by_inference(op_type, tmp_path) -> None:
    """Inference tracks the contents of short int64 tensors; a 1-D ConstantOfShape or Tile
    damaged to 1e9 elements must not build a 1e9-entry tuple (8 GB) to do so."""
    if op_type == "ConstantOfShape":
        node = helper.make_node("ConstantOfShape", ["s"], ["y"],
                                value=helper.make_tensor("v", TensorProto.INT64, [1], [3]))
        inits = [numpy_helper.from_array(np.array([HUGE], np.int64), "s")]
    else:
        node = helper.make_node("Tile", ["x", "r"], ["y"])
        inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "x"),
                 numpy_helper.from_array(np.array([HUGE], np.int64), "r")]
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    model = helper.make_model(helper.make_graph([node], "g", [], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    assert load_bounded(path, op_type) == "loaded"
