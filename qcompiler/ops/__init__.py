"""The op registry: every op qcompiler knows, declared once with schema, inference and kernel.

Adding an op is one ``@op(...)`` declaration in one of the family modules below; the fused
activations that Conv, ConvTranspose, Gemm and MatMul may carry are in ``activation``. This
package imports only numpy: the numpy backend copies it next to a saved model so that the model
runs with numpy alone.
"""

from __future__ import annotations

from . import einsum, elementwise, logic, nn, quant, reduce, tensor  # noqa: F401  (registers the ops)
from ._schema import OPS, REQUIRED, Ctx, InferError, OpDef, Out, op
from .activation import ACTIVATIONS, apply_activation

__all__ = ["ACTIVATIONS", "OPS", "REQUIRED", "Ctx", "InferError", "OpDef", "Out",
           "apply_activation", "op", "get", "names"]


def get(name: str) -> OpDef:
    """The declaration of op ``name``; ``KeyError`` names the op when it is unknown."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"op {name!r} is not registered") from None


def names() -> list[str]:
    return sorted(OPS)
