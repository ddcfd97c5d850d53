"""Which ops quantization treats how: one table read by every quantization pass.

- ``WEIGHTED``: ops with a weight (input 1) and an optional bias (input 2): their activations,
  weights (per channel along ``WEIGHT_AXIS``) and bias (int32) are quantized.
- ``ARITHMETIC``: ops computed on quantized inputs with their own output parameters.
- ``DATA_MOVEMENT``: ops that only move, select or take the maximum of elements. A positive
  scale is monotonic, so they commute with Q and DQ: their output keeps their (first) input's
  parameters, and they run on integer tensors directly. ``Concat`` is one too, once its inputs
  share parameters.
- ``TABLE``: elementwise functions of one activation (their other operands, such as Clip's
  bounds, constants): input and output are quantized per tensor, and ``lower-int`` computes
  ``DQ -> f -> Q`` as one 256-entry ``LookupTable``.
- Anything else stays float; it reads dequantized values.
"""

from __future__ import annotations

WEIGHTED = frozenset({"Conv", "Gemm", "MatMul"})

# Conv weights are [M, C/g, k...] (output channels on axis 0); Gemm's depend on transB
# (see weight_axis); MatMul's are [K, N] (axis 1, the last).
WEIGHT_AXIS = {"Conv": 0, "MatMul": -1}

ARITHMETIC = frozenset({"Add", "Mul", "AveragePool", "GlobalAveragePool"})

TABLE = frozenset({
    "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Gelu", "Exp", "Softplus", "Elu",
    "Selu", "Softsign", "Erf", "Relu", "Clip", "Neg", "Abs",
})

DATA_MOVEMENT = frozenset({
    "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "GlobalMaxPool",
    "Slice", "Concat", "Split", "Resize", "Pad",
})

# The integer ops lower-int makes from those regions (qcompiler ops; ONNX has no spelling for
# them). Requantize, which cancel-qdq makes, is one too once lower-int sets its rounding.
INTEGER_OPS = frozenset({"IntConv", "IntMatMul", "IntAdd", "IntMul", "IntAveragePool",
                         "IntGlobalAveragePool", "LookupTable"})

# Every op quantization gives a role.
QUANTIZABLE = WEIGHTED | ARITHMETIC | TABLE | DATA_MOVEMENT

# Key of ``Graph.metadata`` where the quantize pass records why it left nodes in float
# ({node name: reason}), and where lower-int records why a quantized node stays float;
# ``qc.compare`` and ``Graph.float_islands`` read it.
FLOAT_REASONS = "quantize.float_reasons"

# The operand positions of a data-movement op that carry data (the others are shapes, axes...).
DATA_INPUTS = {"Concat": None}  # None: every input


def data_inputs(op: str, n_inputs: int) -> range:
    """Positions of the data operands of a data-movement op."""
    return range(n_inputs) if op in DATA_INPUTS else range(min(1, n_inputs))


def weight_axis(op: str, attrs: dict) -> int:
    """The output-channel axis of the weight of a ``WEIGHTED`` op."""
    if op == "Gemm":
        return 0 if attrs.get("transB", 0) else 1
    return WEIGHT_AXIS[op]
