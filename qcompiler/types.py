"""Tensor types of the IR: element types, shapes and quantization parameters.

A ``TensorType`` is a dtype from a small closed set and a shape whose dimensions are ints or
symbol names (``"N"``; ``"?"`` for a dimension nothing is known about). A quantized tensor carries
its ``QuantParams`` in its type, so "this graph is fully integer" is a property one can check.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import IRError
from .ops.dtypes import NUMPY_NAME

Dim = int | str
Shape = tuple[Dim, ...]
UNKNOWN_DIM = "?"


class DType(str, enum.Enum):
    """The closed set of element types. Members compare equal to their short names."""

    F32 = "f32"
    F16 = "f16"
    I8 = "i8"
    U8 = "u8"
    I32 = "i32"
    I64 = "i64"
    BOOL = "bool"
    F64 = "f64"

    def __str__(self) -> str:
        return self.value

    @property
    def np(self) -> np.dtype:
        return np.dtype(_TO_NUMPY[self])

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F16, DType.F64)

    @property
    def is_integer(self) -> bool:
        return self in (DType.I8, DType.U8, DType.I32, DType.I64)

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        name = np.dtype(dtype).name
        for member, np_name in _TO_NUMPY.items():
            if np_name == name:
                return member
        raise IRError(f"numpy dtype {name} has no qcompiler dtype (supported: {_supported()})")


_TO_NUMPY = {DType(name): numpy_name for name, numpy_name in NUMPY_NAME.items()}
assert set(_TO_NUMPY) == set(DType), "DType and the dtype table disagree"


def _supported() -> str:
    return ", ".join(d.value for d in DType)


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization ``real = scale * (q - zero_point)``, per tensor or along ``axis``.

    ``scale`` and ``zero_point`` are tuples (length 1 per tensor, one entry a channel otherwise);
    ``qmin``/``qmax`` bound the integers actually used (e.g. [-127, 127] for symmetric weights).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    dtype: DType = DType.I8
    axis: int | None = None
    qmin: int | None = None
    qmax: int | None = None

    def __post_init__(self) -> None:
        scale = tuple(float(s) for s in np.atleast_1d(np.asarray(self.scale, dtype=np.float64)))
        zero = tuple(int(z) for z in np.atleast_1d(np.asarray(self.zero_point)))
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero)
        object.__setattr__(self, "dtype", DType(self.dtype))
        if self.dtype.is_integer:  # a float "quantized" dtype is reported by problems()
            info = np.iinfo(self.dtype.np)
            if self.qmin is None:
                object.__setattr__(self, "qmin", int(info.min))
            if self.qmax is None:
                object.__setattr__(self, "qmax", int(info.max))

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def problems(self) -> list[str]:
        """Reasons these parameters are invalid (empty when they are fine)."""
        if not self.dtype.is_integer:
            return [f"quantized dtype must be an integer type, not {self.dtype}"]
        out = []
        info = np.iinfo(self.dtype.np)
        if not info.min <= self.qmin <= self.qmax <= info.max:
            out.append(f"[qmin, qmax] = [{self.qmin}, {self.qmax}] is not inside {self.dtype}")
        if len(self.scale) != len(self.zero_point):
            out.append(f"{len(self.scale)} scales but {len(self.zero_point)} zero points")
        if self.axis is None and len(self.scale) != 1:
            out.append(f"per-tensor parameters need one scale, got {len(self.scale)}")
        for s in self.scale:
            if not (math.isfinite(s) and s > 0):
                out.append(f"scale {s} is not a positive finite number")
                break
        for z in self.zero_point:
            if not self.qmin <= z <= self.qmax:
                out.append(f"zero point {z} is outside [qmin, qmax] = [{self.qmin}, {self.qmax}]")
                break
        return out


@dataclass(frozen=True)
class TensorType:
    """Element type, shape and (for quantized tensors) quantization parameters of a value."""

    dtype: DType
    shape: Shape
    quant: QuantParams | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", DType(self.dtype))
        dims = []
        for d in self.shape:
            if isinstance(d, (int, np.integer)) and not isinstance(d, bool):
                if d < 0:
                    raise IRError(f"dimension {d} is negative")
                dims.append(int(d))
            elif isinstance(d, str) and d:
                dims.append(d)
            else:
                raise IRError(f"dimension {d!r} is neither an int nor a symbol name")
        object.__setattr__(self, "shape", tuple(dims))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Number of elements when the shape is static, else None."""
        return math.prod(self.shape) if self.is_static else None

    def with_shape(self, shape: Shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape), self.quant)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"
