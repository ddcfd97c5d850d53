"""The saved executable: one data-only, versioned, checksummed .qcx file that qc.load checks
and compiles again; a bad file of any kind is a ModelLoadError, and a failed save changes
nothing on disk."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import linecache
import os
import struct
import sys
import time
import tracemalloc
import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import qcompiler as qc
from qcompiler import saved
from qcompiler.graph import Graph
from qcompiler.types import TensorType

MODEL = resources.files("qcompiler.examples") / "digits_convnet.onnx"
CI = bool(os.environ.get("CI"))


def small_graph(name: str = "small") -> Graph:
    g = Graph(name)
    x = g.add_input("input.1", TensorType("f32", ("N", 3)))
    w = g.add_constant(np.arange(60, dtype=np.float32).reshape(3, 20) / 7, "w")
    b = g.add_constant(np.array([1.0, -2.0, 3.0], np.float32), "bias")
    a = g.add_node("Add", [x, b], name="/layer1/Add").outputs[0]
    r = g.add_node("Relu", [a], name="/layer1/Relu").outputs[0]
    m = g.add_node("MatMul", [r, w], name="proj").outputs[0]
    g.set_outputs([m, g.add_node("Tanh", [a], name="tanh").outputs[0]])
    return g


X = np.linspace(-4, 4, 12, dtype=np.float32).reshape(4, 3)


def assert_same_outputs(a: qc.Executable, b: qc.Executable, feeds: dict) -> None:
    expected, got = a.run(feeds), b.run(feeds)
    assert list(got) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value)


@pytest.fixture
def saved_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.qcx"
    qc.compile(small_graph()).save(path)
    return path


def split(data: bytes) -> tuple[int, bytes, dict]:
    """The version, the payload and the manifest of a .qcx file's bytes."""
    _, version, _, _ = saved.HEADER.unpack_from(data)
    payload = data[saved.HEADER.size:]
    (size,) = struct.unpack_from("<Q", payload, len(payload) - 8)
    return version, payload, json.loads(payload[len(payload) - 8 - size: -8])


def seal(payload: bytes, version: int = saved.FORMAT_VERSION) -> bytes:
    """A .qcx file around ``payload`` with a correct checksum: what a deliberate tamperer
    (or a bug in another writer) produces."""
    digest = hashlib.sha256(payload).digest()
    return saved.HEADER.pack(saved.MAGIC, version, len(payload), digest) + payload


def with_manifest(data: bytes, manifest: object) -> bytes:
    """The file with its manifest replaced by ``manifest`` (as JSON), correctly sealed."""
    payload = split(data)[1]
    (size,) = struct.unpack_from("<Q", payload, len(payload) - 8)
    body = payload[: len(payload) - 8 - size]
    blob = json.dumps(manifest).encode()
    return seal(body + blob + struct.pack("<Q", len(blob)))


# -- what is written --------------------------------------------------------------------------


def test_save_writes_one_file_that_loads_and_gives_the_same_outputs(tmp_path):
    exe = qc.compile(small_graph())
    exe.save(tmp_path / "m.qcx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.qcx"]
    loaded = qc.load(tmp_path / "m.qcx")
    assert loaded.backend == "numpy" and loaded.graph == exe.graph
    assert_same_outputs(exe, loaded, {"input.1": X})


def test_the_file_is_versioned_checksummed_data_with_the_ir_text_and_the_backend(saved_file):
    data = saved_file.read_bytes()
    assert data.startswith(saved.MAGIC)
    version, payload, manifest = split(data)
    assert version == saved.FORMAT_VERSION
    assert data[saved.HEADER.size - 32: saved.HEADER.size] == hashlib.sha256(payload).digest()
    assert manifest["backend"] == "numpy"
    assert [i["name"] for i in manifest["inputs"]] == ["input.1"]
    assert manifest["outputs"] == ["proj", "tanh"]
    records = {r["name"]: r for r in manifest["constants"]}
    w = records["w"]
    array = np.load(io.BytesIO(payload[w["offset"]: w["offset"] + w["length"]]),
                    allow_pickle=False)
    np.testing.assert_array_equal(array, small_graph().constants["w"].data)
    g = qc.parse(manifest["ir"], {"w": array, "bias": small_graph().constants["bias"].data})
    assert g == small_graph()
    assert b"import " not in data and b"def " not in data  # no code


def test_the_digits_model_round_trips(tmp_path):
    exe = qc.compile(qc.optimize(qc.load_onnx(MODEL)))
    exe.save(tmp_path / "d.qcx")
    x = np.load(resources.files("qcompiler.examples") / "digits.npz")["test_x"][:16]
    assert_same_outputs(exe, qc.load(tmp_path / "d.qcx"), {"image": x})


def test_the_executable_keeps_a_copy_of_its_graph():
    g = small_graph()
    exe = qc.compile(g)
    assert exe.graph == g and exe.graph is not g
    g.set_outputs(g.outputs[:1])  # later edits of the user's graph do not reach the executable
    assert exe.outputs == ["proj", "tanh"] and len(exe.graph.outputs) == 2


# -- writing safely ---------------------------------------------------------------------------


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "m.qcx"
    path.write_bytes(b"an older file")
    qc.compile(small_graph()).save(path)
    assert qc.load(path).outputs == ["proj", "tanh"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.qcx"]


def fail_midway(exc: BaseException):
    real = np.lib.format.write_array
    calls = []

    def write_array(fp, array, **kwargs):
        calls.append(array)
        if len(calls) == 2:  # the first constant was written, the second is half-written
            buffer = io.BytesIO()
            real(buffer, array, **kwargs)
            fp.write(buffer.getvalue()[:40])
            raise exc
        return real(fp, array, **kwargs)

    return write_array


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
def test_a_failed_save_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch, exc):
    path = tmp_path / "m.qcx"
    qc.compile(small_graph("old")).save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np.lib.format, "write_array", fail_midway(exc))
    expected = qc.SaveError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        qc.compile(small_graph("new")).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.qcx"]
    monkeypatch.undo()
    assert qc.load(path).graph.name == "old"


def test_a_failed_rename_leaves_nothing_behind(tmp_path, monkeypatch):
    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(qc.SaveError, match="Permission denied"):
        qc.compile(small_graph()).save(tmp_path / "m.qcx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing-folder", "a-directory"])
def test_save_where_no_file_can_go_is_a_save_error(tmp_path, where):
    target = tmp_path / "nope" / "m.qcx" if where == "missing-folder" else tmp_path
    with pytest.raises(qc.SaveError, match="cannot save to"):
        qc.compile(small_graph()).save(target)


# -- reading safely ---------------------------------------------------------------------------


def onnx_bytes() -> bytes:
    return Path(str(MODEL)).read_bytes()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("manifest.json", "{}")
    return buffer.getvalue()


BAD_FILES = {
    "empty": (lambda data: b"", "the file is empty"),
    "magic-only": (lambda data: saved.MAGIC[:5], "truncated"),
    "truncated-header": (lambda data: data[:30], "truncated"),
    "truncated-payload": (lambda data: data[:-100], "truncated"),
    "extra-bytes": (lambda data: data + b"\0", "extra bytes"),
    "onnx-renamed": (lambda data: onnx_bytes(), "qc.load_onnx"),
    "zip-renamed": (lambda data: zip_bytes(), "zip archive"),
    "npy-renamed": (lambda data: b"\x93NUMPY" + bytes(100), ".npy file"),
    "newer-version": (lambda data: seal(split(data)[1], 2), "format version 2"),
    "one-flipped-byte": (lambda data: data[:200] + bytes([data[200] ^ 1]) + data[201:],
                         "checksum mismatch"),
    "manifest-is-a-list": (lambda data: with_manifest(data, []), "JSON list, not an object"),
    "manifest-not-json": (lambda data: seal(split(data)[1][:-30] + b"}" * 22
                                            + struct.pack("<Q", 22)), "not valid JSON"),
    "manifest-too-long": (lambda data: seal(split(data)[1][:-8] + struct.pack("<Q", 10**9)),
                          "larger than the payload"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_a_model_load_error(saved_file, case):
    make, message = BAD_FILES[case]
    saved_file.write_bytes(make(saved_file.read_bytes()))
    with pytest.raises(qc.ModelLoadError, match=message) as info:
        qc.load(saved_file)
    assert str(saved_file) in str(info.value)


def tampered(edit):
    def make(data: bytes) -> bytes:
        manifest = split(data)[2]
        edit(manifest)
        return with_manifest(data, manifest)
    return make


MANIFEST_EDITS = {
    "no-backend": (lambda m: m.pop("backend"), "'backend' must be a JSON string"),
    "unknown-backend": (lambda m: m.update(backend="tpu"), "'tpu' backend.*registered.*numpy"),
    "backend-option": (lambda m: m.update(options={"fast": True}), "no option.*fast"),
    "foreign-format": (lambda m: m.update(format="onnx"), "format is 'onnx'"),
    "ir-not-text": (lambda m: m.update(ir=None), "'ir' must be a JSON string"),
    "ir-garbage": (lambda m: m.update(ir="graph ("), "IR does not parse"),
    "ir-bad-escape": (lambda m: m.update(ir=m["ir"].replace("@tanh", '@"\\q"')),
                      "IR does not parse"),
    "ir-bad-number": (lambda m: m.update(ir=m["ir"].replace("f32[N,20]", "f32[N,1e999]")),
                      "IR does not parse"),
    "ir-bad-type": (lambda m: m.update(ir=m["ir"].replace("f32[N,20]", "f32[N,21]")),
                    "IR does not parse or verify"),
    "inputs-disagree": (lambda m: m["inputs"][0].update(shape=[2, 3]), "manifest says"),
    "outputs-disagree": (lambda m: m.update(outputs=["proj"]), "manifest says"),
    "record-overlap": (lambda m: m["constants"][1].update(offset=0), "does not follow"),
    "record-bad": (lambda m: m["constants"].append("w"), "must be"),
    "record-twice": (lambda m: m["constants"].append(dict(m["constants"][0])), "twice"),
    "record-missing": (lambda m: m["constants"].pop(), "records hold"),
    "record-renamed": (lambda m: m["constants"][0].update(name="other"), "not in the constants"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_EDITS))
def test_a_tampered_manifest_with_a_valid_checksum_is_a_model_load_error(saved_file, case):
    edit, message = MANIFEST_EDITS[case]
    saved_file.write_bytes(tampered(edit)(saved_file.read_bytes()))
    with pytest.raises(qc.ModelLoadError, match=message):
        qc.load(saved_file)


def test_a_constant_whose_npy_header_lies_about_its_size_is_refused(saved_file):
    _, payload, manifest = split(saved_file.read_bytes())
    w = next(r for r in manifest["constants"] if r["name"] == "w")
    header = payload[w["offset"]: w["offset"] + w["length"]]
    forged = header.replace(b"(3, 20), }" + b" " * 11, b"(300000000, 20000), }")
    assert len(forged) == len(header) and forged != header
    saved_file.write_bytes(seal(payload.replace(header, forged)))
    with pytest.raises(qc.ModelLoadError, match=r"claims shape \[300000000, 20000\]"):
        qc.load(saved_file)


def test_a_pickled_constant_is_never_unpickled(saved_file):
    _, payload, manifest = split(saved_file.read_bytes())
    w = next(r for r in manifest["constants"] if r["name"] == "w")
    record = payload[w["offset"]: w["offset"] + w["length"]]
    forged = record.replace(b"'descr': '<f4'", b"'descr': '|O' ")
    assert len(forged) == len(record) and forged != record
    saved_file.write_bytes(seal(payload.replace(record, forged)))
    with pytest.raises(qc.ModelLoadError, match="dtype object"):
        qc.load(saved_file)


@pytest.mark.parametrize("where", ["graph-name", "node-name"])
def test_names_in_a_tampered_file_cannot_inject_code(saved_file, tmp_path, where):
    marker = tmp_path / "pwned"
    payload = f'x\n__import__("pathlib").Path({str(marker)!r}).touch()\n#'

    def edit(m):
        if where == "graph-name":
            m["ir"] = m["ir"].replace("graph small(", f"graph {json.dumps(payload)}(")
        else:
            m["ir"] = m["ir"].replace('@"/layer1/Relu"', f"@{json.dumps(payload)}")
    saved_file.write_bytes(tampered(edit)(saved_file.read_bytes()))
    exe = qc.load(saved_file)
    exe.run({"input.1": X})
    assert not marker.exists()


def test_a_directory_is_not_a_saved_executable(tmp_path):
    with pytest.raises(qc.ModelLoadError, match="is a directory"):
        qc.load(tmp_path)
    with pytest.raises(qc.ModelLoadError, match="no such file"):
        qc.load(tmp_path / "missing.qcx")


# -- fuzzing ----------------------------------------------------------------------------------

FUZZ_CASES = 200 if CI else 2000


def mutations(data: bytes, n: int, seed: int):
    """``n`` byte-flipped, byte-set, truncated or spliced copies of ``data``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            for pos in rng.integers(0, len(buf), rng.integers(1, 4)):
                buf[pos] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        elif kind == 2:
            del buf[int(rng.integers(0, len(buf))):]
        else:
            start = int(rng.integers(0, len(buf)))
            del buf[start: start + int(rng.integers(1, 64))]
        yield bytes(buf)


def load_or_error(path: Path, original: qc.Executable | None) -> str:
    """"loaded" or the name of the QCompilerError; anything else fails the test. A load that
    works must give ``original``'s outputs (None: the data may have been changed on purpose)."""
    try:
        loaded = qc.load(path)
        if original is not None:
            assert_same_outputs(original, loaded, {"input.1": X})
        else:
            loaded.run({"input.1": X})
    except qc.QCompilerError as exc:
        return type(exc).__name__
    return "loaded"


def test_fuzzed_copies_of_a_qcx_file_give_only_qcompiler_errors(saved_file, tmp_path):
    original = qc.load(saved_file)
    data = saved_file.read_bytes()
    target = tmp_path / "fuzzed.qcx"
    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    for mutated in mutations(data, FUZZ_CASES, seed=0):
        target.write_bytes(mutated)
        outcome = load_or_error(target, original)
        if mutated != data:  # setting a byte to its own value changes nothing
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) == {"ModelLoadError"}  # the checksum catches every change
    assert outcomes["ModelLoadError"] > FUZZ_CASES * 0.95
    assert time.perf_counter() - start < FUZZ_CASES * 0.05  # no hang: checks are cheap


def test_fuzzed_payloads_behind_a_valid_checksum_give_only_qcompiler_errors(saved_file,
                                                                           tmp_path):
    """A tamperer can reseal the checksum: then the manifest, record and IR checks must hold."""
    payload = split(saved_file.read_bytes())[1]
    target = tmp_path / "fuzzed.qcx"
    outcomes: dict[str, int] = {}
    for mutated in mutations(payload, FUZZ_CASES, seed=1):
        target.write_bytes(seal(mutated))
        outcome = load_or_error(target, None)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) <= {"ModelLoadError", "loaded"}, outcomes
    assert outcomes["ModelLoadError"] > FUZZ_CASES // 2


# -- memory -----------------------------------------------------------------------------------

LOADS = 1000
# Measured: after 20 warm-up loads, traced memory grows by 22-26 KB over the next 200 loads and
# then stays there (the same after 1,000, 2,000 or 3,000 loads: caches filling once). Each
# distinct file name given to compile() costs CPython ~280 bytes for good, which is why the
# generated source's file name is its hash. The bound leaves 2.5x margin.
GROWTH_BOUND = 64 * 1024


def test_loading_the_same_file_a_thousand_times_does_not_grow_memory(saved_file):
    for _ in range(20):
        qc.load(saved_file).run({"input.1": X})
    gc.collect()
    modules, lines = len(sys.modules), len(linecache.cache)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(LOADS):
            qc.load(saved_file).run({"input.1": X})
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(sys.modules) == modules
    assert len(linecache.cache) == lines
    assert growth < GROWTH_BOUND, f"{LOADS} loads grew traced memory by {growth} bytes"


def test_a_path_that_is_not_a_path_is_a_typed_error(tmp_path):
    exe = qc.compile(qc.load_onnx(MODEL))
    with pytest.raises(qc.ModelLoadError, match="cannot load an executable: expected a file path"):
        qc.load(None)
    with pytest.raises(qc.ModelLoadError, match="cannot load an ONNX model: expected a file path"):
        qc.load_onnx(3)
    with pytest.raises(qc.SaveError, match="cannot save: expected a file path"):
        exe.save(None)
    with pytest.raises(qc.SaveError, match="cannot export: expected a file path"):
        exe.export_python(None)
