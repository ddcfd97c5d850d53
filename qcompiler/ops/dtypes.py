"""The one table of element types: the IR's short name, the numpy dtype and the ONNX code.

Everything that maps element types (``qcompiler.types.DType``, the ONNX importer, the Cast-like
ops) reads this table; it imports nothing, so the ops package stays numpy-only.
"""

from __future__ import annotations

# (IR name, numpy dtype name, ONNX TensorProto element type)
DTYPES = (
    ("f32", "float32", 1),
    ("f16", "float16", 10),
    ("i8", "int8", 3),
    ("u8", "uint8", 2),
    ("i32", "int32", 6),
    ("i64", "int64", 7),
    ("bool", "bool", 9),
    # float64 holds the requantization multipliers of the integer ops (qcompiler ops); ONNX
    # float64 tensors stay refused, so it has no ONNX code
    ("f64", "float64", None),
)

NUMPY_NAME = {name: numpy_name for name, numpy_name, _ in DTYPES}
FROM_ONNX = {code: name for name, _, code in DTYPES if code is not None}
TO_ONNX = {name: code for name, _, code in DTYPES if code is not None}
