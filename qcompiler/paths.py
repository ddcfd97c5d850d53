"""File paths given by users: anything but a ``str`` or ``os.PathLike`` is a typed error; and
the one way files are written: whole, or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import SaveError


def as_path(path: object, error: type[Exception], doing: str) -> Path:
    """``path`` as a ``Path``, or ``error`` saying what ``doing`` needed instead."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise error(f"{doing}: expected a file path (a str or os.PathLike), got "
                f"{type(path).__name__} {path!r:.60}")


@contextlib.contextmanager
def atomic_file(path: Path, doing: str) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new contents into: it is a temporary file beside
    ``path``, renamed onto it when the block ends, so ``path`` is either whole and new or as
    it was. On any error the temporary file is removed; an ``OSError`` becomes a ``SaveError``
    saying what ``doing`` was (``"save to"``, ``"export to"``...)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SaveError(f"cannot {doing} {str(path)!r}: {exc.strerror or exc}; nothing was "
                            f"written") from exc
        raise
