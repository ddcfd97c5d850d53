"""Einsum: the Einstein-summation op transformers export for batched matmuls, transposes,
outer products and reductions (``bhqd,bhkd->bhqk``).

Every equation ONNX allows is accepted (explicit or implicit output, one ``...`` per term,
repeated labels for diagonals); the kernel is ``numpy.einsum``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._schema import REQUIRED, Ctx, InferError, Out, broadcast_shapes, op
from .tensor import merge_dim

ELLIPSIS = "..."


@dataclass(frozen=True)
class Equation:
    """A parsed equation: one label string per input and the output's, ``.`` standing for
    the ellipsis (the broadcast dimensions) in each."""

    inputs: tuple[str, ...]
    output: str


def _term(text: str, where: str) -> str:
    """A term's labels with the ellipsis as one ``.``; anything but letters is refused."""
    if text.count(ELLIPSIS) > 1:
        raise InferError(f"{where} {text!r} has more than one ellipsis")
    labels = text.replace(ELLIPSIS, ".")
    bad = sorted({c for c in labels if not (c.isascii() and c.isalpha()) and c != "."})
    if bad:
        raise InferError(f"{where} {text!r} has characters {''.join(bad)!r}: labels are "
                         f"letters, with at most one '...'")
    return labels


def parse(equation: str, n_inputs: int) -> Equation:
    """Parse ``equation`` for ``n_inputs`` operands; the implicit output (no ``->``) is the
    ellipsis followed by the labels used once, in alphabetical order."""
    text = equation.replace(" ", "")
    lhs, arrow, rhs = text.partition("->")
    inputs = tuple(_term(t, "term") for t in lhs.split(","))
    if len(inputs) != n_inputs:
        raise InferError(f"equation {equation!r} has {len(inputs)} operand terms but the node "
                         f"has {n_inputs} inputs")
    if arrow:
        output = _term(rhs, "output")
        used = set("".join(inputs))
        for label in output:
            if output.count(label) > 1:
                raise InferError(f"output label {label!r} of {equation!r} repeats")
            if label not in used:
                raise InferError(f"output label {label!r} of {equation!r} is not an input's")
    else:
        letters = "".join(inputs).replace(".", "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        output = ("." if any("." in t for t in inputs) else "") + "".join(once)
    return Equation(inputs, output)


def _einsum(ctx: Ctx) -> list[Out]:
    n = len(ctx.types)
    dtypes = {ctx.dtype(i) for i in range(n)}
    if len(dtypes) != 1:
        ctx.fail(f"inputs must share one dtype, got {', '.join(sorted(dtypes))}")
    eq = parse(ctx.attr("equation"), n)
    dims: dict[str, object] = {}
    broadcast = []
    for i, term in enumerate(eq.inputs):
        shape = ctx.shape(i)
        n_labels = len(term.replace(".", ""))
        if len(shape) < n_labels or (len(shape) != n_labels and "." not in term):
            ctx.fail(f"input {i} has rank {len(shape)} but its term {term!r} has "
                     f"{n_labels} labels")
        lead = len(shape) - n_labels
        k = 0
        for label in term:
            if label == ".":
                broadcast.append(tuple(shape[k:k + lead]))
                k += lead
                continue
            dims[label] = merge_dim(dims.get(label, shape[k]), shape[k], f"label {label!r}")
            k += 1
    ellipsis = broadcast_shapes(*broadcast) if broadcast else ()
    out: list = []
    for label in eq.output:
        out.extend(ellipsis if label == "." else (dims[label],))
    return [Out(dtypes.pop(), tuple(out))]


@op("Einsum", ["Inputs*"], ["Output"], attrs={"equation": REQUIRED}, infer=_einsum)
def einsum(*inputs, equation):
    """``numpy.einsum`` of the inputs; the result keeps their dtype."""
    out = np.einsum(equation.replace(" ", ""), *inputs, optimize=len(inputs) > 2)
    return np.asarray(out, dtype=inputs[0].dtype)
