"""Compiled code kept on the user's machine, so a model compiled once loads without LLVM.

A program's object code is stored under a key that holds everything the code depends on: the
graph with concrete shapes (its nodes, attributes, types and every constant's bytes), the CPU
it was compiled for (triple, name, features), the thread count (each thread's scratch is laid
out in the arena), whether it is a checking build, the version of the code generator
(a hash of the sources of this backend and of the op registry's numerics), and the program's
own segment functions (their IR text: every kernel they call, named by its specialisation,
and every offset in the arena and the constants block baked into the calls), so an entry is
never loaded for a program laid out or specialised differently. The ``.qcx`` saved
format stays data-only: a cache entry is an optimisation the loader may use, never needed.

The cache directory is ``$QCOMPILER_CACHE_DIR`` (``off`` disables the cache), else
``$XDG_CACHE_HOME/qcompiler/llvm``, else ``~/.cache/qcompiler/llvm``. An entry is written to a
temporary file and renamed into place, so a reader never sees half of one; each entry carries a
hash of its bytes, and an entry that does not match (a truncated or damaged file) is compiled
again and replaced. A directory that cannot be written leaves the cache unused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from qcompiler.graph import Graph

from .target import Target

MAGIC = b"QCLLVMOBJ1\n"
_DIGEST = 32  # sha256


@functools.cache
def generator_version() -> str:
    """A hash of the code generator's sources (this backend and the ops' numerics)."""
    here = Path(__file__).resolve().parent
    ops = Path(__import__("qcompiler.ops", fromlist=["ops"]).__file__).resolve().parent
    digest = hashlib.sha256()
    for folder in (here, ops):
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def directory() -> Path | None:
    """Where entries live, or None when the cache is off."""
    chosen = os.environ.get("QCOMPILER_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in ("", "off") else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qcompiler" / "llvm"


def key(graph: Graph, target: Target, threads: int, check: bool,
        segments: list[str] = ()) -> str:
    """The entry's name for ``graph`` (concrete shapes) compiled for ``target`` and
    ``threads`` (the arena's layout depends on it), whose segment functions are the IR texts
    ``segments``."""
    digest = hashlib.sha256()
    for part in (generator_version(), target.key, str(threads), str(check), *segments):
        digest.update(part.encode() + b"\0")
    for value in graph.inputs:
        digest.update(f"in {value.name}: {value.type}\0".encode())
    for name, array in sorted(graph.constant_arrays().items()):
        digest.update(f"const {name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(memoryview(array.tobytes()))
    for node in graph.nodes:
        digest.update(f"{node.op} {node.name}\0".encode())
        for name, attr in sorted(node.attrs.items()):
            digest.update(f"{name}=".encode())
            _add(digest, attr)
        for value in node.inputs:
            digest.update(b"-" if value is None else f"{value.name}\0".encode())
        for value in node.outputs:
            digest.update(f"out {value.name}: {value.type}\0".encode())
    digest.update(" ".join(v.name for v in graph.outputs).encode())
    return digest.hexdigest()


def _add(digest, attr: object) -> None:
    """An attribute into ``digest``: arrays by their bytes (``repr`` elides long ones)."""
    if isinstance(attr, np.ndarray):
        digest.update(f"array {attr.dtype.str} {attr.shape}:".encode())
        digest.update(memoryview(np.ascontiguousarray(attr).tobytes()))
    elif isinstance(attr, (tuple, list)):
        digest.update(b"[")
        for item in attr:
            _add(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(attr).__name__}:{attr!r}\0".encode())


def load(name: str) -> bytes | None:
    """The object code stored under ``name``, or None (no cache, no entry, or a damaged one)."""
    folder = directory()
    if folder is None:
        return None
    try:
        data = (folder / f"{name}.o").read_bytes()
    except OSError:
        return None
    head, digest, code = data[:len(MAGIC)], data[len(MAGIC):len(MAGIC) + _DIGEST], \
        data[len(MAGIC) + _DIGEST:]
    if head != MAGIC or hashlib.sha256(code).digest() != digest:
        return None
    return code


def store(name: str, code: bytes) -> bool:
    """Keep ``code`` under ``name``; False when the directory cannot be written."""
    folder = directory()
    if folder is None:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(MAGIC + hashlib.sha256(code).digest() + code)
            os.replace(temporary, folder / f"{name}.o")
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        return False
    return True
