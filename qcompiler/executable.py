"""What every backend's compiled model shares: the input contract checked at the boundary.

``InputSpec`` is fixed at compile time, so ``Executable.run`` does only the checks that must
happen per call (names, dtype, rank, dimensions and consistent symbolic dimensions).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputDTypeError, InputShapeError, MissingInputError, UnknownInputError
from .graph import Graph
from .types import DType


@dataclass(frozen=True)
class InputSpec:
    """Name, dtype and shape (ints and symbols) a model input must have."""

    name: str
    dtype: DType
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype.value, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(data["name"], DType(data["dtype"]), tuple(data["shape"]))

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def input_specs(graph: Graph) -> list[InputSpec]:
    return [InputSpec(v.name, v.dtype, v.shape) for v in graph.inputs]


class Executable(abc.ABC):
    """A compiled model. ``run({name: array})`` returns ``{output_name: array}``; ``exe(x)``
    runs a single-input model on one array and returns its output (or a tuple of outputs)."""

    backend = "base"

    def __init__(self, inputs: list[InputSpec], outputs: list[str]):
        self.inputs = inputs
        self.outputs = outputs

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = self.check_inputs(feeds)
        results = self._execute(arrays)
        return dict(zip(self.outputs, results))

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self.inputs):
            names = ", ".join(s.name for s in self.inputs)
            raise MissingInputError(f"the model takes {len(self.inputs)} input(s) ({names}), "
                                    f"got {len(arrays)} positional array(s)")
        out = self.run({spec.name: a for spec, a in zip(self.inputs, arrays)})
        values = [out[name] for name in self.outputs]
        return values[0] if len(values) == 1 else tuple(values)

    def check_inputs(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """The feeds as arrays in input order, or a typed error saying what was expected."""
        return check_feeds(self.inputs, feeds)

    @abc.abstractmethod
    def _execute(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model on checked inputs (in input order); outputs in output order."""

    @abc.abstractmethod
    def save(self, path: str) -> None:
        """Write the executable to folder ``path`` (no pickle); ``qcompiler.load`` reads it."""


def check_feeds(specs: Sequence[InputSpec], feeds: Mapping[str, Any]) -> list[np.ndarray]:
    """``feeds`` as arrays in the order of ``specs``, or a typed error saying what was expected
    (shared by every backend's ``Executable.run`` and by the ``Interpreter``)."""
    names = {spec.name for spec in specs}
    unknown = [name for name in feeds if name not in names]
    if unknown:
        expected = ", ".join(s.name for s in specs)
        raise UnknownInputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the "
                                f"model's inputs are: {expected}")
    arrays, bound = [], {}
    for spec in specs:
        if spec.name not in feeds:
            raise MissingInputError(f"input {spec.name!r} ({spec.describe()}) is missing")
        array = feeds[spec.name]
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
            if array.dtype == np.float64 and spec.dtype == DType.F32:
                array = array.astype(np.float32)
        if array.dtype != spec.dtype.np:
            raise InputDTypeError(f"input {spec.name!r} must be {spec.dtype} "
                                  f"({spec.dtype.np.name}), got {array.dtype.name}")
        _check_shape(spec, array.shape, bound)
        arrays.append(array)
    return arrays


def _check_shape(
    spec: InputSpec, shape: tuple[int, ...], bound: dict[str, tuple[int, str]]
) -> None:
    if len(shape) != len(spec.shape):
        raise InputShapeError(f"input {spec.name!r} must have rank {len(spec.shape)} "
                              f"({spec.describe()}), got shape {list(shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int):
            if want != got:
                raise InputShapeError(f"input {spec.name!r} must have shape {spec.describe()}, "
                                      f"got {list(shape)} (dimension {axis} is {got}, not {want})")
        elif want != "?":
            if want in bound and bound[want][0] != got:
                size, where = bound[want]
                raise InputShapeError(f"input {spec.name!r} has {want}={got} in dimension "
                                      f"{axis}, but {where} has {want}={size}")
            bound.setdefault(want, (got, f"input {spec.name!r}"))
