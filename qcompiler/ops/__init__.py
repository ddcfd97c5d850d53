"""The op registry: every op qcompiler knows, declared once with schema, inference and kernel.

Adding an op is one ``@op(...)`` declaration in one of the family modules below; the fused
activations that Conv, ConvTranspose, Gemm and MatMul may carry are in ``activation``. This
package imports only numpy: the numpy backend copies it next to a saved model so that the model
runs with numpy alone.
"""

from __future__ import annotations

import difflib

from . import (  # noqa: F401
    einsum,
    elementwise,
    grid_sample,
    int_elementwise,
    int_nn,
    logic,
    lookup,
    nn,
    observe,
    quant,
    quant_dynamic,
    reduce,
    tensor,
)
from ._schema import OPS, REQUIRED, Ctx, InferError, OpDef, Out, op
from .activation import ACTIVATIONS, apply_activation

__all__ = ["ACTIVATIONS", "OPS", "REQUIRED", "Ctx", "InferError", "OpDef", "Out",
           "UnknownOpError", "apply_activation", "op", "get", "names"]


try:
    from ..errors import UnknownOpError
except ImportError:  # this package copied beside a standalone numpy program: no qcompiler

    class UnknownOpError(KeyError):  # type: ignore[no-redef]
        """An op type that is not registered."""


def get(name: str) -> OpDef:
    """The declaration of op ``name``; ``UnknownOpError`` (a ``KeyError``) names the op and
    the registered ops closest to it when it is unknown."""
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise UnknownOpError(f"op {name!r} is not registered{_did_you_mean(name)}") from None


def _did_you_mean(name: object) -> str:
    if not isinstance(name, str):
        return ""
    same_case = [n for n in OPS if n.lower() == name.lower()]
    close = same_case or difflib.get_close_matches(name, OPS, n=3, cutoff=0.6)
    if not close:
        return f" ({len(OPS)} ops are; see qcompiler.ops.names())"
    return f"; did you mean {' or '.join(repr(c) for c in close)}?"


def names() -> list[str]:
    return sorted(OPS)
