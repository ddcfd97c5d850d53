"""How an op is declared: schema, type/shape inference and numpy reference kernel in one place.

This module (like the whole ``qcompiler.ops`` package) imports nothing but numpy, so a compiled
numpy-backend module can carry a copy of the package and run with numpy alone. Dtypes are the
short names of ``qcompiler.types.DType`` ("f32", "i64", ...); shapes are tuples of ints and
symbol names (``"?"`` for an unknown dimension).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import NUMPY_NAME

UNKNOWN = "?"
REQUIRED = object()  # default of an attribute that must be given

NP_DTYPES = {name: np.dtype(numpy_name).type for name, numpy_name in NUMPY_NAME.items()}


def dtype_name(dtype: Any) -> str:
    """Short dtype name of a numpy dtype (or array)."""
    name = np.dtype(dtype).name
    for short, np_type in NP_DTYPES.items():
        if np.dtype(np_type).name == name:
            return short
    raise InferError(f"numpy dtype {name} is not supported")


class InferError(Exception):
    """Raised by an inference function; the graph turns it into an error naming the node."""


class Unsupported(InferError):
    """The node is well-formed but uses a feature qcompiler does not implement (a mode, an
    output, a dtype); the graph reports it as an ``UnsupportedModelError`` naming the node."""


@dataclass
class Out:
    """One inferred output: dtype, shape, and the known contents of small shape tensors.

    ``sym`` is a tuple of ints and symbol names when the value is a 1-D shape-like tensor whose
    entries are known at compile time (``Shape`` of a tensor with a symbolic batch dimension,
    say); it lets ``Reshape`` and friends infer static shapes through shape subgraphs.
    """

    dtype: str
    shape: tuple
    sym: tuple | None = None


@dataclass
class Ctx:
    """What an inference function sees of a node: input types, known input values, attributes."""

    op: str
    attrs: dict[str, Any]
    types: list[tuple[str, tuple] | None]  # (dtype, shape) per input; None for an empty input
    values: list[Any]  # per input: ndarray (constant), tuple (known symbolic contents) or None
    n_outputs: int

    def has(self, i: int) -> bool:
        return i < len(self.types) and self.types[i] is not None

    def dtype(self, i: int) -> str:
        self._need(i)
        return self.types[i][0]

    def shape(self, i: int) -> tuple:
        self._need(i)
        return self.types[i][1]

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def value(self, i: int) -> Any:
        """The input's constant ndarray, or its known contents as a tuple, or None."""
        return self.values[i] if self.has(i) else None

    def const(self, i: int) -> np.ndarray | None:
        """The input as an ndarray when fully known (constant or known ints), else None."""
        v = self.value(i)
        if isinstance(v, np.ndarray):
            return v
        if isinstance(v, tuple) and all(isinstance(d, int) for d in v):
            shape = self.shape(i)
            array = np.array(v, dtype=np.int64)
            return array.reshape(shape) if all(isinstance(d, int) for d in shape) else array
        return None

    def ints(self, i: int) -> tuple | None:
        """An integer input's contents (flattened) as a tuple of ints and symbols when known,
        else None (also for float inputs)."""
        v = self.value(i)
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "iub":
                return None
            return tuple(int(x) for x in v.reshape(-1))
        return v

    def attr(self, name: str) -> Any:
        return self.attrs[name]

    def fail(self, message: str) -> None:
        raise InferError(message)

    def unsupported(self, message: str) -> None:
        raise Unsupported(message)

    def _need(self, i: int) -> None:
        if not self.has(i):
            raise InferError(f"input {i} is required but missing")


@dataclass
class OpDef:
    """A registered op. Inputs ending in '?' are optional, one ending in '*' is variadic.

    ``extensions`` names the inputs (without '?') and attributes that are qcompiler extensions
    of the ONNX op (the fused forms of Conv, Gemm, ...): the ONNX importer refuses them, and an
    exporter must decompose a node that uses them.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    infer: Callable[[Ctx], list[Out]]
    kernel: Callable[..., Any]
    doc: str = ""
    extensions: frozenset[str] = frozenset()
    attr_types: dict[str, str] = field(default_factory=dict)
    attr_kinds: dict[str, str] = field(init=False)
    min_inputs: int = field(init=False)
    variadic_inputs: bool = field(init=False)
    variadic_outputs: bool = field(init=False)

    def __post_init__(self) -> None:
        self.min_inputs = sum(1 for n in self.inputs if not n.endswith(("?", "*")))
        self.variadic_inputs = bool(self.inputs) and self.inputs[-1].endswith("*")
        self.variadic_outputs = bool(self.outputs) and self.outputs[-1].endswith("*")
        unknown = sorted(self.extensions - set(self.attrs) - set(self.input_names))
        if unknown:
            raise ValueError(f"op {self.name}: extensions {unknown} are neither inputs nor "
                             f"attributes")
        self.attr_kinds = {k: self.attr_types.get(k) or _kind_of(k, v)
                           for k, v in self.attrs.items()}
        undeclared = sorted(k for k, kind in self.attr_kinds.items() if kind not in _KIND_TEXT)
        if undeclared:
            raise ValueError(f"op {self.name}: the type of attribute(s) {undeclared} is not "
                             f"shown by the default: declare it in attr_types")

    @property
    def input_names(self) -> tuple[str, ...]:
        """The input names without their '?' or '*' marks."""
        return tuple(n.rstrip("?*") for n in self.inputs)

    def full_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in; unknown, missing required or wrong-typed ones
        raise (a wrong-typed one names the attribute and the ONNX type it needs)."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise InferError(f"{self.name} has no attribute(s) {', '.join(unknown)}")
        out = {}
        for key, default in self.attrs.items():
            if key in attrs:
                value = attrs[key]
                if not (value is None and default is None) and not _is_kind(
                        self.attr_kinds[key], value):
                    raise InferError(
                        f"attribute {key!r} must be {_KIND_TEXT[self.attr_kinds[key]]}, got "
                        f"{type(value).__name__} {_short(value)}")
                out[key] = value
            elif default is REQUIRED:
                raise InferError(f"{self.name} needs attribute {key!r}")
            else:
                out[key] = default
        return out

    def check_arity(self, n_inputs: int, n_outputs: int) -> None:
        max_in = math.inf if self.variadic_inputs else len(self.inputs)
        if not self.min_inputs <= n_inputs <= max_in:
            raise InferError(
                f"{self.name} takes {self.min_inputs}..{max_in} inputs, got {n_inputs}"
            )
        max_out = math.inf if self.variadic_outputs else len(self.outputs)
        min_out = 1 if self.variadic_outputs else sum(
            1 for n in self.outputs if not n.endswith("?")
        )
        if not min_out <= n_outputs <= max_out:
            raise InferError(f"{self.name} has {min_out}..{max_out} outputs, got {n_outputs}")


OPS: dict[str, OpDef] = {}

# ---------------------------------------------------------------------------------------------
# Attribute types. An attribute's ONNX type is read from its default when the default shows it;
# these names have one type across ONNX, so a default of None or REQUIRED needs no declaration.

ATTR_TYPES = {
    "activation_params": "floats", "axes": "ints", "axis": "int", "dilations": "ints",
    "end": "int", "equation": "string", "kernel_shape": "ints", "num_outputs": "int",
    "output_padding": "ints", "output_shape": "ints", "pads": "ints", "perm": "ints",
    "seed": "int", "size": "int", "strides": "ints", "to": "int", "value": "tensor",
}
_KIND_TEXT = {
    "int": "an int", "float": "a float", "string": "a string", "ints": "a list of ints",
    "floats": "a list of floats", "tensor": "a tensor (numpy array)",
}


def _kind_of(name: str, default: Any) -> str | None:
    if isinstance(default, (bool, int, np.integer)):
        return "int"
    if isinstance(default, (float, np.floating)):
        return "float"
    if isinstance(default, str):
        return "string"
    if isinstance(default, np.ndarray):
        return "tensor"
    if isinstance(default, tuple) and default:
        return "ints" if _is_kind("ints", default) else "floats"
    return ATTR_TYPES.get(name)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating))


def _is_kind(kind: str, value: Any) -> bool:
    """Whether ``value`` is an attribute value of ONNX type ``kind`` (ints pass as floats; a
    list, tuple or 1-D array as a list)."""
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return _is_number(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "tensor":
        return isinstance(value, np.ndarray)
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return False
    return all(map(_is_int if kind == "ints" else _is_number, value))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."



def op(
    name: str,
    inputs: tuple[str, ...] | list[str],
    outputs: tuple[str, ...] | list[str] = ("Y",),
    attrs: dict[str, Any] | None = None,
    infer: Callable[[Ctx], list[Out]] | None = None,
    extensions: Iterable[str] = (),
    attr_types: dict[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated numpy function as the reference kernel of op ``name``.

    The kernel is called as ``kernel(*inputs, **attrs)`` (attributes with defaults filled in,
    empty optional inputs as None) and returns one array, or a tuple for several outputs.
    ``extensions`` lists the inputs and attributes that are not ONNX (see ``OpDef``).
    ``attr_types`` gives the ONNX type ("int", "float", "string", "ints", "floats", "tensor")
    of an attribute whose default (None, ``REQUIRED``, an empty tuple) does not show it and
    whose name is not in ``ATTR_TYPES``.
    """

    def register(kernel: Callable[..., Any]) -> Callable[..., Any]:
        if name in OPS:
            raise ValueError(f"op {name} is registered twice")
        OPS[name] = OpDef(
            name=name,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            attrs=dict(attrs or {}),
            infer=infer or _no_infer(name),
            kernel=kernel,
            doc=inspect.cleandoc(kernel.__doc__ or ""),
            extensions=frozenset(extensions),
            attr_types=dict(attr_types or {}),
        )
        return kernel

    return register


def _no_infer(name: str) -> Callable[[Ctx], list[Out]]:
    def infer(ctx: Ctx) -> list[Out]:
        raise InferError(f"{name} declares no type inference")

    return infer


# ---------------------------------------------------------------------------------------------
# Shape helpers shared by inference functions.


def broadcast_shapes(*shapes: tuple) -> tuple:
    """Numpy broadcasting over shapes that may hold symbols."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        known = [d for d in dims if d != 1]
        if not known:
            out.append(1)
            continue
        ints = {d for d in known if isinstance(d, int)}
        if len(ints) > 1:
            raise InferError(f"shapes {' and '.join(map(str, shapes))} do not broadcast")
        if ints:
            out.append(ints.pop())
        elif len(set(known)) == 1:
            out.append(known[0])
        else:
            out.append(UNKNOWN)
    return tuple(out)


def norm_axis(axis: int, rank: int) -> int:
    """``axis`` normalized into [0, rank); a rank-0 tensor has no axis."""
    if not -rank <= axis < rank:
        raise InferError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def prod_dims(dims: Any) -> Any:
    """Product of dimensions: an int, a symbol when exactly one symbol remains, or unknown."""
    total, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            total *= d
        else:
            syms.append(d)
    if not syms or total == 0:
        return total
    if len(syms) == 1 and total == 1 and syms[0] != UNKNOWN:
        return syms[0]
    return UNKNOWN


def same_as(i: int = 0) -> Callable[[Ctx], list[Out]]:
    """Inference for ops whose single output has the type of input ``i``."""

    def infer(ctx: Ctx) -> list[Out]:
        return [Out(ctx.dtype(i), ctx.shape(i))]

    return infer
