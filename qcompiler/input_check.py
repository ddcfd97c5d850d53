"""The input contract of a compiled model, checked at the boundary: names, dtypes and shapes.

This module imports only numpy: ``Executable.run`` uses it, and a model exported with
``Executable.export_python`` carries a copy of it, so both check their inputs the same way and
say the same thing about a wrong one. Each failed check raises the class that ``errors`` maps
its kind to (``"feeds"``, ``"missing"``, ``"unknown"``, ``"shape"``, ``"dtype"``); without a
mapping it raises ``InputCheckError``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

KINDS = ("feeds", "missing", "unknown", "shape", "dtype")


class InputCheckError(ValueError):
    """The inputs do not match what the model expects (used where qcompiler is not installed)."""


@dataclass(frozen=True)
class InputSpec:
    """Name, element type (short name ``f32`` and numpy name ``float32``) and shape (ints and
    symbol names; ``?`` for a dimension nothing is known about) a model input must have."""

    name: str
    dtype: str
    numpy_dtype: str
    shape: tuple[int | str, ...]

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "numpy_dtype": self.numpy_dtype,
                "shape": list(self.shape)}

    @cached_property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.numpy_dtype)


def check_feeds(specs: list[InputSpec], feeds: Any,
                errors: Mapping[str, type[Exception]] | None = None) -> list[np.ndarray]:
    """The feeds (a mapping from input name to array or nested list) as arrays in the order of
    ``specs``, or an error saying which input is wrong and what was expected.

    Python lists of floats become float32 arrays for a float32 input; an ``ndarray`` of another
    dtype is refused rather than silently converted.
    """
    def fail(kind: str, message: str) -> Exception:
        return (errors or {}).get(kind, InputCheckError)(message)

    def expected() -> str:  # only an error needs it: keep Executable.run's checks cheap
        return ", ".join(f"{s.name} ({s.describe()})" for s in specs) or "none"

    if not isinstance(feeds, dict) and not isinstance(feeds, Mapping):
        raise fail("feeds", f"the inputs must be a mapping from input name to array, got "
                            f"{type(feeds).__name__}; the model's inputs are: {expected()}")
    # a dict with as many feeds as inputs, each input's name among them: no name is unknown
    # (another Mapping's ``in`` need not agree with its keys: scanned always)
    if (type(feeds) is not dict or len(feeds) != len(specs)
            or not all(s.name in feeds for s in specs)):
        known = {s.name for s in specs}
        unknown = [name for name in feeds if name not in known]
        if unknown:
            raise fail("unknown", f"unknown input(s) {', '.join(map(repr, unknown))}; the "
                                  f"model's inputs are: {expected()}")
    arrays: list[np.ndarray] = []
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if spec.name not in feeds:
            raise fail("missing", f"input {spec.name!r} ({spec.describe()}) is missing")
        array = _as_array(spec, feeds[spec.name], fail)
        if array.dtype != spec.np_dtype:
            raise fail("dtype", f"input {spec.name!r} must be {spec.dtype} "
                                f"({spec.numpy_dtype}), got {array.dtype.name}")
        problem = _shape_problem(spec, array.shape, bound)
        if problem:
            raise fail("shape", problem)
        arrays.append(array)
    return arrays


def _as_array(spec: InputSpec, value: Any,
              fail: Callable[[str, str], Exception]) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise fail("shape", f"input {spec.name!r} must be {spec.describe()}, got a "
                            f"{type(value).__name__} that is not a rectangular array "
                            f"({exc})") from None
    if array.dtype == np.float64 and spec.numpy_dtype == "float32":
        array = array.astype(np.float32)
    return array


def _shape_problem(spec: InputSpec, shape: tuple[int, ...],
                   bound: dict[str, tuple[int, str]]) -> str | None:
    """What is wrong with ``shape`` for ``spec`` (None if nothing); ``bound`` records the size
    each symbol took in the inputs already checked, so ``N`` agrees across inputs."""
    if len(shape) != len(spec.shape):
        return (f"input {spec.name!r} must have rank {len(spec.shape)} ({spec.describe()}), "
                f"got shape {list(shape)}")
    for axis, want in enumerate(spec.shape):
        got = shape[axis]
        if want == got:  # a fixed size that agrees (a symbol, a str, never equals an int)
            continue
        if isinstance(want, int):
            return (f"input {spec.name!r} must have shape {spec.describe()}, got "
                    f"{list(shape)} (dimension {axis} is {got}, not {want})")
        if want != "?":
            if want in bound and bound[want][0] != got:
                size, where = bound[want]
                return (f"input {spec.name!r} has {want}={got} in dimension {axis}, but {where} "
                        f"has {want}={size}")
            bound.setdefault(want, (got, f"input {spec.name!r}"))
    return None


def read_feeds(path: str | os.PathLike[str],
               error: type[Exception] = InputCheckError) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``path`` by name, or ``error`` saying why not (a
    missing file, a directory, not an ``.npz``, a truncated one, pickled objects, which are
    never loaded)."""
    import zipfile
    import zlib

    where = repr(str(path))
    if os.path.isdir(path):
        raise error(f"cannot read inputs from {where}: it is a directory, not an .npz file")
    try:
        with open(path, "rb") as file:
            start = file.read(6)
    except FileNotFoundError:
        raise error(f"cannot read inputs from {where}: no such file") from None
    except OSError as exc:
        raise error(f"cannot read inputs from {where}: {exc.strerror or exc}") from None
    if start == b"\x93NUMPY":
        raise error(f"cannot read inputs from {where}: it holds one unnamed array; save inputs "
                    f"by name with np.savez(path, name=array)")
    if start[:2] != b"PK":  # a zip archive (an empty one starts with PK\x05\x06)
        raise error(f"cannot read inputs from {where}: it is not a readable .npz file (an .npz "
                    f"file is a zip archive; write one with np.savez(path, name=array))")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise error(f"cannot read inputs from {where}: it is not a readable .npz file "
                    f"({type(exc).__name__}: {exc})") from None


def write_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to the ``.npz`` file at exactly ``path`` (``np.load`` reads it back by
    name), whatever the names: ``np.savez`` takes them as keyword arguments, so an array named
    ``file`` or ``allow_pickle`` breaks it, and it appends ``.npz`` to the path. The file is
    written beside ``path`` and renamed into place, so it appears whole or not at all; an
    ``OSError`` says why not."""
    import tempfile
    import zipfile

    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as file, zipfile.ZipFile(file, "w") as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
