"""File paths given by users: anything but a ``str`` or ``os.PathLike`` is a typed error."""

from __future__ import annotations

import os
from pathlib import Path


def as_path(path: object, error: type[Exception], doing: str) -> Path:
    """``path`` as a ``Path``, or ``error`` saying what ``doing`` needed instead."""
    if isinstance(path, (str, os.PathLike)):
        return Path(path)
    raise error(f"{doing}: expected a file path (a str or os.PathLike), got "
                f"{type(path).__name__} {path!r:.60}")
