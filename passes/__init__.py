"""The built-in passes, installed as ``qcompiler.passes``; importing registers them by name.

    canonicalize   constant folding, Identity/Dropout removal, CSE, dead-code elimination
    fold-bn        BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul
    fuse           bias adds, activations (also their decomposed forms), residual adds
    equalize       cross-layer equalization of conv pairs across ReLU (before calibration)
    quantize-dynamic  int8 weights; Gemm/MatMul activations quantized at run time (or weight-only)
    insert-observers  an Observe node after every float activation, for calibration
    quantize       Q/DQ around quantizable ops per a QuantConfig and calibrated ranges
    bias-correct   each quantized layer's bias shifted by the mean error of its output
                   against the float graph on calibration data (BiasCorrect(float_graph, calib))
    cancel-qdq     DQ->Q pairs cancelled or requantized, Relu/Clip absorbed by a Q, DQ moved
                   below data movement, Q->DQ islands no integer op reads removed
    lower-int      DQ -> op -> Q regions into integer ops (IntConv, IntMatMul, IntAdd, ...,
                   LookupTable), zero points and bias folded, accumulators bounded
"""

from . import (  # noqa: F401  (registers the passes)
    bias_correct,
    cancel_qdq,
    canonicalize,
    dynamic,
    equalize,
    fold_bn,
    fuse,
    lower_int,
    observe,
    quantize,
)
