"""Fuzzing the ONNX importer: damaged copies of real models load correctly or raise a
``QCompilerError``, never another exception, a hang or a crash.

Each case is one seeded mutation of a model file: a few bytes changed, a bit flipped, a run of
bytes overwritten, or the file cut short. The count per model is bounded under ``CI=true`` and
larger locally; a failure names the model, the case number and the mutation, so
``damaged(data, case)`` rebuilds the very file that failed.
"""

from __future__ import annotations

import os
import signal
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import qcompiler as qc

ROOT = Path(__file__).resolve().parents[1]
MODELS = [ROOT / "examples" / "digits_convnet.onnx",
          ROOT / "tests" / "data" / "exported" / "tf_mobilenet_style_opset13.onnx",
          ROOT / "tests" / "data" / "exported" / "torch_mobilenetv3_block_opset17.onnx"]
CASES = 200 if os.environ.get("CI") else 1000  # per model
SECONDS_PER_LOAD = 20  # an intact model loads in well under a second


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


@pytest.mark.parametrize("model", MODELS, ids=[m.stem for m in MODELS])
def test_damaged_models_load_or_raise_qcompiler_errors(model: Path, tmp_path) -> None:
    data = model.read_bytes()
    qc.load_onnx(model)  # the intact model loads
    path = tmp_path / model.name
    outcomes = {"loaded": 0, "refused": 0}
    for case in range(CASES):
        content, what = damaged(data, case)
        path.write_bytes(content)
        try:
            with time_limit(SECONDS_PER_LOAD):
                qc.load_onnx(path)
            outcomes["loaded"] += 1
        except qc.QCompilerError as exc:
            assert str(exc), f"{model.name} case {case} ({what}): an empty message"
            outcomes["refused"] += 1
        except Exception as exc:  # any other exception is a fault to report
            pytest.fail(f"{model.name} case {case} ({what}): {type(exc).__name__}: {exc}")
    assert outcomes["refused"] > 0 and outcomes["loaded"] + outcomes["refused"] == CASES
