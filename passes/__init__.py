"""The built-in passes, installed as ``qcompiler.passes``; importing registers them by name.

    canonicalize   constant folding, Identity/Dropout removal, CSE, dead-code elimination
    fold-bn        BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul
    fuse           bias adds, activations (also their decomposed forms), residual adds
    equalize       cross-layer equalization of conv pairs across ReLU (before calibration)
    bias-correct   quantized layers' biases shifted by their mean output error (not in the
                   registry by name alone: it needs the float graph and calibration batches)
"""

# importing registers the passes
from . import canonicalize, equalize, fold_bn, fuse  # noqa: F401
