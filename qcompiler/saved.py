"""The saved executable: one data-only ``.qcx`` file, versioned and checksummed.

Layout (integers little-endian)::

    header   8 bytes  magic  b"\\x89QCX\\r\\n\\x1a\\n"
             4 bytes  format version (u32)
             8 bytes  payload length (u64)
            32 bytes  sha256 of the payload
    payload  the constants, each a .npy record (no pickled objects), back to back
             the manifest: JSON (UTF-8) with the format, the backend's name and options, the
             model's inputs and outputs, the IR text (``graph.to_text()``) and where each
             constant's record lies
             the manifest's length (u64)

Nothing in the file is code. ``read_saved`` checks the magic, the version, the length and the
checksum before it looks at the payload, then checks the manifest field by field, reads each
constant's record only after its .npy header agrees with the record's length, parses the IR
(``qc.parse`` verifies the graph) and checks that the graph has the inputs and outputs the
manifest names. Whatever is wrong is a ``ModelLoadError`` naming the file.

``write_saved`` writes to a new temporary file in the target's folder and renames it into
place: a failure at any point leaves no partial file and leaves what was there untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendError, ModelLoadError, QCompilerError, SaveError
from .paths import atomic_file

if TYPE_CHECKING:
    from .executable import Executable
    from .graph import Graph

MAGIC = b"\x89QCX\r\n\x1a\n"
FORMAT = "qcx"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIQ32s")
_LENGTH = struct.Struct("<Q")


# -- writing ----------------------------------------------------------------------------------


class _HashingWriter:
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, file: io.BufferedWriter):
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return memoryview(data).nbytes


def write_saved(exe: Executable, path: Path) -> None:
    """Write ``exe`` to ``path`` as described in this module's docstring."""
    from . import __version__

    if path.is_dir():
        raise SaveError(f"cannot save to {str(path)!r}: it is a directory (a saved executable "
                        f"is one file, e.g. model.qcx)")
    graph = exe.graph
    with atomic_file(path, "save to") as file:
        file.write(bytes(HEADER.size))
        out = _HashingWriter(file)
        records = []
        for name, array in graph.constant_arrays().items():
            start = out.size
            np.lib.format.write_array(out, array, allow_pickle=False)
            records.append({"name": name, "offset": start, "length": out.size - start})
        manifest = {
            "format": FORMAT,
            "qcompiler": __version__,
            "backend": exe.backend,
            "options": exe.options,
            "inputs": [spec.to_json() for spec in exe.inputs],
            "outputs": exe.outputs,
            "constants": records,
            "ir": graph.to_text(),
        }
        blob = json.dumps(manifest, indent=1).encode("utf-8")
        out.write(blob)
        out.write(_LENGTH.pack(len(blob)))
        file.seek(0)
        file.write(HEADER.pack(MAGIC, FORMAT_VERSION, out.size, out.sha256.digest()))


# -- reading ----------------------------------------------------------------------------------


def load_saved(path: Path) -> Executable:
    """Read, check and compile again the executable saved at ``path``."""
    from qcompiler.backends import compile_graph, get_backend

    manifest, graph = read_saved(path)
    where = repr(str(path))
    try:
        backend = get_backend(manifest["backend"])
    except BackendError as exc:
        raise ModelLoadError(f"cannot load {where}: it was saved by the "
                             f"{manifest['backend']!r} backend, which is not available here "
                             f"({exc})") from None
    try:
        return compile_graph(graph, backend.name, **manifest["options"])
    except QCompilerError as exc:
        raise ModelLoadError(f"cannot load {where}: the {backend.name} backend refused its "
                             f"IR: {exc}") from exc


def read_saved(path: Path) -> tuple[dict[str, Any], Graph]:
    """The manifest and the verified graph of the ``.qcx`` file at ``path``."""
    from .text import parse

    where = repr(str(path))

    def bad(problem: str) -> ModelLoadError:
        return ModelLoadError(f"cannot load {where}: {problem}")

    payload = _checked_payload(_read_bytes(path, bad), bad)
    manifest = _manifest(payload, bad)
    constants = {r["name"]: _array(payload, r, bad) for r in manifest["constants"]}
    try:
        graph = parse(manifest["ir"], constants)
    except (QCompilerError, ValueError) as exc:  # ValueError: a malformed string or number
        raise bad(f"its IR does not parse or verify: {exc}") from exc
    _check_signature(manifest, graph, bad)
    return manifest, graph


Bad = Callable[[str], ModelLoadError]


def _read_bytes(path: Path, bad: Bad) -> bytes:
    if path.is_dir():
        raise bad("it is a directory; a saved executable is one .qcx file written by "
                  "exe.save(path) (folders from earlier qcompiler versions are not read: "
                  "compile the model again)")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise bad("no such file") from None
    except OSError as exc:
        raise bad(exc.strerror or str(exc)) from None


def _checked_payload(data: bytes, bad: Bad) -> memoryview:
    """The payload, once the header says it is a whole, unmodified .qcx file of our version."""
    if not data.startswith(MAGIC[: len(data)]) or not data:
        raise bad(f"it is not a saved qcompiler executable ({_foreign(data)})")
    if len(data) < HEADER.size:
        raise bad(f"the file is truncated ({len(data)} bytes, shorter than the "
                  f"{HEADER.size}-byte header)")
    _, version, length, digest = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise bad(f"it has format version {version}; this qcompiler reads version "
                  f"{FORMAT_VERSION}")
    payload = memoryview(data)[HEADER.size:]
    if len(payload) != length:
        state = "truncated" if len(payload) < length else "followed by extra bytes"
        raise bad(f"the file is {state}: its header announces {length} bytes of payload, the "
                  f"file holds {len(payload)}")
    if hashlib.sha256(payload).digest() != digest:
        raise bad("checksum mismatch: the file is corrupt or was modified after it was saved")
    return payload


def _foreign(data: bytes) -> str:
    if not data:
        return "the file is empty"
    if data.startswith(b"PK\x03\x04"):
        return "it is a zip archive, e.g. an .npz file"
    if data.startswith(b"\x93NUMPY"):
        return "it is a .npy file"
    return ("it does not start with the .qcx signature; ONNX models are read with "
            "qc.load_onnx(path)")


_FIELDS: dict[str, type] = {
    "format": str, "qcompiler": str, "backend": str, "options": dict,
    "inputs": list, "outputs": list, "constants": list, "ir": str,
}


def _manifest(payload: memoryview, bad: Bad) -> dict[str, Any]:
    """The manifest at the end of the payload, checked field by field."""
    if len(payload) < _LENGTH.size:
        raise bad("the payload is too short to hold a manifest")
    (size,) = _LENGTH.unpack_from(payload, len(payload) - _LENGTH.size)
    data_end = len(payload) - _LENGTH.size - size
    if data_end < 0:
        raise bad(f"the manifest's length ({size} bytes) is larger than the payload")
    try:
        manifest = json.loads(bytes(payload[data_end: len(payload) - _LENGTH.size]))
    except (ValueError, RecursionError) as exc:
        raise bad(f"the manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise bad(f"the manifest is a JSON {type(manifest).__name__}, not an object")
    for key, kind in _FIELDS.items():
        if not isinstance(manifest.get(key), kind):
            raise bad(f"the manifest's {key!r} must be a JSON {_JSON_NAMES[kind]}, got "
                      f"{manifest.get(key)!r:.60}")
    if manifest["format"] != FORMAT:
        raise bad(f"the manifest's format is {manifest['format']!r}, not {FORMAT!r}")
    if not all(isinstance(o, str) for o in manifest["outputs"]):
        raise bad("the manifest's outputs must be names (strings)")
    _check_records(manifest["constants"], data_end, bad)
    return manifest


_JSON_NAMES = {str: "string", dict: "object", list: "array"}


def _check_records(records: list[Any], data_end: int, bad: Bad) -> None:
    """Each record names a constant and its bytes; together they tile the data exactly."""
    position, names = 0, set()
    for record in records:
        if not (isinstance(record, dict) and isinstance(record.get("name"), str)
                and all(_is_int(record.get(k)) for k in ("offset", "length"))):
            raise bad(f"the manifest's constant {record!r:.60} must be "
                      f'{{"name": str, "offset": int, "length": int}}')
        if record["name"] in names:
            raise bad(f"the manifest lists constant {record['name']!r} twice")
        if record["offset"] != position or record["length"] < 0:
            raise bad(f"constant {record['name']!r}'s record (offset {record['offset']}, "
                      f"length {record['length']}) does not follow the one before it")
        names.add(record["name"])
        position += record["length"]
    if position != data_end:
        raise bad(f"the constants' records hold {position} bytes, the payload {data_end}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _array(payload: memoryview, record: dict[str, Any], bad: Bad) -> np.ndarray:
    """A constant's .npy record as a read-only array, read only once its header is sane."""
    raw = payload[record["offset"]: record["offset"] + record["length"]]
    name = record["name"]
    file = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f".npy version {version} is not one qcompiler writes")
        shape, _, dtype = read_header(file)
    except Exception as exc:  # numpy's header parser raises many kinds on malformed text
        raise bad(f"constant {name!r} is not a valid .npy record: {exc}") from None
    if dtype.hasobject or any(d < 0 for d in shape):
        raise bad(f"constant {name!r} has dtype {dtype} and shape {shape}, which qcompiler "
                  f"never saves")
    if math.prod(shape) * dtype.itemsize != len(raw) - file.tell():
        raise bad(f"constant {name!r} claims shape {list(shape)} of {dtype}, but its record "
                  f"holds {len(raw) - file.tell()} bytes of data")
    array = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    array.setflags(write=False)
    return array


def _check_signature(manifest: dict[str, Any], graph: Graph, bad: Bad) -> None:
    from .executable import input_specs

    inputs = [spec.to_json() for spec in input_specs(graph)]
    outputs = [v.name for v in graph.outputs]
    if manifest["inputs"] != inputs or manifest["outputs"] != outputs:
        raise bad(f"the manifest says the model takes {manifest['inputs']} and gives "
                  f"{manifest['outputs']}, but its IR takes {inputs} and gives {outputs}")
